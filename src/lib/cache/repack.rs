//! Repacking: a pack at least half of whose bytes belong to no block any more has its
//! live blocks copied into a new pack, and is then released like any object nothing
//! references (deleted once no retained metadata version names it).
//!
//! A pack's space comes back on its own when its last block is released; repacking is
//! for the packs that keep a few live blocks among much garbage. It is rated: one round
//! reads at most [`ROUND_BYTES`] of packs, and the mount runs a round only before it
//! publishes a metadata version (see `mount::run`).
//!
//! Crash safety, step by step:
//! 1. the new pack's `objects` row is made (refcount 0, `phys_size` -1) before its PUT:
//!    a crash until step 2 leaves an unfinished object, which fsck deletes;
//! 2. one transaction moves every block still where it was read (id unchanged, so
//!    `inode_blocks` and the cache are untouched) and moves the old packs left empty to
//!    `released_objects`;
//! 3. they are deleted from the store like every released object: only once no
//!    retained metadata version names them (`meta::versions::retention`), so every
//!    version in the store, the newest included, finds every block.

use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use super::pack::PACK_TARGET;
use super::{BlockCache, CacheError, lock};
use crate::fs_store::names;
use crate::meta::blocks;

/// A pack is repacked once at least this share of its stored bytes is garbage.
pub const REPACK_GARBAGE: f64 = 0.5;
/// Bytes of old packs one round reads, at most.
pub const ROUND_BYTES: i64 = 64 << 20;
/// Packs one round looks at, at most.
const ROUND_PACKS: usize = 64;

/// What a repack round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repacked {
    /// Old packs emptied: released, deleted once no retained metadata version names them.
    pub retired: Vec<String>,
    /// Blocks moved into new packs.
    pub moved_blocks: u64,
    /// Stored bytes of the old packs emptied.
    pub freed_bytes: u64,
}

/// A live block read from an old pack, to be written into a new one.
struct Live {
    block_id: i64,
    from: (i64, i64),
    plaintext: Vec<u8>,
}

impl BlockCache {
    /// One repack round (see the module documentation). Runs on the calling thread
    /// (which must not be a runtime worker); the filesystem goes on meanwhile.
    pub fn repack(&self) -> Result<Repacked, CacheError> {
        let candidates = blocks::packs_to_repack(&lock(&self.db), REPACK_GARBAGE, ROUND_PACKS)?;
        let mut out = Repacked::default();
        let mut budget = ROUND_BYTES;
        let mut batch: Vec<Live> = Vec::new();
        let mut batch_bytes = 0usize;
        let sizes: std::collections::HashMap<i64, i64> = candidates.iter().map(|p| (p.obj_id, p.phys_size)).collect();
        for pack in candidates {
            if pack.phys_size > budget {
                break;
            }
            budget -= pack.phys_size;
            let live = self.read_live_blocks(pack.obj_id, pack.phys_size)?;
            for l in live {
                batch_bytes += l.plaintext.len();
                batch.push(l);
            }
            if batch_bytes >= PACK_TARGET {
                self.write_new_pack(std::mem::take(&mut batch), &sizes, &mut out)?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.write_new_pack(batch, &sizes, &mut out)?;
        }
        if out.moved_blocks > 0 {
            log::info!(
                "repacked {} blocks; {} packs ({} bytes) released, deleted once no retained metadata version needs them",
                out.moved_blocks,
                out.retired.len(),
                out.freed_bytes
            );
        }
        self.counters
            .repacked_blocks
            .fetch_add(out.moved_blocks, Ordering::Relaxed);
        self.counters
            .repack_freed_bytes
            .fetch_add(out.freed_bytes, Ordering::Relaxed);
        Ok(out)
    }

    /// Whether some pack is worth repacking (a scan of the packed blocks).
    pub fn repack_due(&self) -> Result<bool, CacheError> {
        Ok(!blocks::packs_to_repack(&lock(&self.db), REPACK_GARBAGE, 1)?.is_empty())
    }

    /// The live blocks of pack `obj_id`, decoded and checked against their hashes. A
    /// pack that is missing or has a damaged block is left as it is (fsck and
    /// s3fs_verify report it): repacking must never turn damage into a silent loss.
    fn read_live_blocks(&self, obj_id: i64, phys_size: i64) -> Result<Vec<Live>, CacheError> {
        let segments = blocks::segments_of(&lock(&self.db), obj_id)?;
        let name = names::data(obj_id as u64);
        let Some(raw) = self.for_read(self.store.get_range_if_exists(&name, 0..phys_size as u64))? else {
            log::warn!("repack: pack {name} is missing from the store; left alone");
            return Ok(Vec::new());
        };
        let mut live = Vec::with_capacity(segments.len());
        for s in segments {
            let range = usize::try_from(s.offset)
                .ok()
                .zip(usize::try_from(s.phys_len).ok())
                .and_then(|(o, l)| Some(o..o.checked_add(l)?))
                .filter(|r| r.end <= raw.len());
            let decoded = range.ok_or_else(|| "outside the pack".to_owned()).and_then(|r| {
                self.store
                    .codec()
                    .decode_at_most(
                        &names::segment(obj_id as u64, s.offset as u64),
                        &raw[r],
                        s.size.max(0) as u64,
                    )
                    .map_err(|e| e.to_string())
            });
            match decoded {
                Ok(p) if Sha256::digest(&p).as_slice() == s.hash.as_slice() => live.push(Live {
                    block_id: s.block_id,
                    from: (obj_id, s.offset),
                    plaintext: p,
                }),
                Ok(_) => {
                    log::warn!("repack: a block of {name} does not match its hash; pack left alone");
                    return Ok(Vec::new());
                }
                Err(e) => {
                    log::warn!("repack: the block at {} of {name}: {e}; pack left alone", s.offset);
                    return Ok(Vec::new());
                }
            }
        }
        Ok(live)
    }

    /// Store `batch` as a new pack and move its blocks there.
    fn write_new_pack(
        &self,
        batch: Vec<Live>,
        sizes: &std::collections::HashMap<i64, i64>,
        out: &mut Repacked,
    ) -> Result<(), CacheError> {
        let obj_id = blocks::new_object(&lock(&self.db), 0)?;
        let name = names::data(obj_id as u64);
        let mut body = Vec::with_capacity(PACK_TARGET + PACK_TARGET / 8);
        let mut moves = Vec::with_capacity(batch.len());
        for l in batch {
            let (offset, phys_len) = self.append_segment(&mut body, obj_id, &l.plaintext);
            moves.push((l.block_id, l.from, (obj_id, offset as i64, phys_len as i64)));
        }
        let pack_size = body.len() as i64;
        crate::runtime::block_on(self.put_pack(obj_id, body)).map_err(|e| CacheError::Store(e.to_string()))?;
        let mut emptied = Vec::new();
        let moved = {
            let mut conn = lock(&self.db);
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut moved = 0u64;
            for (block_id, from, to) in &moves {
                if blocks::move_segment(&tx, *block_id, *from, *to, pack_size, &mut emptied)? {
                    moved += 1;
                }
            }
            if moved == 0 {
                blocks::drop_object(&tx, obj_id)?;
            }
            tx.commit()?;
            moved
        };
        if moved == 0 {
            self.queue_deletions(vec![name]);
        }
        out.moved_blocks += moved;
        out.retired.extend(emptied.iter().map(|&id| names::data(id as u64)));
        out.freed_bytes += emptied
            .iter()
            .map(|id| sizes.get(id).copied().unwrap_or(0).max(0) as u64)
            .sum::<u64>();
        Ok(())
    }
}
