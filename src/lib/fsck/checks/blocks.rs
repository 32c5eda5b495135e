//! Checks 6–9 (`blocks-hash`, `inode-blocks`, `blocks-refcount`, `objects-refcount`):
//! the file data. Every mapping of a file block points at a block with a hash, every
//! block at an object, and the refcounts of blocks and objects count those references,
//! so that data is released exactly when its last user goes. Files that lose data are
//! quarantined in `/lost+found`.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::lost_found::quarantine;
use super::{
    Findings, State, check_id, drop_ids, drop_uses, file_type, fill_ids, fill_uses, has_valid_type, kind_name,
    query_vec,
};
use crate::fsck::paths::describe;
use crate::meta;

/// Delete the mappings and rows of the blocks in temp table `fsck_ids`; returns the
/// inodes that had mappings to them (sorted).
pub(super) fn delete_blocks_in_ids(c: &Connection) -> rusqlite::Result<Vec<i64>> {
    let inodes = query_vec(
        c,
        "SELECT DISTINCT inode FROM inode_blocks WHERE block_id IN (SELECT id FROM temp.fsck_ids) ORDER BY inode",
        [],
        |r| r.get(0),
    )?;
    meta::blocks::delete_blocks_in(c, "temp.fsck_ids")?;
    Ok(inodes)
}

/// Check 6: blocks with a NULL hash (failed uploads), and blocks whose place in their
/// object cannot be (a negative offset or length, a segment reaching past the end of
/// its pack, an offset without a segment length), are deleted with their mappings; the
/// files are quarantined.
pub(super) fn check_blocks_hash(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::BLOCKS_HASH;
    let doomed: Vec<(i64, i64, bool)> = query_vec(
        c,
        "SELECT b.id, b.obj_id, b.hash IS NULL FROM blocks b LEFT JOIN objects o ON o.id = b.obj_id
         WHERE b.hash IS NULL OR b.obj_offset < 0 OR b.phys_len < 0
            OR (b.phys_len = 0 AND b.obj_offset != 0)
            OR (b.phys_len > 0 AND o.phys_size >= 0 AND b.obj_offset + b.phys_len > o.phys_size)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if doomed.is_empty() {
        return Ok(());
    }
    fill_ids(c, doomed.iter().map(|&(id, _, _)| id))?;
    let inodes = delete_blocks_in_ids(c)?;
    drop_ids(c)?;
    let reason = if doomed.iter().all(|&(_, _, no_hash)| no_hash) {
        "a data block's upload had failed"
    } else {
        "a data block was lost (its place in the store was damaged)"
    };
    for (id, obj, no_hash) in doomed {
        st.unlinked_objects.insert(obj);
        let why = if no_hash {
            "has no hash: its upload failed"
        } else {
            "lies outside its object"
        };
        out.add_repaired(CHECK, format!("block {id} (in object {obj}) {why}; deleted"));
    }
    quarantine(c, st, out, CHECK, &inodes, reason)
}

/// Check 7: mappings to missing blocks (files quarantined), of missing inodes, of
/// non-regular inodes and beyond the largest file size are deleted.
pub(super) fn check_inode_blocks(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::INODE_BLOCKS;
    let last_blockno = last_blockno(st.block_size);
    // (inode, blockno, block_id, block exists, inode mode, beyond the largest file)
    let rows: Vec<(i64, i64, i64, bool, Option<u32>, bool)> = query_vec(
        c,
        "SELECT ib.inode, ib.blockno, ib.block_id, b.id IS NOT NULL, i.mode,
                ib.blockno < 0 OR ib.blockno > ?1 FROM inode_blocks ib
         LEFT JOIN blocks b ON b.id = ib.block_id LEFT JOIN inodes i ON i.id = ib.inode
         WHERE b.id IS NULL OR i.id IS NULL
            OR (i.mode & 61440) IN (16384, 40960, 4096, 49152, 8192, 24576)
            OR ib.blockno < 0 OR ib.blockno > ?1",
        [last_blockno],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
    )?;
    if rows.is_empty() {
        return Ok(());
    }
    // inode -> (mode, blocks missing, other mappings deleted, of which beyond the limit)
    let mut by_inode: BTreeMap<i64, (Option<u32>, u64, u64, u64)> = BTreeMap::new();
    for (ino, blockno, block, exists, mode, beyond) in rows {
        meta::blocks::delete_mapping(c, ino, blockno)?;
        let e = by_inode.entry(ino).or_insert((mode, 0, 0, 0));
        if exists {
            st.unlinked_blocks.insert(block);
            e.2 += 1;
        } else {
            e.1 += 1;
        }
        e.3 += u64::from(beyond);
    }
    let mut lost = Vec::new();
    for (ino, (mode, missing, other, beyond)) in by_inode {
        if beyond > 0 && mode.is_some() {
            out.add_repaired(
                CHECK,
                format!(
                    "{} had {beyond} data block mappings beyond the largest file size; deleted them",
                    describe(c, ino)?
                ),
            );
            if missing + other == beyond {
                continue;
            }
        }
        match mode {
            None => out.add_repaired(
                CHECK,
                format!(
                    "{} data block mappings of missing inode {ino}; deleted",
                    missing + other
                ),
            ),
            Some(mode) if has_valid_type(mode) && file_type(mode) != libc::S_IFREG => out.add_repaired(
                CHECK,
                format!(
                    "{} is a {} but had {} data blocks; deleted them",
                    describe(c, ino)?,
                    kind_name(mode),
                    missing + other
                ),
            ),
            Some(_) => {
                out.add_repaired(
                    CHECK,
                    format!(
                        "{} has {missing} data block mappings to missing blocks; deleted them",
                        describe(c, ino)?
                    ),
                );
                lost.push(ino);
            }
        }
    }
    quarantine(c, st, out, CHECK, &lost, "some of its data blocks were missing")
}

/// Check 8: `blocks.refcount` = mappings; unused blocks deleted.
pub(super) fn check_blocks_refcount(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::BLOCKS_REFCOUNT;
    fill_uses(c, "SELECT block_id, count(*) FROM inode_blocks GROUP BY block_id")?;
    let wrong: Vec<(i64, i64, i64, i64)> = query_vec(
        c,
        "SELECT b.id, b.obj_id, b.refcount, coalesce(u.n, 0) FROM blocks b
         LEFT JOIN temp.fsck_uses u ON u.id = b.id WHERE b.refcount IS NOT coalesce(u.n, 0) OR u.n IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (id, obj, old, uses) in wrong {
        let silent = st.unlinked_blocks.contains(&id);
        if uses == 0 {
            meta::blocks::delete_block(c, id)?;
            st.unlinked_objects.insert(obj);
            if !silent {
                out.add_repaired(CHECK, format!("block {id} is not used (refcount {old}); deleted"));
            }
        } else {
            meta::blocks::set_refcount(c, id, uses)?;
            if !silent {
                out.add_repaired(
                    CHECK,
                    format!("block {id} has refcount {old} but {uses} mappings; fixed"),
                );
            }
        }
    }
    drop_uses(c)
}

/// Check 9: blocks stored in missing objects are deleted with their mappings (files
/// quarantined); `objects.refcount` = blocks stored in it; unused objects deleted and
/// queued for deletion from the store.
pub(super) fn check_objects_refcount(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::OBJECTS_REFCOUNT;
    let orphans: Vec<(i64, i64)> = query_vec(
        c,
        "SELECT b.id, b.obj_id FROM blocks b WHERE NOT EXISTS (SELECT 1 FROM objects o WHERE o.id = b.obj_id)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if !orphans.is_empty() {
        fill_ids(c, orphans.iter().map(|&(id, _)| id))?;
        let inodes = delete_blocks_in_ids(c)?;
        drop_ids(c)?;
        for (id, obj) in orphans {
            out.add_repaired(CHECK, format!("block {id} is stored in missing object {obj}; deleted"));
        }
        quarantine(c, st, out, CHECK, &inodes, "some of its data objects were missing")?;
    }

    fill_uses(c, "SELECT obj_id, count(*) FROM blocks GROUP BY obj_id")?;
    let wrong: Vec<(i64, i64, i64, i64)> = query_vec(
        c,
        "SELECT o.id, o.refcount, o.phys_size, coalesce(u.n, 0) FROM objects o
         LEFT JOIN temp.fsck_uses u ON u.id = o.id WHERE o.refcount IS NOT coalesce(u.n, 0) OR u.n IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (id, old, phys_size, uses) in wrong {
        let silent = st.unlinked_objects.contains(&id);
        if uses == 0 {
            meta::blocks::delete_object(c, id)?;
            out.objects_to_delete.push(id);
            if !silent {
                let what = if phys_size < 0 {
                    "an upload that never finished"
                } else {
                    "no block is stored in it"
                };
                out.add_repaired(
                    CHECK,
                    format!("object {id} is not used ({what}; refcount {old}); deleted"),
                );
            }
        } else {
            meta::blocks::set_object_refcount(c, id, uses)?;
            if !silent {
                out.add_repaired(
                    CHECK,
                    format!("object {id} has refcount {old} but holds {uses} blocks; fixed"),
                );
            }
        }
    }
    drop_uses(c)
}

/// The largest block number a file may use: its last byte is below
/// [`crate::fs::MAX_FILE_SIZE`].
fn last_blockno(block_size: u64) -> i64 {
    ((crate::fs::MAX_FILE_SIZE - 1) / block_size.max(1)) as i64
}
