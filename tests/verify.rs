//! s3fs_verify through the real binaries: clean filesystems pass (local, encrypted,
//! Garage), deleted and damaged objects are reported in the right file with exit 46,
//! `--start-with` skips, mounted filesystems are refused, and nothing is changed.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use common::mount::{Fixture, MKFS};
use common::{code, text};
use s3fs::runtime::block_on;
use s3fs::store::{PutMode, StorageUrl, Store, list_all, open_store};

const VERIFY: &str = env!("CARGO_BIN_EXE_s3fs_verify");

/// s3fs_verify with `--cachedir <cache>`, run in the fixture's directory, so the report
/// files (default names) land there, with its temporary files in `<dir>/tmp`.
fn verify(f: &Fixture, cache: &str, extra: &[&str]) -> Output {
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    Command::new(VERIFY)
        .current_dir(f.dir.path())
        .env("HOME", f.dir.path())
        .env("TMPDIR", &tmp)
        .arg("--authfile")
        .arg(f.dir.path().join("authinfo2"))
        .arg("--cachedir")
        .arg(f.cachedir(cache))
        .args(extra)
        .arg(&f.url)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn missing_file(f: &Fixture) -> PathBuf {
    f.dir.path().join("missing_objects.txt")
}

fn corrupted_file(f: &Fixture) -> PathBuf {
    f.dir.path().join("corrupted_objects.txt")
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn remove_reports(f: &Fixture) {
    let _ = std::fs::remove_file(missing_file(f));
    let _ = std::fs::remove_file(corrupted_file(f));
}

fn assert_no_reports(f: &Fixture) {
    assert!(!missing_file(f).exists(), "missing-objects report left behind");
    assert!(!corrupted_file(f).exists(), "corrupted-objects report left behind");
}

/// The store the fixture's filesystem lives in.
fn raw_store(f: &Fixture, server: Option<&common::S3Server>) -> Arc<dyn Store> {
    let url = StorageUrl::parse(&f.url).unwrap();
    match server {
        None => open_store(&url, "", None).unwrap(),
        Some(s) => open_store(&url, &s.options, Some(s.credentials())).unwrap(),
    }
}

/// Data object keys in object-id order (the order s3fs_verify checks them in).
fn data_keys(store: &dyn Store) -> Vec<String> {
    let mut keys: Vec<(u64, String)> = block_on(list_all(store, "s3fs_data_"))
        .unwrap()
        .into_iter()
        .map(|o| (o.key["s3fs_data_".len()..].parse().unwrap(), o.key))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

/// Mount, write `n` files of distinct random data (the first of several blocks, whose
/// full blocks are objects of their own; the short ones stored in a pack), unmount.
fn populate(f: &Fixture, n: u64) {
    f.mount("cache");
    for i in 0..n {
        let len = if i == 0 { 2_500_000 } else { 3000 + 1000 * i as usize };
        std::fs::write(f.mnt.join(format!("file{i}")), common::random_bytes(len, 7 + i)).unwrap();
    }
    f.umount();
}

/// Every file under `dir` with its size and modification time.
fn tree_state(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(tree_state(&e.path()));
        }
        out.insert(e.path(), (m.len(), m.modified().unwrap()));
    }
    out
}

fn flip_a_byte(store: &dyn Store, key: &str) {
    let mut raw = block_on(store.get(key, u64::MAX)).unwrap().to_vec();
    let i = raw.len() / 2;
    raw[i] ^= 0x40;
    block_on(store.put(key, raw.into(), PutMode::Overwrite)).unwrap();
}

fn objects_checked(o: &Output) -> u64 {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("objects checked"))
        .unwrap_or_else(|| panic!("no summary line: {}", text(o)));
    line.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn clean_filesystem_passes_and_nothing_is_changed() {
    let f = Fixture::local();
    populate(&f, 4);
    let objects = f.data_objects() as u64;
    assert!(objects >= 3, "{objects} data objects");
    let cache_before = tree_state(&f.dir.path().join("cache"));
    let store_before = tree_state(&f.dir.path().join("store"));
    assert!(cache_before.keys().any(|p| p.to_string_lossy().ends_with(".db")));

    for extra in [&[][..], &["--data"][..]] {
        // With the local metadata...
        let o = verify(&f, "cache", extra);
        assert_eq!(code(&o), 0, "verify {extra:?}: {}", text(&o));
        assert!(text(&o).contains("using the local metadata"), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&format!("{objects} objects checked: 0 missing, 0 corrupted")),
            "{}",
            text(&o)
        );
        assert_no_reports(&f);
        // ... and with none (downloaded to a temporary file).
        let o = verify(&f, "fresh", extra);
        assert_eq!(code(&o), 0, "verify {extra:?} without local metadata: {}", text(&o));
        let tmp = f.dir.path().join("tmp").display().to_string();
        assert!(text(&o).contains("downloading metadata"), "{}", text(&o));
        assert!(text(&o).contains(&tmp), "downloaded into TMPDIR: {}", text(&o));
        assert_eq!(objects_checked(&o), objects);
        assert_no_reports(&f);
    }
    assert_eq!(
        tree_state(&f.dir.path().join("cache")),
        cache_before,
        "the local cache changed"
    );
    assert_eq!(
        tree_state(&f.dir.path().join("store")),
        store_before,
        "the store changed"
    );
    assert!(
        !f.dir.path().join("fresh").exists(),
        "an empty cache directory was created"
    );
    let left: Vec<_> = std::fs::read_dir(f.dir.path().join("tmp")).unwrap().flatten().collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    // Still mountable: nothing was left marked or locked.
    f.mount("cache");
    f.umount();
}

#[test]
fn deleted_and_damaged_objects_are_reported() {
    let f = Fixture::local();
    populate(&f, 5);
    let store = raw_store(&f, None);
    let keys = data_keys(store.as_ref());
    let total = keys.len() as u64;
    let (damaged, deleted) = (&keys[0], &keys[1]);

    // One byte flipped, same size: invisible to HEAD, found with --data.
    flip_a_byte(store.as_ref(), damaged);
    let o = verify(&f, "cache", &[]);
    assert_eq!(code(&o), 0, "HEAD mode cannot see a flipped byte: {}", text(&o));
    assert_no_reports(&f);
    let o = verify(&f, "cache", &["--data"]);
    assert_eq!(code(&o), 46, "--data with a flipped byte: {}", text(&o));
    assert_eq!(lines(&corrupted_file(&f)), vec![damaged.clone()]);
    assert!(!missing_file(&f).exists(), "nothing is missing yet");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{total} objects checked: 0 missing, 1 corrupted")),
        "{}",
        text(&o)
    );

    // A non-empty report file is never overwritten.
    let o = verify(&f, "cache", &["--data"]);
    assert_eq!(code(&o), 2, "existing report: {}", text(&o));
    assert!(text(&o).contains("refusing to overwrite"), "{}", text(&o));
    assert_eq!(lines(&corrupted_file(&f)), vec![damaged.clone()]);
    remove_reports(&f);

    // An object deleted behind the filesystem's back.
    block_on(store.delete(deleted)).unwrap();
    let o = verify(&f, "cache", &[]);
    assert_eq!(code(&o), 46, "HEAD mode with a deleted object: {}", text(&o));
    assert_eq!(lines(&missing_file(&f)), vec![deleted.clone()]);
    assert!(!corrupted_file(&f).exists(), "HEAD mode sees no corruption");
    remove_reports(&f);
    let o = verify(&f, "cache", &["--data"]);
    assert_eq!(code(&o), 46, "{}", text(&o));
    assert_eq!(lines(&missing_file(&f)), vec![deleted.clone()]);
    assert_eq!(lines(&corrupted_file(&f)), vec![damaged.clone()]);
    remove_reports(&f);

    // --start-with skips objects in id order: past the damaged one, only the deleted
    // one is found; past both, nothing.
    let o = verify(&f, "cache", &["--data", "--start-with", "1"]);
    assert_eq!(code(&o), 46, "{}", text(&o));
    assert_eq!(lines(&missing_file(&f)), vec![deleted.clone()]);
    assert!(!corrupted_file(&f).exists(), "the damaged object was skipped");
    assert_eq!(objects_checked(&o), total - 1);
    remove_reports(&f);
    let o = verify(&f, "cache", &["--data", "--start-with", "2"]);
    assert_eq!(code(&o), 0, "skipping both damaged objects: {}", text(&o));
    assert_eq!(objects_checked(&o), total - 2);
    assert_no_reports(&f);

    // Report names of one's choosing.
    let (m, c) = (f.dir.path().join("m.txt"), f.dir.path().join("c.txt"));
    let o = verify(
        &f,
        "cache",
        &[
            "--data",
            "--missing-file",
            m.to_str().unwrap(),
            "--corrupted-file",
            c.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 46, "{}", text(&o));
    assert_eq!((lines(&m), lines(&c)), (vec![deleted.clone()], vec![damaged.clone()]));
    assert_no_reports(&f);
}

#[test]
fn a_corrupted_block_inside_a_pack_is_found_with_data() {
    let f = Fixture::local();
    f.mount("cache");
    for i in 0..20u64 {
        std::fs::write(f.mnt.join(format!("small{i}")), common::random_bytes(5000, 40 + i)).unwrap();
    }
    f.umount();
    let store = raw_store(&f, None);
    let keys = data_keys(store.as_ref());
    // One pack per CPU may be open at a time.
    assert!((1..=4).contains(&keys.len()), "20 small files in packs: {keys:?}");
    let o = verify(&f, "cache", &["--data"]);
    assert_eq!(code(&o), 0, "an intact pack: {}", text(&o));

    // One byte of one block flipped: the pack's size is unchanged.
    flip_a_byte(store.as_ref(), &keys[0]);
    let o = verify(&f, "cache", &[]);
    assert_eq!(code(&o), 0, "HEAD mode cannot see a flipped byte: {}", text(&o));
    let o = verify(&f, "cache", &["--data"]);
    assert_eq!(code(&o), 46, "--data with a flipped byte in a pack: {}", text(&o));
    assert_eq!(lines(&corrupted_file(&f)), vec![keys[0].clone()]);
    assert!(text(&o).contains("the block at offset"), "{}", text(&o));
    remove_reports(&f);
}

#[test]
fn encrypted_filesystem_is_decrypted_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("local://{}/store", dir.path().display());
    let auth = dir.path().join("authinfo2");
    std::fs::write(&auth, format!("[fs]\nstorage-url: {url}\nfs-passphrase: verify me\n")).unwrap();
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    let f = Fixture {
        mnt: dir.path().join("mnt"),
        dir,
        url,
    };
    // mkfs never takes a new passphrase from authinfo2: it reads one line of stdin.
    let mut mkfs = Command::new(MKFS)
        .env("HOME", f.dir.path())
        .arg("--authfile")
        .arg(&auth)
        .arg(&f.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    mkfs.stdin.take().unwrap().write_all(b"verify me\n").unwrap();
    let o = mkfs.wait_with_output().unwrap();
    assert!(o.status.success(), "mkfs: {}", text(&o));
    assert!(f.dir.path().join("store/s3fs_key").exists(), "an encrypted filesystem");
    populate(&f, 3);
    let store = raw_store(&f, None);
    let keys = data_keys(store.as_ref());
    // The objects really are encrypted: the plaintext's bytes do not appear in them.
    let plain = common::random_bytes(4000, 8);
    for key in &keys {
        let raw = block_on(store.get(key, u64::MAX)).unwrap();
        assert!(!raw.windows(64).any(|w| w == &plain[..64]), "{key} is not encrypted");
    }

    let o = verify(&f, "fresh", &["--data"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(objects_checked(&o), keys.len() as u64);

    flip_a_byte(store.as_ref(), &keys[1]);
    let o = verify(&f, "cache", &["--data"]);
    assert_eq!(code(&o), 46, "{}", text(&o));
    assert_eq!(lines(&corrupted_file(&f)), vec![keys[1].clone()]);
    assert!(text(&o).contains("corrupt"), "{}", text(&o));
}

#[test]
fn deleted_object_on_garage() {
    let server = common::s3_server("GARAGE");
    let f = Fixture::s3(&server);
    populate(&f, 3);
    let store = raw_store(&f, Some(&server));
    let keys = data_keys(store.as_ref());
    let o = verify(&f, "cache", &["--data"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(objects_checked(&o), keys.len() as u64);

    block_on(store.delete(&keys[2])).unwrap();
    for extra in [&[][..], &["--data"][..]] {
        let o = verify(&f, "fresh", extra);
        assert_eq!(code(&o), 46, "{extra:?}: {}", text(&o));
        assert_eq!(lines(&missing_file(&f)), vec![keys[2].clone()]);
        assert!(!corrupted_file(&f).exists());
        remove_reports(&f);
    }
}

#[test]
fn refuses_while_mounted_here_and_elsewhere() {
    let f = Fixture::local();
    populate(&f, 1);
    f.mount("cache");
    for cache in ["cache", "fresh"] {
        let o = verify(&f, cache, &[]);
        assert_eq!(code(&o), 40, "verify while mounted: {}", text(&o));
        assert!(text(&o).contains("mounted on this machine"), "{}", text(&o));
        assert_no_reports(&f);
    }
    f.umount();

    // Marked as mounted by another host: its lock object, as a mount there writes it.
    let store = raw_store(&f, None);
    let fs = s3fs::fs_store::FsStore::new(
        store.clone(),
        s3fs::codec::Codec::new(None, s3fs::codec::Compression::default()),
    );
    let params = block_on(fs.read_params()).unwrap();
    let lock = s3fs::meta::versions::lock::LockInfo {
        host: "other-host.example".into(),
        pid: 1234,
        since: 0,
        fs_uuid: params.uuid.clone(),
    };
    block_on(fs.put(
        s3fs::meta::versions::lock::LOCK,
        &serde_json::to_vec(&lock).unwrap(),
        PutMode::Overwrite,
    ))
    .unwrap();
    let o = verify(&f, "fresh", &[]);
    assert_eq!(code(&o), 31, "verify while mounted elsewhere: {}", text(&o));
    assert!(text(&o).contains("other-host.example"), "{}", text(&o));
    block_on(store.delete(s3fs::meta::versions::lock::LOCK)).unwrap();

    // Needs a check: refused with 30.
    let mut p = params;
    p.needs_fsck = true;
    block_on(fs.write_current_params(&p)).unwrap();
    let o = verify(&f, "fresh", &[]);
    assert_eq!(code(&o), 30, "verify of a filesystem needing fsck: {}", text(&o));
    assert!(text(&o).contains("fsck.s3fs"), "{}", text(&o));
    assert_no_reports(&f);
}
