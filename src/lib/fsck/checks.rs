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
//! | 6 | `blocks-hash` | blocks with a NULL hash (failed uploads) | block and its mappings deleted, files quarantined |
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

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use rusqlite::{Connection, OptionalExtension, params};

use super::paths::{column_bytes, describe, describe_entry, entry_path, escape, lossy, resolve_free};
use crate::meta::inodes;
use crate::meta::names::{add_name, del_name, delete_entry, insert_entry, move_entry};
use crate::meta::schema::ROOT_INODE;

pub use super::paths::path_of;

// The file type bits are written as numbers in the SQL below.
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
    /// The `/lost+found` directory, once check 1 (or [`lost_found`]) has made sure of it.
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
    (check_id::LOST_FOUND, check_lost_found),
    (check_id::NAMES_REFCOUNT, check_names_refcount),
    (check_id::CONTENTS_NAME, check_contents_name),
    (check_id::CONTENTS_INODE, check_contents_inode),
    (check_id::CONTENTS_PARENT, check_contents_parent),
    (check_id::BLOCKS_HASH, check_blocks_hash),
    (check_id::INODE_BLOCKS, check_inode_blocks),
    (check_id::BLOCKS_REFCOUNT, check_blocks_refcount),
    (check_id::OBJECTS_REFCOUNT, check_objects_refcount),
    (check_id::INODES_REFCOUNT, check_inodes_refcount),
    (check_id::INODES_SIZE, check_inodes_size),
    (check_id::XATTRS, check_xattrs),
    (check_id::SYMLINKS, check_symlinks),
    (check_id::LOOPS, check_loops),
    (check_id::UNIX, check_unix),
    (check_id::FOREIGN_KEYS, check_foreign_keys),
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

fn query_vec<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    p: P,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut st = c.prepare(sql)?;
    st.query_map(p, f)?.collect()
}

/// Delete the mappings and rows of the blocks in temp table `fsck_ids`; returns the
/// inodes that had mappings to them (sorted).
fn delete_blocks_in_ids(c: &Connection) -> rusqlite::Result<Vec<i64>> {
    let inodes = query_vec(
        c,
        "SELECT DISTINCT inode FROM inode_blocks WHERE block_id IN (SELECT id FROM temp.fsck_ids) ORDER BY inode",
        [],
        |r| r.get(0),
    )?;
    c.execute(
        "DELETE FROM inode_blocks WHERE block_id IN (SELECT id FROM temp.fsck_ids)",
        [],
    )?;
    c.execute("DELETE FROM blocks WHERE id IN (SELECT id FROM temp.fsck_ids)", [])?;
    Ok(inodes)
}

// ---------------------------------------------------------------------------------------
// lost+found

/// Create a fresh `lost+found` directory inode (no entry): mode 0700, owned like the
/// root.
fn new_lost_found_inode(c: &Connection, st: &State) -> rusqlite::Result<i64> {
    let (uid, gid): (u32, u32) = c
        .query_row("SELECT uid, gid FROM inodes WHERE id = ?1", [ROOT_INODE], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
        .unwrap_or((0, 0));
    c.execute(
        "INSERT INTO inodes (uid, gid, mode, mtime_ns, atime_ns, ctime_ns, refcount)
         VALUES (?1, ?2, ?3, ?4, ?4, ?4, 1)",
        params![uid, gid, libc::S_IFDIR | 0o700, st.now],
    )?;
    Ok(c.last_insert_rowid())
}

/// The `/lost+found` directory, created or repaired first if need be (check 1).
fn lost_found(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<i64> {
    if let Some(lof) = st.lof {
        return Ok(lof);
    }
    check_lost_found(c, st, out)?;
    Ok(st.lof.expect("check_lost_found sets lof"))
}

/// Check 1: the root is a directory, `/lost+found` exists and is a directory.
fn check_lost_found(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::LOST_FOUND;
    match mode_of(c, ROOT_INODE)? {
        None => {
            c.execute(
                "INSERT INTO inodes (id, uid, gid, mode, mtime_ns, atime_ns, ctime_ns, refcount)
                 VALUES (?1, 0, 0, ?2, ?3, ?3, ?3, 1)",
                params![ROOT_INODE, libc::S_IFDIR | 0o755, st.now],
            )?;
            out.add_repaired(
                CHECK,
                "the root directory (inode 1) was missing; recreated it (owner root, mode 0755)",
            );
        }
        Some(mode) if file_type(mode) != libc::S_IFDIR => {
            c.execute(
                "UPDATE inodes SET mode = ?2 WHERE id = ?1",
                params![ROOT_INODE, libc::S_IFDIR | (mode & 0o7777)],
            )?;
            out.add_repaired(
                CHECK,
                format!("the root (inode 1) was a {}; made it a directory", kind_name(mode)),
            );
        }
        Some(_) => {}
    }

    let entry: Option<(i64, i64, Option<u32>)> = c
        .query_row(
            "SELECT c.rowid, c.inode, i.mode FROM contents c JOIN names n ON n.id = c.name_id
             LEFT JOIN inodes i ON i.id = c.inode
             WHERE c.parent_inode = ?1 AND n.name IN (?2, CAST(?2 AS TEXT))",
            params![ROOT_INODE, b"lost+found".as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    match entry {
        Some((_, ino, Some(mode))) if file_type(mode) == libc::S_IFDIR => {
            st.lof = Some(ino);
        }
        Some((rowid, old, mode)) => {
            let lof = new_lost_found_inode(c, st)?;
            c.execute("UPDATE contents SET inode = ?2 WHERE rowid = ?1", params![rowid, lof])?;
            st.lof = Some(lof);
            match mode {
                Some(mode) => {
                    // The old inode keeps its link count: its entry moves into the new
                    // directory.
                    let name = resolve_free(c, lof, format!("inode-{old}").as_bytes())?;
                    insert_entry(c, lof, &name, old)?;
                    out.add_repaired(
                        CHECK,
                        format!(
                            "/lost+found was a {} (inode {old}); created a new directory and moved the old one to /lost+found/{}",
                            kind_name(mode),
                            lossy(&name)
                        ),
                    );
                }
                None => out.add_repaired(
                    CHECK,
                    format!("/lost+found referred to missing inode {old}; created a new directory"),
                ),
            }
        }
        None => {
            // An old SQLite bug made fsck.s3ql move lost+found into itself: move it back.
            let inside_itself: Option<(i64, i64)> = c
                .query_row(
                    "SELECT c.rowid, c.inode FROM contents c JOIN names n ON n.id = c.name_id
                     JOIN inodes i ON i.id = c.inode
                     WHERE n.name IN (?1, CAST(?1 AS TEXT)) AND c.parent_inode = c.inode
                       AND (i.mode & 61440) = 16384
                     LIMIT 1",
                    [b"lost+found".as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((rowid, ino)) = inside_itself {
                c.execute(
                    "UPDATE contents SET parent_inode = ?2 WHERE rowid = ?1",
                    params![rowid, ROOT_INODE],
                )?;
                st.lof = Some(ino);
                out.add_repaired(CHECK, "/lost+found was inside itself; moved it back to /");
            } else {
                let lof = new_lost_found_inode(c, st)?;
                insert_entry(c, ROOT_INODE, b"lost+found", lof)?;
                st.lof = Some(lof);
                out.add_repaired(CHECK, "/lost+found was missing; created it");
            }
        }
    }
    Ok(())
}

/// Quarantine the files `inodes` that lost data: report each entry by its path as "may
/// lack data" (`why` says why) and move it into `/lost+found/<escaped path>`. Entries
/// already directly in `/lost+found` stay; inodes that no longer exist are skipped.
fn quarantine(
    c: &Connection,
    st: &mut State,
    out: &mut Findings,
    check: &'static str,
    inodes: &[i64],
    why: &str,
) -> rusqlite::Result<()> {
    if inodes.is_empty() {
        return Ok(());
    }
    let lof = lost_found(c, st, out)?;
    for &ino in inodes {
        if mode_of(c, ino)?.is_none() {
            continue;
        }
        let entries: Vec<(i64, i64, i64, Option<Vec<u8>>)> = query_vec(
            c,
            "SELECT c.rowid, c.parent_inode, c.name_id, n.name FROM contents c
             LEFT JOIN names n ON n.id = c.name_id WHERE c.inode = ?1 ORDER BY c.rowid",
            [ino],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, column_bytes(r, 3)?)),
        )?;
        if entries.is_empty() {
            out.add_repaired(check, format!("inode {ino} (no directory entry) may lack data: {why}"));
            continue;
        }
        for (rowid, parent, name_id, name) in entries {
            let name = name.unwrap_or_else(|| format!("inode-{ino}").into_bytes());
            let path = entry_path(c, parent, &name)?;
            let shown = describe_entry(c, parent, &name)?;
            if parent == lof || ino == ROOT_INODE || ino == lof {
                out.add_repaired(check, format!("{shown} may lack data: {why}"));
                continue;
            }
            let base = match &path {
                Some(p) => escape(p),
                None => [format!("[{parent}]-").as_bytes(), &name].concat(),
            };
            let new = resolve_free(c, lof, &base)?;
            move_entry(c, rowid, name_id, lof, &new)?;
            out.add_repaired(
                check,
                format!("{shown} may lack data: {why}; moved to /lost+found/{}", lossy(&new)),
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Checks 2–5: names and entries

/// Check 2: `names.refcount` = uses by entries and xattrs; unused names deleted.
fn check_names_refcount(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::NAMES_REFCOUNT;
    // The filesystem stores and looks names up as BLOBs: one stored as TEXT (or a
    // number) would never be found by name.
    let not_blobs: Vec<(i64, Vec<u8>)> =
        query_vec(c, "SELECT id, name FROM names WHERE typeof(name) != 'blob'", [], |r| {
            Ok((r.get(0)?, column_bytes(r, 1)?.unwrap_or_default()))
        })?;
    for (id, name) in not_blobs {
        let twin: Option<i64> = c
            .query_row("SELECT id FROM names WHERE name = ?1", [&name], |r| r.get(0))
            .optional()?;
        match twin {
            None => {
                c.execute("UPDATE names SET name = ?2 WHERE id = ?1", params![id, name])?;
                out.add_repaired(
                    CHECK,
                    format!("name \"{}\" (id {id}) was not stored as bytes; converted", lossy(&name)),
                );
            }
            Some(twin) => out.add_reported(
                CHECK,
                format!(
                    "name \"{}\" (id {id}) is not stored as bytes and duplicates name id {twin}; left as it is",
                    lossy(&name)
                ),
            ),
        }
    }
    c.execute_batch(
        "DROP TABLE IF EXISTS temp.fsck_uses;
         CREATE TEMP TABLE fsck_uses (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT INTO temp.fsck_uses (id, n)
             SELECT name_id, count(*) FROM
                 (SELECT name_id FROM contents UNION ALL SELECT name_id FROM ext_attributes)
             GROUP BY name_id;",
    )?;
    let wrong: Vec<(i64, Vec<u8>, i64, i64)> = query_vec(
        c,
        "SELECT n.id, n.name, n.refcount, coalesce(u.n, 0) FROM names n
         LEFT JOIN temp.fsck_uses u ON u.id = n.id WHERE n.refcount IS NOT coalesce(u.n, 0) OR u.n IS NULL",
        [],
        |r| Ok((r.get(0)?, column_bytes(r, 1)?.unwrap_or_default(), r.get(2)?, r.get(3)?)),
    )?;
    for (id, name, old, uses) in wrong {
        if uses == 0 {
            c.execute("DELETE FROM names WHERE id = ?1", [id])?;
            out.add_repaired(
                CHECK,
                format!(
                    "name \"{}\" (id {id}) is not used (refcount {old}); deleted",
                    lossy(&name)
                ),
            );
        } else {
            c.execute("UPDATE names SET refcount = ?2 WHERE id = ?1", params![id, uses])?;
            out.add_repaired(
                CHECK,
                format!(
                    "name \"{}\" (id {id}) has refcount {old} but {uses} uses; fixed",
                    lossy(&name)
                ),
            );
        }
    }
    c.execute_batch("DROP TABLE temp.fsck_uses")
}

/// Check 3: entries whose name is missing are moved into `/lost+found`.
fn check_contents_name(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::CONTENTS_NAME;
    let rows: Vec<(i64, i64, i64, i64)> = query_vec(
        c,
        "SELECT c.rowid, c.name_id, c.inode, c.parent_inode FROM contents c
         WHERE NOT EXISTS (SELECT 1 FROM names n WHERE n.id = c.name_id)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (rowid, name_id, ino, parent) in rows {
        let lof = lost_found(c, st, out)?;
        let base = match path_of(c, parent)? {
            Some(p) if parent != ROOT_INODE => [escape(&p), format!("-{ino}").into_bytes()].concat(),
            _ => format!("[{parent}]-{ino}").into_bytes(),
        };
        let new = resolve_free(c, lof, &base)?;
        let name_new = add_name(c, &new)?;
        c.execute(
            "UPDATE contents SET name_id = ?2, parent_inode = ?3 WHERE rowid = ?1",
            params![rowid, name_new, lof],
        )?;
        out.add_repaired(
            CHECK,
            format!(
                "the entry of inode {ino} in {} has no name (name id {name_id} is missing); moved to /lost+found/{}",
                describe(c, parent)?,
                lossy(&new)
            ),
        );
    }
    Ok(())
}

/// Check 4: entries whose inode is missing are deleted.
fn check_contents_inode(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::CONTENTS_INODE;
    let rows: Vec<(i64, i64, i64, i64)> = query_vec(
        c,
        "SELECT c.rowid, c.name_id, c.inode, c.parent_inode FROM contents c
         WHERE NOT EXISTS (SELECT 1 FROM inodes i WHERE i.id = c.inode)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (rowid, name_id, ino, parent) in rows {
        let name = name_of(c, name_id)?.unwrap_or_default();
        let shown = describe_entry(c, parent, &name)?;
        delete_entry(c, rowid, name_id)?;
        out.add_repaired(CHECK, format!("{shown} refers to missing inode {ino}; entry deleted"));
    }
    Ok(())
}

/// Check 5: entries whose parent is missing or not a directory are moved into
/// `/lost+found` as `[<parent>]-<name>`. A parent without a valid file type is left to
/// check 15, which makes it a directory if it has entries.
fn check_contents_parent(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::CONTENTS_PARENT;
    let rows: Vec<(i64, i64, i64, Option<u32>)> = query_vec(
        c,
        "SELECT c.rowid, c.name_id, c.parent_inode, p.mode FROM contents c
         LEFT JOIN inodes p ON p.id = c.parent_inode
         WHERE p.id IS NULL OR (p.mode & 61440) IN (32768, 40960, 4096, 49152, 8192, 24576)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (rowid, name_id, parent, pmode) in rows {
        let lof = lost_found(c, st, out)?;
        let name = name_of(c, name_id)?.unwrap_or_default();
        let why = match pmode {
            None => format!("its parent directory (inode {parent}) is missing"),
            Some(m) => format!("its parent {} is a {}", describe(c, parent)?, kind_name(m)),
        };
        let new = resolve_free(c, lof, &[format!("[{parent}]-").as_bytes(), &name].concat())?;
        move_entry(c, rowid, name_id, lof, &new)?;
        out.add_repaired(
            CHECK,
            format!(
                "entry \"{}\": {why}; moved to /lost+found/{}",
                lossy(&name),
                lossy(&new)
            ),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Checks 6–9: data blocks and objects

/// Check 6: blocks with a NULL hash (failed uploads) are deleted with their mappings;
/// the files are quarantined.
fn check_blocks_hash(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::BLOCKS_HASH;
    let doomed: Vec<(i64, i64)> = query_vec(c, "SELECT id, obj_id FROM blocks WHERE hash IS NULL", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    if doomed.is_empty() {
        return Ok(());
    }
    fill_ids(c, doomed.iter().map(|&(id, _)| id))?;
    let inodes = delete_blocks_in_ids(c)?;
    drop_ids(c)?;
    for (id, obj) in doomed {
        st.unlinked_objects.insert(obj);
        out.add_repaired(
            CHECK,
            format!("block {id} (in object {obj}) has no hash: its upload failed; deleted"),
        );
    }
    quarantine(c, st, out, CHECK, &inodes, "a data block's upload had failed")
}

/// Check 7: mappings to missing blocks (files quarantined), of missing inodes, of
/// non-regular inodes and beyond the largest file size are deleted.
fn check_inode_blocks(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::INODE_BLOCKS;
    let last_blockno = last_blockno(st.block_size);
    // (inode, blockno, block_id, block exists, inode mode, beyond the largest file)
    let rows: Vec<(i64, i64, i64, bool, Option<u32>, bool)> = query_vec(
        c,
        "SELECT ib.inode, ib.blockno, ib.block_id, b.id IS NOT NULL, i.mode,
                ib.blockno < 0 OR ib.blockno > ?1 FROM inode_blocks ib
         LEFT JOIN blocks b ON b.id = ib.block_id LEFT JOIN inodes i ON i.id = ib.inode
         WHERE b.id IS NULL OR i.id IS NULL
            OR (i.mode & 61440) IN (16384, 40960, 4096, 49152, 8192, 24576)
            OR ib.blockno < 0 OR ib.blockno > ?1",
        [last_blockno],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
    )?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut del = c.prepare_cached("DELETE FROM inode_blocks WHERE inode = ?1 AND blockno = ?2")?;
    // inode -> (mode, blocks missing, other mappings deleted, of which beyond the limit)
    let mut by_inode: BTreeMap<i64, (Option<u32>, u64, u64, u64)> = BTreeMap::new();
    for (ino, blockno, block, exists, mode, beyond) in rows {
        del.execute(params![ino, blockno])?;
        let e = by_inode.entry(ino).or_insert((mode, 0, 0, 0));
        if exists {
            st.unlinked_blocks.insert(block);
            e.2 += 1;
        } else {
            e.1 += 1;
        }
        e.3 += u64::from(beyond);
    }
    drop(del);
    let mut lost = Vec::new();
    for (ino, (mode, missing, other, beyond)) in by_inode {
        if beyond > 0 && mode.is_some() {
            out.add_repaired(
                CHECK,
                format!(
                    "{} had {beyond} data block mappings beyond the largest file size; deleted them",
                    describe(c, ino)?
                ),
            );
            if missing + other == beyond {
                continue;
            }
        }
        match mode {
            None => out.add_repaired(
                CHECK,
                format!(
                    "{} data block mappings of missing inode {ino}; deleted",
                    missing + other
                ),
            ),
            Some(mode) if has_valid_type(mode) && file_type(mode) != libc::S_IFREG => out.add_repaired(
                CHECK,
                format!(
                    "{} is a {} but had {} data blocks; deleted them",
                    describe(c, ino)?,
                    kind_name(mode),
                    missing + other
                ),
            ),
            Some(_) => {
                out.add_repaired(
                    CHECK,
                    format!(
                        "{} has {missing} data block mappings to missing blocks; deleted them",
                        describe(c, ino)?
                    ),
                );
                lost.push(ino);
            }
        }
    }
    quarantine(c, st, out, CHECK, &lost, "some of its data blocks were missing")
}

/// Check 8: `blocks.refcount` = mappings; unused blocks deleted.
fn check_blocks_refcount(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::BLOCKS_REFCOUNT;
    c.execute_batch(
        "DROP TABLE IF EXISTS temp.fsck_uses;
         CREATE TEMP TABLE fsck_uses (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT INTO temp.fsck_uses (id, n) SELECT block_id, count(*) FROM inode_blocks GROUP BY block_id;",
    )?;
    let wrong: Vec<(i64, i64, i64, i64)> = query_vec(
        c,
        "SELECT b.id, b.obj_id, b.refcount, coalesce(u.n, 0) FROM blocks b
         LEFT JOIN temp.fsck_uses u ON u.id = b.id WHERE b.refcount IS NOT coalesce(u.n, 0) OR u.n IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (id, obj, old, uses) in wrong {
        let silent = st.unlinked_blocks.contains(&id);
        if uses == 0 {
            c.execute("DELETE FROM blocks WHERE id = ?1", [id])?;
            st.unlinked_objects.insert(obj);
            if !silent {
                out.add_repaired(CHECK, format!("block {id} is not used (refcount {old}); deleted"));
            }
        } else {
            c.execute("UPDATE blocks SET refcount = ?2 WHERE id = ?1", params![id, uses])?;
            if !silent {
                out.add_repaired(
                    CHECK,
                    format!("block {id} has refcount {old} but {uses} mappings; fixed"),
                );
            }
        }
    }
    c.execute_batch("DROP TABLE temp.fsck_uses")
}

/// Check 9: blocks stored in missing objects are deleted with their mappings (files
/// quarantined); `objects.refcount` = blocks stored in it; unused objects deleted and
/// queued for deletion from the store.
fn check_objects_refcount(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::OBJECTS_REFCOUNT;
    let orphans: Vec<(i64, i64)> = query_vec(
        c,
        "SELECT b.id, b.obj_id FROM blocks b WHERE NOT EXISTS (SELECT 1 FROM objects o WHERE o.id = b.obj_id)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if !orphans.is_empty() {
        fill_ids(c, orphans.iter().map(|&(id, _)| id))?;
        let inodes = delete_blocks_in_ids(c)?;
        drop_ids(c)?;
        for (id, obj) in orphans {
            out.add_repaired(CHECK, format!("block {id} is stored in missing object {obj}; deleted"));
        }
        quarantine(c, st, out, CHECK, &inodes, "some of its data objects were missing")?;
    }

    c.execute_batch(
        "DROP TABLE IF EXISTS temp.fsck_uses;
         CREATE TEMP TABLE fsck_uses (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT INTO temp.fsck_uses (id, n) SELECT obj_id, count(*) FROM blocks GROUP BY obj_id;",
    )?;
    let wrong: Vec<(i64, i64, i64, i64)> = query_vec(
        c,
        "SELECT o.id, o.refcount, o.phys_size, coalesce(u.n, 0) FROM objects o
         LEFT JOIN temp.fsck_uses u ON u.id = o.id WHERE o.refcount IS NOT coalesce(u.n, 0) OR u.n IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (id, old, phys_size, uses) in wrong {
        let silent = st.unlinked_objects.contains(&id);
        if uses == 0 {
            c.execute("DELETE FROM objects WHERE id = ?1", [id])?;
            out.objects_to_delete.push(id);
            if !silent {
                let what = if phys_size < 0 {
                    "an upload that never finished"
                } else {
                    "no block is stored in it"
                };
                out.add_repaired(
                    CHECK,
                    format!("object {id} is not used ({what}; refcount {old}); deleted"),
                );
            }
        } else {
            c.execute("UPDATE objects SET refcount = ?2 WHERE id = ?1", params![id, uses])?;
            if !silent {
                out.add_repaired(
                    CHECK,
                    format!("object {id} has refcount {old} but holds {uses} blocks; fixed"),
                );
            }
        }
    }
    c.execute_batch("DROP TABLE temp.fsck_uses")
}

// ---------------------------------------------------------------------------------------
// Checks 10–11: inodes

/// Delete the unreferenced inode `ino` and what hangs off it (see [`inodes::purge`]);
/// the objects freed are to be deleted from the store.
fn purge_inode(c: &Connection, ino: i64, out: &mut Findings) -> rusqlite::Result<()> {
    let released = inodes::purge(c, ino)?;
    out.objects_to_delete.extend(released.objects);
    Ok(())
}

/// Whether walking up from `parent` (first entries) reaches the root without meeting
/// `dir` or a cycle.
fn reaches_root_avoiding(c: &Connection, parent: i64, dir: i64) -> rusqlite::Result<bool> {
    let mut st = c.prepare_cached("SELECT parent_inode FROM contents WHERE inode = ?1 ORDER BY rowid LIMIT 1")?;
    let mut seen = HashSet::new();
    let mut cur = parent;
    loop {
        if cur == ROOT_INODE {
            return Ok(true);
        }
        if cur == dir || !seen.insert(cur) {
            return Ok(false);
        }
        match st.query_row([cur], |r| r.get(0)).optional()? {
            Some(p) => cur = p,
            None => return Ok(false),
        }
    }
}

/// Check 10: `inodes.refcount` = entries naming the inode (the root: 1 and no entry);
/// directories have exactly one entry; inodes without entries are purged or linked into
/// `/lost+found` (see the module documentation).
fn check_inodes_refcount(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::INODES_REFCOUNT;
    // The GROUP BY walks ix_contents_inode in order: no sort.
    c.execute_batch(
        "DROP TABLE IF EXISTS temp.fsck_uses;
         CREATE TEMP TABLE fsck_uses (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT INTO temp.fsck_uses (id, n) SELECT inode, count(*) FROM contents GROUP BY inode;",
    )?;
    let wrong: Vec<(i64, i64, u32, i64)> = query_vec(
        c,
        "SELECT i.id, i.refcount, i.mode, coalesce(u.n, 0) FROM inodes i LEFT JOIN temp.fsck_uses u ON u.id = i.id
         WHERE CASE WHEN i.id = ?1 THEN i.refcount IS NOT 1 OR u.n IS NOT NULL
                    ELSE u.n IS NULL OR i.refcount IS NOT u.n OR (u.n > 1 AND (i.mode & 61440) = 16384) END",
        [ROOT_INODE],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    c.execute_batch("DROP TABLE temp.fsck_uses")?;
    for (id, old, mode, n) in wrong {
        if id == ROOT_INODE {
            if n > 0 {
                let entries: Vec<(i64, i64, i64)> = query_vec(
                    c,
                    "SELECT rowid, name_id, parent_inode FROM contents WHERE inode = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                for (rowid, name_id, parent) in entries {
                    let name = name_of(c, name_id)?.unwrap_or_default();
                    let shown = describe_entry(c, parent, &name)?;
                    delete_entry(c, rowid, name_id)?;
                    out.add_repaired(CHECK, format!("{shown} was an entry for the root directory; deleted"));
                }
            }
            if old != 1 {
                c.execute("UPDATE inodes SET refcount = 1 WHERE id = ?1", [id])?;
                out.add_repaired(CHECK, format!("the root directory has refcount {old}; set to 1"));
            }
            continue;
        }
        if n == 0 {
            let has_children: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM contents WHERE parent_inode = ?1)",
                [id],
                |r| r.get(0),
            )?;
            if old <= 0 && !has_children {
                purge_inode(c, id, out)?;
                out.add_repaired(
                    CHECK,
                    format!(
                        "inode {id} ({}) had been removed but was still open when the filesystem stopped; purged",
                        kind_name(mode)
                    ),
                );
            } else {
                let lof = lost_found(c, st, out)?;
                let name = resolve_free(c, lof, format!("inode-{id}").as_bytes())?;
                insert_entry(c, lof, &name, id)?;
                c.execute("UPDATE inodes SET refcount = 1 WHERE id = ?1", [id])?;
                out.add_repaired(
                    CHECK,
                    format!(
                        "inode {id} ({}) has no directory entry; linked as /lost+found/{}",
                        kind_name(mode),
                        lossy(&name)
                    ),
                );
            }
            continue;
        }
        if n > 1 && file_type(mode) == libc::S_IFDIR {
            let entries: Vec<(i64, i64, i64)> = query_vec(
                c,
                "SELECT rowid, name_id, parent_inode FROM contents WHERE inode = ?1 ORDER BY rowid",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let mut keep = entries[0].0;
            if st.lof == Some(id) {
                keep = entries.iter().find(|e| e.2 == ROOT_INODE).map_or(keep, |e| e.0);
            } else {
                for e in &entries {
                    if reaches_root_avoiding(c, e.2, id)? {
                        keep = e.0;
                        break;
                    }
                }
            }
            let kept = entries.iter().find(|e| e.0 == keep).expect("kept entry");
            let kept_path = describe_entry(c, kept.2, &name_of(c, kept.1)?.unwrap_or_default())?;
            for &(rowid, name_id, parent) in entries.iter().filter(|e| e.0 != keep) {
                let name = name_of(c, name_id)?.unwrap_or_default();
                let shown = describe_entry(c, parent, &name)?;
                delete_entry(c, rowid, name_id)?;
                out.add_repaired(
                    CHECK,
                    format!("directory {kept_path} (inode {id}) also had the entry {shown} (a directory hard link); deleted it"),
                );
            }
            if old != 1 {
                c.execute("UPDATE inodes SET refcount = 1 WHERE id = ?1", [id])?;
            }
            continue;
        }
        c.execute("UPDATE inodes SET refcount = ?2 WHERE id = ?1", params![id, n])?;
        out.add_repaired(
            CHECK,
            format!(
                "{} has refcount {old} but {n} directory entries; fixed",
                describe(c, id)?
            ),
        );
    }
    Ok(())
}

/// The largest block number a file may use: its last byte is below
/// [`crate::fs::MAX_FILE_SIZE`].
fn last_blockno(block_size: u64) -> i64 {
    ((crate::fs::MAX_FILE_SIZE - 1) / block_size.max(1)) as i64
}

/// Check 11: sizes lie in `0..=MAX_FILE_SIZE` (a size outside is set to the end of the
/// file's data); the size of a regular file covers its blocks (raised, never lowered).
fn check_inodes_size(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::INODES_SIZE;
    let bs = i64::try_from(st.block_size).unwrap_or(i64::MAX);
    let max = crate::fs::MAX_FILE_SIZE as i64;
    // Check 7 deleted mappings beyond the limit, so the ends of data are below it.
    let out_of_range: Vec<(i64, i64, i64)> = query_vec(
        c,
        "SELECT i.id, i.size, coalesce(
             (SELECT max(ib.blockno * ?1 + b.size) FROM inode_blocks ib JOIN blocks b ON b.id = ib.block_id
              WHERE ib.inode = i.id), 0)
         FROM inodes i WHERE i.size < 0 OR i.size > ?2",
        [bs, max],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (id, old, end) in out_of_range {
        let new = end.clamp(0, max);
        c.execute("UPDATE inodes SET size = ?2 WHERE id = ?1", params![id, new])?;
        out.add_repaired(
            CHECK,
            format!(
                "{} has size {old}, outside 0..={max} bytes; size set to the end of its data, {new}",
                describe(c, id)?
            ),
        );
    }
    let wrong: Vec<(i64, i64, i64)> = query_vec(
        c,
        "SELECT i.id, i.size, m.min_size FROM
             (SELECT ib.inode AS id, max(ib.blockno * ?1 + b.size) AS min_size
              FROM inode_blocks ib JOIN blocks b ON b.id = ib.block_id GROUP BY ib.inode) m
         JOIN inodes i ON i.id = m.id
         WHERE i.size < m.min_size
           AND (i.mode & 61440) NOT IN (16384, 40960, 4096, 49152, 8192, 24576)",
        [bs],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (id, old, min) in wrong {
        c.execute("UPDATE inodes SET size = ?2 WHERE id = ?1", params![id, min])?;
        out.add_repaired(
            CHECK,
            format!(
                "{} has size {old} but data up to {min}; size set to {min}",
                describe(c, id)?
            ),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Checks 12–13: xattrs and symlinks

/// Check 12: xattrs of missing inodes are deleted; xattrs whose name is missing are
/// renamed `user.lost+found_<n>` (`trusted.` on inodes other than files and directories,
/// which cannot hold `user.` attributes).
fn check_xattrs(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::XATTRS;
    // (inode, name_id, inode mode, name exists)
    let rows: Vec<(i64, i64, Option<u32>, bool)> = query_vec(
        c,
        "SELECT x.inode, x.name_id, i.mode, n.id IS NOT NULL FROM ext_attributes x
         LEFT JOIN inodes i ON i.id = x.inode LEFT JOIN names n ON n.id = x.name_id
         WHERE i.id IS NULL OR n.id IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let mut deleted: BTreeMap<i64, u64> = BTreeMap::new();
    for (ino, name_id, mode, _) in &rows {
        if mode.is_none() {
            c.execute(
                "DELETE FROM ext_attributes WHERE inode = ?1 AND name_id = ?2",
                params![ino, name_id],
            )?;
            del_name(c, *name_id)?;
            *deleted.entry(*ino).or_default() += 1;
        }
    }
    for (ino, n) in deleted {
        out.add_repaired(
            CHECK,
            format!("{n} extended attributes of missing inode {ino}; deleted"),
        );
    }
    for (ino, name_id, mode, _) in rows {
        let Some(mode) = mode else { continue };
        let prefix = if matches!(file_type(mode), libc::S_IFREG | libc::S_IFDIR) || !has_valid_type(mode) {
            "user."
        } else {
            "trusted."
        };
        let mut n = name_id;
        let new = loop {
            let candidate = format!("{prefix}lost+found_{n}");
            let id = add_name(c, candidate.as_bytes())?;
            let taken: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM ext_attributes WHERE inode = ?1 AND name_id = ?2)",
                params![ino, id],
                |r| r.get(0),
            )?;
            if !taken {
                c.execute(
                    "UPDATE ext_attributes SET name_id = ?3 WHERE inode = ?1 AND name_id = ?2",
                    params![ino, name_id, id],
                )?;
                break candidate;
            }
            del_name(c, id)?;
            n += 1;
        };
        out.add_repaired(
            CHECK,
            format!(
                "an extended attribute of {} has no name (name id {name_id} is missing); renamed {new}",
                describe(c, ino)?
            ),
        );
    }
    Ok(())
}

/// Check 13: targets of missing or non-symlink inodes are deleted; symlinks without
/// target are reported only.
fn check_symlinks(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::SYMLINKS;
    let stray: Vec<(i64, Option<u32>)> = query_vec(
        c,
        "SELECT t.inode, i.mode FROM symlink_targets t LEFT JOIN inodes i ON i.id = t.inode
         WHERE i.id IS NULL OR (i.mode & 61440) IN (32768, 16384, 4096, 49152, 8192, 24576)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    for (ino, mode) in stray {
        let msg = match mode {
            None => format!("symlink target of missing inode {ino}; deleted"),
            Some(m) => format!(
                "{} is a {} but has a symlink target; deleted it",
                describe(c, ino)?,
                kind_name(m)
            ),
        };
        c.execute("DELETE FROM symlink_targets WHERE inode = ?1", [ino])?;
        out.add_repaired(CHECK, msg);
    }
    let targetless: Vec<i64> = query_vec(
        c,
        "SELECT i.id FROM inodes i WHERE (i.mode & 61440) = 40960
            AND NOT EXISTS (SELECT 1 FROM symlink_targets t WHERE t.inode = i.id)",
        [],
        |r| r.get(0),
    )?;
    for ino in targetless {
        out.add_reported(
            CHECK,
            format!(
                "symlink {} has no target (reading it fails with EIO); remove it",
                describe(c, ino)?
            ),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Check 14: loops

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

/// Check 14: every entry is reachable from the root. Entries under an unreachable
/// directory lead (by first entries) up to a cycle; one entry of each cycle is moved to
/// `/lost+found` under its own name (made free), which makes the whole cycle and
/// everything below it reachable.
fn check_loops(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::LOOPS;
    c.execute_batch(
        "DROP TABLE IF EXISTS temp.fsck_reach;
         CREATE TEMP TABLE fsck_reach (id INTEGER PRIMARY KEY);
         DROP TABLE IF EXISTS temp.fsck_unreached;
         CREATE TEMP TABLE fsck_unreached (id INTEGER PRIMARY KEY);",
    )?;
    mark_reachable(c, ROOT_INODE)?;
    c.execute(
        "INSERT OR IGNORE INTO temp.fsck_unreached (id)
         SELECT c.parent_inode FROM contents c
         WHERE NOT EXISTS (SELECT 1 FROM temp.fsck_reach r WHERE r.id = c.parent_inode)",
        [],
    )?;
    loop {
        c.execute(
            "DELETE FROM temp.fsck_unreached
             WHERE EXISTS (SELECT 1 FROM temp.fsck_reach r WHERE r.id = fsck_unreached.id)",
            [],
        )?;
        let Some(start): Option<i64> = c
            .query_row("SELECT id FROM temp.fsck_unreached LIMIT 1", [], |r| r.get(0))
            .optional()?
        else {
            break;
        };
        // Walk up by first entries until an inode repeats (it is on a cycle) or one has
        // no entry.
        let mut seen = HashSet::new();
        let mut cur = start;
        let anchor: (i64, Option<(i64, i64)>) = loop {
            let entry: Option<(i64, i64, i64)> = c
                .prepare_cached(
                    "SELECT rowid, name_id, parent_inode FROM contents WHERE inode = ?1 ORDER BY rowid LIMIT 1",
                )?
                .query_row([cur], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            match entry {
                None => break (cur, None),
                Some((rowid, name_id, parent)) => {
                    if !seen.insert(cur) {
                        break (cur, Some((rowid, name_id)));
                    }
                    cur = parent;
                }
            }
        };
        let lof = lost_found(c, st, out)?;
        match anchor {
            (ino, Some((rowid, name_id))) => {
                let name = name_of(c, name_id)?.unwrap_or_else(|| format!("inode-{ino}").into_bytes());
                let new = resolve_free(c, lof, &name)?;
                move_entry(c, rowid, name_id, lof, &new)?;
                out.add_repaired(
                    CHECK,
                    format!(
                        "\"{}\" (inode {ino}) and the directories around it formed a cycle unreachable from /; moved it to /lost+found/{}",
                        lossy(&name),
                        lossy(&new)
                    ),
                );
            }
            (ino, None) if ino != ROOT_INODE => {
                let name = resolve_free(c, lof, format!("inode-{ino}").as_bytes())?;
                insert_entry(c, lof, &name, ino)?;
                c.execute("UPDATE inodes SET refcount = refcount + 1 WHERE id = ?1", [ino])?;
                out.add_repaired(
                    CHECK,
                    format!(
                        "inode {ino} has entries but none itself; linked as /lost+found/{}",
                        lossy(&name)
                    ),
                );
            }
            (ino, None) => {
                // Cannot happen (the root is reachable); make progress regardless.
                mark_reachable(c, ino)?;
                c.execute("DELETE FROM temp.fsck_unreached WHERE id = ?1", [start])?;
                continue;
            }
        }
        mark_reachable(c, anchor.0)?;
    }
    c.execute_batch("DROP TABLE temp.fsck_reach; DROP TABLE temp.fsck_unreached;")
}

// ---------------------------------------------------------------------------------------
// Check 15: unix conventions

/// Check 15: POSIX conventions. Inodes without a valid file type are fixed (directory
/// if they have entries, else symlink if they have a target, else regular file), and so
/// is a symlink's size; the rest is reported only.
fn check_unix(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::UNIX;
    let typeless: Vec<(i64, u32, bool, bool)> = query_vec(
        c,
        "SELECT i.id, i.mode,
                EXISTS (SELECT 1 FROM contents c WHERE c.parent_inode = i.id),
                EXISTS (SELECT 1 FROM symlink_targets t WHERE t.inode = i.id)
         FROM inodes i WHERE (i.mode & 61440) NOT IN (32768, 16384, 40960, 4096, 49152, 8192, 24576)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (id, mode, has_children, has_target) in typeless {
        let new_type = if has_children {
            libc::S_IFDIR
        } else if has_target {
            libc::S_IFLNK
        } else {
            libc::S_IFREG
        };
        let new_mode = new_type | (mode & 0o7777);
        c.execute("UPDATE inodes SET mode = ?2 WHERE id = ?1", params![id, new_mode])?;
        out.add_repaired(
            CHECK,
            format!(
                "{} has no valid file type (mode {mode:o}); made it a {}",
                describe(c, id)?,
                kind_name(new_mode)
            ),
        );
        if has_children && has_target {
            c.execute("DELETE FROM symlink_targets WHERE inode = ?1", [id])?;
            out.add_repaired(
                CHECK,
                format!("directory {} had a symlink target; deleted it", describe(c, id)?),
            );
        }
    }

    let symlinks: Vec<(i64, i64, i64)> = query_vec(
        c,
        "SELECT i.id, i.size, length(t.target) FROM inodes i JOIN symlink_targets t ON t.inode = i.id
         WHERE (i.mode & 61440) = 40960 AND i.size != length(t.target)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (id, size, len) in symlinks {
        c.execute("UPDATE inodes SET size = ?2 WHERE id = ?1", params![id, len])?;
        out.add_repaired(
            CHECK,
            format!(
                "symlink {} has size {size} but a target of {len} bytes; size set to {len}",
                describe(c, id)?
            ),
        );
    }

    let odd: Vec<(i64, u32, i64, i64)> = query_vec(
        c,
        "SELECT id, mode, size, rdev FROM inodes
         WHERE (size != 0 AND (mode & 61440) IN (4096, 49152, 8192, 24576))
            OR (rdev != 0 AND (mode & 61440) NOT IN (8192, 24576))",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (id, mode, size, rdev) in odd {
        let special = matches!(
            file_type(mode),
            libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK
        );
        if size != 0 && special {
            out.add_reported(
                CHECK,
                format!("{} is a {} but has size {size}", describe(c, id)?, kind_name(mode)),
            );
        }
        if rdev != 0 && !matches!(file_type(mode), libc::S_IFCHR | libc::S_IFBLK) {
            out.add_reported(
                CHECK,
                format!(
                    "{} is a {} but has a device number ({rdev})",
                    describe(c, id)?,
                    kind_name(mode)
                ),
            );
        }
    }

    // Entries under a non-directory; data blocks of a non-regular file.
    for (sql, what) in [
        (
            "SELECT DISTINCT c.parent_inode, p.mode FROM contents c JOIN inodes p ON p.id = c.parent_inode
             WHERE (p.mode & 61440) != 16384",
            "directory entries",
        ),
        (
            "SELECT DISTINCT ib.inode, i.mode FROM inode_blocks ib JOIN inodes i ON i.id = ib.inode
             WHERE (i.mode & 61440) != 32768",
            "data blocks",
        ),
    ] {
        let wrong: Vec<(i64, u32)> = query_vec(c, sql, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for (id, mode) in wrong {
            out.add_reported(
                CHECK,
                format!("{} is a {} but has {what}", describe(c, id)?, kind_name(mode)),
            );
        }
    }

    let long: Vec<i64> = query_vec(
        c,
        "SELECT id FROM names WHERE length(name) > ?1",
        [crate::fs::NAME_MAX as i64],
        |r| r.get(0),
    )?;
    if !long.is_empty() {
        fill_ids(c, long)?;
        let entries: Vec<(i64, Vec<u8>)> = query_vec(
            c,
            "SELECT c.parent_inode, n.name FROM contents c JOIN names n ON n.id = c.name_id
             WHERE c.name_id IN (SELECT id FROM temp.fsck_ids)",
            [],
            |r| Ok((r.get(0)?, column_bytes(r, 1)?.unwrap_or_default())),
        )?;
        drop_ids(c)?;
        for (parent, name) in entries {
            out.add_reported(
                CHECK,
                format!(
                    "entry \"{}...\" in {} has a name of {} bytes (more than {})",
                    lossy(&name[..40]),
                    describe(c, parent)?,
                    name.len(),
                    crate::fs::NAME_MAX
                ),
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Check 16: foreign keys

/// Check 16: `PRAGMA foreign_key_check`; every hit left is uncorrectable (the checks
/// above should have repaired it).
fn check_foreign_keys(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::FOREIGN_KEYS;
    let hits: Vec<(String, Option<i64>, String)> = query_vec(c, "PRAGMA foreign_key_check", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    for (table, rowid, parent) in hits {
        let row = rowid.map_or_else(|| "a row".to_owned(), |r| format!("row {r}"));
        out.add_uncorrectable(
            CHECK,
            format!(
                "{row} of table {table} refers to a missing row of {parent}; this is a bug of fsck, please report it"
            ),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Store comparison, DB half

/// Start a listing of the store: (re)create the TEMP table of listed objects.
pub fn begin_listing(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.fsck_listed;
         CREATE TEMP TABLE fsck_listed (id INTEGER PRIMARY KEY, size INTEGER NOT NULL);",
    )
}

/// Record one page of the listing: `(object id, stored size)` of `s3fs_data_<id>`
/// objects. Listing an id twice keeps the last size.
pub fn record_listed(conn: &rusqlite::Connection, objects: &[(i64, u64)]) -> rusqlite::Result<()> {
    let insert = |c: &Connection| -> rusqlite::Result<()> {
        let mut st = c.prepare("INSERT OR REPLACE INTO temp.fsck_listed (id, size) VALUES (?1, ?2)")?;
        for &(id, size) in objects {
            st.execute(params![id, i64::try_from(size).unwrap_or(i64::MAX)])?;
        }
        Ok(())
    };
    if conn.is_autocommit() {
        let tx = conn.unchecked_transaction()?;
        insert(&tx)?;
        tx.commit()
    } else {
        insert(conn)
    }
}

/// Compare the `objects` table with the listing recorded since [`begin_listing`]:
///
/// (a) objects missing from the store are reported and deleted, with the blocks stored
/// in them and their mappings; every entry of each affected file is reported by its
/// path ("may lack data") and moved into `/lost+found` (check id `store-missing`);
/// (b) listed ids the DB does not know ("spurious") are returned for the driver to
/// delete and reported (`store-spurious`), except ids already in
/// `out.objects_to_delete`;
/// (c) `objects.phys_size` of -1 is set from the listed size (`store-phys-size`).
///
/// Runs in one transaction; `conn` must not be inside one. Drops the listing table.
pub fn compare_with_store(conn: &rusqlite::Connection, out: &mut Findings) -> rusqlite::Result<Vec<i64>> {
    let queued: HashSet<i64> = out.objects_to_delete.iter().copied().collect();
    without_foreign_keys(conn, || {
        in_transaction(conn, out, |c, found| {
            let mut st = State::new(0);
            let missing: Vec<(i64, i64)> = query_vec(
                c,
                // Missing, or stored with another size than was uploaded (truncated or
                // replaced: it cannot decode to the block it should hold).
                "SELECT o.id, o.refcount FROM objects o
             WHERE NOT EXISTS (SELECT 1 FROM temp.fsck_listed l WHERE l.id = o.id)
                OR EXISTS (SELECT 1 FROM temp.fsck_listed l
                           WHERE l.id = o.id AND o.phys_size >= 0 AND l.size != o.phys_size)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if !missing.is_empty() {
                fill_ids(c, missing.iter().map(|&(id, _)| id))?;
                c.execute_batch(
                    "DROP TABLE IF EXISTS temp.fsck_objs;
                 CREATE TEMP TABLE fsck_objs (id INTEGER PRIMARY KEY);
                 INSERT INTO temp.fsck_objs (id) SELECT id FROM temp.fsck_ids;
                 DELETE FROM temp.fsck_ids;
                 INSERT INTO temp.fsck_ids (id)
                     SELECT id FROM blocks WHERE obj_id IN (SELECT id FROM temp.fsck_objs);",
                )?;
                let inodes = delete_blocks_in_ids(c)?;
                c.execute("DELETE FROM objects WHERE id IN (SELECT id FROM temp.fsck_objs)", [])?;
                c.execute_batch("DROP TABLE temp.fsck_objs")?;
                drop_ids(c)?;
                for (id, refcount) in missing {
                    found.add_repaired(
                    check_id::STORE_MISSING,
                    format!("object {id} (holding {refcount} blocks) is missing from the store or damaged; deleted it from the metadata"),
                );
                }
                quarantine(
                    c,
                    &mut st,
                    found,
                    check_id::STORE_MISSING,
                    &inodes,
                    "some of its data objects are missing from the store",
                )?;
            }

            let spurious: Vec<i64> = query_vec(
                c,
                "SELECT l.id FROM temp.fsck_listed l WHERE NOT EXISTS (SELECT 1 FROM objects o WHERE o.id = l.id)",
                [],
                |r| r.get(0),
            )?;
            let spurious: Vec<i64> = spurious.into_iter().filter(|id| !queued.contains(id)).collect();
            for id in &spurious {
                found.add_repaired(
                    check_id::STORE_SPURIOUS,
                    format!("object {id} is in the store but not in the metadata; deleting it from the store"),
                );
            }

            let sizes: Vec<(i64, i64)> = query_vec(
                c,
                "SELECT o.id, l.size FROM objects o JOIN temp.fsck_listed l ON l.id = o.id WHERE o.phys_size = -1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            for (id, size) in sizes {
                c.execute("UPDATE objects SET phys_size = ?2 WHERE id = ?1", params![id, size])?;
                found.add_repaired(
                    check_id::STORE_PHYS_SIZE,
                    format!("object {id} had no stored size; set to {size} from the store"),
                );
            }
            c.execute_batch("DROP TABLE temp.fsck_listed")?;
            Ok(spurious)
        })
    })
}
