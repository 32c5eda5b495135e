//! Exit codes and the error every tool reports.
//!
//! The numbers are S3QL's, so that scripts written for S3QL keep working; each is
//! documented in the man pages (see [`ExitCode::documented`]).

use std::fmt;

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
