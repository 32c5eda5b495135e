//! contrib/expire_backups (Python 3) run on temporary directories: the kept backups
//! satisfy the age-range rule over many cycles, a dry run deletes nothing, the
//! proportion guard refuses, and the state can be reconstructed from the names.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/expire_backups")
}

/// The interpreter behind `python3` (shims such as pyenv's resolved, so that the script
/// also runs with a PATH of the test's choosing), or a failed test saying it is missing:
/// never a silent skip.
fn python3() -> PathBuf {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        let o = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output();
        match o {
            Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            _ => panic!("python3 is not installed: contrib/expire_backups needs it (apt-get install python3)"),
        }
    })
    .clone()
}

/// Run the script in `dir`; `path_env` replaces PATH (python3 is found before).
fn run_in(dir: &Path, args: &[&str], path_env: Option<&str>) -> Output {
    let mut cmd = Command::new(python3());
    cmd.arg(script()).args(args).current_dir(dir);
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    cmd.output().unwrap()
}

fn run(dir: &Path, args: &[&str]) -> Output {
    run_in(dir, args, None)
}

fn text(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(o.status.code(), Some(code), "{what}: {}", text(o));
    if code == 1 {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: one-line error: {err}");
        assert!(err.starts_with("expire_backups: error: "), "{what}: {err}");
    }
}

/// The name of the backup made in cycle `i` (one per hour).
fn name(i: usize) -> String {
    assert!(i < 24 * 28);
    format!("2020-01-{:02}_{:02}:00:00", 1 + i / 24, i % 24)
}

fn make_backup(dir: &Path, i: usize) {
    let b = dir.join(name(i));
    std::fs::create_dir(&b).unwrap();
    std::fs::create_dir(b.join("sub")).unwrap();
    std::fs::write(b.join("sub/file"), format!("backup {i}")).unwrap();
}

/// The backups in `dir`, by cycle number.
fn present(dir: &Path, made: usize) -> BTreeSet<usize> {
    (0..made).filter(|&i| dir.join(name(i)).is_dir()).collect()
}

fn read_state(dir: &Path) -> BTreeMap<String, u64> {
    let raw = std::fs::read(dir.join(".expire_backups.dat")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    v["ages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, a)| (k.clone(), a.as_u64().unwrap()))
        .collect()
}

/// The rule after cycle `now` (backups 0..=now were made, backup i is `now - i` cycles
/// old): the newest is kept, every range that some backup has reached holds one, and
/// nothing older than the last boundary is kept.
#[track_caller]
fn assert_rule(kept: &BTreeSet<usize>, now: usize, bounds: &[usize]) {
    assert!(kept.contains(&now), "cycle {now}: the newest backup is kept: {kept:?}");
    let ages: Vec<usize> = kept.iter().map(|&i| now - i).collect();
    let mut lo = 0;
    for &hi in bounds {
        if lo <= now {
            assert!(
                ages.iter().any(|&a| lo <= a && a < hi),
                "cycle {now}: no backup aged {lo}..{hi} among ages {ages:?}"
            );
        }
        lo = hi;
    }
    let last = *bounds.last().unwrap();
    assert!(ages.iter().all(|&a| a < last), "cycle {now}: too old kept: {ages:?}");
}

#[test]
fn many_cycles_keep_one_backup_in_every_age_range() {
    for bounds in [vec![1usize, 3, 7, 14, 31], vec![2, 4, 8, 16, 32, 64], vec![5]] {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = bounds.iter().map(usize::to_string).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cycles = 2 * bounds.last().unwrap() + 5;
        let mut ever_deleted = 0;
        for now in 0..cycles {
            make_backup(dir.path(), now);
            let before = present(dir.path(), now + 1);
            let o = run(dir.path(), &args);
            assert_code(&o, 0, &format!("cycle {now} with ages {bounds:?}"));
            let kept = present(dir.path(), now + 1);
            assert!(kept.is_subset(&before));
            ever_deleted += before.len() - kept.len();
            assert_rule(&kept, now, &bounds);
            // The state file knows exactly the backups that are left, with their ages.
            let state = read_state(dir.path());
            let expected: BTreeMap<String, u64> = kept.iter().map(|&i| (name(i), (now - i) as u64)).collect();
            assert_eq!(state, expected, "cycle {now}: state file");
            // It thins out: never more than two backups per range.
            assert!(kept.len() <= 2 * bounds.len(), "cycle {now}: {kept:?}");
        }
        assert!(ever_deleted >= cycles - 2 * bounds.len(), "{ever_deleted} deleted");
    }
}

#[test]
fn dry_run_deletes_nothing_and_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();
    for now in 0..12 {
        make_backup(dir.path(), now);
        assert_code(&run(dir.path(), &["1", "3", "7"]), 0, "cycle");
    }
    make_backup(dir.path(), 12);
    let state = std::fs::read(dir.path().join(".expire_backups.dat")).unwrap();
    let before = present(dir.path(), 13);
    let o = run(dir.path(), &["-n", "1", "3", "7"]);
    assert_code(&o, 0, "dry run");
    assert_eq!(present(dir.path(), 13), before, "a dry run deletes nothing");
    assert_eq!(std::fs::read(dir.path().join(".expire_backups.dat")).unwrap(), state);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let announced: BTreeSet<usize> = (0..13)
        .filter(|&i| out.contains(&format!("would delete {}", name(i))))
        .collect();
    assert!(!announced.is_empty(), "{out}");

    // The real run deletes exactly what the dry run announced.
    assert_code(&run(dir.path(), &["--dry-run", "1", "3", "7"]), 0, "dry run again");
    assert_code(&run(dir.path(), &["1", "3", "7"]), 0, "real run");
    let after = present(dir.path(), 13);
    assert_eq!(&before - &after, announced);
}

#[test]
fn proportion_guard_refuses_to_delete_most_backups() {
    let dir = tempfile::tempdir().unwrap();
    for now in 0..20 {
        make_backup(dir.path(), now);
        assert_code(&run(dir.path(), &["1", "3", "7", "14"]), 0, "cycle");
    }
    make_backup(dir.path(), 20);
    let before = present(dir.path(), 21);
    assert!(before.len() >= 4, "{before:?}");
    let state = std::fs::read(dir.path().join(".expire_backups.dat")).unwrap();
    // Only the newest would stay with a single range of one cycle.
    let o = run(dir.path(), &["1"]);
    assert_code(&o, 1, "proportion guard");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--proportion-delete"));
    assert_eq!(present(dir.path(), 21), before, "nothing deleted");
    assert_eq!(std::fs::read(dir.path().join(".expire_backups.dat")).unwrap(), state);
    assert_code(
        &run(dir.path(), &["-p", "0.2", "1", "3", "7", "14"]),
        0,
        "a normal cycle passes",
    );

    let o = run(dir.path(), &["--proportion-delete", "1", "1"]);
    assert_code(&o, 0, "guard raised");
    assert_eq!(present(dir.path(), 21), BTreeSet::from([20]));
}

#[test]
fn state_is_required_or_reconstructed_from_the_names() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..30 {
        make_backup(dir.path(), i);
    }
    let o = run(dir.path(), &["1", "3", "7", "14"]);
    assert_code(&o, 1, "no state file");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--reconstruct-state"));
    assert_eq!(present(dir.path(), 30).len(), 30);

    let o = run(dir.path(), &["--reconstruct-state", "-p", "1", "1", "3", "7", "14"]);
    assert_code(&o, 0, "reconstruct");
    let kept = present(dir.path(), 30);
    assert_rule(&kept, 29, &[1, 3, 7, 14]);
    let expected: BTreeMap<String, u64> = kept.iter().map(|&i| (name(i), (29 - i) as u64)).collect();
    assert_eq!(read_state(dir.path()), expected, "ages from the hourly names");
    // And the cycles go on from there.
    for now in 30..45 {
        make_backup(dir.path(), now);
        assert_code(&run(dir.path(), &["1", "3", "7", "14"]), 0, "cycle");
        assert_rule(&present(dir.path(), now + 1), now, &[1, 3, 7, 14]);
    }

    // A state file that is not ours is refused, not overwritten.
    std::fs::write(dir.path().join(".expire_backups.dat"), b"\x80\x04garbage").unwrap();
    assert_code(&run(dir.path(), &["1", "3"]), 1, "foreign state file");
    // A single backup needs no state; other names are ignored.
    let fresh = tempfile::tempdir().unwrap();
    make_backup(fresh.path(), 0);
    std::fs::create_dir(fresh.path().join("not-a-backup")).unwrap();
    assert_code(&run(fresh.path(), &["--state", "st.json", "1", "3"]), 0, "first run");
    assert!(fresh.path().join("st.json").exists() && fresh.path().join("not-a-backup").exists());
}

#[test]
fn bad_arguments_and_help() {
    let dir = tempfile::tempdir().unwrap();
    assert_code(&run(dir.path(), &["3", "1"]), 2, "decreasing ages");
    assert_code(&run(dir.path(), &[]), 2, "no ages");
    assert_code(&run(dir.path(), &["-p", "2", "1"]), 2, "proportion above 1");
    let o = run(dir.path(), &["--help"]);
    assert_code(&o, 0, "--help");
    let help = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "EXIT CODES",
        "--use-s3fsrm",
        "--reconstruct-state",
        "--proportion-delete",
        "YYYY-MM-DD_HH:MM:SS",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
    let mode = std::fs::metadata(script()).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "contrib/expire_backups is executable");
}

/// --use-s3fsrm deletes through the s3fsrm tool (a stand-in here that logs its calls).
#[test]
fn use_s3fsrm_deletes_through_the_tool() {
    let dir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("calls");
    let fake = bin.path().join("s3fsrm");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n[ \"$1\" = -- ] && shift\necho \"$1\" >> '{}'\nrm -rf -- \"$1\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let mut deleted = BTreeSet::new();
    for now in 0..10 {
        make_backup(dir.path(), now);
        let before = present(dir.path(), now + 1);
        assert_code(
            &run_in(dir.path(), &["--use-s3fsrm", "1", "3"], Some(&path)),
            0,
            "cycle",
        );
        deleted.extend(&before - &present(dir.path(), now + 1));
    }
    assert!(!deleted.is_empty());
    let calls: BTreeSet<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(calls, deleted.iter().map(|&i| name(i)).collect());

    // Without the tool: a clear error, nothing deleted.
    make_backup(dir.path(), 10);
    let before = present(dir.path(), 11);
    let empty = tempfile::tempdir().unwrap();
    let o = run_in(
        dir.path(),
        &["--use-s3fsrm", "1", "3"],
        Some(empty.path().to_str().unwrap()),
    );
    assert_code(&o, 1, "no s3fsrm");
    assert!(String::from_utf8_lossy(&o.stderr).contains("s3fsrm is not installed"));
    assert_eq!(present(dir.path(), 11), before);
}
