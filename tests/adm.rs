//! s3fsadm restore-metadata, download-metadata and shrink-db through the real binaries,
//! on `local://` with real FUSE mounts.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::mount::{Fixture, is_mounted};
use common::{code, text};
use s3fs::params::Params;

const ADM: &str = env!("CARGO_BIN_EXE_s3fsadm");
const FSCK: &str = env!("CARGO_BIN_EXE_fsck-s3fs");
const CACHE: &str = "cache";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn assert_code(o: &Output, expected: i32, what: &str) {
    assert_eq!(code(o), expected, "{what}: {}", text(o));
    if expected != 0 {
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(last.contains("error:"), "{what}: the error ends stderr: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

/// s3fsadm with the fixture's authfile and cache directory, `stdin` piped in.
fn adm(f: &Fixture, args: &[&str], stdin: &str) -> Output {
    let cachedir = f.cachedir(CACHE);
    let mut all = vec!["--cachedir", &cachedir];
    all.extend_from_slice(args);
    f.tool_with_input(ADM, &all, stdin)
}

fn fsck(f: &Fixture, extra: &[&str]) -> Output {
    let cachedir = f.cachedir(CACHE);
    let mut args = vec!["--batch", "--cachedir", &cachedir];
    args.extend_from_slice(extra);
    args.push(&f.url);
    f.tool(FSCK, &args)
}

fn try_mount(f: &Fixture) -> Output {
    f.mount_with(&f.cachedir(CACHE), &f.mnt, &[])
}

/// The store's current superblock.
fn store_params(f: &Fixture) -> Params {
    f.store_params()
}

/// Every file under `dir` with its bytes.
fn snapshot_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, p: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

fn data(seed: u64) -> Vec<u8> {
    common::random_bytes(200_000, seed)
}

/// Version n holds A (its data shared with `keep`) and D (data of its own, one full
/// block: an object of its own, not a segment of a pack that `keep` keeps); version n+1
/// deleted both and added B. Restoring n brings A and D back with their content: D's
/// object was released, not deleted, since version n is retained.
#[test]
fn restore_metadata_with_seq_brings_back_an_older_version() {
    let f = Fixture::local();
    f.mount(CACHE);
    std::fs::write(f.mnt.join("A"), data(1)).unwrap();
    std::fs::write(f.mnt.join("keep"), data(1)).unwrap();
    std::fs::write(f.mnt.join("D"), common::random_bytes(1 << 20, 2)).unwrap();
    f.umount();
    let n = store_params(&f).seq;

    f.mount(CACHE);
    std::fs::remove_file(f.mnt.join("A")).unwrap();
    std::fs::remove_file(f.mnt.join("D")).unwrap();
    std::fs::write(f.mnt.join("B"), data(3)).unwrap();
    f.umount();
    let newest = store_params(&f).seq;
    assert!(newest > n);

    let o = adm(&f, &["restore-metadata", "--seq", &n.to_string(), &f.url], "");
    assert_code(&o, 0, "restore-metadata --seq");
    let out = stdout(&o);
    assert!(
        out.contains(&n.to_string()) && out.contains(&newest.to_string()),
        "{out}"
    );
    assert!(
        out.contains("fsck.s3fs") && out.contains("every file comes back"),
        "{out}"
    );
    // Nothing in the store changed yet.
    assert_eq!(store_params(&f).seq, newest);

    let o = try_mount(&f);
    assert_code(&o, 30, "mount after restore");
    assert!(String::from_utf8_lossy(&o.stderr).contains("fsck.s3fs"), "{}", text(&o));
    assert!(!is_mounted(&f.mnt));
    assert_code(&adm(&f, &["shrink-db", &f.url], ""), 30, "shrink-db before fsck");

    let o = fsck(&f, &[]);
    assert_code(&o, 0, "fsck of the restored version (nothing is lost)");
    let current = store_params(&f);
    assert!(current.seq > newest && !current.needs_fsck && !current.is_mounted);

    f.mount(CACHE);
    assert_eq!(
        std::fs::read(f.mnt.join("A")).unwrap(),
        data(1),
        "A restored with its content"
    );
    assert_eq!(std::fs::read(f.mnt.join("keep")).unwrap(), data(1));
    assert!(!f.mnt.join("B").exists(), "B is not in the restored version");
    assert_eq!(
        std::fs::read(f.mnt.join("D")).unwrap(),
        common::random_bytes(1 << 20, 2),
        "D restored with its content"
    );
    assert_eq!(std::fs::read_dir(f.mnt.join("lost+found")).unwrap().count(), 0);
    f.umount();

    assert_code(&fsck(&f, &["--force"]), 0, "second fsck --force");
}

/// Without --seq the index is read from standard input; without an answer the list is
/// printed and the exit code is 41; bad choices are exit 2 and change nothing.
#[test]
fn restore_metadata_reads_the_index_from_stdin() {
    let f = Fixture::local();
    f.mount(CACHE);
    std::fs::write(f.mnt.join("A"), data(4)).unwrap();
    f.umount();
    let n = store_params(&f).seq;
    f.mount(CACHE);
    std::fs::rename(f.mnt.join("A"), f.mnt.join("A2")).unwrap();
    f.umount();
    let params_file = |f: &Fixture| {
        std::fs::read_dir(f.cachedir(CACHE))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".params"))
            .map(|e| std::fs::read(e.path()).unwrap())
            .unwrap()
    };
    let before = params_file(&f);

    let o = adm(&f, &["restore-metadata", &f.url], "");
    assert_code(&o, 41, "no answer");
    assert!(stdout(&o).contains(&n.to_string()), "the list is printed: {}", text(&o));
    assert_code(&adm(&f, &["restore-metadata", &f.url], "99\n"), 2, "index out of range");
    assert_code(&adm(&f, &["restore-metadata", &f.url], "x\n"), 2, "not a number");
    assert_code(
        &adm(&f, &["restore-metadata", "--seq", "7", &f.url], ""),
        2,
        "unknown seq",
    );
    assert_eq!(params_file(&f), before, "refusals change nothing");

    // Newest first, index 0 the current version; type the index listed for version n.
    let list = stdout(&adm(&f, &["restore-metadata", &f.url], ""));
    let rows: Vec<Vec<&str>> = list.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert!(rows[0].join(" ").contains("(current)"), "{list}");
    let seqs: Vec<u64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first: {list}");
    let index = rows.iter().find(|r| r[1] == n.to_string()).expect("version n listed")[0];
    assert_ne!(index, "0");
    let o = adm(&f, &["restore-metadata", &f.url], &format!("{index}\n"));
    assert_code(&o, 0, "restore with the index on stdin");
    assert!(stdout(&o).contains(&format!("seq {n}")), "{}", text(&o));

    assert_code(&try_mount(&f), 30, "mount after restore");
    assert_code(&fsck(&f, &[]), 0, "fsck: nothing of version n was deleted");
    f.mount(CACHE);
    assert_eq!(std::fs::read(f.mnt.join("A")).unwrap(), data(4));
    assert!(!f.mnt.join("A2").exists());
    // Refused while mounted.
    assert_code(
        &adm(&f, &["restore-metadata", "--seq", &n.to_string(), &f.url], ""),
        40,
        "restore while mounted",
    );
    f.umount();
    assert_code(&fsck(&f, &["--force"]), 0, "fsck --force");
}

#[test]
fn download_metadata_saves_a_version_and_changes_nothing() {
    let f = Fixture::local();
    f.mount(CACHE);
    std::fs::write(f.mnt.join("inspect-me.txt"), b"hello").unwrap();
    f.umount();
    let first = store_params(&f).seq;
    f.mount(CACHE);
    std::fs::write(f.mnt.join("later.txt"), b"later").unwrap();
    f.umount();

    let store = f.dir.path().join("store");
    let cache = Path::new(&f.cachedir(CACHE)).to_path_buf();
    let (store_before, cache_before) = (snapshot_dir(&store), snapshot_dir(&cache));
    let names = |db: &Path| -> Vec<Vec<u8>> {
        let c = rusqlite::Connection::open(db).unwrap();
        let mut st = c.prepare("SELECT name FROM names").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };

    let out = f.dir.path().join("newest.db");
    let o = adm(
        &f,
        &["download-metadata", "--output", out.to_str().unwrap(), &f.url],
        "",
    );
    assert_code(&o, 0, "download-metadata");
    let got = names(&out);
    assert!(got.contains(&b"inspect-me.txt".to_vec()) && got.contains(&b"later.txt".to_vec()));

    let old = f.dir.path().join("old.db");
    let o = adm(
        &f,
        &[
            "download-metadata",
            "--seq",
            &first.to_string(),
            "-o",
            old.to_str().unwrap(),
            &f.url,
        ],
        "",
    );
    assert_code(&o, 0, "download-metadata --seq");
    let got = names(&old);
    assert!(got.contains(&b"inspect-me.txt".to_vec()) && !got.contains(&b"later.txt".to_vec()));

    // An existing file is not overwritten.
    std::fs::write(&old, b"mine").unwrap();
    let o = adm(&f, &["download-metadata", "-o", old.to_str().unwrap(), &f.url], "");
    assert_code(&o, 1, "existing output");
    assert_eq!(std::fs::read(&old).unwrap(), b"mine");

    assert_eq!(snapshot_dir(&store), store_before, "the store is unchanged");
    assert_eq!(snapshot_dir(&cache), cache_before, "the cache directory is unchanged");
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".part"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left: {leftovers:?}");

    // Reading is allowed while mounted.
    f.mount(CACHE);
    let live = f.dir.path().join("live.db");
    assert_code(
        &adm(&f, &["download-metadata", "-o", live.to_str().unwrap(), &f.url], ""),
        0,
        "download-metadata while mounted",
    );
    assert!(names(&live).contains(&b"later.txt".to_vec()));
    f.umount();
}

fn db_sizes(out: &str) -> (u64, u64) {
    // "Metadata database: X bytes before, Y bytes after; ..."
    let nums: Vec<u64> = out
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(out.contains("bytes before") && out.contains("bytes after"), "{out}");
    (nums[0], nums[1])
}

#[test]
fn shrink_db_compacts_the_metadata() {
    let f = Fixture::local();
    f.mount(CACHE);
    std::fs::write(f.mnt.join("kept"), data(5)).unwrap();
    let dir = f.mnt.join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..3000 {
        std::fs::write(dir.join(format!("a-rather-long-file-name-to-fill-pages-{i:05}")), b"x").unwrap();
    }
    assert_code(&adm(&f, &["shrink-db", &f.url], ""), 40, "shrink-db while mounted");
    std::fs::remove_dir_all(&dir).unwrap();
    f.umount();
    let before = store_params(&f);

    let o = adm(&f, &["shrink-db", &f.url], "");
    assert_code(&o, 0, "shrink-db");
    let (size_before, size_after) = db_sizes(&stdout(&o));
    assert!(size_after <= size_before, "{size_before} -> {size_after}");
    assert!(
        size_after < size_before,
        "deleted rows free pages: {size_before} -> {size_after}"
    );
    let after = store_params(&f);
    assert!(after.seq > before.seq && !after.is_mounted && !after.needs_fsck);
    assert_eq!(
        after.db_size, size_after,
        "the compacted database is the current version"
    );

    f.mount(CACHE);
    assert_eq!(std::fs::read(f.mnt.join("kept")).unwrap(), data(5));
    assert!(!f.mnt.join("many").exists());
    f.umount();
    assert_code(&fsck(&f, &["--force"]), 0, "fsck --force after shrink-db");

    // Also from a cache directory that has no local copy (downloads the metadata).
    let o = Command::new(ADM)
        .env("HOME", f.dir.path())
        .arg("--authfile")
        .arg(f.dir.path().join("authinfo2"))
        .arg("--cachedir")
        .arg(f.cachedir("other"))
        .args(["shrink-db", &f.url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_code(&o, 0, "shrink-db from another cache directory");
    assert_code(&fsck(&f, &["--force"]), 0, "fsck --force after the second shrink-db");
}
