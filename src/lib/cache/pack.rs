//! Packing: blocks shorter than a full block (small files, the tails of files) that are
//! uploaded close together in time are stored together, as segments of one object, so
//! that a tree of small files costs a few PUTs instead of one per file, and a restore a
//! few GETs (see `fetch`).
//!
//! Each segment is compressed and encrypted on its own and bound to its pack and offset
//! ([`names::segment`]): one block is fetched with a ranged GET, and a segment moved
//! within its pack, into another or out of it fails to decode. Full blocks stay objects
//! of their own: they are fetched whole anyway, and a pack of them would only delay them.
//!
//! A block handed to the packer waits, *parked*, until its pack is stored: parked blocks
//! do not count against the scheduler's cap on uploads in flight (else a pack could never
//! fill beyond that cap), but against a byte budget ([`BUDGET`]), which bounds the memory
//! of the open and the sealed packs.
//!
//! A pack is sealed when it reaches [`PACK_TARGET`] bytes, or once it has been open for
//! [`LINGER`] while something waits for the uploads (a sync, a flush, an unmount, cache
//! pressure) or blocks wait for the packer's budget, or for `CacheConfig::pack_linger`
//! (1 s) otherwise, whichever comes first. A long backup's small files become due one by
//! one, each the upload delay after it was written: sealed 100 ms after they were
//! opened, packs held a few files each (an untar of 8,000 small files that outlasted
//! the upload delay took 180 to 250 PUTs; lingering, about 65).
//!
//! A pack's `objects` row is made (refcount 0, `phys_size` -1) before its first segment
//! is encoded, so a crash at any point leaves an object fsck knows is unfinished; after
//! the PUT each block is recorded in the committer's batches (`Step::CommitPacked`), and
//! a pack none of whose blocks was recorded (all removed or found stored meanwhile) is
//! dropped and deleted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot};

use super::commit::{Failure, Outcome, Prepared, Step};
use super::{BlockCache, Entry, lock};
use crate::fs_store::names;
use crate::meta::blocks;
use crate::store::PutMode;

/// A pack is sealed once it holds this many stored bytes. 8 MiB: a whole-pack GET is
/// still one request of well under a second on a slow link (restic's packs are 4–16 MiB,
/// S3QL's objects up to 10 MiB), and a tree of ~8,000 small files is a handful of PUTs.
pub const PACK_TARGET: usize = 8 << 20;
/// Blocks of this many plaintext bytes or more (or full blocks) are objects of their own.
pub const MEMBER_MAX: u64 = 1 << 20;
/// A pack stays open at least this long, and no longer while something waits for the
/// uploads: a sync's burst of blocks fills it, and the sync waits at most this for it.
const LINGER: Duration = Duration::from_millis(100);
/// Bytes of blocks parked in open or sealed packs, at most: bounds the packer's memory
/// (3 packs' worth: one being filled on each of two cores, one being stored).
const BUDGET: usize = 3 * PACK_TARGET;

/// One block of an open pack, waiting for the pack to be stored.
struct Member {
    entry: Arc<Entry>,
    hash: Vec<u8>,
    len: u64,
    generation: u64,
    offset: u64,
    phys_len: u64,
    reply: oneshot::Sender<Result<Outcome, Failure>>,
}

/// A pack being filled.
struct OpenPack {
    obj_id: i64,
    body: Vec<u8>,
    members: Vec<Member>,
}

/// The packer's state: the open packs (one per CPU thread, so that encoding runs on
/// every core) and the budget.
pub(super) struct Packer {
    open: Vec<std::sync::Mutex<Option<OpenPack>>>,
    budget: Arc<Semaphore>,
}

impl Packer {
    pub(super) fn new(cpus: usize) -> Packer {
        Packer {
            open: (0..cpus.clamp(1, 4)).map(|_| std::sync::Mutex::new(None)).collect(),
            budget: Arc::new(Semaphore::new(BUDGET)),
        }
    }
}

/// Whether a block of `len` plaintext bytes is packed, in a filesystem of `block_size`.
pub(super) fn is_packed(len: u64, block_size: u64) -> bool {
    len < block_size && len < MEMBER_MAX
}

impl BlockCache {
    /// Store block `data` (`hash`, content generation `generation` of `e`) in a pack and
    /// wait until the pack is stored and the block recorded.
    pub(super) async fn upload_packed(
        self: &Arc<Self>,
        e: &Arc<Entry>,
        data: Vec<u8>,
        hash: Vec<u8>,
        generation: u64,
    ) -> Result<Outcome, Failure> {
        let weight = data.len().clamp(1, BUDGET) as u32;
        let _budget = self
            .packer
            .budget
            .clone()
            .acquire_many_owned(weight)
            .await
            .map_err(|_| Failure::permanent("the packer has stopped"))?;
        let (reply, answer) = oneshot::channel();
        self.park(true);
        let joined = {
            let _cpu = self.cpu.acquire().await;
            let (cache, e) = (self.clone(), e.clone());
            tokio::task::spawn_blocking(move || cache.join_pack(e, data, hash, generation, reply)).await
        };
        let outcome = match joined {
            Ok(Ok(())) => answer
                .await
                .unwrap_or_else(|_| Err(Failure::permanent("the pack of this block was abandoned"))),
            Ok(Err(failure)) => Err(failure),
            Err(join) => Err(Failure::from(join)),
        };
        self.park(false);
        outcome
    }

    /// Move an upload task out of (`true`) or back into the scheduler's count of
    /// uploads in flight.
    fn park(&self, parked: bool) {
        let mut st = lock(&self.state);
        if parked {
            st.in_flight -= 1;
            st.parked += 1;
        } else {
            st.parked -= 1;
            st.in_flight += 1;
        }
        drop(st);
        self.work_cv.notify_all();
    }

    /// Encode the block into an open pack (opening one if needed); seal the pack if it
    /// is full. Runs on a blocking thread.
    fn join_pack(
        self: &Arc<Self>,
        entry: Arc<Entry>,
        data: Vec<u8>,
        hash: Vec<u8>,
        generation: u64,
        reply: oneshot::Sender<Result<Outcome, Failure>>,
    ) -> Result<(), Failure> {
        // Any free pack, else wait for the first.
        let slots = &self.packer.open;
        let mut slot = slots
            .iter()
            .find_map(|s| s.try_lock().ok())
            .unwrap_or_else(|| lock(&slots[0]));
        if slot.is_none() {
            let obj_id = blocks::new_object(&lock(&self.db), 0)?;
            *slot = Some(OpenPack {
                obj_id,
                body: Vec::with_capacity(PACK_TARGET + PACK_TARGET / 8),
                members: Vec::new(),
            });
            let cache = self.clone();
            crate::runtime::runtime().spawn(async move {
                let opened = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(LINGER).await;
                    let short = cache.packer.budget.available_permits() < PACK_TARGET;
                    if short || opened.elapsed() >= cache.cfg.pack_linger || lock(&cache.state).uploads_awaited() {
                        break;
                    }
                }
                let _ = tokio::task::spawn_blocking(move || cache.seal_if_open(obj_id)).await;
            });
        }
        let pack = slot.as_mut().expect("just opened");
        let (offset, phys_len) = self.append_segment(&mut pack.body, pack.obj_id, &data);
        pack.members.push(Member {
            entry,
            hash,
            len: data.len() as u64,
            generation,
            offset,
            phys_len,
            reply,
        });
        if pack.body.len() >= PACK_TARGET {
            let full = slot.take().expect("open");
            drop(slot);
            self.seal(full);
        }
        Ok(())
    }

    /// Seal pack `obj_id` if it is still open (its linger time is over).
    fn seal_if_open(self: &Arc<Self>, obj_id: i64) {
        for s in &self.packer.open {
            let mut slot = lock(s);
            if slot.as_ref().is_some_and(|p| p.obj_id == obj_id) {
                let pack = slot.take().expect("checked");
                drop(slot);
                self.seal(pack);
                return;
            }
        }
    }

    fn seal(self: &Arc<Self>, pack: OpenPack) {
        let cache = self.clone();
        crate::runtime::runtime().spawn(async move { cache.store_pack(pack).await });
    }

    /// PUT a sealed pack, record its blocks, and answer each member.
    async fn store_pack(self: Arc<Self>, pack: OpenPack) {
        let OpenPack { obj_id, body, members } = pack;
        let pack_size = body.len() as u64;
        if let Err(e) = self.put_pack(obj_id, body).await {
            let failure = Failure::from(e);
            for m in members {
                let _ = m.reply.send(Err(Failure {
                    message: failure.message.clone(),
                    permanent: failure.permanent,
                }));
            }
            return;
        }
        self.counters.uploads.fetch_add(1, Ordering::Relaxed);
        self.counters.uploaded_bytes.fetch_add(pack_size, Ordering::Relaxed);
        // The members' steps, queued together, share the committer's batches.
        let answers: Vec<_> = members
            .iter()
            .map(|m| {
                self.committer.submit(
                    m.entry.clone(),
                    m.hash.clone(),
                    m.len,
                    m.generation,
                    Step::CommitPacked {
                        obj_id,
                        offset: m.offset,
                        phys_len: m.phys_len,
                        pack_size,
                    },
                )
            })
            .collect();
        for (m, answer) in members.into_iter().zip(answers) {
            let r = match answer {
                Ok(answer) => answer.await,
                Err(failure) => Err(failure),
            };
            let outcome = r.and_then(|done| {
                if done.dedup {
                    self.counters.dedup_hits.fetch_add(1, Ordering::Relaxed);
                }
                match done.prepared {
                    Prepared::Done(outcome) => Ok(outcome),
                    _ => Err(Failure::permanent("internal error: a pack commit asked for an upload")),
                }
            });
            let _ = m.reply.send(outcome);
        }
        // No block recorded (all removed or stored meanwhile): nothing needs the pack.
        self.abandon_pack(obj_id).await;
    }

    /// Encode `plaintext` as the next segment of pack `obj_id`, bound to its place, at
    /// the end of `body`; returns the segment's offset and stored length.
    pub(super) fn append_segment(&self, body: &mut Vec<u8>, obj_id: i64, plaintext: &[u8]) -> (u64, u64) {
        let offset = body.len() as u64;
        let segment = self
            .store
            .codec()
            .encode(&names::segment(obj_id as u64, offset), plaintext);
        body.extend_from_slice(&segment);
        (offset, segment.len() as u64)
    }

    /// PUT pack `obj_id` (one connection); if that fails, drop its row and delete it
    /// (a failed PUT may have stored it all the same).
    pub(super) async fn put_pack(&self, obj_id: i64, body: Vec<u8>) -> Result<(), crate::store::StoreError> {
        let put = {
            let _conn = self.connections.acquire().await;
            self.store
                .store()
                .put(&names::data(obj_id as u64), Bytes::from(body), PutMode::Overwrite)
                .await
        };
        if put.is_err() {
            self.abandon_pack(obj_id).await;
        }
        put
    }

    /// Drop pack `obj_id`'s row and delete it from the store if no block is in it (a
    /// failed PUT may still have stored it).
    async fn abandon_pack(&self, obj_id: i64) {
        let db = self.db.clone();
        let dropped = tokio::task::spawn_blocking(move || {
            let conn = lock(&db);
            blocks::drop_object(&conn, obj_id)
        })
        .await;
        if matches!(dropped, Ok(Ok(true))) {
            self.queue_deletions(vec![names::data(obj_id as u64)]);
        }
    }
}
