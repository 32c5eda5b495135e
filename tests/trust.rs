//! Hostile and unlucky input, end to end: real binaries, real mounts, real stores. What
//! a user or whoever can write to the bucket sends must never brick, downgrade, hang or
//! leak a filesystem (README, "What s3fs refuses").

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::mount::Fixture;
use common::{code, text};
use s3fs::mount::state::LocalFiles;
use s3fs::store::StorageUrl;

const FSCK: &str = env!("CARGO_BIN_EXE_fsck-s3fs");

fn fsck(f: &Fixture, cache: &str, extra: &[&str]) -> Output {
    let cachedir = f.cachedir(cache);
    let mut args = vec!["--batch", "--cachedir", &cachedir];
    args.extend_from_slice(extra);
    args.push(&f.url);
    f.tool(FSCK, &args)
}

/// The local files of the fixture's filesystem in cache directory `cache`.
fn local_files(f: &Fixture, cache: &str) -> LocalFiles {
    LocalFiles::new(Path::new(&f.cachedir(cache)), &StorageUrl::parse(&f.url).unwrap())
}

fn errno_of(r: std::io::Result<()>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Item 1: a truncate past the size limit is EFBIG; sizes an older s3fs let in neither
/// stop the next mount nor survive `fsck.s3fs --force`.
#[test]
fn a_giant_truncate_is_refused_and_giant_sizes_do_not_brick_the_filesystem() {
    let f = Fixture::local();
    f.mount("cache");
    let huge: PathBuf = f.mnt.join("huge");
    std::fs::write(&huge, b"data").unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&huge).unwrap();
    assert_eq!(errno_of(file.set_len(i64::MAX as u64)), Some(libc::EFBIG));
    assert_eq!(errno_of(file.set_len(s3fs::fs::MAX_FILE_SIZE + 1)), Some(libc::EFBIG));
    drop(file);
    std::fs::write(f.mnt.join("other"), b"x").unwrap();
    f.umount();
    f.mount("cache");
    assert_eq!(std::fs::read(&huge).unwrap(), b"data");
    f.umount();

    // What an older s3fs let in: two such sizes, whose sum overflowed at every mount.
    let db = rusqlite::Connection::open(local_files(&f, "cache").db).unwrap();
    db.execute("UPDATE inodes SET size = ?1 WHERE mode & 61440 = 32768", [i64::MAX])
        .unwrap();
    drop(db);
    f.mount("cache");
    assert_eq!(std::fs::metadata(&huge).unwrap().size(), i64::MAX as u64);
    let stat = std::process::Command::new(env!("CARGO_BIN_EXE_s3fsstat"))
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert_eq!(code(&stat), 0, "s3fsstat: {}", text(&stat));
    f.umount();
    let o = fsck(&f, "cache", &["--force"]);
    assert_eq!(code(&o), 128, "fsck repairs the sizes: {}", text(&o));
    assert!(text(&o).contains("outside 0..="), "{}", text(&o));
    f.mount("cache");
    assert_eq!(
        std::fs::read(&huge).unwrap(),
        b"data",
        "size set to the end of the data"
    );
    assert_eq!(std::fs::metadata(f.mnt.join("other")).unwrap().size(), 1);
    f.umount();
    assert_eq!(code(&fsck(&f, "cache", &["--force"])), 0);
}

/// Item 6: `truncate -s 1T f; fallocate -p -l 1T f` returns at once, the data before
/// the hole stays, and nothing is stored for the hole.
#[test]
fn punching_a_terabyte_hole_returns_promptly() {
    use std::os::fd::AsRawFd;
    let f = Fixture::local();
    f.mount("cache");
    let path = f.mnt.join("sparse");
    std::fs::write(&path, common::random_bytes(3 << 20, 6)).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(1 << 40).unwrap();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on an open descriptor.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, 1 << 20, (1 << 40) - (1 << 20)) };
        let _ = done.send((r, std::io::Error::last_os_error()));
    });
    let (r, e) = result
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("fallocate(PUNCH_HOLE) over 1 TiB did not return within a minute");
    assert_eq!(r, 0, "fallocate: {e}");
    let back = std::fs::File::open(&path).unwrap();
    let mut head = vec![0u8; 2 << 20];
    std::os::unix::fs::FileExt::read_exact_at(&back, &mut head, 0).unwrap();
    assert_eq!(&head[..1 << 20], &common::random_bytes(3 << 20, 6)[..1 << 20]);
    assert!(head[1 << 20..].iter().all(|&b| b == 0));
    assert_eq!(std::fs::metadata(&path).unwrap().size(), 1 << 40);
    drop(back);
    f.umount();
    assert_eq!(f.data_objects(), 1, "only the first block is stored");
}

fn c_path(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// Item 12: `-o noexec` (the fstab form) is applied, not dropped; flags that cannot be
/// honoured are refused.
#[test]
fn fstab_noexec_is_applied_and_sync_is_refused() {
    let f = Fixture::local();
    let o = f.mount_with(&f.cachedir("cache"), &f.mnt, &["-o", "noexec,nodev"]);
    assert_eq!(code(&o), 0, "mount -o noexec: {}", text(&o));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(&f.mnt.display().to_string()))
        .unwrap();
    assert!(line.contains("noexec"), "{line}");
    let script = f.mnt.join("run.sh");
    std::fs::write(&script, b"#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let e = std::process::Command::new(&script).status().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    f.umount();
    let o = f.mount_with(&f.cachedir("cache"), &f.mnt, &["-o", "sync"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("sync is not supported"), "{}", text(&o));
}

/// Item 12: the control file's name cannot be taken by a rename; times past 2262 are
/// clamped, not wrapped into another century.
#[test]
fn the_control_name_is_reserved_and_far_times_are_clamped() {
    let f = Fixture::local();
    f.mount("cache");
    let a = f.mnt.join("a");
    std::fs::write(&a, b"a").unwrap();
    let ctrl = f.mnt.join(s3fs::fs::CONTROL_NAME);
    let e = std::fs::rename(&a, &ctrl).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert_eq!(std::fs::read(&a).unwrap(), b"a");
    let stat = std::process::Command::new(env!("CARGO_BIN_EXE_s3fsstat"))
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert_eq!(code(&stat), 0, "the control file still works: {}", text(&stat));
    // 2300-01-01 and 1600-01-01.
    let (late, early) = (10_413_792_000i64, -11_676_096_000i64);
    let ts = [
        libc::timespec {
            tv_sec: early,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: late,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c_path(&a).as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let m = std::fs::metadata(&a).unwrap();
    assert_eq!(m.mtime(), i64::MAX / 1_000_000_000, "mtime clamped to 2262");
    assert_eq!(m.atime(), i64::MIN / 1_000_000_000 - 1, "atime clamped to 1677");
    f.umount();
}

/// Item 12: an authinfo2 that others may write or that belongs to another user is
/// refused (exit 12), and an absurd tcp-timeout is exit 3, not a panic.
#[test]
fn insecure_authinfo2_and_absurd_backend_options_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("authinfo2");
    std::fs::write(&auth, "[a]\nstorage-url: local://\n").unwrap();
    let mkfs = |extra: &[&str]| {
        std::process::Command::new(common::mount::MKFS)
            .env("HOME", dir.path())
            .arg("--authfile")
            .arg(&auth)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let url = format!("local://{}/store", dir.path().display());
    for (mode, owner) in [(0o620, 0), (0o602, 0), (0o600, 4321)] {
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&auth, Some(owner), None).unwrap();
        let o = mkfs(&["--plain", &url]);
        assert_eq!(code(&o), 12, "mode {mode:o} owner {owner}: {}", text(&o));
    }
    std::os::unix::fs::chown(&auth, Some(0), None).unwrap();
    let o = mkfs(&[
        "--plain",
        "--backend-options",
        "tcp-timeout=1e30",
        "s3c://127.0.0.1:1/bucket/p",
    ]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("tcp-timeout"), "{}", text(&o));
}
