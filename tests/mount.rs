//! Real FUSE mounts through the real binaries: what is written survives unmounting and
//! mounting again from an empty cache directory, exit codes, signals and dedup.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::mount::{Fixture, is_mounted, mount_pid, wait_gone};

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lsetxattr(c(p).as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 65536];
    // SAFETY: buffers are large enough and lengths passed.
    let n = unsafe { libc::llistxattr(c(p).as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr {}", p.display());
    for name in names[..n as usize].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        let m = unsafe { libc::lgetxattr(c(p).as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(m >= 0);
        v.truncate(m as usize);
        out.insert(name.to_vec(), v);
    }
    out
}

fn set_times(p: &Path, atime_ns: i64, mtime_ns: i64) {
    let ts = [
        libc::timespec {
            tv_sec: atime_ns / 1_000_000_000,
            tv_nsec: atime_ns % 1_000_000_000,
        },
        libc::timespec {
            tv_sec: mtime_ns / 1_000_000_000,
            tv_nsec: mtime_ns % 1_000_000_000,
        },
    ];
    // SAFETY: valid path and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c(p).as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0);
}

/// Build a tree with every kind of thing a backup holds.
fn populate(root: &Path) {
    let long = "n".repeat(255);
    for d in 0..6 {
        let dir = root.join(format!("dir{d}/sub"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..40 {
            std::fs::write(dir.join(format!("f{f}")), format!("file {d}/{f}\n").repeat(f + 1)).unwrap();
        }
    }
    std::fs::write(root.join("big"), common::random_bytes(9 << 20, 1)).unwrap();
    let mut sparse = std::fs::File::create(root.join("sparse")).unwrap();
    use std::io::Seek;
    sparse.seek(std::io::SeekFrom::Start(50 << 20)).unwrap();
    sparse.write_all(b"end").unwrap();
    drop(sparse);
    std::fs::write(root.join("with space ü ☃"), b"odd name").unwrap();
    std::fs::write(root.join(&long), b"255-byte name").unwrap();
    std::os::unix::fs::symlink("dir0/sub/f1", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::fs::hard_link(root.join("dir1/sub/f2"), root.join("hard")).unwrap();
    // SAFETY: mkfifo on a valid path.
    assert_eq!(unsafe { libc::mkfifo(c(&root.join("fifo")).as_ptr(), 0o640) }, 0);
    set_xattr(&root.join("big"), "user.origin", b"test");
    set_xattr(&root.join("dir2"), "user.binary", &[0, 1, 2, 255]);
    set_xattr(&root.join("dir2"), "trusted.x", b"t");
    std::fs::set_permissions(root.join("dir3"), std::fs::Permissions::from_mode(0o2750)).unwrap();
    std::fs::set_permissions(root.join("big"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::lchown(root.join("dir4/sub/f3"), Some(1234), Some(5678)).unwrap();
    set_times(&root.join("dir5/sub/f7"), 1_000_000_123, 1_500_000_000_987_654_321);
}

/// Everything about a tree that must survive: per path, kind, mode, owner, size, mtime
/// (ns), link count, content digest, symlink target and xattrs.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    for (rel, path, m) in common::walk(root) {
        let ft = m.file_type();
        let content = if ft.is_file() {
            hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()))
        } else if ft.is_symlink() {
            std::fs::read_link(&path).unwrap().display().to_string()
        } else {
            String::new()
        };
        let size = if ft.is_dir() { 0 } else { m.size() };
        let desc = format!(
            "mode={:o} uid={} gid={} size={size} mtime={}.{:09} nlink={} content={content} xattrs={:?}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec(),
            m.nlink(),
            xattrs(&path)
        );
        out.insert(rel, desc);
    }
    out
}

fn round_trip(f: &Fixture) {
    f.mount("cache1");
    populate(&f.mnt);
    let before = snapshot(&f.mnt);
    assert!(before.len() > 250, "{} entries", before.len());
    f.umount();
    // A new, empty cache directory: everything comes from the store.
    f.mount("cache2");
    let after = snapshot(&f.mnt);
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{} differs after remount", k.display());
    }
    assert_eq!(before.len(), after.len());
    f.umount();
}

#[test]
fn tree_survives_remount_with_empty_cache_on_local() {
    round_trip(&Fixture::local());
}

#[test]
fn tree_survives_remount_with_empty_cache_on_garage() {
    round_trip(&Fixture::s3(&common::s3_server("GARAGE")));
}

#[test]
fn mount_refusals_have_documented_exit_codes() {
    let f = Fixture::local();
    let code = |o: &Output| o.status.code().unwrap();
    let missing = f.dir.path().join("nope");
    assert_eq!(
        code(&f.mount_with(&f.cachedir("c"), &missing, &[])),
        36,
        "missing mountpoint"
    );
    f.mount("cache1");
    assert_eq!(
        code(&f.mount_with(&f.cachedir("c"), &f.mnt, &[])),
        40,
        "mountpoint in use"
    );
    let mnt2 = f.dir.path().join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let second = f.mount_with(&f.cachedir("other"), &mnt2, &[]);
    assert_eq!(
        code(&second),
        31,
        "second mount: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("pid"),
        "names the holder"
    );
    assert!(!is_mounted(&mnt2));
    // Administrative tools refuse a mounted filesystem (the mount table names it by its
    // canonical URL).
    let adm = f.tool(env!("CARGO_BIN_EXE_s3fsadm"), &["passphrase", &f.url]);
    assert_eq!(
        code(&adm),
        40,
        "s3fsadm on a mounted filesystem: {}",
        String::from_utf8_lossy(&adm.stderr)
    );
    f.umount();
}

#[test]
fn sigterm_unmounts_cleanly_and_kill_9_needs_fsck() {
    let f = Fixture::local();
    f.mount("cache1");
    std::fs::write(f.mnt.join("kept"), b"written before SIGTERM").unwrap();
    let pid = mount_pid(&f.mnt);
    // SAFETY: signalling our own child's daemon.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_gone(pid);
    assert!(!is_mounted(&f.mnt), "SIGTERM unmounts");
    f.mount("cache2");
    assert_eq!(std::fs::read(f.mnt.join("kept")).unwrap(), b"written before SIGTERM");

    let pid = mount_pid(&f.mnt);
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);
    let _ = Command::new("fusermount3").arg("-uz").arg(&f.mnt).status();
    let o = f.mount_with(&f.cachedir("cache2"), &f.mnt, &[]);
    assert_eq!(
        o.status.code(),
        Some(30),
        "after kill -9: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("fsck.s3fs"),
        "says what to do"
    );
}

#[test]
fn copies_add_no_data_objects() {
    let f = Fixture::local();
    f.mount("cache1");
    std::fs::write(f.mnt.join("orig"), common::random_bytes(8 << 20, 9)).unwrap();
    f.umount();
    let objects = f.data_objects();
    assert!(objects >= 8, "{objects} data objects for an 8 MiB file");
    f.mount("cache1");
    std::fs::copy(f.mnt.join("orig"), f.mnt.join("copy")).unwrap();
    let st = Command::new("cp")
        .arg("--reflink=auto")
        .arg(f.mnt.join("orig"))
        .arg(f.mnt.join("copy2"))
        .status()
        .unwrap();
    assert!(st.success());
    f.umount();
    assert_eq!(f.data_objects(), objects, "copies are deduplicated");
    f.mount("cache2");
    assert_eq!(
        std::fs::read(f.mnt.join("copy")).unwrap(),
        common::random_bytes(8 << 20, 9)
    );
    f.umount();
}

/// Files with the content that `big_tree` writes.
fn small_file(i: usize) -> Vec<u8> {
    format!("small file {i}\n").repeat(i % 7 + 1).into_bytes()
}

/// 10,000 small files in 100 directories and a 1 GiB file survive a remount from an
/// empty cache; renaming the directory that holds the 10,000 files writes nothing to
/// the store (it is one metadata row; uploads are held back and backups off here).
fn big_tree(f: &Fixture, store_dir: Option<&Path>) {
    f.mount("cache1");
    let top = f.mnt.join("tree");
    for d in 0..100 {
        let dir = top.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..100 {
            std::fs::write(dir.join(format!("f{i:03}")), small_file(d * 100 + i)).unwrap();
        }
    }
    let chunk = common::random_bytes(1 << 20, 77);
    let mut big = std::fs::File::create(f.mnt.join("big")).unwrap();
    for i in 0..1024u32 {
        let mut c = chunk.clone();
        c[..4].copy_from_slice(&i.to_le_bytes()); // every MiB differs
        big.write_all(&c).unwrap();
    }
    big.sync_all().unwrap();
    drop(big);
    f.umount();

    // Rename with uploads held back: the store must not change.
    let extra = ["--dirty-block-upload-delay", "3600", "--metadata-backup-interval", "0"];
    let o = f.mount_with(&f.cachedir("cache1"), &f.mnt, &extra);
    assert!(o.status.success(), "mount: {}", String::from_utf8_lossy(&o.stderr));
    let before = store_dir.map(store_state);
    std::fs::rename(&top, f.mnt.join("renamed")).unwrap();
    assert!(f.mnt.join("renamed/d42/f042").exists());
    if let (Some(dir), Some(before)) = (store_dir, before) {
        assert_eq!(
            store_state(dir),
            before,
            "renaming a 10,000-file directory wrote to the store"
        );
    }
    f.umount();

    f.mount("cache2");
    for d in 0..100 {
        for i in 0..100 {
            let p = f.mnt.join(format!("renamed/d{d:02}/f{i:03}"));
            assert_eq!(std::fs::read(&p).unwrap(), small_file(d * 100 + i), "{}", p.display());
        }
    }
    use std::io::Read;
    let mut big = std::fs::File::open(f.mnt.join("big")).unwrap();
    assert_eq!(big.metadata().unwrap().len(), 1 << 30);
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..1024u32 {
        big.read_exact(&mut buf).unwrap();
        let mut c = chunk.clone();
        c[..4].copy_from_slice(&i.to_le_bytes());
        assert!(buf == c, "MiB {i} of the 1 GiB file differs");
    }
    drop(big);
    f.umount();
}

/// Names, sizes and modification times of every object file of a local store.
fn store_state(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                out.insert(e.path(), (m.len(), m.mtime(), m.mtime_nsec()));
            }
        }
    }
    out
}

#[test]
fn ten_thousand_files_and_a_gib_on_local() {
    let f = Fixture::local();
    let store = f.dir.path().join("store");
    big_tree(&f, Some(&store));
}

#[test]
fn ten_thousand_files_and_a_gib_on_garage() {
    big_tree(&Fixture::s3(&common::s3_server("GARAGE")), None);
}
