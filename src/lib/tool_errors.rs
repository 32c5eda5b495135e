//! How the library's errors become a tool's exit code and message: every conversion in
//! one place, above the library, so no library module picks an exit code and each
//! library error has exactly one.

use crate::cache::{CacheError, CacheOpenError};
use crate::exit::{Error, ExitCode};
use crate::store::options::BackendOptionError;
use crate::store::{OpenError, StoreError, UrlError};

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

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::AuthFailed(_) => ExitCode::AuthFailed,
            StoreError::AccessDenied(_) => ExitCode::AccessDenied,
            StoreError::NoSuchBucket(_) => ExitCode::NoSuchBucket,
            StoreError::Unreachable(_) => ExitCode::HostUnresolvable,
            _ => ExitCode::Failure,
        };
        Error::new(code, e.to_string())
    }
}

impl From<UrlError> for Error {
    fn from(e: UrlError) -> Self {
        Error::new(ExitCode::BadArgument, e.to_string())
    }
}

impl From<BackendOptionError> for Error {
    fn from(e: BackendOptionError) -> Self {
        Error::new(ExitCode::BadBackendOption, e.to_string())
    }
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        let code = match e {
            OpenError::Store(e) => return e.into(),
            OpenError::BackendOption(e) => return e.into(),
            OpenError::NotADirectory(_) | OpenError::NoSuchDirectory(_) => ExitCode::NoSuchBucket,
            OpenError::CannotAccess { .. } | OpenError::CannotOpen { .. } => ExitCode::AccessDenied,
            OpenError::NotS3(_) => ExitCode::Failure,
            OpenError::BadFaultSpec(_) => ExitCode::BadArgument,
        };
        Error::new(code, e.to_string())
    }
}

impl From<CacheError> for Error {
    fn from(e: CacheError) -> Self {
        Error::new(ExitCode::Failure, e.to_string())
    }
}

impl From<CacheOpenError> for Error {
    fn from(e: CacheOpenError) -> Self {
        let code = match e {
            CacheOpenError::InvalidBlockSize | CacheOpenError::Recovery(_) => ExitCode::Failure,
            CacheOpenError::DirInaccessible { .. } => ExitCode::CacheDirInaccessible,
            CacheOpenError::NotEnoughFds { .. } => ExitCode::NotEnoughFds,
            CacheOpenError::LocalDb(_) => ExitCode::LocalDbCorrupt,
        };
        Error::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;
    use crate::exit::{Error, ExitCode};
    use crate::store::StorageUrl;
    use crate::store::local::LocalStore;
    use crate::store::options::parse_s3_options;

    fn exit(e: impl Into<Error>) -> (ExitCode, String) {
        let e = e.into();
        (e.code, e.message)
    }

    #[test]
    fn store_errors_keep_their_exit_codes_and_messages() {
        assert_eq!(
            exit(StorageUrl::parse("nope").unwrap_err()),
            (
                ExitCode::BadArgument,
                r#"invalid storage URL "nope": expected SCHEME://..."#.into()
            )
        );
        let s3c = StorageUrl::parse("s3c://h:1/bucket/p").unwrap();
        for (text, message) in [
            ("bogus", r#"unknown backend option "bogus" for s3c:// (see --help)"#),
            ("no-ssl=1", "backend option no-ssl takes no value"),
            (
                "tcp-timeout",
                "backend option tcp-timeout needs a value (tcp-timeout=...)",
            ),
            (
                "tcp-timeout=x",
                r#"tcp-timeout must be a number of seconds from 0.1 to 86400, not "x""#,
            ),
        ] {
            let e = parse_s3_options(&s3c, text).unwrap_err();
            assert_eq!(exit(e), (ExitCode::BadBackendOption, message.into()), "{text}");
        }
        let local = StorageUrl::parse("local:///tmp/x").unwrap();
        assert_eq!(
            exit(parse_s3_options(&local, "sse").unwrap_err()),
            (
                ExitCode::BadBackendOption,
                r#"unknown backend option "sse": local:// takes no backend options"#.into()
            )
        );
        let ca = BackendOptionError::SslCaPath {
            path: "/ca.pem".into(),
            why: "no PEM certificate in the file".into(),
        };
        assert_eq!(
            exit(OpenError::from(ca)),
            (
                ExitCode::BadBackendOption,
                "ssl-ca-path=/ca.pem: no PEM certificate in the file".into()
            )
        );

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = LocalStore::open(&missing).unwrap_err();
        assert_eq!(
            exit(e),
            (
                ExitCode::NoSuchBucket,
                format!("directory {} does not exist", missing.display())
            )
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let e = LocalStore::open(&file).unwrap_err();
        assert_eq!(
            exit(e),
            (ExitCode::NoSuchBucket, format!("{} is not a directory", file.display()))
        );
        let denied = || io::Error::from_raw_os_error(libc::EACCES);
        for (e, message) in [
            (
                OpenError::CannotAccess {
                    path: "/d".into(),
                    source: denied(),
                },
                "cannot access /d: ",
            ),
            (
                OpenError::CannotOpen {
                    path: "/d".into(),
                    source: denied(),
                },
                "cannot open /d: ",
            ),
        ] {
            let (code, text) = exit(e);
            assert_eq!(code, ExitCode::AccessDenied);
            assert_eq!(text, format!("{message}{}", denied()));
        }
        let not_s3 = format!("{local} is not an S3 storage URL");
        assert_eq!(exit(OpenError::NotS3(local)), (ExitCode::Failure, not_s3));
        assert_eq!(
            exit(OpenError::BadFaultSpec("x".into())),
            (
                ExitCode::BadArgument,
                "S3FS_TEST_FAULTS=x: expected RATE[,SEED] or rate=, seed=, latency-ms=, down-while=".into()
            )
        );
        for (e, code) in [
            (StoreError::AuthFailed("a".into()), ExitCode::AuthFailed),
            (StoreError::AccessDenied("a".into()), ExitCode::AccessDenied),
            (StoreError::NoSuchBucket("a".into()), ExitCode::NoSuchBucket),
            (StoreError::Unreachable("a".into()), ExitCode::HostUnresolvable),
            (StoreError::Permanent("a".into()), ExitCode::Failure),
        ] {
            assert_eq!(exit(OpenError::from(e.clone())), (code, e.to_string()));
            assert_eq!(exit(e.clone()), (code, e.to_string()));
        }
    }

    #[test]
    fn cache_errors_keep_their_exit_codes_and_messages() {
        let gone = || io::Error::from_raw_os_error(libc::ENOENT);
        let db = || rusqlite::Error::QueryReturnedNoRows;
        for (e, code, message) in [
            (
                CacheOpenError::InvalidBlockSize,
                ExitCode::Failure,
                "invalid data block size".to_owned(),
            ),
            (
                CacheOpenError::DirInaccessible {
                    dir: PathBuf::from("/c"),
                    source: gone(),
                },
                ExitCode::CacheDirInaccessible,
                format!("cache directory /c: {}", gone()),
            ),
            (
                CacheOpenError::NotEnoughFds { available: 100 },
                ExitCode::NotEnoughFds,
                "only 100 file descriptors available: raise the open-file limit (ulimit -n)".to_owned(),
            ),
            (
                CacheOpenError::LocalDb(db()),
                ExitCode::LocalDbCorrupt,
                format!("metadata database: {}", db()),
            ),
            (
                CacheOpenError::Recovery(CacheError::ShutDown),
                ExitCode::Failure,
                "uploading dirty cache blocks: the block cache is shut down".to_owned(),
            ),
        ] {
            assert_eq!(exit(e), (code, message));
        }
        assert_eq!(exit(CacheError::NoSpace), (ExitCode::Failure, "cache disk full".into()));
    }
}
