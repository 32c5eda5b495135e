//! Space accounting and eviction: the byte, entry and free-disk limits, eviction of
//! clean blocks (least recently used first), and the waits for uploads when only dirty
//! data is left.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::index::{Entry, State};
use super::{BlockCache, CacheError, POLL, files, lock};

/// What cache space is needed for: a write, or a block being fetched to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Write,
    Read,
}

/// How long a write that hit ENOSPC on the cache disk waits for uploads to free space
/// before it fails with ENOSPC.
const NOSPACE_WAIT: Duration = Duration::from_secs(30);
/// How long a free-space reading of the cache disk is trusted, and by how much it must
/// exceed what is needed (see `disk_has_room`).
const FREE_SPACE_FRESH: Duration = Duration::from_millis(50);
const FREE_SPACE_SLACK: u64 = 256 << 20;

impl BlockCache {
    pub(super) fn over(&self, st: &State, need: u64, new_entry: bool, free: u64) -> bool {
        st.bytes + need > self.max_bytes.load(Ordering::Relaxed)
            || st.entries + usize::from(new_entry) > self.cfg.max_entries
            || free < self.min_free.saturating_add(need)
    }

    pub(super) fn disk_free(&self) -> u64 {
        let free = files::disk_space(&self.cfg.dir).map_or(u64::MAX, |(_, avail)| avail);
        *lock(&self.free_seen) = Some((Instant::now(), free));
        free
    }

    /// Whether `need` bytes fit above the free-space reserve. A statvfs per write was a
    /// few percent of a small-file write; a reading of the last [`FREE_SPACE_FRESH`] is
    /// trusted when it leaves [`FREE_SPACE_SLACK`] to spare (more than can be written
    /// meanwhile), otherwise the disk is asked again.
    pub(super) fn disk_has_room(&self, need: u64) -> bool {
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
    pub(super) fn evict(&self, need: u64, new_entry: bool, all: bool) -> usize {
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
    pub(super) fn ensure_space(&self, need: u64, new_entry: bool, purpose: Need) -> Result<(), CacheError> {
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
    pub(super) fn check_store_up(&self, st: &State, purpose: Need) -> Result<(), CacheError> {
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
    pub(super) fn wait_for_uploads<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
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
    pub(super) fn with_space_retry<T>(&self, mut op: impl FnMut() -> Result<T, CacheError>) -> Result<T, CacheError> {
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
