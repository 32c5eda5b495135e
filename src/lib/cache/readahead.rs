//! Read-ahead: a reader that goes through a file block after block gets the next blocks
//! fetched in parallel before it asks for them, with a window that doubles while it
//! stays sequential (up to [`MAX_WINDOW`] blocks); a reader that jumps gets none.
//!
//! The kernel's own read-ahead asks for at most `max_readahead` bytes at a time and one
//! block at a time from us: over a link with tens of milliseconds of latency, a cold
//! read was one GET after the other (31 MiB/s at 20 ms). Fetches go through a fixed
//! pool of worker threads (one per store connection, at most 16) fed by a bounded queue, and land
//! in the cache like any read: the memory used is the workers' blocks in flight, the
//! rest is cache space, which eviction bounds. Nothing here is per file but the small
//! [`Stream`] record, and at most [`MAX_STREAMS`] of them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, Weak};

use super::{BlockCache, Key, POLL, lock};

/// Most blocks fetched ahead of a sequential reader.
const MAX_WINDOW: u64 = 32;
/// Bytes fetched ahead of one reader, at most (bounds the window of big blocks).
const MAX_WINDOW_BYTES: u64 = 64 << 20;
/// Readers (inodes) tracked; the least recently used is forgotten beyond.
const MAX_STREAMS: usize = 1024;
/// Blocks queued for the workers, at most; more requests are dropped (the reader
/// fetches them itself).
const MAX_QUEUED: usize = 256;

/// What is known of one inode's reader.
struct Stream {
    /// The block after the last one read.
    next: u64,
    /// Blocks to keep fetched ahead; 0 for a random reader.
    window: u64,
    /// Blocks before this one have been queued already.
    queued_until: u64,
    /// When it was last used, counted in notes (no clock read on every read).
    used: u64,
}

/// The read-ahead state of a cache: the streams, and the queue the workers take from.
#[derive(Default)]
pub(super) struct ReadAhead {
    /// The streams, and the notes taken so far.
    streams: Mutex<(HashMap<u64, Stream>, u64)>,
    queue: Arc<Queue>,
}

#[derive(Default)]
struct Queue {
    keys: Mutex<VecDeque<Key>>,
    ready: Condvar,
}

impl ReadAhead {
    /// Note that block `blockno` of `inode` was read; returns the blocks to fetch ahead.
    fn note(&self, inode: u64, blockno: u64, block_size: u64) -> std::ops::Range<u64> {
        let max_window = MAX_WINDOW.min(super::config::blocks_within(MAX_WINDOW_BYTES, block_size) as u64);
        let mut guard = lock(&self.streams);
        let (streams, notes) = &mut *guard;
        *notes += 1;
        let now = *notes;
        if streams.len() >= MAX_STREAMS && !streams.contains_key(&inode) {
            let oldest = streams.iter().min_by_key(|(_, s)| s.used).map(|(&k, _)| k);
            if let Some(k) = oldest {
                streams.remove(&k);
            }
        }
        let Some(s) = streams.get_mut(&inode) else {
            // A first read says nothing of the reader yet.
            streams.insert(
                inode,
                Stream {
                    next: blockno.saturating_add(1),
                    window: 0,
                    queued_until: 0,
                    used: now,
                },
            );
            return 0..0;
        };
        s.used = now;
        if s.window == 0 && blockno.checked_add(1) == Some(s.next) {
            // The same block again from a reader with no window (small random reads).
            return 0..0;
        }
        if blockno.checked_add(1) == Some(s.next) {
            // The same block again (the kernel reads a block in several requests).
        } else if blockno == s.next {
            s.window = (s.window * 2).clamp(2, max_window);
            s.next = blockno.saturating_add(1);
        } else {
            s.window = 0;
            s.next = blockno.saturating_add(1);
            s.queued_until = 0;
        }
        let from = s.queued_until.max(blockno.saturating_add(1));
        let to = blockno.saturating_add(1).saturating_add(s.window);
        if from < to {
            s.queued_until = to;
            from..to
        } else {
            0..0
        }
    }

    /// Forget `inode`'s stream (the file was truncated or removed).
    pub(super) fn forget(&self, inode: u64) {
        lock(&self.streams).0.remove(&inode);
    }
}

impl BlockCache {
    /// After a read of block `blockno` of `inode`: queue the blocks a sequential reader
    /// will want next.
    pub(super) fn read_ahead(&self, inode: u64, blockno: u64) {
        let range = self.readahead.note(inode, blockno, self.cfg.block_size);
        if range.is_empty() {
            return;
        }
        let q = &self.readahead.queue;
        let mut keys = lock(&q.keys);
        for b in range {
            if keys.len() >= MAX_QUEUED {
                break;
            }
            keys.push_back((inode, b));
        }
        drop(keys);
        q.ready.notify_all();
    }

    /// Fetch block `key` into the cache unless it is there, being loaded, or a hole.
    fn prefetch(&self, key: Key) {
        let (e, present, _) = self.entry(key);
        if present {
            return;
        }
        // A reader loading it already: nothing to add.
        let Ok(mut f) = e.file.try_lock() else { return };
        if e.removed.load(std::sync::atomic::Ordering::Acquire) || f.present {
            return;
        }
        if let Err(err) = self.load(&e, &mut f) {
            log::debug!("read-ahead of block {} of inode {}: {err}", key.1, key.0);
        }
        self.settle(&e, &mut f, false);
    }
}

/// Read-ahead workers at most, whatever the connections: each holds a block's object
/// and its plaintext while it works, and 16 fetches in flight fill a link of several
/// hundred MiB/s at 20 ms of latency.
const MAX_WORKERS: usize = 16;
/// And at most this many bytes of blocks fetched at once: 16 workers on 4 MiB blocks
/// took the mount's peak RSS to 250 MiB in the WAN benchmark.
const MAX_WORKER_BYTES: u64 = 32 << 20;

/// Start `workers` read-ahead threads (at most [`MAX_WORKERS`], and at most
/// [`MAX_WORKER_BYTES`] of `block_size` blocks); they hold the cache only weakly
/// between blocks.
pub(super) fn start_workers(cache: &Arc<BlockCache>, workers: usize, block_size: u64) -> std::io::Result<()> {
    let by_bytes = super::config::blocks_within(MAX_WORKER_BYTES, block_size);
    for i in 0..workers.min(by_bytes).clamp(1, MAX_WORKERS) {
        let weak: Weak<BlockCache> = Arc::downgrade(cache);
        let queue = cache.readahead.queue.clone();
        std::thread::Builder::new()
            .name(format!("s3fs-ahead-{i}"))
            .spawn(move || worker(&weak, &queue))?;
    }
    Ok(())
}

fn worker(weak: &Weak<BlockCache>, queue: &Queue) {
    loop {
        let key = {
            let mut keys = lock(&queue.keys);
            loop {
                if weak.strong_count() == 0 {
                    return;
                }
                if let Some(k) = keys.pop_front() {
                    break k;
                }
                keys = queue
                    .ready
                    .wait_timeout(keys, POLL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        let Some(cache) = weak.upgrade() else { return };
        if lock(&cache.state).shutdown {
            continue;
        }
        cache.prefetch(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequential_reader_gets_a_growing_window_and_a_random_one_none() {
        let ra = ReadAhead::default();
        const BS: u64 = 1 << 20;
        assert_eq!(ra.note(7, 0, BS), 0..0, "the first read says nothing yet");
        assert_eq!(ra.note(7, 0, BS), 0..0, "the same block again");
        assert_eq!(ra.note(7, 1, BS), 2..4);
        assert_eq!(ra.note(7, 2, BS), 4..7);
        assert_eq!(ra.note(7, 3, BS), 7..12);
        let mut last = 0..0;
        for b in 4..40 {
            last = ra.note(7, b, BS);
        }
        assert_eq!(last, 71..72, "window capped at {MAX_WINDOW} blocks");
        // A jump: no read-ahead, and none until the reader is sequential again.
        assert_eq!(ra.note(7, 500, BS), 0..0);
        assert_eq!(ra.note(7, 90, BS), 0..0);
        assert_eq!(ra.note(7, 91, BS), 92..94);
        // Big blocks: the window is bounded in bytes.
        for b in 0..20 {
            ra.note(8, b, 16 << 20);
        }
        assert_eq!(ra.note(8, 20, 16 << 20), 24..25, "4 blocks of 16 MiB ahead");
    }
}
