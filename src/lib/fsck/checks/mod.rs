//! The metadata consistency checks of fsck.s3fs: S3QL's checks 1, 3–6, 8, 9 and 12–21
//! (see `fsck.s3ql`) for our schema, plus the DB half of its store checks 10 and 11.
//!
//! [`check_db`] runs the DB-only checks in the order below, each in its own transaction,
//! repairing what can be repaired; [`begin_listing`], [`record_listed`] and
//! [`compare_with_store`] compare the `objects` table with the store's listing.
//!
//! | # | check id | what | repair |
//! |---|---|---|---|
//! | 1 | `lost+found` | root is a directory; `/lost+found` exists and is a directory | recreate (mode 0700, owner of the root); a non-directory `/lost+found` is saved as `/lost+found/inode-<id>`; one moved into itself goes back to `/` |
//! | 2 | `names-refcount` | names stored as BLOBs; `names.refcount` = uses by entries + xattrs | TEXT names converted (*reported only* if a BLOB twin exists); fix; unused names deleted |
//! | 3 | `contents-name` | entries whose name is missing | moved to `/lost+found/<escaped parent path>-<inode>` (`[<parent>]-<inode>` if the parent is the root or has no path) |
//! | 4 | `contents-inode` | entries whose inode is missing | entry deleted |
//! | 5 | `contents-parent` | entries whose parent is missing or not a directory | moved to `/lost+found/[<parent>]-<name>` (a parent without file type is left to check 15) |
//! | 6 | `blocks-hash` | blocks with a NULL hash (failed uploads), or whose place in their object cannot be (a segment past the end of its pack) | block and its mappings deleted, files quarantined |
//! | 7 | `inode-blocks` | mappings to missing blocks; of missing or non-regular inodes (an inode without file type counts as regular); beyond the largest file size | deleted; files of missing blocks quarantined |
//! | 8 | `blocks-refcount` | `blocks.refcount` = mappings | fix; unused blocks deleted |
//! | 9 | `objects-refcount` | blocks in missing objects; `objects.refcount` = blocks | block and mappings deleted, files quarantined; fix; unused objects deleted and queued in [`Findings::objects_to_delete`] |
//! | 10 | `inodes-refcount` | `inodes.refcount` = entries (the root: 1, no entry); directories have one entry | fix; see below |
//! | 11 | `inodes-size` | sizes within `0..=MAX_FILE_SIZE`; size of a regular file covers its blocks | out of range: set to the end of the data; too small: raised |
//! | 12 | `xattrs` | xattrs of missing inodes; with missing names | deleted; renamed `user.lost+found_<n>`, `n` = the missing name id (+1 until free on the inode), `trusted.` instead of `user.` on inodes other than files and directories |
//! | 13 | `symlinks` | targets of missing or non-symlink inodes; symlinks without target | deleted; *reported only* |
//! | 14 | `loops` | every entry reachable from the root | one entry of each unreachable cycle moved to `/lost+found/<its name>` |
//! | 15 | `unix` | POSIX conventions | inode without (valid) file type → directory if it has entries, else symlink if it has a target, else regular file; symlink size = target length; the rest *reported only* |
//! | 16 | `foreign-keys` | `PRAGMA foreign_key_check` | none: any hit is uncorrectable |
//!
//! **Layout.** One file per group of tables: `lost_found.rs` (check 1 and the
//! quarantine), `names.rs` (2), `contents.rs` (3–5), `blocks.rs` (6–9), `inodes.rs`
//! (10–11), `xattrs.rs` (12), `symlinks.rs` (13), `tree.rs` (14), `unix.rs` (15),
//! `foreign_keys.rs` (16) and `store.rs` (the comparison with the store). This module
//! holds what they share: the findings, the order of the checks, their transactions,
//! row helpers and fsck's scratch tables.
//! The checks find damage with SELECTs and repair it through the row operations of
//! [`crate::meta`]; the only rows they write themselves are in fsck's own TEMP tables.
//!
//! Names made in `/lost+found` go through [`super::paths::resolve_free`] as in S3QL:
//! longer than 251 bytes → first 120 bytes + ` ... ` + last 120 bytes; then `-1`, `-2`, …
//! appended until free.
//!
//! **Quarantine.** A file that lost data (a mapping deleted because its block or object
//! is gone) is reported by its full path as "may lack data" and each of its entries is
//! moved to `/lost+found/<escaped path>` (S3QL's check 12 does so for every such case);
//! entries already directly in `/lost+found` stay where they are.
//!
//! **Unreferenced inodes** (check 10). An inode without entries whose refcount is 0 or
//! less and which has no entries under it is a file removed while still open when the
//! mount stopped: it is purged (blocks released, xattrs and target deleted), as
//! [`crate::fs::Filesystem::open`] would on the next mount. Any other inode without entries
//! is linked as `/lost+found/inode-<id>`. A directory with several entries keeps one
//! (the first whose parent reaches the root without passing through the directory
//! itself, else the oldest) and loses the others.
//!
//! **Report-only findings** have `repaired: false` but do not make the filesystem
//! uncorrectable (S3QL exits 128 for them, not 172): symlinks without target, a size on
//! a fifo/socket/device, rdev on a non-device, entries under a non-directory, data
//! blocks on a non-regular file, names longer than 255 bytes. Only foreign-key hits
//! left after every other check set [`Findings::uncorrectable`].
//!
//! **Cost.** Every check's clean path is set-based: one scan of a table with primary-key
//! or index probes, or a `GROUP BY` into a TEMP table; per-row Rust code runs only on
//! damaged rows. SQLite cannot put a TEMP index on a main table, so instead of S3QL's
//! extra indexes (which would be written into the DB and dropped again) the counts are
//! aggregated into TEMP tables (dropped after each check): a clean run writes nothing to
//! the main database, and so adds nothing to the next incremental metadata upload. Repairs that are consequences of
//! an earlier repair (a block's refcount after its mapping was deleted, …) are applied
//! without a second finding.

mod blocks;
mod contents;
mod foreign_keys;
mod inodes;
mod lost_found;
mod names;
mod store;
mod symlinks;
mod tree;
mod unix;
mod xattrs;

use std::collections::HashSet;
use std::fmt;

use rusqlite::{Connection, OptionalExtension};

use super::paths::column_bytes;

pub use super::paths::path_of;
pub use store::{begin_listing, compare_with_store, record_listed};

// The file type bits are written as numbers in the SQL of the checks.
const _: () = assert!(
    libc::S_IFMT == 61440
        && libc::S_IFDIR == 16384
        && libc::S_IFREG == 32768
        && libc::S_IFLNK == 40960
        && libc::S_IFIFO == 4096
        && libc::S_IFSOCK == 49152
        && libc::S_IFCHR == 8192
        && libc::S_IFBLK == 24576
);

/// The ids of the checks, as in [`Finding::check`], in execution order.
pub mod check_id {
    pub const LOST_FOUND: &str = "lost+found";
    pub const NAMES_REFCOUNT: &str = "names-refcount";
    pub const CONTENTS_NAME: &str = "contents-name";
    pub const CONTENTS_INODE: &str = "contents-inode";
    pub const CONTENTS_PARENT: &str = "contents-parent";
    pub const BLOCKS_HASH: &str = "blocks-hash";
    pub const INODE_BLOCKS: &str = "inode-blocks";
    pub const BLOCKS_REFCOUNT: &str = "blocks-refcount";
    pub const OBJECTS_REFCOUNT: &str = "objects-refcount";
    pub const INODES_REFCOUNT: &str = "inodes-refcount";
    pub const INODES_SIZE: &str = "inodes-size";
    pub const XATTRS: &str = "xattrs";
    pub const SYMLINKS: &str = "symlinks";
    pub const LOOPS: &str = "loops";
    pub const UNIX: &str = "unix";
    pub const FOREIGN_KEYS: &str = "foreign-keys";
    /// [`super::compare_with_store`]: objects of the DB missing from the store.
    pub const STORE_MISSING: &str = "store-missing";
    /// [`super::compare_with_store`]: objects in the store unknown to the DB.
    pub const STORE_SPURIOUS: &str = "store-spurious";
    /// [`super::compare_with_store`]: `phys_size` of -1 set from the listing.
    pub const STORE_PHYS_SIZE: &str = "store-phys-size";
}

/// One problem found (and whether it was repaired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// One of the [`check_id`]s.
    pub check: &'static str,
    pub message: String,
    pub repaired: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.repaired { "repaired" } else { "not repaired" };
        write!(f, "[{}] {} ({state})", self.check, self.message)
    }
}

/// Everything the checks found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub items: Vec<Finding>,
    /// Object ids whose rows were deleted because nothing references them any more: the
    /// driver deletes `s3fs_data_<id>` from the store (some may never have been
    /// uploaded, e.g. an upload interrupted by a crash: a missing object is no error).
    pub objects_to_delete: Vec<i64>,
    /// Set when something could not be repaired (exit 172 = 128 + 44).
    pub uncorrectable: bool,
}

impl Findings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Nothing found and nothing left to delete.
    pub fn is_clean(&self) -> bool {
        self.items.is_empty() && self.objects_to_delete.is_empty() && !self.uncorrectable
    }

    /// Record a problem that was repaired.
    pub fn add_repaired(&mut self, check: &'static str, message: impl Into<String>) {
        self.items.push(Finding {
            check,
            message: message.into(),
            repaired: true,
        });
    }

    /// Record a problem that is only reported (left as it is, not uncorrectable).
    pub fn add_reported(&mut self, check: &'static str, message: impl Into<String>) {
        self.items.push(Finding {
            check,
            message: message.into(),
            repaired: false,
        });
    }

    /// Record a problem that could not be repaired; sets [`Findings::uncorrectable`].
    pub fn add_uncorrectable(&mut self, check: &'static str, message: impl Into<String>) {
        self.add_reported(check, message);
        self.uncorrectable = true;
    }

    /// Append everything `other` found.
    pub fn merge(&mut self, other: Findings) {
        self.items.extend(other.items);
        self.objects_to_delete.extend(other.objects_to_delete);
        self.uncorrectable |= other.uncorrectable;
    }

    /// The findings of one check.
    pub fn of(&self, check: &str) -> impl Iterator<Item = &Finding> {
        self.items.iter().filter(move |f| f.check == check)
    }
}

/// Progress callback: (phase name, done, total) — called at least once per phase; the
/// driver shows a progress bar or logs one line per phase.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// State shared by the checks of one run.
struct State {
    block_size: u64,
    now: i64,
    /// The `/lost+found` directory, once check 1 (or [`lost_found::lost_found`]) has made
    /// sure of it.
    lof: Option<i64>,
    /// Blocks that lost a mapping in a repair already reported: check 8 fixes their
    /// refcount without a second finding.
    unlinked_blocks: HashSet<i64>,
    /// Objects that lost a block in a repair already reported (check 9 likewise).
    unlinked_objects: HashSet<i64>,
}

impl State {
    fn new(block_size: u64) -> State {
        State {
            block_size,
            now: crate::fs::now_ns(),
            lof: None,
            unlinked_blocks: HashSet::new(),
            unlinked_objects: HashSet::new(),
        }
    }
}

type CheckFn = fn(&Connection, &mut State, &mut Findings) -> rusqlite::Result<()>;

/// The checks of [`check_db`], in order.
const CHECKS: [(&str, CheckFn); 16] = [
    (check_id::LOST_FOUND, lost_found::check_lost_found),
    (check_id::NAMES_REFCOUNT, names::check_names_refcount),
    (check_id::CONTENTS_NAME, contents::check_contents_name),
    (check_id::CONTENTS_INODE, contents::check_contents_inode),
    (check_id::CONTENTS_PARENT, contents::check_contents_parent),
    (check_id::BLOCKS_HASH, blocks::check_blocks_hash),
    (check_id::INODE_BLOCKS, blocks::check_inode_blocks),
    (check_id::BLOCKS_REFCOUNT, blocks::check_blocks_refcount),
    (check_id::OBJECTS_REFCOUNT, blocks::check_objects_refcount),
    (check_id::INODES_REFCOUNT, inodes::check_inodes_refcount),
    (check_id::INODES_SIZE, inodes::check_inodes_size),
    (check_id::XATTRS, xattrs::check_xattrs),
    (check_id::SYMLINKS, symlinks::check_symlinks),
    (check_id::LOOPS, tree::check_loops),
    (check_id::UNIX, unix::check_unix),
    (check_id::FOREIGN_KEYS, foreign_keys::check_foreign_keys),
];

/// The ids of the checks [`check_db`] runs, in order (also its progress phase names).
pub fn db_check_ids() -> impl Iterator<Item = &'static str> {
    CHECKS.iter().map(|(id, _)| *id)
}

/// Run every DB-only check in order on `conn` (the local metadata DB, not in use by any
/// mount), repairing what can be repaired, each check in its own transaction.
/// `block_size` = the filesystem's data block size in bytes.
///
/// `conn` must not be inside a transaction; foreign key enforcement is turned off while
/// the checks run and restored afterwards. `progress` is called as
/// `(check id, checks done, number of checks)` before each check and once more as
/// `("done", n, n)` at the end. On an error the running check is rolled back and
/// nothing it found is added to `out`.
pub fn check_db(
    conn: &rusqlite::Connection,
    block_size: u64,
    progress: Progress,
    out: &mut Findings,
) -> rusqlite::Result<()> {
    without_foreign_keys(conn, || {
        let mut st = State::new(block_size);
        let total = CHECKS.len() as u64;
        for (i, (id, check)) in CHECKS.iter().enumerate() {
            progress(id, i as u64, total);
            in_transaction(conn, out, |c, found| check(c, &mut st, found))?;
        }
        progress("done", total, total);
        Ok(())
    })
}

/// Run `f` with foreign key enforcement off (restored afterwards): repairs work on rows
/// that violate foreign keys until the repair is complete, as the filesystem itself
/// runs with enforcement off.
fn without_foreign_keys<T>(conn: &Connection, f: impl FnOnce() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let on: bool = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    if on {
        conn.pragma_update(None, "foreign_keys", false)?;
    }
    let result = f();
    if on {
        conn.pragma_update(None, "foreign_keys", true)?;
    }
    result
}

/// Run `f` in one transaction, adding what it found to `out` only once it committed.
fn in_transaction<T>(
    conn: &Connection,
    out: &mut Findings,
    f: impl FnOnce(&Connection, &mut Findings) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let tx = conn.unchecked_transaction()?;
    let mut found = Findings::new();
    let value = f(&tx, &mut found)?;
    tx.commit()?;
    out.merge(found);
    Ok(value)
}

// ---------------------------------------------------------------------------------------
// Row helpers

fn name_of(c: &Connection, name_id: i64) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(c.prepare_cached("SELECT name FROM names WHERE id = ?1")?
        .query_row([name_id], |r| column_bytes(r, 0))
        .optional()?
        .flatten())
}

fn mode_of(c: &Connection, inode: i64) -> rusqlite::Result<Option<u32>> {
    c.prepare_cached("SELECT mode FROM inodes WHERE id = ?1")?
        .query_row([inode], |r| r.get(0))
        .optional()
}

fn file_type(mode: u32) -> u32 {
    mode & libc::S_IFMT
}

/// Whether `mode` has one of the seven valid file types.
fn has_valid_type(mode: u32) -> bool {
    matches!(
        file_type(mode),
        libc::S_IFREG | libc::S_IFDIR | libc::S_IFLNK | libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK
    )
}

fn kind_name(mode: u32) -> &'static str {
    match file_type(mode) {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "inode without file type",
    }
}

fn query_vec<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    p: P,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut st = c.prepare(sql)?;
    st.query_map(p, f)?.collect()
}

// ---------------------------------------------------------------------------------------
// Scratch tables
//
// fsck's own TEMP tables (lists of ids, counts of uses, the set of reachable inodes),
// made, filled and dropped here; those of the store comparison (the listing) are in
// `store.rs`. They are scratch space, not rows of the metadata: the checks find damage
// with SELECTs and change metadata rows only through the operations of `crate::meta`.

/// The temp table `fsck_ids` holding exactly `ids`.
fn fill_ids(c: &Connection, ids: impl IntoIterator<Item = i64>) -> rusqlite::Result<()> {
    c.execute_batch(
        "DROP TABLE IF EXISTS temp.fsck_ids;
         CREATE TEMP TABLE fsck_ids (id INTEGER PRIMARY KEY);",
    )?;
    let mut st = c.prepare("INSERT OR IGNORE INTO temp.fsck_ids (id) VALUES (?1)")?;
    for id in ids {
        st.execute([id])?;
    }
    Ok(())
}

fn drop_ids(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("DROP TABLE IF EXISTS temp.fsck_ids")
}

/// The temp table `fsck_uses (id, n)` holding the rows of `counts`, a `SELECT` of each
/// id and its number of uses (a `GROUP BY`).
fn fill_uses(c: &Connection, counts: &str) -> rusqlite::Result<()> {
    c.execute_batch(&format!(
        "DROP TABLE IF EXISTS temp.fsck_uses;
         CREATE TEMP TABLE fsck_uses (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT INTO temp.fsck_uses (id, n) {counts};"
    ))
}

fn drop_uses(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("DROP TABLE temp.fsck_uses")
}

/// The temp tables `fsck_reach` (inodes known reachable from the root) and
/// `fsck_unreached` (directories with entries not known reachable), both empty.
fn begin_reach(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(
        "DROP TABLE IF EXISTS temp.fsck_reach;
         CREATE TEMP TABLE fsck_reach (id INTEGER PRIMARY KEY);
         DROP TABLE IF EXISTS temp.fsck_unreached;
         CREATE TEMP TABLE fsck_unreached (id INTEGER PRIMARY KEY);",
    )
}

/// Add `from` and everything below it to temp table `fsck_reach`.
fn mark_reachable(c: &Connection, from: i64) -> rusqlite::Result<()> {
    c.execute(
        "WITH RECURSIVE r(id) AS (
             SELECT ?1
             UNION
             SELECT c.inode FROM contents c JOIN r ON c.parent_inode = r.id
         )
         INSERT OR IGNORE INTO temp.fsck_reach (id) SELECT id FROM r",
        [from],
    )?;
    Ok(())
}

/// Add to `fsck_unreached` every directory with entries that is not in `fsck_reach`.
fn note_unreached(c: &Connection) -> rusqlite::Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO temp.fsck_unreached (id)
         SELECT c.parent_inode FROM contents c
         WHERE NOT EXISTS (SELECT 1 FROM temp.fsck_reach r WHERE r.id = c.parent_inode)",
        [],
    )?;
    Ok(())
}

/// Remove from `fsck_unreached` what `fsck_reach` now holds.
fn forget_reached(c: &Connection) -> rusqlite::Result<()> {
    c.execute(
        "DELETE FROM temp.fsck_unreached
         WHERE EXISTS (SELECT 1 FROM temp.fsck_reach r WHERE r.id = fsck_unreached.id)",
        [],
    )?;
    Ok(())
}

/// Remove `id` from `fsck_unreached`.
fn forget_unreached(c: &Connection, id: i64) -> rusqlite::Result<()> {
    c.execute("DELETE FROM temp.fsck_unreached WHERE id = ?1", [id])?;
    Ok(())
}

fn end_reach(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("DROP TABLE temp.fsck_reach; DROP TABLE temp.fsck_unreached;")
}
