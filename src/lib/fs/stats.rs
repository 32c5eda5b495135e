//! The metadata totals of a mounted filesystem (see [`crate::meta::stats`]).

use crate::meta::stats as meta_stats;
pub use crate::meta::stats::DbStats;

use super::{Filesystem, FsResult, OpenError};

impl Filesystem {
    /// Compute the totals once and keep them current from now on (a scan of every
    /// table: call once per mount).
    ///
    /// A failure says what SQLite said: it is a reason the filesystem cannot be mounted,
    /// and "Input/output error" would not tell the user what to do.
    pub fn enable_stats(&self) -> Result<(), OpenError> {
        // The totals live in TEMP tables of the writer, whose triggers keep them current.
        meta_stats::enable(&self.conn()).map_err(|source| OpenError::Stats {
            path: self.db_path.clone(),
            source,
        })
    }

    /// The current totals (one row read); `None` before [`Filesystem::enable_stats`].
    pub fn db_stats(&self) -> FsResult<Option<DbStats>> {
        Ok(meta_stats::read(&self.conn())?)
    }

    /// What the packs hold. A scan of the packed blocks, on the read connection, so
    /// that it does not hold up the filesystem's writes: for `s3fsstat`, not a hot path.
    pub fn pack_totals(&self) -> FsResult<crate::meta::blocks::PackTotals> {
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        Ok(crate::meta::blocks::pack_totals(&reader)?)
    }

    /// Objects (and their stored bytes) no block uses any more, kept in the store for
    /// retained metadata versions. On the read connection, like [`Self::pack_totals`].
    pub fn released_totals(&self) -> FsResult<(u64, u64)> {
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        Ok(crate::meta::blocks::released_totals(&reader)?)
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
