//! Rows of `ext_attributes`; each holds one use of its name (see [`super::names`]).

use rusqlite::{Connection, OptionalExtension, params};

use super::names::{add_name, del_name};

/// The name id and value of xattr `name` of `inode`, if set.
pub fn find(c: &Connection, inode: i64, name: &[u8]) -> rusqlite::Result<Option<(i64, Vec<u8>)>> {
    c.prepare_cached("SELECT name_id, value FROM ext_attributes_v WHERE inode = ?1 AND name = ?2")?
        .query_row(params![inode, name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Add xattr `name` (which `inode` does not have) with `value`, counting the name use.
pub fn insert(c: &Connection, inode: i64, name: &[u8], value: &[u8]) -> rusqlite::Result<()> {
    let name_id = add_name(c, name)?;
    c.prepare_cached("INSERT INTO ext_attributes (inode, name_id, value) VALUES (?1, ?2, ?3)")?
        .execute(params![inode, name_id, value])?;
    Ok(())
}

/// Replace the value of the xattr of `inode` whose name is `name_id` (found by [`find`]).
pub fn set_value(c: &Connection, inode: i64, name_id: i64, value: &[u8]) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE ext_attributes SET value = ?3 WHERE inode = ?1 AND name_id = ?2")?
        .execute(params![inode, name_id, value])?;
    Ok(())
}

/// Remove the xattr of `inode` whose name is `name_id`, and that use of the name.
pub fn remove(c: &Connection, inode: i64, name_id: i64) -> rusqlite::Result<()> {
    let n = c
        .prepare_cached("DELETE FROM ext_attributes WHERE inode = ?1 AND name_id = ?2")?
        .execute(params![inode, name_id])?;
    if n > 0 {
        del_name(c, name_id)?;
    }
    Ok(())
}

/// Give the xattr `(inode, old_name_id)` the name `new_name_id`, whose use the caller has
/// counted; no use of the old name is dropped (fsck: that name row is missing).
pub fn rename(c: &Connection, inode: i64, old_name_id: i64, new_name_id: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE ext_attributes SET name_id = ?3 WHERE inode = ?1 AND name_id = ?2")?
        .execute(params![inode, old_name_id, new_name_id])?;
    Ok(())
}

/// Remove every xattr of `inode`, and their name uses.
pub fn remove_all(c: &Connection, inode: i64) -> rusqlite::Result<()> {
    let name_ids: Vec<i64> = c
        .prepare_cached("DELETE FROM ext_attributes WHERE inode = ?1 RETURNING name_id")?
        .query_map([inode], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for name_id in name_ids {
        del_name(c, name_id)?;
    }
    Ok(())
}

/// Copy the xattrs of `from` to `to` (which has none), counting the name uses.
pub fn copy_all(c: &Connection, from: i64, to: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE names SET refcount = refcount + 1 WHERE id IN (SELECT name_id FROM ext_attributes WHERE inode = ?1)",
    )?
    .execute([from])?;
    c.prepare_cached(
        "INSERT INTO ext_attributes (inode, name_id, value) SELECT ?2, name_id, value FROM ext_attributes WHERE inode = ?1",
    )?
    .execute(params![from, to])?;
    Ok(())
}
