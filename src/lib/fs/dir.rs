//! Directory listing.
//!
//! The cursor is `contents.rowid` (AUTOINCREMENT, never reused, kept by a rename):
//! offset 0 starts the listing, `.` has offset 1, `..` offset 2, and an entry offset
//! `rowid + 2`. A listing continued after concurrent changes therefore returns every
//! entry that existed throughout exactly once, whatever was added or removed meanwhile.

use rusqlite::{Connection, params};

use super::db::{self, ino_id, load_dir};
use super::{Attr, DirEntry, FileKind, Filesystem, FsResult, READDIR_BATCH};

/// Up to `limit` entries of `dir` after cursor `offset`, `.` and `..` first, each with
/// the row of its inode.
fn list(c: &Connection, dir: i64, offset: u64, limit: usize) -> FsResult<Vec<(DirEntry, Option<db::InodeRow>)>> {
    let row = load_dir(c, dir)?;
    let mut out = Vec::new();
    if offset < 1 {
        out.push((
            DirEntry {
                ino: dir as u64,
                offset: 1,
                kind: FileKind::Directory,
                name: b".".to_vec(),
            },
            None,
        ));
    }
    if offset < 2 {
        out.push((
            DirEntry {
                ino: crate::meta::names::parent_of(c, row.id)? as u64,
                offset: 2,
                kind: FileKind::Directory,
                name: b"..".to_vec(),
            },
            None,
        ));
    }
    let after = i64::try_from(offset.saturating_sub(2)).unwrap_or(i64::MAX);
    let want = limit.saturating_sub(out.len());
    if want == 0 {
        return Ok(out);
    }
    let mut st = c.prepare_cached(
        "SELECT contents.rowid, name, inode, uid, gid, mode, mtime_ns, atime_ns, ctime_ns, inodes.refcount, size, rdev, locked
         FROM contents JOIN names ON names.id = contents.name_id JOIN inodes ON inodes.id = contents.inode
         WHERE parent_inode = ?1 AND contents.rowid > ?2 ORDER BY contents.rowid LIMIT ?3",
    )?;
    let rows = st.query_map(params![dir, after, want as i64], |r| {
        let rowid: i64 = r.get(0)?;
        let inode = db::InodeRow::from_row(r.get(2)?, r, 3)?;
        Ok((
            DirEntry {
                ino: inode.id as u64,
                offset: rowid as u64 + 2,
                kind: FileKind::from_mode(inode.mode),
                name: r.get(1)?,
            },
            Some(inode),
        ))
    })?;
    for r in rows {
        out.push(r?);
    }
    Ok(out)
}

impl Filesystem {
    /// Up to [`READDIR_BATCH`] entries of directory `ino` after cursor `offset` (0 to
    /// start); an empty result ends the listing.
    pub fn readdir(&self, ino: u64, offset: u64) -> FsResult<Vec<DirEntry>> {
        let id = ino_id(ino)?;
        self.query(|c| {
            Ok(list(c, id, offset, READDIR_BATCH)?
                .into_iter()
                .map(|(e, _)| e)
                .collect())
        })
    }

    /// readdir with attributes (FUSE readdirplus). Entries after cursor `offset` are
    /// handed to `add` in order until it returns false (the reply is full) or
    /// [`READDIR_BATCH`] were offered; every accepted entry other than `.` and `..`
    /// counts one kernel lookup, as the kernel counts them.
    pub fn readdirplus(&self, ino: u64, offset: u64, mut add: impl FnMut(&DirEntry, &Attr) -> bool) -> FsResult<()> {
        let id = ino_id(ino)?;
        self.read_counting(|c, counted| {
            for (entry, row) in list(c, id, offset, READDIR_BATCH)? {
                let a = match &row {
                    Some(row) => db::attr_of(c, row)?,
                    None => db::attr(c, entry.ino as i64)?,
                };
                if !add(&entry, &a) {
                    break;
                }
                if row.is_some() {
                    counted.push(entry.ino as i64);
                }
            }
            Ok(())
        })
    }
}
