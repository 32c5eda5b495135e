//! The SQL of the block cache: where a block is stored, and the transactions of the
//! upload pipeline. Every function runs inside a transaction opened by its caller, with
//! the DB mutex held; none does anything but SQL.
//!
//! Invariants kept (see [`crate::meta::schema`]): `blocks.refcount` = number of
//! `inode_blocks` rows pointing at the block, `objects.refcount` = number of `blocks`
//! rows stored in the object. An `objects` row whose upload has not finished has
//! `phys_size = -1` and `refcount = 0` (no block points at it yet).

use rusqlite::{Connection, OptionalExtension, params};

/// Where the bytes of one block are stored.
#[derive(Debug, Clone, Copy)]
pub(super) struct Location {
    pub obj_id: i64,
    pub obj_offset: i64,
    pub size: i64,
}

pub(super) fn block_location(c: &Connection, inode: u64, blockno: u64) -> rusqlite::Result<Option<Location>> {
    c.prepare_cached(
        "SELECT b.obj_id, b.obj_offset, b.size FROM inode_blocks ib JOIN blocks b ON b.id = ib.block_id
         WHERE ib.inode = ?1 AND ib.blockno = ?2",
    )?
    .query_row(params![inode as i64, blockno as i64], |r| {
        Ok(Location {
            obj_id: r.get(0)?,
            obj_offset: r.get(1)?,
            size: r.get(2)?,
        })
    })
    .optional()
}

/// The size recorded for `(inode, blockno)`, if the block is stored.
pub(super) fn stored_size(c: &Connection, inode: u64, blockno: u64) -> rusqlite::Result<Option<i64>> {
    Ok(block_location(c, inode, blockno)?.map(|l| l.size))
}

pub(super) fn inode_exists(c: &Connection, inode: u64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM inodes WHERE id = ?1)")?
        .query_row([inode as i64], |r| r.get(0))
}

pub(super) fn find_block(c: &Connection, hash: &[u8]) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT id FROM blocks WHERE hash = ?1")?
        .query_row([hash], |r| r.get(0))
        .optional()
}

/// Insert the row of an object about to be uploaded; returns its id.
pub(super) fn new_object(c: &Connection, length: u64) -> rusqlite::Result<i64> {
    c.prepare_cached("INSERT INTO objects (refcount, phys_size, length) VALUES (0, -1, ?1)")?
        .execute([length as i64])?;
    Ok(c.last_insert_rowid())
}

/// Delete the row of an object no block points at (an abandoned or redundant upload).
pub(super) fn drop_object(c: &Connection, obj_id: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM objects WHERE id = ?1 AND refcount <= 0")?
        .execute([obj_id])?;
    Ok(())
}

/// Record a finished upload: the object's sizes and its `blocks` row. If a block with
/// the same hash appeared meanwhile, that block is returned as `Err(existing_id)` and
/// nothing is inserted (the caller drops its object).
pub(super) fn insert_block(
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

/// Point `(inode, blockno)` at `block_id` and release the block it pointed at before.
/// Returns the objects whose refcount reached 0 (rows deleted; delete them from the
/// store).
pub(super) fn link_block(c: &Connection, inode: u64, blockno: u64, block_id: i64) -> rusqlite::Result<Vec<i64>> {
    let old: Option<i64> = c
        .prepare_cached("SELECT block_id FROM inode_blocks WHERE inode = ?1 AND blockno = ?2")?
        .query_row(params![inode as i64, blockno as i64], |r| r.get(0))
        .optional()?;
    if old == Some(block_id) {
        return Ok(Vec::new());
    }
    c.prepare_cached(
        "INSERT INTO inode_blocks (inode, blockno, block_id) VALUES (?1, ?2, ?3)
         ON CONFLICT (inode, blockno) DO UPDATE SET block_id = excluded.block_id",
    )?
    .execute(params![inode as i64, blockno as i64, block_id])?;
    c.prepare_cached("UPDATE blocks SET refcount = refcount + 1 WHERE id = ?1")?
        .execute([block_id])?;
    let mut freed = Vec::new();
    if let Some(old) = old {
        freed.extend(release_block(c, old)?);
    }
    Ok(freed)
}

/// Drop one reference to `block_id`; at 0 delete it and drop one reference to its
/// object; at 0 delete the object row and return its id.
fn release_block(c: &Connection, block_id: i64) -> rusqlite::Result<Option<i64>> {
    let Some((left, obj)): Option<(i64, i64)> = c
        .prepare_cached("UPDATE blocks SET refcount = refcount - 1 WHERE id = ?1 RETURNING refcount, obj_id")?
        .query_row([block_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
    else {
        return Ok(None);
    };
    if left > 0 {
        return Ok(None);
    }
    c.prepare_cached("DELETE FROM blocks WHERE id = ?1")?
        .execute([block_id])?;
    let obj_left: Option<i64> = c
        .prepare_cached("UPDATE objects SET refcount = refcount - 1 WHERE id = ?1 RETURNING refcount")?
        .query_row([obj], |r| r.get(0))
        .optional()?;
    if obj_left.is_some_and(|n| n <= 0) {
        c.prepare_cached("DELETE FROM objects WHERE id = ?1")?.execute([obj])?;
        return Ok(Some(obj));
    }
    Ok(None)
}
