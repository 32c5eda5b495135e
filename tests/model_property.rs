//! The core filesystem against a model: random sequences of namespace and data
//! operations (create, write, truncate, link, unlink, rename, mkdir, rmdir,
//! copy_file_range, s3fscp's `copy_tree`, s3fsrm's `remove_tree`, files kept open while
//! removed, uploads, remounts and crashes) run on `fs::Filesystem` with the block cache
//! attached and on a plain in-memory model of a POSIX tree, and every result (including
//! each errno), every name, kind, size, link count and byte must agree; after each
//! sequence the metadata must pass fsck's DB checks and match the store with nothing to
//! repair. The hand-written tests each check one path through the core; this one exists
//! to find the combinations nobody thought of (a rename over a hard link of a file that
//! a snapshot shares blocks with, a reflink after a truncate and a remount, …), and
//! proptest shrinks any failure to a short sequence that can be kept as a regression
//! test below.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use s3fs::cache::{self, BlockCache, CacheConfig};
use s3fs::codec::{Codec, Compression};
use s3fs::fs::{Attr, Ctx, FileKind, Filesystem, FsError, SetAttr};
use s3fs::fs_store::{FsStore, names};
use s3fs::fsck::checks::{self, Findings, check_db, check_id};
use s3fs::runtime::block_on;
use s3fs::store::local::LocalStore;
use s3fs::store::{Store, list_all};

/// Data block size: small, so multi-block files are cheap.
const BS: u64 = 4096;
const ROOT: u64 = 1;
const CTX: Ctx = Ctx { uid: 0, gid: 0, pid: 1 };
/// Cases run unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 64;
const MAX_OPS: usize = 40;
/// Every name is one of these, so that operations collide and overwrite.
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const TARGETS: [&str; 4] = ["a", "../b", "c/d/e", "a-long-symlink-target-to-make-its-size-differ"];

type TestResult<T = ()> = Result<T, TestCaseError>;

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// Put `context` in front of the message of a failure.
fn context(context: impl fmt::Display) -> impl FnOnce(TestCaseError) -> TestCaseError {
    move |e| match e {
        TestCaseError::Fail(reason) => fail(format!("{context}: {}", reason.message())),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// Operations

/// A path below the root: indexes into [`NAMES`]. Prints as `p("a/b")`, so a shrunk
/// sequence can be pasted into a regression test.
#[derive(Clone, PartialEq, Eq)]
struct P(Vec<u8>);

fn p(path: &str) -> Pa {
    Pa::At(P(path
        .split('/')
        .map(|c| NAMES.iter().position(|n| *n == c).expect("a name of NAMES") as u8)
        .collect()))
}

impl fmt::Display for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|&i| NAMES[i as usize]).collect();
        write!(f, "/{}", names.join("/"))
    }
}

impl fmt::Debug for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p({:?})", &self.to_string()[1..])
    }
}

fn name(i: u8) -> &'static [u8] {
    NAMES[i as usize].as_bytes()
}

/// Where an operation works: a path, or (mostly, so that operations meet something) a
/// pick among what the model holds at that point, taken modulo the number of candidates
/// (the operation is skipped if there is none). The picks are made before the
/// operation runs, so a sequence always does the same.
#[derive(Clone)]
enum Pa {
    At(P),
    /// The k-th entry (file, directory or symlink; not the root), in path order.
    Any(u8),
    /// The k-th regular file.
    File(u8),
    /// The k-th directory other than the root.
    Dir(u8),
    /// Name `n` in the k-th directory, the root included.
    In(u8, u8),
}

impl fmt::Debug for Pa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pa::At(path) => write!(f, "{path:?}"),
            Pa::Any(k) => write!(f, "Pa::Any({k})"),
            Pa::File(k) => write!(f, "Pa::File({k})"),
            Pa::Dir(k) => write!(f, "Pa::Dir({k})"),
            Pa::In(k, n) => write!(f, "Pa::In({k}, {n})"),
        }
    }
}

/// What a data operation works on: a path, or a file kept open ([`Op::Open`]; taken
/// modulo the number open, nothing happens if none is).
#[derive(Clone)]
enum Target {
    Path(Pa),
    Held(u8),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Path(pa) => write!(f, "Target::Path({pa:?})"),
            Target::Held(i) => write!(f, "Target::Held({i})"),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// open(O_CREAT), with or without O_EXCL.
    Create {
        path: Pa,
        excl: bool,
    },
    Mkdir {
        path: Pa,
    },
    Symlink {
        path: Pa,
        target: u8,
    },
    /// Write bytes made from `seed` (0: zeros) and the file offset (so equal writes make
    /// equal blocks, which deduplicate).
    Write {
        to: Target,
        off: u64,
        len: u64,
        seed: u8,
    },
    Truncate {
        to: Target,
        size: u64,
    },
    /// fallocate: punch a hole (PUNCH_HOLE | KEEP_SIZE), or mode 0 (extend the size).
    Fallocate {
        to: Target,
        off: u64,
        len: u64,
        punch: bool,
    },
    Read {
        from: Target,
        off: u64,
        len: u64,
    },
    /// copy_file_range into a destination opened as `cp` opens it (a path is created if
    /// missing: [`Op::Create`] without O_EXCL first); `stored`: everything is uploaded
    /// first (a file written long ago), so that whole blocks can be shared.
    CopyRange {
        from: Target,
        off_in: u64,
        to: Target,
        off_out: u64,
        len: u64,
        stored: bool,
    },
    Link {
        from: Pa,
        to: Pa,
    },
    Unlink {
        path: Pa,
    },
    Rmdir {
        path: Pa,
    },
    /// renameat2 with `flags` 0, RENAME_NOREPLACE or RENAME_EXCHANGE.
    Rename {
        from: Pa,
        to: Pa,
        flags: u32,
    },
    /// s3fscp `from` `to`, after `mkdir to` if `mkdir_first`.
    Snapshot {
        from: Pa,
        to: Pa,
        mkdir_first: bool,
    },
    /// s3fsrm.
    RemoveTree {
        path: Pa,
    },
    /// Look a file up and keep the kernel's reference (an open file descriptor).
    Open {
        path: Pa,
    },
    Close {
        handle: u8,
    },
    /// Upload everything; with `drop_clean` also evict it, so reads come from the store.
    Flush {
        drop_clean: bool,
    },
    /// Unmount and mount again; unclean: the process dies (no upload, open files lost).
    Remount {
        clean: bool,
    },
}

fn path_strategy() -> impl Strategy<Value = P> {
    prop_oneof![
        4 => vec(0..NAMES.len() as u8, 1..=1),
        4 => vec(0..NAMES.len() as u8, 2..=2),
        1 => vec(0..NAMES.len() as u8, 3..=3),
    ]
    .prop_map(P)
}

fn at_strategy() -> BoxedStrategy<Pa> {
    path_strategy().prop_map(Pa::At).boxed()
}

/// Something that may exist, most often a regular file.
fn file_like() -> impl Strategy<Value = Pa> {
    prop_oneof![1 => at_strategy(), 4 => any::<u8>().prop_map(Pa::File), 1 => any::<u8>().prop_map(Pa::Any)]
}

/// Something that may exist, most often a directory.
fn dir_like() -> impl Strategy<Value = Pa> {
    prop_oneof![1 => at_strategy(), 4 => any::<u8>().prop_map(Pa::Dir), 1 => any::<u8>().prop_map(Pa::Any)]
}

/// Something that may exist, of any kind.
fn existing() -> impl Strategy<Value = Pa> {
    prop_oneof![
        1 => at_strategy(),
        2 => any::<u8>().prop_map(Pa::File),
        2 => any::<u8>().prop_map(Pa::Dir),
        2 => any::<u8>().prop_map(Pa::Any),
    ]
}

/// A name that may be new, most often in a directory that exists.
fn fresh() -> impl Strategy<Value = Pa> {
    prop_oneof![1 => at_strategy(), 3 => (any::<u8>(), 0..NAMES.len() as u8).prop_map(|(k, n)| Pa::In(k, n))]
}

fn target_strategy() -> impl Strategy<Value = Target> {
    prop_oneof![4 => file_like().prop_map(Target::Path), 1 => any::<u8>().prop_map(Target::Held)]
}

/// Offsets up to 5 blocks, often on or next to a block boundary.
fn offset_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 0..5 * BS,
        1 => (0..=5u64).prop_map(|k| k * BS),
        1 => (1..=5u64, 1..=3u64, any::<bool>()).prop_map(|(k, d, up)| if up { k * BS + d } else { k * BS - d }),
    ]
}

/// Lengths up to a little over 2 blocks (never 0: the kernel answers those itself).
fn length_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 1..=2 * BS + 100,
        1 => (1..=2u64).prop_map(|k| k * BS),
        1 => 1..=20u64,
    ]
}

fn copy_destination() -> impl Strategy<Value = Target> {
    prop_oneof![2 => target_strategy(), 1 => fresh().prop_map(Target::Path)]
}

/// (offset, length) of a write: any, or whole blocks from the first ones (which
/// copy_file_range can then share).
fn write_ranges() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        2 => (offset_strategy(), length_strategy()),
        1 => (0..3u64, 1..=3u64).prop_map(|(k, n)| (k * BS, n * BS)),
    ]
}

/// (off_in, off_out, len) of a copy_file_range: any, or whole blocks at block
/// boundaries, which the core shares instead of copying (a reflink).
fn copy_ranges() -> impl Strategy<Value = (u64, u64, u64)> {
    prop_oneof![
        2 => (offset_strategy(), offset_strategy(), length_strategy()),
        2 => (0..3u64, 0..5u64, 1..=2u64).prop_map(|(a, b, n)| (a * BS, b * BS, n * BS)),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let flags = prop_oneof![
        4 => Just(0),
        1 => Just(libc::RENAME_NOREPLACE),
        1 => Just(libc::RENAME_EXCHANGE),
    ];
    prop_oneof![
        6 => (fresh(), any::<bool>()).prop_map(|(path, excl)| Op::Create { path, excl }),
        4 => fresh().prop_map(|path| Op::Mkdir { path }),
        1 => (fresh(), 0..TARGETS.len() as u8).prop_map(|(path, target)| Op::Symlink { path, target }),
        8 => (target_strategy(), write_ranges(), 0..4u8).prop_map(|(to, (off, len), seed)| Op::Write {
            to,
            off,
            len,
            seed
        }),
        3 => (target_strategy(), offset_strategy()).prop_map(|(to, size)| Op::Truncate { to, size }),
        2 => (target_strategy(), offset_strategy(), length_strategy(), prop::bool::weighted(0.75))
            .prop_map(|(to, off, len, punch)| Op::Fallocate { to, off, len, punch }),
        2 => (target_strategy(), offset_strategy(), length_strategy())
            .prop_map(|(from, off, len)| Op::Read { from, off, len }),
        6 => (target_strategy(), copy_destination(), copy_ranges(), any::<bool>()).prop_map(
            |(from, to, (off_in, off_out, len), stored)| Op::CopyRange {
                from,
                off_in,
                to,
                off_out,
                len,
                stored,
            }
        ),
        3 => (file_like(), fresh()).prop_map(|(from, to)| Op::Link { from, to }),
        3 => existing().prop_map(|path| Op::Unlink { path }),
        2 => dir_like().prop_map(|path| Op::Rmdir { path }),
        5 => (existing(), prop_oneof![2 => fresh().boxed(), 1 => existing().boxed()], flags)
            .prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        3 => (
            dir_like(),
            prop_oneof![3 => fresh().boxed(), 1 => dir_like().boxed()],
            prop::bool::weighted(0.75)
        )
            .prop_map(|(from, to, mkdir_first)| Op::Snapshot { from, to, mkdir_first }),
        1 => dir_like().prop_map(|path| Op::RemoveTree { path }),
        2 => file_like().prop_map(|path| Op::Open { path }),
        1 => any::<u8>().prop_map(|handle| Op::Close { handle }),
        4 => any::<bool>().prop_map(|drop_clean| Op::Flush { drop_clean }),
        1 => any::<bool>().prop_map(|clean| Op::Remount { clean }),
    ]
}

/// The bytes [`Op::Write`] writes at `off`.
fn fill(seed: u8, off: u64, len: u64) -> Vec<u8> {
    (off..off + len)
        .map(|pos| {
            if seed == 0 {
                0
            } else {
                (pos as u8).wrapping_mul(31).wrapping_add(seed.wrapping_mul(71)) ^ ((pos / BS) as u8)
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The model

const MODEL_ROOT: u64 = 1;

#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, u64>),
    Symlink(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Inode {
    node: Node,
    /// Permission bits.
    perm: u32,
    /// Directory entries naming it.
    links: u32,
    /// Kernel references held by [`Op::Open`].
    open: u32,
    /// The directory holding the entry of a directory (the root: itself).
    parent: u64,
}

/// A POSIX tree as the core should keep it: inodes that live while named or open.
#[derive(Debug)]
struct Model {
    inodes: BTreeMap<u64, Inode>,
    next: u64,
}

type Errno<T> = Result<T, i32>;

impl Model {
    /// A new filesystem: the root and `/lost+found`, as `create_filesystem` makes it.
    fn new() -> Model {
        let mut m = Model {
            inodes: BTreeMap::new(),
            next: MODEL_ROOT,
        };
        let root = m.new_inode(Node::Dir(BTreeMap::new()), 0o755);
        m.inode_mut(root).links = 1;
        m.inode_mut(root).parent = root;
        let lost_found = m.new_inode(Node::Dir(BTreeMap::new()), 0o700);
        m.add_entry(root, b"lost+found", lost_found);
        m
    }

    fn new_inode(&mut self, node: Node, perm: u32) -> u64 {
        let ino = self.next;
        self.next += 1;
        self.inodes.insert(
            ino,
            Inode {
                node,
                perm,
                links: 0,
                open: 0,
                parent: 0,
            },
        );
        ino
    }

    fn inode(&self, ino: u64) -> &Inode {
        &self.inodes[&ino]
    }

    fn inode_mut(&mut self, ino: u64) -> &mut Inode {
        self.inodes.get_mut(&ino).expect("a live model inode")
    }

    fn kind(&self, ino: u64) -> FileKind {
        match self.inode(ino).node {
            Node::File(_) => FileKind::RegularFile,
            Node::Dir(_) => FileKind::Directory,
            Node::Symlink(_) => FileKind::Symlink,
        }
    }

    fn is_dir(&self, ino: u64) -> bool {
        self.kind(ino) == FileKind::Directory
    }

    /// The entries of `ino`; ENOTDIR if it is no directory.
    fn dir(&self, ino: u64) -> Errno<&BTreeMap<Vec<u8>, u64>> {
        match &self.inode(ino).node {
            Node::Dir(d) => Ok(d),
            _ => Err(libc::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> &mut BTreeMap<Vec<u8>, u64> {
        match &mut self.inode_mut(ino).node {
            Node::Dir(d) => d,
            _ => panic!("model inode {ino} is no directory"),
        }
    }

    fn data_mut(&mut self, ino: u64) -> &mut Vec<u8> {
        match &mut self.inode_mut(ino).node {
            Node::File(d) => d,
            _ => panic!("model inode {ino} is no file"),
        }
    }

    fn lookup(&self, dir: u64, name: &[u8]) -> Errno<u64> {
        self.dir(dir)?.get(name).copied().ok_or(libc::ENOENT)
    }

    fn size(&self, ino: u64) -> u64 {
        match &self.inode(ino).node {
            Node::File(d) => d.len() as u64,
            Node::Dir(_) => 0,
            Node::Symlink(t) => t.len() as u64,
        }
    }

    /// st_nlink: entries, or 2 + subdirectories for a directory (0 once removed).
    fn nlink(&self, ino: u64) -> u32 {
        let i = self.inode(ino);
        match &i.node {
            Node::Dir(d) if i.links > 0 => 2 + d.values().filter(|&&c| self.is_dir(c)).count() as u32,
            _ => i.links,
        }
    }

    fn add_entry(&mut self, dir: u64, name: &[u8], ino: u64) {
        let old = self.dir_mut(dir).insert(name.to_vec(), ino);
        assert!(old.is_none(), "model: entry {name:?} of {dir} exists");
        let i = self.inode_mut(ino);
        i.links += 1;
        i.parent = dir;
    }

    fn remove_entry(&mut self, dir: u64, name: &[u8]) {
        let ino = self.dir_mut(dir).remove(name).expect("model: the entry exists");
        self.inode_mut(ino).links -= 1;
        self.maybe_free(ino);
    }

    fn maybe_free(&mut self, ino: u64) {
        let i = self.inode(ino);
        if i.links == 0 && i.open == 0 {
            if let Node::Dir(d) = &i.node {
                assert!(d.is_empty(), "model: freeing a directory with entries");
            }
            self.inodes.remove(&ino);
        }
    }

    /// Whether directory `anc` is directory `dir` or one of its ancestors.
    fn is_ancestor_or_self(&self, anc: u64, mut dir: u64) -> bool {
        loop {
            if dir == anc {
                return true;
            }
            if dir == MODEL_ROOT {
                return false;
            }
            dir = self.inode(dir).parent;
        }
    }

    fn make(&mut self, parent: u64, name: &[u8], node: Node, perm: u32) -> Errno<u64> {
        if self.dir(parent)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.new_inode(node, perm);
        self.add_entry(parent, name, ino);
        Ok(ino)
    }

    fn create(&mut self, parent: u64, name: &[u8], excl: bool) -> Errno<u64> {
        match self.dir(parent)?.get(name) {
            Some(_) if excl => Err(libc::EEXIST),
            Some(&ino) if self.is_dir(ino) => Err(libc::EISDIR),
            Some(&ino) => Ok(ino),
            None => self.make(parent, name, Node::File(Vec::new()), 0o644),
        }
    }

    fn unlink(&mut self, parent: u64, name: &[u8]) -> Errno<()> {
        let ino = self.lookup(parent, name)?;
        if self.is_dir(ino) {
            return Err(libc::EISDIR);
        }
        self.remove_entry(parent, name);
        Ok(())
    }

    fn rmdir(&mut self, parent: u64, name: &[u8]) -> Errno<()> {
        let ino = self.lookup(parent, name)?;
        if !self.dir(ino)?.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        self.remove_entry(parent, name);
        Ok(())
    }

    fn link(&mut self, ino: u64, parent: u64, name: &[u8]) -> Errno<()> {
        if self.is_dir(ino) {
            return Err(libc::EPERM);
        }
        if self.dir(parent)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        self.add_entry(parent, name, ino);
        Ok(())
    }

    /// renameat2, checking in the core's order (each is an error POSIX allows).
    fn rename(&mut self, parent: u64, name: &[u8], newparent: u64, newname: &[u8], flags: u32) -> Errno<()> {
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        self.dir(parent)?;
        self.dir(newparent)?;
        let src = self.lookup(parent, name)?;
        let dst = self.dir(newparent)?.get(newname).copied();
        if noreplace && dst.is_some() {
            return Err(libc::EEXIST);
        }
        if exchange && dst.is_none() {
            return Err(libc::ENOENT);
        }
        if dst == Some(src) {
            // The same entry, or two links of one file: nothing happens.
            return Ok(());
        }
        if self.is_dir(src) && self.is_ancestor_or_self(src, newparent) {
            return Err(libc::EINVAL);
        }
        if exchange {
            let dst = dst.expect("exchange has a target");
            if self.is_dir(dst) && self.is_ancestor_or_self(dst, parent) {
                return Err(libc::EINVAL);
            }
            self.dir_mut(parent).insert(name.to_vec(), dst);
            self.dir_mut(newparent).insert(newname.to_vec(), src);
            self.inode_mut(dst).parent = parent;
            self.inode_mut(src).parent = newparent;
            return Ok(());
        }
        if let Some(dst) = dst {
            match (self.is_dir(src), self.is_dir(dst)) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) if !self.dir(dst)?.is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
            self.remove_entry(newparent, newname);
        }
        self.dir_mut(parent).remove(name);
        self.dir_mut(newparent).insert(newname.to_vec(), src);
        self.inode_mut(src).parent = newparent;
        Ok(())
    }

    /// EISDIR for a directory, EINVAL for a symlink: only regular files have data.
    fn regular(&self, ino: u64) -> Errno<()> {
        match self.kind(ino) {
            FileKind::RegularFile => Ok(()),
            FileKind::Directory => Err(libc::EISDIR),
            _ => Err(libc::EINVAL),
        }
    }

    fn write(&mut self, ino: u64, off: u64, bytes: &[u8]) -> Errno<usize> {
        self.regular(ino)?;
        let data = self.data_mut(ino);
        let end = off as usize + bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[off as usize..end].copy_from_slice(bytes);
        Ok(bytes.len())
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Errno<()> {
        self.regular(ino)?;
        self.data_mut(ino).resize(size as usize, 0);
        Ok(())
    }

    /// fallocate on a regular file: `punch` zeroes `[off, off + len)` within the size,
    /// else the size grows to `off + len` if it is smaller.
    fn fallocate(&mut self, ino: u64, off: u64, len: u64, punch: bool) -> Errno<()> {
        self.regular(ino)?;
        let data = self.data_mut(ino);
        let end = (off + len) as usize;
        if punch {
            let end = end.min(data.len());
            if (off as usize) < end {
                data[off as usize..end].fill(0);
            }
        } else if data.len() < end {
            data.resize(end, 0);
        }
        Ok(())
    }

    fn read(&self, ino: u64, off: u64, len: u64) -> Errno<Vec<u8>> {
        if self.is_dir(ino) {
            return Err(libc::EISDIR);
        }
        let Node::File(data) = &self.inode(ino).node else {
            panic!("model: read of a symlink")
        };
        let from = (off as usize).min(data.len());
        let to = (off.saturating_add(len) as usize).min(data.len());
        Ok(data[from..to].to_vec())
    }

    /// The bytes copy_file_range copies (the source's bytes from `off_in`, at most `len`).
    fn copy_source(&self, ino: u64, off_in: u64, len: u64) -> Vec<u8> {
        self.read(ino, off_in, len).expect("a regular file")
    }

    /// s3fscp: make the empty directory `dst` a copy of the tree under `src`, files
    /// hard-linked inside the tree staying hard-linked in the copy. Returns (inodes,
    /// entries) made, as [`s3fs::fs::CopyReport`] counts them.
    fn snapshot(&mut self, src: u64, dst: u64) -> Errno<(u64, u64)> {
        self.dir(src)?;
        self.dir(dst)?;
        if self.is_ancestor_or_self(src, dst) {
            return Err(libc::EINVAL);
        }
        if !self.dir(dst)?.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        self.inode_mut(dst).perm = self.inode(src).perm;
        let mut copies = HashMap::new();
        let mut counts = (0, 0);
        self.copy_dir(src, dst, &mut copies, &mut counts);
        Ok(counts)
    }

    fn copy_dir(&mut self, from: u64, to: u64, copies: &mut HashMap<u64, u64>, counts: &mut (u64, u64)) {
        let entries: Vec<(Vec<u8>, u64)> = self.dir(from).expect("a directory").clone().into_iter().collect();
        for (name, ino) in entries {
            counts.1 += 1;
            if let Some(&copy) = copies.get(&ino) {
                self.add_entry(to, &name, copy);
                continue;
            }
            counts.0 += 1;
            let src = self.inode(ino);
            let node = match &src.node {
                Node::Dir(_) => Node::Dir(BTreeMap::new()),
                other => other.clone(),
            };
            let copy = self.new_inode(node, src.perm);
            self.add_entry(to, &name, copy);
            if self.is_dir(ino) {
                self.copy_dir(ino, copy, copies, counts);
            } else {
                copies.insert(ino, copy);
            }
        }
    }

    /// s3fsrm: remove an entry and everything below it. Returns the entries removed.
    fn remove_tree(&mut self, parent: u64, name: &[u8]) -> Errno<u64> {
        let ino = self.lookup(parent, name)?;
        let mut removed = 1;
        if self.is_dir(ino) {
            self.empty_dir(ino, &mut removed);
        }
        self.remove_entry(parent, name);
        Ok(removed)
    }

    fn empty_dir(&mut self, dir: u64, removed: &mut u64) {
        let entries: Vec<(Vec<u8>, u64)> = self.dir(dir).expect("a directory").clone().into_iter().collect();
        for (name, ino) in entries {
            if self.is_dir(ino) {
                self.empty_dir(ino, removed);
            }
            self.remove_entry(dir, &name);
            *removed += 1;
        }
    }

    /// The paths (as indexes into [`NAMES`]) of every entry below the root whose kind
    /// `want` accepts, in path order. `/lost+found` is not among them.
    fn paths(&self, want: &dyn Fn(FileKind) -> bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.collect_paths(MODEL_ROOT, &mut Vec::new(), want, &mut out);
        out
    }

    fn collect_paths(&self, dir: u64, path: &mut Vec<u8>, want: &dyn Fn(FileKind) -> bool, out: &mut Vec<Vec<u8>>) {
        for (entry, &ino) in self.dir(dir).expect("a directory") {
            let Some(i) = NAMES.iter().position(|n| n.as_bytes() == entry.as_slice()) else {
                continue;
            };
            path.push(i as u8);
            if want(self.kind(ino)) {
                out.push(path.clone());
            }
            if self.is_dir(ino) {
                self.collect_paths(ino, path, want, out);
            }
            path.pop();
        }
    }

    fn close(&mut self, ino: u64) {
        self.inode_mut(ino).open -= 1;
        self.maybe_free(ino);
    }
}

// ---------------------------------------------------------------------------------------
// The core

/// A mounted filesystem: the core with its block cache, as `setup_with` in fs_data.rs.
struct Mount {
    fs: Filesystem,
    cache: Arc<BlockCache>,
}

fn mount(root: &Path, cache_dir: &str) -> TestResult<Mount> {
    let db = root.join("meta.db");
    let store = FsStore::new(
        Arc::new(LocalStore::open(&root.join("store")).map_err(|e| fail(format!("store: {e}")))?),
        Codec::new(None, Compression::default()),
    );
    let fs = Filesystem::open(&db, BS).map_err(|e| fail(format!("mount: {e}")))?;
    let mut config = CacheConfig::new(root.join(cache_dir), BS);
    // Uploads happen when a sequence asks (Flush, snapshot, unmount), so that a case
    // runs the same way every time and its failure shrinks.
    config.dirty_upload_delay = Duration::from_secs(3600);
    config.min_free_bytes = Some(0);
    let cache = BlockCache::open(config, fs.db(), db, store).map_err(|e| fail(format!("cache: {e}")))?;
    fs.attach_cache(cache.clone());
    Ok(Mount { fs, cache })
}

fn errno_name(e: i32) -> String {
    let known = [
        (libc::ENOENT, "ENOENT"),
        (libc::EEXIST, "EEXIST"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::EINVAL, "EINVAL"),
        (libc::EPERM, "EPERM"),
        (libc::EIO, "EIO"),
        (libc::EBUSY, "EBUSY"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == e)
        .map_or_else(|| format!("errno {e}"), |(_, s)| s.to_string())
}

/// Compare the model's prediction with the core's result: both errors with the same
/// errno (None), or both successes (their values).
fn agree<A: fmt::Debug, B: fmt::Debug>(
    what: &str,
    want: Errno<A>,
    got: Result<B, FsError>,
) -> TestResult<Option<(A, B)>> {
    match (want, got) {
        (Ok(a), Ok(b)) => Ok(Some((a, b))),
        (Err(w), Err(g)) if w == g.errno() => Ok(None),
        (Err(w), Ok(b)) => Err(fail(format!(
            "{what}: the model says {}, the core succeeded: {b:?}",
            errno_name(w)
        ))),
        (Ok(a), Err(g)) => Err(fail(format!(
            "{what}: the model says success ({a:?}), the core returned {}",
            errno_name(g.errno())
        ))),
        (Err(w), Err(g)) => Err(fail(format!(
            "{what}: the model says {}, the core returned {}",
            errno_name(w),
            errno_name(g.errno())
        ))),
    }
}

/// One run: the core and the model side by side.
struct World {
    dir: tempfile::TempDir,
    mount: Option<Mount>,
    model: Model,
    /// Open files: (core inode, model inode), each holding one kernel lookup.
    held: Vec<(u64, u64)>,
    /// Which core inode is which model inode (both ways): hard links must agree.
    to_model: HashMap<u64, u64>,
    to_core: HashMap<u64, u64>,
    /// An unclean remount happened: objects whose deletion was queued are left in the
    /// store (fsck's store comparison finds them), as after a real crash.
    crashed: bool,
    mounts: u32,
}

impl World {
    fn new() -> TestResult<World> {
        // In memory where there is a tmpfs: SQLite's fsyncs made a case 10 times slower.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .map_err(|e| fail(e.to_string()))?;
        let conn = rusqlite::Connection::open(dir.path().join("meta.db")).map_err(|e| fail(e.to_string()))?;
        s3fs::meta::schema::create_filesystem(&conn, 0, 0, 1).map_err(|e| fail(e.to_string()))?;
        drop(conn);
        std::fs::create_dir(dir.path().join("store")).map_err(|e| fail(e.to_string()))?;
        let mount = mount(dir.path(), "cache")?;
        let mut w = World {
            dir,
            mount: Some(mount),
            model: Model::new(),
            held: Vec::new(),
            to_model: HashMap::new(),
            to_core: HashMap::new(),
            crashed: false,
            mounts: 1,
        };
        w.bind(ROOT, MODEL_ROOT)?;
        Ok(w)
    }

    fn fs(&self) -> &Filesystem {
        &self.mount.as_ref().expect("mounted").fs
    }

    fn cache(&self) -> &BlockCache {
        &self.mount.as_ref().expect("mounted").cache
    }

    /// Record that core inode `core` is model inode `model`; fail if either is already
    /// known as another.
    fn bind(&mut self, core: u64, model: u64) -> TestResult {
        let a = *self.to_model.entry(core).or_insert(model);
        let b = *self.to_core.entry(model).or_insert(core);
        if a != model || b != core {
            return Err(fail(format!(
                "core inode {core} stands for model inode {model}, but {core} was model inode {a} and {model} was core inode {b}"
            )));
        }
        Ok(())
    }

    /// Resolve `names` from the root on both sides, one lookup at a time, comparing each
    /// result. `Ok(None)`: the walk failed the same way on both (the operation's result).
    /// Every lookup is forgotten at once, except the last one if `keep_last`.
    fn walk(&mut self, names: &[u8], keep_last: bool) -> TestResult<Option<(u64, u64)>> {
        let (mut c, mut m) = (ROOT, MODEL_ROOT);
        for (i, &n) in names.iter().enumerate() {
            let want = self.model.lookup(m, name(n));
            let got = self.fs().lookup(c, name(n));
            let what = format!("lookup of {}", P(names[..=i].to_vec()));
            let Some((mi, a)) = agree(&what, want, got)? else {
                return Ok(None);
            };
            if !(keep_last && i + 1 == names.len()) {
                self.fs().forget(a.ino, 1);
            }
            self.bind(a.ino, mi)?;
            self.check_attr(&what, &a, mi)?;
            (c, m) = (a.ino, mi);
        }
        Ok(Some((c, m)))
    }

    /// Resolve the directory part of `path`; also the last name.
    fn walk_parent(&mut self, path: &Pa) -> TestResult<Option<(u64, u64, &'static [u8])>> {
        let (last, dir) = at(path).0.split_last().expect("paths are not empty");
        Ok(self.walk(dir, false)?.map(|(c, m)| (c, m, name(*last))))
    }

    /// The path `pa` stands for now.
    fn locate(&self, pa: &Pa) -> Option<Pa> {
        let pick = |list: Vec<Vec<u8>>, k: u8| (!list.is_empty()).then(|| list[k as usize % list.len()].clone());
        let path = match pa {
            Pa::At(p) => return Some(Pa::At(p.clone())),
            Pa::Any(k) => pick(self.model.paths(&|_| true), *k)?,
            Pa::File(k) => pick(self.model.paths(&|kind| kind == FileKind::RegularFile), *k)?,
            Pa::Dir(k) => pick(self.model.paths(&|kind| kind == FileKind::Directory), *k)?,
            Pa::In(k, n) => {
                let mut dirs = vec![Vec::new()];
                dirs.extend(self.model.paths(&|kind| kind == FileKind::Directory));
                let mut path = pick(dirs, *k)?;
                path.push(*n);
                path
            }
        };
        Some(Pa::At(P(path)))
    }

    fn locate_target(&self, t: &Target) -> Option<Target> {
        match t {
            Target::Path(pa) => self.locate(pa).map(Target::Path),
            Target::Held(_) => Some(t.clone()),
        }
    }

    /// `op` with every pick made: paths only. None if a pick has nothing to choose from.
    fn concrete(&self, op: &Op) -> Option<Op> {
        use Op::*;
        let l = |pa: &Pa| self.locate(pa);
        let t = |t: &Target| self.locate_target(t);
        Some(match op.clone() {
            Create { path, excl } => Create { path: l(&path)?, excl },
            Mkdir { path } => Mkdir { path: l(&path)? },
            Symlink { path, target } => Symlink {
                path: l(&path)?,
                target,
            },
            Write { to, off, len, seed } => Write {
                to: t(&to)?,
                off,
                len,
                seed,
            },
            Truncate { to, size } => Truncate { to: t(&to)?, size },
            Fallocate { to, off, len, punch } => Fallocate {
                to: t(&to)?,
                off,
                len,
                punch,
            },
            Read { from, off, len } => Read {
                from: t(&from)?,
                off,
                len,
            },
            CopyRange {
                from,
                off_in,
                to,
                off_out,
                len,
                stored,
            } => CopyRange {
                from: t(&from)?,
                off_in,
                to: t(&to)?,
                off_out,
                len,
                stored,
            },
            Link { from, to } => Link {
                from: l(&from)?,
                to: l(&to)?,
            },
            Unlink { path } => Unlink { path: l(&path)? },
            Rmdir { path } => Rmdir { path: l(&path)? },
            Rename { from, to, flags } => Rename {
                from: l(&from)?,
                to: l(&to)?,
                flags,
            },
            Snapshot { from, to, mkdir_first } => Snapshot {
                from: l(&from)?,
                to: l(&to)?,
                mkdir_first,
            },
            RemoveTree { path } => RemoveTree { path: l(&path)? },
            Open { path } => Open { path: l(&path)? },
            other @ (Close { .. } | Flush { .. } | Remount { .. }) => other,
        })
    }

    fn target(&mut self, t: &Target) -> TestResult<Option<(u64, u64)>> {
        match t {
            Target::Path(pa) => self.walk(&at(pa).0, false),
            Target::Held(i) if !self.held.is_empty() => Ok(Some(self.held[*i as usize % self.held.len()])),
            Target::Held(_) => Ok(None),
        }
    }

    /// The core's attributes of model inode `m` are the model's.
    fn check_attr(&self, what: &str, a: &Attr, m: u64) -> TestResult {
        let model = &self.model;
        let want = (model.kind(m), model.inode(m).perm, model.nlink(m), model.size(m));
        let got = (a.kind(), a.mode & 0o7777, a.nlink, a.size);
        if want != got {
            return Err(fail(format!(
                "{what}: inode {} has (kind, permissions, nlink, size) {got:?}, the model says {want:?}",
                a.ino
            )));
        }
        Ok(())
    }

    /// File `c` reads back as the model's file `m`.
    fn check_data(&self, what: &str, c: u64, m: u64) -> TestResult {
        let size = self.model.size(m);
        let want = self.model.read(m, 0, size).expect("a file");
        let got = self
            .fs()
            .read(c, 0, size as u32)
            .map_err(|e| fail(format!("{what}: read: {e}")))?;
        compare_bytes(what, 0, &want, &got)?;
        let past = self
            .fs()
            .read(c, size, 10)
            .map_err(|e| fail(format!("{what}: read: {e}")))?;
        if !past.is_empty() {
            return Err(fail(format!("{what}: a read at the end returned {} bytes", past.len())));
        }
        Ok(())
    }

    /// Run `op` on both sides (its picks made first) and compare.
    fn apply(&mut self, op: &Op) -> TestResult {
        let Some(op) = self.concrete(op) else { return Ok(()) };
        self.apply_concrete(&op).map_err(context(format!("as {op:?}")))
    }

    fn apply_concrete(&mut self, op: &Op) -> TestResult {
        let what = format!("{op:?}");
        let what = what.as_str();
        match op {
            Op::Create { path, excl } => {
                let Some((c, m, name)) = self.walk_parent(path)? else {
                    return Ok(());
                };
                let flags = if *excl { libc::O_EXCL } else { 0 };
                let want = self.model.create(m, name, *excl);
                let got = self.fs().create(&CTX, c, name, 0o644, flags);
                self.entry_made(what, want, got)?;
            }
            Op::Mkdir { path } => {
                let Some((c, m, name)) = self.walk_parent(path)? else {
                    return Ok(());
                };
                let want = self.model.make(m, name, Node::Dir(BTreeMap::new()), 0o755);
                let got = self.fs().mkdir(&CTX, c, name, 0o755);
                self.entry_made(what, want, got)?;
            }
            Op::Symlink { path, target } => {
                let Some((c, m, name)) = self.walk_parent(path)? else {
                    return Ok(());
                };
                let t = TARGETS[*target as usize].as_bytes();
                let want = self.model.make(m, name, Node::Symlink(t.to_vec()), 0o777);
                let got = self.fs().symlink(&CTX, c, name, t);
                self.entry_made(what, want, got)?;
            }
            Op::Write { to, off, len, seed } => {
                let Some((c, m)) = self.target(to)? else { return Ok(()) };
                let data = fill(*seed, *off, *len);
                let want = self.model.write(m, *off, &data);
                let got = self.fs().write(&CTX, c, *off, &data);
                if let Some((n, written)) = agree(what, want, got)?
                    && n != written
                {
                    return Err(fail(format!("{what}: wrote {written} bytes of {n}")));
                }
            }
            Op::Truncate { to, size } => {
                let Some((c, m)) = self.target(to)? else { return Ok(()) };
                let want = self.model.truncate(m, *size);
                let set = SetAttr {
                    size: Some(*size),
                    ..Default::default()
                };
                let got = self.fs().setattr(&CTX, c, &set);
                if let Some(((), a)) = agree(what, want, got)? {
                    self.check_attr(what, &a, m)?;
                }
            }
            Op::Fallocate { to, off, len, punch } => {
                let Some((c, m)) = self.target(to)? else { return Ok(()) };
                if self.model.kind(m) == FileKind::Symlink {
                    // A symlink cannot be opened for writing: the kernel never asks.
                    return Ok(());
                }
                let mode = if *punch {
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
                } else {
                    0
                };
                let want = self.model.fallocate(m, *off, *len, *punch);
                let got = self.fs().fallocate(&CTX, c, *off, *len, mode);
                agree(what, want, got)?;
            }
            Op::Read { from, off, len } => {
                let Some((c, m)) = self.target(from)? else {
                    return Ok(());
                };
                if self.model.kind(m) == FileKind::Symlink {
                    // read(2) cannot open a symlink: the kernel never asks.
                    return Ok(());
                }
                let want = self.model.read(m, *off, *len);
                let got = self.fs().read(c, *off, *len as u32);
                if let Some((want, got)) = agree(what, want, got)? {
                    compare_bytes(what, *off, &want, &got)?;
                }
            }
            Op::CopyRange {
                from,
                off_in,
                to,
                off_out,
                len,
                stored,
            } => {
                let Some((ci, mi)) = self.target(from)? else {
                    return Ok(());
                };
                if let Target::Path(path) = to {
                    let path = path.clone();
                    self.apply_concrete(&Op::Create { path, excl: false })?;
                }
                let Some((co, mo)) = self.target(to)? else {
                    return Ok(());
                };
                if *stored {
                    self.cache().upload_all().map_err(|e| fail(format!("{what}: {e}")))?;
                }
                self.copy_range(what, (ci, mi, *off_in), (co, mo, *off_out), *len)?;
            }
            Op::Link { from, to } => {
                let Some((cs, ms)) = self.walk(&at(from).0, false)? else {
                    return Ok(());
                };
                let Some((c, m, name)) = self.walk_parent(to)? else {
                    return Ok(());
                };
                let want = self.model.link(ms, m, name).map(|()| ms);
                let got = self.fs().link(cs, c, name);
                self.entry_made(what, want, got)?;
            }
            Op::Unlink { path } => {
                let Some((c, m, name)) = self.walk_parent(path)? else {
                    return Ok(());
                };
                let want = self.model.unlink(m, name);
                let got = self.fs().unlink(c, name);
                agree(what, want, got)?;
            }
            Op::Rmdir { path } => {
                let Some((c, m, name)) = self.walk_parent(path)? else {
                    return Ok(());
                };
                let want = self.model.rmdir(m, name);
                let got = self.fs().rmdir(c, name);
                agree(what, want, got)?;
            }
            Op::Rename { from, to, flags } => {
                let Some((c, m, name)) = self.walk_parent(from)? else {
                    return Ok(());
                };
                let Some((nc, nm, newname)) = self.walk_parent(to)? else {
                    return Ok(());
                };
                let want = self.model.rename(m, name, nm, newname, *flags);
                let got = self.fs().rename(c, name, nc, newname, *flags);
                agree(what, want, got)?;
            }
            Op::Snapshot { from, to, mkdir_first } => {
                if *mkdir_first {
                    self.apply_concrete(&Op::Mkdir { path: to.clone() })?;
                }
                let Some((cs, ms)) = self.walk(&at(from).0, false)? else {
                    return Ok(());
                };
                let Some((cd, md)) = self.walk(&at(to).0, false)? else {
                    return Ok(());
                };
                let want = self.model.snapshot(ms, md);
                let got = self.fs().copy_tree(cs, cd);
                if let Some(((inodes, entries), report)) = agree(what, want, got)?
                    && (report.inodes, report.entries) != (inodes, entries)
                {
                    return Err(fail(format!(
                        "{what}: copied {report:?}, the model made {inodes} inodes and {entries} entries"
                    )));
                }
            }
            Op::RemoveTree { path } => {
                let Some((c, m, name)) = self.walk_parent(path)? else {
                    return Ok(());
                };
                let want = self.model.remove_tree(m, name);
                let got = self.fs().remove_tree(c, name);
                if let Some((entries, report)) = agree(what, want, got)?
                    && report.entries != entries
                {
                    return Err(fail(format!("{what}: removed {report:?}, the model {entries} entries")));
                }
            }
            Op::Open { path } => {
                let Some((c, m)) = self.walk(&at(path).0, true)? else {
                    return Ok(());
                };
                if self.model.kind(m) == FileKind::RegularFile {
                    self.model.inode_mut(m).open += 1;
                    self.held.push((c, m));
                } else {
                    self.fs().forget(c, 1);
                }
            }
            Op::Close { handle } => {
                if !self.held.is_empty() {
                    let (c, m) = self.held.remove(*handle as usize % self.held.len());
                    self.fs().forget(c, 1);
                    self.model.close(m);
                }
            }
            Op::Flush { drop_clean } => {
                self.cache().upload_all().map_err(|e| fail(format!("{what}: {e}")))?;
                if *drop_clean {
                    self.cache().drop_clean();
                }
            }
            Op::Remount { clean } => {
                self.unmount(*clean)?;
                if !clean {
                    self.recover()?;
                }
                self.fsck()?;
                self.remount("cache")?;
                self.verify()?;
            }
        }
        Ok(())
    }

    /// A create, mkdir, symlink or link: the same inode as the model's, with its
    /// attributes. The kernel's lookup of the reply is forgotten at once.
    fn entry_made(&mut self, what: &str, want: Errno<u64>, got: Result<Attr, FsError>) -> TestResult {
        if let Some((m, a)) = agree(what, want, got)? {
            self.fs().forget(a.ino, 1);
            self.bind(a.ino, m)?;
            self.check_attr(what, &a, m)?;
        }
        Ok(())
    }

    fn copy_range(
        &mut self,
        what: &str,
        (ci, mi, off_in): (u64, u64, u64),
        (co, mo, off_out): (u64, u64, u64),
        len: u64,
    ) -> TestResult {
        let (kin, kout) = (self.model.kind(mi), self.model.kind(mo));
        let want = if kin == FileKind::Directory || kout == FileKind::Directory {
            Err(libc::EISDIR)
        } else if kin != FileKind::RegularFile {
            // The kernel refuses a source that is no regular file itself (EINVAL).
            return Ok(());
        } else if kout != FileKind::RegularFile {
            Err(libc::EINVAL)
        } else {
            let bytes = self.model.copy_source(mi, off_in, len);
            let n = bytes.len() as u64;
            if mi == mo && n > 0 && off_out < off_in + n && off_in < off_out + n {
                // The kernel refuses overlapping ranges in one file (EINVAL).
                return Ok(());
            }
            if n > 0 {
                self.model.write(mo, off_out, &bytes).expect("a regular file");
            }
            Ok(n as usize)
        };
        let got = self.fs().copy_file_range(&CTX, ci, off_in, co, off_out, len);
        if let Some((n, copied)) = agree(what, want, got)?
            && n != copied
        {
            return Err(fail(format!("{what}: copied {copied} bytes, the model {n}")));
        }
        Ok(())
    }

    /// Stop the mount: cleanly (files closed, everything uploaded) or as a crash (the
    /// process dies: dirty blocks stay in the cache directory, the kernel's references
    /// are gone, open files that were removed are purged at the next mount or by fsck).
    fn unmount(&mut self, clean: bool) -> TestResult {
        if clean {
            for (c, m) in std::mem::take(&mut self.held) {
                self.fs().forget(c, 1);
                self.model.close(m);
            }
            self.cache().upload_all().map_err(|e| fail(format!("unmount: {e}")))?;
        } else {
            for (_, m) in std::mem::take(&mut self.held) {
                self.model.close(m);
            }
            self.crashed = true;
        }
        let mount = self.mount.take().expect("mounted");
        mount.cache.shutdown();
        drop(mount);
        Ok(())
    }

    fn remount(&mut self, cache_dir: &str) -> TestResult {
        self.mount = Some(mount(self.dir.path(), cache_dir)?);
        self.mounts += 1;
        Ok(())
    }

    /// fsck.s3fs's crash recovery, as it runs it before its checks: open the DB (which
    /// purges the files removed while open), delete the objects that released, and
    /// upload the blocks left dirty in the cache.
    fn recover(&self) -> TestResult {
        let db = self.dir.path().join("meta.db");
        let fs = Filesystem::open(&db, BS).map_err(|e| fail(format!("recovery: {e}")))?;
        let released = fs.take_deleted_objects();
        let store = LocalStore::open(&self.dir.path().join("store")).map_err(|e| fail(format!("store: {e}")))?;
        let mut config = CacheConfig::new(self.dir.path().join("cache"), BS);
        config.dirty_upload_delay = Duration::ZERO;
        config.min_free_bytes = Some(0);
        let codec = Codec::new(None, Compression::default());
        cache::recover_dirty(config, fs.db(), db, FsStore::new(Arc::new(store.clone()), codec))
            .map_err(|e| fail(format!("recovery: {e}")))?;
        drop(fs);
        for id in released {
            block_on(store.delete(&names::data(id as u64))).map_err(|e| fail(format!("recovery: {e}")))?;
        }
        Ok(())
    }

    /// fsck's DB checks and its comparison with the store find nothing to repair, except
    /// (after a crash) objects whose deletion the crash lost, left in the store.
    fn fsck(&self) -> TestResult {
        let db_err = |e: rusqlite::Error| fail(format!("fsck: {e}"));
        let store = LocalStore::open(&self.dir.path().join("store")).map_err(|e| fail(format!("store: {e}")))?;
        let conn = rusqlite::Connection::open(self.dir.path().join("meta.db")).map_err(db_err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(db_err)?;
        let mut out = Findings::new();
        check_db(&conn, BS, &mut |_, _, _| {}, &mut out).map_err(db_err)?;
        if !out.is_clean() {
            let items: Vec<String> = out.items.iter().map(|f| f.to_string()).collect();
            return Err(fail(format!(
                "fsck found (uncorrectable: {}, objects to delete: {:?}):\n{}",
                out.uncorrectable,
                out.objects_to_delete,
                items.join("\n")
            )));
        }
        // The store holds exactly the objects of the DB.
        checks::begin_listing(&conn).map_err(db_err)?;
        let listed = block_on(list_all(&store, "s3fs_data_")).map_err(|e| fail(format!("listing the store: {e}")))?;
        let ids: Vec<(i64, u64)> = listed
            .iter()
            .map(|o| {
                let id = o.key.strip_prefix("s3fs_data_").and_then(|s| s.parse().ok());
                id.map(|id| (id, o.size))
                    .ok_or_else(|| fail(format!("unexpected object {} in the store", o.key)))
            })
            .collect::<TestResult<_>>()?;
        checks::record_listed(&conn, &ids).map_err(db_err)?;
        let mut store_out = Findings::new();
        checks::compare_with_store(&conn, &mut store_out).map_err(db_err)?;
        let leaked = |f: &checks::Finding| self.crashed && f.check == check_id::STORE_SPURIOUS;
        let unexpected: Vec<String> = store_out
            .items
            .iter()
            .filter(|f| !leaked(f))
            .map(|f| f.to_string())
            .collect();
        if !unexpected.is_empty() {
            return Err(fail(format!(
                "the store does not match the DB:\n{}",
                unexpected.join("\n")
            )));
        }
        Ok(())
    }

    /// Everything reachable from the root, and every open file, is as the model says.
    fn verify(&mut self) -> TestResult {
        let root = self.fs().getattr(ROOT).map_err(|e| fail(format!("getattr /: {e}")))?;
        self.check_attr("/", &root, MODEL_ROOT)?;
        self.verify_dir(ROOT, MODEL_ROOT, ROOT, "")?;
        for (c, m) in self.held.clone() {
            let what = format!("open file {c}");
            let a = self
                .fs()
                .getattr(c)
                .map_err(|e| fail(format!("{what}: getattr: {e}")))?;
            self.check_attr(&what, &a, m)?;
            self.check_data(&what, c, m)?;
        }
        Ok(())
    }

    fn verify_dir(&mut self, c: u64, m: u64, c_parent: u64, path: &str) -> TestResult {
        let mut listed: BTreeMap<Vec<u8>, (u64, FileKind)> = BTreeMap::new();
        let mut offset = 0;
        loop {
            let batch = self
                .fs()
                .readdir(c, offset)
                .map_err(|e| fail(format!("readdir {path}/: {e}")))?;
            let Some(last) = batch.last() else { break };
            offset = last.offset;
            for e in batch {
                let expect_ino = match e.name.as_slice() {
                    b"." => Some(c),
                    b".." => Some(c_parent),
                    _ => None,
                };
                if let Some(ino) = expect_ino {
                    if e.ino != ino {
                        return Err(fail(format!("{path}/{}: inode {}, not {ino}", lossy(&e.name), e.ino)));
                    }
                    continue;
                }
                if listed.insert(e.name.clone(), (e.ino, e.kind)).is_some() {
                    return Err(fail(format!("{path}/: {} listed twice", lossy(&e.name))));
                }
            }
        }
        let want: Vec<&Vec<u8>> = self.model.dir(m).expect("a directory").keys().collect();
        let got: Vec<&Vec<u8>> = listed.keys().collect();
        if want != got {
            return Err(fail(format!(
                "{path}/ lists {:?}, the model has {:?}",
                got.iter().map(|n| lossy(n)).collect::<Vec<_>>(),
                want.iter().map(|n| lossy(n)).collect::<Vec<_>>()
            )));
        }
        for (entry, (ci, kind)) in listed {
            let what = format!("{path}/{}", lossy(&entry));
            let mi = self.model.lookup(m, &entry).expect("listed by the model");
            self.bind(ci, mi)?;
            let a = self
                .fs()
                .lookup(c, &entry)
                .map_err(|e| fail(format!("lookup {what}: {e}")))?;
            self.fs().forget(a.ino, 1);
            if a.ino != ci || a.kind() != kind {
                return Err(fail(format!(
                    "{what}: readdir says inode {ci} ({kind:?}), lookup inode {} ({:?})",
                    a.ino,
                    a.kind()
                )));
            }
            self.check_attr(&what, &a, mi)?;
            match &self.model.inode(mi).node {
                Node::File(_) => self.check_data(&what, ci, mi)?,
                Node::Symlink(t) => {
                    let got = self
                        .fs()
                        .readlink(ci)
                        .map_err(|e| fail(format!("readlink {what}: {e}")))?;
                    if got != *t {
                        return Err(fail(format!("{what} -> {}, the model says {}", lossy(&got), lossy(t))));
                    }
                }
                Node::Dir(_) => self.verify_dir(ci, mi, c, &what)?,
            }
        }
        Ok(())
    }
}

/// The path of a concrete [`Pa`] (see [`World::concrete`]).
fn at(pa: &Pa) -> &P {
    match pa {
        Pa::At(p) => p,
        other => panic!("{other:?} was not located"),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn compare_bytes(what: &str, off: u64, want: &[u8], got: &[u8]) -> TestResult {
    if want == got {
        return Ok(());
    }
    let first = want.iter().zip(got).position(|(a, b)| a != b);
    Err(fail(match first {
        Some(i) => format!(
            "{what}: byte at offset {} (block {}) is {:#04x}, the model says {:#04x} ({} bytes read, model {})",
            off + i as u64,
            (off + i as u64) / BS,
            got[i],
            want[i],
            got.len(),
            want.len()
        ),
        None => format!("{what}: read {} bytes, the model has {}", got.len(), want.len()),
    }))
}

/// Run `ops` on the core and the model; then compare everything, unmount, run fsck,
/// mount again with an empty cache (every block from the store) and compare again.
fn run(ops: &[Op]) -> TestResult {
    run_then(ops, |_| Ok(()))
}

/// [`run`], with `check` run on the world right after the operations.
fn run_then(ops: &[Op], check: impl FnOnce(&mut World) -> TestResult) -> TestResult {
    let mut w = World::new()?;
    for (i, op) in ops.iter().enumerate() {
        w.apply(op)
            .map_err(context(format!("operation {i} of {}: {op:?}", ops.len())))?;
    }
    check(&mut w)?;
    w.verify().map_err(context("after the operations"))?;
    w.unmount(true)?;
    w.fsck().map_err(context("after the operations"))?;
    let fresh = format!("cache-{}", w.mounts);
    w.remount(&fresh)?;
    w.verify().map_err(context("mounted again with an empty cache"))?;
    w.unmount(true)?;
    Ok(())
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/model_property.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_operations_agree_with_the_model(ops in vec(op_strategy(), 1..=MAX_OPS)) {
        run(&ops)?;
    }
}

// ---------------------------------------------------------------------------------------
// Fixed sequences: examples of what the random ones do, each with checks of its own

/// The attributes at `path` (looked up from the root, the lookups forgotten).
fn core_lookup(fs: &Filesystem, path: &str) -> Attr {
    let mut a = fs.getattr(ROOT).unwrap();
    for name in path.split('/') {
        a = fs.lookup(a.ino, name.as_bytes()).unwrap();
        fs.forget(a.ino, 1);
    }
    a
}

/// A file with three links, two of them inside the tree copied: the copy has one inode
/// with two links, and its own data.
#[test]
fn snapshot_keeps_hard_links_inside_the_tree() {
    use Op::*;
    let ops = [
        Mkdir { path: p("a") },
        Create {
            path: p("a/b"),
            excl: true,
        },
        Write {
            to: Target::Path(p("a/b")),
            off: BS - 3,
            len: 2 * BS,
            seed: 1,
        },
        Link {
            from: p("a/b"),
            to: p("a/c"),
        },
        Link {
            from: p("a/b"),
            to: p("d"),
        },
        Snapshot {
            from: p("a"),
            to: p("b"),
            mkdir_first: true,
        },
        Write {
            to: Target::Path(p("b/c")),
            off: 0,
            len: 10,
            seed: 2,
        },
        Truncate {
            to: Target::Path(p("a/c")),
            size: BS + 1,
        },
    ];
    run_then(&ops, |w| {
        let fs = w.fs();
        let (orig, copy, copy_link) = (core_lookup(fs, "a/b"), core_lookup(fs, "b/b"), core_lookup(fs, "b/c"));
        assert_eq!(copy.ino, copy_link.ino, "the copies of the two links are one inode");
        assert_ne!(copy.ino, orig.ino);
        assert_eq!((orig.nlink, copy.nlink), (3, 2));
        assert_eq!((orig.size, copy.size), (BS + 1, BS - 3 + 2 * BS));
        assert_eq!(fs.read(copy.ino, 0, 10).unwrap(), fill(2, 0, 10));
        Ok(())
    })
    .unwrap();
}

/// A file kept open, removed and written, then a crash: fsck's recovery purges it and
/// deletes its objects; nothing of it is left in the DB or the store.
#[test]
fn open_files_removed_before_a_crash_are_purged() {
    use Op::*;
    let ops = [
        Create {
            path: p("a"),
            excl: true,
        },
        Write {
            to: Target::Path(p("a")),
            off: 0,
            len: 3 * BS,
            seed: 3,
        },
        Flush { drop_clean: false },
        Open { path: p("a") },
        Unlink { path: p("a") },
        Write {
            to: Target::Held(0),
            off: BS,
            len: 5,
            seed: 1,
        },
        Remount { clean: false },
        Create {
            path: p("a"),
            excl: true,
        },
    ];
    run_then(&ops, |w| {
        assert!(w.crashed && w.held.is_empty());
        let removed = *w.to_core.get(&3).expect("model inode 3 is the first file");
        assert_eq!(w.fs().getattr(removed).unwrap_err().errno(), libc::ENOENT);
        let conn = rusqlite::Connection::open(w.dir.path().join("meta.db")).unwrap();
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(objects, 0);
        let store = LocalStore::open(&w.dir.path().join("store")).unwrap();
        assert!(block_on(list_all(&store, "s3fs_data_")).unwrap().is_empty());
        Ok(())
    })
    .unwrap();
}

/// A crash after a truncate cut a stored block in the cache, before the cut block was
/// uploaded: the DB still maps the whole old block past the new size. fsck.s3fs uploads
/// the dirty blocks before it checks (its check of sizes would otherwise raise the size
/// back over the cut bytes), and then finds nothing; the cut bytes stay cut.
#[test]
fn a_block_cut_by_a_truncate_and_left_dirty_by_a_crash_is_recovered() {
    use Op::*;
    run(&[
        Create {
            path: p("c"),
            excl: true,
        },
        Write {
            to: Target::Path(p("c")),
            off: 2 * BS + 2,
            len: 2 * BS,
            seed: 1,
        },
        Flush { drop_clean: false },
        Truncate {
            to: Target::Path(p("c")),
            size: 2 * BS + 1,
        },
        Remount { clean: false },
    ])
    .unwrap();
}
