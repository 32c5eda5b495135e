//! Whole-tree operations behind `s3fscp`, `s3fslock` and `s3fsrm`: metadata only, no
//! file data is read or written.
//!
//! A tree may hold millions of entries, so the work is split into transactions of at
//! most [`BATCH`] entries: FUSE requests interleave instead of waiting seconds for the
//! DB lock. Like S3QL's, the operations are therefore not atomic with respect to
//! concurrent changes inside the tree; every intermediate state is a consistent
//! filesystem.

use std::collections::{HashMap, VecDeque};

use rusqlite::{Connection, params};

use super::db::{Entry, ino_id, is_ancestor_or_self, load_dir, load_inode, remove_entry};
use super::{Filesystem, FsError, FsResult, err};
use crate::meta::inodes::{self, add_refcount};
use crate::meta::names::{self, has_entries};
use crate::meta::schema::ROOT_INODE;
use crate::meta::{blocks, xattrs};

/// Entries handled per transaction.
const BATCH: usize = 1000;

/// What [`Filesystem::copy_tree`] made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Inodes created (a hard-linked file inside the tree counts once).
    pub inodes: u64,
    /// Directory entries created.
    pub entries: u64,
}

/// What [`Filesystem::remove_tree`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoveReport {
    pub entries: u64,
}

/// One entry of a directory being copied.
struct SourceEntry {
    rowid: i64,
    name_id: i64,
    inode: i64,
    refcount: i64,
    is_dir: bool,
}

fn source_entries(c: &Connection, dir: i64, after: i64) -> FsResult<Vec<SourceEntry>> {
    let mut st = c.prepare_cached(
        "SELECT contents.rowid, name_id, inode, inodes.refcount, mode FROM contents
         JOIN inodes ON inodes.id = contents.inode
         WHERE parent_inode = ?1 AND contents.rowid > ?2 ORDER BY contents.rowid LIMIT ?3",
    )?;
    let rows = st.query_map(params![dir, after, BATCH as i64], |r| {
        Ok(SourceEntry {
            rowid: r.get(0)?,
            name_id: r.get(1)?,
            inode: r.get(2)?,
            refcount: r.get(3)?,
            is_dir: r.get::<_, u32>(4)? & libc::S_IFMT == libc::S_IFDIR,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A new inode with the attributes, xattrs, symlink target and data blocks of `from`
/// (unlocked, one link). The blocks are shared: their refcounts go up, no data moves.
fn clone_inode(c: &Connection, from: i64) -> FsResult<i64> {
    let to = inodes::clone_row(c, from)?;
    xattrs::copy_all(c, from, to)?;
    blocks::share_all_blocks(c, from, to)?;
    Ok(to)
}

impl Filesystem {
    /// Make the empty directory `dst` a copy of the tree under directory `src`: new
    /// inodes sharing the data blocks, hard links inside the tree kept as hard links.
    /// Dirty blocks are uploaded first, since only uploaded blocks can be shared.
    pub fn copy_tree(&self, src: u64, dst: u64) -> FsResult<CopyReport> {
        let (src, dst) = (ino_id(src)?, ino_id(dst)?);
        let check = |c: &Connection| -> FsResult<()> {
            let s = load_dir(c, src)?;
            let d = load_dir(c, dst)?;
            if s.refcount <= 0 || d.refcount <= 0 {
                return err(libc::ENOENT);
            }
            if d.locked {
                return err(libc::EPERM);
            }
            if is_ancestor_or_self(c, src, dst)? {
                return err(libc::EINVAL);
            }
            if has_entries(c, dst)? {
                return err(libc::ENOTEMPTY);
            }
            Ok(())
        };
        // Checked before the upload, to fail fast, and again in the transaction that
        // starts the copy: the tree may change while dirty blocks upload.
        self.transact(|op| check(&op.tx))?;
        if let Some(cache) = self.cache() {
            cache.upload_all_unless_store_down().map_err(|e| {
                log::error!("copy: cannot upload dirty blocks first: {e}");
                FsError::new(e.errno())
            })?;
        }
        let mut report = CopyReport::default();
        self.transact(|op| {
            check(&op.tx)?;
            inodes::copy_attributes(&op.tx, src, dst, op.now)?;
            Ok(xattrs::copy_all(&op.tx, src, dst)?)
        })?;
        // Inodes with more than one link already copied: source → copy.
        let mut links: HashMap<i64, i64> = HashMap::new();
        let mut queue = VecDeque::from([(src, dst, 0i64)]);
        while let Some((from, to, after)) = queue.pop_front() {
            let next = self.transact(|op| {
                let batch = source_entries(&op.tx, from, after)?;
                let mut last = None;
                for e in &batch {
                    last = Some(e.rowid);
                    if e.inode == dst {
                        // The target was moved into the source during the copy: every
                        // copy is below it, so skipping it keeps the walk out of its own
                        // output.
                        continue;
                    }
                    if !e.is_dir
                        && e.refcount > 1
                        && let Some(&copy) = links.get(&e.inode)
                    {
                        names::insert_entry_by_id(&op.tx, to, e.name_id, copy)?;
                        add_refcount(&op.tx, copy, 1, op.now)?;
                        report.entries += 1;
                        continue;
                    }
                    let copy = clone_inode(&op.tx, e.inode)?;
                    names::insert_entry_by_id(&op.tx, to, e.name_id, copy)?;
                    report.inodes += 1;
                    report.entries += 1;
                    if e.is_dir {
                        queue.push_back((e.inode, copy, 0));
                    } else if e.refcount > 1 {
                        links.insert(e.inode, copy);
                    }
                }
                Ok(last.filter(|_| batch.len() == BATCH))
            })?;
            if let Some(rowid) = next {
                queue.push_front((from, to, rowid));
            }
        }
        Ok(report)
    }

    /// Make `ino` and everything below it immutable: every change fails with EPERM,
    /// for root too; only [`Filesystem::remove_tree`] can remove it.
    pub fn lock_tree(&self, ino: u64) -> FsResult<u64> {
        let id = ino_id(ino)?;
        if id == ROOT_INODE {
            return err(libc::EINVAL);
        }
        self.transact(|op| {
            load_inode(&op.tx, id)?;
            let n = inodes::lock_tree(&op.tx, id)?;
            Ok(n as u64)
        })
    }

    /// Remove entry `name` of `parent` and, if it is a directory, everything below it,
    /// locked or not. The parent itself must not be locked (a locked tree can be
    /// removed as a whole, not in part).
    pub fn remove_tree(&self, parent: u64, name: &[u8]) -> FsResult<RemoveReport> {
        let parent = ino_id(parent)?;
        let top = self.transact(|op| {
            let dir = load_dir(&op.tx, parent)?;
            if dir.locked {
                return err(libc::EPERM);
            }
            super::db::check_name(name)?;
            names::find_entry(&op.tx, parent, name)?.ok_or(FsError::new(libc::ENOENT))
        })?;
        let mut report = RemoveReport::default();
        // Directories being emptied, innermost last.
        let top_is_dir = self.query(|c| load_inode(c, top.inode))?.is_dir();
        let mut stack = if top_is_dir { vec![top.inode] } else { Vec::new() };
        while let Some(&dir) = stack.last() {
            let descend = self.transact(|op| {
                let entries = dir_entries(&op.tx, dir)?;
                for (e, is_dir) in entries {
                    if is_dir && has_entries(&op.tx, e.inode)? {
                        return Ok(Some(e.inode));
                    }
                    remove_entry(op, e)?;
                    report.entries += 1;
                }
                Ok(None)
            })?;
            match descend {
                Some(sub) => stack.push(sub),
                None => {
                    if self.query(|c| Ok(has_entries(c, dir)?))? {
                        continue;
                    }
                    stack.pop();
                }
            }
        }
        self.transact(|op| {
            // Still the same entry? (It may have been renamed meanwhile.)
            match names::find_entry(&op.tx, parent, name)? {
                Some(e) if e.inode == top.inode => {
                    remove_entry(op, e)?;
                    report.entries += 1;
                    Ok(inodes::touch(&op.tx, parent, op.now)?)
                }
                _ => Ok(()),
            }
        })?;
        Ok(report)
    }
}

/// Up to [`BATCH`] entries of `dir`, and whether each is a directory.
fn dir_entries(c: &Connection, dir: i64) -> FsResult<Vec<(Entry, bool)>> {
    let mut st = c.prepare_cached(
        "SELECT contents.rowid, name_id, inode, mode FROM contents JOIN inodes ON inodes.id = contents.inode
         WHERE parent_inode = ?1 ORDER BY contents.rowid LIMIT ?2",
    )?;
    let rows = st.query_map(params![dir, BATCH as i64], |r| {
        Ok((
            Entry {
                rowid: r.get(0)?,
                name_id: r.get(1)?,
                inode: r.get(2)?,
            },
            r.get::<_, u32>(3)? & libc::S_IFMT == libc::S_IFDIR,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
