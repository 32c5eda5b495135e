//! Checks 10–11 (`inodes-refcount`, `inodes-size`): each inode counts its directory
//! entries (a directory has exactly one; the root none), an inode without entries is
//! purged or linked into `/lost+found`, and sizes are within range and cover the data.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension};

use super::lost_found::lost_found;
use super::{Findings, State, check_id, drop_uses, file_type, fill_uses, kind_name, name_of, query_vec};
use crate::fsck::paths::{describe, describe_entry, lossy, resolve_free};
use crate::meta;
use crate::meta::names::{delete_entry, insert_entry};
use crate::meta::schema::ROOT_INODE;

/// Delete the unreferenced inode `ino` and what hangs off it (see
/// [`meta::inodes::purge`]); the objects freed are to be deleted from the store.
fn purge_inode(c: &Connection, ino: i64, out: &mut Findings) -> rusqlite::Result<()> {
    let released = meta::inodes::purge(c, ino)?;
    out.objects_to_delete.extend(released.objects);
    Ok(())
}

/// Whether walking up from `parent` (first entries) reaches the root without meeting
/// `dir` or a cycle.
fn reaches_root_avoiding(c: &Connection, parent: i64, dir: i64) -> rusqlite::Result<bool> {
    let mut st = c.prepare_cached("SELECT parent_inode FROM contents WHERE inode = ?1 ORDER BY rowid LIMIT 1")?;
    let mut seen = HashSet::new();
    let mut cur = parent;
    loop {
        if cur == ROOT_INODE {
            return Ok(true);
        }
        if cur == dir || !seen.insert(cur) {
            return Ok(false);
        }
        match st.query_row([cur], |r| r.get(0)).optional()? {
            Some(p) => cur = p,
            None => return Ok(false),
        }
    }
}

/// Check 10: `inodes.refcount` = entries naming the inode (the root: 1 and no entry);
/// directories have exactly one entry; inodes without entries are purged or linked into
/// `/lost+found` (see the module documentation).
pub(super) fn check_inodes_refcount(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::INODES_REFCOUNT;
    // The GROUP BY walks ix_contents_inode in order: no sort.
    fill_uses(c, "SELECT inode, count(*) FROM contents GROUP BY inode")?;
    let wrong: Vec<(i64, i64, u32, i64)> = query_vec(
        c,
        "SELECT i.id, i.refcount, i.mode, coalesce(u.n, 0) FROM inodes i LEFT JOIN temp.fsck_uses u ON u.id = i.id
         WHERE CASE WHEN i.id = ?1 THEN i.refcount IS NOT 1 OR u.n IS NOT NULL
                    ELSE u.n IS NULL OR i.refcount IS NOT u.n OR (u.n > 1 AND (i.mode & 61440) = 16384) END",
        [ROOT_INODE],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    drop_uses(c)?;
    for (id, old, mode, n) in wrong {
        if id == ROOT_INODE {
            if n > 0 {
                let entries: Vec<(i64, i64, i64)> = query_vec(
                    c,
                    "SELECT rowid, name_id, parent_inode FROM contents WHERE inode = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                for (rowid, name_id, parent) in entries {
                    let name = name_of(c, name_id)?.unwrap_or_default();
                    let shown = describe_entry(c, parent, &name)?;
                    delete_entry(c, rowid, name_id)?;
                    out.add_repaired(CHECK, format!("{shown} was an entry for the root directory; deleted"));
                }
            }
            if old != 1 {
                meta::inodes::set_refcount(c, id, 1)?;
                out.add_repaired(CHECK, format!("the root directory has refcount {old}; set to 1"));
            }
            continue;
        }
        if n == 0 {
            let has_children: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM contents WHERE parent_inode = ?1)",
                [id],
                |r| r.get(0),
            )?;
            if old <= 0 && !has_children {
                purge_inode(c, id, out)?;
                out.add_repaired(
                    CHECK,
                    format!(
                        "inode {id} ({}) had been removed but was still open when the filesystem stopped; purged",
                        kind_name(mode)
                    ),
                );
            } else {
                let lof = lost_found(c, st, out)?;
                let name = resolve_free(c, lof, format!("inode-{id}").as_bytes())?;
                insert_entry(c, lof, &name, id)?;
                meta::inodes::set_refcount(c, id, 1)?;
                out.add_repaired(
                    CHECK,
                    format!(
                        "inode {id} ({}) has no directory entry; linked as /lost+found/{}",
                        kind_name(mode),
                        lossy(&name)
                    ),
                );
            }
            continue;
        }
        if n > 1 && file_type(mode) == libc::S_IFDIR {
            let entries: Vec<(i64, i64, i64)> = query_vec(
                c,
                "SELECT rowid, name_id, parent_inode FROM contents WHERE inode = ?1 ORDER BY rowid",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let mut keep = entries[0].0;
            if st.lof == Some(id) {
                keep = entries.iter().find(|e| e.2 == ROOT_INODE).map_or(keep, |e| e.0);
            } else {
                for e in &entries {
                    if reaches_root_avoiding(c, e.2, id)? {
                        keep = e.0;
                        break;
                    }
                }
            }
            let kept = entries.iter().find(|e| e.0 == keep).expect("kept entry");
            let kept_path = describe_entry(c, kept.2, &name_of(c, kept.1)?.unwrap_or_default())?;
            for &(rowid, name_id, parent) in entries.iter().filter(|e| e.0 != keep) {
                let name = name_of(c, name_id)?.unwrap_or_default();
                let shown = describe_entry(c, parent, &name)?;
                delete_entry(c, rowid, name_id)?;
                out.add_repaired(
                    CHECK,
                    format!("directory {kept_path} (inode {id}) also had the entry {shown} (a directory hard link); deleted it"),
                );
            }
            if old != 1 {
                meta::inodes::set_refcount(c, id, 1)?;
            }
            continue;
        }
        meta::inodes::set_refcount(c, id, n)?;
        out.add_repaired(
            CHECK,
            format!(
                "{} has refcount {old} but {n} directory entries; fixed",
                describe(c, id)?
            ),
        );
    }
    Ok(())
}

/// Check 11: sizes lie in `0..=MAX_FILE_SIZE` (a size outside is set to the end of the
/// file's data); the size of a regular file covers its blocks (raised, never lowered).
pub(super) fn check_inodes_size(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::INODES_SIZE;
    let bs = i64::try_from(st.block_size).unwrap_or(i64::MAX);
    let max = crate::fs::MAX_FILE_SIZE as i64;
    // Check 7 deleted mappings beyond the limit, so the ends of data are below it.
    let out_of_range: Vec<(i64, i64, i64)> = query_vec(
        c,
        "SELECT i.id, i.size, coalesce(
             (SELECT max(ib.blockno * ?1 + b.size) FROM inode_blocks ib JOIN blocks b ON b.id = ib.block_id
              WHERE ib.inode = i.id), 0)
         FROM inodes i WHERE i.size < 0 OR i.size > ?2",
        [bs, max],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (id, old, end) in out_of_range {
        let new = end.clamp(0, max);
        meta::inodes::set_size(c, id, new)?;
        out.add_repaired(
            CHECK,
            format!(
                "{} has size {old}, outside 0..={max} bytes; size set to the end of its data, {new}",
                describe(c, id)?
            ),
        );
    }
    let wrong: Vec<(i64, i64, i64)> = query_vec(
        c,
        "SELECT i.id, i.size, m.min_size FROM
             (SELECT ib.inode AS id, max(ib.blockno * ?1 + b.size) AS min_size
              FROM inode_blocks ib JOIN blocks b ON b.id = ib.block_id GROUP BY ib.inode) m
         JOIN inodes i ON i.id = m.id
         WHERE i.size < m.min_size
           AND (i.mode & 61440) NOT IN (16384, 40960, 4096, 49152, 8192, 24576)",
        [bs],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (id, old, min) in wrong {
        meta::inodes::set_size(c, id, min)?;
        out.add_repaired(
            CHECK,
            format!(
                "{} has size {old} but data up to {min}; size set to {min}",
                describe(c, id)?
            ),
        );
    }
    Ok(())
}
