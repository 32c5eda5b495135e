//! mount.s3fs --ro [--version SEQ|DATE]: a retained metadata version mounted read-only
//! beside the writer, which keeps working. Real binaries and FUSE mounts, on `local://`
//! and on Garage.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::mount::{Fixture, UMOUNT, is_mounted};
use common::{code, text};

const CTRL: &str = env!("CARGO_BIN_EXE_s3fsctrl");
const STAT: &str = env!("CARGO_BIN_EXE_s3fsstat");
const FSCK: &str = env!("CARGO_BIN_EXE_fsck-s3fs");
const CACHE: &str = "cache";

#[track_caller]
fn assert_ok(o: &Output, what: &str) {
    assert_eq!(code(o), 0, "{what}: {}", text(o));
}

fn ctrl(mnt: &Path, cmd: &str) {
    let o = Command::new(CTRL).arg(cmd).arg(mnt).output().unwrap();
    assert_ok(&o, cmd);
}

fn stats(mnt: &Path) -> serde_json::Value {
    let o = Command::new(STAT).arg("--json").arg(mnt).output().unwrap();
    assert_ok(&o, "s3fsstat");
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every entry under `dir` (except `/lost+found`): a file's bytes, a symlink's target,
/// or "dir".
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    common::walk(dir)
        .into_iter()
        .filter(|(rel, ..)| !rel.starts_with("lost+found"))
        .map(|(rel, path, m)| {
            let v = if m.is_file() {
                std::fs::read(&path).unwrap()
            } else if m.file_type().is_symlink() {
                std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes()
            } else {
                b"dir".to_vec()
            };
            (rel.display().to_string(), v)
        })
        .collect()
}

/// The store's objects, with their sizes (a local store only).
fn store_listing(f: &Fixture) -> Vec<(PathBuf, u64)> {
    let mut out: Vec<(PathBuf, u64)> = common::walk(&f.dir.path().join("store"))
        .into_iter()
        .filter(|(_, _, m)| m.is_file())
        .map(|(rel, _, m)| (rel, m.len()))
        .collect();
    out.sort();
    out
}

fn mount_ro(f: &Fixture, mnt: &Path, cache: &str, extra: &[&str]) -> Output {
    std::fs::create_dir_all(mnt).unwrap();
    let mut args = vec!["--ro"];
    args.extend_from_slice(extra);
    f.mount_with(&f.cachedir(cache), mnt, &args)
}

/// Unmounts `.0` (lazily) when dropped, so that a failing test leaves no mount behind.
struct UnmountAtDrop(PathBuf);

impl Drop for UnmountAtDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).status();
        }
    }
}

fn umount(mnt: &Path) {
    let o = Command::new(UMOUNT).arg(mnt).output().unwrap();
    assert_ok(&o, "umount.s3fs");
    assert!(!is_mounted(mnt));
}

/// Every change on `mnt` fails with EROFS.
fn assert_read_only(mnt: &Path, file: &str, dir: &str) {
    use std::os::unix::fs::PermissionsExt;
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    let f = mnt.join(file);
    erofs(std::fs::write(mnt.join("new"), b"x"), "create");
    erofs(
        std::fs::OpenOptions::new().write(true).open(&f).map(drop),
        "open for writing",
    );
    erofs(std::fs::OpenOptions::new().append(true).open(&f).map(drop), "append");
    erofs(std::fs::create_dir(mnt.join("newdir")), "mkdir");
    erofs(std::fs::remove_file(&f), "unlink");
    erofs(std::fs::remove_dir_all(mnt.join(dir)), "rm -r");
    erofs(std::fs::rename(&f, mnt.join("moved")), "rename");
    erofs(
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)),
        "chmod",
    );
    erofs(std::os::unix::fs::symlink("x", mnt.join("sl")), "symlink");
    erofs(std::fs::hard_link(&f, mnt.join("hl")), "link");
    let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::setxattr(c.as_ptr(), c"user.k".as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(r, -1, "setxattr");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EROFS),
        "setxattr"
    );
    // SAFETY: a valid C string.
    let r = unsafe { libc::truncate(c.as_ptr(), 0) };
    assert_eq!(r, -1, "truncate");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EROFS),
        "truncate"
    );
}

fn past_version_mount(f: &Fixture, check_store_untouched: bool) {
    f.mount(CACHE);
    let w = &f.mnt;
    std::fs::create_dir(w.join("d")).unwrap();
    for i in 0..30u64 {
        std::fs::write(
            w.join(format!("d/f{i}")),
            common::random_bytes(3000 + i as usize * 500, i),
        )
        .unwrap();
    }
    std::fs::write(w.join("big"), common::random_bytes(3 << 20, 99)).unwrap();
    std::os::unix::fs::symlink("d/f1", w.join("link")).unwrap();
    ctrl(w, "sync");
    let v = stats(w)["metadata_seq"].as_u64().unwrap();
    let version_v = tree(w);

    // The writer goes on: deletes, overwrites, adds; publishes.
    for i in 0..20 {
        std::fs::remove_file(w.join(format!("d/f{i}"))).unwrap();
    }
    std::fs::write(w.join("big"), common::random_bytes(1 << 20, 100)).unwrap();
    std::fs::write(w.join("added"), b"after v").unwrap();
    ctrl(w, "sync");
    let newest = tree(w);
    let newest_seq = stats(w)["metadata_seq"].as_u64().unwrap();
    assert_ne!(newest, version_v);
    ctrl(w, "flushcache");
    let store_before = if check_store_untouched {
        store_listing(f)
    } else {
        Vec::new()
    };

    // Version v, and the newest version, mounted read-only beside the writer.
    let past = f.dir.path().join("mnt2");
    let current = f.dir.path().join("mnt3");
    let _guards = [UnmountAtDrop(past.clone()), UnmountAtDrop(current.clone())];
    assert_ok(
        &mount_ro(f, &past, "ro-cache", &["--version", &v.to_string()]),
        "mount --ro --version",
    );
    assert_ok(
        &mount_ro(f, &current, "ro-cache", &["--version", &newest_seq.to_string()]),
        "mount --ro --version (newest)",
    );
    assert!(tree(&past) == version_v, "the past version's tree, byte for byte");
    assert!(tree(&current) == newest, "the newest published version");
    let s = stats(&past);
    assert_eq!(s["read_only"], true);
    assert_eq!(s["metadata_seq"].as_u64(), Some(v));
    assert_read_only(&past, "big", "d");
    assert_read_only(&current, "added", "d");
    let o = Command::new(CTRL).arg("sync").arg(&past).output().unwrap();
    assert_ne!(code(&o), 0, "a read-only mount publishes nothing: {}", text(&o));

    // The writer keeps changing; the read-only mounts do not move.
    std::fs::write(w.join("later"), b"later").unwrap();
    std::fs::remove_file(w.join("link")).unwrap();
    ctrl(w, "sync");
    assert!(tree(&past) == version_v);
    assert!(tree(&current) == newest);
    umount(&past);
    umount(&current);
    let log = std::fs::read_to_string(f.dir.path().join("mount.log")).unwrap_or_default();
    assert!(!log.contains("refused to"), "no write was even tried: {log}");
    if check_store_untouched {
        // Nothing the read-only mounts did reached the store: only the writer's last
        // publish changed it (its metadata version, and no data object).
        let after = store_listing(f);
        let data = |l: &[(PathBuf, u64)]| -> Vec<(PathBuf, u64)> {
            l.iter()
                .filter(|(p, _)| p.to_string_lossy().contains("s3fs_data_"))
                .cloned()
                .collect()
        };
        let mut expected = data(&store_before);
        let later: Vec<_> = data(&after).into_iter().filter(|e| !expected.contains(e)).collect();
        expected.extend(later.iter().cloned());
        expected.sort();
        assert_eq!(data(&after), expected, "no data object deleted");
        assert!(later.len() <= 2, "only the writer's new file: {later:?}");
        let ro_dirs: Vec<_> = std::fs::read_dir(f.cachedir("ro-cache"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".ro-"))
            .collect();
        assert!(ro_dirs.is_empty(), "their cache directories are gone: {ro_dirs:?}");
    }
    f.umount();
    let cachedir = f.cachedir(CACHE);
    let o = f.tool(FSCK, &["--batch", "--force", "--cachedir", &cachedir, &f.url]);
    assert_ok(&o, "fsck after the read-only mounts");
}

#[test]
fn a_past_version_mounts_read_only_beside_the_writer_on_local() {
    past_version_mount(&Fixture::local(), true);
}

#[test]
fn a_past_version_mounts_read_only_beside_the_writer_on_garage() {
    past_version_mount(&Fixture::s3(&common::s3_server("GARAGE")), false);
}

#[test]
fn read_only_options_are_checked() {
    let f = Fixture::local();
    let mnt2 = f.dir.path().join("mnt2");
    for (extra, why) in [
        (vec!["--version", "12345"], "not a retained version"),
        (vec!["--version", "yesterday"], "neither a seq nor a date"),
        (vec!["--version", "1960-01-01"], "before every version"),
    ] {
        let o = mount_ro(&f, &mnt2, "ro-cache", &extra);
        assert_eq!(code(&o), 2, "{why}: {}", text(&o));
        assert!(!is_mounted(&mnt2));
    }
    let o = f.mount_with(&f.cachedir(CACHE), &f.mnt, &["--version", "1"]);
    assert_eq!(code(&o), 2, "--version without --ro: {}", text(&o));
    // A date names the newest version published by then: today's end is the current one.
    let o = mount_ro(&f, &mnt2, "ro-cache", &["--version", "9999-12-31"]);
    assert_ok(&o, "--version by date");
    assert!(is_mounted(&mnt2));
    umount(&mnt2);
}

/// Wait up to `secs` for `ok`; returns how long it took.
fn wait_for(secs: u64, what: &str, mut ok: impl FnMut() -> bool) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(start.elapsed().as_secs() < secs, "{what}: not within {secs} s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    start.elapsed()
}

/// The followers' test of the issue: a writer publishing 1 s after a change and two
/// followers (own cache directories, own processes) looking every second.
fn writer_and_two_followers(f: &Fixture) {
    use std::io::{Read, Seek, SeekFrom};
    let o = f.mount_with(&f.cachedir(CACHE), &f.mnt, &["--publish-after", "1"]);
    assert_ok(&o, "writer");
    let w = f.mnt.clone();
    std::fs::create_dir(w.join("d")).unwrap();
    std::fs::write(w.join("d/first"), b"first").unwrap();
    let followers: Vec<PathBuf> = (1..=2).map(|i| f.dir.path().join(format!("follower{i}"))).collect();
    let _guards: Vec<UnmountAtDrop> = followers.iter().cloned().map(UnmountAtDrop).collect();
    for (i, mnt) in followers.iter().enumerate() {
        let o = mount_ro(f, mnt, &format!("follower-cache{i}"), &["--follow-interval", "1"]);
        assert_ok(&o, "follower");
    }

    // Written (not even fsync'ed) on the writer: on both followers within the lag
    // (--publish-after + --follow-interval + the download + the kernel's 1 s cache).
    let a = common::random_bytes((5 << 20) / 2, 1);
    std::fs::write(w.join("a"), &a).unwrap();
    std::fs::write(w.join("d/second"), b"second").unwrap();
    for mnt in &followers {
        let took = wait_for(30, "a written on the writer reaches a follower", || {
            std::fs::read(mnt.join("a")).is_ok_and(|got| got == a) && mnt.join("d/second").exists()
        });
        eprintln!("lag: {:.1} s", took.as_secs_f64());
    }
    let s = stats(&followers[0]);
    assert!(s["following"]["switches"].as_u64().unwrap() >= 1, "{s}");

    // What a follower has cached stays cached across a switch when it did not change.
    let keep = std::fs::read(followers[0].join("a")).unwrap();
    let got = |mnt: &Path| stats(mnt)["store"]["get"]["bytes"].as_u64().unwrap();
    let before = got(&followers[0]);
    std::fs::write(w.join("c"), b"a change elsewhere").unwrap();
    wait_for(30, "c reaches the follower", || followers[0].join("c").exists());
    assert!(std::fs::read(followers[0].join("a")).unwrap() == keep);
    let fetched = got(&followers[0]) - before;
    assert!(fetched < (1 << 20), "{fetched} bytes fetched again after a switch");

    // A file open on a follower stays readable, as it was, after the writer deleted it
    // and the follower moved on.
    let mut open = std::fs::File::open(followers[0].join("a")).unwrap();
    let mut head = vec![0u8; 1000];
    open.read_exact(&mut head).unwrap();
    std::fs::remove_file(w.join("a")).unwrap();
    std::fs::write(w.join("b"), b"after a").unwrap();
    for mnt in &followers {
        wait_for(30, "the deletion reaches a follower", || {
            !mnt.join("a").exists() && std::fs::read(mnt.join("b")).is_ok_and(|b| b == b"after a")
        });
    }
    let mut rest = Vec::new();
    open.seek(SeekFrom::Start(0)).unwrap();
    open.read_to_end(&mut rest).unwrap();
    assert!(rest == a, "the open file reads its version to the end");
    drop(open);
    // Closed: the old versions are finished, their files removed; one is left.
    let ro_dir = std::fs::read_dir(f.cachedir("follower-cache0"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().contains(".ro-"))
        .unwrap()
        .path();
    wait_for(10, "old versions finished", || {
        std::fs::read_dir(&ro_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("gen-"))
            .count()
            == 1
    });

    for mnt in &followers {
        assert_read_only(mnt, "b", "d");
    }

    // The writer killed: the followers serve the last version it published.
    std::fs::write(w.join("last"), b"last").unwrap();
    for mnt in &followers {
        wait_for(30, "the last file reaches a follower", || mnt.join("last").exists());
    }
    let last = tree(&followers[0]);
    let pid = common::mount::mount_pid(&w);
    // SAFETY: a process of this test.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    common::mount::wait_gone(pid);
    std::thread::sleep(std::time::Duration::from_secs(3));
    for mnt in &followers {
        assert!(tree(mnt) == last, "a follower keeps serving after the writer died");
        let s = stats(mnt);
        assert!(s["following"]["last_error"].is_null(), "{s}");
    }
    for mnt in &followers {
        umount(mnt);
    }
    let log = std::fs::read_to_string(f.dir.path().join("mount.log")).unwrap_or_default();
    assert!(!log.contains("refused to"), "no write was even tried: {log}");
    let _ = Command::new("fusermount3").arg("-uz").arg(&w).status();
    let cachedir = f.cachedir(CACHE);
    let o = f.tool(FSCK, &["--batch", "--cachedir", &cachedir, &f.url]);
    assert!(
        matches!(code(&o), 0 | 128),
        "fsck after the writer was killed: {}",
        text(&o)
    );
}

#[test]
fn followers_see_what_the_writer_publishes_on_local() {
    writer_and_two_followers(&Fixture::local());
}

#[test]
fn followers_see_what_the_writer_publishes_on_garage() {
    writer_and_two_followers(&Fixture::s3(&common::s3_server("GARAGE")));
}
