//! The filesystem core: every metadata operation of a mounted filesystem, as plain Rust
//! with no FUSE types, so the FUSE adapter only decodes, calls [`Filesystem`] and replies.
//!
//! One [`Filesystem`] owns the SQLite connections of a mount, each behind a mutex
//! (SQLite connections are not `Sync`); all methods take `&self`, so any number of FUSE
//! session threads can share it. Every change goes through the writing connection,
//! which the block cache shares for its upload transactions. Reads (lookup, getattr,
//! readdir, getxattr…) use the writer too when it is free, since its page cache is
//! warm, and otherwise a second, read-only connection: WAL gives that one the state of
//! the last commit, so reads never queue behind a batch of upload commits. (The read
//! connection drops its page cache whenever the writer committed since its last read:
//! sending every read there cost an untar 10–25 % more daemon CPU.) A lock
//! is held only while SQLite works: nothing slow (network, fsync) ever runs under it.
//! Lock order: writer, then `state`, then reader; a read holding `state` only tries the
//! writer's lock.
//!
//! Every operation that changes anything is one SQLite transaction, so a crash never
//! leaves half an operation behind. The invariants of every table are those documented
//! in [`crate::meta::schema`]; in particular `inodes.refcount` is the number of directory
//! entries naming an inode (1 for every live directory), and `names.refcount` counts the
//! uses of a name by entries and xattrs.
//!
//! **Kernel lookup counts.** Every method whose FUSE counterpart replies with an entry
//! ([`Filesystem::lookup`], [`Filesystem::create`], [`Filesystem::mknod`],
//! [`Filesystem::mkdir`], [`Filesystem::symlink`], [`Filesystem::link`], and each entry
//! accepted by [`Filesystem::readdirplus`] other than `.` and `..`) counts one lookup of
//! the inode it returns; [`Filesystem::forget`] takes them back. An inode whose last
//! entry is removed stays (so an open file keeps working) until its lookup count is 0,
//! and is then purged. Counts live in memory: after a crash, [`Filesystem::open`] purges
//! every inode left without entries.
//!
//! **Permissions.** Like S3QL, the core does not check permissions: every mount has
//! `default_permissions`, so the kernel checks modes and ownership itself, for the
//! mounting user as for any other. The core still applies what the kernel leaves to the
//! filesystem: set-group-ID inheritance, clearing set-user/group-ID bits on chown and on
//! chmod by a user outside the file's group. Modes arrive with the umask already applied.
//!
//! **Released objects.** Purging an inode or shrinking a file releases blocks (see
//! [`release_blocks`]); objects whose refcount reaches 0 move to `released_objects` in
//! the same transaction, and the store keeps them while a retained metadata version may
//! name them (`meta::versions::retention`). Without a block cache (fsck, tests) their
//! ids are also handed out by [`Filesystem::take_deleted_objects`], for reporting.

mod data;
mod db;
mod dir;
mod namespace;
mod stats;
mod tree;
mod xattr;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::cache::BlockCache;
use crate::meta::db::DbError;

pub use crate::meta::blocks::{Released, release_blocks};
pub use data::MAX_FILE_SIZE;
pub use stats::DbStats;
pub use tree::{CopyReport, RemoveReport};

/// `st_blksize` reported for every inode.
pub const BLKSIZE: u32 = 128 << 10;
/// Longest name of a directory entry or an xattr, in bytes.
pub const NAME_MAX: usize = 255;
/// Largest xattr value, in bytes.
pub const XATTR_SIZE_MAX: usize = 64 << 10;
/// The name of the control file that every directory of a mount resolves (see
/// [`crate::control`]); no entry may have it, or the control file would hide it.
pub const CONTROL_NAME: &str = ".__s3fs_ctrl__";
/// Most entries one [`Filesystem::readdir`] or [`Filesystem::readdirplus`] call returns.
pub const READDIR_BATCH: usize = 256;

/// An error of a filesystem operation: the errno to reply with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsError(i32);

impl FsError {
    pub fn new(errno: i32) -> FsError {
        FsError(errno)
    }

    pub fn errno(self) -> i32 {
        self.0
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for FsError {}

impl From<rusqlite::Error> for FsError {
    fn from(e: rusqlite::Error) -> FsError {
        log::error!("metadata database: {e}");
        FsError(libc::EIO)
    }
}

pub type FsResult<T> = Result<T, FsError>;

pub(crate) fn err<T>(errno: i32) -> FsResult<T> {
    Err(FsError(errno))
}

/// Who is asking: the credentials of the process behind a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// The kind of an inode, from the `S_IFMT` bits of its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    RegularFile,
    Directory,
    Symlink,
    NamedPipe,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::NamedPipe,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::RegularFile,
        }
    }
}

/// stat(2) data of an inode. Times are nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// `ceil(size / 512)`.
    pub blocks: u64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    /// Permission bits and the `S_IFMT` file type bits.
    pub mode: u32,
    /// Entries naming a file; for a directory `2 + subdirectories` as on ext4 (0 once
    /// removed).
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

impl Attr {
    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode)
    }
}

/// How [`Filesystem::setattr`] changes a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeSet {
    #[default]
    Omit,
    Now,
    Set(i64),
}

/// What [`Filesystem::setattr`] changes; `None`/`Omit` leaves a field alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    /// Permission bits (the file type bits are ignored).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: TimeSet,
    pub mtime: TimeSet,
    /// The new ctime; by default the time of the call, as every change sets it.
    pub ctime: Option<i64>,
}

/// One directory entry returned by [`Filesystem::readdir`]. `offset` is the cursor to
/// pass to the next call to continue after this entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub offset: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

/// What statfs(2) reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Size of a block in `blocks`, `bfree` and `bavail`.
    pub frsize: u32,
    pub bsize: u32,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub namelen: u32,
}

/// In-memory state of a mount. Lock order: the DB connection first, then this.
pub(crate) struct State {
    /// Kernel lookup count of every inode the kernel knows.
    lookups: HashMap<i64, u64>,
    /// Objects released while no block cache is attached (see the module doc).
    deleted_objects: Vec<i64>,
}

/// The state of one write transaction: the transaction itself plus what must happen in
/// memory only if it commits.
pub(crate) struct Op<'a> {
    pub tx: Transaction<'a>,
    pub lookups: &'a HashMap<i64, u64>,
    pub add_lookups: Vec<i64>,
    pub deleted_objects: Vec<i64>,
    /// Inodes purged by this transaction: their cached blocks are dropped after commit.
    pub purged: Vec<i64>,
    pub now: i64,
    pub block_size: u64,
    /// Some inode may carry `security.capability` (see [`Filesystem::capabilities`]).
    pub capabilities: bool,
}

/// The filesystem core. See the module documentation.
pub struct Filesystem {
    /// Read-only; declared first so that it closes before the writer, whose close then
    /// checkpoints and removes the WAL.
    reader: Mutex<Connection>,
    /// The writer. Shared with the block cache, which commits uploaded blocks through it.
    db: Arc<Mutex<Connection>>,
    state: Mutex<State>,
    /// File data, once a mount attaches it; namespace-only tests run without.
    cache: OnceLock<Arc<BlockCache>>,
    db_path: PathBuf,
    block_size: u64,
    /// Some inode has (or had, since the mount) a `security.selinux` xattr; see
    /// [`Filesystem::getxattr`].
    selinux_labels: AtomicBool,
    /// Some inode has (or had, since the mount) a `security.capability` xattr: until
    /// then a write or chown need not look for one to remove.
    capabilities: AtomicBool,
}

/// Why a filesystem's metadata cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data block size must not be 0")]
    ZeroBlockSize,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("purging removed inodes: {0}")]
    Purge(FsError),
    #[error("metadata database {}: cannot compute its statistics ({source}); run fsck.s3fs --force", path.display())]
    Stats { path: PathBuf, source: rusqlite::Error },
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Filesystem {
    /// Open the metadata DB of a filesystem whose file data blocks are `data_block_size`
    /// bytes (from its params), and purge inodes a crash left without entries.
    pub fn open(db_path: &Path, data_block_size: u64) -> Result<Filesystem, OpenError> {
        if data_block_size == 0 {
            return Err(OpenError::ZeroBlockSize);
        }
        let conn = crate::meta::db::open_writer(db_path)?;
        let reader = crate::meta::db::open_reader(db_path)?;
        let fs = Filesystem {
            reader: Mutex::new(reader),
            db: Arc::new(Mutex::new(conn)),
            state: Mutex::new(State {
                lookups: HashMap::new(),
                deleted_objects: Vec::new(),
            }),
            cache: OnceLock::new(),
            db_path: db_path.to_owned(),
            block_size: data_block_size,
            selinux_labels: AtomicBool::new(false),
            capabilities: AtomicBool::new(false),
        };
        fs.find_special_xattrs().map_err(DbError::from)?;
        fs.transact(|op| {
            let orphans: Vec<i64> = {
                let mut st = op.tx.prepare("SELECT id FROM inodes WHERE refcount <= 0")?;
                st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            for ino in orphans {
                db::purge_inode(op, ino)?;
            }
            Ok(())
        })
        .map_err(OpenError::Purge)?;
        Ok(fs)
    }

    /// Size of a file data block.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic under the lock dropped (rolled back) its transaction: the state is sound.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection to read from: the writer if it is free, else the read connection.
    fn read_conn(&self) -> MutexGuard<'_, Connection> {
        match self.db.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::Poisoned(writer)) => writer.into_inner(),
            Err(TryLockError::WouldBlock) => self.reader.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The DB connection, for the block cache (see its lock order).
    pub fn db(&self) -> Arc<Mutex<Connection>> {
        self.db.clone()
    }

    /// Serve file data from `cache` from now on.
    pub fn attach_cache(&self, cache: Arc<BlockCache>) {
        self.state().deleted_objects.clear();
        let _ = self.cache.set(cache);
    }

    pub(crate) fn cache(&self) -> Option<&Arc<BlockCache>> {
        self.cache.get()
    }

    /// Run `f` in one IMMEDIATE transaction; commit if it succeeds, then apply its lookup
    /// counts and drop the cached blocks of purged inodes.
    pub(crate) fn transact<T>(&self, f: impl FnOnce(&mut Op<'_>) -> FsResult<T>) -> FsResult<T> {
        let mut conn = self.conn();
        let mut state = self.state();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (value, add_lookups, deleted_objects, purged) = {
            let mut op = Op {
                tx,
                lookups: &state.lookups,
                add_lookups: Vec::new(),
                deleted_objects: Vec::new(),
                purged: Vec::new(),
                now: now_ns(),
                block_size: self.block_size,
                capabilities: self.capabilities.load(std::sync::atomic::Ordering::Relaxed),
            };
            let value = f(&mut op)?;
            let Op {
                tx,
                add_lookups,
                deleted_objects,
                purged,
                ..
            } = op;
            tx.commit()?;
            (value, add_lookups, deleted_objects, purged)
        };
        for ino in add_lookups {
            *state.lookups.entry(ino).or_insert(0) += 1;
        }
        drop(state);
        drop(conn);
        // The cache must not be called under the DB lock (its lock order).
        match self.cache() {
            Some(cache) => {
                for ino in purged {
                    cache.remove_blocks(ino as u64, 0);
                }
            }
            None => self.state().deleted_objects.extend(deleted_objects),
        }
        Ok(value)
    }

    /// Run a read-only `f` on a connection that sees every committed change.
    pub(crate) fn query<T>(&self, f: impl FnOnce(&Connection) -> FsResult<T>) -> FsResult<T> {
        f(&self.read_conn())
    }

    /// Run a read-only `f` like [`Filesystem::query`]; if it succeeds, count one kernel
    /// lookup of each inode it pushed.
    ///
    /// `state` is held from before the read until the counts are in: a transaction holds
    /// it from start to commit, so none is half done while `f` reads, and an unlink that
    /// follows sees the new count and does not purge an inode just handed to the kernel.
    pub(crate) fn read_counting<T>(&self, f: impl FnOnce(&Connection, &mut Vec<i64>) -> FsResult<T>) -> FsResult<T> {
        let mut state = self.state();
        let mut counted = Vec::new();
        let value = f(&self.read_conn(), &mut counted)?;
        for ino in counted {
            *state.lookups.entry(ino).or_insert(0) += 1;
        }
        Ok(value)
    }

    /// The kernel lookup count of `ino` (0 if the kernel does not know it).
    pub fn lookup_count(&self, ino: u64) -> u64 {
        self.state().lookups.get(&(ino as i64)).copied().unwrap_or(0)
    }

    /// Take the ids of the objects released since the last call while no cache was
    /// attached (they are in `released_objects`; nothing needs to delete them).
    pub fn take_deleted_objects(&self) -> Vec<i64> {
        std::mem::take(&mut self.state().deleted_objects)
    }

    /// SQLite's write-ahead log next to the DB.
    fn wal_path(&self) -> PathBuf {
        let mut wal = self.db_path.clone().into_os_string();
        wal.push("-wal");
        wal.into()
    }

    /// Make every committed change durable on local disk.
    ///
    /// With WAL and `synchronous=NORMAL`, a commit writes the `-wal` file without fsync:
    /// fdatasync'ing it makes all commits so far durable. A checkpoint syncs the main
    /// file before the WAL is reused, and without a WAL file everything is in the main
    /// file, which is then synced. Runs without the connection lock.
    pub fn sync_metadata(&self) -> std::io::Result<()> {
        match std::fs::File::open(self.wal_path()) {
            Ok(f) => f.sync_data(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::File::open(&self.db_path)?.sync_all(),
            Err(e) => Err(e),
        }
    }
}

/// A new, empty filesystem in a temporary directory, which lives as long as the guard.
#[cfg(test)]
pub(crate) fn empty_for_tests(block_size: u64) -> (tempfile::TempDir, Filesystem) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("meta.db");
    let conn = Connection::open(&db).unwrap();
    crate::meta::schema::create_filesystem(&conn, 0, 0, 1).unwrap();
    drop(conn);
    let fs = Filesystem::open(&db, block_size).unwrap();
    (dir, fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer is busy (a batch of upload commits, say) with a change it has not
    /// committed: lookups, getattr and listings still answer, from the last commit.
    #[test]
    fn reads_neither_wait_for_the_writer_nor_see_its_uncommitted_changes() {
        let (_dir, fs) = empty_for_tests(4096);
        let ctx = Ctx { uid: 0, gid: 0, pid: 1 };
        let d = fs
            .mkdir(&ctx, crate::meta::schema::ROOT_INODE as u64, b"d", 0o755)
            .unwrap();
        let f = fs.mknod(&ctx, d.ino, b"f", 0o100644, 0).unwrap();
        let counted_before = fs.lookup_count(f.ino);

        let writer = fs.db();
        let busy = writer.lock().unwrap();
        busy.execute_batch(&format!(
            "BEGIN IMMEDIATE; UPDATE inodes SET size = 999 WHERE id = {}",
            f.ino
        ))
        .unwrap();
        let (done, answers) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let looked_up = fs.lookup(d.ino, b"f").unwrap();
                let attr = fs.getattr(f.ino).unwrap();
                let mut listed = Vec::new();
                fs.readdirplus(d.ino, 0, |e, a| {
                    listed.push((e.name.clone(), a.size));
                    true
                })
                .unwrap();
                done.send((looked_up.size, attr.size, listed)).unwrap();
            });
            let answer = answers.recv_timeout(std::time::Duration::from_secs(60));
            busy.execute_batch("ROLLBACK").unwrap();
            drop(busy);
            let (looked_up, getattr, listed) = answer.expect("reads waited for the busy writer");
            assert_eq!((looked_up, getattr), (0, 0));
            assert!(listed.contains(&(b"f".to_vec(), 0)), "{listed:?}");
        });
        // One lookup from lookup(), one from the listing.
        assert_eq!(fs.lookup_count(f.ino), counted_before + 2);
    }
}
