//! A filesystem on a store with a mountpoint, driven through the real binaries: the
//! fixture of the mount, fsck and admin-tool tests.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const MKFS: &str = env!("CARGO_BIN_EXE_mkfs-s3fs");
pub const MOUNT: &str = env!("CARGO_BIN_EXE_mount-s3fs");
pub const UMOUNT: &str = env!("CARGO_BIN_EXE_umount-s3fs");

/// A filesystem on a store, with a mountpoint; unmounts whatever is left at drop.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub mnt: PathBuf,
}

impl Fixture {
    pub fn local() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("local://{}/store", dir.path().display());
        Fixture::new(dir, url, "")
    }

    pub fn s3(server: &super::S3Server) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let auth = format!(
            "[s3]\nstorage-url: {}\nbackend-login: {}\nbackend-password: {}\nbackend-options: {}\n",
            server.url, server.login, server.password, server.options
        );
        Fixture::new(dir, server.url_with_prefix("mount"), &auth)
    }

    pub fn new(dir: tempfile::TempDir, url: String, authinfo: &str) -> Fixture {
        let auth = dir.path().join("authinfo2");
        std::fs::write(&auth, authinfo).unwrap();
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let f = Fixture { dir, url, mnt };
        // The tests' file sizes count in 1 MiB blocks (the default is 4 MiB).
        let o = f.tool(MKFS, &["--plain", "--data-block-size", "1024", &f.url.clone()]);
        assert!(o.status.success(), "mkfs: {}", String::from_utf8_lossy(&o.stderr));
        f
    }

    /// `bin` with the fixture's HOME and authfile, then `args`.
    fn command(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.env("HOME", self.dir.path())
            .arg("--authfile")
            .arg(self.dir.path().join("authinfo2"))
            .args(args);
        c
    }

    pub fn tool(&self, bin: &str, args: &[&str]) -> Output {
        self.command(bin, args).stdin(Stdio::null()).output().unwrap()
    }

    /// [`Fixture::tool`] with `stdin` piped in (answers to its questions).
    pub fn tool_with_input(&self, bin: &str, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(bin, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// The store's current superblock.
    pub fn store_params(&self) -> s3fs::params::Params {
        let auth = self.dir.path().join("authinfo2");
        let opts = s3fs::fs_store::ConnectOptions {
            authfile: Some(&auth),
            backend_options: None,
        };
        let conn = s3fs::fs_store::connect(&self.url, &opts, &mut super::NoSecrets).unwrap();
        let mut none = super::NoSecrets;
        let opened = s3fs::fs_store::open_filesystem(&conn, Default::default(), &mut none);
        s3fs::runtime::block_on(opened).unwrap().params
    }

    pub fn cachedir(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// mount.s3fs in the background; returns its output (it exits once mounted).
    pub fn mount_with(&self, cache: &str, mnt: &Path, extra: &[&str]) -> Output {
        let log = self.dir.path().join("mount.log").display().to_string();
        let (url, mnt) = (self.url.clone(), mnt.display().to_string());
        let mut args = vec!["--cachedir", cache, "--log", &log];
        args.extend_from_slice(extra);
        args.push(&url);
        args.push(&mnt);
        self.tool(MOUNT, &args)
    }

    pub fn mount(&self, cache: &str) {
        let o = self.mount_with(&self.cachedir(cache), &self.mnt, &[]);
        assert!(o.status.success(), "mount: {}", String::from_utf8_lossy(&o.stderr));
        assert!(is_mounted(&self.mnt));
    }

    pub fn umount(&self) {
        let o = Command::new(UMOUNT).arg(&self.mnt).output().unwrap();
        assert!(o.status.success(), "umount: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!is_mounted(&self.mnt));
    }

    pub fn data_objects(&self) -> usize {
        self.object_formats("s3fs_data_").len()
    }

    /// The object format (header byte 4) of every object of the `local://` store whose
    /// name starts with `prefix` (and that is still there when read).
    pub fn object_formats(&self, prefix: &str) -> Vec<u8> {
        fn walk(p: &Path, prefix: &str, out: &mut Vec<u8>) {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, prefix, out);
                } else if e.file_name().to_string_lossy().starts_with(prefix) {
                    match std::fs::read(&path) {
                        Ok(bytes) => out.push(bytes.get(4).copied().unwrap_or(0)),
                        // Deleted since it was listed: a mount may be expiring objects
                        // while a test polls the store.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => panic!("reading {}: {e}", path.display()),
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.path().join("store"), prefix, &mut out);
        out
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for mnt in [self.mnt.clone(), self.dir.path().join("mnt2")] {
            if is_mounted(&mnt) {
                let _ = Command::new("fusermount3").arg("-uz").arg(&mnt).status();
            }
        }
    }
}

pub fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.display().to_string();
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn mount_pid(mnt: &Path) -> i32 {
    let name = CString::new("s3fs.pid").unwrap();
    let mut buf = [0u8; 32];
    // SAFETY: valid buffers.
    let ctrl = mnt.join(s3fs::control::CTRL_NAME);
    let n = unsafe { libc::getxattr(c(&ctrl).as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n > 0);
    std::str::from_utf8(&buf[..n as usize]).unwrap().parse().unwrap()
}

/// Whether process `pid` exists and has not exited. A zombie has exited: its files,
/// locks and FUSE connection are gone, and its reaping is up to whoever is PID 1 here.
fn is_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn wait_gone(pid: i32) {
    let start = Instant::now();
    while is_running(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "mount process {pid} did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
