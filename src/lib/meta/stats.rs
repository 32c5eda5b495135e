//! Totals of the metadata (for `s3fsstat`), kept current by TEMP triggers so that a
//! query is one row read, not a scan of million-row tables (S3QL scans on every call).
//!
//! The triggers and the totals table live in the connection's TEMP schema: they are
//! never part of the uploaded metadata, and other connections (fsck) do not pay for
//! them. [`enable`] computes the totals once, at mount.
//!
//! Byte totals are kept as REAL (`total()`, not `sum()`): whatever sizes the DB holds,
//! a sum past `i64::MAX` is a large number instead of SQLite's "integer overflow"
//! error, which made every mount of such a filesystem fail. They are exact up to 2^53.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// The metadata totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbStats {
    /// Directory entries (hard links count once per name).
    pub entries: u64,
    pub inodes: u64,
    /// Data objects in the store.
    pub objects: u64,
    /// Sum of the sizes of all inodes: what the files would take without dedup.
    pub total_bytes: u64,
    /// Sum of the sizes of the distinct blocks: after deduplication.
    pub dedup_bytes: u64,
    /// Bytes the objects take in the store: after compression and encryption.
    pub stored_bytes: u64,
}

const SETUP: &str = "
CREATE TEMP TABLE IF NOT EXISTS fs_totals (
    entries INTEGER NOT NULL, inodes INTEGER NOT NULL, objects INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL, dedup_bytes INTEGER NOT NULL, stored_bytes INTEGER NOT NULL);
DELETE FROM temp.fs_totals;
INSERT INTO temp.fs_totals SELECT
    (SELECT count(*) FROM main.contents),
    (SELECT count(*) FROM main.inodes),
    (SELECT count(*) FROM main.objects),
    (SELECT total(size) FROM main.inodes),
    (SELECT total(size) FROM main.blocks),
    (SELECT total(max(phys_size, 0)) FROM main.objects);
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_entry_add AFTER INSERT ON main.contents
    BEGIN UPDATE temp.fs_totals SET entries = entries + 1; END;
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_entry_del AFTER DELETE ON main.contents
    BEGIN UPDATE temp.fs_totals SET entries = entries - 1; END;
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_inode_add AFTER INSERT ON main.inodes
    BEGIN UPDATE temp.fs_totals SET inodes = inodes + 1, total_bytes = total_bytes + NEW.size; END;
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_inode_del AFTER DELETE ON main.inodes
    BEGIN UPDATE temp.fs_totals SET inodes = inodes - 1, total_bytes = total_bytes - OLD.size; END;
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_inode_size AFTER UPDATE OF size ON main.inodes
    WHEN NEW.size != OLD.size
    BEGIN UPDATE temp.fs_totals SET total_bytes = total_bytes + NEW.size - OLD.size; END;
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_block_add AFTER INSERT ON main.blocks
    BEGIN UPDATE temp.fs_totals SET dedup_bytes = dedup_bytes + NEW.size; END;
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_block_del AFTER DELETE ON main.blocks
    BEGIN UPDATE temp.fs_totals SET dedup_bytes = dedup_bytes - OLD.size; END;
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_block_size AFTER UPDATE OF size ON main.blocks
    WHEN NEW.size != OLD.size
    BEGIN UPDATE temp.fs_totals SET dedup_bytes = dedup_bytes + NEW.size - OLD.size; END;
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_object_add AFTER INSERT ON main.objects
    BEGIN UPDATE temp.fs_totals SET objects = objects + 1,
        stored_bytes = stored_bytes + max(NEW.phys_size, 0); END;
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_object_del AFTER DELETE ON main.objects
    BEGIN UPDATE temp.fs_totals SET objects = objects - 1,
        stored_bytes = stored_bytes - max(OLD.phys_size, 0); END;
CREATE TEMP TRIGGER IF NOT EXISTS fs_totals_object_size AFTER UPDATE OF phys_size ON main.objects
    WHEN NEW.phys_size != OLD.phys_size
    BEGIN UPDATE temp.fs_totals SET stored_bytes = stored_bytes + max(NEW.phys_size, 0)
        - max(OLD.phys_size, 0); END;
";

fn read_totals(c: &Connection) -> rusqlite::Result<DbStats> {
    c.prepare_cached("SELECT entries, inodes, objects, total_bytes, dedup_bytes, stored_bytes FROM temp.fs_totals")?
        .query_row([], |r| {
            // Byte totals are REAL (see SETUP); f64 → u64 saturates.
            let n = |i: usize| r.get::<_, f64>(i).map(|v| v as u64);
            Ok(DbStats {
                entries: n(0)?,
                inodes: n(1)?,
                objects: n(2)?,
                total_bytes: n(3)?,
                dedup_bytes: n(4)?,
                stored_bytes: n(5)?,
            })
        })
}

/// Compute the totals on `c` (the writer) and keep them current from now on: a scan of
/// every table.
pub fn enable(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(SETUP)
}

/// The current totals (one row read); `None` before [`enable`].
pub fn read(c: &Connection) -> rusqlite::Result<Option<DbStats>> {
    match read_totals(c) {
        Ok(s) => Ok(Some(s)),
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => Ok(None),
        Err(e) => Err(e),
    }
}
