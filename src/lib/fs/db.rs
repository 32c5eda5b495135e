//! Row-level helpers shared by the operations: inode rows, interned names, entries, and
//! the release of blocks and inodes.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Attr, BLKSIZE, FsResult, NAME_MAX, Op, err};
use crate::meta::schema::ROOT_INODE;

/// One `inodes` row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InodeRow {
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

/// An inode number from the kernel as a row id (ENOENT if it cannot be one).
pub(crate) fn ino_id(ino: u64) -> FsResult<i64> {
    match i64::try_from(ino) {
        Ok(id) if id > 0 => Ok(id),
        _ => err(libc::ENOENT),
    }
}

pub(crate) fn load_inode(c: &Connection, id: i64) -> FsResult<InodeRow> {
    let mut st = c.prepare_cached(
        "SELECT uid, gid, mode, mtime_ns, atime_ns, ctime_ns, refcount, size, rdev, locked
         FROM inodes WHERE id = ?1",
    )?;
    let row = st
        .query_row([id], |r| {
            Ok(InodeRow {
                id,
                uid: r.get(0)?,
                gid: r.get(1)?,
                mode: r.get(2)?,
                mtime: r.get(3)?,
                atime: r.get(4)?,
                ctime: r.get(5)?,
                refcount: r.get(6)?,
                size: r.get(7)?,
                rdev: r.get(8)?,
                locked: r.get::<_, i64>(9)? != 0,
            })
        })
        .optional()?;
    match row {
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

/// Number of subdirectories of a directory.
///
/// This is a scan of the directory's entries: linear in the directory's size.
pub(crate) fn subdir_count(c: &Connection, dir: i64) -> FsResult<i64> {
    let mut st = c.prepare_cached(
        "SELECT count(*) FROM contents JOIN inodes ON inodes.id = contents.inode
         WHERE parent_inode = ?1 AND (mode & ?2) = ?3",
    )?;
    Ok(st.query_row(params![dir, libc::S_IFMT, libc::S_IFDIR], |r| r.get(0))?)
}

pub(crate) fn attr_of(c: &Connection, row: &InodeRow) -> FsResult<Attr> {
    let nlink = if row.is_dir() {
        if row.refcount <= 0 {
            0
        } else {
            row.refcount.saturating_add(1).saturating_add(subdir_count(c, row.id)?)
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

/// Intern `name`: insert it or count one more use. Returns its id.
pub(crate) fn add_name(c: &Connection, name: &[u8]) -> FsResult<i64> {
    let mut st = c.prepare_cached(
        "INSERT INTO names (name, refcount) VALUES (?1, 1)
         ON CONFLICT (name) DO UPDATE SET refcount = refcount + 1 RETURNING id",
    )?;
    Ok(st.query_row([name], |r| r.get(0))?)
}

/// Count one use less of a name; delete it at 0.
pub(crate) fn del_name(c: &Connection, name_id: i64) -> FsResult<()> {
    let mut st = c.prepare_cached("UPDATE names SET refcount = refcount - 1 WHERE id = ?1 RETURNING refcount")?;
    let left: Option<i64> = st.query_row([name_id], |r| r.get(0)).optional()?;
    if left.is_some_and(|n| n <= 0) {
        c.prepare_cached("DELETE FROM names WHERE id = ?1")?
            .execute([name_id])?;
    }
    Ok(())
}

/// A directory entry: its `contents` rowid, name id and inode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub rowid: i64,
    pub name_id: i64,
    pub inode: i64,
}

pub(crate) fn find_entry(c: &Connection, parent: i64, name: &[u8]) -> FsResult<Option<Entry>> {
    let mut st = c.prepare_cached(
        "SELECT contents.rowid, name_id, inode FROM contents JOIN names ON names.id = contents.name_id
         WHERE parent_inode = ?1 AND name = ?2",
    )?;
    Ok(st
        .query_row(params![parent, name], |r| {
            Ok(Entry {
                rowid: r.get(0)?,
                name_id: r.get(1)?,
                inode: r.get(2)?,
            })
        })
        .optional()?)
}

/// The parent of a directory (the root is its own parent; a removed directory too).
pub(crate) fn parent_of(c: &Connection, dir: i64) -> FsResult<i64> {
    if dir == ROOT_INODE {
        return Ok(ROOT_INODE);
    }
    let mut st = c.prepare_cached("SELECT parent_inode FROM contents WHERE inode = ?1 LIMIT 1")?;
    Ok(st.query_row([dir], |r| r.get(0)).optional()?.unwrap_or(dir))
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
        let up = parent_of(c, dir)?;
        if up == dir {
            return Ok(false);
        }
        dir = up;
    }
    log::error!("metadata database: directory {dir} is in a cycle");
    err(libc::EIO)
}

pub(crate) fn has_entries(c: &Connection, dir: i64) -> FsResult<bool> {
    let mut st = c.prepare_cached("SELECT EXISTS (SELECT 1 FROM contents WHERE parent_inode = ?1)")?;
    Ok(st.query_row([dir], |r| r.get(0))?)
}

/// Set mtime and ctime of a directory whose entries changed.
pub(crate) fn touch_dir(c: &Connection, dir: i64, now: i64) -> FsResult<()> {
    c.prepare_cached("UPDATE inodes SET mtime_ns = ?2, ctime_ns = ?2 WHERE id = ?1")?
        .execute(params![dir, now])?;
    Ok(())
}

pub(crate) fn touch_ctime(c: &Connection, ino: i64, now: i64) -> FsResult<()> {
    c.prepare_cached("UPDATE inodes SET ctime_ns = ?2 WHERE id = ?1")?
        .execute(params![ino, now])?;
    Ok(())
}

/// Add `delta` to an inode's refcount and set its ctime; returns the new refcount.
pub(crate) fn add_refcount(c: &Connection, ino: i64, delta: i64, now: i64) -> FsResult<i64> {
    let mut st =
        c.prepare_cached("UPDATE inodes SET refcount = refcount + ?2, ctime_ns = ?3 WHERE id = ?1 RETURNING refcount")?;
    Ok(st.query_row(params![ino, delta, now], |r| r.get(0))?)
}

/// Remove the entry `e` of directory `parent`: the row, its name use and one link of
/// its inode; purge the inode if that was its last entry and the kernel does not know
/// it. Does not touch the parent's times.
pub(crate) fn remove_entry(op: &mut Op<'_>, e: Entry) -> FsResult<()> {
    op.tx
        .prepare_cached("DELETE FROM contents WHERE rowid = ?1")?
        .execute([e.rowid])?;
    del_name(&op.tx, e.name_id)?;
    let left = add_refcount(&op.tx, e.inode, -1, op.now)?;
    if left <= 0 && op.lookups.get(&e.inode).copied().unwrap_or(0) == 0 {
        purge_inode(op, e.inode)?;
    }
    Ok(())
}

/// What [`release_blocks`] freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// Blocks whose refcount reached 0: their rows are deleted.
    pub blocks: Vec<i64>,
    /// Objects whose refcount reached 0: their rows are deleted, and the caller must
    /// delete them from the store (after any upload of them in flight has finished).
    pub objects: Vec<i64>,
}

/// Release the data blocks `from_blockno..` of `inode`: delete their `inode_blocks`
/// rows, decrement `blocks.refcount` by the number of rows that pointed at each block,
/// delete the blocks reaching 0 and decrement `objects.refcount` for each, deleting the
/// objects reaching 0. Returns the ids of the deleted blocks and objects.
///
/// This is the single place where file data is dereferenced; the block cache extends it
/// (dropping cached copies of the released blocks) rather than duplicating it.
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
    let mut dec_block =
        tx.prepare_cached("UPDATE blocks SET refcount = refcount - ?2 WHERE id = ?1 RETURNING refcount, obj_id")?;
    let mut del_block = tx.prepare_cached("DELETE FROM blocks WHERE id = ?1")?;
    let mut dec_obj =
        tx.prepare_cached("UPDATE objects SET refcount = refcount - 1 WHERE id = ?1 RETURNING refcount")?;
    let mut del_obj = tx.prepare_cached("DELETE FROM objects WHERE id = ?1")?;
    for (block, n) in uses {
        let Some((left, obj)): Option<(i64, i64)> = dec_block
            .query_row(params![block, n], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
        else {
            continue;
        };
        if left > 0 {
            continue;
        }
        del_block.execute([block])?;
        released.blocks.push(block);
        let obj_left: Option<i64> = dec_obj.query_row([obj], |r| r.get(0)).optional()?;
        if obj_left.is_some_and(|n| n <= 0) {
            del_obj.execute([obj])?;
            released.objects.push(obj);
        }
    }
    Ok(released)
}

/// Delete an inode with no entries: its data blocks, xattrs, symlink target and row.
pub(crate) fn purge_inode(op: &mut Op<'_>, ino: i64) -> FsResult<()> {
    let released = release_blocks(&op.tx, ino, 0)?;
    op.deleted_objects.extend(released.objects);
    op.purged.push(ino);
    let xattr_names: Vec<i64> = {
        let mut st = op
            .tx
            .prepare_cached("DELETE FROM ext_attributes WHERE inode = ?1 RETURNING name_id")?;
        st.query_map([ino], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    for name_id in xattr_names {
        del_name(&op.tx, name_id)?;
    }
    op.tx
        .prepare_cached("DELETE FROM symlink_targets WHERE inode = ?1")?
        .execute([ino])?;
    op.tx
        .prepare_cached("DELETE FROM inodes WHERE id = ?1")?
        .execute([ino])?;
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
