//! A filesystem made by a release before packs (revision 1, schema version 1; the store
//! in `tests/fixtures/revision1-local.tar.gz`, see the README there) mounts with this
//! release, reads back, takes new data (packed), and is upgraded on the way: fsck and
//! s3fs_verify find it clean, and a mount from an empty cache reads old and new files,
//! of both object formats.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::mount::Fixture;
use common::{code, text};

const FSCK: &str = env!("CARGO_BIN_EXE_fsck-s3fs");
const VERIFY: &str = env!("CARGO_BIN_EXE_s3fs_verify");

/// The content the fixture's files were written with.
fn pattern(n: usize, k: usize) -> Vec<u8> {
    (0..n).map(|i| (((i % 251) + (i / 4096) + k) % 256) as u8).collect()
}

/// The fixture's store, unpacked into a new directory, as a [`Fixture`].
fn unpack() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tarball = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/revision1-local.tar.gz");
    let st = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "unpacking {}", tarball.display());
    let auth = dir.path().join("authinfo2");
    std::fs::write(&auth, "").unwrap();
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let url = format!("local://{}/store", dir.path().display());
    Fixture { dir, url, mnt }
}

fn assert_old_files(mnt: &Path) {
    assert_eq!(
        std::fs::read(mnt.join("hello.txt")).unwrap(),
        b"made by s3fs revision 1\n"
    );
    assert!(
        std::fs::read(mnt.join("big.bin")).unwrap() == pattern(200_000, 0),
        "big.bin"
    );
    assert!(std::fs::read(mnt.join("empty")).unwrap().is_empty());
    for n in 0..20 {
        let got = std::fs::read(mnt.join(format!("dir/small-{n}"))).unwrap();
        assert!(got == pattern(1000 + 300 * n, n + 1), "dir/small-{n}");
    }
    assert_eq!(std::fs::read_link(mnt.join("link")).unwrap(), Path::new("hello.txt"));
}

/// The revision in the store's superblock.
fn store_revision(f: &Fixture) -> u32 {
    f.store_params().revision
}

fn new_file(i: usize) -> Vec<u8> {
    common::random_bytes(if i == 0 { 150_000 } else { 500 + 97 * i }, 1000 + i as u64)
}

#[test]
fn a_revision_1_filesystem_mounts_reads_and_takes_packed_data() {
    let f = unpack();
    let objects_before = f.data_objects();
    assert!(f.object_formats("s3fs_data_").iter().all(|&v| v == 1));
    assert_eq!(store_revision(&f), 1);
    f.mount("cache");
    assert_eq!(
        store_revision(&f),
        s3fs::params::FS_REVISION,
        "raised before anything is written: older releases refuse it from now on"
    );
    assert_old_files(&f.mnt);
    std::fs::create_dir(f.mnt.join("new")).unwrap();
    for i in 0..40 {
        std::fs::write(f.mnt.join(format!("new/f{i}")), new_file(i)).unwrap();
    }
    f.umount();
    // 40 new files, one of 2 full blocks: the 40 short blocks went into packs.
    let added = f.data_objects() - objects_before;
    assert!((3..=6).contains(&added), "{added} objects added for 40 files");
    // Revision 3: the new objects have the fast checksum (format 2), the old ones keep
    // theirs; the superblock stays in format 1, for older releases to refuse it cleanly.
    let mut formats = f.object_formats("s3fs_data_");
    formats.sort();
    assert_eq!(formats, [vec![1; objects_before], vec![2; added]].concat());
    assert!(
        f.object_formats("s3fs_meta_").contains(&2),
        "new metadata chunks in format 2"
    );
    let params = f.object_formats("s3fs_params");
    assert!(
        !params.is_empty() && params.iter().all(|&v| v == 1),
        "superblocks: {params:?}"
    );

    let o = f.tool(
        FSCK,
        &["--batch", "--force", "--cachedir", &f.cachedir("cache"), &f.url],
    );
    assert_eq!(code(&o), 0, "fsck of the upgraded filesystem: {}", text(&o));
    let o = Command::new(VERIFY)
        .current_dir(f.dir.path())
        .env("HOME", f.dir.path())
        .arg("--authfile")
        .arg(f.dir.path().join("authinfo2"))
        .args(["--data", "--cachedir", &f.cachedir("fresh-verify"), &f.url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "s3fs_verify --data: {}", text(&o));

    // From an empty cache: the metadata comes from the store, old and new data too.
    f.mount("fresh");
    assert_old_files(&f.mnt);
    for i in 0..40 {
        let got = std::fs::read(f.mnt.join(format!("new/f{i}"))).unwrap();
        assert!(got == new_file(i), "new/f{i}");
    }
    f.umount();
}
