//! s3fsstat, s3fsctrl, s3fscp, s3fslock and s3fsrm through their real binaries on real
//! mounts.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mount::Fixture;
use common::text;
use s3fs::control::{CTRL_INO, CTRL_NAME};
use serde_json::Value;
use sha2::{Digest, Sha256};

const STAT: &str = env!("CARGO_BIN_EXE_s3fsstat");
const CTRL: &str = env!("CARGO_BIN_EXE_s3fsctrl");
const CP: &str = env!("CARGO_BIN_EXE_s3fscp");
const LOCK: &str = env!("CARGO_BIN_EXE_s3fslock");
const RM: &str = env!("CARGO_BIN_EXE_s3fsrm");
const FSCK: &str = env!("CARGO_BIN_EXE_fsck-s3fs");

fn run(bin: &str, args: &[&Path]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

fn ok(bin: &str, args: &[&Path]) -> String {
    let o = run(bin, args);
    assert!(o.status.success(), "{bin} {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stats(mnt: &Path) -> Value {
    let out = ok(STAT, &[Path::new("--json"), mnt]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("s3fsstat --json: {e}: {out}"))
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn fsck_force(f: &Fixture, cache: &str) {
    let cachedir = f.cachedir(cache);
    let o = f.tool(FSCK, &["--batch", "--force", "--cachedir", &cachedir, &f.url]);
    assert_eq!(o.status.code(), Some(0), "fsck --force: {}", text(&o));
}

/// Everything about a tree a snapshot must keep: per relative path, the kind, mode,
/// owner, mtime, size, content hash or link target, and xattrs.
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    common::walk(root)
        .into_iter()
        .map(|(rel, p, m)| {
            let what = if m.is_dir() {
                "dir".to_owned()
            } else if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else {
                format!("file {}", sha(&std::fs::read(&p).unwrap()))
            };
            let xattr = if m.file_type().is_symlink() {
                String::new()
            } else {
                xattr_get(&p, "user.tag")
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default()
            };
            let line = format!(
                "{what} mode={:o} uid={} gid={} mtime={}.{} size={} nlink={} xattr={xattr}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                m.size(),
                m.nlink()
            );
            (rel, line)
        })
        .collect()
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
    xattr_read(p, name).ok()
}

/// getxattr(2) with its errno on failure.
fn xattr_read(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::getxattr(c(p).as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    Ok(buf[..r as usize].to_vec())
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let n = CString::new(name).unwrap();
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::setxattr(c(p).as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A tree with files, a duplicate, a subdirectory, a hard-link pair, a symlink and an
/// xattr.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("a"), common::random_bytes(300_000, 1)).unwrap();
    std::fs::write(root.join("sub/b"), common::random_bytes(70_000, 2)).unwrap();
    std::fs::write(root.join("sub/deeper/c"), b"small").unwrap();
    std::fs::hard_link(root.join("a"), root.join("sub/a-link")).unwrap();
    std::os::unix::fs::symlink("../a", root.join("sub/to-a")).unwrap();
    xattr_set(&root.join("sub/b"), "user.tag", b"kept").unwrap();
    std::fs::set_permissions(root.join("sub/b"), std::fs::Permissions::from_mode(0o640)).unwrap();
}

#[test]
fn control_file_is_hidden_everywhere_and_tools_refuse_other_paths() {
    let f = Fixture::local();
    f.mount("cache");
    std::fs::create_dir(f.mnt.join("dir")).unwrap();
    for dir in [f.mnt.clone(), f.mnt.join("dir")] {
        let m = std::fs::metadata(dir.join(CTRL_NAME)).unwrap();
        assert_eq!(m.ino(), CTRL_INO);
        let listed: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!listed.iter().any(|n| n == CTRL_NAME), "{listed:?}");
    }
    // Not an s3fs path: exit 2 with a message, for every tool.
    let outside = f.dir.path();
    for (bin, args) in [
        (STAT, vec![outside]),
        (CTRL, vec![Path::new("flushcache"), outside]),
        (LOCK, vec![outside]),
        (RM, vec![outside]),
    ] {
        let o = run(bin, &args);
        assert_eq!(o.status.code(), Some(2), "{bin}: {}", text(&o));
        assert!(text(&o).contains("not on a mounted s3fs filesystem"), "{}", text(&o));
    }
    // Another user (allowed into the mount by allow_other) may not use it.
    f.umount();
    let o = f.mount_with(&f.cachedir("cache"), &f.mnt, &["--allow-other"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", STAT])
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "s3fsstat by another user: {}", text(&o));
    assert!(text(&o).contains("only the user who mounted"), "{}", text(&o));
    f.umount();
}

#[test]
fn stat_json_counts_what_was_written_and_dedup() {
    let f = Fixture::local();
    f.mount("cache");
    let before = stats(&f.mnt);
    let a = common::random_bytes(1 << 20, 11);
    let c = common::random_bytes(300_000, 12);
    std::fs::create_dir(f.mnt.join("d")).unwrap();
    std::fs::write(f.mnt.join("d/a"), &a).unwrap();
    std::fs::write(f.mnt.join("d/a-copy"), &a).unwrap();
    std::fs::write(f.mnt.join("c"), &c).unwrap();
    ok(CTRL, &[Path::new("flushcache"), &f.mnt]);
    let s = stats(&f.mnt);
    assert_eq!(num(&s, "entries"), num(&before, "entries") + 4);
    assert_eq!(num(&s, "inodes"), num(&before, "inodes") + 4);
    let logical = 2 * a.len() as u64 + c.len() as u64;
    assert_eq!(num(&s, "total_bytes"), num(&before, "total_bytes") + logical);
    // The copy of `a` is stored once.
    let distinct = a.len() as u64 + c.len() as u64;
    assert_eq!(num(&s, "dedup_bytes"), num(&before, "dedup_bytes") + distinct);
    assert!(
        num(&s, "stored_bytes") >= distinct,
        "random data does not compress: {s}"
    );
    assert_eq!(num(&s, "dirty_bytes"), 0, "flushcache leaves nothing dirty: {s}");
    assert!(s["oldest_dirty_secs"].is_null(), "{s}");
    assert!(num(&s, "objects") > num(&before, "objects"));
    assert!(num(&s["store"]["put"], "requests") >= num(&s, "objects"), "{s}");
    assert!(num(&s["store"]["put"], "bytes") >= num(&s, "stored_bytes"), "{s}");
    // The human form has the same figures.
    let human = ok(STAT, &[Path::new("--raw"), &f.mnt]);
    let line = human.lines().find(|l| l.starts_with("Total data size:")).unwrap();
    assert!(line.contains(&format!("{} B", num(&s, "total_bytes"))), "{human}");
    // Every value in one column, apart from its label.
    let column = |l: &str| {
        l.find(": ")
            .map(|c| c + 2 + l[c + 2..].len() - l[c + 2..].trim_start().len())
    };
    let columns: Vec<Option<usize>> = human.lines().map(column).collect();
    assert!(columns.iter().all(|c| c.is_some() && *c == columns[0]), "{human}");
    // Reading a block back through a dropped cache is a miss, then a hit.
    ok(CTRL, &[Path::new("dropcache"), &f.mnt]);
    assert_eq!(num(&stats(&f.mnt), "cache_entries"), 0);
    // A fresh file handle so the kernel asks again (it keeps pages: drop them).
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    assert_eq!(std::fs::read(f.mnt.join("c")).unwrap(), c);
    let after = stats(&f.mnt);
    assert!(num(&after, "cache_misses") > num(&s, "cache_misses"), "{after}");
    assert!(num(&after["store"]["get"], "bytes") > 0, "{after}");
    f.umount();
}

#[test]
fn ctrl_commands_take_effect() {
    let f = Fixture::local();
    f.mount("cache");
    let s0 = stats(&f.mnt);
    std::fs::write(f.mnt.join("x"), common::random_bytes(200_000, 3)).unwrap();
    // sync: blocks and metadata in the store when it returns.
    ok(CTRL, &[Path::new("sync"), &f.mnt]);
    let s1 = stats(&f.mnt);
    assert_eq!(num(&s1, "dirty_bytes"), 0, "{s1}");
    assert!(num(&s1, "metadata_seq") > num(&s0, "metadata_seq"), "{s0} {s1}");
    assert!(s1["secs_since_metadata_upload"].as_f64().unwrap() < 30.0, "{s1}");
    let version = s3fs::fs_store::names::params_version(num(&s1, "metadata_seq"));
    let listed = list_store(&f.dir.path().join("store"));
    assert!(listed.contains(&version), "{version} in the store: {listed:?}");
    // backup-metadata returns at once; the upload follows.
    ok(CTRL, &[Path::new("backup-metadata"), &f.mnt]);
    let t = Instant::now();
    while num(&stats(&f.mnt), "metadata_seq") <= num(&s1, "metadata_seq") {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no metadata upload after backup-metadata"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // cachesize (KiB).
    ok(CTRL, &[Path::new("cachesize"), &f.mnt, Path::new("10240")]);
    assert_eq!(num(&stats(&f.mnt), "cache_max_bytes"), 10 << 20);
    // log: the mount logs the change at warning level.
    ok(
        CTRL,
        &[Path::new("log"), &f.mnt, Path::new("debug"), Path::new("cache")],
    );
    let log = std::fs::read_to_string(f.dir.path().join("mount.log")).unwrap();
    assert!(log.contains("log level DEBUG"), "{log}");
    let bad = run(CTRL, &[Path::new("log"), &f.mnt, Path::new("loud")]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    f.umount();
}

fn list_store(store: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![store.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn snapshot_round(f: &Fixture) {
    let src = f.mnt.join("src");
    make_tree(&src);
    ok(CTRL, &[Path::new("flushcache"), &f.mnt]);
    let original = describe(&src);
    let objects_before = num(&stats(&f.mnt), "objects");
    let put_before = num(&stats(&f.mnt)["store"]["put"], "requests");
    ok(CP, &[&src, &f.mnt.join("snap")]);
    let snap = f.mnt.join("snap");
    // Same content, attributes and times; new inodes; hard links kept inside the copy.
    let copy = describe(&snap);
    assert_eq!(copy, original);
    let (sa, sl) = (
        std::fs::metadata(snap.join("a")).unwrap(),
        std::fs::metadata(snap.join("sub/a-link")).unwrap(),
    );
    assert_eq!(sa.ino(), sl.ino(), "hard link inside the copy");
    assert_ne!(sa.ino(), std::fs::metadata(src.join("a")).unwrap().ino());
    let s = stats(&f.mnt);
    assert_eq!(num(&s, "objects"), objects_before, "the snapshot added no data objects");
    assert_eq!(
        num(&s["store"]["put"], "requests"),
        put_before,
        "the snapshot sent nothing"
    );
    // Change the source: the snapshot does not change.
    std::fs::write(src.join("a"), b"rewritten").unwrap();
    std::fs::remove_file(src.join("sub/b")).unwrap();
    std::fs::write(src.join("new"), b"new").unwrap();
    std::fs::remove_dir_all(src.join("sub/deeper")).unwrap();
    assert_eq!(describe(&snap), original);
    assert_eq!(
        std::fs::read(snap.join("sub/a-link")).unwrap(),
        common::random_bytes(300_000, 1)
    );
    // The target must be new.
    let o = run(CP, &[&src, &snap]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn snapshot_copies_no_data_and_survives_changes_of_the_source() {
    let f = Fixture::local();
    f.mount("cache");
    snapshot_round(&f);
    let snap = describe(&f.mnt.join("snap"));
    f.umount();
    // The refcounts the copy wrote are right (fsck finds nothing), and a fresh cache
    // reads the copy from the store.
    fsck_force(&f, "cache");
    f.mount("cache2");
    assert_eq!(describe(&f.mnt.join("snap")), snap);
    f.umount();
}

#[test]
fn snapshot_and_sync_on_s3() {
    let server = common::s3_server("GARAGE");
    let f = Fixture::s3(&server);
    f.mount("cache");
    snapshot_round(&f);
    let s0 = stats(&f.mnt);
    ok(CTRL, &[Path::new("sync"), &f.mnt]);
    let s1 = stats(&f.mnt);
    assert!(num(&s1, "metadata_seq") > num(&s0, "metadata_seq"));
    assert!(num(&s1["store"]["put"], "requests") > num(&s0["store"]["put"], "requests"));
    let snap = describe(&f.mnt.join("snap"));
    f.umount();
    f.mount("cache2");
    assert_eq!(describe(&f.mnt.join("snap")), snap);
    f.umount();
}

fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[test]
fn locked_tree_refuses_every_change_and_s3fsrm_removes_it() {
    let f = Fixture::local();
    f.mount("cache");
    let t = f.mnt.join("t");
    make_tree(&t);
    std::fs::create_dir(t.join("empty")).unwrap();
    std::fs::write(f.mnt.join("outside"), b"o").unwrap();
    std::fs::create_dir(f.mnt.join("elsewhere")).unwrap();
    ok(CTRL, &[Path::new("flushcache"), &f.mnt]);
    let objects_before = f.data_objects();
    let stored_blocks = |v: &Value| num(v, "objects") - num(&v["packs"], "packs") + num(&v["packs"], "blocks");
    let blocks_before = stored_blocks(&stats(&f.mnt));
    let before = describe(&t);
    ok(LOCK, &[&t]);
    let (file, dir) = (t.join("sub/b"), t.join("sub"));
    let eperm = Some(libc::EPERM);
    let checks: Vec<(&str, Option<i32>)> = vec![
        (
            "open for writing",
            errno_of(std::fs::OpenOptions::new().write(true).open(&file)),
        ),
        (
            "truncate",
            errno_of(std::fs::OpenOptions::new().write(true).truncate(true).open(&file)),
        ),
        (
            "chmod",
            errno_of(std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))),
        ),
        ("chown", errno_of(std::os::unix::fs::chown(&file, Some(1), Some(1)))),
        (
            "utime",
            errno_of(std::fs::File::open(&file).and_then(|h| h.set_modified(std::time::SystemTime::now()))),
        ),
        ("setxattr", errno_of(xattr_set(&file, "user.other", b"v"))),
        ("removexattr", {
            let n = CString::new("user.tag").unwrap();
            // SAFETY: valid strings.
            let r = unsafe { libc::removexattr(c(&file).as_ptr(), n.as_ptr()) };
            (r != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
        }),
        ("create", errno_of(std::fs::write(dir.join("new"), b"x"))),
        ("mkdir", errno_of(std::fs::create_dir(dir.join("newdir")))),
        (
            "symlink",
            errno_of(std::os::unix::fs::symlink("x", dir.join("newlink"))),
        ),
        ("mkfifo", {
            // SAFETY: valid string.
            let r = unsafe { libc::mkfifo(c(&dir.join("fifo")).as_ptr(), 0o644) };
            (r != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
        }),
        ("unlink", errno_of(std::fs::remove_file(&file))),
        ("rmdir", errno_of(std::fs::remove_dir(t.join("empty")))),
        ("rename inside", errno_of(std::fs::rename(&file, dir.join("renamed")))),
        (
            "rename out",
            errno_of(std::fs::rename(&file, f.mnt.join("elsewhere/b"))),
        ),
        (
            "rename in",
            errno_of(std::fs::rename(f.mnt.join("outside"), dir.join("outside"))),
        ),
        (
            "rename the tree's root",
            errno_of(std::fs::rename(&t, f.mnt.join("t2"))),
        ),
        (
            "link into",
            errno_of(std::fs::hard_link(f.mnt.join("outside"), dir.join("l"))),
        ),
        (
            "link of a locked file",
            errno_of(std::fs::hard_link(&file, f.mnt.join("elsewhere/l"))),
        ),
        ("s3fsrm of a part", {
            let o = run(RM, &[&dir]);
            (!o.status.success())
                .then_some(libc::EPERM)
                .filter(|_| text(&o).contains("not permitted"))
        }),
    ];
    for (what, got) in &checks {
        assert_eq!(*got, eperm, "{what} in a locked tree");
    }
    // Reading still works, and nothing changed.
    assert_eq!(describe(&t), before);
    // s3fscp of a locked tree makes an unlocked copy.
    ok(CP, &[&t, &f.mnt.join("copy")]);
    std::fs::write(f.mnt.join("copy/sub/b"), b"changed").unwrap();
    // s3fsrm removes the locked tree at once, for the kernel too.
    let victim = t.join("sub/deeper/c");
    assert!(victim.exists());
    ok(RM, &[&t]);
    assert_eq!(errno_of(std::fs::symlink_metadata(&t)), Some(libc::ENOENT));
    assert_eq!(errno_of(std::fs::symlink_metadata(&victim)), Some(libc::ENOENT));
    ok(RM, &[&f.mnt.join("copy")]);
    // Their blocks are released once unreferenced: the objects of their own deleted
    // from the store, their segments in a pack shared with `outside` left as garbage.
    ok(CTRL, &[Path::new("flushcache"), &f.mnt]);
    let after = stats(&f.mnt);
    assert_eq!(num(&after, "pending_removals"), 0);
    assert!(
        stored_blocks(&after) < blocks_before && f.data_objects() <= objects_before,
        "blocks of the removed trees released: {blocks_before} before, {} after ({} objects before, {} after)",
        stored_blocks(&after),
        objects_before,
        f.data_objects()
    );
    // The store holds the objects in use and those held for older metadata versions.
    let now = stats(&f.mnt);
    assert_eq!(
        f.data_objects() as u64,
        num(&now, "objects") + num(&now, "held_objects")
    );
    f.umount();
    fsck_force(&f, "cache");
}

#[test]
fn s3fsrm_removes_a_large_tree() {
    let f = Fixture::local();
    f.mount("cache");
    let t = f.mnt.join("big");
    for d in 0..5 {
        let dir = t.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..600 {
            std::fs::write(dir.join(format!("f{i}")), format!("{d}/{i}")).unwrap();
        }
    }
    let s0 = stats(&f.mnt);
    ok(RM, &[&t]);
    assert!(!t.exists());
    let s1 = stats(&f.mnt);
    assert_eq!(num(&s0, "entries") - num(&s1, "entries"), 1 + 5 + 5 * 600);
    // Inodes the kernel still knows go once it forgets them.
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let t0 = Instant::now();
    while num(&s0, "inodes") - num(&stats(&f.mnt), "inodes") < 1 + 5 + 5 * 600 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "inodes not purged: {}",
            stats(&f.mnt)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::create_dir(&t).unwrap();
    f.umount();
    fsck_force(&f, "cache");
}

/// Requests of `kind` counted by s3fsstat between two of its snapshots.
fn requests(before: &Value, after: &Value, kind: &str) -> u64 {
    let n = |v: &Value| v["fuse_requests"][kind].as_u64().unwrap_or(0);
    n(after) - n(before)
}

/// Round trips the kernel can be spared are spared, as s3fsstat counts them: a listing
/// carries the attributes of its entries (readdirplus), so stat of each needs no
/// LOOKUP; a directory read twice comes from the kernel's cache the second time; the
/// kernel opens directories itself; and `ls -l` of an unlabelled filesystem asks for
/// `security.selinux` once, not once per file. A label set later reads back.
#[test]
fn round_trips_the_kernel_can_skip_are_skipped() {
    let f = Fixture::local();
    f.mount("cache");
    let dir = f.mnt.join("many");
    std::fs::create_dir(&dir).unwrap();
    // Few enough for one readdirplus reply even with 4 KiB buffers (older kernels).
    let names: Vec<String> = (0..16).map(|i| format!("f{i:02}")).collect();
    for n in &names {
        std::fs::write(dir.join(n), n).unwrap();
    }
    // A fresh kernel view: the kernel knows nothing below the root.
    f.umount();
    f.mount("cache");
    let s0 = stats(&f.mnt);
    let s1 = stats(&f.mnt);
    // s3fsstat's own requests go to the control file and are not counted.
    for kind in ["lookup", "getattr", "getxattr", "open", "read"] {
        assert_eq!(requests(&s0, &s1, kind), 0, "{kind}: {}", s1["fuse_requests"]);
    }

    let mut listed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, names);
    for n in &names {
        assert_eq!(std::fs::symlink_metadata(dir.join(n)).unwrap().len(), n.len() as u64);
    }
    let s2 = stats(&f.mnt);
    // One LOOKUP for "many" itself, none for its entries.
    assert_eq!(requests(&s1, &s2, "lookup"), 1, "{}", s2["fuse_requests"]);
    assert!(requests(&s1, &s2, "readdirplus") >= 1, "{}", s2["fuse_requests"]);

    // Listed again: from the kernel's cache.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), names.len());
    let s3 = stats(&f.mnt);
    for kind in ["readdir", "readdirplus", "lookup"] {
        assert_eq!(requests(&s2, &s3, kind), 0, "{kind}: {}", s3["fuse_requests"]);
    }
    // The first OPENDIR is answered ENOSYS, which tells the kernel to stop sending them.
    let count = |kind: &str| s3["fuse_requests"][kind].as_u64().unwrap_or(0);
    assert!(count("opendir") <= 1, "{}", s3["fuse_requests"]);
    assert_eq!(count("releasedir"), 0, "{}", s3["fuse_requests"]);

    // ls -l of 16 files: at most two GETXATTR in all, for the label and the ACL of the
    // first file; both answer EOPNOTSUPP, which ls remembers for the filesystem.
    let o = Command::new("ls").arg("-l").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).lines().filter(|l| l.starts_with("-rw")).count(), names.len());
    let s4 = stats(&f.mnt);
    assert!(requests(&s3, &s4, "getxattr") <= 2, "{}", s4["fuse_requests"]);

    // A write-only descriptor writes around the kernel's page cache (direct I/O): no
    // security.capability lookup before the write, and a reader through another
    // descriptor that had the old bytes cached sees the new ones.
    {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let p = dir.join("f05");
        let reader = std::fs::File::open(&p).unwrap();
        let mut buf = [0u8; 3];
        reader.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"f05");
        let before = stats(&f.mnt);
        let mut w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        w.write_all(b"NEW").unwrap();
        drop(w);
        let after = stats(&f.mnt);
        assert_eq!(requests(&before, &after, "getxattr"), 0, "{}", after["fuse_requests"]);
        assert_eq!(requests(&before, &after, "write"), 1, "{}", after["fuse_requests"]);
        reader.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"NEW");
    }

    // A label set through the mount reads back; another file then has none.
    let selinux_errno = |p: &Path| xattr_read(p, "security.selinux").err();
    assert_eq!(selinux_errno(&dir.join("f01")), Some(libc::EOPNOTSUPP));
    xattr_set(&dir.join("f00"), "security.selinux", b"system_u:object_r:etc_t:s0\0").unwrap();
    assert_eq!(
        xattr_get(&dir.join("f00"), "security.selinux").as_deref(),
        Some(&b"system_u:object_r:etc_t:s0\0"[..])
    );
    assert_eq!(selinux_errno(&dir.join("f01")), Some(libc::ENODATA));

    // The listing cache follows changes made through the mount.
    std::fs::write(dir.join("new"), b"x").unwrap();
    std::fs::remove_file(dir.join("f03")).unwrap();
    let now: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        now.contains(&"new".to_owned()) && !now.contains(&"f03".to_owned()),
        "{now:?}"
    );
    f.umount();
}
