//! Totals of the metadata for `s3fsstat`, kept current by TEMP triggers so that a query
//! is one row read, not a scan of million-row tables (S3QL scans on every call).
//!
//! The triggers and the totals table live in the connection's TEMP schema: they are
//! never part of the uploaded metadata, and other connections (fsck) do not pay for
//! them. [`Filesystem::enable_stats`] computes the totals once, at mount.
//!
//! Byte totals are kept as REAL (`total()`, not `sum()`): whatever sizes the DB holds,
//! a sum past `i64::MAX` is a large number instead of SQLite's "integer overflow"
//! error, which made every mount of such a filesystem fail. They are exact up to 2^53.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::{Filesystem, FsResult};

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

impl Filesystem {
    /// Compute the totals once and keep them current from now on (a scan of every
    /// table: call once per mount).
    ///
    /// A failure says what SQLite said: it is a reason the filesystem cannot be mounted,
    /// and "Input/output error" would not tell the user what to do.
    pub fn enable_stats(&self) -> Result<(), crate::exit::Error> {
        // The totals live in TEMP tables of the writer, whose triggers keep them current.
        self.conn().execute_batch(SETUP).map_err(|e| {
            crate::exit::Error::new(
                crate::exit::ExitCode::LocalDbCorrupt,
                format!(
                    "metadata database {}: cannot compute its statistics ({e}); run fsck.s3fs --force",
                    self.db_path.display()
                ),
            )
        })
    }

    /// The current totals (one row read); `None` before [`Filesystem::enable_stats`].
    pub fn db_stats(&self) -> FsResult<Option<DbStats>> {
        match read_totals(&self.conn()) {
            Ok(s) => Ok(Some(s)),
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Size of the metadata database on local disk, WAL included.
    pub fn db_file_bytes(&self) -> u64 {
        [self.db_path.clone(), self.wal_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use crate::fs::{Ctx, SetAttr};

    #[test]
    fn totals_follow_every_change_without_a_scan() {
        let (_dir, fs) = crate::fs::empty_for_tests(4096);
        assert_eq!(fs.db_stats().unwrap(), None);
        fs.enable_stats().unwrap();
        let before = fs.db_stats().unwrap().unwrap();
        let ctx = Ctx { uid: 0, gid: 0, pid: 1 };
        let d = fs.mkdir(&ctx, 1, b"d", 0o755).unwrap();
        let f = fs.mknod(&ctx, d.ino, b"f", 0o644, 0).unwrap();
        fs.setattr(
            &ctx,
            f.ino,
            &SetAttr {
                size: Some(5000),
                ..Default::default()
            },
        )
        .unwrap();
        fs.link(f.ino, 1, b"g").unwrap();
        let after = fs.db_stats().unwrap().unwrap();
        assert_eq!(after.entries, before.entries + 3);
        assert_eq!(after.inodes, before.inodes + 2);
        assert_eq!(after.total_bytes, before.total_bytes + 5000);
        fs.unlink(1, b"g").unwrap();
        fs.unlink(d.ino, b"f").unwrap();
        fs.forget(f.ino, 2);
        let gone = fs.db_stats().unwrap().unwrap();
        assert_eq!(gone.entries, before.entries + 1);
        assert_eq!(gone.inodes, before.inodes + 1);
        assert_eq!(gone.total_bytes, before.total_bytes);
        // The same numbers as a full scan.
        fs.enable_stats().unwrap();
        assert_eq!(fs.db_stats().unwrap().unwrap(), gone);
    }
}
