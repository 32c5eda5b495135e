//! The FUSE adapter: decode a kernel request, call [`crate::fs::Filesystem`], reply.
//! No filesystem logic lives here, so the core is tested without a mount.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use crate::control::{CTRL_INO, CTRL_NAME, Control, Invalidate};
use crate::fs::{Attr, Ctx, FileKind, Filesystem, FsError, SetAttr, TimeSet};
use crate::requests::{self, Kind};
use crate::served::Served;

/// Attributes and entries only change through this mount, so the kernel may cache them
/// long (as S3QL does).
const TTL: Duration = Duration::from_secs(3600);
/// A follower's: they change when it moves to a newer version, and the kernel must see
/// that within this.
const FOLLOWER_TTL: Duration = Duration::from_secs(1);

/// The adapter handed to fuser.
pub struct Adapter {
    served: Arc<Served>,
    /// How long the kernel may cache entries and attributes.
    ttl: Duration,
    /// The control file; absent in tests that mount only the namespace.
    control: Option<Arc<Control>>,
    /// Set once the session runs: tells the kernel about changes made by commands.
    notifier: Arc<OnceLock<fuser::Notifier>>,
    /// The kernel handles opendir itself (FUSE_NO_OPENDIR_SUPPORT); set at init.
    zero_message_opendir: bool,
}

impl Adapter {
    /// Serve `served`. A follower's entries and attributes are cached briefly and its
    /// file data and listings not kept between opens, so that the kernel sees each
    /// newer version.
    pub fn new(served: Arc<Served>, control: Option<Arc<Control>>) -> Adapter {
        Adapter {
            ttl: if served.follows() { FOLLOWER_TTL } else { TTL },
            served,
            control,
            notifier: Arc::default(),
            zero_message_opendir: false,
        }
    }

    /// The filesystem of the current generation.
    fn fs(&self) -> Arc<Filesystem> {
        self.served.current().fs.clone()
    }

    /// Where to put the session's notifier once it is mounted.
    pub fn notifier_slot(&self) -> Arc<OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    /// Count a request on `ino`; the control file's own traffic (s3fsstat, s3fsctrl) is
    /// not counted, so the counts describe the filesystem's workload.
    fn count(&self, kind: Kind, ino: INodeNo) {
        if self.ctrl(ino).is_none() {
            requests::count(kind);
        }
    }

    /// The control file, if `ino` is it.
    fn ctrl(&self, ino: INodeNo) -> Option<&Control> {
        self.control.as_deref().filter(|_| ino.0 == CTRL_INO)
    }

    fn invalidate(&self, what: Invalidate) {
        let Some(n) = self.notifier.get() else { return };
        // Offset 0, length 0: the attributes and every cached page, which for a
        // directory is its cached listing.
        let r = match &what {
            Invalidate::Nothing => Ok(()),
            Invalidate::Entry { parent, name } => n
                .inval_entry(INodeNo(*parent), OsStr::from_bytes(name))
                // The entry drops the parent's listing only if the kernel had the entry.
                .or_else(|e| match e.raw_os_error() {
                    Some(libc::ENOENT) => Ok(()),
                    _ => Err(e),
                })
                .and_then(|()| n.inval_inode(INodeNo(*parent), 0, 0)),
            Invalidate::Inode(ino) => n.inval_inode(INodeNo(*ino), 0, 0),
        };
        // ENOENT: the kernel did not have it cached; nothing to drop.
        if let Err(e) = r
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            log::warn!("cannot invalidate the kernel's cache ({what:?}): {e}");
        }
    }
}

fn errno(e: FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// A time from the kernel as nanoseconds since the epoch. Times past what i64
/// nanoseconds hold (years before 1678 or after 2262) are clamped to the nearest one, as
/// ext4 clamps to its own range, instead of wrapping around to another century.
fn ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

fn time_set(t: Option<TimeOrNow>) -> TimeSet {
    match t {
        None => TimeSet::Omit,
        Some(TimeOrNow::Now) => TimeSet::Now,
        Some(TimeOrNow::SpecificTime(t)) => TimeSet::Set(ns(t)),
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::RegularFile => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::NamedPipe => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: file_type(a.kind()),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn entry(reply: ReplyEntry, ttl: Duration, r: Result<Attr, FsError>) {
    match r {
        Ok(a) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(errno(e)),
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// How the kernel should cache an open file.
///
/// Keep the kernel's page cache across opens: only this mount changes data. A file
/// opened write-only (cp, tar, rsync and dd targets) bypasses it (direct I/O): its data
/// is not kept twice in memory (kernel pages and the block cache's file), goes to the
/// block cache with one copy less, and the kernel skips the `security.capability`
/// lookup before the first write (the core clears set-ID bits and capabilities itself).
/// The kernel drops cached pages of a range written that way, so readers through other
/// descriptors stay coherent. Such a descriptor cannot be mapped, so mmap is unaffected.
fn open_flags(flags: i32) -> FopenFlags {
    if flags & libc::O_ACCMODE == libc::O_WRONLY {
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::FOPEN_KEEP_CACHE
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; too small a buffer is ERANGE.
fn xattr(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, FsError>) {
    match r {
        Err(e) => reply.error(errno(e)),
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
    }
}

impl fuser::Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large writes and readdirplus; the kernel page cache may keep file data between
        // opens because all changes go through this mount.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // One at a time: fuser adds none of a set if the kernel lacks any one of them.
        for flag in [
            InitFlags::FUSE_BIG_WRITES,
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_MAX_PAGES,
            // The core clears set-ID bits and capabilities itself, so the kernel need
            // not ask for security.capability before every write.
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        ] {
            let _ = config.add_capabilities(flag);
        }
        // Opening a directory needs nothing from the core (the kernel has checked the
        // type and, with default_permissions, the access): answering ENOSYS once makes
        // the kernel stop sending OPENDIR and RELEASEDIR, two round trips per directory
        // read, and cache listings in its page cache (FOPEN_CACHE_DIR). Every change to
        // a directory made through this mount drops that cache; changes made by control
        // commands drop it through a notification (see `invalidate`).
        // A follower's listings change with each version: it answers OPENDIR, binding
        // the handle to the version being served.
        self.zero_message_opendir =
            !self.served.follows() && config.add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT).is_ok();
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if name.as_bytes() != CTRL_NAME.as_bytes() {
            requests::count(Kind::Lookup);
        }
        if let Some(c) = &self.control
            && name.as_bytes() == CTRL_NAME.as_bytes()
        {
            // In every directory, listed in none.
            let r = self.fs().opendir(parent.0).map(|()| c.attr());
            return entry(reply, self.ttl, r);
        }
        entry(reply, self.ttl, self.fs().lookup(parent.0, name.as_bytes()));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.count(Kind::Forget, ino);
        if self.ctrl(ino).is_none() {
            self.fs().forget(ino.0, nlookup);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count(Kind::Getattr, ino);
        if let Some(c) = self.ctrl(ino) {
            return reply.attr(&self.ttl, &file_attr(&c.attr()));
        }
        // fstat of an open file: the version it was opened on (a follower's).
        let g = self.served.handle(fh.map_or(0, |h| h.0));
        match g.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.count(Kind::Setattr, ino);
        if self.ctrl(ino).is_some() {
            return reply.error(Errno::EPERM);
        }
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_set(atime),
            mtime: time_set(mtime),
            ctime: ctime.map(ns),
        };
        match self.fs().setattr(&ctx(req), ino.0, &set) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        requests::count(Kind::Readlink);
        match self.fs().readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        requests::count(Kind::Mknod);
        entry(
            reply,
            self.ttl,
            self.fs()
                .mknod(&ctx(req), parent.0, name.as_bytes(), mode & !umask, rdev),
        );
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        requests::count(Kind::Mkdir);
        entry(
            reply,
            self.ttl,
            self.fs().mkdir(&ctx(req), parent.0, name.as_bytes(), mode & !umask),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        requests::count(Kind::Unlink);
        empty(reply, self.fs().unlink(parent.0, name.as_bytes()));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        requests::count(Kind::Rmdir);
        empty(reply, self.fs().rmdir(parent.0, name.as_bytes()));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        requests::count(Kind::Symlink);
        entry(
            reply,
            self.ttl,
            self.fs()
                .symlink(&ctx(req), parent.0, link_name.as_bytes(), target.as_os_str().as_bytes()),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        requests::count(Kind::Rename);
        empty(
            reply,
            self.fs()
                .rename(parent.0, name.as_bytes(), newparent.0, newname.as_bytes(), flags.bits()),
        );
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        requests::count(Kind::Link);
        entry(reply, self.ttl, self.fs().link(ino.0, newparent.0, newname.as_bytes()));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.count(Kind::Open, ino);
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        if self.ctrl(ino).is_some() {
            return match write {
                true => reply.error(Errno::EPERM),
                false => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            };
        }
        let (fh, g) = self.served.open();
        match g.fs.open_file(ino.0, write) {
            // A follower's pages may be of an older version: not kept between opens.
            Ok(_) if self.served.follows() => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Ok(_) => reply.opened(FileHandle(fh), open_flags(flags.0)),
            Err(e) => {
                self.served.release(fh);
                reply.error(errno(e))
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.count(Kind::Read, ino);
        if self.ctrl(ino).is_some() {
            return reply.data(&[]);
        }
        match self.served.handle(fh.0).fs.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        requests::count(Kind::Write);
        match self.fs().write(&ctx(req), ino.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        requests::count(Kind::Flush);
        // close() promises nothing about durability (fsync does), so there is nothing to
        // do: ENOSYS tells the kernel never to send FLUSH again, saving a round trip per
        // close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.count(Kind::Release, ino);
        self.served.release(fh.0);
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        requests::count(Kind::Releasedir);
        self.served.release(fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        requests::count(Kind::Fsync);
        empty(reply, self.fs().fsync(ino.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        requests::count(Kind::Opendir);
        if self.served.follows() {
            let (fh, g) = self.served.open();
            return match g.fs.opendir(ino.0) {
                Ok(()) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => {
                    self.served.release(fh);
                    reply.error(errno(e))
                }
            };
        }
        match self.fs().opendir(ino.0) {
            Ok(()) if self.zero_message_opendir => reply.error(Errno::ENOSYS),
            // An older kernel: cache the listing all the same.
            Ok(()) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        requests::count(Kind::Readdir);
        let g = self.served.handle(fh.0);
        let mut offset = offset;
        loop {
            let batch = match g.fs.readdir(ino.0, offset) {
                Ok(b) => b,
                Err(e) => return reply.error(errno(e)),
            };
            if batch.is_empty() {
                return reply.ok();
            }
            for e in batch {
                if reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), OsStr::from_bytes(&e.name)) {
                    return reply.ok();
                }
                offset = e.offset;
            }
        }
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        requests::count(Kind::Readdirplus);
        let result = self.served.handle(fh.0).fs.readdirplus(ino.0, offset, |e, a| {
            // fuser's `add` is true when the buffer is full and the entry was not added;
            // the core wants true for an accepted entry (one the kernel will count).
            !reply.add(
                INodeNo(e.ino),
                e.offset,
                OsStr::from_bytes(&e.name),
                &self.ttl,
                &file_attr(a),
                Generation(0),
            )
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        requests::count(Kind::Fsyncdir);
        empty(reply, self.fs().sync_metadata().map_err(|_| FsError::new(libc::EIO)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        requests::count(Kind::Statfs);
        match self.fs().statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.count(Kind::Setxattr, ino);
        if let Some(c) = self.ctrl(ino) {
            let r = c.set(req.uid(), name.as_bytes(), value);
            return empty(reply, r.map(|what| self.invalidate(what)));
        }
        empty(reply, self.fs().setxattr(ino.0, name.as_bytes(), value, flags));
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.count(Kind::Getxattr, ino);
        if let Some(c) = self.ctrl(ino) {
            return xattr(reply, size, c.get(req.uid(), name.as_bytes()));
        }
        xattr(reply, size, self.fs().getxattr(ino.0, name.as_bytes()));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.count(Kind::Listxattr, ino);
        if self.ctrl(ino).is_some() {
            return xattr(reply, size, Ok(Vec::new()));
        }
        let list = self.fs().listxattr(ino.0).map(|names| {
            names
                .into_iter()
                .flat_map(|mut n| {
                    n.push(0);
                    n
                })
                .collect()
        });
        xattr(reply, size, list);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count(Kind::Removexattr, ino);
        if self.ctrl(ino).is_some() {
            return reply.error(Errno::EPERM);
        }
        empty(reply, self.fs().removexattr(ino.0, name.as_bytes()));
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.count(Kind::Access, ino);
        if self.ctrl(ino).is_some() {
            return reply.ok();
        }
        empty(reply, self.fs().access(ino.0, mask.bits()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        requests::count(Kind::Create);
        match self
            .fs()
            .create(&ctx(req), parent.0, name.as_bytes(), mode & !umask, flags)
        {
            Ok(a) => reply.created(
                &self.ttl,
                &file_attr(&a),
                Generation(0),
                FileHandle(0),
                open_flags(flags),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        requests::count(Kind::Fallocate);
        empty(reply, self.fs().fallocate(&ctx(req), ino.0, offset, length, mode));
    }

    fn lseek(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        requests::count(Kind::Lseek);
        match self.served.handle(fh.0).fs.lseek(ino.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        requests::count(Kind::CopyFileRange);
        match self
            .fs()
            .copy_file_range(&ctx(req), ino_in.0, offset_in, ino_out.0, offset_out, len)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_beyond_what_nanoseconds_hold_are_clamped_not_wrapped() {
        let year = Duration::from_secs(365 * 86400);
        // 2300 and 1600: outside 1678..2262.
        assert_eq!(ns(UNIX_EPOCH + year * 330), i64::MAX);
        assert_eq!(ns(UNIX_EPOCH - year * 370), i64::MIN);
        assert_eq!(ns(UNIX_EPOCH + Duration::new(5, 7)), 5_000_000_007);
        assert_eq!(ns(UNIX_EPOCH - Duration::new(5, 7)), -5_000_000_007);
        assert_eq!(
            time(ns(UNIX_EPOCH + year * 330)),
            UNIX_EPOCH + Duration::from_nanos(i64::MAX as u64)
        );
    }
}
