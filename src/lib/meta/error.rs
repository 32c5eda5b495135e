//! The error of everything that opens or checks a metadata DB.

/// Why a metadata DB cannot be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("metadata database: cannot use WAL journal (got {0})")]
    NoWal(String),
    #[error("metadata database: schema version {found}, expected {expected}")]
    SchemaVersion { found: i64, expected: i64 },
    #[error(
        "metadata database: it holds a {kind} {name:?} that s3fs does not create (tampered with, or made by another program); refusing to use it"
    )]
    ForeignSchema { kind: String, name: String },
    #[error("metadata database: its {kind} {name:?} is missing or altered")]
    MissingSchema { kind: String, name: String },
    /// What `PRAGMA integrity_check` found.
    #[error("{0}")]
    Damaged(String),
}
