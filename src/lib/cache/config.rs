//! The limits and tuning of the cache: its configuration, the automatic limits S3QL
//! derives from the open-file limit and the free disk space, and its directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CacheOpenError, files};

/// Longest sleep of a waiting writer or of the scheduler between checks.
pub(super) const POLL: Duration = Duration::from_millis(250);

/// Limits and tuning of a [`BlockCache`](super::BlockCache).
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The cache directory (`<cachedir>/<stem>-cache/`); created if missing.
    pub dir: PathBuf,
    /// `data_block_size` of the filesystem.
    pub block_size: u64,
    /// Upper bound of the bytes of all cached block files.
    pub max_bytes: u64,
    /// Upper bound of cached blocks (each holds at most one open file descriptor).
    pub max_entries: usize,
    /// Free space to leave on the cache's filesystem; `None`: 5 % of it or 1 GiB,
    /// whichever is smaller.
    pub min_free_bytes: Option<u64>,
    /// A dirty block is uploaded once it has not been written for this long.
    pub dirty_upload_delay: Duration,
    /// A block just written from its start to its last byte without a gap (since it
    /// became dirty) is due for upload at once, not after `dirty_upload_delay`: a
    /// sequential writer has moved past it, and on a remote store starting early hides
    /// the latency behind the rest of the write. A block changed in place (a database
    /// page, the end of a block before its start) still waits. Off for a local store,
    /// where it would only compete with the writer for the same disk.
    pub upload_full_blocks: bool,
    /// How long a pack of small blocks waits for more while nothing waits for its
    /// upload (see `pack`): a trickle of small files makes a PUT a `pack_linger`, not
    /// one every 100 ms.
    pub pack_linger: Duration,
    /// Concurrent CPU work (hash, compress, encrypt).
    pub max_threads: usize,
    /// Concurrent store requests.
    pub max_connections: usize,
    /// How long the store may fail every request before what waits for it gives up: a
    /// writer waiting for cache space (ENOSPC) and a read of a block not in the cache
    /// (EIO). While the store answers, even slowly, nothing gives up.
    pub store_timeout: Duration,
}

impl CacheConfig {
    /// Defaults: 1 GiB, 4096 entries, 10 s upload delay, packs linger 1 s, one CPU
    /// thread per core, 8 connections.
    pub fn new(dir: PathBuf, block_size: u64) -> CacheConfig {
        CacheConfig {
            dir,
            block_size,
            max_bytes: 1 << 30,
            max_entries: 4096,
            min_free_bytes: None,
            dirty_upload_delay: Duration::from_secs(10),
            upload_full_blocks: false,
            pack_linger: Duration::from_secs(1),
            max_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_connections: 8,
            store_timeout: Duration::from_secs(60),
        }
    }
}

/// How many blocks of `block_size` fit in `bytes`, at least one: the cache's byte
/// budgets (uploads, read-ahead) as counts of blocks.
pub(super) fn blocks_within(bytes: u64, block_size: u64) -> usize {
    usize::try_from(bytes / block_size.max(1)).unwrap_or(usize::MAX).max(1)
}

/// File descriptors kept for everything but cached blocks (DB, store, FUSE, logs).
const RESERVED_FDS: u64 = 64;

/// S3QL's automatic cache limits, for the options the user did not give.
///
/// Entries: the open-file limit (soft limit first raised to the hard limit; 4096 if the
/// hard limit is unlimited) minus what the rest of the process needs, since every cached
/// block holds one descriptor. Bytes: half a block per entry, but at most 80 % of the
/// free space of the cache disk. Exit 37 when fewer than 64 entries would remain.
pub fn auto_limits(
    dir: &Path,
    block_size: u64,
    max_connections: usize,
    max_bytes: Option<u64>,
    max_entries: Option<usize>,
) -> Result<(u64, usize), CacheOpenError> {
    let entries = match max_entries {
        Some(n) => n,
        None => {
            let fds = raise_fd_limit();
            let need = RESERVED_FDS + 3 * max_connections as u64;
            let n = fds.saturating_sub(need);
            if n <= 64 {
                return Err(CacheOpenError::NotEnoughFds { available: fds });
            }
            n as usize
        }
    };
    let bytes = match max_bytes {
        Some(b) => b,
        None => {
            // The cache directory itself may not exist yet.
            let free = files::disk_space(dir)
                .or_else(|_| files::disk_space(dir.parent().unwrap_or(dir)))
                .map(|(_, avail)| avail)
                .unwrap_or(u64::MAX);
            (entries as u64).saturating_mul(block_size / 2).min(free / 10 * 8)
        }
    };
    Ok((bytes, entries))
}

/// Raise the soft open-file limit to the hard one; returns the limit now in force.
fn raise_fd_limit() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a properly sized struct.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    let hard = if lim.rlim_max == libc::RLIM_INFINITY {
        4096
    } else {
        lim.rlim_max
    };
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < hard {
        let want = libc::rlimit {
            rlim_cur: hard,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return hard;
        }
        return lim.rlim_cur;
    }
    hard.min(if lim.rlim_cur == libc::RLIM_INFINITY {
        hard
    } else {
        lim.rlim_cur
    })
}

/// The cache directory of a filesystem: `<cachedir>/<stem>-cache`.
pub fn cache_dir(cachedir: &Path, stem: &str) -> PathBuf {
    cachedir.join(format!("{stem}-cache"))
}
