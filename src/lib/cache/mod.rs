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
//! file. Downloads go to `<inode>-<blockno>.tmp` and are renamed; leftover `.tmp` files
//! are deleted at start-up. Clean files are not fsync'ed one by one: every 30 s (and at
//! open and shutdown) a `syncfs` of the cache's filesystem is followed by a *synced
//! mark*, and after a crash the clean files modified since the last mark, which a power
//! loss may have torn, are deleted at open and fetched again when read.
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
//! - Objects released by the namespace (refcount 0) stay in the store: they move to
//!   `released_objects`, deleted once no retained metadata version names them
//!   (`meta::versions::retention`). Only objects no version can name (an abandoned or
//!   redundant upload) go through the cache's own deletion queue.
//! - `read`, `write`, `truncate_block`, `upload_all` block the calling thread: call them
//!   from FUSE or tool threads, never from a tokio worker.
//! - An upload is committed only while the inode's row exists: blocks of purged inodes
//!   are dropped, never resurrected.
//!
//! # Layout
//!
//! This module holds [`BlockCache`] and its public API; `index` the entries and the
//! global state, `space` the accounting against the limits and eviction, `config` the
//! limits and their automatic values, `files` the file names and the start-up scan,
//! `upload` the scheduler and the upload pipeline, `commit` the pipeline's batched DB
//! steps, `error` what the cache fails with.

mod commit;
mod config;
mod error;
mod fetch;
mod files;
pub use files::link_unchanged;
mod index;
mod pack;
mod readahead;
mod repack;
mod space;
mod upload;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use config::POLL;
pub use config::{CacheConfig, auto_limits, cache_dir};
pub use error::{CacheError, CacheOpenError};
use index::{Entry, EntryFile, Key, Slot, State};
pub use repack::{REPACK_GARBAGE, ROUND_BYTES, Repacked};
use space::Need;

use crate::fs_store::{FsStore, names};

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
    /// Blocks moved out of mostly-garbage packs, and the stored bytes of the packs thus
    /// emptied, since the cache was opened.
    pub repacked_blocks: u64,
    pub repack_freed_bytes: u64,
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
    repacked_blocks: AtomicU64,
    repack_freed_bytes: AtomicU64,
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
    /// Stores short blocks together (see [`pack`]).
    packer: pack::Packer,
    /// Runs of packs fetched lately (see [`fetch`]).
    packs: fetch::PackReads,
    /// Sequential readers and the blocks to fetch for them (see [`readahead`]).
    readahead: readahead::ReadAhead,
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
    /// Clean files were made since the last synced mark (see `files::write_synced_mark`).
    unsynced: AtomicBool,
    /// When the last synced mark was written, and whether one is being written.
    synced_at: Mutex<Instant>,
    syncing: AtomicBool,
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
    ) -> Result<Arc<BlockCache>, CacheOpenError> {
        if config.block_size == 0 || config.block_size > u64::from(u32::MAX) {
            return Err(CacheOpenError::InvalidBlockSize);
        }
        let dir = &config.dir.clone();
        let inaccessible = |source: io::Error| CacheOpenError::DirInaccessible {
            dir: dir.clone(),
            source,
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
        // Clean files modified after the last mark may not have reached the disk before
        // a crash (they are not fsync'ed one by one): fetched again rather than trusted.
        let synced = files::read_synced_mark(dir);
        let mut keep = Vec::new();
        let mut stale = Vec::new();
        {
            let conn = lock(&db);
            for f in found {
                let ok = if f.dirty {
                    crate::meta::inodes::exists(&conn, f.key.0 as i64).map_err(CacheOpenError::LocalDb)?
                } else if synced.is_some_and(|m| !m.covers(f.mtime)) {
                    false
                } else {
                    crate::meta::blocks::stored_size(&conn, f.key.0, f.key.1).map_err(CacheOpenError::LocalDb)?
                        == Some(f.len as i64)
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
                    written_from_start: 0,
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
        files::write_synced_mark(dir, false).map_err(inaccessible)?;
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
            packer: pack::Packer::new(config.max_threads),
            packs: fetch::PackReads::default(),
            readahead: readahead::ReadAhead::default(),
            cpu: Arc::new(Semaphore::new(config.max_threads.max(1))),
            connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
            counters: Counters::default(),
            discarded_at_open: stale.len(),
            max_bytes: AtomicU64::new(config.max_bytes),
            free_seen: Mutex::new(None),
            refusing: AtomicBool::new(false),
            unsynced: AtomicBool::new(false),
            synced_at: Mutex::new(Instant::now()),
            syncing: AtomicBool::new(false),
            cfg: config,
        });
        upload::start_scheduler(&cache).map_err(inaccessible)?;
        readahead::start_workers(&cache, cache.cfg.max_connections, cache.cfg.block_size).map_err(inaccessible)?;
        Ok(cache)
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    fn path(&self, key: Key, dirty: bool) -> PathBuf {
        files::block_path(&self.cfg.dir, key, dirty)
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
        // Before this block is loaded, so that the blocks after it are fetched at the
        // same time as it: noted after, a cold sequential read began with three blocks
        // fetched one after the other instead of two (40 ms more at 20 ms RTT), and a
        // reader that caught up with its window queued the next ones only once its own
        // fetch was done.
        self.read_ahead(inode, blockno);
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
        let (size, data) = loop {
            let Some(l) = loc else { return Ok(false) };
            // The row is trusted no further than the block size: a damaged one must not
            // make us wait for space we can never have, or index past the object.
            if l.obj_offset < 0
                || !(0..=self.cfg.block_size as i64).contains(&l.size)
                || !(0..=crate::codec::Codec::max_object_len(self.cfg.block_size) as i64).contains(&l.phys_len)
            {
                return Err(CacheError::Db(format!(
                    "a block of object {} has size {} ({} stored) at offset {}: out of range",
                    l.obj_id, l.size, l.phys_len, l.obj_offset
                )));
            }
            self.ensure_space(l.size as u64, true, Need::Read)?;
            let fetched = if l.is_packed() {
                self.fetch_segment(&l)?
            } else {
                self.fetch_object(&l)?
            };
            if let Some(data) = fetched {
                break (l.size as u64, data);
            }
            // Missing: a truncate or a reflink racing with this read may have released
            // the block (and deleted its object) since its row was read. Only a row that
            // still names the object means damage.
            let now = crate::meta::blocks::block_location(&lock(&self.db), e.key.0, e.key.1)?;
            if now.is_some_and(|n| n.obj_id == l.obj_id) {
                return Err(CacheError::Store(format!(
                    "object {} is missing from the store",
                    names::data(l.obj_id as u64)
                )));
            }
            loc = now;
        };
        let data = &data[..];
        let tmp = files::tmp_path(&self.cfg.dir, e.key);
        let written = (|| -> io::Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            crate::localdisk::write_all_at(&file, data, 0)?;
            // Not fsync'ed: made durable by the next synced mark (see `files`).
            std::fs::rename(&tmp, self.path(e.key, false))?;
            self.unsynced.store(true, Ordering::Release);
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
            written_from_start: 0,
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
            written_from_start: 0,
        };
        e.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Before a modification: rename a clean file to `.dirty` and bump the generation.
    fn make_dirty(&self, e: &Entry, f: &mut EntryFile) -> Result<(), CacheError> {
        if !f.dirty {
            std::fs::rename(self.path(e.key, false), self.path(e.key, true))?;
            f.dirty = true;
            f.written_from_start = 0;
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
        let filled = std::cell::Cell::new(false);
        self.modify_block(key, end, |e, f| {
            if !f.present && (whole || past_end || !self.load(e, f)?) {
                self.ensure_space(end, true, Need::Write)?;
                self.create_dirty(e, f)?;
            }
            self.make_dirty(e, f)?;
            crate::localdisk::write_all_at(self.fd(key, f)?, data, u64::from(offset))?;
            f.size = f.size.max(end);
            let before = f.written_from_start;
            if u64::from(offset) <= before {
                f.written_from_start = before.max(end);
            }
            filled.set(before < self.cfg.block_size && f.written_from_start == self.cfg.block_size);
            Ok(())
        })?;
        if filled.get() && self.cfg.upload_full_blocks {
            self.due_now(key);
        }
        Ok(())
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

    /// Forget the cached blocks `from_blockno..` of `inode`, clean or dirty: their files
    /// are deleted, pending uploads cancelled, uploads in flight not committed. For
    /// blocks whose rows are gone already (a purged inode); a transaction that releases
    /// rows goes through [`BlockCache::release_range`].
    pub fn remove_blocks(&self, inode: u64, from_blockno: u64) {
        if from_blockno == 0 {
            self.readahead.forget(inode);
        }
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
            if st.dirty.is_empty() && st.in_flight == 0 && st.parked == 0 && st.deletions.is_empty() && !st.deleting {
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

    pub fn stats(&self) -> CacheStats {
        let st = lock(&self.state);
        CacheStats {
            entries: st.entries,
            bytes: st.bytes,
            dirty_entries: st.dirty.len(),
            dirty_bytes: st.dirty_bytes,
            uploads_in_flight: st.in_flight + st.parked,
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
            repacked_blocks: self.counters.repacked_blocks.load(Ordering::Relaxed),
            repack_freed_bytes: self.counters.repack_freed_bytes.load(Ordering::Relaxed),
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
        while st.in_flight > 0 || st.parked > 0 || st.deleting || !st.scheduler_exited {
            st = self
                .space_cv
                .wait_timeout(st, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(st);
        // Every clean file on disk: the next open trusts them all.
        if let Err(e) = files::write_synced_mark(&self.cfg.dir, true) {
            log::warn!("cache: cannot sync the cache directory: {e}");
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
) -> Result<RecoveryReport, CacheOpenError> {
    let cache = BlockCache::open(config, db, db_path, store)?;
    let uploaded_blocks = cache.stats().dirty_entries;
    let r = cache.upload_all();
    cache.shutdown();
    r.map_err(CacheOpenError::Recovery)?;
    Ok(RecoveryReport {
        uploaded_blocks,
        discarded_files: cache.discarded_at_open,
    })
}
