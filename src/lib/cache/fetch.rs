//! Fetching blocks from the store: a whole object, or a segment of a pack with a ranged
//! GET that brings the pack's following live segments along.
//!
//! Files written together are packed together in the order they were uploaded, and are
//! usually read together in that order (a restore reads a tree in the order a backup
//! wrote it). So a cold read of a block in a pack fetches, in the same GET, the rest of
//! the pack up to its last live segment (at most [`RUN_MAX`]); the run is kept in memory
//! ([`RECENT_MAX`] bytes for the whole mount, oldest dropped first), and the next blocks
//! of the pack are decoded from it without a request. One ranged GET of a few MiB costs
//! about what one of a few KiB does over a link with 10–50 ms of latency.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};

use bytes::Bytes;

use super::{BlockCache, CacheError, lock, store_down};
use crate::fs_store::names;
use crate::meta::blocks::{self, Location};

/// Bytes of pack runs kept in memory for the whole mount: the runs of the two or three
/// packs a restore reads at a time (one pack is filled per core).
const RECENT_MAX: usize = 24 << 20;
/// Longest run fetched for one block: a pack is sealed at 8 MiB, plus its last segment.
const RUN_MAX: u64 = 16 << 20;

/// A run of stored bytes of a pack: `data` is bytes `[start, start + data.len())`.
struct Run {
    obj_id: i64,
    start: u64,
    data: Bytes,
}

/// The runs of packs fetched lately, and the packs being fetched.
#[derive(Default)]
pub(super) struct PackReads {
    recent: Mutex<(VecDeque<Run>, usize)>,
    busy: Mutex<HashSet<i64>>,
    done: Condvar,
}

impl PackReads {
    /// Stored bytes `[start, end)` of pack `obj_id`, if a recent run holds them.
    fn cached(&self, obj_id: i64, start: u64, end: u64) -> Option<Bytes> {
        let recent = lock(&self.recent);
        recent.0.iter().rev().find_map(|r| {
            let rel = start.checked_sub(r.start)? as usize;
            let len = (end - start) as usize;
            (r.obj_id == obj_id && rel + len <= r.data.len()).then(|| r.data.slice(rel..rel + len))
        })
    }

    fn remember(&self, obj_id: i64, start: u64, data: Bytes) {
        let mut recent = lock(&self.recent);
        recent.1 += data.len();
        recent.0.push_back(Run { obj_id, start, data });
        while recent.1 > RECENT_MAX {
            let Some(old) = recent.0.pop_front() else { break };
            recent.1 -= old.data.len();
        }
    }

    /// Drop the runs of pack `obj_id` (one of them held a segment that did not decode).
    fn forget(&self, obj_id: i64) {
        let mut recent = lock(&self.recent);
        let before = recent.0.len();
        recent.0.retain(|r| r.obj_id != obj_id);
        if recent.0.len() != before {
            recent.1 = recent.0.iter().map(|r| r.data.len()).sum();
        }
    }
}

/// Marks pack `obj_id` as being fetched while it lives: other readers of the pack wait
/// for the run instead of fetching it too.
struct Fetching<'a> {
    reads: &'a PackReads,
    obj_id: i64,
}

impl<'a> Fetching<'a> {
    fn begin(reads: &'a PackReads, obj_id: i64) -> Fetching<'a> {
        let mut busy = lock(&reads.busy);
        while busy.contains(&obj_id) {
            busy = reads.done.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        busy.insert(obj_id);
        Fetching { reads, obj_id }
    }
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        lock(&self.reads.busy).remove(&self.obj_id);
        self.reads.done.notify_all();
    }
}

impl BlockCache {
    /// Run a store request for a read: one connection, and a failure (EIO) once the
    /// store has failed every request for the store timeout.
    pub(super) fn for_read<T>(
        &self,
        request: impl Future<Output = Result<T, crate::exit::Error>>,
    ) -> Result<T, CacheError> {
        crate::runtime::block_on(async {
            let fetch = async {
                let _permit = self.connections.acquire().await;
                request.await.map_err(|e| CacheError::Store(e.message))
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
        })
    }

    /// The plaintext of a block stored as a whole object (or at an offset of the
    /// plaintext of one, as no version of s3fs has written yet); `None` if the object
    /// is missing.
    pub(super) fn fetch_object(&self, l: &Location) -> Result<Option<Bytes>, CacheError> {
        let name = names::data(l.obj_id as u64);
        let Some(body) = self.for_read(self.store.get_if_exists(&name, self.cfg.block_size))? else {
            return Ok(None);
        };
        // Both checked non-negative by the caller, the size against the block size.
        let (size, start) = (l.size as usize, l.obj_offset as usize);
        match start.checked_add(size).filter(|&end| end <= body.len()) {
            Some(end) => Ok(Some(body.slice(start..end))),
            None => Err(CacheError::Store(format!(
                "object {name} holds {} bytes, block needs {size} bytes at {start}",
                body.len(),
            ))),
        }
    }

    /// The plaintext of a block stored as a segment of a pack; `None` if the pack is
    /// missing. A segment that does not decode is fetched once more on its own (the run
    /// it came from may have been damaged on the way).
    pub(super) fn fetch_segment(&self, l: &Location) -> Result<Option<Bytes>, CacheError> {
        let (start, end) = (l.obj_offset as u64, l.obj_offset as u64 + l.phys_len as u64);
        let binding = names::segment(l.obj_id as u64, start);
        let mut last_error = String::new();
        for attempt in 0..2 {
            let raw = match self.packs.cached(l.obj_id, start, end) {
                Some(raw) => raw,
                None => match self.fetch_run(l, attempt == 0)? {
                    Some(raw) => raw,
                    None => return Ok(None),
                },
            };
            match self.store.codec().decode_shared(&binding, raw, l.size as u64) {
                Ok(plain) if plain.len() as u64 == l.size as u64 => return Ok(Some(plain)),
                Ok(plain) => {
                    return Err(CacheError::Store(format!(
                        "the block at offset {start} of object {} holds {} bytes, the metadata says {}",
                        names::data(l.obj_id as u64),
                        plain.len(),
                        l.size
                    )));
                }
                Err(e) => {
                    log::debug!("{e}; fetching the segment again");
                    self.packs.forget(l.obj_id);
                    last_error = e.to_string();
                }
            }
        }
        Err(CacheError::Store(last_error))
    }

    /// Fetch the segment of `l`, and with `neighbours` the pack's live segments after
    /// it, remembering them; returns the segment's stored bytes.
    fn fetch_run(&self, l: &Location, neighbours: bool) -> Result<Option<Bytes>, CacheError> {
        let (start, seg_len) = (l.obj_offset as u64, l.phys_len as u64);
        let _fetching = Fetching::begin(&self.packs, l.obj_id);
        if neighbours && let Some(raw) = self.packs.cached(l.obj_id, start, start + seg_len) {
            return Ok(Some(raw));
        }
        let end = if neighbours {
            let live_end = blocks::pack_live_end(&lock(&self.db), l.obj_id)?.max(0) as u64;
            live_end.clamp(start + seg_len, start + RUN_MAX.max(seg_len))
        } else {
            start + seg_len
        };
        let name = names::data(l.obj_id as u64);
        let Some(raw) = self.for_read(self.store.get_range_if_exists(&name, start..end))? else {
            return Ok(None);
        };
        if (raw.len() as u64) < seg_len {
            return Err(CacheError::Store(format!(
                "object {name} ends at {} bytes, the metadata has a block at {start}..{}",
                start + raw.len() as u64,
                start + seg_len
            )));
        }
        let segment = raw.slice(..seg_len as usize);
        if raw.len() as u64 > seg_len {
            self.packs.remember(l.obj_id, start, raw);
        }
        Ok(Some(segment))
    }
}
