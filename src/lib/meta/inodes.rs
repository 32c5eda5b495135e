//! Rows of `inodes` and `symlink_targets`, and the purge of an inode with everything
//! that hangs off it.
//!
//! Invariant kept: `inodes.refcount` = the number of `contents` rows naming the inode
//! (the kernel's lookups are counted in memory, not here); an inode is deleted only
//! through [`purge`], which releases its blocks, xattrs and symlink target with it.

use rusqlite::{Connection, OptionalExtension, params};

use super::blocks::{Released, release_blocks};
use super::schema::ROOT_INODE;

/// One `inodes` row.
#[derive(Debug, Clone, Copy)]
pub struct InodeRow {
    pub id: i64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime: i64,
    pub atime: i64,
    pub ctime: i64,
    pub refcount: i64,
    pub size: i64,
    pub rdev: u32,
    pub locked: bool,
}

impl InodeRow {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn fmt(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    /// The size, with a negative one (a damaged DB; fsck repairs it) as 0.
    pub fn size(&self) -> u64 {
        self.size.max(0) as u64
    }
}

impl InodeRow {
    /// The row of inode `id` from the columns `uid, gid, mode, mtime_ns, atime_ns,
    /// ctime_ns, refcount, size, rdev, locked` of `r`, starting at column `first`.
    pub fn from_row(id: i64, r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<InodeRow> {
        Ok(InodeRow {
            id,
            uid: r.get(first)?,
            gid: r.get(first + 1)?,
            mode: r.get(first + 2)?,
            mtime: r.get(first + 3)?,
            atime: r.get(first + 4)?,
            ctime: r.get(first + 5)?,
            refcount: r.get(first + 6)?,
            size: r.get(first + 7)?,
            rdev: r.get(first + 8)?,
            locked: r.get::<_, i64>(first + 9)? != 0,
        })
    }
}

/// The row of inode `id`, if it exists.
pub fn load(c: &Connection, id: i64) -> rusqlite::Result<Option<InodeRow>> {
    c.prepare_cached(
        "SELECT uid, gid, mode, mtime_ns, atime_ns, ctime_ns, refcount, size, rdev, locked
         FROM inodes WHERE id = ?1",
    )?
    .query_row([id], |r| InodeRow::from_row(id, r, 0))
    .optional()
}

/// Whether inode `id` exists.
pub fn exists(c: &Connection, id: i64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM inodes WHERE id = ?1)")?
        .query_row([id], |r| r.get(0))
}

/// Insert a new inode with one link, all three times `now`, and (for a symlink) its
/// target. Returns its id.
#[allow(clippy::too_many_arguments)]
pub fn insert(
    c: &Connection,
    uid: u32,
    gid: u32,
    mode: u32,
    rdev: u32,
    now: i64,
    symlink_target: Option<&[u8]>,
) -> rusqlite::Result<i64> {
    let size = symlink_target.map_or(0, |t| t.len() as i64);
    c.prepare_cached(
        "INSERT INTO inodes (uid, gid, mode, mtime_ns, atime_ns, ctime_ns, refcount, size, rdev)
         VALUES (?1, ?2, ?3, ?4, ?4, ?4, 1, ?5, ?6)",
    )?
    .execute(params![uid, gid, mode, now, size, rdev])?;
    let ino = c.last_insert_rowid();
    if let Some(t) = symlink_target {
        c.prepare_cached("INSERT INTO symlink_targets (inode, target) VALUES (?1, ?2)")?
            .execute(params![ino, t])?;
    }
    Ok(ino)
}

/// Create the root directory: id 1, owned by `uid:gid`, `mode`, one link, times `now`
/// (mkfs, and fsck when it is missing).
pub fn insert_root(c: &Connection, uid: u32, gid: u32, mode: u32, now: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO inodes (id, uid, gid, mode, mtime_ns, atime_ns, ctime_ns, refcount)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, 1)",
    )?
    .execute(params![ROOT_INODE, uid, gid, mode, now])?;
    Ok(())
}

/// Set the mode (file type and permissions) of `id`, times untouched (fsck).
pub fn set_mode(c: &Connection, id: i64, mode: u32) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE inodes SET mode = ?2 WHERE id = ?1")?
        .execute(params![id, mode])?;
    Ok(())
}

/// Set the size of `id`, times untouched (fsck: in range, covering the data or target).
pub fn set_size(c: &Connection, id: i64, size: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE inodes SET size = ?2 WHERE id = ?1")?
        .execute(params![id, size])?;
    Ok(())
}

/// Set the refcount of `id` to `refcount`, its number of entries (fsck).
pub fn set_refcount(c: &Connection, id: i64, refcount: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE inodes SET refcount = ?2 WHERE id = ?1")?
        .execute(params![id, refcount])?;
    Ok(())
}

/// Count one more entry of `id`, times untouched (fsck linking it into `/lost+found`).
pub fn inc_refcount(c: &Connection, id: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE inodes SET refcount = refcount + 1 WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Delete the symlink target of `id`, if any (only a symlink has one).
pub fn delete_symlink_target(c: &Connection, id: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM symlink_targets WHERE inode = ?1")?
        .execute([id])?;
    Ok(())
}

/// Write back the attributes of `row` (owner, mode, times, size).
pub fn set_attributes(c: &Connection, row: &InodeRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE inodes SET uid = ?2, gid = ?3, mode = ?4, mtime_ns = ?5, atime_ns = ?6, ctime_ns = ?7,
         size = ?8 WHERE id = ?1",
    )?
    .execute(params![
        row.id, row.uid, row.gid, row.mode, row.mtime, row.atime, row.ctime, row.size
    ])?;
    Ok(())
}

/// Give `to` the owner, mode, atime and mtime of `from`, and ctime `now`.
pub fn copy_attributes(c: &Connection, from: i64, to: i64, now: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE inodes SET (uid, gid, mode, mtime_ns, atime_ns) =
         (SELECT uid, gid, mode, mtime_ns, atime_ns FROM inodes WHERE id = ?1), ctime_ns = ?3
         WHERE id = ?2",
    )?
    .execute(params![from, to, now])?;
    Ok(())
}

/// A new inode with the attributes and symlink target of `from` (unlocked, one link, no
/// xattrs, no blocks). Returns its id.
pub fn clone_row(c: &Connection, from: i64) -> rusqlite::Result<i64> {
    c.prepare_cached(
        "INSERT INTO inodes (uid, gid, mode, mtime_ns, atime_ns, ctime_ns, refcount, size, rdev, locked)
         SELECT uid, gid, mode, mtime_ns, atime_ns, ctime_ns, 1, size, rdev, 0 FROM inodes WHERE id = ?1",
    )?
    .execute([from])?;
    let to = c.last_insert_rowid();
    c.prepare_cached(
        "INSERT INTO symlink_targets (inode, target) SELECT ?2, target FROM symlink_targets WHERE inode = ?1",
    )?
    .execute(params![from, to])?;
    Ok(to)
}

/// Set mtime and ctime (a directory whose entries changed, a file whose data did).
pub fn touch(c: &Connection, id: i64, now: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE inodes SET mtime_ns = ?2, ctime_ns = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}

pub fn touch_ctime(c: &Connection, id: i64, now: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE inodes SET ctime_ns = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}

/// After data of `id` was written: size at least `end`, mtime and ctime `now`, and the
/// mode bits in `kill_mode` cleared, and `S_ISGID` too if `kill_mode` is not 0 and the
/// file is group-executable (what ext4 does on an unprivileged write).
pub fn data_written(c: &Connection, id: i64, end: u64, now: i64, kill_mode: u32) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE inodes SET size = max(size, ?2), mtime_ns = ?3, ctime_ns = ?3,
         mode = mode & ~(?4 | CASE WHEN ?4 != 0 AND mode & ?5 != 0 THEN ?6 ELSE 0 END)
         WHERE id = ?1",
    )?
    .execute(params![id, end as i64, now, kill_mode, libc::S_IXGRP, libc::S_ISGID])?;
    Ok(())
}

/// Add `delta` to an inode's refcount and set its ctime; returns the new refcount.
pub fn add_refcount(c: &Connection, id: i64, delta: i64, now: i64) -> rusqlite::Result<i64> {
    c.prepare_cached("UPDATE inodes SET refcount = refcount + ?2, ctime_ns = ?3 WHERE id = ?1 RETURNING refcount")?
        .query_row(params![id, delta, now], |r| r.get(0))
}

/// Mark `id` and every inode below it locked (immutable). Returns how many rows.
pub fn lock_tree(c: &Connection, id: i64) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "WITH RECURSIVE tree(id) AS (
             SELECT ?1 UNION SELECT contents.inode FROM contents JOIN tree ON contents.parent_inode = tree.id)
         UPDATE inodes SET locked = 1 WHERE id IN tree",
    )?
    .execute([id])
}

/// Delete an inode with no entries: its data blocks, xattrs, symlink target and row.
/// Returns what the release of its blocks freed.
pub fn purge(c: &Connection, id: i64) -> rusqlite::Result<Released> {
    let released = release_blocks(c, id, 0)?;
    super::xattrs::remove_all(c, id)?;
    delete_symlink_target(c, id)?;
    c.prepare_cached("DELETE FROM inodes WHERE id = ?1")?.execute([id])?;
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_releases_names_of_xattrs_and_the_symlink_target() {
        let c = Connection::open_in_memory().unwrap();
        super::super::schema::create_filesystem(&c, 0, 0, 1).unwrap();
        let ino = insert(&c, 0, 0, libc::S_IFLNK | 0o777, 0, 1, Some(b"target")).unwrap();
        super::super::xattrs::insert(&c, ino, b"user.a", b"1").unwrap();
        let names = |c: &Connection| -> i64 { c.query_row("SELECT count(*) FROM names", [], |r| r.get(0)).unwrap() };
        let before = names(&c);
        purge(&c, ino).unwrap();
        assert_eq!(names(&c), before - 1, "the xattr's name use was dropped");
        let targets: i64 = c
            .query_row("SELECT count(*) FROM symlink_targets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(targets, 0);
        assert!(!exists(&c, ino).unwrap());
    }
}
