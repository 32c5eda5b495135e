//! What cache operations fail with.

use std::io;
use std::path::PathBuf;

/// Failure of a cache operation.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache file I/O: {0}")]
    Io(#[from] io::Error),
    #[error("cache disk full")]
    NoSpace,
    #[error("store: {0}")]
    Store(String),
    #[error("metadata database: {0}")]
    Db(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the block cache is shut down")]
    ShutDown,
    /// The cache is full of dirty blocks and the store has failed every request for
    /// longer than the store timeout: a write cannot be taken (ENOSPC).
    #[error("the cache is full and its dirty blocks cannot be uploaded: the store has failed every request for {0} s")]
    FullAndStoreDown(u64),
    /// A block not in the cache cannot be fetched: the store has failed every request
    /// for longer than the store timeout (EIO).
    #[error("the store has failed every request for {0} s")]
    StoreDown(u64),
}

impl CacheError {
    /// The errno to reply to the kernel with.
    pub fn errno(&self) -> i32 {
        match self {
            CacheError::Io(e) => match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => libc::ENOSPC,
                _ => libc::EIO,
            },
            CacheError::NoSpace | CacheError::FullAndStoreDown(_) => libc::ENOSPC,
            CacheError::Invalid(_) => libc::EINVAL,
            CacheError::Store(_) | CacheError::Db(_) | CacheError::ShutDown | CacheError::StoreDown(_) => libc::EIO,
        }
    }

    pub(super) fn is_no_space(&self) -> bool {
        self.errno() == libc::ENOSPC
    }
}

impl From<rusqlite::Error> for CacheError {
    fn from(e: rusqlite::Error) -> Self {
        CacheError::Db(e.to_string())
    }
}

/// What opening the cache, working out its limits or recovering its dirty blocks can
/// fail with. The tools end with a different exit code for each case (see the `From`
/// impls in `crate::tool_errors`).
#[derive(Debug, thiserror::Error)]
pub enum CacheOpenError {
    /// The data block size is 0 or does not fit in 32 bits.
    #[error("invalid data block size")]
    InvalidBlockSize,
    /// The cache directory cannot be created, examined or cleaned up, or a thread of the
    /// cache cannot be started.
    #[error("cache directory {}: {source}", .dir.display())]
    DirInaccessible { dir: PathBuf, source: io::Error },
    /// The open-file limit leaves room for too few cached blocks.
    #[error("only {available} file descriptors available: raise the open-file limit (ulimit -n)")]
    NotEnoughFds { available: u64 },
    /// The metadata database cannot be read.
    #[error("metadata database: {0}")]
    LocalDb(#[source] rusqlite::Error),
    /// Uploading the dirty blocks found at start-up failed ([`super::recover_dirty`]).
    #[error("uploading dirty cache blocks: {0}")]
    Recovery(#[source] CacheError),
}
