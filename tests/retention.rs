//! Retained metadata versions keep their data: objects released by later versions are
//! deleted from the store only once no retained version names them (deferred
//! deletion), so restoring any retained version gives back every file as it was. Real
//! binaries and FUSE mounts, on `local://` and on Garage.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use common::mount::Fixture;
use common::{code, text};

const ADM: &str = env!("CARGO_BIN_EXE_s3fsadm");
const FSCK: &str = env!("CARGO_BIN_EXE_fsck-s3fs");
const CTRL: &str = env!("CARGO_BIN_EXE_s3fsctrl");
const STAT: &str = env!("CARGO_BIN_EXE_s3fsstat");
const CACHE: &str = "cache";

#[track_caller]
fn assert_ok(o: &Output, what: &str) {
    assert_eq!(code(o), 0, "{what}: {}", text(o));
}

fn adm(f: &Fixture, args: &[&str]) -> Output {
    adm_answering(f, args, "")
}

fn fsck(f: &Fixture, extra: &[&str]) -> Output {
    let cachedir = f.cachedir(CACHE);
    let mut args = vec!["--batch", "--cachedir", &cachedir];
    args.extend_from_slice(extra);
    args.push(&f.url);
    f.tool(FSCK, &args)
}

fn ctrl(f: &Fixture, cmd: &str) {
    let o = Command::new(CTRL).arg(cmd).arg(&f.mnt).output().unwrap();
    assert_ok(&o, cmd);
}

/// Every regular file under `dir`, except `/lost+found`, with its bytes.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    common::walk(dir)
        .into_iter()
        .filter(|(rel, _, m)| m.is_file() && !rel.starts_with("lost+found"))
        .map(|(rel, path, _)| (rel.display().to_string(), std::fs::read(path).unwrap()))
        .collect()
}

/// The seq of the store's current metadata version: `s3fsadm restore-metadata` without
/// `--seq` and without an answer prints the retained versions (index, seq, ...) and
/// marks the current one.
fn current_seq(f: &Fixture) -> u64 {
    let o = adm(f, &["restore-metadata", &f.url]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.lines()
        .find(|l| l.contains("(current)"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no current version in {}", text(&o)))
}

/// Version V: small files (packed together) and files of several full blocks (objects
/// of their own), in a few directories, with a symlink and a hard link.
fn write_version(mnt: &Path) {
    for d in 0..3u64 {
        let dir = mnt.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for i in 0..20u64 {
            let n = 500 + ((d * 20 + i) * 997) % 30_000;
            std::fs::write(
                dir.join(format!("small{i}")),
                common::random_bytes(n as usize, d * 100 + i),
            )
            .unwrap();
        }
    }
    std::fs::write(mnt.join("big"), common::random_bytes((5 << 20) / 2, 7)).unwrap();
    std::fs::write(mnt.join("d0/big2"), common::random_bytes(3 << 20, 8)).unwrap();
    std::os::unix::fs::symlink("d1/small3", mnt.join("link")).unwrap();
    std::fs::hard_link(mnt.join("d2/small4"), mnt.join("hard")).unwrap();
}

/// Destroy version V through the mount: with `keep_some`, delete most small files
/// (the packs become mostly garbage, so a repack moves the rest) and overwrite the big
/// files; else `rm -rf` everything. Then fill the filesystem with other data.
fn destroy_and_refill(mnt: &Path, keep_some: bool) {
    if keep_some {
        for d in 0..3 {
            for i in 0..20 {
                if i % 4 != 0 {
                    std::fs::remove_file(mnt.join(format!("d{d}/small{i}"))).unwrap();
                }
            }
        }
        std::fs::write(mnt.join("big"), common::random_bytes(1 << 20, 70)).unwrap();
        std::fs::write(mnt.join("d0/big2"), b"short now").unwrap();
    } else {
        let entries = std::fs::read_dir(mnt).unwrap().flatten().map(|e| e.path());
        let o = Command::new("rm")
            .arg("-rf")
            .args(entries.filter(|p| !p.ends_with("lost+found")))
            .output()
            .unwrap();
        assert!(o.status.success(), "rm -rf: {}", text(&o));
        assert!(files_under(mnt).is_empty());
    }
    let fill = mnt.join("other");
    std::fs::create_dir_all(&fill).unwrap();
    for i in 0..40u64 {
        std::fs::write(
            fill.join(format!("f{i}")),
            common::random_bytes(20_000 + i as usize * 300, 1000 + i),
        )
        .unwrap();
    }
    std::fs::write(fill.join("large"), common::random_bytes(4 << 20, 2000)).unwrap();
}

/// The restore test of the retention issue: write, publish version V, destroy it through
/// the mount (publishing more versions, repacking when `keep_some`), restore V, fsck,
/// compare byte for byte: nothing in `/lost+found`, fsck clean.
fn restore_gives_back_every_file(f: &Fixture, keep_some: bool) {
    f.mount(CACHE);
    write_version(&f.mnt);
    let before = files_under(&f.mnt);
    f.umount();
    let v = current_seq(f);

    f.mount(CACHE);
    destroy_and_refill(&f.mnt, keep_some);
    // Publish (a repack round runs first) twice, so that anything a publish frees is gone.
    ctrl(f, "sync");
    ctrl(f, "sync");
    if keep_some {
        assert!(stat_count(f, "Repacked since mount") > 0, "a repack ran");
    }
    f.umount();
    assert!(current_seq(f) > v);

    assert_ok(
        &adm(f, &["restore-metadata", "--seq", &v.to_string(), &f.url]),
        "restore-metadata",
    );
    let o = fsck(f, &[]);
    assert_ok(&o, "fsck of the restored version finds nothing lost");
    f.mount(CACHE);
    let after = files_under(&f.mnt);
    let lost: Vec<_> = std::fs::read_dir(f.mnt.join("lost+found")).unwrap().flatten().collect();
    assert!(lost.is_empty(), "nothing in lost+found: {lost:?}");
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    for (name, data) in &before {
        assert!(after[name] == *data, "{name} differs after the restore");
    }
    assert_eq!(std::fs::read_link(f.mnt.join("link")).unwrap(), Path::new("d1/small3"));
    // New data after the restore gets ids of its own (no object of a later version is
    // overwritten), and the filesystem stays consistent.
    std::fs::write(f.mnt.join("after-restore"), common::random_bytes(3 << 20, 99)).unwrap();
    f.umount();
    assert_ok(&fsck(f, &["--force"]), "fsck --force after the restore");
}

#[test]
fn restoring_a_version_after_rm_rf_gives_back_every_file_on_local() {
    restore_gives_back_every_file(&Fixture::local(), false);
}

#[test]
fn restoring_a_version_after_a_repack_gives_back_every_file_on_local() {
    restore_gives_back_every_file(&Fixture::local(), true);
}

#[test]
fn restoring_a_version_after_rm_rf_gives_back_every_file_on_garage() {
    restore_gives_back_every_file(&Fixture::s3(&common::s3_server("GARAGE")), false);
}

#[test]
fn restoring_a_version_after_a_repack_gives_back_every_file_on_garage() {
    restore_gives_back_every_file(&Fixture::s3(&common::s3_server("GARAGE")), true);
}

/// s3fsadm with `stdin` piped in (for the confirmation of release-versions).
fn adm_answering(f: &Fixture, args: &[&str], stdin: &str) -> Output {
    let cachedir = f.cachedir(CACHE);
    let mut all = vec!["--cachedir", &cachedir];
    all.extend_from_slice(args);
    f.tool_with_input(ADM, &all, stdin)
}

/// The number that starts the value of `s3fsstat`'s line `label` ("Held for old
/// versions: 3 objects, ..." is 3).
fn stat_count(f: &Fixture, label: &str) -> u64 {
    let o = Command::new(STAT).arg(&f.mnt).output().unwrap();
    assert_ok(&o, "s3fsstat");
    let out = text(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no {label} line in {out}"));
    line.split(':')
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"))
}

/// `s3fsstat`'s "Held for old versions" object count.
fn held_objects(f: &Fixture) -> u64 {
    stat_count(f, "Held for old versions")
}

/// Set the store's policy to retain only the newest metadata version, with `min_age`.
fn keep_only_the_newest(f: &Fixture, min_age: &str) {
    let o = adm(
        f,
        &[
            "retention",
            "--keep-last",
            "1",
            "--keep-within",
            "0",
            "--keep-daily",
            "0",
            "--min-age",
            min_age,
            &f.url,
        ],
    );
    assert_ok(&o, "retention");
    assert!(text(&o).contains("keep the newest 1 versions"), "{}", text(&o));
}

/// Data released through the mount stays in the store while a retained version needs it
/// and the minimum age has not passed; once neither holds it is deleted at a metadata
/// upload; `s3fsadm release-versions` deletes it at once, after a "yes".
#[test]
fn released_data_is_deleted_only_once_no_retained_version_needs_it() {
    let f = Fixture::local();
    let policy = |min_age: &str| keep_only_the_newest(&f, min_age);
    policy("1h");
    f.mount(CACHE);
    for i in 0..3u64 {
        std::fs::write(f.mnt.join(format!("big{i}")), common::random_bytes(1 << 20, i)).unwrap();
    }
    ctrl(&f, "flushcache");
    let with = f.data_objects();
    assert!(with >= 3, "{with}");
    for i in 0..3 {
        std::fs::remove_file(f.mnt.join(format!("big{i}"))).unwrap();
    }
    ctrl(&f, "sync");
    ctrl(&f, "sync");
    // Only the newest version is retained, but the minimum age (1 h) holds the data.
    assert_eq!(f.data_objects(), with, "nothing deleted before the minimum age");
    assert_eq!(held_objects(&f), 3);
    f.umount();

    let o = adm_answering(&f, &["release-versions", &f.url], "no\n");
    assert_eq!(code(&o), 42, "not confirmed: {}", text(&o));
    assert_eq!(f.data_objects(), with);
    let o = adm_answering(&f, &["release-versions", &f.url], "yes\n");
    assert_ok(&o, "release-versions");
    assert_eq!(f.data_objects(), with - 3, "{}", text(&o));
    assert!(text(&o).contains("deleted 3 objects"), "{}", text(&o));

    // Without a minimum age, the second upload after a release deletes the data: the
    // first still names it in the version it expires.
    policy("0");
    f.mount(CACHE);
    assert_eq!(held_objects(&f), 0);
    std::fs::write(f.mnt.join("again"), common::random_bytes(1 << 20, 50)).unwrap();
    ctrl(&f, "flushcache");
    let with = f.data_objects();
    std::fs::remove_file(f.mnt.join("again")).unwrap();
    ctrl(&f, "sync");
    assert_eq!(
        f.data_objects(),
        with,
        "the version before the release is still retained"
    );
    assert_eq!(held_objects(&f), 1);
    ctrl(&f, "sync");
    assert_eq!(f.data_objects(), with - 1);
    assert_eq!(held_objects(&f), 0);
    f.umount();
    assert_ok(&fsck(&f, &["--force"]), "fsck --force");
}

/// A mount expires the versions its policy drops after each metadata upload: after the
/// reply to `s3fsctrl sync` (so that the reply does not wait for it), before the next
/// turn of its main loop, and once more after the upload at unmount.
#[test]
fn a_mount_expires_the_versions_its_policy_drops() {
    let f = Fixture::local();
    keep_only_the_newest(&f, "0");
    let versions = || f.object_formats("s3fs_params_").len();
    f.mount(CACHE);
    for i in 0..4u64 {
        std::fs::write(f.mnt.join(format!("f{i}")), common::random_bytes(1000, i)).unwrap();
        ctrl(&f, "sync");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while versions() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(versions(), 1, "versions left while mounted");
    f.umount();
    assert_eq!(versions(), 1, "versions left after the unmount's upload");
}

#[test]
fn retention_options_are_checked() {
    let f = Fixture::local();
    for bad in [
        vec!["retention", "--keep-within", "5x"],
        vec!["retention", "--min-age", "-1"],
        vec!["retention", "--keep-last", "100001"],
    ] {
        let mut args = bad.clone();
        args.push(&f.url);
        let o = adm(&f, &args);
        assert_eq!(code(&o), 2, "{bad:?}: {}", text(&o));
    }
    let o = adm(&f, &["retention", &f.url]);
    assert_ok(&o, "retention");
    assert!(
        text(&o).contains(
            "keep the newest 10 versions, every version of the last 1d, the newest of each of the last 7 days"
        ),
        "the defaults: {}",
        text(&o)
    );
}

/// A superblock's two copies are written at once, so a crash or a failed PUT can leave
/// the current superblock without the version of its seq in the store. Such a
/// filesystem loses nothing: later mounts, publishes and expiry (keeping only the
/// newest version) keep every chunk and block it needs, fsck finds it clean, and a
/// mount with an empty cache reads every file back from the store.
#[test]
fn a_current_superblock_without_its_version_loses_nothing() {
    let f = Fixture::local();
    let mut expected = BTreeMap::new();
    f.mount(CACHE);
    for i in 0..6u64 {
        let data = common::random_bytes(if i % 2 == 0 { 3000 } else { 2_500_000 }, i);
        std::fs::write(f.mnt.join(format!("a{i}")), &data).unwrap();
        expected.insert(format!("a{i}"), data);
    }
    ctrl(&f, "sync");
    f.umount();
    let seq = f.store_params().seq;
    let version = s3fs::fs_store::names::params_version(seq);
    assert!(remove_from_store(&f, &version), "no {version} in the store");
    // The listing of the versions says why the current one is not there.
    let o = adm(&f, &["restore-metadata", &f.url]);
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!listing.contains("(current)"), "{listing}");
    assert!(
        listing.contains(&format!("The current metadata (seq {seq}) is not among them")),
        "{}",
        text(&o)
    );
    keep_only_the_newest(&f, "0");

    f.mount(CACHE);
    for i in 0..3u64 {
        std::fs::remove_file(f.mnt.join(format!("a{i}"))).unwrap();
        expected.remove(&format!("a{i}"));
        let data = common::random_bytes(5000, 100 + i);
        std::fs::write(f.mnt.join(format!("b{i}")), &data).unwrap();
        expected.insert(format!("b{i}"), data);
        ctrl(&f, "sync");
    }
    f.umount();
    assert_ok(&fsck(&f, &["--force"]), "fsck");

    let cold = f.cachedir("cold");
    let o = f.mount_with(&cold, &f.mnt, &[]);
    assert_ok(&o, "mount with an empty cache");
    assert_eq!(files_under(&f.mnt), expected);
    f.umount();
}

/// Delete the object `name` from the fixture's `local://` store; whether it was there.
fn remove_from_store(f: &Fixture, name: &str) -> bool {
    common::walk(&f.dir.path().join("store"))
        .into_iter()
        .filter(|(rel, _, m)| m.is_file() && rel.file_name().is_some_and(|n| n == name))
        .map(|(_, path, _)| std::fs::remove_file(path).unwrap())
        .count()
        == 1
}
