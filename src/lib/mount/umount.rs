//! umount.s3fs: refuse while busy (listing who uses the mount), unmount, and wait until
//! the mount process has uploaded everything and exited.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::UmountArgs;
use crate::exit::{Error, ExitCode};

/// Processes using anything under `mountpoint`: PID, command name, and one path they
/// hold there (working directory, root, executable, open file or mapped file).
pub fn users_of(mountpoint: &Path, except: &[u32]) -> Vec<(u32, String, PathBuf)> {
    let under = |p: &Path| p == mountpoint || p.starts_with(mountpoint);
    let mut users = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return users;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if except.contains(&pid) {
            continue;
        }
        let base = p.path();
        let links = ["cwd", "root", "exe"].iter().map(|l| base.join(l));
        let fds = std::fs::read_dir(base.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|fd| fd.path());
        let mut held = links
            .chain(fds)
            .filter_map(|l| std::fs::read_link(l).ok())
            .find(|t| under(t));
        if held.is_none()
            && let Ok(maps) = std::fs::read_to_string(base.join("maps"))
        {
            held = maps
                .lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .map(PathBuf::from)
                .find(|f| under(f));
        }
        if let Some(path) = held {
            let name = std::fs::read_to_string(base.join("comm"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            users.push((pid, name, path));
        }
    }
    users
}

/// The mount process's PID, asked through the control file (the one channel between the
/// tools and a mount).
fn daemon_pid(mountpoint: &Path) -> Option<u32> {
    let ctrl = mountpoint.join(crate::control::CTRL_NAME);
    let path = std::ffi::CString::new(ctrl.as_os_str().as_encoded_bytes()).ok()?;
    let name = std::ffi::CString::new(crate::control::cmd::PID).ok()?;
    let mut buf = [0u8; 32];
    // SAFETY: getxattr writes at most buf.len() bytes.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return None;
    }
    std::str::from_utf8(&buf[..n as usize]).ok()?.trim().parse().ok()
}

/// Unmount `mountpoint`; `lazy` detaches it at once and the filesystem lives on until
/// its last user is gone. Root calls umount2, other users fusermount3. An error of
/// kind EBUSY means the filesystem is in use.
pub(crate) fn unmount(mountpoint: &Path, lazy: bool) -> std::io::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: umount2 on a NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), flags) } == 0 {
            return Ok(());
        }
        return Err(std::io::Error::last_os_error());
    }
    let out = std::process::Command::new("fusermount3")
        .arg(if lazy { "-uz" } else { "-u" })
        .arg("--")
        .arg(mountpoint)
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if said.contains("busy") {
        return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
    }
    Err(std::io::Error::other(format!("fusermount3: {said}")))
}

/// Have every dirty block uploaded and wait for it, saying on standard error what is
/// left and, if the store fails, what it says. Returns once nothing is dirty or the
/// mount cannot tell (an older mount, the control file gone).
fn upload_showing_progress(ctrl: &Path) {
    use crate::control::cmd;
    // Whether the store was failing when a line was last written, and when.
    let mut said: Option<(bool, std::time::Instant)> = None;
    loop {
        let Ok(s) = crate::tools::mount_stats(ctrl) else { return };
        if s.dirty_entries == 0 && s.uploads_in_flight == 0 {
            return;
        }
        let _ = crate::tools::command(ctrl, cmd::UPLOAD_NOW, b"");
        let left = format!(
            "{} dirty block{} ({})",
            s.dirty_entries,
            if s.dirty_entries == 1 { "" } else { "s" },
            crate::tools::size(s.dirty_bytes, false)
        );
        let line = match (s.store_failing_secs, &s.store_last_failure) {
            (Some(secs), last) => format!(
                "waiting for {left} to reach the store, which has failed every request for {secs:.0} s ({})",
                last.as_deref().unwrap_or("no answer")
            ),
            (None, _) => format!("uploading {left}"),
        };
        // A change of state at once, the same state every 10 s.
        let failing = s.store_failing_secs.is_some();
        if said.is_none_or(|(f, at)| f != failing || at.elapsed() >= Duration::from_secs(10)) {
            eprintln!("umount.s3fs: {line}");
            said = Some((failing, std::time::Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(args: &UmountArgs) -> Result<(), Error> {
    let mountpoint: PathBuf = std::fs::canonicalize(&args.mountpoint)
        .map_err(|e| Error::new(ExitCode::BadArgument, format!("{}: {e}", args.mountpoint.display())))?;
    // fuser mounts as type "fuse" when it calls mount(2) itself and "fuse.s3fs" through
    // fusermount3; only an s3fs mount answers the PID question.
    let pid = match super::mounts::at(&mountpoint).map(|e| e.fstype) {
        Some(t) if t == "fuse" || t == "fuse.s3fs" => daemon_pid(&mountpoint),
        Some(t) => {
            return Err(Error::new(
                ExitCode::BadArgument,
                format!("{} is a {t} mount, not s3fs", mountpoint.display()),
            ));
        }
        None => {
            return Err(Error::new(
                ExitCode::BadArgument,
                format!("{} is not a mountpoint", mountpoint.display()),
            ));
        }
    };
    if pid.is_none() {
        return Err(Error::new(
            ExitCode::BadArgument,
            format!("{} is not an s3fs mount", mountpoint.display()),
        ));
    }
    let failed = |e: std::io::Error| {
        Error::new(
            ExitCode::MountFailed,
            format!("cannot unmount {}: {e}", mountpoint.display()),
        )
    };
    if args.lazy {
        return unmount(&mountpoint, true).map_err(failed);
    }
    let users = users_of(&mountpoint, &[std::process::id(), pid.unwrap_or(0)]);
    if !users.is_empty() {
        let list: Vec<String> = users
            .iter()
            .map(|(p, n, path)| format!("{p} ({n}: {})", path.display()))
            .collect();
        return Err(Error::new(
            ExitCode::Failure,
            format!("{} is busy, used by: {}", mountpoint.display(), list.join(", ")),
        ));
    }
    // The dirty blocks go to the store while the mount is still there, so that this can
    // say what it waits for (a store that is down, say); the mount process then only
    // uploads the metadata after the unmount.
    if let Ok(ctrl) = crate::tools::control_file(&mountpoint) {
        upload_showing_progress(&ctrl);
    }
    let started = pid.and_then(crate::process::start_time);
    unmount(&mountpoint, false).map_err(failed)?;
    let Some(pid) = pid else { return Ok(()) };
    // The mount process uploads what was written since, and the metadata, then exits.
    let bar = crate::cli::progress::counter("waiting for the upload of the metadata (seconds)");
    let mut waited = 0;
    while crate::process::start_time(pid).is_some() && crate::process::start_time(pid) == started {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
        bar.set_position(waited / 10);
    }
    bar.finish_and_clear();
    Ok(())
}
