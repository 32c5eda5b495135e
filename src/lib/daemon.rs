//! Running in the background: `mount.s3fs` forks before anything else happens (no thread
//! may exist at fork time, and the I/O runtime starts threads), the child does the work
//! and reports through a pipe, and the parent exits 0 only once the mount is up, or with
//! the child's error message and exit code. With `--systemd`, readiness is sent to
//! `$NOTIFY_SOCKET` instead.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};

use crate::exit::{Error, ExitCode};

/// The child's end of the report pipe.
#[derive(Debug)]
pub struct Reporter {
    pipe: Option<File>,
}

impl Reporter {
    /// A reporter for a process that did not fork (`--fg`, `--systemd`): reports go to
    /// systemd if it is listening, errors are returned to the caller as usual.
    pub fn foreground() -> Reporter {
        Reporter { pipe: None }
    }

    /// The mount is up: let the parent exit 0, detach from the terminal, and tell systemd.
    pub fn ready(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(&[0]);
            detach_stdio();
        }
        notify_systemd("READY=1");
    }

    /// Report a failure before readiness to the waiting parent (which prints it).
    /// Returns whether a parent was told.
    pub fn failed(&mut self, e: &Error) -> bool {
        match self.pipe.take() {
            Some(mut pipe) => {
                let mut msg = vec![e.code.code() as u8];
                msg.extend_from_slice(e.message.as_bytes());
                let _ = pipe.write_all(&msg);
                true
            }
            None => false,
        }
    }
}

/// Fork. Returns in the child; the parent waits for the child's report and exits.
pub fn daemonize() -> Result<Reporter, Error> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two valid descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::new(
            ExitCode::Failure,
            format!("cannot create a pipe: {}", std::io::Error::last_os_error()),
        ));
    }
    // SAFETY: called before any thread is started (documented requirement of the caller).
    match unsafe { libc::fork() } {
        -1 => Err(Error::new(
            ExitCode::Failure,
            format!("cannot fork: {}", std::io::Error::last_os_error()),
        )),
        0 => {
            // SAFETY: both fds are ours; the read end is not used in the child.
            unsafe { libc::close(fds[0]) };
            // A new session, so the terminal's hang-up does not stop the daemon.
            unsafe { libc::setsid() };
            Ok(Reporter {
                pipe: Some(unsafe { File::from_raw_fd(fds[1]) }),
            })
        }
        child => {
            unsafe { libc::close(fds[1]) };
            let mut pipe = unsafe { File::from_raw_fd(fds[0]) };
            let mut report = Vec::new();
            let _ = pipe.read_to_end(&mut report);
            match report.split_first() {
                Some((0, _)) => std::process::exit(0),
                Some((&code, msg)) => {
                    eprintln!("mount.s3fs: error: {}", String::from_utf8_lossy(msg));
                    std::process::exit(i32::from(code));
                }
                None => {
                    let mut status = 0;
                    // SAFETY: waiting for our own child.
                    unsafe { libc::waitpid(child, &mut status, 0) };
                    eprintln!(
                        "mount.s3fs: error: the mount process ended before the filesystem was mounted (status {status})"
                    );
                    std::process::exit(ExitCode::MountFailed.code());
                }
            }
        }
    }
}

/// Point stdin, stdout and stderr at /dev/null (logs go to the log file or syslog).
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        let fd = null.into_raw_fd();
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(fd, target) };
        }
        if fd > 2 {
            unsafe { libc::close(fd) };
        }
    }
}

/// Send a state line to systemd if it asked for notifications (Type=notify).
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = result {
        log::warn!("cannot notify systemd: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn notify_reaches_a_listening_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test is the only user of NOTIFY_SOCKET in the test binary.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        super::notify_systemd("READY=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
