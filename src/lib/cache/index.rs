//! The index of cached blocks: one [`Entry`] per block (its file, under its own lock)
//! and, in the cache's global [`State`] (under the state lock), its [`Slot`], the
//! accounting, the LRU order of clean blocks, the dirty blocks by age and the upload
//! scheduling.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{BlockCache, POLL, lock};

/// `(inode, blockno)`.
pub(super) type Key = (u64, u64);

/// One cached block. `removed` is set only while `file` is locked, and the entry leaves
/// the index before that lock is released: whoever then locks `file` and finds
/// `removed` looks the block up again.
pub(super) struct Entry {
    pub(super) key: Key,
    pub(super) removed: AtomicBool,
    /// A transaction releasing this block's rows is under way ([`BlockCache::release_range`]):
    /// no upload may commit the block, but its data stays until that transaction commits.
    pub(super) releasing: AtomicBool,
    /// Bumped by every modification of the content.
    pub(super) generation: AtomicU64,
    pub(super) file: Mutex<EntryFile>,
}

#[derive(Default)]
pub(super) struct EntryFile {
    /// The local file exists (otherwise the entry is a placeholder being loaded).
    pub(super) present: bool,
    pub(super) dirty: bool,
    pub(super) size: u64,
    pub(super) fd: Option<File>,
    /// How far writes since the block became dirty have covered it without a gap from
    /// its start: a block covered to its end this way was written by a sequential
    /// writer (see `CacheConfig::upload_full_blocks`).
    pub(super) written_from_start: u64,
}

/// The global view of one entry, mirrored from its `EntryFile` (see `mirror`).
pub(super) struct Slot {
    pub(super) entry: Arc<Entry>,
    pub(super) present: bool,
    pub(super) dirty: bool,
    pub(super) size: u64,
    /// LRU position of a clean entry.
    pub(super) stamp: u64,
    pub(super) last_write: Instant,
    /// Found dirty at start-up: upload without waiting for the delay.
    pub(super) eager: bool,
    pub(super) in_flight: bool,
    pub(super) retry_at: Option<Instant>,
    pub(super) failures: u32,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) slots: BTreeMap<Key, Slot>,
    /// Clean present entries by LRU stamp.
    pub(super) lru: BTreeMap<u64, Key>,
    /// Dirty present entries, oldest last write first: the scheduler reads only the due
    /// front of it, so a round costs O(due), not O(dirty).
    pub(super) dirty: BTreeSet<(Instant, Key)>,
    pub(super) stamp: u64,
    pub(super) bytes: u64,
    pub(super) entries: usize,
    pub(super) dirty_bytes: u64,
    /// Upload tasks not yet finished, but for the parked ones.
    pub(super) in_flight: usize,
    /// Upload tasks waiting for their pack to be stored (see `pack`).
    pub(super) parked: usize,
    /// Threads waiting for space: upload dirty blocks now.
    pub(super) pressure: usize,
    /// `upload_all` callers: upload dirty blocks now.
    pub(super) flushing: usize,
    /// [`BlockCache::hurry`]: upload dirty blocks now, until none is left.
    pub(super) hurry: bool,
    pub(super) shutdown: bool,
    pub(super) scheduler_exited: bool,
    pub(super) permanent_errors: u64,
    pub(super) last_error: Option<String>,
    pub(super) deletions: Vec<String>,
    pub(super) deleting: bool,
    pub(super) delete_retry_at: Option<Instant>,
}

impl State {
    /// Whether something waits for the uploads: a flush or sync, an unmount, writers
    /// short of cache space. Dirty blocks are then due at once and packs sealed at once.
    pub(super) fn uploads_awaited(&self) -> bool {
        self.pressure > 0 || self.flushing > 0 || self.hurry || self.shutdown
    }

    /// Take `entry`'s slot out of the index and the accounting.
    pub(super) fn detach(&mut self, entry: &Arc<Entry>) -> Option<Slot> {
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
    pub(super) fn attach(&mut self, mut s: Slot) {
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

impl BlockCache {
    /// The entry of `key`, created as a placeholder if absent, with its mirrored
    /// `(present, size)`.
    pub(super) fn entry(&self, key: Key) -> (Arc<Entry>, bool, u64) {
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
    pub(super) fn mirror(&self, e: &Arc<Entry>, f: &EntryFile, wrote: bool) {
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

    /// Make dirty block `key` due for upload now, as if it had been written
    /// `dirty_upload_delay` ago: it keeps its place in the oldest-first order the
    /// scheduler scans, ahead of the blocks still waiting (and `s3fsstat`'s "oldest dirty
    /// block" counts it that old until it is uploaded).
    pub(super) fn due_now(&self, key: Key) {
        let mut st = lock(&self.state);
        let Some(e) = st.slots.get(&key).filter(|s| s.dirty).map(|s| s.entry.clone()) else {
            return;
        };
        let Some(mut s) = st.detach(&e) else { return };
        match Instant::now().checked_sub(self.cfg.dirty_upload_delay) {
            Some(then) => s.last_write = s.last_write.min(then),
            None => s.eager = true,
        }
        st.attach(s);
        drop(st);
        self.work_cv.notify_all();
    }

    /// After an operation on a locked entry: mirror it, or drop it from the index if it
    /// has no file (a hole, or a failed load).
    pub(super) fn settle(&self, e: &Arc<Entry>, f: &mut EntryFile, wrote: bool) {
        if f.present {
            self.mirror(e, f, wrote);
        } else {
            e.removed.store(true, Ordering::Release);
            f.fd = None;
            lock(&self.state).detach(e);
        }
    }

    pub(super) fn entries_in(&self, inode: u64, from_blockno: u64, to_blockno: u64) -> Vec<Arc<Entry>> {
        lock(&self.state)
            .slots
            .range((inode, from_blockno)..=(inode, to_blockno))
            .map(|(_, s)| s.entry.clone())
            .collect()
    }
}
