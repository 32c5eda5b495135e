//! How the library's errors become a tool's exit code and message: every conversion in
//! one place, above the library, so no library module picks an exit code and each
//! library error has exactly one.

use crate::exit::{Error, ExitCode};

impl From<crate::meta::error::DbError> for Error {
    /// A metadata DB that cannot be opened or holds what s3fs does not make: 43.
    fn from(e: crate::meta::error::DbError) -> Error {
        Error::new(ExitCode::LocalDbCorrupt, e.to_string())
    }
}

impl From<crate::fs::OpenError> for Error {
    /// A block size of 0 is a bad superblock (1); anything else is the local DB (43).
    fn from(e: crate::fs::OpenError) -> Error {
        let code = match e {
            crate::fs::OpenError::ZeroBlockSize => ExitCode::Failure,
            crate::fs::OpenError::Db(_) | crate::fs::OpenError::Purge(_) | crate::fs::OpenError::Stats { .. } => {
                ExitCode::LocalDbCorrupt
            }
        };
        Error::new(code, e.to_string())
    }
}
