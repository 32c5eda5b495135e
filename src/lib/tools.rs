//! The tools that talk to a mounted filesystem through its control file (see
//! [`crate::control`]): s3fsstat, s3fsctrl, s3fscp, s3fslock and s3fsrm.

use std::ffi::CString;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{CpArgs, CtrlAction, CtrlArgs, LockArgs, RmArgs, StatArgs};
use crate::control::{CTRL_INO, CTRL_NAME, MountStats, cmd};
use crate::exit::{Error, ExitCode};

/// The directory holding `path` (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The control file of the filesystem holding `path`, once we know we may use it.
pub fn control_file(path: &Path) -> Result<PathBuf, Error> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| Error::new(ExitCode::BadArgument, format!("{}: {e}", path.display())))?;
    let dir = if meta.is_dir() { path } else { parent_dir(path) };
    let ctrl = dir.join(CTRL_NAME);
    let not_s3fs = || {
        Error::new(
            ExitCode::BadArgument,
            format!("{} is not on a mounted s3fs filesystem", path.display()),
        )
    };
    let c = std::fs::symlink_metadata(&ctrl).map_err(|_| not_s3fs())?;
    if c.ino() != CTRL_INO || c.dev() != meta.dev() {
        return Err(not_s3fs());
    }
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && euid != c.uid() {
        return Err(Error::new(
            ExitCode::Failure,
            format!(
                "{}: only the user who mounted the filesystem (uid {}) or root may do this",
                path.display(),
                c.uid()
            ),
        ));
    }
    Ok(ctrl)
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

/// Send a command; blocks until the mount has carried it out.
pub fn command(ctrl: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let (p, n) = (c_path(ctrl), CString::new(name).expect("command names have no NUL"));
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Ask a query.
pub fn query(ctrl: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let (p, n) = (c_path(ctrl), CString::new(name).expect("query names have no NUL"));
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: valid NUL-terminated strings and a buffer of the given length.
        let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || buf.len() >= 1 << 20 {
            return Err(e);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// The mount's statistics.
pub fn mount_stats(ctrl: &Path) -> Result<MountStats, Error> {
    let raw = query(ctrl, cmd::STAT).map_err(|e| failed("reading the statistics", e))?;
    serde_json::from_slice(&raw)
        .map_err(|e| Error::new(ExitCode::Failure, format!("the mount sent unreadable statistics: {e}")))
}

fn failed(what: &str, e: std::io::Error) -> Error {
    Error::new(ExitCode::Failure, format!("{what}: {e}"))
}

fn out_err(e: std::io::Error) -> Error {
    Error::new(ExitCode::Failure, format!("cannot write to standard output: {e}"))
}

/// `1536` → `1.50 KiB` (or the plain number with `raw`).
pub(crate) fn size(bytes: u64, raw: bool) -> String {
    if raw || bytes < 1024 {
        return format!("{bytes} B");
    }
    let units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2} {}", units[u])
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// s3fsstat.
pub fn stat(args: &StatArgs, out: &mut dyn Write) -> Result<(), Error> {
    let ctrl = control_file(&args.mountpoint)?;
    let s = mount_stats(&ctrl)?;
    if args.json {
        let text = serde_json::to_string_pretty(&s).expect("stats serialize");
        return writeln!(out, "{text}").map_err(out_err);
    }
    let r = args.raw;
    let secs = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} s ago"));
    let st = &s.store;
    let lines = [
        ("Directory entries", s.db.entries.to_string()),
        ("Inodes", s.db.inodes.to_string()),
        ("Data objects", s.db.objects.to_string()),
        ("Total data size", size(s.db.total_bytes, r)),
        (
            "After de-duplication",
            format!(
                "{} ({} of total)",
                size(s.db.dedup_bytes, r),
                percent(s.db.dedup_bytes, s.db.total_bytes)
            ),
        ),
        (
            "After compression",
            format!(
                "{} ({} of total, {} of de-duplicated)",
                size(s.db.stored_bytes, r),
                percent(s.db.stored_bytes, s.db.total_bytes),
                percent(s.db.stored_bytes, s.db.dedup_bytes)
            ),
        ),
        (
            "Packs",
            format!(
                "{} holding {} blocks, {} ({} garbage)",
                s.packs.packs,
                s.packs.blocks,
                size(s.packs.bytes.max(0) as u64, r),
                size((s.packs.bytes - s.packs.live_bytes).max(0) as u64, r)
            ),
        ),
        (
            "Repacked since mount",
            format!(
                "{} blocks moved, {} of packs released",
                s.repacked_blocks,
                size(s.repack_freed_bytes, r)
            ),
        ),
        (
            "Held for old versions",
            format!(
                "{} objects, {} (kept while a retained metadata version needs them)",
                s.held_objects,
                size(s.held_bytes, r)
            ),
        ),
        ("Database size", size(s.db_bytes, r)),
        (
            "Encryption",
            if s.encrypted {
                "AES-256-GCM-SIV"
            } else {
                "none (not encrypted)"
            }
            .to_owned(),
        ),
        (
            "Cache size",
            format!(
                "{}, {} entries (limit {})",
                size(s.cache_bytes, r),
                s.cache_entries,
                size(s.cache_max_bytes, r)
            ),
        ),
        (
            "Cache size (dirty)",
            format!("{}, {} entries", size(s.dirty_bytes, r), s.dirty_entries),
        ),
        ("Oldest dirty block", secs(s.oldest_dirty_secs)),
        (
            "Upload queue",
            format!(
                "{} blocks ({} uploading), {}/s",
                s.upload_queue,
                s.uploads_in_flight,
                size(s.upload_rate as u64, r)
            ),
        ),
        ("Queued object removals", s.pending_removals.to_string()),
        (
            "Cache hit ratio",
            format!(
                "{} ({} hits, {} misses)",
                s.cache_hit_ratio
                    .map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0)),
                s.cache_hits,
                s.cache_misses
            ),
        ),
        if let Some(f) = &s.following {
            (
                "Following the writer",
                format!(
                    "version {}, published {} ago; store checked {} ago{}; {} newer versions taken",
                    s.metadata_seq,
                    secs(Some(f.version_age_secs)),
                    secs(f.checked_secs_ago),
                    f.last_error
                        .as_deref()
                        .map(|e| format!(" (failed: {e})"))
                        .unwrap_or_default(),
                    f.switches
                ),
            )
        } else if s.read_only {
            (
                "Read-only mount of",
                format!("metadata version {} (uploads nothing)", s.metadata_seq),
            )
        } else {
            (
                "Last metadata upload",
                format!("{} (version {})", secs(s.secs_since_metadata_upload), s.metadata_seq),
            )
        },
        (
            "Unpublished changes",
            match s.unpublished_secs {
                Some(age) => format!("for {} (followers lag at least that)", secs(Some(age))),
                None => "none".into(),
            },
        ),
        (
            "Store requests",
            format!(
                "GET {} ({}), PUT {} ({}), HEAD {}, DELETE {}, LIST {}",
                st.get.requests,
                size(st.get.bytes, r),
                st.put.requests,
                size(st.put.bytes, r),
                st.head.requests,
                st.delete.requests,
                st.list.requests
            ),
        ),
        ("Store retries / errors", format!("{} / {}", st.retries, st.errors)),
        (
            "Store",
            match (s.store_failing_secs, &s.store_last_failure) {
                (None, _) => "answering".to_owned(),
                (Some(secs), last) => format!("FAILING for {secs:.0} s ({})", last.as_deref().unwrap_or("no answer")),
            },
        ),
        (
            "Refused while store down",
            format!("{} writes (ENOSPC), {} reads (EIO)", s.refused_writes, s.failed_reads),
        ),
        ("FUSE requests", fuse_requests(&s.fuse_requests)),
    ];
    // One column for the values, a space after the longest label.
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    for (k, v) in lines {
        writeln!(out, "{:<width$}{v}", format!("{k}:")).map_err(out_err)?;
    }
    Ok(())
}

/// "N in all: lookup N, write N, ...", the most frequent kinds first.
fn fuse_requests(counts: &std::collections::BTreeMap<String, u64>) -> String {
    let mut kinds: Vec<(&String, &u64)> = counts.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let each: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("{} in all: {}", counts.values().sum::<u64>(), each.join(", "))
}

/// Run a long command in a thread while showing how the dirty data drains (on a
/// terminal).
fn with_progress(ctrl: &Path, name: &'static str, value: Vec<u8>) -> std::io::Result<()> {
    let path = ctrl.to_owned();
    let worker = std::thread::spawn(move || command(&path, name, &value));
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
                .expect("valid template"),
        );
        bar.set_message("uploading dirty blocks");
        let mut start = None;
        while !worker.is_finished() {
            if let Ok(s) = mount_stats(ctrl) {
                let first = *start.get_or_insert(s.dirty_bytes);
                bar.set_length(first.max(s.dirty_bytes));
                bar.set_position(first.saturating_sub(s.dirty_bytes));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bar.finish_and_clear();
    }
    worker
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("worker panicked")))
}

/// s3fsctrl.
pub fn ctrl(args: &CtrlArgs) -> Result<(), Error> {
    let mp = args.action.mountpoint();
    let ctrl = control_file(mp)?;
    let r = match &args.action {
        CtrlAction::Flushcache { .. } => with_progress(&ctrl, cmd::FLUSHCACHE, Vec::new()),
        CtrlAction::Dropcache { .. } => with_progress(&ctrl, cmd::DROPCACHE, Vec::new()),
        CtrlAction::Sync { .. } => with_progress(&ctrl, cmd::SYNC, Vec::new()),
        CtrlAction::BackupMetadata { .. } => command(&ctrl, cmd::BACKUP_METADATA, b""),
        CtrlAction::Cachesize { kib, .. } => {
            let bytes = kib
                .checked_mul(1024)
                .ok_or_else(|| Error::new(ExitCode::BadArgument, format!("cache size {kib} KiB is too large")))?;
            command(&ctrl, cmd::CACHESIZE, bytes.to_string().as_bytes())
        }
        CtrlAction::Log { level, modules, .. } => {
            let mut v = level.clone();
            for m in modules {
                v.push(' ');
                v.push_str(m);
            }
            command(&ctrl, cmd::LOG, v.as_bytes())
        }
    };
    r.map_err(|e| failed(&format!("{}", mp.display()), e))
}

/// s3fscp.
pub fn cp(args: &CpArgs) -> Result<(), Error> {
    let (src, dst) = (&args.source, &args.target);
    let ctrl = control_file(src)?;
    let bad = |m: String| Error::new(ExitCode::BadArgument, m);
    let smeta = std::fs::metadata(src).map_err(|e| bad(format!("{}: {e}", src.display())))?;
    if !smeta.is_dir() {
        return Err(bad(format!("{} is not a directory", src.display())));
    }
    if std::fs::symlink_metadata(dst).is_ok() {
        return Err(bad(format!("{} already exists", dst.display())));
    }
    let parent = parent_dir(dst);
    let pmeta = std::fs::metadata(parent).map_err(|e| bad(format!("{}: {e}", parent.display())))?;
    if !pmeta.is_dir() || pmeta.dev() != smeta.dev() {
        return Err(bad(format!(
            "{} must be a new name in a directory of the same s3fs filesystem as {}",
            dst.display(),
            src.display()
        )));
    }
    std::fs::create_dir(dst).map_err(|e| failed(&format!("creating {}", dst.display()), e))?;
    let dmeta = std::fs::metadata(dst).map_err(|e| failed(&dst.display().to_string(), e))?;
    let value = format!("{} {}", smeta.ino(), dmeta.ino());
    if let Err(e) = command(&ctrl, cmd::COPY, value.as_bytes()) {
        let _ = remove(&ctrl, dst);
        return Err(failed(&format!("copying {} to {}", src.display(), dst.display()), e));
    }
    Ok(())
}

/// s3fslock.
pub fn lock(args: &LockArgs) -> Result<(), Error> {
    for path in &args.paths {
        let ctrl = control_file(path)?;
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| Error::new(ExitCode::BadArgument, format!("{}: {e}", path.display())))?;
        if meta.ino() == 1 {
            return Err(Error::new(
                ExitCode::BadArgument,
                format!("{}: the root of the filesystem cannot be locked", path.display()),
            ));
        }
        command(&ctrl, cmd::LOCK, meta.ino().to_string().as_bytes())
            .map_err(|e| failed(&format!("locking {}", path.display()), e))?;
    }
    Ok(())
}

/// Remove the tree at `path` through the control file `ctrl`.
fn remove(ctrl: &Path, path: &Path) -> Result<(), Error> {
    let name = path.file_name().ok_or_else(|| {
        Error::new(
            ExitCode::BadArgument,
            format!("{}: cannot remove a path that ends in . or ..", path.display()),
        )
    })?;
    let parent = parent_dir(path);
    let pmeta = std::fs::metadata(parent).map_err(|e| failed(&parent.display().to_string(), e))?;
    let mut value = format!("{} ", pmeta.ino()).into_bytes();
    value.extend_from_slice(name.as_bytes());
    command(ctrl, cmd::RMTREE, &value).map_err(|e| failed(&format!("removing {}", path.display()), e))?;
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::new(
            ExitCode::Failure,
            format!(
                "{} still exists after the removal (recreated meanwhile?)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// s3fsrm.
pub fn rm(args: &RmArgs) -> Result<(), Error> {
    for path in &args.paths {
        std::fs::symlink_metadata(path)
            .map_err(|e| Error::new(ExitCode::BadArgument, format!("{}: {e}", path.display())))?;
        let ctrl = control_file(parent_dir(path))?;
        remove(&ctrl, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_s3qlstat() {
        assert_eq!(size(1000, false), "1000 B");
        assert_eq!(size(1536, false), "1.50 KiB");
        assert_eq!(size(3 << 30, false), "3.00 GiB");
        assert_eq!(size(3 << 30, true), "3221225472 B");
        assert_eq!(percent(1, 4), "25.0%");
        assert_eq!(percent(1, 0), "-");
    }

    #[test]
    fn a_path_outside_s3fs_is_refused_as_a_bad_argument() {
        let dir = tempfile::tempdir().unwrap();
        let e = control_file(dir.path()).unwrap_err();
        assert_eq!(e.code, ExitCode::BadArgument);
        assert!(e.message.contains("not on a mounted s3fs filesystem"), "{}", e.message);
    }
}
