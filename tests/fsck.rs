//! fsck.s3fs through the real binaries: crash recovery at random points of a write
//! workload (local and Garage, also with a failing store and with fsck itself killed),
//! and repairs of deliberately damaged filesystems.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::mount::{Fixture, is_mounted, mount_pid, wait_gone};
use common::{code, text};
use s3fs::store::local::LocalStore;
use s3fs::store::{PutMode, Store};
use sha2::{Digest, Sha256};

const FSCK: &str = env!("CARGO_BIN_EXE_fsck-s3fs");

fn fsck(f: &Fixture, cache: &str, extra: &[&str]) -> Output {
    let cachedir = f.cachedir(cache);
    let mut args = vec!["--batch", "--cachedir", &cachedir];
    args.extend_from_slice(extra);
    args.push(&f.url);
    f.tool(FSCK, &args)
}

fn fsck_child(f: &Fixture, cache: &str) -> std::process::Child {
    Command::new(FSCK)
        .env("HOME", f.dir.path())
        .arg("--authfile")
        .arg(f.dir.path().join("authinfo2"))
        .args(["--batch", "--cachedir", &f.cachedir(cache), &f.url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A second, forced fsck must find nothing.
fn assert_clean(f: &Fixture, cache: &str) {
    let o = fsck(f, cache, &["--force"]);
    assert_eq!(code(&o), 0, "second fsck --force: {}", text(&o));
}

fn kill_mount(f: &Fixture) {
    let pid = mount_pid(&f.mnt);
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);
    let _ = Command::new("fusermount3").arg("-uz").arg(&f.mnt).status();
    assert!(!is_mounted(&f.mnt));
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Write files (new ones, and rewrites of earlier ones), fsync each, and record its
/// SHA-256 only once fsync returned: the manifest is what the filesystem acknowledged.
fn writer(root: PathBuf, round: u64, stop: Arc<AtomicBool>) -> BTreeMap<PathBuf, String> {
    let mut manifest = BTreeMap::new();
    let dir = root.join(format!("round{round}"));
    if std::fs::create_dir_all(&dir).is_err() {
        return manifest;
    }
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Mostly small files, sometimes several blocks; every tenth write rewrites an
        // earlier file of this round.
        let size = match i % 7 {
            0 => 1 << 20 | (i as usize * 4099 % 65536),
            1 | 2 => 70_000,
            _ => 1 + (i as usize * 7919) % 9000,
        };
        let name = if i % 10 == 9 {
            format!("f{}", i / 2)
        } else {
            format!("f{i}")
        };
        let path = dir.join(&name);
        let data = common::random_bytes(size, round * 1_000_003 + i);
        let ok = (|| -> std::io::Result<()> {
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&data)?;
            file.sync_all()
        })();
        if ok.is_err() {
            // The mount is gone. A rewrite cut short was never acknowledged: the file
            // may hold anything (it was truncated first), as on any filesystem.
            manifest.remove(&path);
            break;
        }
        manifest.insert(path, sha(&data));
        i += 1;
    }
    manifest
}

/// `rounds` times: mount, check the files acknowledged before the last crash, write with
/// fsync, SIGKILL the daemon at a random point, fsck --batch. Then mount, check every
/// file acknowledged in any round, and a forced fsck finds nothing.
fn crash_rounds(f: &Fixture, rounds: u64, mount_env: Option<(&str, &str)>) {
    let mut acknowledged: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut last_round: BTreeMap<PathBuf, String> = BTreeMap::new();
    for round in 0..rounds {
        // Odd rounds upload every block as soon as it is written, so the kill also
        // lands in the middle of block uploads; even rounds keep blocks dirty.
        let delay = if round % 2 == 1 { "0" } else { "10" };
        let log = f.dir.path().join("mount.log").display().to_string();
        let mut mount = Command::new(common::mount::MOUNT);
        if let Some((k, v)) = mount_env {
            mount.env(k, v);
        }
        let o = mount
            .env("HOME", f.dir.path())
            .arg("--authfile")
            .arg(f.dir.path().join("authinfo2"))
            .args(["--cachedir", &f.cachedir("cache"), "--log", &log])
            .args(["--dirty-block-upload-delay", delay, &f.url])
            .arg(&f.mnt)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "mount in round {round}: {}", text(&o));
        // Every file acknowledged before the last crash reads back exactly. Earlier
        // rounds' files are checked once more at the end: reading all of them every
        // round took half of the test's time.
        for (path, digest) in &last_round {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("round {round}: {}: {e}", path.display()));
            assert_eq!(&sha(&data), digest, "round {round}: {} differs", path.display());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (root, stop) = (f.mnt.clone(), stop.clone());
            std::thread::spawn(move || writer(root, round, stop))
        };
        // A random point 50 ms to 1.25 s into the workload.
        let delay = 50 + (round * 7_919 + std::process::id() as u64) % 1_200;
        std::thread::sleep(Duration::from_millis(delay));
        kill_mount(f);
        stop.store(true, Ordering::Relaxed);
        let written = handle.join().unwrap();
        acknowledged.extend(written.clone());
        last_round = written;

        let o = fsck(f, "cache", &[]);
        assert!(
            matches!(code(&o), 0 | 128),
            "fsck after the crash in round {round}: {}",
            text(&o)
        );
    }
    f.mount("cache");
    for (path, digest) in &acknowledged {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&sha(&data), digest, "{} differs", path.display());
    }
    f.umount();
    assert_clean(f, "cache");
    assert!(!acknowledged.is_empty(), "the workload wrote something");
}

#[test]
fn crash_at_random_points_on_local() {
    let f = Fixture::local();
    crash_rounds(&f, 20, None);
}

#[test]
fn crash_at_random_points_on_garage() {
    let f = Fixture::s3(&common::s3_server("GARAGE"));
    crash_rounds(&f, 20, None);
}

#[test]
fn crash_while_the_store_fails_30_percent_of_requests() {
    let f = Fixture::local();
    crash_rounds(&f, 5, Some((s3fs::store::open::FAULT_ENV, "0.3,7")));
}

/// Rounds of: write small files (fsync'ed), delete most of them so that their packs are
/// mostly garbage, start `s3fsctrl sync` (which repacks, then publishes), SIGKILL the
/// mount at a random point of it, fsck. Every file acknowledged and not deleted reads
/// back exactly, and a forced fsck finds nothing.
#[test]
fn a_repack_killed_at_random_points_loses_nothing() {
    const CTRL: &str = env!("CARGO_BIN_EXE_s3fsctrl");
    let f = Fixture::local();
    let mut kept: BTreeMap<PathBuf, String> = BTreeMap::new();
    for round in 0..8u64 {
        f.mount("cache");
        for (path, digest) in &kept {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("round {round}: {}: {e}", path.display()));
            assert_eq!(&sha(&data), digest, "round {round}: {} differs", path.display());
        }
        let dir = f.mnt.join(format!("r{round}"));
        std::fs::create_dir(&dir).unwrap();
        for i in 0..60u64 {
            let path = dir.join(format!("f{i}"));
            let data = common::random_bytes(2000 + (i as usize * 131) % 6000, round * 1000 + i);
            let mut file = std::fs::File::create(&path).unwrap();
            file.write_all(&data).unwrap();
            file.sync_all().unwrap();
            if i % 4 == 0 {
                kept.insert(path, sha(&data));
            }
        }
        // Into the store, so the packs exist before most of their blocks go.
        let o = Command::new(CTRL).args(["flushcache"]).arg(&f.mnt).output().unwrap();
        assert!(o.status.success(), "flushcache: {}", text(&o));
        for i in (0..60u64).filter(|i| i % 4 != 0) {
            std::fs::remove_file(dir.join(format!("f{i}"))).unwrap();
        }
        let sync = Command::new(CTRL)
            .arg("sync")
            .arg(&f.mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = (round * 7_919 + std::process::id() as u64) % 400;
        std::thread::sleep(Duration::from_millis(delay));
        kill_mount(&f);
        let _ = sync.wait_with_output();
        let o = fsck(&f, "cache", &[]);
        assert!(
            matches!(code(&o), 0 | 128),
            "fsck after a kill during a repack in round {round}: {}",
            text(&o)
        );
    }
    f.mount("cache");
    for (path, digest) in &kept {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&sha(&data), digest, "{} differs", path.display());
    }
    // A sync that runs to the end repacks what is left: no pack is half garbage.
    let o = Command::new(CTRL).arg("sync").arg(&f.mnt).output().unwrap();
    assert!(o.status.success(), "sync: {}", text(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_s3fsstat"))
        .arg("--json")
        .arg(&f.mnt)
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (bytes, live) = (
        stats["packs"]["bytes"].as_i64().unwrap(),
        stats["packs"]["live_bytes"].as_i64().unwrap(),
    );
    assert!(
        live * 2 > bytes,
        "packs of {bytes} bytes hold {live} live bytes after a sync"
    );
    f.umount();
    assert_clean(&f, "cache");
}

#[test]
fn crash_during_metadata_upload_and_during_fsck() {
    let f = Fixture::local();
    f.mount("cache");
    let mut manifest = BTreeMap::new();
    for i in 0..400u64 {
        let path = f.mnt.join(format!("m{i}"));
        let data = common::random_bytes(3000 + i as usize, i);
        std::fs::write(&path, &data).unwrap();
        manifest.insert(path, sha(&data));
    }
    // Unmount (which uploads blocks, then the metadata) and kill the daemon a few
    // milliseconds in: somewhere in the upload.
    let pid = mount_pid(&f.mnt);
    let umount = Command::new(common::mount::UMOUNT).arg(&f.mnt).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    // SAFETY: the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);
    let _ = umount.wait_with_output();
    let _ = Command::new("fusermount3").arg("-uz").arg(&f.mnt).status();
    // fsck killed at several points, then one run to the end.
    for delay_ms in [20u64, 150, 400] {
        let mut child = fsck_child(&f, "cache");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let o = fsck(&f, "cache", &[]);
    assert!(matches!(code(&o), 0 | 128), "fsck after interrupted ones: {}", text(&o));
    f.mount("cache");
    // Files written but not fsync'ed were flushed by the interrupted unmount only in
    // part: whatever exists must be exact, and every fsync'ed file (none here) intact.
    let mut present = 0;
    for (path, digest) in &manifest {
        if let Ok(data) = std::fs::read(path) {
            assert_eq!(&sha(&data), digest, "{} differs", path.display());
            present += 1;
        }
    }
    assert!(present > 0, "the local DB and cache survived the crash");
    f.umount();
    assert_clean(&f, "cache");
}

#[test]
fn lock_left_by_a_killed_unmount_is_released_by_fsck() {
    // The unmount is killed after marking the filesystem clean but before giving the
    // lock up: reproduced by putting the mount's own lock object back after it exited.
    let f = Fixture::local();
    f.mount("cache");
    let store = LocalStore::open(&f.dir.path().join("store")).unwrap();
    let lock = s3fs::runtime::block_on(store.get(s3fs::meta::versions::lock::LOCK, u64::MAX)).unwrap();
    std::fs::write(f.mnt.join("kept"), b"kept").unwrap();
    f.umount();
    s3fs::runtime::block_on(store.put(s3fs::meta::versions::lock::LOCK, lock, PutMode::Overwrite)).unwrap();

    let o = f.mount_with(&f.cachedir("cache"), &f.mnt, &[]);
    assert_eq!(code(&o), 30, "mount with a dead holder's lock: {}", text(&o));
    assert!(text(&o).contains("stopped without releasing"), "{}", text(&o));
    let o = fsck(&f, "cache", &[]);
    assert_eq!(
        code(&o),
        0,
        "fsck of a clean filesystem with a stale lock: {}",
        text(&o)
    );
    f.mount("cache");
    assert_eq!(std::fs::read(f.mnt.join("kept")).unwrap(), b"kept");
    f.umount();
}

/// A filesystem with data, unmounted cleanly, and its local store.
fn damaged_fixture() -> (Fixture, LocalStore) {
    let f = Fixture::local();
    f.mount("cache");
    std::fs::create_dir(f.mnt.join("dir")).unwrap();
    for i in 0..5 {
        std::fs::write(f.mnt.join(format!("dir/file{i}")), common::random_bytes(5000, 100 + i)).unwrap();
    }
    f.umount();
    let store = LocalStore::open(&f.dir.path().join("store")).unwrap();
    (f, store)
}

fn data_keys(store: &LocalStore) -> Vec<String> {
    s3fs::runtime::block_on(s3fs::store::list_all(store, "s3fs_data_"))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

fn repaired_then_clean(f: &Fixture, expect: &str) -> String {
    let o = fsck(f, "cache", &["--force"]);
    assert_eq!(code(&o), 128, "fsck of a damaged filesystem: {}", text(&o));
    let out = text(&o);
    assert!(out.contains(expect), "fsck output names {expect:?}: {out}");
    assert_clean(f, "cache");
    out
}

#[test]
fn deleted_object_is_reported_with_the_file_path() {
    let (f, store) = damaged_fixture();
    let key = data_keys(&store).into_iter().next().unwrap();
    s3fs::runtime::block_on(store.delete(&key)).unwrap();
    let out = repaired_then_clean(&f, "dir/file");
    assert!(out.contains("lost+found") || out.contains("lack"), "{out}");
}

#[test]
fn truncated_object_is_treated_as_damaged() {
    let (f, store) = damaged_fixture();
    let key = data_keys(&store).into_iter().next().unwrap();
    let body = s3fs::runtime::block_on(store.get(&key, u64::MAX)).unwrap();
    s3fs::runtime::block_on(store.put(&key, body.slice(..body.len() / 2), s3fs::store::PutMode::Overwrite)).unwrap();
    repaired_then_clean(&f, "dir/file");
}

#[test]
fn extra_object_is_deleted() {
    let (f, store) = damaged_fixture();
    let before = data_keys(&store).len();
    s3fs::runtime::block_on(store.put(
        "s3fs_data_999999",
        bytes::Bytes::from_static(b"not ours"),
        s3fs::store::PutMode::Overwrite,
    ))
    .unwrap();
    repaired_then_clean(&f, "object 999999");
    assert_eq!(data_keys(&store).len(), before);
}

#[test]
fn damaged_metadata_chunk_in_the_store_is_repaired() {
    let (f, store) = damaged_fixture();
    let chunks: Vec<String> = s3fs::runtime::block_on(s3fs::store::list_all(&store, "s3fs_meta_"))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let newest = chunks
        .iter()
        .max_by_key(|k| k.rsplit('_').next().unwrap().to_owned())
        .unwrap();
    let body = s3fs::runtime::block_on(store.get(newest, u64::MAX)).unwrap();
    s3fs::runtime::block_on(store.put(newest, body.slice(..body.len() - 7), s3fs::store::PutMode::Overwrite)).unwrap();
    repaired_then_clean(&f, "metadata version");
    // The repaired filesystem mounts from an empty cache (its metadata in the store is
    // intact again).
    f.mount("fresh-cache");
    assert_eq!(std::fs::read_dir(f.mnt.join("dir")).unwrap().count(), 5);
    f.umount();
}

#[test]
fn clean_filesystem_is_skipped_unless_forced_and_mounted_one_refused() {
    let (f, _store) = damaged_fixture();
    let o = fsck(&f, "cache", &[]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_clean(&f, "cache");
    f.mount("cache");
    let o = fsck(&f, "cache", &["--force"]);
    assert_eq!(code(&o), 40, "fsck of a mounted filesystem: {}", text(&o));
    f.umount();
}

#[test]
fn another_host_needs_force_remote_after_a_crash() {
    let f = Fixture::local();
    f.mount("hostA");
    std::fs::write(f.mnt.join("before"), b"uploaded at the last clean unmount").unwrap();
    f.umount();
    f.mount("hostA");
    std::fs::write(f.mnt.join("lost"), b"never uploaded").unwrap();
    kill_mount(&f);
    // "Host B" (another cache directory) must not mount or check without accepting the loss.
    let o = f.mount_with(&f.cachedir("hostB"), &f.mnt, &[]);
    assert!(
        matches!(code(&o), 30 | 31),
        "mount elsewhere after a crash: {}",
        text(&o)
    );
    let o = fsck(&f, "hostB", &[]);
    assert_eq!(code(&o), 41, "batch fsck elsewhere needs input: {}", text(&o));
    let o = fsck(&f, "hostB", &["--force-remote"]);
    assert!(matches!(code(&o), 0 | 128), "fsck --force-remote: {}", text(&o));
    f.mount("hostB");
    assert_eq!(
        std::fs::read(f.mnt.join("before")).unwrap(),
        b"uploaded at the last clean unmount"
    );
    f.umount();
    assert_clean(&f, "hostB");
}
