//! The single-writer guard: the lock object `s3fs_lock`.
//!
//! A mount creates `s3fs_lock` with `If-None-Match: *` and deletes it at a clean unmount.
//! Where the store honours conditional writes (probed at mount time, never assumed), two
//! hosts can never both hold it, even if they start at the same instant. Where it does
//! not (Garage 2.5), the lock is checked and then written, which is as safe as S3QL's
//! `is_mounted` flag and no safer; the mount log says which guard is in force.
//!
//! The lock names its holder (host, pid, time), so a refusal says where the filesystem is
//! mounted, or where it crashed and fsck must run. A crash leaves the lock behind on
//! purpose: the next mount must not start from stale metadata.

use serde::{Deserialize, Serialize};

use crate::exit::{Error, ExitCode};
use crate::fs_store::FsStore;
use crate::params::unix_now;
use crate::store::{PutMode, StoreError, probe_conditional_writes};

pub const LOCK: &str = "s3fs_lock";
/// Largest lock object read: a few hundred bytes of JSON are written.
const MAX_LOCK_LEN: u64 = 64 << 10;

/// Who holds the filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    /// Unix seconds.
    pub since: i64,
    /// The filesystem's uuid, so a lock left by an earlier filesystem at the same URL is
    /// recognised as foreign.
    pub fs_uuid: String,
}

impl LockInfo {
    pub fn for_this_process(fs_uuid: &str) -> LockInfo {
        LockInfo {
            host: hostname(),
            pid: std::process::id(),
            since: unix_now(),
            fs_uuid: fs_uuid.to_owned(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "host {} (pid {}, since {})",
            self.host,
            self.pid,
            format_time(self.since)
        )
    }
}

/// Which guard protects a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The store refuses a second `If-None-Match: *` create: exclusive.
    Conditional,
    /// Check, then write: a race between two hosts starting together is not excluded.
    CheckThenWrite,
}

impl Guard {
    pub fn describe(self) -> &'static str {
        match self {
            Guard::Conditional => "exclusive lock (the store honours conditional writes)",
            Guard::CheckThenWrite => {
                "check-then-write lock (the store ignores conditional writes; two hosts mounting at the same instant are not excluded)"
            }
        }
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(s) = std::str::from_utf8(&buf[..end]) {
            return s.to_owned();
        }
    }
    "unknown-host".to_owned()
}

pub(crate) fn format_time(unix: i64) -> String {
    // Seconds are enough for a human to recognise the event; avoid a date crate.
    let secs = unix.rem_euclid(86_400);
    let days = unix.div_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The current holder, if any.
pub async fn read_lock(fs: &FsStore) -> Result<Option<LockInfo>, Error> {
    match fs.get_if_exists(LOCK, MAX_LOCK_LEN).await? {
        None => Ok(None),
        Some(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| Error::new(ExitCode::Failure, format!("the lock object {LOCK} is unreadable: {e}"))),
    }
}

/// The refusal (exit 31) that names the lock's holder.
pub(crate) fn held_elsewhere(holder: &LockInfo) -> Error {
    if holder.host == hostname() {
        Error::new(
            ExitCode::MountedElsewhere,
            format!(
                "the filesystem is already mounted, or was not unmounted cleanly, by {} on this machine",
                holder.describe()
            ),
        )
    } else {
        Error::new(
            ExitCode::MountedElsewhere,
            format!(
                "the filesystem is mounted by {}, or that host stopped without unmounting: unmount it there, or run fsck.s3fs there",
                holder.describe()
            ),
        )
    }
}

/// Take the lock for this process. Fails with exit 31 naming the holder if another
/// mount holds it.
pub async fn acquire(fs: &FsStore, fs_uuid: &str) -> Result<Guard, Error> {
    let conditional = probe_conditional_writes(fs.store().as_ref()).await?;
    let me = LockInfo::for_this_process(fs_uuid);
    let body = serde_json::to_vec(&me).expect("lock serializes");
    if conditional {
        let object = bytes::Bytes::from(fs.codec().encode_portable(LOCK, &body));
        return match fs.store().put(LOCK, object, PutMode::IfNoneMatch).await {
            Ok(()) => Ok(Guard::Conditional),
            Err(StoreError::PreconditionFailed(_)) => {
                match read_lock(fs).await? {
                    Some(holder) => Err(held_elsewhere(&holder)),
                    // Released between our attempt and the read: the caller may retry.
                    None => Err(Error::new(
                        ExitCode::MountedElsewhere,
                        "another mount was starting at the same time",
                    )),
                }
            }
            Err(e) => Err(e.into()),
        };
    }
    if let Some(holder) = read_lock(fs).await? {
        return Err(held_elsewhere(&holder));
    }
    fs.put_portable(LOCK, &body).await?;
    Ok(Guard::CheckThenWrite)
}

/// Take the lock whoever holds it (fsck after a crash, or with `--force-remote`): the
/// caller has established that the holder is gone or its loss is accepted.
pub fn take_over(fs: &FsStore, fs_uuid: &str) -> Result<(), Error> {
    let body = serde_json::to_vec(&LockInfo::for_this_process(fs_uuid)).expect("lock serializes");
    crate::runtime::block_on(fs.put_portable(LOCK, &body))
}

/// Give the lock up at a clean unmount (or after fsck repaired a crashed mount).
pub async fn release(fs: &FsStore) -> Result<(), Error> {
    Ok(fs.store().delete(LOCK).await?)
}
