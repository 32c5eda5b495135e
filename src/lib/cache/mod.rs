//! The write-back block cache: plaintext block files on local disk, read and written at
//! byte granularity, uploaded in the background and deduplicated by SHA-256.
//!
//! # Files: the file name is the state
//!
//! Block `(inode, blockno)` is the file `<inode>-<blockno>` in the cache directory when
//! it is clean (its content is in the store and `inode_blocks` points at it durably),
//! and `<inode>-<blockno>.dirty` when it may be newer than the store. A clean file is
//! renamed to `.dirty` *before* its content is first modified; a new block is created
//! as `.dirty`; a dirty file becomes clean only after its upload is committed, the DB
//! is made durable (one fdatasync of the `-wal` file per batch of finished uploads) and
//! no write happened since the upload read the content (per-entry write generation).
//! After a crash the `.dirty` files are therefore exactly the blocks that may be newer
//! than the store: [`BlockCache::open`] queues them for upload without hashing any clean
//! file. Downloads go to `<inode>-<blockno>.tmp`, are fsync'ed and renamed; leftover
//! `.tmp` files are deleted at start-up.
//!
//! # Lock order
//!
//! 1. an entry's mutex (`Entry::file`, one per cached block) — held during file I/O of
//!    that block and during its download; never two at once, except through
//!    `try_lock` (eviction), which cannot deadlock;
//! 2. then either the global state mutex (`BlockCache::state`: index, LRU, accounting,
//!    upload scheduling) or the DB mutex — never both at once, and nothing else is
//!    taken while either is held.
//!
//! The DB mutex is held only for short SQL transactions: never across network I/O,
//! hashing, compression or block file I/O. The small `finishing` mutex (batch of
//! finished uploads) is a leaf. Consequently **the namespace core must not call into
//! the cache while it holds the DB mutex.**
//!
//! # Contract with the namespace core
//!
//! - Truncate and reflink: run the transaction that deletes `inode_blocks` rows
//!   (`meta::blocks::release_blocks`) through [`BlockCache::release_range`]. An upload that
//!   commits before it has its row deleted by that transaction; one that would commit
//!   after sees the entry marked (checked under the DB lock) and drops its object. The
//!   cached blocks are dropped only once the transaction has committed, so a failed one
//!   loses nothing, and are dropped then even if a read running meanwhile (the kernel's
//!   readahead is asynchronous) loaded one from the rows being released. Writes to an
//!   inode must not run concurrently with its truncation (the kernel serialises them).
//! - Purge of an inode: [`BlockCache::remove_blocks`] after the transaction.
//! - Objects released by the namespace (refcount 0) are deleted from the store through
//!   [`BlockCache::delete_objects`].
//! - `read`, `write`, `truncate_block`, `upload_all` block the calling thread: call them
//!   from FUSE or tool threads, never from a tokio worker.
//! - An upload is committed only while the inode's row exists: blocks of purged inodes
//!   are dropped, never resurrected.

mod commit;
mod files;
mod upload;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::exit::{Error, ExitCode};
use crate::fs_store::{FsStore, names};

/// `(inode, blockno)`.
type Key = (u64, u64);

/// What cache space is needed for: a write, or a block being fetched to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Write,
    Read,
}

/// How long a write that hit ENOSPC on the cache disk waits for uploads to free space
/// before it fails with ENOSPC.
const NOSPACE_WAIT: Duration = Duration::from_secs(30);
/// Longest sleep of a waiting writer or of the scheduler between checks.
const POLL: Duration = Duration::from_millis(250);
/// How long a free-space reading of the cache disk is trusted, and by how much it must
/// exceed what is needed (see `disk_has_room`).
const FREE_SPACE_FRESH: Duration = Duration::from_millis(50);
const FREE_SPACE_SLACK: u64 = 256 << 20;

/// Limits and tuning of a [`BlockCache`].
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
    /// Defaults: 1 GiB, 4096 entries, 10 s upload delay, one CPU thread per core,
    /// 8 connections.
    pub fn new(dir: PathBuf, block_size: u64) -> CacheConfig {
        CacheConfig {
            dir,
            block_size,
            max_bytes: 1 << 30,
            max_entries: 4096,
            min_free_bytes: None,
            dirty_upload_delay: Duration::from_secs(10),
            max_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_connections: 8,
            store_timeout: Duration::from_secs(60),
        }
    }
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
) -> Result<(u64, usize), Error> {
    let entries = match max_entries {
        Some(n) => n,
        None => {
            let fds = raise_fd_limit();
            let need = RESERVED_FDS + 3 * max_connections as u64;
            let n = fds.saturating_sub(need);
            if n <= 64 {
                return Err(Error::new(
                    ExitCode::NotEnoughFds,
                    format!("only {fds} file descriptors available: raise the open-file limit (ulimit -n)"),
                ));
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

/// Failure of a cache operation.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache file I/O: {0}")]
    Io(#[from] io::Error),
    #[error("cache disk full")]
    NoSpace,
    #[error("store: {0}")]
    Store(String),
    #[error("metadata database: {0}")]
    Db(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the block cache is shut down")]
    ShutDown,
    /// The cache is full of dirty blocks and the store has failed every request for
    /// longer than the store timeout: a write cannot be taken (ENOSPC).
    #[error("the cache is full and its dirty blocks cannot be uploaded: the store has failed every request for {0} s")]
    FullAndStoreDown(u64),
    /// A block not in the cache cannot be fetched: the store has failed every request
    /// for longer than the store timeout (EIO).
    #[error("the store has failed every request for {0} s")]
    StoreDown(u64),
}

impl CacheError {
    /// The errno to reply to the kernel with.
    pub fn errno(&self) -> i32 {
        match self {
            CacheError::Io(e) => match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => libc::ENOSPC,
                _ => libc::EIO,
            },
            CacheError::NoSpace | CacheError::FullAndStoreDown(_) => libc::ENOSPC,
            CacheError::Invalid(_) => libc::EINVAL,
            CacheError::Store(_) | CacheError::Db(_) | CacheError::ShutDown | CacheError::StoreDown(_) => libc::EIO,
        }
    }

    fn is_no_space(&self) -> bool {
        self.errno() == libc::ENOSPC
    }
}

impl From<rusqlite::Error> for CacheError {
    fn from(e: rusqlite::Error) -> Self {
        CacheError::Db(e.to_string())
    }
}

impl From<CacheError> for Error {
    fn from(e: CacheError) -> Self {
        Error::new(ExitCode::Failure, e.to_string())
    }
}

/// A snapshot of the cache's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: u64,
    pub dirty_entries: usize,
    pub dirty_bytes: u64,
    pub uploads_in_flight: usize,
    /// Blocks uploaded (dedup hits excluded).
    pub uploads: u64,
    /// Bytes sent to the store (after compression and encryption).
    pub uploaded_bytes: u64,
    /// Dirty blocks whose content was already stored.
    pub dedup_hits: u64,
    /// Batches of DB steps the upload pipeline committed, one transaction each; each
    /// block needs one or two steps, and steps queued together share a batch (see
    /// `commit`).
    pub upload_transactions: u64,
    /// Reads served from a cached file / reads that had to download the block.
    pub hits: u64,
    pub misses: u64,
    /// Object deletions queued or running.
    pub pending_deletions: usize,
    /// Time since the least recent write of a block still dirty.
    pub oldest_dirty: Option<Duration>,
    /// The byte limit in force (see [`BlockCache::set_max_bytes`]).
    pub max_bytes: u64,
    /// Writes refused (ENOSPC) because the cache was full while the store was down.
    pub refused_writes: u64,
    /// Reads of blocks not in the cache that failed (EIO) because the store was down.
    pub failed_reads: u64,
}

/// What [`recover_dirty`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Dirty blocks found and uploaded.
    pub uploaded_blocks: usize,
    /// Stale files deleted: dirty blocks of inodes that no longer exist, clean files
    /// that no longer match the DB.
    pub discarded_files: usize,
}

/// One cached block. `removed` is set only while `file` is locked, and the entry leaves
/// the index before that lock is released: whoever then locks `file` and finds
/// `removed` looks the block up again.
struct Entry {
    key: Key,
    removed: AtomicBool,
    /// A transaction releasing this block's rows is under way ([`BlockCache::release_range`]):
    /// no upload may commit the block, but its data stays until that transaction commits.
    releasing: AtomicBool,
    /// Bumped by every modification of the content.
    generation: AtomicU64,
    file: Mutex<EntryFile>,
}

#[derive(Default)]
struct EntryFile {
    /// The local file exists (otherwise the entry is a placeholder being loaded).
    present: bool,
    dirty: bool,
    size: u64,
    fd: Option<File>,
}

/// The global view of one entry, mirrored from its `EntryFile` (see `mirror`).
struct Slot {
    entry: Arc<Entry>,
    present: bool,
    dirty: bool,
    size: u64,
    /// LRU position of a clean entry.
    stamp: u64,
    last_write: Instant,
    /// Found dirty at start-up: upload without waiting for the delay.
    eager: bool,
    in_flight: bool,
    retry_at: Option<Instant>,
    failures: u32,
}

#[derive(Default)]
struct State {
    slots: BTreeMap<Key, Slot>,
    /// Clean present entries by LRU stamp.
    lru: BTreeMap<u64, Key>,
    /// Dirty present entries, oldest last write first: the scheduler reads only the due
    /// front of it, so a round costs O(due), not O(dirty).
    dirty: BTreeSet<(Instant, Key)>,
    stamp: u64,
    bytes: u64,
    entries: usize,
    dirty_bytes: u64,
    /// Upload tasks not yet finished.
    in_flight: usize,
    /// Threads waiting for space: upload dirty blocks now.
    pressure: usize,
    /// `upload_all` callers: upload dirty blocks now.
    flushing: usize,
    /// [`BlockCache::hurry`]: upload dirty blocks now, until none is left.
    hurry: bool,
    shutdown: bool,
    scheduler_exited: bool,
    permanent_errors: u64,
    last_error: Option<String>,
    deletions: Vec<String>,
    deleting: bool,
    delete_retry_at: Option<Instant>,
}

impl State {
    /// Take `entry`'s slot out of the index and the accounting.
    fn detach(&mut self, entry: &Arc<Entry>) -> Option<Slot> {
        match self.slots.get(&entry.key) {
            Some(s) if Arc::ptr_eq(&s.entry, entry) => {}
            _ => return None,
        }
        let s = self.slots.remove(&entry.key)?;
        if s.present {
            self.bytes -= s.size;
            self.entries -= 1;
            if s.dirty {
                self.dirty.remove(&(s.last_write, entry.key));
                self.dirty_bytes -= s.size;
            } else {
                self.lru.remove(&s.stamp);
            }
        }
        Some(s)
    }

    /// Put a slot (back) into the index; a clean one becomes most recently used.
    fn attach(&mut self, mut s: Slot) {
        let key = s.entry.key;
        if s.present {
            self.bytes += s.size;
            self.entries += 1;
            if s.dirty {
                self.dirty.insert((s.last_write, key));
                self.dirty_bytes += s.size;
            } else {
                self.stamp += 1;
                s.stamp = self.stamp;
                self.lru.insert(s.stamp, key);
            }
        }
        self.slots.insert(key, s);
    }
}

#[derive(Default)]
struct Counters {
    /// Writes refused because the cache was full while the store was down.
    refused_writes: AtomicU64,
    /// Reads that failed because the store was down.
    failed_reads: AtomicU64,
    uploads: AtomicU64,
    uploaded_bytes: AtomicU64,
    dedup_hits: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Finished uploads waiting for one DB sync before their files are renamed clean.
#[derive(Default)]
struct Finishing {
    pending: Vec<(Arc<Entry>, u64)>,
    syncing: bool,
}

/// The block cache. See the module documentation.
pub struct BlockCache {
    cfg: CacheConfig,
    min_free: u64,
    db: Arc<Mutex<Connection>>,
    db_path: PathBuf,
    store: FsStore,
    state: Mutex<State>,
    /// Signalled when there is upload or deletion work (the scheduler waits on it).
    work_cv: Condvar,
    /// Signalled when space may have been freed or an upload or deletion finished.
    space_cv: Condvar,
    finishing: Mutex<Finishing>,
    /// Runs the uploads' DB steps in batches (see [`commit`]).
    committer: commit::Committer,
    cpu: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    counters: Counters,
    discarded_at_open: usize,
    /// The byte limit; starts as `cfg.max_bytes`, changed at run time by `s3fsctrl cachesize`.
    max_bytes: AtomicU64,
    /// The last free-space reading of the cache disk and when it was taken.
    free_seen: Mutex<Option<(Instant, u64)>>,
    /// Writes are being refused for a store outage (logged once per outage).
    refusing: AtomicBool,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache").field("dir", &self.cfg.dir).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BlockCache {
    /// Open the cache directory and start the background uploader.
    ///
    /// Start-up scan: leftover `.tmp` files are deleted; clean files are indexed (oldest
    /// modification first in the LRU) if the DB still maps their block with the same
    /// size, and deleted otherwise; `.dirty` files are queued for immediate upload if
    /// their inode still exists, and deleted otherwise. No file is read or hashed.
    pub fn open(
        config: CacheConfig,
        db: Arc<Mutex<Connection>>,
        db_path: PathBuf,
        store: FsStore,
    ) -> Result<Arc<BlockCache>, Error> {
        if config.block_size == 0 || config.block_size > u64::from(u32::MAX) {
            return Err(Error::new(ExitCode::Failure, "invalid data block size"));
        }
        let dir = &config.dir.clone();
        let inaccessible = |e: io::Error| {
            Error::new(
                ExitCode::CacheDirInaccessible,
                format!("cache directory {}: {e}", dir.display()),
            )
        };
        std::fs::create_dir_all(dir).map_err(inaccessible)?;
        let min_free = match config.min_free_bytes {
            Some(m) => m,
            None => {
                let (total, _) = files::disk_space(dir).map_err(inaccessible)?;
                (total / 20).min(1 << 30)
            }
        };
        let mut found = files::scan(dir).map_err(inaccessible)?;
        found.sort_by_key(|f| f.mtime);
        let mut keep = Vec::new();
        let mut stale = Vec::new();
        {
            let conn = lock(&db);
            let db_err = |e: rusqlite::Error| Error::new(ExitCode::LocalDbCorrupt, format!("metadata database: {e}"));
            for f in found {
                let ok = if f.dirty {
                    crate::meta::inodes::exists(&conn, f.key.0 as i64).map_err(db_err)?
                } else {
                    crate::meta::blocks::stored_size(&conn, f.key.0, f.key.1).map_err(db_err)? == Some(f.len as i64)
                };
                if ok { keep.push(f) } else { stale.push(f) }
            }
        }
        for f in &stale {
            log::info!(
                "cache: deleting stale file {}",
                files::block_path(dir, f.key, f.dirty).display()
            );
            files::remove_if_exists(&files::block_path(dir, f.key, f.dirty)).map_err(inaccessible)?;
        }
        let mut state = State::default();
        let now = Instant::now();
        for f in keep {
            let entry = Arc::new(Entry {
                key: f.key,
                removed: AtomicBool::new(false),
                releasing: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                file: Mutex::new(EntryFile {
                    present: true,
                    dirty: f.dirty,
                    size: f.len,
                    fd: None,
                }),
            });
            state.attach(Slot {
                entry,
                present: true,
                dirty: f.dirty,
                size: f.len,
                stamp: 0,
                last_write: now,
                eager: f.dirty,
                in_flight: false,
                retry_at: None,
                failures: 0,
            });
        }
        let committer = commit::Committer::start(db.clone()).map_err(inaccessible)?;
        let cache = Arc::new(BlockCache {
            min_free,
            db,
            db_path,
            store,
            state: Mutex::new(state),
            work_cv: Condvar::new(),
            space_cv: Condvar::new(),
            finishing: Mutex::new(Finishing::default()),
            committer,
            cpu: Arc::new(Semaphore::new(config.max_threads.max(1))),
            connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
            counters: Counters::default(),
            discarded_at_open: stale.len(),
            max_bytes: AtomicU64::new(config.max_bytes),
            free_seen: Mutex::new(None),
            refusing: AtomicBool::new(false),
            cfg: config,
        });
        upload::start_scheduler(&cache).map_err(inaccessible)?;
        Ok(cache)
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    fn path(&self, key: Key, dirty: bool) -> PathBuf {
        files::block_path(&self.cfg.dir, key, dirty)
    }

    /// The entry of `key`, created as a placeholder if absent, with its mirrored
    /// `(present, size)`.
    fn entry(&self, key: Key) -> (Arc<Entry>, bool, u64) {
        loop {
            let mut st = lock(&self.state);
            match st.slots.get(&key) {
                Some(s) if s.entry.removed.load(Ordering::Acquire) => {
                    // Being removed by a thread holding its file lock: wait for it.
                    let e = s.entry.clone();
                    drop(st);
                    drop(lock(&e.file));
                }
                Some(s) => return (s.entry.clone(), s.present, s.size),
                None => {
                    let entry = Arc::new(Entry {
                        key,
                        removed: AtomicBool::new(false),
                        releasing: AtomicBool::new(false),
                        generation: AtomicU64::new(0),
                        file: Mutex::new(EntryFile::default()),
                    });
                    st.attach(Slot {
                        entry: entry.clone(),
                        present: false,
                        dirty: false,
                        size: 0,
                        stamp: 0,
                        last_write: Instant::now(),
                        eager: false,
                        in_flight: false,
                        retry_at: None,
                        failures: 0,
                    });
                    return (entry, false, 0);
                }
            }
        }
    }

    /// Copy an entry's file state into its slot (accounting, LRU touch, dirty set).
    fn mirror(&self, e: &Arc<Entry>, f: &EntryFile, wrote: bool) {
        let mut st = lock(&self.state);
        let Some(mut s) = st.detach(e) else { return };
        let became_dirty = !s.dirty && f.dirty;
        s.present = f.present;
        s.dirty = f.present && f.dirty;
        s.size = if f.present { f.size } else { 0 };
        if wrote {
            s.last_write = Instant::now();
            s.eager = false;
        }
        // The scheduler wakes at least every second and a new dirty block is due only
        // after the upload delay, so it is woken here only when that cannot wait: waking
        // it for every new small file made a tar extraction quadratic.
        let hurry = st.pressure > 0 || st.flushing > 0 || self.cfg.dirty_upload_delay < POLL * 4;
        st.attach(s);
        drop(st);
        if became_dirty && hurry {
            self.work_cv.notify_all();
        }
    }

    /// After an operation on a locked entry: mirror it, or drop it from the index if it
    /// has no file (a hole, or a failed load).
    fn settle(&self, e: &Arc<Entry>, f: &mut EntryFile, wrote: bool) {
        if f.present {
            self.mirror(e, f, wrote);
        } else {
            e.removed.store(true, Ordering::Release);
            f.fd = None;
            lock(&self.state).detach(e);
        }
    }

    fn fd<'a>(&self, key: Key, f: &'a mut EntryFile) -> io::Result<&'a File> {
        if f.fd.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(key, f.dirty))?;
            f.fd = Some(file);
        }
        Ok(f.fd.as_ref().expect("just opened"))
    }

    fn check_range(&self, offset: u32, len: usize) -> Result<(), CacheError> {
        if u64::from(offset) + len as u64 > self.cfg.block_size {
            return Err(CacheError::Invalid(format!(
                "range {offset}+{len} exceeds the block size {}",
                self.cfg.block_size
            )));
        }
        Ok(())
    }

    /// Read `len` bytes at `offset` of block `blockno` of `inode`. Bytes past the block's
    /// current end are not returned; a hole (no file, no stored block) reads as empty.
    pub fn read(&self, inode: u64, blockno: u64, offset: u32, len: u32) -> Result<Vec<u8>, CacheError> {
        if u64::from(offset) >= self.cfg.block_size || len == 0 {
            return Ok(Vec::new());
        }
        let len = u64::from(len).min(self.cfg.block_size - u64::from(offset));
        let key = (inode, blockno);
        self.with_space_retry(|| {
            loop {
                let (e, _, _) = self.entry(key);
                let mut f = lock(&e.file);
                if e.removed.load(Ordering::Acquire) {
                    continue;
                }
                let r = self.read_locked(&e, &mut f, u64::from(offset), len);
                self.settle(&e, &mut f, false);
                return r;
            }
        })
    }

    fn read_locked(&self, e: &Entry, f: &mut EntryFile, offset: u64, len: u64) -> Result<Vec<u8>, CacheError> {
        if f.present {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            if !self.load(e, f)? {
                return Ok(Vec::new());
            }
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
        }
        let n = f.size.saturating_sub(offset).min(len);
        let mut buf = vec![0u8; n as usize];
        self.fd(e.key, f)?.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Download the stored block into a clean file. `Ok(false)`: the block is a hole.
    /// Waits for space first; the entry is a placeholder, so waiting cannot block an
    /// upload.
    fn load(&self, e: &Entry, f: &mut EntryFile) -> Result<bool, CacheError> {
        let mut loc = crate::meta::blocks::block_location(&lock(&self.db), e.key.0, e.key.1)?;
        let (loc, name, body) = loop {
            let Some(l) = loc else { return Ok(false) };
            // The row is trusted no further than the block size: a damaged one must not
            // make us wait for space we can never have, or index past the object.
            if l.obj_offset < 0 || !(0..=self.cfg.block_size as i64).contains(&l.size) {
                return Err(CacheError::Db(format!(
                    "a block of object {} has size {} at offset {}: out of range",
                    l.obj_id, l.size, l.obj_offset
                )));
            }
            self.ensure_space(l.size as u64, true, Need::Read)?;
            let name = names::data(l.obj_id as u64);
            let body = crate::runtime::block_on(async {
                let fetch = async {
                    let _permit = self.connections.acquire().await;
                    self.store
                        .get_if_exists(&name, self.cfg.block_size)
                        .await
                        .map_err(|e| CacheError::Store(e.message))
                };
                tokio::select! {
                    r = fetch => r,
                    failing = store_down(self.store.store().as_ref(), self.cfg.store_timeout) => {
                        Err(CacheError::StoreDown(failing.as_secs()))
                    }
                }
            })
            .inspect_err(|e| {
                if matches!(e, CacheError::StoreDown(_)) {
                    self.counters.failed_reads.fetch_add(1, Ordering::Relaxed);
                }
            })?;
            if let Some(body) = body {
                break (l, name, body);
            }
            // Missing: a truncate or a reflink racing with this read may have released
            // the block (and deleted its object) since its row was read. Only a row that
            // still names the object means damage.
            let now = crate::meta::blocks::block_location(&lock(&self.db), e.key.0, e.key.1)?;
            if now.is_some_and(|n| n.obj_id == l.obj_id) {
                return Err(CacheError::Store(format!("object {name} is missing from the store")));
            }
            loc = now;
        };
        // Both checked non-negative above, the size against the block size.
        let (size, start) = (loc.size as u64, loc.obj_offset as usize);
        let Some(data) = start.checked_add(size as usize).and_then(|end| body.get(start..end)) else {
            return Err(CacheError::Store(format!(
                "object {name} holds {} bytes, block needs {size} bytes at {start}",
                body.len(),
            )));
        };
        let tmp = files::tmp_path(&self.cfg.dir, e.key);
        let written = (|| -> io::Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.write_all_at(data, 0)?;
            file.sync_data()?;
            std::fs::rename(&tmp, self.path(e.key, false))?;
            Ok(file)
        })();
        let file = match written {
            Ok(file) => file,
            Err(err) => {
                let _ = files::remove_if_exists(&tmp);
                return Err(err.into());
            }
        };
        *f = EntryFile {
            present: true,
            dirty: false,
            size,
            fd: Some(file),
        };
        Ok(true)
    }

    /// Create an empty `.dirty` file for a new block.
    fn create_dirty(&self, e: &Entry, f: &mut EntryFile) -> Result<(), CacheError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path(e.key, true))?;
        *f = EntryFile {
            present: true,
            dirty: true,
            size: 0,
            fd: Some(file),
        };
        e.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Before a modification: rename a clean file to `.dirty` and bump the generation.
    fn make_dirty(&self, e: &Entry, f: &mut EntryFile) -> Result<(), CacheError> {
        if !f.dirty {
            std::fs::rename(self.path(e.key, false), self.path(e.key, true))?;
            f.dirty = true;
        }
        e.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Write `data` at `offset` of block `blockno` of `inode`, extending the block as
    /// needed. A stored block that is not cached is downloaded first, unless `data`
    /// covers the whole block. Waits (never fails) while the cache is full of dirty data.
    pub fn write(&self, inode: u64, blockno: u64, offset: u32, data: &[u8]) -> Result<(), CacheError> {
        self.write_block(inode, blockno, offset, data, false)
    }

    /// [`BlockCache::write`] to a block that starts at or past the end of its file, so
    /// that nothing of it is stored (shrinking a file releases such blocks): the DB is
    /// not asked for it. This spares the first write of every new file a wait for the
    /// DB mutex, which batches of upload commits hold.
    pub fn write_past_end(&self, inode: u64, blockno: u64, offset: u32, data: &[u8]) -> Result<(), CacheError> {
        self.write_block(inode, blockno, offset, data, true)
    }

    fn write_block(
        &self,
        inode: u64,
        blockno: u64,
        offset: u32,
        data: &[u8],
        past_end: bool,
    ) -> Result<(), CacheError> {
        self.check_range(offset, data.len())?;
        let key = (inode, blockno);
        let end = u64::from(offset) + data.len() as u64;
        let whole = offset == 0 && end == self.cfg.block_size;
        self.modify_block(key, end, |e, f| {
            if !f.present && (whole || past_end || !self.load(e, f)?) {
                self.ensure_space(end, true, Need::Write)?;
                self.create_dirty(e, f)?;
            }
            self.make_dirty(e, f)?;
            self.fd(key, f)?.write_all_at(data, u64::from(offset))?;
            f.size = f.size.max(end);
            Ok(())
        })
    }

    /// Cut or extend (with zeros) block `blockno` of `inode` to `len` bytes.
    pub fn truncate_block(&self, inode: u64, blockno: u64, len: u32) -> Result<(), CacheError> {
        self.check_range(len, 0)?;
        let key = (inode, blockno);
        let len = u64::from(len);
        self.modify_block(key, len, |e, f| {
            if !f.present && !self.load(e, f)? {
                if len == 0 {
                    return Ok(());
                }
                self.ensure_space(len, true, Need::Write)?;
                self.create_dirty(e, f)?;
            }
            if f.size == len {
                return Ok(());
            }
            self.make_dirty(e, f)?;
            self.fd(key, f)?.set_len(len)?;
            f.size = len;
            Ok(())
        })
    }

    /// Run `change` on block `key` under its entry lock, after making room for it to grow
    /// to `end` bytes; start over if the entry was removed meanwhile, retry after freeing
    /// space if the disk is full, and settle the entry (dirty, accounting) afterwards.
    fn modify_block(
        &self,
        key: Key,
        end: u64,
        change: impl Fn(&Arc<Entry>, &mut EntryFile) -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        self.with_space_retry(|| {
            loop {
                let (e, present, size) = self.entry(key);
                if present && end > size {
                    self.ensure_space(end - size, false, Need::Write)?;
                }
                let mut f = lock(&e.file);
                if e.removed.load(Ordering::Acquire) {
                    continue;
                }
                let r = change(&e, &mut f);
                if r.is_err()
                    && let Some(fd) = &f.fd
                {
                    // Keep the accounting right after a short write or a failed resize.
                    f.size = fd.metadata().map_or(f.size, |m| m.len());
                }
                self.settle(&e, &mut f, true);
                return r;
            }
        })
    }

    /// Run `release`, the transaction that deletes the rows of blocks
    /// `from_blockno..=to_blockno` of `inode`, with the cache's side of the contract (see
    /// the module docs): no upload of those blocks commits while it runs; if it succeeds
    /// the cached blocks are dropped, else they stay as they were, dirty ones included.
    pub fn release_range<T, E>(
        &self,
        inode: u64,
        from_blockno: u64,
        to_blockno: u64,
        release: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let marked = self.entries_in(inode, from_blockno, to_blockno);
        for e in &marked {
            e.releasing.store(true, Ordering::Release);
        }
        let result = release();
        if result.is_ok() {
            // Also drops entries a racing read loaded from the released rows meanwhile.
            self.remove_block_range(inode, from_blockno, to_blockno);
        }
        for e in &marked {
            e.releasing.store(false, Ordering::Release);
        }
        if result.is_err() {
            // The kept dirty blocks are due for upload again.
            self.work_cv.notify_all();
        }
        result
    }

    fn entries_in(&self, inode: u64, from_blockno: u64, to_blockno: u64) -> Vec<Arc<Entry>> {
        lock(&self.state)
            .slots
            .range((inode, from_blockno)..=(inode, to_blockno))
            .map(|(_, s)| s.entry.clone())
            .collect()
    }

    /// Forget the cached blocks `from_blockno..` of `inode`, clean or dirty: their files
    /// are deleted, pending uploads cancelled, uploads in flight not committed. For
    /// blocks whose rows are gone already (a purged inode); a transaction that releases
    /// rows goes through [`BlockCache::release_range`].
    pub fn remove_blocks(&self, inode: u64, from_blockno: u64) {
        self.remove_block_range(inode, from_blockno, u64::MAX);
    }

    /// [`BlockCache::remove_blocks`] for the blocks `from_blockno..=to_blockno` only.
    fn remove_block_range(&self, inode: u64, from_blockno: u64, to_blockno: u64) {
        for e in self.entries_in(inode, from_blockno, to_blockno) {
            let mut f = lock(&e.file);
            if e.removed.load(Ordering::Acquire) {
                continue;
            }
            e.removed.store(true, Ordering::Release);
            f.fd = None;
            if f.present
                && let Err(err) = files::remove_if_exists(&self.path(e.key, f.dirty))
            {
                log::warn!("cache: cannot delete {}: {err}", self.path(e.key, f.dirty).display());
            }
            f.present = false;
            lock(&self.state).detach(&e);
        }
        self.space_cv.notify_all();
    }

    /// Whether block `blockno` of `inode` is in the cache with changes not yet in the
    /// store (dirty, or being uploaded): then `inode_blocks` does not describe it.
    pub fn is_dirty(&self, inode: u64, blockno: u64) -> bool {
        lock(&self.state)
            .slots
            .get(&(inode, blockno))
            .is_some_and(|s| s.dirty || s.in_flight)
    }

    /// fsync for `inode`: make its dirty block files and their names durable on local
    /// disk (not in the store).
    pub fn flush_inode(&self, inode: u64) -> Result<(), CacheError> {
        let entries: Vec<Arc<Entry>> = lock(&self.state)
            .slots
            .range((inode, 0)..=(inode, u64::MAX))
            .map(|(_, s)| s.entry.clone())
            .collect();
        // Start the writeback of every dirty block, then wait for each. Waiting for the
        // blocks one by one from the start cost a journal commit per block (a 1 GiB file
        // is 1,024 of them); started together, the first wait commits the allocations of
        // all of them and the later ones find their data on disk.
        let mut started = Vec::with_capacity(entries.len());
        for e in entries {
            let mut f = lock(&e.file);
            if !e.removed.load(Ordering::Acquire) && f.present && f.dirty {
                files::start_writeback(self.fd(e.key, &mut f)?)?;
                drop(f);
                started.push(e);
            }
        }
        for e in started {
            let mut f = lock(&e.file);
            if !e.removed.load(Ordering::Acquire) && f.present && f.dirty {
                self.fd(e.key, &mut f)?.sync_data()?;
            }
        }
        files::sync_dir(&self.cfg.dir)?;
        Ok(())
    }

    /// Upload every dirty block now and wait until none is left and every queued object
    /// deletion is done. Fails if a permanent store or DB error happens meanwhile (the
    /// blocks stay dirty on local disk); waits through any outage of the store (an
    /// unmount, fsck: nothing may be left behind).
    pub fn upload_all(&self) -> Result<(), CacheError> {
        self.upload_all_until(false)
    }

    /// [`BlockCache::upload_all`] for a command that holds a FUSE thread (flushcache,
    /// sync, s3fscp): gives up (EIO) once the store has failed every request for the
    /// store timeout.
    pub fn upload_all_unless_store_down(&self) -> Result<(), CacheError> {
        self.upload_all_until(true)
    }

    fn upload_all_until(&self, give_up_when_down: bool) -> Result<(), CacheError> {
        let mut st = lock(&self.state);
        st.flushing += 1;
        let errors_before = st.permanent_errors;
        self.work_cv.notify_all();
        let r = loop {
            if st.permanent_errors != errors_before {
                break Err(CacheError::Store(st.last_error.clone().unwrap_or_default()));
            }
            if give_up_when_down && let Some(failing) = self.store_down_for() {
                break Err(CacheError::StoreDown(failing.as_secs()));
            }
            if st.dirty.is_empty() && st.in_flight == 0 && st.deletions.is_empty() && !st.deleting {
                break Ok(());
            }
            if st.scheduler_exited {
                break Err(CacheError::ShutDown);
            }
            st = self
                .space_cv
                .wait_timeout(st, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        st.flushing -= 1;
        r
    }

    /// Start uploading every dirty block now without waiting for it (umount.s3fs does
    /// this before unmounting, and shows the progress).
    pub fn hurry(&self) {
        lock(&self.state).hurry = true;
        self.work_cv.notify_all();
    }

    /// Whether the store answers (see [`crate::store::Store::health`]).
    pub fn store_health(&self) -> crate::store::Health {
        self.store.store().health()
    }

    /// How long the store has failed every request, once that is the store timeout or
    /// more: it is down, and what waits for it gives up.
    fn store_down_for(&self) -> Option<Duration> {
        self.store_health()
            .failing_for
            .filter(|failing| *failing >= self.cfg.store_timeout)
    }

    /// Evict every clean entry.
    pub fn drop_clean(&self) {
        self.evict(0, false, true);
    }

    /// Queue objects released by the namespace (refcount 0, rows deleted) for deletion
    /// from the store.
    pub fn delete_objects(&self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        let mut st = lock(&self.state);
        st.deletions.extend(ids.iter().map(|&id| names::data(id as u64)));
        drop(st);
        self.work_cv.notify_all();
    }

    pub fn stats(&self) -> CacheStats {
        let st = lock(&self.state);
        CacheStats {
            entries: st.entries,
            bytes: st.bytes,
            dirty_entries: st.dirty.len(),
            dirty_bytes: st.dirty_bytes,
            uploads_in_flight: st.in_flight,
            uploads: self.counters.uploads.load(Ordering::Relaxed),
            uploaded_bytes: self.counters.uploaded_bytes.load(Ordering::Relaxed),
            dedup_hits: self.counters.dedup_hits.load(Ordering::Relaxed),
            upload_transactions: self.committer.batches(),
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            pending_deletions: st.deletions.len() + usize::from(st.deleting),
            oldest_dirty: st.dirty.first().map(|(t, _)| t.elapsed()),
            max_bytes: self.max_bytes.load(Ordering::Relaxed),
            refused_writes: self.counters.refused_writes.load(Ordering::Relaxed),
            failed_reads: self.counters.failed_reads.load(Ordering::Relaxed),
        }
    }

    /// Change the byte limit of the cache; a smaller one takes effect as blocks are
    /// evicted (clean ones at once, dirty ones once uploaded).
    pub fn set_max_bytes(&self, bytes: u64) {
        self.max_bytes.store(bytes, Ordering::Relaxed);
        self.evict(0, false, false);
        self.work_cv.notify_all();
    }

    /// Stop background work: no new upload or deletion starts; waits for those in
    /// flight. Call [`BlockCache::upload_all`] first to leave nothing dirty. Reads and
    /// writes keep working locally afterwards.
    pub fn shutdown(&self) {
        let mut st = lock(&self.state);
        st.shutdown = true;
        self.work_cv.notify_all();
        self.space_cv.notify_all();
        while st.in_flight > 0 || st.deleting || !st.scheduler_exited {
            st = self
                .space_cv
                .wait_timeout(st, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn over(&self, st: &State, need: u64, new_entry: bool, free: u64) -> bool {
        st.bytes + need > self.max_bytes.load(Ordering::Relaxed)
            || st.entries + usize::from(new_entry) > self.cfg.max_entries
            || free < self.min_free.saturating_add(need)
    }

    fn disk_free(&self) -> u64 {
        let free = files::disk_space(&self.cfg.dir).map_or(u64::MAX, |(_, avail)| avail);
        *lock(&self.free_seen) = Some((Instant::now(), free));
        free
    }

    /// Whether `need` bytes fit above the free-space reserve. A statvfs per write was a
    /// few percent of a small-file write; a reading of the last [`FREE_SPACE_FRESH`] is
    /// trusted when it leaves [`FREE_SPACE_SLACK`] to spare (more than can be written
    /// meanwhile), otherwise the disk is asked again.
    fn disk_has_room(&self, need: u64) -> bool {
        let want = self.min_free.saturating_add(need);
        if let Some((at, free)) = *lock(&self.free_seen)
            && at.elapsed() < FREE_SPACE_FRESH
            && free >= want.saturating_add(FREE_SPACE_SLACK)
        {
            return true;
        }
        self.disk_free() >= want
    }

    /// Evict clean entries, least recently used first, until `need` more bytes (and one
    /// more entry if `new_entry`) fit, or every clean entry if `all`. Entries locked by
    /// another thread are skipped unless `all`. Returns how many were evicted.
    fn evict(&self, need: u64, new_entry: bool, all: bool) -> usize {
        let mut evicted = 0;
        let mut cursor = 0u64;
        loop {
            let free = if all { u64::MAX } else { self.disk_free() };
            let batch: Vec<(u64, Arc<Entry>)> = {
                let st = lock(&self.state);
                if !all && !self.over(&st, need, new_entry, free) {
                    return evicted;
                }
                st.lru
                    .range(cursor..)
                    .take(16)
                    .map(|(&stamp, key)| (stamp, st.slots[key].entry.clone()))
                    .collect()
            };
            let Some(&(last, _)) = batch.last() else {
                return evicted;
            };
            cursor = last + 1;
            for (_, e) in batch {
                let mut f = if all {
                    lock(&e.file)
                } else {
                    match e.file.try_lock() {
                        Ok(f) => f,
                        Err(TryLockError::Poisoned(p)) => p.into_inner(),
                        Err(TryLockError::WouldBlock) => continue,
                    }
                };
                if e.removed.load(Ordering::Acquire) || !f.present || f.dirty {
                    continue;
                }
                f.fd = None;
                if let Err(err) = files::remove_if_exists(&self.path(e.key, false)) {
                    log::warn!("cache: cannot evict {}: {err}", self.path(e.key, false).display());
                    continue;
                }
                e.removed.store(true, Ordering::Release);
                f.present = false;
                lock(&self.state).detach(&e);
                evicted += 1;
            }
        }
    }

    /// Make room for `need` more bytes (and one more entry if `new_entry`): evict clean
    /// entries; if only dirty data is left, have it uploaded and wait. Returns at once
    /// (admitting the overshoot) when nothing can free space. Waits as long as the store
    /// answers; once it has failed every request for the store timeout, fails (and so
    /// does every later call at once, until it answers again), so that writers do not
    /// hold every FUSE thread while the store is down.
    fn ensure_space(&self, need: u64, new_entry: bool, purpose: Need) -> Result<(), CacheError> {
        loop {
            {
                let st = lock(&self.state);
                if !self.over(&st, need, new_entry, u64::MAX) && self.disk_has_room(need) {
                    self.refusing.store(false, Ordering::Relaxed);
                    return Ok(());
                }
            }
            if self.evict(need, new_entry, false) > 0 {
                continue;
            }
            let mut st = lock(&self.state);
            let free = self.disk_free();
            if !self.over(&st, need, new_entry, free) {
                return Ok(());
            }
            if st.shutdown || (st.dirty.is_empty() && st.in_flight == 0) {
                return Ok(());
            }
            self.check_store_up(&st, purpose)?;
            st = self.wait_for_uploads(st);
        }
    }

    /// The refusal of what needs room the store cannot free (it has failed for the store
    /// timeout): a write gets ENOSPC (logged once per outage), a block to be read EIO.
    fn check_store_up(&self, st: &State, purpose: Need) -> Result<(), CacheError> {
        let Some(failing) = self.store_down_for().filter(|_| !st.shutdown) else {
            return Ok(());
        };
        if purpose == Need::Read {
            self.counters.failed_reads.fetch_add(1, Ordering::Relaxed);
            return Err(CacheError::StoreDown(failing.as_secs()));
        }
        self.counters.refused_writes.fetch_add(1, Ordering::Relaxed);
        if !self.refusing.swap(true, Ordering::Relaxed) {
            log::error!(
                "cache full ({} MiB dirty) and the store has failed every request for {} s: refusing writes (ENOSPC) until it answers",
                st.dirty_bytes >> 20,
                failing.as_secs()
            );
        }
        Err(CacheError::FullAndStoreDown(failing.as_secs()))
    }

    /// Ask the uploader to hurry (pressure) and wait up to [`POLL`] for it to free space.
    fn wait_for_uploads<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.pressure += 1;
        self.work_cv.notify_all();
        st = self
            .space_cv
            .wait_timeout(st, POLL)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        st.pressure -= 1;
        st
    }

    /// Run `op`; when the cache disk is full, evict clean entries and retry, or wait for
    /// uploads to make entries evictable; ENOSPC only when nothing can free space or
    /// after [`NOSPACE_WAIT`].
    fn with_space_retry<T>(&self, mut op: impl FnMut() -> Result<T, CacheError>) -> Result<T, CacheError> {
        let deadline = Instant::now() + NOSPACE_WAIT;
        loop {
            match op() {
                Err(e) if e.is_no_space() => {
                    if self.evict(self.cfg.block_size, true, false) > 0 {
                        continue;
                    }
                    let mut st = lock(&self.state);
                    if Instant::now() >= deadline || st.shutdown || (st.dirty.is_empty() && st.in_flight == 0) {
                        return Err(CacheError::NoSpace);
                    }
                    self.check_store_up(&st, Need::Write)?;
                    log::warn!("cache disk full; waiting for uploads to free space");
                    st = self.wait_for_uploads(st);
                }
                r => return r,
            }
        }
    }
}

/// Resolves once the store has failed every request for `timeout` (how long it has): a
/// read waiting for a block gives up then, rather than retrying for half an hour with
/// a FUSE thread held.
async fn store_down(store: &dyn crate::store::Store, timeout: Duration) -> Duration {
    loop {
        match store.health().failing_for {
            Some(failing) if failing >= timeout => return failing,
            Some(failing) => tokio::time::sleep((timeout - failing).min(POLL)).await,
            None => tokio::time::sleep(POLL).await,
        }
    }
}

/// Crash recovery (fsck, mount): upload every `.dirty` file of the cache directory with
/// the normal pipeline and commit it, then stop. This is [`BlockCache::open`] (which
/// queues the dirty files and drops stale ones, without hashing clean files) followed by
/// [`BlockCache::upload_all`] and [`BlockCache::shutdown`].
pub fn recover_dirty(
    config: CacheConfig,
    db: Arc<Mutex<Connection>>,
    db_path: PathBuf,
    store: FsStore,
) -> Result<RecoveryReport, Error> {
    let cache = BlockCache::open(config, db, db_path, store)?;
    let uploaded_blocks = cache.stats().dirty_entries;
    let r = cache.upload_all();
    cache.shutdown();
    r.map_err(|e| Error::from(e).context("uploading dirty cache blocks"))?;
    Ok(RecoveryReport {
        uploaded_blocks,
        discarded_files: cache.discarded_at_open,
    })
}

/// The cache directory of a filesystem: `<cachedir>/<stem>-cache`.
pub fn cache_dir(cachedir: &Path, stem: &str) -> PathBuf {
    cachedir.join(format!("{stem}-cache"))
}
