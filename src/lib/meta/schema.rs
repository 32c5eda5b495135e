//! The SQLite schema: the canonical reference for what the metadata DB holds.
//!
//! Derived from S3QL's (revision 26) with one deliberate change: *blocks* (dedup units,
//! identified by the SHA-256 of their plaintext) are kept apart from *objects* (storage
//! units), so that several small blocks can later be packed into one object.
//!
//! Refcount columns are denormalised counters kept by the filesystem and recomputed by
//! fsck. Ids come from AUTOINCREMENT and are never reused: an object name therefore never
//! changes content, and an inode number the kernel may still cache is never reissued.

use rusqlite::Connection;

use super::error::DbError;

/// The version this s3fs writes: 1 + the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// The changes since version 1, in order: `MIGRATIONS[i]` takes a DB from version
/// `i + 1` to `i + 2`. A new DB is made as version 1 and migrated, so that a new DB and a
/// migrated one have exactly the same schema (and [`check_schema`] one reference).
///
/// 2: packs. `blocks.phys_len` is the stored length of a block that is one segment of a
///    pack (bytes `[obj_offset, obj_offset + phys_len)` of its object, encoded on its
///    own, so it is fetched with a ranged GET); 0 means the block is the whole object,
///    as every block of version 1 is. `ix_blocks_obj` finds the blocks of an object (a
///    pack's live bytes, its garbage, the blocks to move when it is repacked).
/// 3: deferred deletion. An object whose last block is released moves from `objects`
///    to `released_objects` instead of being deleted from the store at once, because
///    retained metadata versions may still name it (see `meta::versions::retention`).
///    `after_seq` is the newest metadata version that may name it: NULL until the next
///    version is published (then the seq published before it), so an object is deleted
///    only once every retained version is newer than `after_seq` and `released_at`
///    (Unix seconds) is older than the policy's minimum age.
const MIGRATIONS: &[&str] = &[
    "ALTER TABLE blocks ADD COLUMN phys_len INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX ix_blocks_obj ON blocks(obj_id, obj_offset);",
    "CREATE TABLE released_objects (
         id          INTEGER PRIMARY KEY,
         phys_size   INTEGER NOT NULL,
         released_at INTEGER NOT NULL,
         after_seq   INTEGER
     );",
];

pub const ROOT_INODE: i64 = 1;

const DDL: &str = "
-- objects: one stored data object `s3fs_data_<id>`.
--   refcount  = number of `blocks` rows stored in it; at 0 the row is deleted and the
--               object queued for deletion from the store.
--   phys_size = bytes in the store after compression and encryption; -1 while the
--               upload has not finished (fsck repairs it with a HEAD).
--   length    = plaintext bytes in the object.
CREATE TABLE objects (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    refcount  INTEGER NOT NULL,
    phys_size INTEGER NOT NULL,
    length    INTEGER NOT NULL
);

-- blocks: a deduplicated unit of file data.
--   hash      = SHA-256 of the plaintext; UNIQUE, so it is the dedup index. NULL marks a
--               block whose upload failed: never deduplicated against, removed by fsck.
--   refcount  = number of `inode_blocks` rows pointing here.
--   obj_id, obj_offset = where its bytes are stored (offset 0 when one block = one object;
--               the byte offset of its segment in a pack, see MIGRATIONS).
CREATE TABLE blocks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    hash       BLOB UNIQUE,
    refcount   INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    obj_id     INTEGER NOT NULL REFERENCES objects(id),
    obj_offset INTEGER NOT NULL DEFAULT 0
);

-- inodes: stat(2) data. Times in nanoseconds since the epoch.
--   refcount = hard links (st_nlink; a directory counts 1, its '..' is not counted);
--              an inode at 0 is purged once the kernel has forgotten it.
--   size     = st_size; for a symlink the length of its target.
--   locked   = immutable (s3fslock).
CREATE TABLE inodes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    uid      INTEGER NOT NULL,
    gid      INTEGER NOT NULL,
    mode     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    atime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    refcount INTEGER NOT NULL,
    size     INTEGER NOT NULL DEFAULT 0,
    rdev     INTEGER NOT NULL DEFAULT 0,
    locked   INTEGER NOT NULL DEFAULT 0
);

-- inode_blocks: block `blockno` of a regular file (bytes [blockno*bs, (blockno+1)*bs)).
-- A missing row is a hole and reads as zeros.
CREATE TABLE inode_blocks (
    inode    INTEGER NOT NULL REFERENCES inodes(id),
    blockno  INTEGER NOT NULL,
    block_id INTEGER NOT NULL REFERENCES blocks(id),
    PRIMARY KEY (inode, blockno)
) WITHOUT ROWID;

-- symlink_targets: raw target bytes of each symlink inode.
CREATE TABLE symlink_targets (
    inode  INTEGER PRIMARY KEY REFERENCES inodes(id),
    target BLOB NOT NULL
);

-- names: interned byte strings used by directory entries and xattr names.
--   refcount = uses in `contents` plus `ext_attributes`; the row is deleted at 0.
CREATE TABLE names (
    id       INTEGER PRIMARY KEY,
    name     BLOB NOT NULL UNIQUE,
    refcount INTEGER NOT NULL
);

-- contents: directory entries. A directory rename is one UPDATE of one row, whatever the
-- size of the subtree. The root has no entry.
CREATE TABLE contents (
    rowid        INTEGER PRIMARY KEY AUTOINCREMENT,
    name_id      INTEGER NOT NULL REFERENCES names(id),
    inode        INTEGER NOT NULL REFERENCES inodes(id),
    parent_inode INTEGER NOT NULL REFERENCES inodes(id),
    UNIQUE (parent_inode, name_id)
);

-- ext_attributes: extended attributes.
CREATE TABLE ext_attributes (
    inode   INTEGER NOT NULL REFERENCES inodes(id),
    name_id INTEGER NOT NULL REFERENCES names(id),
    value   BLOB NOT NULL,
    PRIMARY KEY (inode, name_id)
) WITHOUT ROWID;

-- Finding an inode's entries (the parent of a directory for '..' and the rename loop
-- check, the names of a damaged file for fsck) must not scan the table.
CREATE INDEX ix_contents_inode ON contents(inode);
-- readdir walks a directory in rowid order (a cursor stable under renames and
-- removals) without sorting the whole directory for each batch.
CREATE INDEX ix_contents_parent ON contents(parent_inode, rowid);

CREATE VIEW contents_v AS
    SELECT contents.rowid, name, name_id, inode, parent_inode
    FROM contents JOIN names ON names.id = contents.name_id;
CREATE VIEW ext_attributes_v AS
    SELECT inode, name, name_id, value
    FROM ext_attributes JOIN names ON names.id = ext_attributes.name_id;
";

/// The schema objects of the main database: `(type, name, sql)`, sorted.
fn schema_objects(conn: &Connection) -> rusqlite::Result<Vec<(String, String, Option<String>)>> {
    let mut st = conn.prepare("SELECT type, name, sql FROM main.sqlite_schema ORDER BY type, name")?;
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
}

/// Check that `conn`'s database holds exactly the schema [`create_filesystem`] makes,
/// in the version this s3fs knows: a database from the store with a trigger, view or
/// table of anyone else's is refused before any of it runs.
///
/// An older version is accepted with its own schema: [`upgrade`] migrates it (the
/// connections that write do), readers of a copy see its columns as version 1 had them.
pub fn check_schema(conn: &Connection) -> Result<(), DbError> {
    let version = schema_version(conn)?;
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(DbError::SchemaVersion {
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    let reference = Connection::open_in_memory()?;
    reference.execute_batch(DDL)?;
    for step in &MIGRATIONS[..(version - 1) as usize] {
        reference.execute_batch(step)?;
    }
    // AUTOINCREMENT's table appears with the first insert.
    reference.execute_batch("INSERT INTO objects (refcount, phys_size, length) VALUES (0, 0, 0)")?;
    let want = schema_objects(&reference)?;
    let have = schema_objects(conn)?;
    if let Some((kind, name, _)) = have.iter().find(|o| !want.contains(o)) {
        return Err(DbError::ForeignSchema {
            kind: kind.clone(),
            name: name.clone(),
        });
    }
    if let Some((kind, name, _)) = want.iter().find(|o| !have.contains(o) && o.1 != "sqlite_sequence") {
        return Err(DbError::MissingSchema {
            kind: kind.clone(),
            name: name.clone(),
        });
    }
    Ok(())
}

/// The `user_version` of `conn`'s DB.
pub fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Migrate a DB that [`check_schema`] accepted to [`SCHEMA_VERSION`], in one
/// transaction. Returns the version it had.
pub fn upgrade(conn: &Connection) -> Result<i64, DbError> {
    let version = schema_version(conn)?;
    if version < SCHEMA_VERSION {
        let tx = conn.unchecked_transaction()?;
        for step in &MIGRATIONS[(version - 1).max(0) as usize..] {
            tx.execute_batch(step)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        log::info!("metadata schema upgraded from version {version} to {SCHEMA_VERSION}");
    }
    Ok(version)
}

/// Create the tables and the initial tree (root owned by `uid:gid`, `/lost+found`) in an
/// empty database.
pub fn create_filesystem(conn: &Connection, uid: u32, gid: u32, now_ns: i64) -> Result<(), DbError> {
    conn.execute_batch(DDL)?;
    for step in MIGRATIONS {
        conn.execute_batch(step)?;
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    super::inodes::insert_root(conn, uid, gid, libc::S_IFDIR | 0o755, now_ns)?;
    let lost_found = super::inodes::insert(conn, uid, gid, libc::S_IFDIR | 0o700, 0, now_ns, None)?;
    super::names::insert_entry(conn, ROOT_INODE, b"lost+found", lost_found)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_filesystem_has_root_and_lost_found() {
        let conn = Connection::open_in_memory().unwrap();
        create_filesystem(&conn, 1000, 100, 42).unwrap();
        let (mode, uid): (u32, u32) = conn
            .query_row("SELECT mode, uid FROM inodes WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(mode, libc::S_IFDIR | 0o755);
        assert_eq!(uid, 1000);
        let (parent, lf_mode): (i64, u32) = conn
            .query_row(
                "SELECT parent_inode, mode FROM contents_v JOIN inodes ON inodes.id = inode WHERE name = ?1",
                [b"lost+found".as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((parent, lf_mode), (ROOT_INODE, libc::S_IFDIR | 0o700));
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_1_db_is_accepted_and_migrates_to_the_schema_of_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let old = crate::meta::db::open(dir.path().join("old.db"), None).unwrap();
        old.execute_batch(DDL).unwrap();
        old.pragma_update(None, "user_version", 1).unwrap();
        old.execute_batch(
            "INSERT INTO objects (refcount, phys_size, length) VALUES (1, 10, 5);
                 INSERT INTO blocks (hash, refcount, size, obj_id) VALUES (x'01', 1, 5, 1);",
        )
        .unwrap();
        check_schema(&old).unwrap();
        assert_eq!(upgrade(&old).unwrap(), 1);
        check_schema(&old).unwrap();
        assert_eq!(schema_version(&old).unwrap(), SCHEMA_VERSION);
        let phys_len: i64 = old.query_row("SELECT phys_len FROM blocks", [], |r| r.get(0)).unwrap();
        assert_eq!(phys_len, 0, "an old block is a whole object");
        let new = Connection::open_in_memory().unwrap();
        create_filesystem(&new, 0, 0, 1).unwrap();
        assert_eq!(schema_objects(&old).unwrap(), schema_objects(&new).unwrap());
        assert_eq!(upgrade(&old).unwrap(), SCHEMA_VERSION, "a second upgrade does nothing");
        old.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        assert!(matches!(check_schema(&old), Err(DbError::SchemaVersion { .. })));
    }

    #[test]
    fn only_our_own_schema_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let conn = Connection::open(&path).unwrap();
        create_filesystem(&conn, 0, 0, 1).unwrap();
        check_schema(&conn).unwrap();
        conn.execute_batch("CREATE TRIGGER evil AFTER INSERT ON inodes BEGIN DELETE FROM contents; END;")
            .unwrap();
        let e = check_schema(&conn).unwrap_err();
        assert!(
            matches!(&e, DbError::ForeignSchema { kind, name } if kind == "trigger" && name == "evil"),
            "{e}"
        );
        assert_eq!(crate::exit::Error::from(e).code, crate::exit::ExitCode::LocalDbCorrupt);
        conn.execute_batch("DROP TRIGGER evil; DROP INDEX ix_contents_inode;")
            .unwrap();
        assert!(
            check_schema(&conn)
                .unwrap_err()
                .to_string()
                .contains("ix_contents_inode")
        );
    }
}
