//! contrib/s3fs_backup.sh run three times on a changing tree, with the real tools
//! under their installed names: old backups stay intact and locked, unchanged data is
//! stored once, expired backups are removed.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::Fixture;
use sha2::{Digest, Sha256};

const TOOLS: &[(&str, &str)] = &[
    ("fsck.s3fs", env!("CARGO_BIN_EXE_fsck-s3fs")),
    ("mount.s3fs", env!("CARGO_BIN_EXE_mount-s3fs")),
    ("umount.s3fs", env!("CARGO_BIN_EXE_umount-s3fs")),
    ("s3fscp", env!("CARGO_BIN_EXE_s3fscp")),
    ("s3fslock", env!("CARGO_BIN_EXE_s3fslock")),
    ("s3fsrm", env!("CARGO_BIN_EXE_s3fsrm")),
    ("s3fsstat", env!("CARGO_BIN_EXE_s3fsstat")),
];

/// Files and symlinks of a tree: relative path → content hash or target, mode, mtime.
fn files(root: &Path) -> BTreeMap<PathBuf, String> {
    common::walk(root)
        .into_iter()
        .map(|(rel, p, m)| {
            let what = if m.is_dir() {
                "dir".to_owned()
            } else if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                hex::encode(Sha256::digest(std::fs::read(&p).unwrap()))
            };
            (rel, format!("{what} {:o} {}", m.mode(), m.mtime()))
        })
        .collect()
}

fn backups(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 19 && n.as_bytes()[10] == b'_')
        .collect();
    names.sort();
    names
}

#[test]
fn nightly_backup_flow_three_times() {
    let f = Fixture::local();
    let bin = f.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for (name, built) in TOOLS {
        std::os::unix::fs::symlink(built, bin.join(name)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/s3fs_backup.sh");
    let options = format!(
        "--authfile {} --cachedir {}",
        f.dir.path().join("authinfo2").display(),
        f.cachedir("cache")
    );
    let src = f.dir.path().join("source");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let big = common::random_bytes(2 << 20, 1);
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("sub/small"), b"version 1").unwrap();
    std::os::unix::fs::symlink("big", src.join("link")).unwrap();

    let mut states = Vec::new();
    for run in 1..=3 {
        match run {
            2 => {
                std::fs::write(src.join("sub/small"), b"version 2").unwrap();
                std::fs::write(src.join("added"), common::random_bytes(100_000, 2)).unwrap();
            }
            3 => std::fs::remove_file(src.join("added")).unwrap(),
            _ => {}
        }
        states.push(files(&src));
        let o = Command::new("bash")
            .arg(&script)
            .arg(&f.url)
            .arg(&src)
            .args(["1", "2"])
            .env("PATH", &path)
            .env("HOME", f.dir.path())
            .env("S3FS_OPTIONS", &options)
            .env("MOUNTPOINT", &f.mnt)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "run {run}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!common::mount::is_mounted(&f.mnt), "the script unmounts");
        // Backup names have a one-second resolution.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }

    f.mount("cache");
    let dir = f.mnt.join("backups");
    let names = backups(&dir);
    // Ages 1 2: the newest two are kept, the oldest expired (with s3fsrm: it was locked).
    assert_eq!(names.len(), 2, "{names:?}");
    for (name, state) in names.iter().zip(&states[1..]) {
        assert_eq!(&files(&dir.join(name)), state, "backup {name}");
        let e = std::fs::write(dir.join(name).join("sub/small"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "backup {name} is locked");
    }
    // The 2 MiB file is in three backups' worth of history but stored once.
    let o = Command::new(env!("CARGO_BIN_EXE_s3fsstat"))
        .arg("--json")
        .arg(&f.mnt)
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (total, dedup) = (s["total_bytes"].as_u64().unwrap(), s["dedup_bytes"].as_u64().unwrap());
    assert!(total >= 2 * big.len() as u64, "{s}");
    assert!(dedup < big.len() as u64 + 200_000, "unchanged data stored once: {s}");
    f.umount();
}
