//! Checks 3–5 (`contents-name`, `contents-inode`, `contents-parent`): every directory
//! entry has a name, an inode and a parent directory. An entry without one cannot be
//! reached or listed; it is moved into `/lost+found` or, without an inode, deleted.

use rusqlite::Connection;

use super::lost_found::lost_found;
use super::{Findings, State, check_id, kind_name, name_of, path_of, query_vec};
use crate::fsck::paths::{describe, describe_entry, escape, lossy, resolve_free};
use crate::meta::names::{delete_entry, move_entry, move_unnamed_entry};
use crate::meta::schema::ROOT_INODE;

/// Check 3: entries whose name is missing are moved into `/lost+found`.
pub(super) fn check_contents_name(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::CONTENTS_NAME;
    let rows: Vec<(i64, i64, i64, i64)> = query_vec(
        c,
        "SELECT c.rowid, c.name_id, c.inode, c.parent_inode FROM contents c
         WHERE NOT EXISTS (SELECT 1 FROM names n WHERE n.id = c.name_id)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (rowid, name_id, ino, parent) in rows {
        let lof = lost_found(c, st, out)?;
        let base = match path_of(c, parent)? {
            Some(p) if parent != ROOT_INODE => [escape(&p), format!("-{ino}").into_bytes()].concat(),
            _ => format!("[{parent}]-{ino}").into_bytes(),
        };
        let new = resolve_free(c, lof, &base)?;
        move_unnamed_entry(c, rowid, lof, &new)?;
        out.add_repaired(
            CHECK,
            format!(
                "the entry of inode {ino} in {} has no name (name id {name_id} is missing); moved to /lost+found/{}",
                describe(c, parent)?,
                lossy(&new)
            ),
        );
    }
    Ok(())
}

/// Check 4: entries whose inode is missing are deleted.
pub(super) fn check_contents_inode(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::CONTENTS_INODE;
    let rows: Vec<(i64, i64, i64, i64)> = query_vec(
        c,
        "SELECT c.rowid, c.name_id, c.inode, c.parent_inode FROM contents c
         WHERE NOT EXISTS (SELECT 1 FROM inodes i WHERE i.id = c.inode)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (rowid, name_id, ino, parent) in rows {
        let name = name_of(c, name_id)?.unwrap_or_default();
        let shown = describe_entry(c, parent, &name)?;
        delete_entry(c, rowid, name_id)?;
        out.add_repaired(CHECK, format!("{shown} refers to missing inode {ino}; entry deleted"));
    }
    Ok(())
}

/// Check 5: entries whose parent is missing or not a directory are moved into
/// `/lost+found` as `[<parent>]-<name>`. A parent without a valid file type is left to
/// check 15, which makes it a directory if it has entries.
pub(super) fn check_contents_parent(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::CONTENTS_PARENT;
    let rows: Vec<(i64, i64, i64, Option<u32>)> = query_vec(
        c,
        "SELECT c.rowid, c.name_id, c.parent_inode, p.mode FROM contents c
         LEFT JOIN inodes p ON p.id = c.parent_inode
         WHERE p.id IS NULL OR (p.mode & 61440) IN (32768, 40960, 4096, 49152, 8192, 24576)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (rowid, name_id, parent, pmode) in rows {
        let lof = lost_found(c, st, out)?;
        let name = name_of(c, name_id)?.unwrap_or_default();
        let why = match pmode {
            None => format!("its parent directory (inode {parent}) is missing"),
            Some(m) => format!("its parent {} is a {}", describe(c, parent)?, kind_name(m)),
        };
        let new = resolve_free(c, lof, &[format!("[{parent}]-").as_bytes(), &name].concat())?;
        move_entry(c, rowid, name_id, lof, &new)?;
        out.add_repaired(
            CHECK,
            format!(
                "entry \"{}\": {why}; moved to /lost+found/{}",
                lossy(&name),
                lossy(&new)
            ),
        );
    }
    Ok(())
}
