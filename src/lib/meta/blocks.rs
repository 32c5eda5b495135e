//! Rows of `inode_blocks` (which block holds each block of a file), `blocks` (one per
//! distinct content, by hash) and `objects` (what is stored in the store).
//!
//! Invariants kept (see [`super::schema`]): `blocks.refcount` = number of `inode_blocks`
//! rows pointing at the block, `objects.refcount` = number of `blocks` rows stored in
//! the object. An `objects` row whose upload has not finished has `phys_size = -1` and
//! `refcount = 0` (no block points at it yet). Every reference is taken and dropped
//! here: this is the single place where file data is dereferenced. The block cache
//! wraps the releases (dropping its cached copies of released blocks) rather than
//! repeating them.

use rusqlite::{Connection, OptionalExtension, params};

/// What a release freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// Blocks whose refcount reached 0: their rows are deleted.
    pub blocks: Vec<i64>,
    /// Objects whose refcount reached 0: moved to `released_objects` (see
    /// [`release_object`]); the store keeps them while retained versions may name them.
    pub objects: Vec<i64>,
}

/// Release the data blocks `from_blockno..` of `inode`: delete their `inode_blocks`
/// rows, decrement `blocks.refcount` by the number of rows that pointed at each block,
/// delete the blocks reaching 0 and decrement `objects.refcount` for each, deleting the
/// objects reaching 0. Returns the ids of the deleted blocks and objects.
pub fn release_blocks(tx: &Connection, inode: i64, from_blockno: i64) -> rusqlite::Result<Released> {
    release_block_range(tx, inode, from_blockno, i64::MAX)
}

/// [`release_blocks`] for the blocks `from_blockno..=to_blockno` only.
pub fn release_block_range(
    tx: &Connection,
    inode: i64,
    from_blockno: i64,
    to_blockno: i64,
) -> rusqlite::Result<Released> {
    let mut released = Released::default();
    let uses: Vec<(i64, i64)> = {
        let mut st = tx.prepare_cached(
            "SELECT block_id, count(*) FROM inode_blocks WHERE inode = ?1 AND blockno BETWEEN ?2 AND ?3
             GROUP BY block_id",
        )?;
        st.query_map(params![inode, from_blockno, to_blockno], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    if uses.is_empty() {
        return Ok(released);
    }
    tx.prepare_cached("DELETE FROM inode_blocks WHERE inode = ?1 AND blockno BETWEEN ?2 AND ?3")?
        .execute(params![inode, from_blockno, to_blockno])?;
    for (block, n) in uses {
        drop_block_uses(tx, block, n, &mut released)?;
    }
    Ok(released)
}

/// Drop `n` references to `block_id`; at 0 delete it and drop one reference to its
/// object; at 0 delete the object row too. What was deleted is added to `released`.
fn drop_block_uses(c: &Connection, block_id: i64, n: i64, released: &mut Released) -> rusqlite::Result<()> {
    let Some((left, obj)): Option<(i64, i64)> = c
        .prepare_cached("UPDATE blocks SET refcount = refcount - ?2 WHERE id = ?1 RETURNING refcount, obj_id")?
        .query_row(params![block_id, n], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
    else {
        return Ok(());
    };
    if left > 0 {
        return Ok(());
    }
    c.prepare_cached("DELETE FROM blocks WHERE id = ?1")?
        .execute([block_id])?;
    released.blocks.push(block_id);
    let obj_left: Option<i64> = c
        .prepare_cached("UPDATE objects SET refcount = refcount - 1 WHERE id = ?1 RETURNING refcount")?
        .query_row([obj], |r| r.get(0))
        .optional()?;
    if obj_left.is_some_and(|n| n <= 0) {
        release_object(c, obj)?;
        released.objects.push(obj);
    }
    Ok(())
}

/// Move object `obj`, which no block is stored in any more, from `objects` to
/// `released_objects`: older metadata versions may still name it, so it is deleted from
/// the store only by [`delete_collected`]'s caller once none of them is retained.
fn release_object(c: &Connection, obj: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO released_objects (id, phys_size, released_at, after_seq)
         SELECT id, phys_size, ?2, NULL FROM objects WHERE id = ?1",
    )?
    .execute(params![obj, crate::params::unix_now()])?;
    c.prepare_cached("DELETE FROM objects WHERE id = ?1")?.execute([obj])?;
    Ok(())
}

/// Before metadata version `published + 1` is snapshotted: the objects released since
/// the last publish are named by no version after `published`.
pub fn stamp_released(c: &Connection, published: u64) -> rusqlite::Result<usize> {
    c.prepare_cached("UPDATE released_objects SET after_seq = ?1 WHERE after_seq IS NULL")?
        .execute([published as i64])
}

/// Released objects no retained version can name (every retained seq is above their
/// `after_seq`) and released at or before `released_by` (Unix seconds): safe to delete
/// from the store. At most `limit`.
pub fn collectable(c: &Connection, oldest_retained: u64, released_by: i64, limit: usize) -> rusqlite::Result<Vec<i64>> {
    c.prepare_cached(
        "SELECT id FROM released_objects
         WHERE after_seq IS NOT NULL AND after_seq < ?1 AND released_at <= ?2
         ORDER BY id LIMIT ?3",
    )?
    .query_map(params![oldest_retained as i64, released_by, limit as i64], |r| r.get(0))?
    .collect()
}

/// Forget released objects that were deleted from the store.
pub fn delete_collected(c: &Connection, ids: &[i64]) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached("DELETE FROM released_objects WHERE id = ?1")?;
    for id in ids {
        st.execute([id])?;
    }
    Ok(())
}

/// Objects held in the store only for older metadata versions, and their stored bytes.
pub fn released_totals(c: &Connection) -> rusqlite::Result<(u64, u64)> {
    c.prepare_cached("SELECT count(*), coalesce(sum(max(phys_size, 0)), 0) FROM released_objects")?
        .query_row([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))
}

/// Record object `id` (`phys_size` bytes), unknown to the metadata but named by retained
/// version `after_seq`, as released (fsck, after a restore of an older version), so that
/// it is deleted once that version expires.
pub fn defer_unknown_object(c: &Connection, id: i64, phys_size: i64, after_seq: u64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO released_objects (id, phys_size, released_at, after_seq) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET after_seq = max(coalesce(after_seq, 0), excluded.after_seq)",
    )?
    .execute(params![id, phys_size, crate::params::unix_now(), after_seq as i64])?;
    Ok(())
}

/// New objects get ids above `id` (fsck, with the highest id in the store): a restored
/// older version's counter would hand out ids that later versions' objects, kept for
/// them, still have, and an upload would overwrite one.
pub fn reserve_object_ids(c: &Connection, id: i64) -> rusqlite::Result<()> {
    let updated = c
        .prepare_cached("UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'objects'")?
        .execute([id])?;
    if updated == 0 {
        c.prepare_cached("INSERT INTO sqlite_sequence (name, seq) VALUES ('objects', ?1)")?
            .execute([id])?;
    }
    Ok(())
}

/// Released objects that are live again (fsck: a row in both tables after a repair).
pub fn forget_live_released(c: &Connection) -> rusqlite::Result<usize> {
    c.prepare_cached("DELETE FROM released_objects WHERE id IN (SELECT id FROM objects)")?
        .execute([])
}

/// The block stored for `(inode, blockno)`, if any.
pub fn block_of(c: &Connection, inode: i64, blockno: i64) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT block_id FROM inode_blocks WHERE inode = ?1 AND blockno = ?2")?
        .query_row(params![inode, blockno], |r| r.get(0))
        .optional()
}

/// Point `(inode, blockno)` at `block_id` and release the block it pointed at before.
/// Returns what that release freed (object rows deleted: delete them from the store).
pub fn link_block(c: &Connection, inode: i64, blockno: i64, block_id: i64) -> rusqlite::Result<Released> {
    let old = block_of(c, inode, blockno)?;
    let mut released = Released::default();
    if old == Some(block_id) {
        return Ok(released);
    }
    c.prepare_cached(
        "INSERT INTO inode_blocks (inode, blockno, block_id) VALUES (?1, ?2, ?3)
         ON CONFLICT (inode, blockno) DO UPDATE SET block_id = excluded.block_id",
    )?
    .execute(params![inode, blockno, block_id])?;
    c.prepare_cached("UPDATE blocks SET refcount = refcount + 1 WHERE id = ?1")?
        .execute([block_id])?;
    if let Some(old) = old {
        drop_block_uses(c, old, 1, &mut released)?;
    }
    Ok(released)
}

/// Make every block of `from` a block of `to` too (which has none): the blocks are
/// shared, their refcounts go up, no data moves.
pub fn share_all_blocks(c: &Connection, from: i64, to: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE blocks SET refcount = refcount
             + (SELECT count(*) FROM inode_blocks WHERE inode = ?1 AND block_id = blocks.id)
         WHERE id IN (SELECT block_id FROM inode_blocks WHERE inode = ?1)",
    )?
    .execute([from])?;
    c.prepare_cached(
        "INSERT INTO inode_blocks (inode, blockno, block_id) SELECT ?2, blockno, block_id FROM inode_blocks WHERE inode = ?1",
    )?
    .execute(params![from, to])?;
    Ok(())
}

/// Where the bytes of one block are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub obj_id: i64,
    /// Byte offset of the block's segment in its pack; 0 for a block that is a whole
    /// object.
    pub obj_offset: i64,
    /// Plaintext bytes.
    pub size: i64,
    /// Stored bytes of the block's segment in its pack; 0 for a block that is a whole
    /// object (see [`super::schema`]).
    pub phys_len: i64,
}

impl Location {
    /// Whether the block is a segment of a pack (fetched with a ranged GET).
    pub fn is_packed(&self) -> bool {
        self.phys_len > 0
    }
}

pub fn block_location(c: &Connection, inode: u64, blockno: u64) -> rusqlite::Result<Option<Location>> {
    c.prepare_cached(
        "SELECT b.obj_id, b.obj_offset, b.size, b.phys_len FROM inode_blocks ib JOIN blocks b ON b.id = ib.block_id
         WHERE ib.inode = ?1 AND ib.blockno = ?2",
    )?
    .query_row(params![inode as i64, blockno as i64], |r| {
        Ok(Location {
            obj_id: r.get(0)?,
            obj_offset: r.get(1)?,
            size: r.get(2)?,
            phys_len: r.get(3)?,
        })
    })
    .optional()
}

/// The end of the last live segment of pack `obj_id` (0 if it has none): how far a
/// read of one of its blocks may usefully fetch its neighbours.
pub fn pack_live_end(c: &Connection, obj_id: i64) -> rusqlite::Result<i64> {
    c.prepare_cached("SELECT coalesce(max(obj_offset + phys_len), 0) FROM blocks WHERE obj_id = ?1")?
        .query_row([obj_id], |r| r.get(0))
}

/// The size recorded for `(inode, blockno)`, if the block is stored.
pub fn stored_size(c: &Connection, inode: u64, blockno: u64) -> rusqlite::Result<Option<i64>> {
    Ok(block_location(c, inode, blockno)?.map(|l| l.size))
}

pub fn find_block(c: &Connection, hash: &[u8]) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT id FROM blocks WHERE hash = ?1")?
        .query_row([hash], |r| r.get(0))
        .optional()
}

/// Insert the row of an object about to be uploaded (a pack's `length` grows as its
/// blocks are recorded); returns its id.
pub fn new_object(c: &Connection, length: u64) -> rusqlite::Result<i64> {
    c.prepare_cached("INSERT INTO objects (refcount, phys_size, length) VALUES (0, -1, ?1)")?
        .execute([length as i64])?;
    Ok(c.last_insert_rowid())
}

/// Delete the row of an object no block points at (an abandoned or redundant upload);
/// whether there was one to delete.
pub fn drop_object(c: &Connection, obj_id: i64) -> rusqlite::Result<bool> {
    Ok(c.prepare_cached("DELETE FROM objects WHERE id = ?1 AND refcount <= 0")?
        .execute([obj_id])?
        > 0)
}

/// Record a finished upload: the object's sizes and its `blocks` row. If a block with
/// the same hash appeared meanwhile, that block is returned as `Err(existing_id)` and
/// nothing is inserted (the caller drops its object).
pub fn insert_block(
    c: &Connection,
    hash: &[u8],
    size: u64,
    obj_id: i64,
    phys_size: u64,
) -> rusqlite::Result<Result<i64, i64>> {
    if let Some(existing) = find_block(c, hash)? {
        return Ok(Err(existing));
    }
    c.prepare_cached("INSERT INTO blocks (hash, refcount, size, obj_id, obj_offset) VALUES (?1, 0, ?2, ?3, 0)")?
        .execute(params![hash, size as i64, obj_id])?;
    let block_id = c.last_insert_rowid();
    c.prepare_cached("UPDATE objects SET refcount = refcount + 1, phys_size = ?2, length = ?3 WHERE id = ?1")?
        .execute(params![obj_id, phys_size as i64, size as i64])?;
    Ok(Ok(block_id))
}

/// Record one block of a pack after the pack's PUT: its `blocks` row (segment
/// `[offset, offset + phys_len)` of object `obj_id`), one more block in the object, and
/// the object's stored size `pack_size`. If a block with the same hash appeared
/// meanwhile, it is returned as `Err(existing_id)` and nothing is inserted: the segment
/// is garbage in the pack.
pub fn insert_packed_block(
    c: &Connection,
    hash: &[u8],
    size: u64,
    segment: (u64, u64),
    obj_id: i64,
    pack_size: u64,
) -> rusqlite::Result<Result<i64, i64>> {
    if let Some(existing) = find_block(c, hash)? {
        return Ok(Err(existing));
    }
    let (offset, phys_len) = segment;
    c.prepare_cached(
        "INSERT INTO blocks (hash, refcount, size, obj_id, obj_offset, phys_len) VALUES (?1, 0, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![hash, size as i64, obj_id, offset as i64, phys_len as i64])?;
    let block_id = c.last_insert_rowid();
    c.prepare_cached("UPDATE objects SET refcount = refcount + 1, phys_size = ?2, length = length + ?3 WHERE id = ?1")?
        .execute(params![obj_id, pack_size as i64, size as i64])?;
    Ok(Ok(block_id))
}

/// What the packs hold, for `s3fsstat`: packs are objects with segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackTotals {
    pub packs: i64,
    /// Blocks stored in packs.
    pub blocks: i64,
    /// Stored bytes of the packs.
    pub bytes: i64,
    /// Stored bytes of live segments; the rest of `bytes` is garbage until repacked.
    pub live_bytes: i64,
}

pub fn pack_totals(c: &Connection) -> rusqlite::Result<PackTotals> {
    c.prepare_cached(
        "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(max(o.phys_size, 0)), 0), coalesce(sum(live), 0)
         FROM (SELECT obj_id, count(*) AS n, sum(phys_len) AS live FROM blocks WHERE phys_len > 0 GROUP BY obj_id) p
         JOIN objects o ON o.id = p.obj_id",
    )?
    .query_row([], |r| {
        Ok(PackTotals {
            packs: r.get(0)?,
            blocks: r.get(1)?,
            bytes: r.get(2)?,
            live_bytes: r.get(3)?,
        })
    })
}

/// A pack worth repacking: at least `garbage` (0..1) of its stored bytes belong to no
/// block any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackToRepack {
    pub obj_id: i64,
    pub phys_size: i64,
    pub live_bytes: i64,
}

/// Up to `limit` packs with at least a share `garbage` of garbage, the most wasteful
/// first. A scan of the packed blocks.
pub fn packs_to_repack(c: &Connection, garbage: f64, limit: usize) -> rusqlite::Result<Vec<PackToRepack>> {
    let mut st = c.prepare_cached(
        "SELECT p.obj_id, o.phys_size, p.live FROM
             (SELECT obj_id, sum(phys_len) AS live FROM blocks WHERE phys_len > 0 GROUP BY obj_id) p
         JOIN objects o ON o.id = p.obj_id
         WHERE o.phys_size > 0 AND p.live <= o.phys_size * (1.0 - ?1)
         ORDER BY o.phys_size - p.live DESC LIMIT ?2",
    )?;
    st.query_map(params![garbage, limit as i64], |r| {
        Ok(PackToRepack {
            obj_id: r.get(0)?,
            phys_size: r.get(1)?,
            live_bytes: r.get(2)?,
        })
    })?
    .collect()
}

/// One live block of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub block_id: i64,
    pub offset: i64,
    pub phys_len: i64,
    pub size: i64,
    pub hash: Vec<u8>,
}

/// The live blocks stored in pack `obj_id`, in offset order.
pub fn segments_of(c: &Connection, obj_id: i64) -> rusqlite::Result<Vec<Segment>> {
    let mut st = c.prepare_cached(
        "SELECT id, obj_offset, phys_len, size, hash FROM blocks WHERE obj_id = ?1 AND phys_len > 0
         ORDER BY obj_offset",
    )?;
    st.query_map([obj_id], |r| {
        Ok(Segment {
            block_id: r.get(0)?,
            offset: r.get(1)?,
            phys_len: r.get(2)?,
            size: r.get(3)?,
            hash: r.get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default(),
        })
    })?
    .collect()
}

/// Move block `block_id` from segment `from` (object, offset) to `to` (object, offset,
/// stored length) of a new pack of `pack_size` stored bytes, if it is still where it
/// was (it may have been released meanwhile). The object counts follow; an old pack
/// left without blocks is released ([`release_object`]) and its id added to `emptied`.
pub fn move_segment(
    c: &Connection,
    block_id: i64,
    from: (i64, i64),
    to: (i64, i64, i64),
    pack_size: i64,
    emptied: &mut Vec<i64>,
) -> rusqlite::Result<bool> {
    let moved = c
        .prepare_cached(
            "UPDATE blocks SET obj_id = ?4, obj_offset = ?5, phys_len = ?6
             WHERE id = ?1 AND obj_id = ?2 AND obj_offset = ?3 RETURNING size",
        )?
        .query_row(params![block_id, from.0, from.1, to.0, to.1, to.2], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?;
    let Some(size) = moved else { return Ok(false) };
    c.prepare_cached("UPDATE objects SET refcount = refcount + 1, phys_size = ?2, length = length + ?3 WHERE id = ?1")?
        .execute(params![to.0, pack_size, size])?;
    let left: Option<i64> = c
        .prepare_cached("UPDATE objects SET refcount = refcount - 1 WHERE id = ?1 RETURNING refcount")?
        .query_row([from.0], |r| r.get(0))
        .optional()?;
    if left.is_some_and(|n| n <= 0) {
        release_object(c, from.0)?;
        emptied.push(from.0);
    }
    Ok(true)
}

// Fsck's repairs: they set counts from what fsck counted and delete rows it found
// unused or unreadable; a count they leave stale is recounted by a later check.

/// Delete mapping `(inode, blockno)`, the block's refcount untouched (fsck recounts it).
pub fn delete_mapping(c: &Connection, inode: i64, blockno: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM inode_blocks WHERE inode = ?1 AND blockno = ?2")?
        .execute(params![inode, blockno])?;
    Ok(())
}

/// Delete the blocks whose ids are in table `ids` (a column `id`, e.g. a TEMP table;
/// a name in the code, never from input, since it goes into the SQL text)
/// and every mapping to them, objects untouched: their data is lost (fsck; it recounts
/// `objects.refcount` afterwards).
pub fn delete_blocks_in(c: &Connection, ids: &'static str) -> rusqlite::Result<()> {
    c.execute(
        &format!("DELETE FROM inode_blocks WHERE block_id IN (SELECT id FROM {ids})"),
        [],
    )?;
    c.execute(&format!("DELETE FROM blocks WHERE id IN (SELECT id FROM {ids})"), [])?;
    Ok(())
}

/// Delete block `id`, which nothing maps, its object's refcount untouched (fsck recounts).
pub fn delete_block(c: &Connection, id: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM blocks WHERE id = ?1")?.execute([id])?;
    Ok(())
}

/// Set `blocks.refcount` of `id` to `refcount`, its number of mappings (fsck).
pub fn set_refcount(c: &Connection, id: i64, refcount: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE blocks SET refcount = ?2 WHERE id = ?1")?
        .execute(params![id, refcount])?;
    Ok(())
}

/// Delete the row of object `id`, which holds no block, whatever its refcount (fsck).
pub fn delete_object(c: &Connection, id: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM objects WHERE id = ?1")?.execute([id])?;
    Ok(())
}

/// Delete the rows of the objects whose ids are in table `ids` (a column `id`, e.g. a
/// TEMP table; a name in the code, never from input): the store lacks them (fsck, once
/// the blocks in them are deleted).
pub fn delete_objects_in(c: &Connection, ids: &'static str) -> rusqlite::Result<()> {
    c.execute(&format!("DELETE FROM objects WHERE id IN (SELECT id FROM {ids})"), [])?;
    Ok(())
}

/// Set `objects.refcount` of `id` to `refcount`, the blocks stored in it (fsck).
pub fn set_object_refcount(c: &Connection, id: i64, refcount: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE objects SET refcount = ?2 WHERE id = ?1")?
        .execute(params![id, refcount])?;
    Ok(())
}

/// Record the stored size of object `id`, from the store's listing (fsck).
pub fn set_phys_size(c: &Connection, id: i64, phys_size: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE objects SET phys_size = ?2 WHERE id = ?1")?
        .execute(params![id, phys_size])?;
    Ok(())
}
