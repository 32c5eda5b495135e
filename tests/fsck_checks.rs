//! The metadata checks of fsck.s3fs on deliberately damaged filesystems: every damage is
//! reported under its check, repaired, and a second run finds nothing.

mod common;

use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension, params};
use s3fs::fs::{Ctx, FileKind, Filesystem};
use s3fs::fsck::checks::{
    self, Findings, begin_listing, check_db, check_id, compare_with_store, path_of, record_listed,
};
use s3fs::meta::schema::create_filesystem;

const BS: u64 = 4096;
const ROOT: u64 = 1;
const UID: u32 = 1000;
const GID: u32 = 1001;
const USER: Ctx = Ctx {
    uid: UID,
    gid: GID,
    pid: u32::MAX,
};

/// A filesystem with some of everything:
///
/// ```text
/// /dir            directory, xattr user.d
/// /dir/sub        directory
/// /dir/file       2 blocks (block 0 shared with /copy), xattr user.a; hard link /hard
/// /dir/link       symlink -> "file"
/// /copy           2 blocks (block 0 shared with /dir/file), xattr user.c
/// /fifo           fifo
/// /empty          empty file
/// ```
struct T {
    _dir: tempfile::TempDir,
    path: PathBuf,
    dir: i64,
    sub: i64,
    file: i64,
    link: i64,
    copy: i64,
    fifo: i64,
    empty: i64,
}

/// (block id, object id) of the blocks inserted by `populate`.
const SHARED: (i64, i64) = (1, 1);
const FILE_B1: (i64, i64) = (2, 2);
const COPY_B1: (i64, i64) = (3, 3);

impl T {
    fn new() -> T {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let conn = Connection::open(&path).unwrap();
        create_filesystem(&conn, UID, GID, 1).unwrap();
        drop(conn);
        let fs = Filesystem::open(&path, BS).unwrap();
        let d = fs.mkdir(&USER, ROOT, b"dir", 0o755).unwrap().ino;
        let sub = fs.mkdir(&USER, d, b"sub", 0o755).unwrap().ino;
        let file = fs.create(&USER, d, b"file", 0o644, libc::O_EXCL).unwrap().ino;
        fs.link(file, ROOT, b"hard").unwrap();
        let link = fs.symlink(&USER, d, b"link", b"file").unwrap().ino;
        let copy = fs.create(&USER, ROOT, b"copy", 0o644, libc::O_EXCL).unwrap().ino;
        let fifo = fs.mknod(&USER, ROOT, b"fifo", libc::S_IFIFO | 0o644, 0).unwrap().ino;
        let empty = fs.create(&USER, ROOT, b"empty", 0o644, libc::O_EXCL).unwrap().ino;
        fs.setxattr(file, b"user.a", b"1", 0).unwrap();
        fs.setxattr(d, b"user.d", b"2", 0).unwrap();
        fs.setxattr(copy, b"user.c", b"3", 0).unwrap();
        drop(fs);
        let t = T {
            _dir: dir,
            path,
            dir: d as i64,
            sub: sub as i64,
            file: file as i64,
            link: link as i64,
            copy: copy as i64,
            fifo: fifo as i64,
            empty: empty as i64,
        };
        let c = t.db();
        add_blocks(&c, t.file, &[SHARED, FILE_B1], 100);
        add_blocks(&c, t.copy, &[SHARED, COPY_B1], 1000);
        drop(c);
        t
    }

    fn db(&self) -> Connection {
        let c = Connection::open(&self.path).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        // Damage is made by hand; the checks must cope with enforcement on or off.
        c.pragma_update(None, "foreign_keys", false).unwrap();
        c
    }

    /// Run `check_db` once (on a connection enforcing foreign keys).
    fn check(&self) -> Findings {
        let c = Connection::open(&self.path).unwrap();
        c.pragma_update(None, "foreign_keys", true).unwrap();
        let mut out = Findings::new();
        check_db(&c, BS, &mut |_, _, _| {}, &mut out).unwrap();
        let on: bool = c.pragma_query_value(None, "foreign_keys", |r| r.get(0)).unwrap();
        assert!(on, "foreign key enforcement restored");
        out
    }

    /// Run `check_db` on a damaged filesystem: it must find something, and a second run
    /// must find nothing, with every invariant holding.
    fn repair(&self) -> Findings {
        let out = self.check();
        assert!(!out.is_clean(), "damage not found");
        assert!(!out.uncorrectable, "uncorrectable: {:#?}", out.items);
        self.assert_clean();
        out
    }

    fn assert_clean(&self) {
        let again = self.check();
        assert!(again.is_clean(), "second run found: {:#?}", again.items);
        check_invariants(&self.db());
    }

    fn fs(&self) -> Filesystem {
        Filesystem::open(&self.path, BS).unwrap()
    }

    fn lost_found(&self) -> i64 {
        lookup(&self.db(), ROOT as i64, "lost+found").expect("/lost+found")
    }

    /// Names in /lost+found, sorted.
    fn lost_found_names(&self) -> Vec<String> {
        names_in(&self.db(), self.lost_found())
    }

    fn path(&self, ino: i64) -> Option<String> {
        path_of(&self.db(), ino).unwrap().map(|p| String::from_utf8(p).unwrap())
    }
}

/// Give `ino` the blocks `blocks[i]` = (block id, object id) at blockno i, creating the
/// block and object rows as needed with the right refcounts; the last block holds
/// `last_len` bytes and the size is set to match.
fn add_blocks(c: &Connection, ino: i64, blocks: &[(i64, i64)], last_len: i64) {
    for (blockno, &(block, obj)) in blocks.iter().enumerate() {
        let len = if blockno + 1 == blocks.len() {
            last_len
        } else {
            BS as i64
        };
        common::map_block(c, ino, blockno as i64, (block, obj), len, len);
    }
    let size = (blocks.len() as i64 - 1) * BS as i64 + last_len;
    c.execute("UPDATE inodes SET size = ?2 WHERE id = ?1", params![ino, size])
        .unwrap();
}

/// A new `names` row with `refcount`; its id.
fn insert_name(c: &Connection, name: &str, refcount: i64) -> i64 {
    c.query_row(
        "INSERT INTO names (name, refcount) VALUES (CAST(?1 AS BLOB), ?2) RETURNING id",
        rusqlite::params![name, refcount],
        |r| r.get(0),
    )
    .unwrap()
}

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn lookup(c: &Connection, parent: i64, name: &str) -> Option<i64> {
    c.query_row(
        "SELECT inode FROM contents_v WHERE parent_inode = ?1 AND name = ?2",
        params![parent, name.as_bytes()],
        |r| r.get(0),
    )
    .optional()
    .unwrap()
}

fn names_in(c: &Connection, dir: i64) -> Vec<String> {
    let mut st = c
        .prepare("SELECT name FROM contents_v WHERE parent_inode = ?1 ORDER BY name")
        .unwrap();
    st.query_map([dir], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|n| String::from_utf8_lossy(&n.unwrap()).into_owned())
        .collect()
}

fn object_ids(c: &Connection) -> Vec<i64> {
    let mut st = c.prepare("SELECT id FROM objects ORDER BY id").unwrap();
    st.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
}

fn checks_of(out: &Findings) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = out.items.iter().map(|f| f.check).collect();
    v.dedup();
    v
}

fn has(out: &Findings, check: &str, needle: &str) -> bool {
    out.of(check).any(|f| f.message.contains(needle))
}

#[track_caller]
fn assert_has(out: &Findings, check: &str, needle: &str) {
    assert!(
        has(out, check, needle),
        "no [{check}] finding containing {needle:?} in {:#?}",
        out.items
    );
}

/// Every invariant of the schema, checked independently of fsck.
fn check_invariants(c: &Connection) {
    let zero = |sql: &str, what: &str| assert_eq!(count(c, sql), 0, "{what}");
    zero(
        "SELECT count(*) FROM names WHERE refcount !=
           (SELECT count(*) FROM contents WHERE name_id = names.id)
         + (SELECT count(*) FROM ext_attributes WHERE name_id = names.id) OR refcount <= 0",
        "names.refcount",
    );
    zero(
        "SELECT count(*) FROM inodes WHERE id != 1 AND refcount != (SELECT count(*) FROM contents WHERE inode = inodes.id)",
        "inodes.refcount",
    );
    zero(
        "SELECT count(*) FROM inodes WHERE id = 1 AND (refcount != 1 OR EXISTS (SELECT 1 FROM contents WHERE inode = 1))",
        "root refcount",
    );
    zero(
        "SELECT count(*) FROM blocks WHERE refcount != (SELECT count(*) FROM inode_blocks WHERE block_id = blocks.id) OR refcount <= 0",
        "blocks.refcount",
    );
    zero(
        "SELECT count(*) FROM objects WHERE refcount != (SELECT count(*) FROM blocks WHERE obj_id = objects.id) OR refcount <= 0",
        "objects.refcount",
    );
    zero("SELECT count(*) FROM blocks WHERE hash IS NULL", "NULL hashes");
    zero(
        "SELECT count(*) FROM inodes i WHERE (mode & 61440) = 32768 AND size <
           (SELECT coalesce(max(ib.blockno * 4096 + b.size), 0) FROM inode_blocks ib JOIN blocks b ON b.id = ib.block_id WHERE ib.inode = i.id)",
        "file sizes",
    );
    zero(
        "SELECT count(*) FROM inodes i JOIN symlink_targets t ON t.inode = i.id WHERE i.size != length(t.target)",
        "symlink sizes",
    );
    zero(
        "SELECT count(*) FROM contents c JOIN inodes p ON p.id = c.parent_inode WHERE (p.mode & 61440) != 16384",
        "entries under non-directories",
    );
    let fk: Vec<String> = {
        let mut st = c.prepare("PRAGMA foreign_key_check").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
    };
    assert!(fk.is_empty(), "foreign keys: {fk:?}");
    let reachable = count(
        c,
        "WITH RECURSIVE r(id) AS (SELECT 1 UNION SELECT c.inode FROM contents c JOIN r ON c.parent_inode = r.id)
         SELECT count(*) FROM r",
    );
    assert_eq!(reachable, count(c, "SELECT count(*) FROM inodes"), "unreachable inodes");
    let lof_mode: u32 = c
        .query_row(
            "SELECT mode FROM contents_v JOIN inodes ON inodes.id = inode WHERE parent_inode = 1 AND name = ?1",
            [b"lost+found".as_slice()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(lof_mode & libc::S_IFMT, libc::S_IFDIR, "/lost+found is a directory");
}

/// Feed the listing `objects` to the store comparison: each with the size the DB
/// recorded at upload, or 77 where it recorded none (or does not know the object).
fn compare(c: &Connection, listed: &[i64], out: &mut Findings) -> Vec<i64> {
    let size = |id: i64| -> u64 {
        c.query_row("SELECT phys_size FROM objects WHERE id = ?1", [id], |r| {
            r.get::<_, i64>(0)
        })
        .ok()
        .filter(|&s| s >= 0)
        .map_or(77, |s| s as u64)
    };
    let listed: Vec<(i64, u64)> = listed.iter().map(|&id| (id, size(id))).collect();
    compare_sized(c, &listed, out)
}

/// Feed a listing of `(id, stored size)` to the store comparison, two per page.
fn compare_sized(c: &Connection, listed: &[(i64, u64)], out: &mut Findings) -> Vec<i64> {
    begin_listing(c).unwrap();
    let pages: Vec<Vec<(i64, u64)>> = listed.chunks(2).map(|p| p.to_vec()).collect();
    for page in pages {
        record_listed(c, &page).unwrap();
    }
    compare_with_store(c, out).unwrap()
}

// ---------------------------------------------------------------------------------------

#[test]
fn clean_filesystem_has_no_findings() {
    let t = T::new();
    let out = t.check();
    assert!(out.is_clean(), "{:#?}", out.items);
    check_invariants(&t.db());
    // The store holds exactly the DB's objects.
    let c = t.db();
    let mut out = Findings::new();
    let spurious = compare(&c, &object_ids(&c), &mut out);
    assert!(spurious.is_empty());
    assert!(out.is_clean(), "{:#?}", out.items);
    // A clean run writes nothing to the main database.
    drop(c);
    let before = std::fs::read(&t.path).unwrap();
    assert!(t.check().is_clean());
    assert_eq!(std::fs::read(&t.path).unwrap(), before);
}

#[test]
fn progress_reports_every_phase_in_order() {
    let t = T::new();
    let mut phases = Vec::new();
    let mut out = Findings::new();
    check_db(
        &t.db(),
        BS,
        &mut |phase, done, total| phases.push((phase.to_owned(), done, total)),
        &mut out,
    )
    .unwrap();
    let ids: Vec<&str> = checks::db_check_ids().collect();
    assert_eq!(ids.len(), 16);
    assert_eq!(phases.len(), 17);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(phases[i], (id.to_string(), i as u64, 16));
    }
    assert_eq!(phases[16], ("done".to_owned(), 16, 16));
}

#[test]
fn path_of_follows_first_entries() {
    let t = T::new();
    assert_eq!(t.path(ROOT as i64).as_deref(), Some("/"));
    assert_eq!(t.path(t.file).as_deref(), Some("/dir/file"));
    assert_eq!(t.path(t.sub).as_deref(), Some("/dir/sub"));
    assert_eq!(t.path(9999), None);
    // A cycle has no path.
    t.db()
        .execute("UPDATE contents SET parent_inode = ?1 WHERE inode = ?1", [t.dir])
        .unwrap();
    assert_eq!(t.path(t.sub), None);
}

#[test]
fn wrong_names_refcounts() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE names SET refcount = 7 WHERE name = ?1", [b"file".as_slice()])
        .unwrap();
    c.execute("UPDATE names SET refcount = 0 WHERE name = ?1", [b"user.a".as_slice()])
        .unwrap();
    c.execute(
        "INSERT INTO names (name, refcount) VALUES (?1, 3)",
        [b"unused".as_slice()],
    )
    .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::NAMES_REFCOUNT]);
    assert_has(&out, check_id::NAMES_REFCOUNT, "\"file\"");
    assert_has(&out, check_id::NAMES_REFCOUNT, "\"user.a\"");
    assert_has(&out, check_id::NAMES_REFCOUNT, "\"unused\"");
    assert_eq!(
        count(&c, "SELECT count(*) FROM names WHERE name = CAST('unused' AS BLOB)"),
        0
    );
    assert!(out.objects_to_delete.is_empty());
}

#[test]
fn wrong_inode_refcounts() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE inodes SET refcount = 5 WHERE id = ?1", [t.file])
        .unwrap();
    c.execute("UPDATE inodes SET refcount = 3 WHERE id = ?1", [t.sub])
        .unwrap();
    c.execute("UPDATE inodes SET refcount = 2 WHERE id = 1", []).unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::INODES_REFCOUNT]);
    assert_has(&out, check_id::INODES_REFCOUNT, "/dir/file has refcount 5 but 2");
    assert_has(&out, check_id::INODES_REFCOUNT, "/dir/sub has refcount 3 but 1");
    assert_has(&out, check_id::INODES_REFCOUNT, "root directory has refcount 2");
}

#[test]
fn wrong_block_and_object_refcounts() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE blocks SET refcount = 9 WHERE id = ?1", [SHARED.0])
        .unwrap();
    c.execute("UPDATE objects SET refcount = 4 WHERE id = ?1", [FILE_B1.1])
        .unwrap();
    // An upload interrupted by a crash: an object no block points at.
    c.execute(
        "INSERT INTO objects (id, refcount, phys_size, length) VALUES (50, 0, -1, 10)",
        [],
    )
    .unwrap();
    // A block nothing maps, alone in its object.
    c.execute(
        "INSERT INTO objects (id, refcount, phys_size, length) VALUES (51, 1, 10, 10)",
        [],
    )
    .unwrap();
    c.execute(
        "INSERT INTO blocks (id, hash, refcount, size, obj_id) VALUES (60, randomblob(32), 2, 10, 51)",
        [],
    )
    .unwrap();
    let out = t.repair();
    assert_has(
        &out,
        check_id::BLOCKS_REFCOUNT,
        &format!("block {} has refcount 9 but 2", SHARED.0),
    );
    assert_has(&out, check_id::BLOCKS_REFCOUNT, "block 60 is not used");
    assert_has(
        &out,
        check_id::OBJECTS_REFCOUNT,
        &format!("object {} has refcount 4 but holds 1", FILE_B1.1),
    );
    assert_has(
        &out,
        check_id::OBJECTS_REFCOUNT,
        "object 50 is not used (an upload that never finished",
    );
    // Object 51 went with block 60: no second finding for it.
    assert!(!has(&out, check_id::OBJECTS_REFCOUNT, "object 51"));
    let mut deleted = out.objects_to_delete.clone();
    deleted.sort();
    assert_eq!(deleted, [50, 51]);
    assert_eq!(object_ids(&c), [1, 2, 3]);
}

#[test]
fn orphaned_inode_is_linked_into_lost_found() {
    let t = T::new();
    let c = t.db();
    // /empty loses its entry but keeps its refcount: it must not be lost.
    c.execute("DELETE FROM contents WHERE inode = ?1", [t.empty]).unwrap();
    c.execute(
        "UPDATE names SET refcount = refcount - 1 WHERE name = CAST('empty' AS BLOB)",
        [],
    )
    .unwrap();
    c.execute("DELETE FROM names WHERE refcount = 0", []).unwrap();
    // An entry of that name is already there: the next free name is taken.
    let fs = t.fs();
    let lof = t.lost_found() as u64;
    fs.create(&USER, lof, format!("inode-{}", t.empty).as_bytes(), 0o644, libc::O_EXCL)
        .unwrap();
    drop(fs);
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::INODES_REFCOUNT]);
    let name = format!("inode-{}-1", t.empty);
    assert_has(
        &out,
        check_id::INODES_REFCOUNT,
        &format!("linked as /lost+found/{name}"),
    );
    assert_eq!(lookup(&c, t.lost_found(), &name), Some(t.empty));
    let fs = t.fs();
    assert_eq!(fs.lookup(lof, name.as_bytes()).unwrap().ino, t.empty as u64);
}

#[test]
fn removed_but_open_inode_is_purged() {
    let t = T::new();
    let c = t.db();
    // /copy was unlinked while open when the mount died: no entry, refcount 0.
    c.execute("DELETE FROM contents WHERE inode = ?1", [t.copy]).unwrap();
    c.execute("DELETE FROM names WHERE name = CAST('copy' AS BLOB)", [])
        .unwrap();
    c.execute("UPDATE inodes SET refcount = 0 WHERE id = ?1", [t.copy])
        .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::INODES_REFCOUNT]);
    assert_has(
        &out,
        check_id::INODES_REFCOUNT,
        &format!("inode {} (regular file)", t.copy),
    );
    assert_has(&out, check_id::INODES_REFCOUNT, "purged");
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM inodes WHERE id = {}", t.copy)),
        0
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM ext_attributes_v WHERE name = CAST('user.c' AS BLOB)"
        ),
        0
    );
    // Its own block went, with its object; the shared one stays.
    assert_eq!(out.objects_to_delete, [COPY_B1.1]);
    assert_eq!(object_ids(&c), [1, 2]);
    assert_eq!(
        count(&c, &format!("SELECT refcount FROM blocks WHERE id = {}", SHARED.0)),
        1
    );
}

#[test]
fn entry_with_missing_inode_is_deleted() {
    let t = T::new();
    let c = t.db();
    // /copy's inode vanishes, leaving its entry, blocks mappings and xattr.
    c.execute("DELETE FROM inodes WHERE id = ?1", [t.copy]).unwrap();
    let out = t.repair();
    assert_has(
        &out,
        check_id::CONTENTS_INODE,
        &format!("/copy refers to missing inode {}", t.copy),
    );
    assert_has(&out, check_id::INODE_BLOCKS, &format!("missing inode {}", t.copy));
    assert_has(&out, check_id::XATTRS, &format!("missing inode {}", t.copy));
    // Consequences of the deleted mappings are not reported twice.
    assert!(out.of(check_id::BLOCKS_REFCOUNT).next().is_none(), "{:#?}", out.items);
    assert!(out.of(check_id::OBJECTS_REFCOUNT).next().is_none(), "{:#?}", out.items);
    assert_eq!(out.objects_to_delete, [COPY_B1.1]);
    assert_eq!(lookup(&c, ROOT as i64, "copy"), None);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM names WHERE name IN (CAST('copy' AS BLOB), CAST('user.c' AS BLOB))"
        ),
        0
    );
    assert_eq!(
        count(&c, &format!("SELECT refcount FROM blocks WHERE id = {}", SHARED.0)),
        1
    );
}

#[test]
fn entry_with_missing_parent_goes_to_lost_found() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE contents SET parent_inode = 9999 WHERE inode = ?1", [t.sub])
        .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::CONTENTS_PARENT]);
    assert_has(&out, check_id::CONTENTS_PARENT, "inode 9999) is missing");
    assert_has(&out, check_id::CONTENTS_PARENT, "moved to /lost+found/[9999]-sub");
    assert_eq!(lookup(&c, t.lost_found(), "[9999]-sub"), Some(t.sub));
    assert_eq!(t.path(t.sub).as_deref(), Some("/lost+found/[9999]-sub"));
}

#[test]
fn entry_under_non_directory_goes_to_lost_found() {
    let t = T::new();
    let c = t.db();
    c.execute(
        "UPDATE contents SET parent_inode = ?2 WHERE inode = ?1",
        [t.empty, t.fifo],
    )
    .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::CONTENTS_PARENT]);
    assert_has(&out, check_id::CONTENTS_PARENT, "its parent /fifo is a fifo");
    assert_eq!(
        lookup(&c, t.lost_found(), &format!("[{}]-empty", t.fifo)),
        Some(t.empty)
    );
}

#[test]
fn long_names_are_shortened_in_lost_found() {
    let t = T::new();
    let long = format!("{}{}", "a".repeat(200), "z".repeat(50));
    let fs = t.fs();
    let ino = fs
        .create(&USER, t.dir as u64, long.as_bytes(), 0o644, libc::O_EXCL)
        .unwrap()
        .ino as i64;
    drop(fs);
    let c = t.db();
    c.execute("UPDATE contents SET parent_inode = 9999 WHERE inode = ?1", [ino])
        .unwrap();
    t.repair();
    let full = format!("[9999]-{long}");
    let expected = format!("{} ... {}", &full[..120], &full[full.len() - 120..]);
    assert_eq!(lookup(&c, t.lost_found(), &expected), Some(ino));
}

#[test]
fn entry_without_name_goes_to_lost_found() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE contents SET name_id = 777777 WHERE inode = ?1", [t.sub])
        .unwrap();
    let out = t.repair();
    assert_has(&out, check_id::CONTENTS_NAME, "name id 777777 is missing");
    // The name "sub" lost its only use.
    assert_has(&out, check_id::NAMES_REFCOUNT, "\"sub\"");
    assert_eq!(lookup(&c, t.lost_found(), &format!("dir-{}", t.sub)), Some(t.sub));
}

#[test]
fn directory_loop_is_reanchored() {
    let t = T::new();
    let fs = t.fs();
    let x = fs.mkdir(&USER, ROOT, b"x", 0o755).unwrap().ino as i64;
    let y = fs.mkdir(&USER, ROOT, b"y", 0o755).unwrap().ino as i64;
    let f = fs.create(&USER, x as u64, b"f", 0o644, libc::O_EXCL).unwrap().ino as i64;
    // A self-parented directory too.
    let z = fs.mkdir(&USER, ROOT, b"z", 0o755).unwrap().ino as i64;
    drop(fs);
    let c = t.db();
    c.execute("UPDATE contents SET parent_inode = ?2 WHERE inode = ?1", [x, y])
        .unwrap();
    c.execute("UPDATE contents SET parent_inode = ?2 WHERE inode = ?1", [y, x])
        .unwrap();
    c.execute("UPDATE contents SET parent_inode = ?1 WHERE inode = ?1", [z])
        .unwrap();
    assert_eq!(t.path(f), None);
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::LOOPS]);
    assert_eq!(out.items.len(), 2, "{:#?}", out.items);
    assert_has(&out, check_id::LOOPS, &format!("(inode {z})"));
    let names = t.lost_found_names();
    assert!(names.contains(&"z".to_owned()), "{names:?}");
    assert!(
        names.contains(&"x".to_owned()) || names.contains(&"y".to_owned()),
        "{names:?}"
    );
    let path = t.path(f).expect("f is reachable again");
    assert!(path.starts_with("/lost+found/"), "{path}");
    // The filesystem can walk there.
    let fs = t.fs();
    let lof = t.lost_found() as u64;
    let top = fs.lookup(lof, b"z").unwrap();
    assert_eq!(top.kind(), FileKind::Directory);
}

#[test]
fn missing_lost_found_is_recreated() {
    let t = T::new();
    let c = t.db();
    let old = t.lost_found();
    c.execute("DELETE FROM contents WHERE inode = ?1", [old]).unwrap();
    c.execute("DELETE FROM names WHERE name = CAST('lost+found' AS BLOB)", [])
        .unwrap();
    c.execute("DELETE FROM inodes WHERE id = ?1", [old]).unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::LOST_FOUND]);
    assert_has(&out, check_id::LOST_FOUND, "/lost+found was missing");
    let lof = t.lost_found();
    assert_ne!(lof, old);
    let (mode, uid, gid): (u32, u32, u32) = c
        .query_row("SELECT mode, uid, gid FROM inodes WHERE id = ?1", [lof], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((mode, uid, gid), (libc::S_IFDIR | 0o700, UID, GID));
}

#[test]
fn lost_found_replaced_by_a_file() {
    let t = T::new();
    let c = t.db();
    let old = t.lost_found();
    c.execute(
        "UPDATE inodes SET mode = ?2 WHERE id = ?1",
        params![old, libc::S_IFREG | 0o644],
    )
    .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::LOST_FOUND]);
    assert_has(&out, check_id::LOST_FOUND, "/lost+found was a regular file");
    let lof = t.lost_found();
    assert_ne!(lof, old);
    assert_eq!(t.lost_found_names(), [format!("inode-{old}")]);
    assert_eq!(lookup(&c, lof, &format!("inode-{old}")), Some(old));
}

#[test]
fn lost_found_inside_itself_is_moved_back() {
    let t = T::new();
    let c = t.db();
    let lof = t.lost_found();
    c.execute("UPDATE contents SET parent_inode = ?1 WHERE inode = ?1", [lof])
        .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::LOST_FOUND]);
    assert_eq!(t.lost_found(), lof);
}

#[test]
fn missing_block_row() {
    let t = T::new();
    let c = t.db();
    c.execute("DELETE FROM blocks WHERE id = ?1", [FILE_B1.0]).unwrap();
    let out = t.repair();
    assert_has(
        &out,
        check_id::INODE_BLOCKS,
        "/dir/file has 1 data block mappings to missing blocks",
    );
    // Both names of the file are quarantined.
    assert_has(&out, check_id::INODE_BLOCKS, "/dir/file may lack data");
    assert_has(&out, check_id::INODE_BLOCKS, "/hard may lack data");
    assert_eq!(t.lost_found_names(), ["dir_file", "hard"]);
    assert_eq!(lookup(&c, ROOT as i64, "hard"), None);
    // Its object now holds nothing.
    assert_has(
        &out,
        check_id::OBJECTS_REFCOUNT,
        &format!("object {} is not used", FILE_B1.1),
    );
    assert_eq!(out.objects_to_delete, [FILE_B1.1]);
    // The size is kept (the missing block reads as a hole).
    let size: i64 = c
        .query_row("SELECT size FROM inodes WHERE id = ?1", [t.file], |r| r.get(0))
        .unwrap();
    assert_eq!(size, BS as i64 + 100);
}

#[test]
fn missing_object_row() {
    let t = T::new();
    let c = t.db();
    c.execute("DELETE FROM objects WHERE id = ?1", [SHARED.1]).unwrap();
    let out = t.repair();
    assert_has(
        &out,
        check_id::OBJECTS_REFCOUNT,
        &format!("block {} is stored in missing object {}", SHARED.0, SHARED.1),
    );
    assert_has(&out, check_id::OBJECTS_REFCOUNT, "/dir/file may lack data");
    assert_has(&out, check_id::OBJECTS_REFCOUNT, "/copy may lack data");
    assert_eq!(t.lost_found_names(), ["copy", "dir_file", "hard"]);
    assert!(out.objects_to_delete.is_empty());
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM blocks WHERE id = {}", SHARED.0)),
        0
    );
}

#[test]
fn block_with_null_hash() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE blocks SET hash = NULL WHERE id = ?1", [COPY_B1.0])
        .unwrap();
    let out = t.repair();
    assert_has(
        &out,
        check_id::BLOCKS_HASH,
        &format!("block {} (in object {})", COPY_B1.0, COPY_B1.1),
    );
    assert_has(
        &out,
        check_id::BLOCKS_HASH,
        "/copy may lack data: a data block's upload had failed; moved to /lost+found/copy",
    );
    assert!(out.of(check_id::OBJECTS_REFCOUNT).next().is_none(), "{:#?}", out.items);
    assert_eq!(out.objects_to_delete, [COPY_B1.1]);
    assert_eq!(
        count(
            &c,
            &format!("SELECT count(*) FROM inode_blocks WHERE inode = {}", t.copy)
        ),
        1
    );
}

/// A block recorded as a segment reaching past the end of its pack cannot be read: it
/// is deleted like a failed upload and its file quarantined; the pack itself, still
/// holding other data in a real store, is the objects check's business.
#[test]
fn block_segment_outside_its_pack() {
    let t = T::new();
    let c = t.db();
    let phys: i64 = c
        .query_row("SELECT phys_size FROM objects WHERE id = ?1", [COPY_B1.1], |r| r.get(0))
        .unwrap();
    c.execute(
        "UPDATE blocks SET obj_offset = ?2, phys_len = 10 WHERE id = ?1",
        [COPY_B1.0, phys - 5],
    )
    .unwrap();
    let out = t.repair();
    assert_has(
        &out,
        check_id::BLOCKS_HASH,
        &format!("block {} (in object {}) lies outside its object", COPY_B1.0, COPY_B1.1),
    );
    assert_has(
        &out,
        check_id::BLOCKS_HASH,
        "/copy may lack data: a data block was lost",
    );
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM blocks WHERE id = {}", COPY_B1.0)),
        0
    );
}

#[test]
fn symlink_size_mismatch() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE inodes SET size = 99 WHERE id = ?1", [t.link])
        .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::UNIX]);
    assert_has(
        &out,
        check_id::UNIX,
        "symlink /dir/link has size 99 but a target of 4 bytes",
    );
    let size: i64 = c
        .query_row("SELECT size FROM inodes WHERE id = ?1", [t.link], |r| r.get(0))
        .unwrap();
    assert_eq!(size, 4);
}

#[test]
fn file_size_below_its_blocks_is_raised() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE inodes SET size = 10 WHERE id = ?1", [t.copy])
        .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::INODES_SIZE]);
    assert_has(&out, check_id::INODES_SIZE, "/copy has size 10 but data up to 5096");
}

/// Sizes a filesystem cannot have (written by an older s3fs, or a damaged DB) are set
/// to the end of the file's data: one of them made every mount fail.
#[test]
fn file_size_beyond_the_limit_or_negative_is_cut_to_its_data() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE inodes SET size = ?2 WHERE id = ?1", params![t.copy, i64::MAX])
        .unwrap();
    c.execute(
        "UPDATE inodes SET size = ?2 WHERE id = ?1",
        params![t.empty, s3fs::fs::MAX_FILE_SIZE as i64 + 1],
    )
    .unwrap();
    c.execute("UPDATE inodes SET size = -5 WHERE id = ?1", [t.file])
        .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::INODES_SIZE]);
    assert_eq!(out.items.len(), 3, "{:#?}", out.items);
    assert_has(
        &out,
        check_id::INODES_SIZE,
        &format!("/copy has size {}, outside 0..=", i64::MAX),
    );
    let size = |ino: i64| -> i64 {
        c.query_row("SELECT size FROM inodes WHERE id = ?1", [ino], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(size(t.copy), BS as i64 + 1000);
    assert_eq!(size(t.empty), 0);
    assert_eq!(size(t.file), BS as i64 + 100);
}

/// A mapping no file size can reach (a damaged DB) would make the end of the file's
/// data overflow: it is deleted.
#[test]
fn block_mappings_beyond_the_largest_file_are_deleted() {
    let t = T::new();
    let c = t.db();
    c.execute(
        "INSERT INTO inode_blocks (inode, blockno, block_id) VALUES (?1, ?2, ?3)",
        params![t.copy, i64::MAX / 2, COPY_B1.0],
    )
    .unwrap();
    c.execute("UPDATE blocks SET refcount = refcount + 1 WHERE id = ?1", [COPY_B1.0])
        .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::INODE_BLOCKS]);
    assert_has(
        &out,
        check_id::INODE_BLOCKS,
        "/copy had 1 data block mappings beyond the largest file size",
    );
    assert_eq!(t.path(t.copy).as_deref(), Some("/copy"), "not quarantined");
}

#[test]
fn inode_without_file_type() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE inodes SET mode = 493 WHERE id = ?1", [t.dir])
        .unwrap();
    c.execute("UPDATE inodes SET mode = 420 WHERE id = ?1", [t.empty])
        .unwrap();
    c.execute("UPDATE inodes SET mode = 511 WHERE id = ?1", [t.link])
        .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::UNIX]);
    assert_has(
        &out,
        check_id::UNIX,
        "/dir has no valid file type (mode 755); made it a directory",
    );
    assert_has(
        &out,
        check_id::UNIX,
        "/empty has no valid file type (mode 644); made it a regular file",
    );
    assert_has(
        &out,
        check_id::UNIX,
        "/dir/link has no valid file type (mode 777); made it a symlink",
    );
}

#[test]
fn reported_only_findings() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE inodes SET size = 5, rdev = 7 WHERE id = ?1", [t.fifo])
        .unwrap();
    c.execute("DELETE FROM symlink_targets WHERE inode = ?1", [t.link])
        .unwrap();
    let out = t.check();
    assert!(!out.uncorrectable);
    assert!(out.items.iter().all(|f| !f.repaired), "{:#?}", out.items);
    assert_has(&out, check_id::UNIX, "/fifo is a fifo but has size 5");
    assert_has(&out, check_id::UNIX, "/fifo is a fifo but has a device number (7)");
    assert_has(&out, check_id::SYMLINKS, "symlink /dir/link has no target");
    // Still reported the next time.
    assert_eq!(t.check().items.len(), out.items.len());
}

#[test]
fn hard_linked_directory_keeps_one_entry() {
    let t = T::new();
    let c = t.db();
    // A second entry for /dir/sub, inside itself, and one in the root.
    let name = insert_name(&c, "again", 2);
    c.execute(
        "INSERT INTO contents (name_id, inode, parent_inode) VALUES (?1, ?2, ?2), (?1, ?2, 1)",
        [name, t.sub],
    )
    .unwrap();
    c.execute("UPDATE inodes SET refcount = 3 WHERE id = ?1", [t.sub])
        .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::INODES_REFCOUNT]);
    assert_has(&out, check_id::INODES_REFCOUNT, "directory /dir/sub");
    assert_eq!(out.items.len(), 2);
    assert_eq!(t.path(t.sub).as_deref(), Some("/dir/sub"));
    assert_eq!(lookup(&c, ROOT as i64, "again"), None);
}

#[test]
fn entry_naming_the_root_is_deleted() {
    let t = T::new();
    let c = t.db();
    let name = insert_name(&c, "up", 1);
    c.execute(
        "INSERT INTO contents (name_id, inode, parent_inode) VALUES (?1, 1, ?2)",
        [name, t.dir],
    )
    .unwrap();
    let out = t.repair();
    assert_has(
        &out,
        check_id::INODES_REFCOUNT,
        "/dir/up was an entry for the root directory",
    );
}

#[test]
fn xattr_of_missing_inode_is_deleted() {
    let t = T::new();
    let c = t.db();
    let name = insert_name(&c, "user.ghost", 1);
    c.execute(
        "INSERT INTO ext_attributes (inode, name_id, value) VALUES (9999, ?1, x'00')",
        [name],
    )
    .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::XATTRS]);
    assert_has(&out, check_id::XATTRS, "1 extended attributes of missing inode 9999");
    assert_eq!(count(&c, "SELECT count(*) FROM ext_attributes WHERE inode = 9999"), 0);
    assert_eq!(
        count(&c, "SELECT count(*) FROM names WHERE name = CAST('user.ghost' AS BLOB)"),
        0
    );
}

#[test]
fn xattr_without_name_is_renamed() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE ext_attributes SET name_id = 424242 WHERE inode = ?1", [t.dir])
        .unwrap();
    let out = t.repair();
    assert_has(&out, check_id::XATTRS, "an extended attribute of /dir has no name");
    assert_has(&out, check_id::XATTRS, "renamed user.lost+found_424242");
    let fs = t.fs();
    assert_eq!(fs.getxattr(t.dir as u64, b"user.lost+found_424242").unwrap(), b"2");
}

#[test]
fn store_comparison() {
    let t = T::new();
    let c = t.db();
    // Object 3 (/copy's second block) is missing from the store, 999 is spurious and
    // object 2's upload never recorded its size.
    c.execute("UPDATE objects SET phys_size = -1 WHERE id = 2", []).unwrap();
    let mut out = Findings::new();
    let spurious = compare(&c, &[1, 2, 999], &mut out);
    assert_eq!(spurious, [999]);
    assert_has(
        &out,
        check_id::STORE_MISSING,
        "object 3 (holding 1 blocks) is missing from the store",
    );
    assert_has(&out, check_id::STORE_MISSING, "/copy may lack data");
    assert_has(&out, check_id::STORE_SPURIOUS, "object 999");
    assert_has(
        &out,
        check_id::STORE_PHYS_SIZE,
        "object 2 had no stored size; set to 77",
    );
    assert!(out.objects_to_delete.is_empty());
    assert_eq!(object_ids(&c), [1, 2]);
    let phys: i64 = c
        .query_row("SELECT phys_size FROM objects WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(phys, 77);
    assert_eq!(t.lost_found_names(), ["copy"]);
    drop(c);
    t.assert_clean();
    // The listing table is gone; a second comparison is clean.
    let c = t.db();
    let mut again = Findings::new();
    assert!(compare(&c, &[1, 2], &mut again).is_empty());
    assert!(again.is_clean(), "{:#?}", again.items);
}

#[test]
fn object_stored_with_another_size_is_damage() {
    let t = T::new();
    let c = t.db();
    let ids = object_ids(&c);
    let phys: i64 = c
        .query_row("SELECT phys_size FROM objects WHERE id = ?1", [ids[0]], |r| r.get(0))
        .unwrap();
    let mut listed: Vec<(i64, u64)> = Vec::new();
    for &id in &ids {
        let p: i64 = c
            .query_row("SELECT phys_size FROM objects WHERE id = ?1", [id], |r| r.get(0))
            .unwrap();
        listed.push((id, p.max(0) as u64));
    }
    // The first object was truncated in the store.
    listed[0].1 = (phys / 2) as u64;
    let mut out = Findings::new();
    // It leaves the metadata, so the damaged copy in the store is garbage to delete.
    assert_eq!(compare_sized(&c, &listed, &mut out), [ids[0]]);
    assert_has(&out, check_id::STORE_MISSING, &format!("object {} (holding", ids[0]));
    assert!(
        !object_ids(&c).contains(&ids[0]),
        "the damaged object left the metadata"
    );
    drop(c);
    t.assert_clean();
}

#[test]
fn objects_queued_for_deletion_are_not_spurious() {
    let t = T::new();
    let c = t.db();
    c.execute(
        "INSERT INTO objects (id, refcount, phys_size, length) VALUES (50, 0, 10, 10)",
        [],
    )
    .unwrap();
    drop(c);
    let mut out = t.check();
    assert_eq!(out.objects_to_delete, [50]);
    let c = t.db();
    let spurious = compare(&c, &[1, 2, 3, 50, 51], &mut out);
    assert_eq!(spurious, [51]);
    assert!(!has(&out, check_id::STORE_SPURIOUS, "object 50"));
}

/// Released objects, kept in the store for retained metadata versions, are not garbage;
/// new objects get ids above every listed one (a restored older version's counter would
/// reuse the ids of later versions' objects); a row both in use and released stays in use.
#[test]
fn released_objects_are_not_spurious_and_listed_ids_are_never_reused() {
    let t = T::new();
    let c = t.db();
    c.execute_batch(
        "INSERT INTO released_objects (id, phys_size, released_at, after_seq) VALUES (60, 10, 0, 5);
         INSERT INTO released_objects (id, phys_size, released_at, after_seq) VALUES (1, 10, 0, NULL);",
    )
    .unwrap();
    let mut out = Findings::new();
    let spurious = compare(&c, &[1, 2, 3, 60, 900], &mut out);
    assert_eq!(spurious, [900]);
    assert!(!has(&out, check_id::STORE_SPURIOUS, "object 60"));
    assert!(has(&out, check_id::STORE_SPURIOUS, "both in use and released"));
    let left: i64 = c
        .query_row("SELECT count(*) FROM released_objects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1, "object 1 is in use: no longer released");
    c.execute(
        "INSERT INTO objects (refcount, phys_size, length) VALUES (0, -1, 1)",
        [],
    )
    .unwrap();
    assert_eq!(c.last_insert_rowid(), 901, "above every listed id");
}

#[test]
fn many_kinds_of_damage_at_once() {
    let t = T::new();
    let c = t.db();
    c.execute_batch(&format!(
        "UPDATE names SET refcount = 9 WHERE name = CAST('dir' AS BLOB);
         UPDATE inodes SET refcount = 0 WHERE id = {file};
         UPDATE blocks SET hash = NULL WHERE id = {b1};
         DELETE FROM objects WHERE id = {o3};
         UPDATE contents SET parent_inode = 4242 WHERE inode = {empty};
         UPDATE inodes SET size = 1 WHERE id = {link};
         DELETE FROM inodes WHERE id = {fifo};",
        file = t.file,
        b1 = FILE_B1.0,
        o3 = COPY_B1.1,
        empty = t.empty,
        link = t.link,
        fifo = t.fifo,
    ))
    .unwrap();
    let out = t.repair();
    for check in [
        check_id::NAMES_REFCOUNT,
        check_id::CONTENTS_INODE,
        check_id::CONTENTS_PARENT,
        check_id::BLOCKS_HASH,
        check_id::OBJECTS_REFCOUNT,
        check_id::INODES_REFCOUNT,
        check_id::UNIX,
    ] {
        assert!(out.of(check).next().is_some(), "no {check} finding in {:#?}", out.items);
    }
    assert_eq!(out.objects_to_delete, [FILE_B1.1]);
    let fs = t.fs();
    let lof = t.lost_found() as u64;
    assert!(fs.lookup(lof, b"copy").is_ok());
    assert!(fs.lookup(lof, b"dir_file").is_ok());
    assert!(fs.lookup(lof, b"hard").is_ok());
    assert!(fs.lookup(lof, b"[4242]-empty").is_ok());
}

#[test]
fn names_stored_as_text_are_converted() {
    let t = T::new();
    let c = t.db();
    c.execute("UPDATE names SET name = 'copy' WHERE name = CAST('copy' AS BLOB)", [])
        .unwrap();
    c.execute(
        "UPDATE names SET name = 'lost+found' WHERE name = CAST('lost+found' AS BLOB)",
        [],
    )
    .unwrap();
    let out = t.repair();
    assert_eq!(checks_of(&out), [check_id::NAMES_REFCOUNT]);
    assert_has(&out, check_id::NAMES_REFCOUNT, "\"copy\"");
    assert_eq!(lookup(&c, ROOT as i64, "copy"), Some(t.copy));
    assert_eq!(count(&c, "SELECT count(*) FROM names WHERE typeof(name) != 'blob'"), 0);
}
