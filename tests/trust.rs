//! Hostile and unlucky input, end to end: real binaries, real mounts, real stores. What
//! a user or whoever can write to the bucket sends must never brick, downgrade, hang or
//! leak a filesystem (README, "What s3fs refuses").

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::mount::Fixture;
use common::{code, text};
use s3fs::meta::versions::state::LocalFiles;
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

/// The plain filesystem of `f` as the store holds it (what anyone with write access to
/// the bucket can change).
fn plain_store(f: &Fixture) -> s3fs::fs_store::FsStore {
    let raw = s3fs::store::local::LocalStore::open(&f.dir.path().join("store")).unwrap();
    s3fs::fs_store::FsStore::new(
        std::sync::Arc::new(raw),
        s3fs::codec::Codec::new(None, s3fs::codec::Compression::default()),
    )
}

/// Replace the current superblock with `params` as they are, valid or not.
fn put_params(fs: &s3fs::fs_store::FsStore, params: &s3fs::params::Params) {
    s3fs::runtime::block_on(fs.put(
        s3fs::fs_store::names::PARAMS,
        &params.to_json(),
        s3fs::store::PutMode::Overwrite,
    ))
    .unwrap();
}

/// The file holding object `name` in a local store.
fn object_file(store: &Path, name: &str) -> PathBuf {
    common::walk(store)
        .into_iter()
        .find(|(rel, _, _)| rel.file_name().is_some_and(|n| n == name))
        .map(|(_, full, _)| full)
        .unwrap_or_else(|| panic!("no object {name} in {}", store.display()))
}

fn no_panic(o: &Output) {
    assert_ne!(code(o), 101, "panicked: {}", text(o));
    assert!(!text(o).contains("panicked"), "{}", text(o));
}

/// Item 5: sizes and parameters from the store are bounded before anything is
/// allocated or computed with them: each refusal is a one-line error, the mount
/// process does not abort, and the filesystem is intact once the store is repaired.
#[test]
fn sizes_and_parameters_from_the_store_are_bounded() {
    let f = Fixture::local();
    f.mount("cache");
    // One full block: an object of its own (a segment of a pack is fetched with a
    // ranged GET, which the size of the pack does not change).
    std::fs::write(f.mnt.join("file"), common::random_bytes(1 << 20, 5)).unwrap();
    f.umount();
    let fs = plain_store(&f);

    // A data object the store says is 200 GiB (sparse here): reading the file is EIO,
    // the mount lives on.
    let obj = object_file(&f.dir.path().join("store"), "s3fs_data_1");
    let saved = std::fs::read(&obj).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&obj)
        .unwrap()
        .set_len(200 << 30)
        .unwrap();
    f.mount("fresh-cache");
    let e = std::fs::read(f.mnt.join("file")).map(|d| d.len()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    std::fs::write(f.mnt.join("still-alive"), b"yes").unwrap();
    f.umount();
    std::fs::write(&obj, &saved).unwrap();
    let good = s3fs::runtime::block_on(fs.read_params()).unwrap();

    // Superblocks with a zero chunk size, a metadata size of 2^50, a size that does not
    // fit on the disk: refused in words, on a host with an empty cache.
    let disk_free = s3fs::localdisk::disk_space(f.dir.path()).unwrap().1;
    for (bad, says) in [
        (
            s3fs::params::Params {
                metadata_block_size: 0,
                ..good.clone()
            },
            "metadata block size 0 is out of range",
        ),
        (
            s3fs::params::Params {
                db_size: 1 << 50,
                ..good.clone()
            },
            "metadata size",
        ),
        (
            s3fs::params::Params {
                db_size: disk_free + (1 << 30),
                ..good.clone()
            },
            "too few for metadata version",
        ),
    ] {
        put_params(&fs, &bad);
        let o = f.mount_with(&f.cachedir(&format!("empty-{}", bad.db_size)), &f.mnt, &[]);
        no_panic(&o);
        assert_ne!(code(&o), 0, "{}", text(&o));
        assert!(text(&o).contains(says), "{says:?} in {}", text(&o));
    }
    put_params(&fs, &good);
    f.mount("fresh-cache-2");
    assert!(
        std::fs::read(f.mnt.join("file")).unwrap() == common::random_bytes(1 << 20, 5),
        "the file reads back once its object is sound again"
    );
    f.umount();
}

/// Item 5: a metadata database from the store runs nothing that s3fs did not put in
/// its schema.
#[test]
fn a_downloaded_database_with_a_foreign_trigger_is_refused() {
    let f = Fixture::local();
    f.mount("cache");
    std::fs::write(f.mnt.join("file"), b"data").unwrap();
    f.umount();
    let fs = plain_store(&f);
    let mut params = s3fs::runtime::block_on(fs.read_params()).unwrap();
    let db = local_files(&f, "cache").db;
    let evil = f.dir.path().join("evil.db");
    std::fs::copy(&db, &evil).unwrap();
    let c = rusqlite::Connection::open(&evil).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = DELETE;
         CREATE TRIGGER wipe AFTER UPDATE ON inodes BEGIN DELETE FROM contents; END;",
    )
    .unwrap();
    drop(c);
    params.seq += 1;
    let digest = s3fs::runtime::block_on(s3fs::meta::chunks::upload_all(
        &fs,
        &evil,
        params.seq,
        params.metadata_block_size,
        4,
    ))
    .unwrap();
    params.db_size = digest.size;
    params.db_sha256 = digest.sha256;
    s3fs::runtime::block_on(fs.write_params(&params)).unwrap();
    let o = f.mount_with(&f.cachedir("empty"), &f.mnt, &[]);
    no_panic(&o);
    assert_eq!(code(&o), 43, "{}", text(&o));
    assert!(text(&o).contains("trigger \"wipe\""), "{}", text(&o));
}

/// mkfs.s3fs of an encrypted filesystem at `f.url`, the new passphrase on stdin (it is
/// never taken from authinfo2).
fn mkfs_encrypted(f: &Fixture, passphrase: &str) {
    use std::io::Write;
    let mut mkfs = std::process::Command::new(common::mount::MKFS)
        .env("HOME", f.dir.path())
        .arg("--authfile")
        .arg(f.dir.path().join("authinfo2"))
        .arg(&f.url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = mkfs.stdin.take().unwrap();
    stdin.write_all(format!("{passphrase}\n").as_bytes()).unwrap();
    drop(stdin);
    let o = mkfs.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "mkfs: {}", text(&o));
}

/// Item 5: a key object whose Argon2 parameters ask for 4 GiB and 64 passes is damaged,
/// refused before any derivation.
#[test]
fn absurd_key_derivation_parameters_are_refused_at_once() {
    let f = new_encrypted_filesystem();
    let url = f.url.clone();
    let store = f.dir.path().join("store");
    for name in s3fs::fs_store::names::KEY_COPIES {
        let path = object_file(&store, name);
        let mut blob = std::fs::read(&path).unwrap();
        blob[10..14].copy_from_slice(&(4u32 << 20).to_le_bytes());
        blob[14..18].copy_from_slice(&64u32.to_le_bytes());
        std::fs::write(&path, blob).unwrap();
    }
    let o = f.tool(FSCK, &["--batch", "--cachedir", &f.cachedir("c"), &url]);
    no_panic(&o);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("bad KDF parameters"), "{}", text(&o));
}

/// A new encrypted filesystem whose owner keeps the passphrase in authinfo2.
fn new_encrypted_filesystem() -> Fixture {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("local://{}/store", dir.path().display());
    let auth = dir.path().join("authinfo2");
    std::fs::write(
        &auth,
        format!("[fs]\nstorage-url: {url}\nfs-passphrase: secret words\n"),
    )
    .unwrap();
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let f = Fixture { dir, url, mnt };
    mkfs_encrypted(&f, "secret words");
    f
}

/// [`new_encrypted_filesystem`] written and unmounted, its cache directory `cache`
/// kept.
fn encrypted_fixture() -> Fixture {
    let f = new_encrypted_filesystem();
    f.mount("cache");
    std::fs::write(f.mnt.join("secret"), b"the owner's data").unwrap();
    f.umount();
    f
}

/// What someone with write access to the bucket (and no passphrase) can do: delete the
/// keys and the metadata, and put a plain filesystem of their own in their place.
fn replace_with_plain_filesystem(f: &Fixture) {
    let other = Fixture::local();
    other.mount("cache");
    std::fs::write(other.mnt.join("secret"), b"the attacker's data").unwrap();
    other.umount();
    let victim = s3fs::store::local::LocalStore::open(&f.dir.path().join("store")).unwrap();
    let theirs = s3fs::store::local::LocalStore::open(&other.dir.path().join("store")).unwrap();
    use s3fs::store::Store;
    s3fs::runtime::block_on(async {
        for o in s3fs::store::list_all(&victim, "s3fs_").await.unwrap() {
            if !o.key.starts_with("s3fs_data_") {
                victim.delete(&o.key).await.unwrap();
            }
        }
        for o in s3fs::store::list_all(&theirs, "s3fs_").await.unwrap() {
            if !o.key.starts_with("s3fs_data_") {
                let body = theirs.get(&o.key, u64::MAX).await.unwrap();
                victim.put(&o.key, body, s3fs::store::PutMode::Overwrite).await.unwrap();
            }
        }
    });
}

/// Item 3: a filesystem that was encrypted stays encrypted: with the passphrase in
/// authinfo2, or a cache directory that remembers, a plain superblock put in its place
/// is refused (exit 47), never mounted, and nothing is uploaded in plaintext.
#[test]
fn encryption_cannot_be_switched_off_from_the_store() {
    let f = encrypted_fixture();
    replace_with_plain_filesystem(&f);
    let store = f.dir.path().join("store");
    let objects_before = common::walk(&store).len();
    // A new host with an empty cache: the configured passphrase says it is encrypted.
    let o = f.mount_with(&f.cachedir("new-host"), &f.mnt, &[]);
    assert_eq!(code(&o), 47, "{}", text(&o));
    assert!(text(&o).contains("not encrypted"), "{}", text(&o));
    assert!(!common::mount::is_mounted(&f.mnt));
    // The owner's host without the passphrase in authinfo2: its cache remembers.
    std::fs::write(f.dir.path().join("authinfo2"), "").unwrap();
    let o = f.mount_with(&f.cachedir("cache"), &f.mnt, &[]);
    assert_eq!(code(&o), 47, "{}", text(&o));
    assert!(text(&o).contains("was encrypted"), "{}", text(&o));
    let o = fsck(&f, "cache", &["--force"]);
    assert_eq!(code(&o), 47, "fsck refuses too: {}", text(&o));
    assert_eq!(
        common::walk(&store).len(),
        objects_before,
        "nothing was written to the store"
    );
}

/// Item 3: a plain filesystem says so, once in the mount log and in s3fsstat.
#[test]
fn a_plain_filesystem_says_it_is_not_encrypted() {
    let f = Fixture::local();
    f.mount("cache");
    let stat = std::process::Command::new(env!("CARGO_BIN_EXE_s3fsstat"))
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert!(
        text(&stat).contains("Encryption:") && text(&stat).contains("none"),
        "{}",
        text(&stat)
    );
    f.umount();
    let log = std::fs::read_to_string(f.dir.path().join("mount.log")).unwrap();
    assert_eq!(log.matches("not encrypted").count(), 1, "{log}");
}

/// Item 4: an older superblock put back in the store (object versioning, a restored
/// bucket) is refused where the store or this host knows of a newer version.
#[test]
fn a_rolled_back_superblock_is_refused() {
    let f = Fixture::local();
    let store = s3fs::store::local::LocalStore::open(&f.dir.path().join("store")).unwrap();
    use s3fs::store::Store;
    let current = || s3fs::runtime::block_on(store.get("s3fs_params", u64::MAX)).unwrap();
    f.mount("cache");
    std::fs::write(f.mnt.join("one"), b"1").unwrap();
    f.umount();
    let old = current();
    f.mount("cache");
    std::fs::write(f.mnt.join("two"), b"2").unwrap();
    f.umount();
    s3fs::runtime::block_on(store.put("s3fs_params", old, s3fs::store::PutMode::Overwrite)).unwrap();
    // A host with an empty cache: the store lists a newer version.
    let o = f.mount_with(&f.cachedir("new-host"), &f.mnt, &[]);
    assert_eq!(code(&o), 47, "{}", text(&o));
    assert!(text(&o).contains("rolled back"), "{}", text(&o));
    // The host that wrote the newer version knows it too.
    let o = f.mount_with(&f.cachedir("cache"), &f.mnt, &[]);
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("rolled back"), "{}", text(&o));
    // fsck on that host brings the newer version back as the current one.
    let o = fsck(&f, "cache", &[]);
    assert!(matches!(code(&o), 0 | 128), "{}", text(&o));
    f.mount("new-host");
    assert_eq!(std::fs::read(f.mnt.join("two")).unwrap(), b"2");
    f.umount();
}

/// Item 2: permissions are checked as on ext4 for a user who mounts their own
/// filesystem (without --allow-other): a 0444 file cannot be written (EACCES) and a
/// chown to another user is EPERM. Runs the real binaries as an unprivileged user.
#[test]
fn an_unprivileged_users_own_mount_checks_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let fuse = std::fs::metadata("/dev/fuse").expect("/dev/fuse");
    assert!(
        fuse.permissions().mode() & 0o006 == 0o006,
        "/dev/fuse must be usable by every user, as on Debian (tests/run.sh sets mode 0666)"
    );
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(root.join("mnt")).unwrap();
    std::os::unix::fs::chown(root, Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::chown(root.join("mnt"), Some(NOBODY), Some(NOBODY)).unwrap();
    let url = format!("local://{}/store", root.display());
    let mnt = root.join("mnt");
    // The user may not be able to reach the build directory (a checkout under /root):
    // the binaries it runs are copied where it can.
    std::fs::create_dir(root.join("bin")).unwrap();
    let copy = |bin: &str| {
        let to = root.join("bin").join(Path::new(bin).file_name().unwrap());
        std::fs::copy(bin, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to.display().to_string()
    };
    let (mkfs, mount, umount) = (
        copy(common::mount::MKFS),
        copy(common::mount::MOUNT),
        copy(common::mount::UMOUNT),
    );
    let as_user = |program: &str, args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .args(args)
            .env("HOME", root)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let cache = root.join("cache").display().to_string();
    let mnt_s = mnt.display().to_string();
    let o = as_user(&mkfs, &["--plain", &url]);
    assert_eq!(code(&o), 0, "mkfs as nobody: {}", text(&o));
    let o = as_user(&mount, &["--cachedir", &cache, &url, &mnt_s]);
    assert_eq!(code(&o), 0, "mount as nobody: {}", text(&o));
    let file = mnt.join("f").display().to_string();
    let shell = |script: &str| as_user("sh", &["-c", script]);
    let o = shell(&format!("echo data > {file} && chmod 0444 {file}"));
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = shell(&format!("echo more >> {file}"));
    assert_ne!(code(&o), 0, "writing a 0444 file must fail");
    assert!(text(&o).contains("Permission denied"), "EACCES: {}", text(&o));
    let o = shell(&format!("chown 0 {file}"));
    assert_ne!(code(&o), 0, "chown to root must fail");
    assert!(text(&o).contains("Operation not permitted"), "EPERM: {}", text(&o));
    let o = shell(&format!("chmod 0644 {file} && echo more >> {file} && cat {file}"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "data\nmore\n", "{}", text(&o));
    let o = as_user(&umount, &[&mnt_s]);
    assert_eq!(code(&o), 0, "umount as nobody: {}", text(&o));
    assert!(!common::mount::is_mounted(&mnt));
}

/// Run `program` for fixture `f` with `input` on standard input.
fn tool_with_input(f: &Fixture, program: &str, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .env("HOME", f.dir.path())
        .arg("--authfile")
        .arg(f.dir.path().join("authinfo2"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Item 11: `s3fsadm clear` of `…/p` deletes exactly that filesystem's local files, not
/// those of `…/p-2` (mounted meanwhile) or `…/p.old` in the same cache directory.
#[test]
fn clear_deletes_only_its_own_local_files_on_garage() {
    let server = common::s3_server("GARAGE");
    let base = server.url_with_prefix("clear");
    let auth = format!(
        "[s3]\nstorage-url: {}\nbackend-login: {}\nbackend-password: {}\nbackend-options: {}\n",
        server.url, server.login, server.password, server.options
    );
    let make = |suffix: &str| Fixture::new(tempfile::tempdir().unwrap(), format!("{base}p{suffix}"), &auth);
    let (p, p2, pold) = (make(""), make("-2"), make(".old"));
    let cache = p.cachedir("shared-cache");
    for f in [&p, &p2, &pold] {
        let o = f.mount_with(&cache, &f.mnt, &[]);
        assert_eq!(code(&o), 0, "mount {}: {}", f.url, text(&o));
        std::fs::write(f.mnt.join("file"), f.url.as_bytes()).unwrap();
        f.umount();
    }
    let o = p2.mount_with(&cache, &p2.mnt, &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing();
    let o = tool_with_input(
        &p,
        env!("CARGO_BIN_EXE_s3fsadm"),
        &["clear", "--cachedir", &cache, &p.url],
        "yes\n",
    );
    assert_eq!(code(&o), 0, "clear: {}", text(&o));
    let stem = |f: &Fixture| s3fs::config::cache_stem(&StorageUrl::parse(&f.url).unwrap());
    let (mine, others) = (stem(&p), [stem(&p2), stem(&pold)]);
    let gone: Vec<&String> = before.iter().filter(|n| !listing().contains(n)).collect();
    assert!(
        !gone.is_empty() && gone.iter().all(|n| n.starts_with(&mine)),
        "deleted: {gone:?}"
    );
    for theirs in &others {
        assert!(
            before
                .iter()
                .filter(|n| n.starts_with(theirs.as_str()))
                .all(|n| listing().contains(n)),
            "{theirs}'s files were touched: {before:?} -> {:?}",
            listing()
        );
    }
    assert_eq!(std::fs::read(p2.mnt.join("file")).unwrap(), p2.url.as_bytes());
    std::fs::write(p2.mnt.join("after"), b"still working").unwrap();
    p2.umount();
    let o = pold.mount_with(&cache, &pold.mnt, &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(std::fs::read(pold.mnt.join("file")).unwrap(), pold.url.as_bytes());
    pold.umount();
}

/// Item 10: everything s3fs writes that holds data or metadata is its owner's alone,
/// whatever the umask: a cache directory others can enter is made 0700 (with a
/// warning), and files are 0600, directories 0700.
#[test]
fn cache_files_and_logs_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::local();
    let cache = f.dir.path().join("var-cache-s3fs");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache_s = cache.display().to_string();
    let o = f.mount_with(&cache_s, &f.mnt, &["--keep-cache"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    std::fs::write(f.mnt.join("data"), common::random_bytes(3 << 20, 3)).unwrap();
    f.umount();
    let o = f.tool(
        FSCK,
        &["--batch", "--force", "--keep-cache", "--cachedir", &cache_s, &f.url],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&cache), 0o700, "the cache directory is made private");
    let entries = common::walk(&cache);
    assert!(entries.len() >= 4, "db, params, cache dir and blocks: {entries:?}");
    for (rel, path, m) in entries {
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), want, "{}", rel.display());
    }
    assert_eq!(mode(&f.dir.path().join("mount.log")), 0o600, "mount.log");
    let log = std::fs::read_to_string(f.dir.path().join("mount.log")).unwrap();
    assert!(log.contains("was open to other users"), "{log}");
    // Another user's cache directory is refused.
    std::os::unix::fs::chown(&cache, Some(4321), None).unwrap();
    let o = f.mount_with(&cache_s, &f.mnt, &[]);
    assert_eq!(code(&o), 45, "{}", text(&o));
}

/// Item 10: the plaintext metadata s3fs_verify downloads to $TMPDIR is 0600.
#[test]
fn downloaded_metadata_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::local();
    let fs = plain_store(&f);
    let params = s3fs::runtime::block_on(fs.read_params()).unwrap();
    let out = f.dir.path().join("copy.db");
    s3fs::runtime::block_on(s3fs::meta::chunks::download(&fs, &params, &out, 2)).unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Item 7: SIGTERM (systemctl stop) while a process has a file open: the mount is
/// detached but keeps serving that file; what is written through it before it is
/// closed reaches the store, and only then is the filesystem marked clean.
#[test]
fn sigterm_while_busy_serves_open_files_then_uploads_them() {
    use std::io::Write;
    let f = Fixture::local();
    f.mount("cache");
    let path = f.mnt.join("open");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"before").unwrap();
    let pid = common::mount::mount_pid(&f.mnt);
    // SAFETY: signalling the mount process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(alive(pid), "a busy mount goes on serving the files still open");
    assert!(!common::mount::is_mounted(&f.mnt), "it is detached");
    file.write_all(b" after the signal").unwrap();
    drop(file);
    common::mount::wait_gone(pid);
    f.mount("other-cache");
    assert_eq!(std::fs::read(f.mnt.join("open")).unwrap(), b"before after the signal");
    f.umount();
    let log = std::fs::read_to_string(f.dir.path().join("mount.log")).unwrap();
    assert!(log.contains("detached it"), "{log}");
}

/// Item 7: a second signal cuts off the processes that still use a detached mount, at
/// once: their next request fails, and what they wrote before is in the store.
#[test]
fn a_second_sigterm_cuts_off_a_busy_mount() {
    use std::io::Write;
    let f = Fixture::local();
    f.mount("cache");
    let mut file = std::fs::File::create(f.mnt.join("open")).unwrap();
    file.write_all(b"kept").unwrap();
    let pid = common::mount::mount_pid(&f.mnt);
    // SAFETY: signalling the mount process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(alive(pid));
    unsafe { libc::kill(pid, libc::SIGTERM) };
    common::mount::wait_gone(pid);
    assert!(
        file.write_all(b"too late").is_err(),
        "no request reaches a cut-off mount"
    );
    drop(file);
    f.mount("other-cache");
    assert_eq!(std::fs::read(f.mnt.join("open")).unwrap(), b"kept");
    f.umount();
}

/// A mount with the store behind a fault-injecting wrapper configured by `faults` (see
/// `S3FS_TEST_FAULTS`), in the background; returns once it is up.
fn mount_with_faults(f: &Fixture, cache: &str, faults: &str, extra: &[&str]) {
    let o = std::process::Command::new(common::mount::MOUNT)
        .env("HOME", f.dir.path())
        .env(s3fs::store::open::FAULT_ENV, faults)
        .arg("--authfile")
        .arg(f.dir.path().join("authinfo2"))
        .args(["--cachedir", &f.cachedir(cache), "--log"])
        .arg(f.dir.path().join("mount.log"))
        .args(extra)
        .arg(&f.url)
        .arg(&f.mnt)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "mount: {}", text(&o));
}

/// Run `work` on another thread; fail the test if it takes longer than `limit` (a hang).
fn within<T: Send + 'static>(limit: std::time::Duration, what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}: it hangs"))
}

/// Item 8: a lazy unmount while `s3fsctrl sync` waits for the metadata upload ends with
/// everything uploaded and the mount process gone (it deadlocked: the sync held a FUSE
/// thread the mount's main loop waited for).
#[test]
fn lazy_unmount_during_sync_ends_with_everything_uploaded() {
    let f = Fixture::local();
    // 150 ms per store request: the sync takes a while.
    mount_with_faults(&f, "cache", "latency-ms=150", &["--dirty-block-upload-delay", "3600"]);
    for i in 0..8 {
        std::fs::write(f.mnt.join(format!("f{i}")), common::random_bytes(200_000, i)).unwrap();
    }
    let pid = common::mount::mount_pid(&f.mnt);
    let mnt = f.mnt.clone();
    let sync = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_s3fsctrl"))
            .arg("sync")
            .arg(&mnt)
            .output()
            .unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(700));
    let o = std::process::Command::new(common::mount::UMOUNT)
        .arg("--lazy")
        .arg(&f.mnt)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "umount --lazy: {}", text(&o));
    let synced = within(std::time::Duration::from_secs(120), "s3fsctrl sync", move || {
        sync.join().unwrap()
    });
    assert_eq!(code(&synced), 0, "sync: {}", text(&synced));
    within(std::time::Duration::from_secs(120), "the mount process", move || {
        common::mount::wait_gone(pid)
    });
    f.mount("fresh");
    for i in 0..8 {
        assert_eq!(
            std::fs::read(f.mnt.join(format!("f{i}"))).unwrap(),
            common::random_bytes(200_000, i)
        );
    }
    f.umount();
}

/// Item 9: the store goes down while the cache is full. Writers get ENOSPC after the
/// store timeout (not a hang; counted in s3fsstat), cached data, metadata operations and
/// the control file keep working, a read of a block not in the cache is EIO, and
/// umount.s3fs says what it waits for and completes once the store is back, with every
/// acknowledged write in the store.
#[test]
fn store_down_with_a_full_cache_hangs_nothing() {
    use std::io::Write;
    let f = Fixture::local();
    let down = f.dir.path().join("store-is-down");
    mount_with_faults(
        &f,
        "cache",
        &format!("down-while={}", down.display()),
        &[
            "--cachesize",
            "8192",
            "--store-timeout",
            "3",
            "--dirty-block-upload-delay",
            "0",
        ],
    );
    std::fs::write(f.mnt.join("cached"), b"small and cached").unwrap();
    std::fs::write(f.mnt.join("evicted"), common::random_bytes(3 << 20, 1)).unwrap();
    let ctrl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_s3fsctrl"))
            .args(args)
            .arg(&f.mnt)
            .output()
            .unwrap()
    };
    assert_eq!(code(&ctrl(&["dropcache"])), 0);
    std::fs::read(f.mnt.join("cached")).unwrap();
    std::fs::write(&down, b"").unwrap();

    // 40 MiB into an 8 MiB cache: refused with ENOSPC once the store has failed for
    // the store timeout; everything written before that is acknowledged and kept.
    let big = f.mnt.join("big");
    let written = within(
        std::time::Duration::from_secs(120),
        "a write into a full cache",
        move || {
            let mut file = std::fs::File::create(&big).unwrap();
            let chunk = vec![7u8; 1 << 20];
            let mut n = 0;
            loop {
                match file.write_all(&chunk) {
                    Ok(()) => n += 1,
                    Err(e) => return (n, e.raw_os_error()),
                }
                if n == 40 {
                    return (n, None);
                }
            }
        },
    );
    assert_eq!(written.1, Some(libc::ENOSPC), "{written:?}");
    let acknowledged = written.0;

    let mnt = f.mnt.clone();
    within(
        std::time::Duration::from_secs(30),
        "metadata and cached reads",
        move || {
            assert_eq!(std::fs::read(mnt.join("cached")).unwrap(), b"small and cached");
            std::fs::create_dir(mnt.join("new-dir")).unwrap();
            assert!(std::fs::read_dir(&mnt).unwrap().count() >= 4);
        },
    );
    let mnt = f.mnt.clone();
    let e = within(
        std::time::Duration::from_secs(60),
        "a read of an evicted block",
        move || std::fs::read(mnt.join("evicted")).unwrap_err(),
    );
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let stat = std::process::Command::new(env!("CARGO_BIN_EXE_s3fsstat"))
        .args(["--json"])
        .arg(&f.mnt)
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap_or_else(|_| panic!("{}", text(&stat)));
    assert!(s["refused_writes"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["failed_reads"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["store_failing_secs"].as_f64().unwrap() >= 3.0, "{s}");

    // umount.s3fs waits, saying for what, and ends once the store is back.
    let umount = std::process::Command::new(common::mount::UMOUNT)
        .arg(&f.mnt)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(5));
    std::fs::remove_file(&down).unwrap();
    let o = within(std::time::Duration::from_secs(300), "umount.s3fs", move || {
        umount.wait_with_output().unwrap()
    });
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("which has failed every request"),
        "says what it waits for: {}",
        text(&o)
    );
    f.mount("fresh");
    let big = std::fs::read(f.mnt.join("big")).unwrap();
    assert!(
        big.len() >= acknowledged << 20,
        "{} bytes kept, {acknowledged} MiB acknowledged",
        big.len()
    );
    assert!(big[..acknowledged << 20].iter().all(|&b| b == 7));
    assert_eq!(
        std::fs::read(f.mnt.join("evicted")).unwrap(),
        common::random_bytes(3 << 20, 1)
    );
    f.umount();
}
