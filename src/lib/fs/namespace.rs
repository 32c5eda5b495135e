//! Inodes and directory entries: lookup/forget, attributes, creation, removal, rename
//! and hard links.

use rusqlite::OptionalExtension;

use super::db::{self, InodeRow, attr, attr_of, check_name, ino_id, is_dot, load_dir, load_inode, remove_entry};
use super::{Attr, Ctx, Filesystem, FsResult, NAME_MAX, SetAttr, StatFs, TimeSet, err};
use crate::meta::inodes::{self, add_refcount, touch_ctime};
use crate::meta::names::{self, find_entry, insert_entry};
use crate::meta::schema::ROOT_INODE;

/// Longest symlink target (PATH_MAX including the terminating NUL).
const SYMLINK_MAX: usize = libc::PATH_MAX as usize - 1;

/// Free space reported by statfs: an object store does not fill up.
const REPORTED_FREE_BYTES: u64 = 1 << 50;
/// Free inodes reported by statfs.
const REPORTED_FREE_INODES: u64 = 1 << 40;

impl Filesystem {
    /// Look `name` up in directory `parent` and count one kernel lookup of the result.
    /// `.` and `..` resolve to the directory and its parent.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        let parent = ino_id(parent)?;
        self.read_counting(|c, counted| {
            let dir = load_dir(c, parent)?;
            let ino = if name == b"." {
                dir.id
            } else if name == b".." {
                names::parent_of(c, dir.id)?
            } else {
                check_name(name)?;
                match find_entry(c, dir.id, name)? {
                    Some(e) => e.inode,
                    None => return err(libc::ENOENT),
                }
            };
            let a = attr(c, ino)?;
            counted.push(ino);
            Ok(a)
        })
    }

    /// The kernel forgets `nlookup` lookups of `ino`. An inode without entries is purged
    /// when its count reaches 0.
    pub fn forget(&self, ino: u64, nlookup: u64) {
        let Ok(id) = ino_id(ino) else { return };
        let mut state = self.state();
        let Some(count) = state.lookups.get_mut(&id) else {
            return;
        };
        *count = count.saturating_sub(nlookup);
        if *count > 0 {
            return;
        }
        state.lookups.remove(&id);
        drop(state);
        let purged = self.transact(|op| {
            // Looked up again meanwhile? Then the next forget decides.
            if op.lookups.contains_key(&id) {
                return Ok(());
            }
            let refcount: Option<i64> = op
                .tx
                .prepare_cached("SELECT refcount FROM inodes WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            if refcount.is_some_and(|n| n <= 0) && id != ROOT_INODE {
                db::purge_inode(op, id)?;
            }
            Ok(())
        });
        if let Err(e) = purged {
            log::error!("purging inode {id}: {e}");
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let id = ino_id(ino)?;
        self.query(|c| attr(c, id))
    }

    /// Change attributes. Shrinking a file releases (through [`super::release_blocks`])
    /// the blocks lying wholly beyond the new end; cutting the partial last block is the
    /// block cache's work, done by its caller.
    pub fn setattr(&self, ctx: &Ctx, ino: u64, set: &SetAttr) -> FsResult<Attr> {
        let id = ino_id(ino)?;
        if set.size.is_some_and(|s| s > super::MAX_FILE_SIZE) {
            return err(libc::EFBIG);
        }
        // Shrinking: the blocks wholly past the new end are released in the transaction,
        // through the cache (its contract); the partial last block is cut after.
        let shrink = match (set.size, self.cache()) {
            (Some(new), Some(cache)) => {
                let old = self.query(|c| Ok(load_inode(c, id)?.size()))?;
                (new < old).then(|| (cache.clone(), new))
            }
            _ => None,
        };
        let bs = self.block_size();
        let attr = match &shrink {
            Some((cache, new)) => {
                cache.release_range(ino, new.div_ceil(bs), u64::MAX, || self.change_attrs(ctx, id, set))?
            }
            None => self.change_attrs(ctx, id, set)?,
        };
        if let Some((cache, new)) = shrink
            && new % bs != 0
        {
            cache.truncate_block(ino, new / bs, (new % bs) as u32).map_err(|e| {
                log::warn!("block cache: {e}");
                super::FsError::new(e.errno())
            })?;
        }
        Ok(attr)
    }

    /// The transaction of [`Filesystem::setattr`].
    fn change_attrs(&self, ctx: &Ctx, id: i64, set: &SetAttr) -> FsResult<Attr> {
        self.transact(|op| {
            let mut row = load_inode(&op.tx, id)?;
            if row.locked {
                return err(libc::EPERM);
            }
            let now = op.now;
            if let Some(size) = set.size {
                match row.fmt() {
                    libc::S_IFREG => {}
                    libc::S_IFDIR => return err(libc::EISDIR),
                    _ => return err(libc::EINVAL),
                }
                // At most MAX_FILE_SIZE (checked in setattr), so it fits.
                let size = size as i64;
                if size < row.size {
                    let first_gone = (size as u64).div_ceil(op.block_size) as i64;
                    let released = super::release_blocks(&op.tx, id, first_gone)?;
                    op.deleted_objects.extend(released.objects);
                }
                if size != row.size && set.mtime == TimeSet::Omit {
                    row.mtime = now;
                }
                row.size = size;
            }
            if let Some(mode) = set.mode {
                let mut perm = mode & 0o7777;
                if perm & libc::S_ISGID != 0 && !db::in_group_or_root(ctx, set.gid.unwrap_or(row.gid)) {
                    perm &= !libc::S_ISGID;
                }
                row.mode = row.fmt() | perm;
            }
            let chown = set.uid.is_some() || set.gid.is_some();
            if let Some(uid) = set.uid {
                row.uid = uid;
            }
            if let Some(gid) = set.gid {
                row.gid = gid;
            }
            if (chown || set.size.is_some()) && row.fmt() == libc::S_IFREG {
                super::xattr::kill_capability(op, id)?;
            }
            // A truncate by an unprivileged process clears them too (the kernel leaves
            // it to us under FUSE_HANDLE_KILLPRIV_V2), unless it sets the mode itself.
            let truncate = set.size.is_some() && set.mode.is_none();
            if (chown || truncate) && ctx.uid != 0 && !row.is_dir() {
                row.mode &= !libc::S_ISUID;
                if row.mode & libc::S_IXGRP != 0 {
                    row.mode &= !libc::S_ISGID;
                }
            }
            match set.atime {
                TimeSet::Omit => {}
                TimeSet::Now => row.atime = now,
                TimeSet::Set(t) => row.atime = t,
            }
            match set.mtime {
                TimeSet::Omit => {}
                TimeSet::Now => row.mtime = now,
                TimeSet::Set(t) => row.mtime = t,
            }
            row.ctime = set.ctime.unwrap_or(now);
            inodes::set_attributes(&op.tx, &row)?;
            attr_of(&op.tx, &row)
        })
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let id = ino_id(ino)?;
        self.query(|c| {
            let row = load_inode(c, id)?;
            if row.fmt() != libc::S_IFLNK {
                return err(libc::EINVAL);
            }
            let target: Option<Vec<u8>> = c
                .prepare_cached("SELECT target FROM symlink_targets WHERE inode = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            match target {
                Some(t) => Ok(t),
                None => {
                    log::error!("metadata database: symlink {id} has no target");
                    err(libc::EIO)
                }
            }
        })
    }

    /// Create a symlink (mode 0777) to `target`.
    pub fn symlink(&self, ctx: &Ctx, parent: u64, name: &[u8], target: &[u8]) -> FsResult<Attr> {
        if target.is_empty() {
            return err(libc::ENOENT);
        }
        if target.len() > SYMLINK_MAX {
            return err(libc::ENAMETOOLONG);
        }
        self.make_node(ctx, parent, name, libc::S_IFLNK | 0o777, 0, Some(target), false)
    }

    /// Create a regular file, fifo, socket or device. A mode without file type bits
    /// makes a regular file.
    pub fn mknod(&self, ctx: &Ctx, parent: u64, name: &[u8], mode: u32, rdev: u32) -> FsResult<Attr> {
        let mode = match mode & libc::S_IFMT {
            0 => mode | libc::S_IFREG,
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => mode,
            libc::S_IFDIR => return err(libc::EPERM),
            _ => return err(libc::EINVAL),
        };
        let rdev = if matches!(mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK) {
            rdev
        } else {
            0
        };
        self.make_node(ctx, parent, name, mode, rdev, None, false)
    }

    pub fn mkdir(&self, ctx: &Ctx, parent: u64, name: &[u8], mode: u32) -> FsResult<Attr> {
        // As Linux: mkdir keeps the permission and sticky bits only.
        self.make_node(ctx, parent, name, libc::S_IFDIR | (mode & 0o1777), 0, None, false)
    }

    /// The name-level part of open(O_CREAT): create a regular file, or, with `flags`
    /// lacking O_EXCL, return an existing non-directory (O_TRUNC is the caller's job).
    pub fn create(&self, ctx: &Ctx, parent: u64, name: &[u8], mode: u32, flags: i32) -> FsResult<Attr> {
        let excl = flags & libc::O_EXCL != 0;
        if is_dot(name) && !excl {
            let parent = ino_id(parent)?;
            return self.query(|c| load_dir(c, parent)).and_then(|_| err(libc::EISDIR));
        }
        self.make_node(ctx, parent, name, libc::S_IFREG | (mode & 0o7777), 0, None, !excl)
    }

    /// Create an inode of `mode` and its entry `name` in `parent`. If the name exists,
    /// EEXIST, or with `reuse` the existing non-directory (EISDIR for a directory).
    #[allow(clippy::too_many_arguments)]
    fn make_node(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        target: Option<&[u8]>,
        reuse: bool,
    ) -> FsResult<Attr> {
        let parent = ino_id(parent)?;
        self.transact(|op| {
            let dir = load_dir(&op.tx, parent)?;
            if is_dot(name) || is_reserved(name) {
                return err(libc::EEXIST);
            }
            check_name(name)?;
            if dir.refcount <= 0 {
                return err(libc::ENOENT);
            }
            if let Some(e) = find_entry(&op.tx, parent, name)? {
                if !reuse {
                    return err(libc::EEXIST);
                }
                let a = attr(&op.tx, e.inode)?;
                if a.kind() == super::FileKind::Directory {
                    return err(libc::EISDIR);
                }
                op.add_lookups.push(e.inode);
                return Ok(a);
            }
            if dir.locked {
                return err(libc::EPERM);
            }
            let mut mode = mode;
            let mut gid = ctx.gid;
            if dir.mode & libc::S_ISGID != 0 {
                gid = dir.gid;
                if mode & libc::S_IFMT == libc::S_IFDIR {
                    mode |= libc::S_ISGID;
                } else if mode & (libc::S_ISGID | libc::S_IXGRP) == (libc::S_ISGID | libc::S_IXGRP)
                    && !db::in_group_or_root(ctx, gid)
                {
                    mode &= !libc::S_ISGID;
                }
            }
            let ino = inodes::insert(&op.tx, ctx.uid, gid, mode, rdev, op.now, target)?;
            insert_entry(&op.tx, parent, name, ino)?;
            inodes::touch(&op.tx, parent, op.now)?;
            let a = attr(&op.tx, ino)?;
            op.add_lookups.push(ino);
            Ok(a)
        })
    }

    /// Remove a non-directory entry.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let parent = ino_id(parent)?;
        self.transact(|op| {
            let dir = load_dir(&op.tx, parent)?;
            if is_dot(name) {
                return err(libc::EISDIR);
            }
            check_name(name)?;
            let e = find_entry(&op.tx, parent, name)?.ok_or(super::FsError::new(libc::ENOENT))?;
            let row = load_inode(&op.tx, e.inode)?;
            if row.is_dir() {
                return err(libc::EISDIR);
            }
            if dir.locked || row.locked {
                return err(libc::EPERM);
            }
            remove_entry(op, e)?;
            Ok(inodes::touch(&op.tx, parent, op.now)?)
        })
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let parent = ino_id(parent)?;
        self.transact(|op| {
            let dir = load_dir(&op.tx, parent)?;
            if name == b"." {
                return err(libc::EINVAL);
            }
            if name == b".." {
                return err(libc::ENOTEMPTY);
            }
            check_name(name)?;
            let e = find_entry(&op.tx, parent, name)?.ok_or(super::FsError::new(libc::ENOENT))?;
            let row = load_inode(&op.tx, e.inode)?;
            if !row.is_dir() {
                return err(libc::ENOTDIR);
            }
            if dir.locked || row.locked {
                return err(libc::EPERM);
            }
            if names::has_entries(&op.tx, e.inode)? {
                return err(libc::ENOTEMPTY);
            }
            remove_entry(op, e)?;
            Ok(inodes::touch(&op.tx, parent, op.now)?)
        })
    }

    /// rename(2)/renameat2(2) with `flags` 0, `RENAME_NOREPLACE` or `RENAME_EXCHANGE`.
    pub fn rename(&self, parent: u64, name: &[u8], newparent: u64, newname: &[u8], flags: u32) -> FsResult<()> {
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange) {
            return err(libc::EINVAL);
        }
        let parent = ino_id(parent)?;
        let newparent = ino_id(newparent)?;
        if is_reserved(newname) {
            // The control file cannot be replaced or exchanged.
            return err(libc::EPERM);
        }
        self.transact(|op| {
            let pdir = load_dir(&op.tx, parent)?;
            let npdir = load_dir(&op.tx, newparent)?;
            if is_dot(name) {
                return err(libc::EBUSY);
            }
            if is_dot(newname) {
                return err(if noreplace { libc::EEXIST } else { libc::EBUSY });
            }
            check_name(name)?;
            check_name(newname)?;
            let src = find_entry(&op.tx, parent, name)?.ok_or(super::FsError::new(libc::ENOENT))?;
            let dst = find_entry(&op.tx, newparent, newname)?;
            if noreplace && dst.is_some() {
                return err(libc::EEXIST);
            }
            if exchange && dst.is_none() {
                return err(libc::ENOENT);
            }
            if npdir.refcount <= 0 {
                return err(libc::ENOENT);
            }
            if dst.is_some_and(|d| d.inode == src.inode) {
                // The same inode (the same entry, or two hard links): nothing to do.
                return Ok(());
            }
            let srow = load_inode(&op.tx, src.inode)?;
            let drow = match dst {
                Some(d) => Some(load_inode(&op.tx, d.inode)?),
                None => None,
            };
            if pdir.locked || npdir.locked || srow.locked || drow.is_some_and(|d| d.locked) {
                return err(libc::EPERM);
            }
            if srow.id == ROOT_INODE {
                return err(libc::EBUSY);
            }
            if srow.is_dir() && db::is_ancestor_or_self(&op.tx, srow.id, newparent)? {
                return err(libc::EINVAL);
            }
            if exchange {
                let drow = drow.expect("exchange has a target");
                if drow.is_dir() && db::is_ancestor_or_self(&op.tx, drow.id, parent)? {
                    return err(libc::EINVAL);
                }
                let dst = dst.expect("exchange has a target");
                names::set_entry_inode(&op.tx, src.rowid, dst.inode)?;
                names::set_entry_inode(&op.tx, dst.rowid, src.inode)?;
                touch_ctime(&op.tx, src.inode, op.now)?;
                touch_ctime(&op.tx, dst.inode, op.now)?;
            } else {
                if let (Some(d), Some(drow)) = (dst, drow) {
                    if srow.is_dir() && !drow.is_dir() {
                        return err(libc::ENOTDIR);
                    }
                    if !srow.is_dir() && drow.is_dir() {
                        return err(libc::EISDIR);
                    }
                    if drow.is_dir() && names::has_entries(&op.tx, drow.id)? {
                        return err(libc::ENOTEMPTY);
                    }
                    remove_entry(op, d)?;
                }
                names::move_entry(&op.tx, src.rowid, src.name_id, newparent, newname)?;
                touch_ctime(&op.tx, src.inode, op.now)?;
            }
            inodes::touch(&op.tx, parent, op.now)?;
            if newparent != parent {
                inodes::touch(&op.tx, newparent, op.now)?;
            }
            Ok(())
        })
    }

    /// Make a new entry `newname` in `newparent` for the non-directory `ino`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        let id = ino_id(ino)?;
        let newparent = ino_id(newparent)?;
        if is_dot(newname) || is_reserved(newname) {
            return err(libc::EEXIST);
        }
        check_name(newname)?;
        self.transact(|op| {
            let row = load_inode(&op.tx, id)?;
            if row.is_dir() {
                return err(libc::EPERM);
            }
            let dir = live_dir(&op.tx, newparent)?;
            if row.refcount <= 0 {
                return err(libc::ENOENT);
            }
            if find_entry(&op.tx, newparent, newname)?.is_some() {
                return err(libc::EEXIST);
            }
            if dir.locked || row.locked {
                return err(libc::EPERM);
            }
            if row.refcount >= i64::from(u32::MAX) {
                return err(libc::EMLINK);
            }
            insert_entry(&op.tx, newparent, newname, id)?;
            add_refcount(&op.tx, id, 1, op.now)?;
            inodes::touch(&op.tx, newparent, op.now)?;
            let a = attr(&op.tx, id)?;
            op.add_lookups.push(id);
            Ok(a)
        })
    }

    /// access(2). The kernel checks modes itself (`default_permissions`, on every
    /// mount): only existence is checked.
    pub fn access(&self, ino: u64, _mask: i32) -> FsResult<()> {
        let id = ino_id(ino)?;
        self.query(|c| load_inode(c, id).map(|_| ()))
    }

    /// opendir(2): `ino` must be a directory.
    pub fn opendir(&self, ino: u64) -> FsResult<()> {
        let id = ino_id(ino)?;
        self.query(|c| load_dir(c, id).map(|_| ()))
    }

    /// statfs(2): used space from the blocks' sizes, plus a fixed 1 PiB free, since an
    /// object store does not fill up; inodes in use plus a large number free.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let (used_bytes, inodes): (f64, i64) = self.query(|c| {
            Ok(c.query_row(
                // total(), not sum(): a sum past i64 (a damaged or hostile DB) is a
                // large number, not an error.
                "SELECT (SELECT total(size) FROM blocks), (SELECT count(*) FROM inodes)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })?;
        let frsize = u64::from(super::BLKSIZE);
        // Saturating: f64 → u64 clamps to 0..=u64::MAX; room is left for the free blocks.
        let used = (used_bytes as u64).div_ceil(frsize).min(u64::MAX / 2);
        let free = REPORTED_FREE_BYTES / frsize;
        Ok(StatFs {
            frsize: super::BLKSIZE,
            bsize: super::BLKSIZE,
            blocks: used + free,
            bfree: free,
            bavail: free,
            files: inodes.max(0) as u64 + REPORTED_FREE_INODES,
            ffree: REPORTED_FREE_INODES,
            namelen: NAME_MAX as u32,
        })
    }
}

/// Whether `name` is the control file's (see [`super::CONTROL_NAME`]).
fn is_reserved(name: &[u8]) -> bool {
    name == super::CONTROL_NAME.as_bytes()
}

/// Load a directory that can receive entries (not removed).
fn live_dir(c: &rusqlite::Connection, id: i64) -> FsResult<InodeRow> {
    let dir = load_dir(c, id)?;
    if dir.refcount <= 0 {
        return err(libc::ENOENT);
    }
    Ok(dir)
}
