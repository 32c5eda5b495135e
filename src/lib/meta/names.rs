//! Rows of `names` (interned names, counted by their uses in `contents` and
//! `ext_attributes`) and `contents` (directory entries).
//!
//! Invariant kept: `names.refcount` = the number of `contents` and `ext_attributes` rows
//! using the name; a name at 0 is deleted. Every entry is added, moved and deleted here,
//! so the count cannot drift. None of these functions touches an inode's refcount: a
//! link is counted by the caller, which knows whether the entry is a new link or a move.

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::ROOT_INODE;

/// Intern `name`: insert it or count one more use. Returns its id.
pub fn add_name(c: &Connection, name: &[u8]) -> rusqlite::Result<i64> {
    c.prepare_cached(
        "INSERT INTO names (name, refcount) VALUES (?1, 1)
         ON CONFLICT (name) DO UPDATE SET refcount = refcount + 1 RETURNING id",
    )?
    .query_row([name], |r| r.get(0))
}

/// Count one use less of a name; delete it at 0. A missing name is left alone.
pub fn del_name(c: &Connection, name_id: i64) -> rusqlite::Result<()> {
    let left: Option<i64> = c
        .prepare_cached("UPDATE names SET refcount = refcount - 1 WHERE id = ?1 RETURNING refcount")?
        .query_row([name_id], |r| r.get(0))
        .optional()?;
    if left.is_some_and(|n| n <= 0) {
        c.prepare_cached("DELETE FROM names WHERE id = ?1")?
            .execute([name_id])?;
    }
    Ok(())
}

/// Set a name's count to `refcount` (fsck's repair of a count that drifted).
pub fn set_name_refcount(c: &Connection, name_id: i64, refcount: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE names SET refcount = ?2 WHERE id = ?1")?
        .execute(params![name_id, refcount])?;
    Ok(())
}

/// Store name `id` as the BLOB `name`: a lookup by bytes never finds a TEXT name (fsck).
pub fn set_name_bytes(c: &Connection, id: i64, name: &[u8]) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE names SET name = ?2 WHERE id = ?1")?
        .execute(params![id, name])?;
    Ok(())
}

/// Delete name `id`, which nothing uses (fsck; names in use go through [`del_name`]).
pub fn delete_name(c: &Connection, id: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM names WHERE id = ?1")?.execute([id])?;
    Ok(())
}

/// A directory entry: its `contents` rowid, name id and inode.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub rowid: i64,
    pub name_id: i64,
    pub inode: i64,
}

/// The entry `name` of directory `parent`, if any.
pub fn find_entry(c: &Connection, parent: i64, name: &[u8]) -> rusqlite::Result<Option<Entry>> {
    c.prepare_cached(
        "SELECT contents.rowid, name_id, inode FROM contents JOIN names ON names.id = contents.name_id
         WHERE parent_inode = ?1 AND name = ?2",
    )?
    .query_row(params![parent, name], |r| {
        Ok(Entry {
            rowid: r.get(0)?,
            name_id: r.get(1)?,
            inode: r.get(2)?,
        })
    })
    .optional()
}

/// Add the entry `name` (which must be free) of `inode` to directory `parent`.
pub fn insert_entry(c: &Connection, parent: i64, name: &[u8], inode: i64) -> rusqlite::Result<()> {
    let name_id = add_name(c, name)?;
    insert_entry_row(c, parent, name_id, inode)
}

/// [`insert_entry`] for a name already interned, given by its id (one more use of it).
pub fn insert_entry_by_id(c: &Connection, parent: i64, name_id: i64, inode: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE names SET refcount = refcount + 1 WHERE id = ?1")?
        .execute([name_id])?;
    insert_entry_row(c, parent, name_id, inode)
}

fn insert_entry_row(c: &Connection, parent: i64, name_id: i64, inode: i64) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO contents (name_id, inode, parent_inode) VALUES (?1, ?2, ?3)")?
        .execute(params![name_id, inode, parent])?;
    Ok(())
}

/// Give the entry `rowid` (whose name is `old_name_id`) a new parent and a new name
/// (which must be free there), keeping its rowid (so a readdir in progress sees it once)
/// and its inode: one row update whatever the size of a moved subtree.
pub fn move_entry(c: &Connection, rowid: i64, old_name_id: i64, parent: i64, name: &[u8]) -> rusqlite::Result<()> {
    let name_id = add_name(c, name)?;
    c.prepare_cached("UPDATE contents SET parent_inode = ?2, name_id = ?3 WHERE rowid = ?1")?
        .execute(params![rowid, parent, name_id])?;
    del_name(c, old_name_id)
}

/// [`move_entry`] for an entry whose name row is missing (fsck): the new name is counted,
/// no use of the old one is dropped (its id may even be reused by the new name).
pub fn move_unnamed_entry(c: &Connection, rowid: i64, parent: i64, name: &[u8]) -> rusqlite::Result<()> {
    let name_id = add_name(c, name)?;
    c.prepare_cached("UPDATE contents SET name_id = ?2, parent_inode = ?3 WHERE rowid = ?1")?
        .execute(params![rowid, name_id, parent])?;
    Ok(())
}

/// Move entry `rowid` into `parent` under its name; name and link counts unchanged (fsck).
pub fn set_entry_parent(c: &Connection, rowid: i64, parent: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE contents SET parent_inode = ?2 WHERE rowid = ?1")?
        .execute(params![rowid, parent])?;
    Ok(())
}

/// Point the entry `rowid` at another inode (rename's exchange).
pub fn set_entry_inode(c: &Connection, rowid: i64, inode: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE contents SET inode = ?2 WHERE rowid = ?1")?
        .execute(params![rowid, inode])?;
    Ok(())
}

/// Delete the entry `rowid` and its name use (not the inode's refcount).
pub fn delete_entry(c: &Connection, rowid: i64, name_id: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM contents WHERE rowid = ?1")?
        .execute([rowid])?;
    del_name(c, name_id)
}

/// The parent of a directory (the root is its own parent; a removed directory too).
pub fn parent_of(c: &Connection, dir: i64) -> rusqlite::Result<i64> {
    if dir == ROOT_INODE {
        return Ok(ROOT_INODE);
    }
    let mut st = c.prepare_cached("SELECT parent_inode FROM contents WHERE inode = ?1 LIMIT 1")?;
    Ok(st.query_row([dir], |r| r.get(0)).optional()?.unwrap_or(dir))
}

/// Whether directory `dir` has any entry.
pub fn has_entries(c: &Connection, dir: i64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM contents WHERE parent_inode = ?1)")?
        .query_row([dir], |r| r.get(0))
}

/// Number of subdirectories of a directory.
///
/// This is a scan of the directory's entries: linear in the directory's size.
pub fn subdir_count(c: &Connection, dir: i64) -> rusqlite::Result<i64> {
    c.prepare_cached(
        "SELECT count(*) FROM contents JOIN inodes ON inodes.id = contents.inode
         WHERE parent_inode = ?1 AND (mode & ?2) = ?3",
    )?
    .query_row(params![dir, libc::S_IFMT, libc::S_IFDIR], |r| r.get(0))
}
