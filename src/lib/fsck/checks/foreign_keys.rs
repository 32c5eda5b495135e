//! Check 16 (`foreign-keys`): SQLite's own foreign key check, run last. The checks
//! before repair every dangling reference they know of, so a hit here is a bug of fsck
//! and leaves the filesystem uncorrectable.

use rusqlite::Connection;

use super::{Findings, State, check_id, query_vec};

/// Check 16: `PRAGMA foreign_key_check`; every hit left is uncorrectable (the checks
/// above should have repaired it).
pub(super) fn check_foreign_keys(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
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
