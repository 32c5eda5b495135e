//! Exit codes and the error every tool reports.
//!
//! The numbers are S3QL's, so that scripts written for S3QL keep working; each is
//! documented in the man pages (see [`ExitCode::documented`]).

use std::fmt;

use crate::cache::{CacheError, CacheOpenError};
use crate::store::options::BackendOptionError;
use crate::store::{OpenError, StoreError, UrlError};

/// A process exit code with a documented meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    /// An unexpected error, or a refusal that has no code of its own.
    Failure = 1,
    BadArgument = 2,
    BadBackendOption = 3,
    LogFile = 10,
    InsecureAuthfile = 12,
    BadProxy = 13,
    AuthFailed = 14,
    AccessDenied = 15,
    NoSuchBucket = 16,
    WrongPassphrase = 17,
    NoFilesystem = 18,
    HostUnresolvable = 19,
    NeedsFsck = 30,
    MountedElsewhere = 31,
    RevisionTooOld = 32,
    RevisionTooNew = 33,
    ReadOnly = 35,
    NoMountpoint = 36,
    NotEnoughFds = 37,
    MountFailed = 39,
    MountedHere = 40,
    BatchNeedsInput = 41,
    Aborted = 42,
    LocalDbCorrupt = 43,
    Uncorrectable = 44,
    CacheDirInaccessible = 45,
    VerifyFoundProblems = 46,
    /// The store contradicts what is known of the filesystem: encryption gone, or its
    /// metadata rolled back. s3fs's own; S3QL has no such check.
    Tampered = 47,
    /// fsck.s3fs: errors were found (and repaired): 128 + 0.
    ErrorsFound = 128,
    /// fsck.s3fs: errors were found and some could not be repaired: 128 + 44.
    UncorrectableFound = 172,
}

/// The one mapping of an error of the metadata DB to a tool's error: the local DB is
/// damaged or cannot be used (43), saying what was being done.
pub fn db_err(what: &str) -> impl Fn(rusqlite::Error) -> Error + Copy + '_ {
    move |e| Error::new(ExitCode::LocalDbCorrupt, format!("{what}: {e}"))
}

impl ExitCode {
    /// The codes a tool that opens a store can return, with their meaning, for `--help`
    /// and the man pages.
    pub fn documented() -> &'static [(ExitCode, &'static str)] {
        use ExitCode::*;
        &[
            (Ok, "success"),
            (
                Failure,
                "unexpected error, or the operation was refused (e.g. a filesystem already exists)",
            ),
            (BadArgument, "invalid argument, storage URL or authinfo2 key"),
            (BadBackendOption, "invalid backend option"),
            (LogFile, "log file not writable"),
            (
                InsecureAuthfile,
                "authinfo2 file is readable or writable by group or others, or owned by another user",
            ),
            (BadProxy, "invalid http_proxy/https_proxy environment variable"),
            (
                AuthFailed,
                "authentication with the store failed (bad credentials or clock skew)",
            ),
            (AccessDenied, "the store denied access"),
            (NoSuchBucket, "the bucket or directory does not exist"),
            (WrongPassphrase, "wrong passphrase"),
            (NoFilesystem, "no s3fs filesystem at this storage URL"),
            (HostUnresolvable, "the store's hostname cannot be resolved or reached"),
            (RevisionTooOld, "filesystem revision too old"),
            (RevisionTooNew, "filesystem revision too new for this version of s3fs"),
            (Aborted, "aborted by the user"),
            (CacheDirInaccessible, "cache directory not accessible"),
            (
                Tampered,
                "the store contradicts what is known of the filesystem (encryption removed, metadata rolled back): possibly tampered with; nothing was changed",
            ),
        ]
    }

    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The error every library entry point returns: a one-line message and the exit code
/// the tool should end with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ExitCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }

    /// Prefix the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

// The errors of the layers below the tools, and the exit code each case ends a tool with.
// Every message is the error's own text.

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

/// Build an [`Error`] with `format!` syntax: `fail!(BadArgument, "no such {}", x)`.
#[macro_export]
macro_rules! fail {
    ($code:ident, $($arg:tt)*) => {
        $crate::exit::Error::new($crate::exit::ExitCode::$code, format!($($arg)*))
    };
}

/// Report an error the way every tool does (one line on stderr) and exit with its code.
pub fn exit_with(result: Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            let prog = std::env::args()
                .next()
                .and_then(|a| a.rsplit('/').next().map(str::to_owned))
                .unwrap_or_else(|| "s3fs".into());
            eprintln!("{prog}: error: {}", e.message);
            std::process::exit(e.code.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;
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
        let e = LocalStore::open_dir(&missing).unwrap_err();
        assert_eq!(
            exit(e),
            (
                ExitCode::NoSuchBucket,
                format!("directory {} does not exist", missing.display())
            )
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let e = LocalStore::open_dir(&file).unwrap_err();
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
