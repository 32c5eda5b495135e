//! What the operations share above the rows of [`crate::meta`]: kernel inode numbers,
//! attributes, name checks, and removals that also update the in-memory state.

use rusqlite::Connection;

use super::{Attr, BLKSIZE, FsResult, NAME_MAX, Op, err};
use crate::meta::schema::ROOT_INODE;
use crate::meta::{inodes, names};

pub(crate) use crate::meta::inodes::InodeRow;
pub(crate) use crate::meta::names::Entry;

/// An inode number from the kernel as a row id (ENOENT if it cannot be one).
pub(crate) fn ino_id(ino: u64) -> FsResult<i64> {
    match i64::try_from(ino) {
        Ok(id) if id > 0 => Ok(id),
        _ => err(libc::ENOENT),
    }
}

pub(crate) fn load_inode(c: &Connection, id: i64) -> FsResult<InodeRow> {
    match inodes::load(c, id)? {
        Some(row) => Ok(row),
        None => err(libc::ENOENT),
    }
}

/// Load `id`, which must be a directory that still has its entry.
pub(crate) fn load_dir(c: &Connection, id: i64) -> FsResult<InodeRow> {
    let row = load_inode(c, id)?;
    if !row.is_dir() {
        return err(libc::ENOTDIR);
    }
    Ok(row)
}

pub(crate) fn attr_of(c: &Connection, row: &InodeRow) -> FsResult<Attr> {
    let nlink = if row.is_dir() {
        if row.refcount <= 0 {
            0
        } else {
            row.refcount
                .saturating_add(1)
                .saturating_add(names::subdir_count(c, row.id)?)
        }
    } else {
        row.refcount.max(0)
    };
    let size = row.size();
    Ok(Attr {
        ino: row.id as u64,
        size,
        blocks: size.div_ceil(512),
        atime: row.atime,
        mtime: row.mtime,
        ctime: row.ctime,
        mode: row.mode,
        nlink: u32::try_from(nlink).unwrap_or(u32::MAX),
        uid: row.uid,
        gid: row.gid,
        rdev: row.rdev,
        blksize: BLKSIZE,
    })
}

pub(crate) fn attr(c: &Connection, id: i64) -> FsResult<Attr> {
    let row = load_inode(c, id)?;
    attr_of(c, &row)
}

/// Check a name for a directory entry: EINVAL if empty or containing '/' or NUL,
/// ENAMETOOLONG beyond [`NAME_MAX`]. `.` and `..` must be handled by the caller first.
pub(crate) fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name.iter().any(|&b| b == b'/' || b == 0) {
        return err(libc::EINVAL);
    }
    if name.len() > NAME_MAX {
        return err(libc::ENAMETOOLONG);
    }
    Ok(())
}

pub(crate) fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// Whether directory `anc` is `dir` or one of its ancestors (walks up the parents).
pub(crate) fn is_ancestor_or_self(c: &Connection, anc: i64, mut dir: i64) -> FsResult<bool> {
    // A bound on the depth, so a damaged DB with a cycle cannot hang us.
    for _ in 0..(1 << 20) {
        if dir == anc {
            return Ok(true);
        }
        if dir == ROOT_INODE {
            return Ok(false);
        }
        let up = names::parent_of(c, dir)?;
        if up == dir {
            return Ok(false);
        }
        dir = up;
    }
    log::error!("metadata database: directory {dir} is in a cycle");
    err(libc::EIO)
}

/// Remove the entry `e` of directory `parent`: the row, its name use and one link of
/// its inode; purge the inode if that was its last entry and the kernel does not know
/// it. Does not touch the parent's times.
pub(crate) fn remove_entry(op: &mut Op<'_>, e: Entry) -> FsResult<()> {
    names::delete_entry(&op.tx, e.rowid, e.name_id)?;
    let left = inodes::add_refcount(&op.tx, e.inode, -1, op.now)?;
    if left <= 0 && op.lookups.get(&e.inode).copied().unwrap_or(0) == 0 {
        purge_inode(op, e.inode)?;
    }
    Ok(())
}

/// Delete an inode with no entries (see [`inodes::purge`]), queueing the objects freed
/// for deletion from the store and the inode for the cache to forget.
pub(crate) fn purge_inode(op: &mut Op<'_>, ino: i64) -> FsResult<()> {
    let released = inodes::purge(&op.tx, ino)?;
    op.deleted_objects.extend(released.objects);
    op.purged.push(ino);
    Ok(())
}

/// Whether the process behind `ctx` is root or a member of group `gid`. Supplementary
/// groups come from `/proc/<pid>/status`; if that cannot be read, only the primary
/// group counts.
pub(crate) fn in_group_or_root(ctx: &super::Ctx, gid: u32) -> bool {
    if ctx.uid == 0 || ctx.gid == gid {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", ctx.pid)) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|groups| groups.split_whitespace().any(|g| g.parse::<u32>() == Ok(gid)))
}
