//! Command lines of the tools that talk to a mounted filesystem through its control
//! file: s3fsstat, s3fsctrl, s3fscp, s3fslock, s3fsrm.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{LogArgs, exit_codes_help};
use crate::exit::ExitCode;

fn control_help() -> String {
    format!(
        "Only the user who mounted the filesystem, or root, may use this tool.\n\n{}",
        exit_codes_help(&[(ExitCode::BadArgument, "the path is not on a mounted s3fs filesystem")])
    )
}

/// s3fsstat: statistics of a mounted filesystem.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "s3fsstat",
    version,
    about = "Show statistics of a mounted s3fs filesystem",
    long_about = "Show statistics of a mounted s3fs filesystem: entries, inodes, objects, data size before and after deduplication and compression, packs (the objects that hold several short blocks: how many, their blocks, their bytes, and how many of those bytes are garbage, held by blocks no longer referenced until the pack empties or is repacked) and the repacking done since the mount, metadata size, cache use, dirty data and the age of the oldest dirty block, upload queue and rate, pending object removals, cache hit ratio, time since the last metadata upload, store requests, bytes, retries and errors, and FUSE requests by kind since the mount. Cheap enough to run every second: the mount keeps the totals current instead of counting (only the pack figures come from a scan of the packed blocks, on a connection that does not hold up the filesystem).",
    after_long_help = control_help()
)]
pub struct StatArgs {
    /// The mountpoint (or any path inside the filesystem)
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Print sizes in bytes instead of KiB/MiB/GiB/TiB
    #[arg(long)]
    pub raw: bool,
    /// Print every figure as one JSON object (sizes in bytes, times in seconds)
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    #[command(flatten)]
    pub logging: LogArgs,
}

/// s3fsctrl: control a mounted filesystem.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "s3fsctrl",
    version,
    about = "Control a mounted s3fs filesystem: flush or drop the cache, upload metadata, change cache size or logging",
    after_long_help = control_help()
)]
pub struct CtrlArgs {
    #[command(subcommand)]
    pub action: CtrlAction,
    #[command(flatten)]
    pub logging: LogArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CtrlAction {
    /// Upload every dirty block; returns when none is left
    Flushcache {
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
    },
    /// Upload every dirty block, then empty the cache
    Dropcache {
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
    },
    /// Start a metadata upload now, after a round of repacking the packs that are at
    /// least half garbage (returns at once; see `sync` to wait)
    BackupMetadata {
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
    },
    /// Upload every dirty block, repack a round, then upload the metadata; returns when
    /// both are in the store (and the packs emptied by the repack are deleted)
    Sync {
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
    },
    /// Change the cache size limit (KiB) of the running mount
    Cachesize {
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
        #[arg(value_name = "KIB")]
        kib: u64,
    },
    /// Change the log level of the running mount; with MODULEs (e.g. cache, store::s3,
    /// or all), log their debug messages too
    Log {
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
        #[arg(value_name = "LEVEL", value_parser = ["debug", "info", "warn", "error"])]
        level: String,
        #[arg(value_name = "MODULE")]
        modules: Vec<String>,
    },
}

impl CtrlAction {
    pub fn mountpoint(&self) -> &std::path::Path {
        match self {
            CtrlAction::Flushcache { mountpoint }
            | CtrlAction::Dropcache { mountpoint }
            | CtrlAction::BackupMetadata { mountpoint }
            | CtrlAction::Sync { mountpoint }
            | CtrlAction::Cachesize { mountpoint, .. }
            | CtrlAction::Log { mountpoint, .. } => mountpoint,
        }
    }
}

/// s3fscp: copy-on-write snapshot of a directory tree.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "s3fscp",
    version,
    about = "Copy a directory tree inside an s3fs filesystem without copying data (copy-on-write snapshot)",
    long_about = "Copy the directory tree SOURCE to TARGET, which must not exist yet, inside the same mounted s3fs filesystem. Only metadata is written: the copy shares every data block with the source, and data written later to either side is stored separately. Hard links inside the tree stay hard links; attributes, times and extended attributes are kept; the copy is never locked. Dirty blocks are uploaded first (only stored blocks can be shared). The copy is not atomic with respect to processes writing inside SOURCE meanwhile.",
    after_long_help = control_help()
)]
pub struct CpArgs {
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,
    #[arg(value_name = "TARGET")]
    pub target: PathBuf,
    #[command(flatten)]
    pub logging: LogArgs,
}

/// s3fslock: make trees immutable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "s3fslock",
    version,
    about = "Make directory trees in an s3fs filesystem immutable",
    long_about = "Make each PATH and everything below it immutable: every change (writing, truncating, chmod, chown, utime, extended attributes, creating, removing or renaming entries inside, hard links into it) fails with EPERM, for root too. There is no unlock: a locked tree can only be removed as a whole, with s3fsrm. Meant for backup snapshots, to protect them from accidents and from malware running with access to the filesystem.",
    after_long_help = control_help()
)]
pub struct LockArgs {
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub logging: LogArgs,
}

/// s3fsrm: fast recursive delete.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "s3fsrm",
    version,
    about = "Remove directory trees in an s3fs filesystem quickly, locked ones too",
    long_about = "Remove each PATH and everything below it, without asking, much faster than rm -r (one request per tree instead of several per entry). Locked trees (s3fslock) can be removed as a whole, but not a part of one: a PATH whose parent directory is locked is refused. The data objects no longer referenced are deleted from the store in the background.",
    after_long_help = control_help()
)]
pub struct RmArgs {
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub logging: LogArgs,
}
