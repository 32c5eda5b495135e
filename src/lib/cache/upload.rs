//! The background side of the cache: the scheduler thread, the upload pipeline (one
//! tokio task per dirty block), the batched DB sync before files are renamed clean, and
//! the deletion of unreferenced objects.
//!
//! Pipeline per block: read the file (under the entry's lock) → SHA-256 (CPU pool) →
//! in the committer's next batch ([`super::commit`]): dedup hit → point `inode_blocks`
//! at the existing block; miss → insert an `objects` row (`phys_size = -1`) →
//! compress and encrypt (CPU pool) → PUT (connection pool) → in a batch again: insert
//! the `blocks` row (or use a block with the same hash that appeared meanwhile and drop
//! ours), point `inode_blocks` at it → one fdatasync of the WAL per batch of finished
//! uploads → rename `.dirty` to clean if no write happened. A short block is handed to
//! the packer ([`super::pack`]) after its dedup lookup instead, and stored as a segment
//! of a pack.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::commit::{Failure, Outcome, Prepared, Step};
use super::{BlockCache, CacheError, Entry, Key, POLL, files, lock};
use crate::codec::Framed;
use crate::fs_store::names;
use crate::meta::blocks;
use crate::store::{PutMode, StoreError};

/// Upload tasks in flight at most beyond the CPU threads, whatever the connections: each
/// holds its block, made into its object where it lies unless it compresses (then a
/// second buffer, at most as large: see `Codec::encode_framed`), and 16
/// PUTs in flight keep a link of several hundred MiB/s busy at 20 ms of latency.
const MAX_UPLOADS: usize = 16;
/// And at most this many bytes of full blocks: with 4 MiB blocks, 8 uploads wrote as
/// fast as 16 at 20 ms RTT (155 MiB/s) with a peak RSS of 111 MiB instead of 160.
const MAX_UPLOAD_BYTES: u64 = 32 << 20;
/// Objects per `delete_many` call.
const DELETE_BATCH: usize = 1000;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often clean files made since are made durable (see `files::write_synced_mark`):
/// what a power loss can cost is refetching this much of reads and uploads.
const SYNC_EVERY: Duration = Duration::from_secs(30);

// The failures of the upload's own work: the block file, the worker tasks, the PUT.

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::permanent(format!("cache file: {e}"))
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Self {
        Failure::permanent(format!("upload worker: {e}"))
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let permanent = !e.is_temporary() && !matches!(e, StoreError::Unreachable(_));
        Failure {
            message: e.to_string(),
            permanent,
        }
    }
}

pub(super) fn start_scheduler(cache: &Arc<BlockCache>) -> std::io::Result<()> {
    let weak = Arc::downgrade(cache);
    std::thread::Builder::new()
        .name("s3fs-cache".into())
        .spawn(move || scheduler(weak))?;
    Ok(())
}

/// Holds only a weak reference between rounds, so dropping the last [`BlockCache`]
/// handle (as a crash would) stops it.
fn scheduler(weak: Weak<BlockCache>) {
    loop {
        let Some(cache) = weak.upgrade() else { return };
        if !cache.schedule_round() {
            let mut st = lock(&cache.state);
            st.scheduler_exited = true;
            drop(st);
            cache.space_cv.notify_all();
            return;
        }
    }
}

fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

impl BlockCache {
    /// Start the uploads and the deletion that are due, then sleep until more may be.
    /// Returns `false` on shutdown.
    fn schedule_round(self: &Arc<Self>) -> bool {
        let mut st = lock(&self.state);
        if st.shutdown {
            return false;
        }
        let now = Instant::now();
        if st.dirty.is_empty() {
            st.hurry = false;
        }
        let urgent = st.uploads_awaited();
        let mut wake = now + POLL * 4;
        let by_bytes = super::config::blocks_within(MAX_UPLOAD_BYTES, self.cfg.block_size);
        let cap = (self.cfg.max_connections.min(MAX_UPLOADS).min(by_bytes) + self.cfg.max_threads).max(1);
        let room = cap.saturating_sub(st.in_flight);
        let mut due: Vec<Key> = Vec::new();
        // Oldest write first; entries uploading or backing off are skipped, and the scan
        // stops at the first entry not yet due (all later ones were written later).
        for &(last_write, key) in &st.dirty {
            if due.len() >= room {
                break;
            }
            let s = &st.slots[&key];
            // A block being released waits for that transaction's outcome.
            if s.in_flight || s.entry.releasing.load(Ordering::Acquire) {
                continue;
            }
            if let Some(at) = s.retry_at
                && at > now
            {
                wake = wake.min(at);
                continue;
            }
            let at = last_write + self.cfg.dirty_upload_delay;
            if urgent || s.eager || at <= now {
                due.push(key);
            } else {
                wake = wake.min(at);
                break;
            }
        }
        for key in due {
            let s = st.slots.get_mut(&key).expect("dirty key is indexed");
            s.in_flight = true;
            let entry = s.entry.clone();
            st.in_flight += 1;
            let cache = self.clone();
            crate::runtime::runtime().spawn(async move { cache.upload_task(entry).await });
        }
        if !st.deleting && !st.deletions.is_empty() {
            match st.delete_retry_at {
                Some(at) if at > now => wake = wake.min(at),
                _ => {
                    let n = st.deletions.len().min(DELETE_BATCH);
                    let batch: Vec<String> = st.deletions.drain(..n).collect();
                    st.deleting = true;
                    let cache = self.clone();
                    crate::runtime::runtime().spawn(async move { cache.delete_task(batch).await });
                }
            }
        }
        self.sync_marks_if_due();
        let timeout = wake
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let _unused = self.work_cv.wait_timeout(st, timeout);
        true
    }

    /// Every [`SYNC_EVERY`], if clean files were made meanwhile, write a synced mark on a
    /// thread of its own (a syncfs may take a while under load).
    fn sync_marks_if_due(self: &Arc<Self>) {
        {
            let mut at = lock(&self.synced_at);
            if at.elapsed() < SYNC_EVERY || self.syncing.load(Ordering::Acquire) {
                return;
            }
            *at = Instant::now();
        }
        if !self.unsynced.swap(false, Ordering::AcqRel) {
            return;
        }
        self.syncing.store(true, Ordering::Release);
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("s3fs-sync".into()).spawn(move || {
            let Some(cache) = weak.upgrade() else { return };
            if let Err(e) = super::files::write_synced_mark(&cache.cfg.dir, false) {
                log::warn!("cache: cannot sync the cache directory (will retry): {e}");
                cache.unsynced.store(true, Ordering::Release);
            }
            cache.syncing.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.syncing.store(false, Ordering::Release);
            self.unsynced.store(true, Ordering::Release);
        }
    }

    async fn delete_task(self: Arc<Self>, batch: Vec<String>) {
        let r = {
            let _permit = self.connections.acquire().await;
            self.store.store().delete_many(&batch).await
        };
        let mut st = lock(&self.state);
        st.deleting = false;
        match r {
            Ok(()) => st.delete_retry_at = None,
            Err(e) => {
                log::warn!("cannot delete {} unreferenced objects (will retry): {e}", batch.len());
                if !e.is_temporary() {
                    st.permanent_errors += 1;
                    st.last_error = Some(e.to_string());
                }
                st.delete_retry_at = Some(Instant::now() + Duration::from_secs(1));
                let rest = std::mem::take(&mut st.deletions);
                st.deletions = batch;
                st.deletions.extend(rest);
            }
        }
        drop(st);
        self.work_cv.notify_all();
        self.space_cv.notify_all();
    }

    pub(super) fn queue_deletions(&self, names: Vec<String>) {
        if !names.is_empty() {
            lock(&self.state).deletions.extend(names);
            self.work_cv.notify_all();
        }
    }

    async fn upload_task(self: Arc<Self>, e: Arc<Entry>) {
        match self.upload(&e).await {
            Ok(Outcome::Committed(generation, deleted)) => {
                self.queue_deletions(deleted);
                let cache = self.clone();
                let e2 = e.clone();
                if let Err(err) = tokio::task::spawn_blocking(move || cache.finish(e2, generation)).await {
                    self.end_task(&e, Some(Failure::from(err)));
                }
            }
            Ok(Outcome::Skipped(deleted)) => {
                self.queue_deletions(deleted);
                self.end_task(&e, None);
            }
            Ok(Outcome::Orphan(deleted)) => {
                self.queue_deletions(deleted);
                let cache = self.clone();
                let e2 = e.clone();
                let _ = tokio::task::spawn_blocking(move || cache.discard(&e2)).await;
                self.end_task(&e, None);
            }
            Err(failure) => {
                log::warn!(
                    "upload of block {} of inode {} failed (will retry): {}",
                    e.key.1,
                    e.key.0,
                    failure.message
                );
                self.end_task(&e, Some(failure));
            }
        }
    }

    async fn upload(self: &Arc<Self>, e: &Arc<Entry>) -> Result<Outcome, Failure> {
        let (cache, e2) = (self.clone(), e.clone());
        let snapshot = tokio::task::spawn_blocking(move || cache.snapshot(&e2)).await??;
        let Some((data, generation)) = snapshot else {
            return Ok(Outcome::Skipped(Vec::new()));
        };
        let (data, hash) = {
            let _cpu = self.cpu.acquire().await;
            tokio::task::spawn_blocking(move || {
                let hash = Sha256::digest(data.plaintext()).to_vec();
                (data, hash)
            })
            .await?
        };
        let len = data.plaintext().len() as u64;
        let packed = super::pack::is_packed(len, self.cfg.block_size);
        let prepared = self
            .db_step(e, hash.clone(), len, generation, Step::Prepare { packed })
            .await?;
        let obj_id = match prepared {
            Prepared::Done(outcome) => return Ok(outcome),
            Prepared::Pack => return self.upload_packed(e, data.into_plaintext(), hash, generation).await,
            Prepared::Upload(id) => id,
        };
        let name = names::data(obj_id as u64);
        let put = async {
            let body = {
                let _cpu = self.cpu.acquire().await;
                let codec = self.store.codec().clone();
                let name = name.clone();
                tokio::task::spawn_blocking(move || codec.encode_framed(&name, data)).await?
            };
            let phys = body.len() as u64;
            let _conn = self.connections.acquire().await;
            self.store.store().put(&name, body, PutMode::Overwrite).await?;
            Ok::<u64, Failure>(phys)
        };
        let phys = match put.await {
            Ok(phys) => phys,
            Err(failure) => {
                // The PUT may have reached the store (lost reply): delete it too.
                let cache = self.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let conn = lock(&cache.db);
                    blocks::drop_object(&conn, obj_id)
                })
                .await;
                self.queue_deletions(vec![name]);
                return Err(failure);
            }
        };
        self.counters.uploads.fetch_add(1, Ordering::Relaxed);
        self.counters.uploaded_bytes.fetch_add(phys, Ordering::Relaxed);
        match self
            .db_step(e, hash, len, generation, Step::Commit { obj_id, phys })
            .await?
        {
            Prepared::Done(outcome) => Ok(outcome),
            Prepared::Upload(_) | Prepared::Pack => {
                Err(Failure::permanent("internal error: a commit step asked for an upload"))
            }
        }
    }

    /// Run one DB step of this upload in the committer's next batch.
    async fn db_step(
        &self,
        e: &Arc<Entry>,
        hash: Vec<u8>,
        len: u64,
        generation: u64,
        step: Step,
    ) -> Result<Prepared, Failure> {
        let done = self.committer.run(e.clone(), hash, len, generation, step).await?;
        if done.dedup {
            self.counters.dedup_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(done.prepared)
    }

    /// The content and generation of a dirty entry, or `None` if there is nothing to do.
    fn snapshot(&self, e: &Entry) -> Result<Option<(Framed, u64)>, Failure> {
        let mut f = lock(&e.file);
        if e.removed.load(Ordering::Acquire) || e.releasing.load(Ordering::Acquire) || !f.present || !f.dirty {
            return Ok(None);
        }
        let len = f.size as usize;
        let generation = e.generation.load(Ordering::Acquire);
        let fd = self.fd(e.key, &mut f)?;
        // Read where the object will be made: see `Codec::encode_framed`.
        let framed = Framed::fill(len, |buf| files::append_read_at(fd, buf, len, 0))?;
        Ok(Some((framed, generation)))
    }

    /// A committed upload: queue it for the batched DB sync; the first thread to arrive
    /// syncs and renames for everyone queued meanwhile.
    fn finish(&self, e: Arc<Entry>, generation: u64) {
        {
            let mut f = lock(&self.finishing);
            f.pending.push((e, generation));
            if f.syncing {
                return;
            }
            f.syncing = true;
        }
        loop {
            let batch = {
                let mut f = lock(&self.finishing);
                if f.pending.is_empty() {
                    f.syncing = false;
                    return;
                }
                std::mem::take(&mut f.pending)
            };
            match files::sync_db(&self.db_path) {
                Ok(()) => {
                    for (e, generation) in batch {
                        let r = self.mark_clean(&e, generation);
                        self.end_task(&e, r.err().map(Failure::from));
                    }
                }
                Err(err) => {
                    for (e, _) in batch {
                        self.end_task(
                            &e,
                            Some(Failure::permanent(format!("syncing the metadata database: {err}"))),
                        );
                    }
                }
            }
        }
    }

    /// Rename the entry's file to clean if nothing was written since generation
    /// `generation` was read.
    fn mark_clean(&self, e: &Arc<Entry>, generation: u64) -> std::io::Result<()> {
        let mut f = lock(&e.file);
        if e.removed.load(Ordering::Acquire)
            || !f.present
            || !f.dirty
            || e.generation.load(Ordering::Acquire) != generation
        {
            return Ok(());
        }
        std::fs::rename(self.path(e.key, true), self.path(e.key, false))?;
        self.unsynced.store(true, Ordering::Release);
        f.dirty = false;
        self.mirror(e, &f, false);
        Ok(())
    }

    /// Drop an entry whose inode no longer exists.
    fn discard(&self, e: &Arc<Entry>) {
        let mut f = lock(&e.file);
        if e.removed.load(Ordering::Acquire) {
            return;
        }
        log::warn!(
            "cache: dropping block {} of inode {}, which no longer exists",
            e.key.1,
            e.key.0
        );
        f.fd = None;
        if f.present {
            let _ = files::remove_if_exists(&self.path(e.key, f.dirty));
        }
        f.present = false;
        self.settle(e, &mut f, false);
    }

    /// The end of an upload task, successful or not.
    fn end_task(&self, e: &Arc<Entry>, failure: Option<Failure>) {
        let mut st = lock(&self.state);
        st.in_flight -= 1;
        let permanent = failure.as_ref().is_some_and(|f| f.permanent);
        if let Some(s) = st.slots.get_mut(&e.key)
            && Arc::ptr_eq(&s.entry, e)
        {
            s.in_flight = false;
            match &failure {
                Some(_) => {
                    s.failures += 1;
                    s.retry_at = Some(Instant::now() + backoff(s.failures));
                }
                None => {
                    s.failures = 0;
                    s.retry_at = None;
                }
            }
        }
        if let Some(f) = failure
            && permanent
        {
            st.permanent_errors += 1;
            st.last_error = Some(f.message);
        }
        drop(st);
        self.work_cv.notify_all();
        self.space_cv.notify_all();
    }
}

impl From<Failure> for CacheError {
    fn from(f: Failure) -> Self {
        CacheError::Store(f.message)
    }
}
