//! Connections to a metadata DB, one function per role, each with its settings. Every
//! connection is hardened against a DB from the store ([`open`]) first.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use super::error::DbError;

/// Open a metadata DB (read-write and created if missing by default, or as `flags`
/// say), hardened (see [`harden`]): every connection to one goes through here.
pub fn open(path: impl AsRef<std::path::Path>, flags: Option<rusqlite::OpenFlags>) -> rusqlite::Result<Connection> {
    let conn = match flags {
        Some(flags) => Connection::open_with_flags(path, flags)?,
        None => Connection::open(path)?,
    };
    harden(&conn)?;
    Ok(conn)
}

/// Settings for every connection to a metadata DB, which may have come from the store
/// (and from whoever could write there): defensive mode (no writes to the schema or
/// other ways to corrupt the file through SQL) and no trust in the schema (functions
/// with side effects cannot run from its views or triggers).
pub fn harden(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.pragma_update(None, "trusted_schema", false)
}

/// The mount's writer: WAL, so that readers (the reader connection, the metadata
/// snapshot) never block the filesystem nor wait for it; `synchronous = NORMAL`, so that
/// commits do not fsync (`sync_metadata` does it on demand); integrity checks are fsck's
/// job. `journal_size_limit = 0`: the WAL is truncated when it restarts, so commits
/// append to it. Overwriting an old WAL whose pages left the page cache made every
/// 4120-byte frame a read-modify-write of two disk blocks, under the DB mutex.
pub fn open_writer(path: &Path) -> Result<Connection, DbError> {
    let conn = open(path, None)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbError::NoWal(mode));
    }
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = OFF;
         PRAGMA recursive_triggers = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;
         PRAGMA wal_autocheckpoint = 8192;
         PRAGMA journal_size_limit = 0;",
    )?;
    tune_statements(&conn, 256)?;
    super::schema::check_schema(&conn)?;
    super::schema::upgrade(&conn)?;
    Ok(conn)
}

/// The mount's reader, with its own page cache. No mmap: an I/O error on the cache disk
/// must be an error, not a SIGBUS.
pub fn open_reader(path: &Path) -> Result<Connection, DbError> {
    let conn = open(
        path,
        Some(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX),
    )?;
    conn.execute_batch(
        "PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -32768;",
    )?;
    tune_statements(&conn, 64)?;
    Ok(conn)
}

/// What the writer and the reader share: waiting (not failing) on a busy DB, a
/// statement cache of `capacity`, and a fixed plan per statement. Without the latter,
/// SQLite re-prepares a cached statement whenever a rebound parameter might change its
/// plan (a LIMIT value, an inode number that was 0 or 1), which cost a quarter of a
/// lookup's CPU time.
fn tune_statements(conn: &Connection, capacity: usize) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(capacity);
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// A tool that has the DB to itself (fsck, shrink-db): read-write, our schema only,
/// foreign keys off (the checks repair what they would refuse), a big page cache.
pub fn open_exclusive(path: &Path) -> Result<Connection, DbError> {
    let conn = open(path, None)?;
    super::schema::check_schema(&conn)?;
    super::schema::upgrade(&conn)?;
    conn.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -262144;")?;
    Ok(conn)
}

/// A copy that is only read: a downloaded metadata version, or the local DB while no
/// mount uses it (s3fs_verify). It may be of an older schema version (see
/// [`super::schema::check_schema`]), which it keeps. `uri` is a path, or an SQLite `file:` URI (its query
/// may say `immutable=1` for a file no one writes).
pub fn open_copy(uri: &str) -> Result<Connection, DbError> {
    let conn = open(
        uri,
        Some(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX),
    )?;
    super::schema::check_schema(&conn)?;
    Ok(conn)
}

/// The live DB as the source of a snapshot: read-only, and waiting up to a minute for
/// the writer instead of failing.
pub fn open_snapshot_source(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open(
        path,
        Some(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX),
    )?;
    conn.busy_timeout(Duration::from_secs(60))?;
    Ok(conn)
}

/// `PRAGMA integrity_check` of the SQLite file `db`: [`DbError::Damaged`] lists the
/// first problems it found.
pub fn check_integrity(db: &Path) -> Result<(), DbError> {
    let conn = open(db, None)?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check(20)")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if problems == ["ok"] {
        Ok(())
    } else {
        Err(DbError::Damaged(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardened_connections_refuse_to_rewrite_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let conn = open(&path, None).unwrap();
        super::super::schema::create_filesystem(&conn, 0, 0, 1).unwrap();
        assert!(
            conn.execute_batch("PRAGMA writable_schema = ON; UPDATE sqlite_schema SET sql = 'x';")
                .is_err()
        );
    }
}
