//! systemd/s3fs@.service: its command lines, run in the order systemd runs them with
//! the environment file it reads, start (fsck, mount with READY=1), survive a crash
//! (kill -9, then the next start's fsck recovers), and stop cleanly.

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::mount::{Fixture, is_mounted, wait_gone};

/// `Key=value` lines of the unit's [Service] section (ExecStartPre, ExecStart, ...).
fn unit_commands() -> BTreeMap<String, String> {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/s3fs@.service")).unwrap();
    unit.lines()
        .filter(|l| l.starts_with("Exec"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A PATH directory with the tools under their installed names.
fn tool_dir(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (built, name) in [
        (env!("CARGO_BIN_EXE_fsck-s3fs"), "fsck.s3fs"),
        (env!("CARGO_BIN_EXE_mount-s3fs"), "mount.s3fs"),
        (env!("CARGO_BIN_EXE_umount-s3fs"), "umount.s3fs"),
    ] {
        let _ = std::fs::remove_file(bin.join(name));
        std::os::unix::fs::symlink(built, bin.join(name)).unwrap();
    }
    format!("{}:/usr/bin:/bin", bin.display())
}

/// systemd's word splitting for the lines this unit uses: whitespace separates words,
/// single quotes group (no escapes inside).
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    for ch in line.chars() {
        match ch {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

struct Service<'a> {
    f: &'a Fixture,
    commands: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    notify: UnixDatagram,
}

impl Service<'_> {
    /// One command line as systemd runs it: split into words (single quotes group), the
    /// first word executed directly, so the main process is what the line starts.
    fn command(&self, key: &str) -> Command {
        let words = split_words(&self.commands[key]);
        let mut c = Command::new(&words[0]);
        c.args(&words[1..]).envs(self.env.iter().cloned()).stdin(Stdio::null());
        c
    }

    fn run(&self, key: &str) -> std::process::Output {
        self.command(key).output().unwrap()
    }

    /// ExecStartPre, then ExecStart until it sends READY=1.
    fn start(&self) -> Child {
        let pre = self.run("ExecStartPre");
        assert!(
            pre.status.success(),
            "ExecStartPre: {}",
            String::from_utf8_lossy(&pre.stderr)
        );
        let main = self.command("ExecStart").stderr(Stdio::null()).spawn().unwrap();
        let mut buf = [0u8; 256];
        let n = self.notify.recv(&mut buf).expect("READY=1 within the timeout");
        assert!(
            String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
            "notification: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        assert!(is_mounted(&self.f.mnt));
        main
    }
}

#[test]
fn unit_commands_start_recover_and_stop() {
    let f = Fixture::local();
    let commands = unit_commands();
    for k in ["ExecStartPre", "ExecStart", "ExecStop"] {
        assert!(commands.contains_key(k), "unit has {k}");
    }
    let notify_path = f.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let options = format!(
        "--cachedir {} --authfile {}",
        f.cachedir("cache"),
        f.dir.path().join("authinfo2").display()
    );
    let env: Vec<(String, String)> = [
        ("STORAGE_URL", f.url.clone()),
        ("MOUNTPOINT", f.mnt.display().to_string()),
        ("S3FS_OPTIONS", options),
        ("MOUNT_OPTIONS", String::new()),
        ("PATH", tool_dir(f.dir.path())),
        ("HOME", f.dir.path().display().to_string()),
        ("NOTIFY_SOCKET", notify_path.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let svc = Service {
        f: &f,
        commands,
        env,
        notify,
    };

    // Start, write, stop: the main process exits 0 once everything is uploaded.
    let mut main = svc.start();
    std::fs::write(f.mnt.join("kept"), b"through a clean stop").unwrap();
    let stop = svc.run("ExecStop");
    assert!(
        stop.status.success(),
        "ExecStop: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(main.wait().unwrap().success(), "mount.s3fs exits 0 after ExecStop");
    assert!(!is_mounted(&f.mnt));

    // Start again, fsync a file, crash: the next start's fsck recovers it.
    let mut main = svc.start();
    {
        use std::io::Write;
        let mut file = std::fs::File::create(f.mnt.join("fsynced")).unwrap();
        file.write_all(b"acknowledged by fsync").unwrap();
        file.sync_all().unwrap();
    }
    let pid = main.id() as i32;
    // SAFETY: the mount process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = main.wait();
    wait_gone(pid);
    let _ = Command::new("fusermount3").arg("-uz").arg(&f.mnt).status();
    let mut main = svc.start();
    assert_eq!(std::fs::read(f.mnt.join("kept")).unwrap(), b"through a clean stop");
    assert_eq!(std::fs::read(f.mnt.join("fsynced")).unwrap(), b"acknowledged by fsync");
    let stop = svc.run("ExecStop");
    assert!(
        stop.status.success(),
        "ExecStop: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(main.wait().unwrap().success());
}
