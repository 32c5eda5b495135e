//! Command-line definitions shared by the binaries and the man pages (`man/`), so that
//! `--help` and the man pages cannot drift apart.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::AUTHINFO_HELP;
use crate::exit::ExitCode;
use crate::store::options::BACKEND_OPTIONS_HELP;
use crate::store::url::URL_GRAMMAR;

pub mod mount_helper;
pub mod progress;
pub mod tools;
pub mod verify;

pub use tools::{CpArgs, CtrlAction, CtrlArgs, LockArgs, RmArgs, StatArgs};
pub use verify::VerifyArgs;

/// Options of every tool that opens a store.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Read credentials and settings from this file [default: ~/.s3fs/authinfo2]
    #[arg(long, global = true, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// Directory for the local cache and metadata [default: ~/.s3fs]
    #[arg(long, global = true, value_name = "PATH")]
    pub cachedir: Option<PathBuf>,
    /// Comma-separated backend options (see BACKEND OPTIONS below)
    #[arg(long, global = true, value_name = "OPTIONS")]
    pub backend_options: Option<String>,
    /// Concurrent requests to the store; for a mount, also the blocks fetched at once
    /// ahead of a sequential reader (at most 16) [default: 32]
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_connections: Option<u16>,
}

/// Logging options.
#[derive(Debug, Clone, Default, Args)]
pub struct LogArgs {
    /// Log debug messages
    #[arg(long, global = true)]
    pub debug: bool,
    /// Print only warnings and errors
    #[arg(long, global = true, conflicts_with = "debug")]
    pub quiet: bool,
}

impl LogArgs {
    /// Set up logging to stderr at the chosen level.
    pub fn init(&self) {
        self.init_to(None);
    }

    /// Set up logging to `target` (a file, appended to), or stderr if `None`.
    pub fn init_to(&self, target: Option<Box<dyn std::io::Write + Send>>) {
        let level = if self.debug {
            log::LevelFilter::Debug
        } else if self.quiet {
            log::LevelFilter::Warn
        } else {
            log::LevelFilter::Info
        };
        crate::logging::init(level, target);
    }
}

/// The EXIT CODES section.
pub fn exit_codes_help(extra: &[(ExitCode, &str)]) -> String {
    let mut s = String::from("EXIT CODES\n");
    let mut all: Vec<(ExitCode, &str)> = ExitCode::documented().to_vec();
    all.extend_from_slice(extra);
    all.sort_by_key(|(c, _)| c.code());
    for (code, text) in all {
        s.push_str(&format!("  {:<4}{text}\n", code.code()));
    }
    s
}

fn store_tool_help(extra_codes: &[(ExitCode, &str)]) -> String {
    format!(
        "{URL_GRAMMAR}\n\n{BACKEND_OPTIONS_HELP}\n\n{AUTHINFO_HELP}\n\n{}",
        exit_codes_help(extra_codes)
    )
}

fn mkfs_help() -> String {
    store_tool_help(&[])
}

fn adm_help() -> String {
    store_tool_help(&[
        (
            ExitCode::NeedsFsck,
            "shrink-db, release-versions: the filesystem was not unmounted cleanly or needs a check: run fsck.s3fs",
        ),
        (
            ExitCode::MountedElsewhere,
            "restore-metadata, retention, release-versions, shrink-db: the filesystem is mounted elsewhere (the message names the host)",
        ),
        (ExitCode::MountedHere, "the filesystem is mounted on this machine"),
        (
            ExitCode::BatchNeedsInput,
            "restore-metadata: no --seq and no answer on standard input (the versions are listed)",
        ),
    ])
}

/// mkfs.s3fs: create a filesystem.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mkfs.s3fs",
    version,
    about = "Create an s3fs filesystem in an object store",
    long_about = "Create an s3fs filesystem in an object store.\n\nUnless --plain is given, asks for a passphrase (twice on a terminal, one line of standard input otherwise), creates a random master key, stores it wrapped under the passphrase and prints it once: keep that printout offline, it recovers the filesystem if the passphrase is lost (s3fsadm recover-key). Refuses to overwrite an existing filesystem.",
    after_long_help = mkfs_help()
)]
pub struct MkfsArgs {
    /// Where to create the filesystem (see STORAGE URLS below)
    #[arg(value_name = "STORAGE_URL")]
    pub storage_url: String,
    /// Filesystem label
    #[arg(short = 'L', long, default_value = "")]
    pub label: String,
    /// Maximum size of a file data block in KiB: a big file is stored one object per
    /// block (small files and tails are packed); fixed for the life of the filesystem
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(crate::params::BLOCK_SIZES_KIB))]
    pub data_block_size: u64,
    /// Size of the metadata chunks in the store in KiB; fixed for the life of the filesystem
    #[arg(long, value_name = "KIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(crate::params::BLOCK_SIZES_KIB))]
    pub metadata_block_size: u64,
    /// Create an unencrypted filesystem (objects are still compressed and checksummed)
    #[arg(long)]
    pub plain: bool,
    /// Compression of the objects mkfs writes: none, zlib[-0..9], zstd[-1..19] [default: zstd-3]
    #[arg(long, value_name = "ALG[-LEVEL]")]
    pub compress: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// s3fsadm: administer a filesystem that is not mounted.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "s3fsadm",
    version,
    about = "Manage an s3fs filesystem that is not mounted: passphrase, key recovery, deletion, metadata versions",
    long_about = "Manage an s3fs filesystem that is not mounted: change the passphrase, recover the key, delete the filesystem, restore or download one of the retained metadata versions, or compact the metadata database.\n\nEvery action except download-metadata refuses while the filesystem is mounted on this machine (exit 40).",
    after_long_help = adm_help()
)]
pub struct AdmArgs {
    #[command(subcommand)]
    pub action: AdmAction,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdmAction {
    /// Change the passphrase (re-wraps the master key; no data is rewritten). A leaked old
    /// passphrase together with an old copy of the key objects still exposes the key.
    Passphrase {
        #[arg(value_name = "STORAGE_URL")]
        storage_url: String,
    },
    /// Set a new passphrase using the master key printed by mkfs.s3fs
    RecoverKey {
        #[arg(value_name = "STORAGE_URL")]
        storage_url: String,
    },
    /// Delete the filesystem: its objects in the store and its files in the cache
    /// directory, matched by their exact names, so that filesystems at URLs that share a
    /// prefix (…/p and …/p-2) are untouched (asks you to type "yes")
    Clear {
        #[arg(value_name = "STORAGE_URL")]
        storage_url: String,
    },
    /// Make an older metadata version the current one.
    ///
    /// Lists the retained metadata versions (index, seq, date, database size) and asks
    /// for the index of the one to restore (one line of standard input when it is not a
    /// terminal; exit 41 if there is none); --seq picks one without asking. The version is
    /// downloaded into the cache directory, replacing the local copy and the cached blocks
    /// (a local copy with changes the store lacks is kept as `.db.bak-<time>`), and is
    /// marked as needing a check: mount.s3fs then refuses (exit 30) until fsck.s3fs has
    /// checked it and uploaded it as the new current version. Every file comes back as
    /// it was in that version: data released since is kept in the store while any
    /// retained version needs it (see `retention`). Refused while the filesystem is
    /// mounted (40 here, 31 elsewhere).
    #[command(verbatim_doc_comment)]
    RestoreMetadata {
        #[arg(value_name = "STORAGE_URL")]
        storage_url: String,
        /// Restore the version with this seq (as listed) without asking
        #[arg(long, value_name = "N")]
        seq: Option<u64>,
    },
    /// Save a metadata version as a plain SQLite file, for inspection.
    ///
    /// Changes nothing, locally or in the store, and also works while the filesystem is
    /// mounted (the newest version in the store lags the mount by at most its
    /// --metadata-backup-interval). Refuses to overwrite an existing file.
    #[command(verbatim_doc_comment)]
    DownloadMetadata {
        #[arg(value_name = "STORAGE_URL")]
        storage_url: String,
        /// The version's seq, as listed by restore-metadata [default: the newest]
        #[arg(long, value_name = "N")]
        seq: Option<u64>,
        /// Where to write the database (must not exist)
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
    },
    /// Show or change which metadata versions the store retains.
    ///
    /// A version is retained while it is one of the newest --keep-last, or younger than
    /// --keep-within, or the newest of its day among the --keep-daily newest days that
    /// have one (defaults: 10, 24h, 7). Data that no file uses any more is deleted from
    /// the store only once no retained version needs it and --min-age has passed since
    /// (default 1h), so restore-metadata of any retained version is lossless; the cost is
    /// that deleted data stays in the store (s3fsstat: "Held for old versions") until its
    /// versions expire. Without options, prints the policy. The policy is kept in the
    /// store's superblock; a change takes effect at the next metadata upload. Refused
    /// while the filesystem is mounted (40 here, 31 elsewhere).
    #[command(verbatim_doc_comment)]
    Retention {
        #[arg(value_name = "STORAGE_URL")]
        storage_url: String,
        /// Always retain the newest N versions (at least 1 is)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100_000))]
        keep_last: Option<u32>,
        /// Retain every version younger than this (e.g. 24h, 7d, 0)
        #[arg(long, value_name = "DURATION", value_parser = crate::params::parse_duration)]
        keep_within: Option<u64>,
        /// Retain the newest version of each of the last N days that have one
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100_000))]
        keep_daily: Option<u32>,
        /// Delete released data no sooner than this after its release (e.g. 1h, 0)
        #[arg(long, value_name = "DURATION", value_parser = crate::params::parse_duration)]
        min_age: Option<u64>,
    },
    /// Expire every metadata version but the current one and delete the data only they
    /// needed, now (asks you to type "yes").
    ///
    /// Gives back the space s3fsstat shows as "Held for old versions"; afterwards only the
    /// current version can be restored. Only for a clean filesystem that is not mounted
    /// (exit 30 if it needs fsck.s3fs, 31 if mounted elsewhere, 40 if mounted here).
    #[command(verbatim_doc_comment)]
    ReleaseVersions {
        #[arg(value_name = "STORAGE_URL")]
        storage_url: String,
    },
    /// Compact the metadata database (SQLite VACUUM) and upload it as a new version.
    ///
    /// Only for a clean filesystem that is not mounted (exit 30 if it needs fsck.s3fs,
    /// 31 if mounted elsewhere, 40 if mounted here). Takes the filesystem's lock for the
    /// duration and prints the database size before and after.
    #[command(verbatim_doc_comment)]
    ShrinkDb {
        #[arg(value_name = "STORAGE_URL")]
        storage_url: String,
    },
}

impl AdmAction {
    pub fn storage_url(&self) -> &str {
        match self {
            AdmAction::Passphrase { storage_url }
            | AdmAction::RecoverKey { storage_url }
            | AdmAction::Clear { storage_url }
            | AdmAction::RestoreMetadata { storage_url, .. }
            | AdmAction::DownloadMetadata { storage_url, .. }
            | AdmAction::Retention { storage_url, .. }
            | AdmAction::ReleaseVersions { storage_url }
            | AdmAction::ShrinkDb { storage_url } => storage_url,
        }
    }
}

fn mount_help() -> String {
    store_tool_help(&[
        (
            ExitCode::NeedsFsck,
            "the filesystem was not unmounted cleanly or needs a check: run fsck.s3fs",
        ),
        (
            ExitCode::MountedElsewhere,
            "the filesystem is mounted elsewhere (the message names the host)",
        ),
        (
            ExitCode::NoMountpoint,
            "the mountpoint does not exist or is not a directory",
        ),
        (
            ExitCode::NotEnoughFds,
            "the open-file limit leaves fewer than 64 cache entries (raise ulimit -n)",
        ),
        (ExitCode::MountFailed, "the FUSE mount failed"),
        (ExitCode::MountedHere, "the mountpoint is already in use by a mount"),
    ])
}

/// mount.s3fs: mount a filesystem.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mount.s3fs",
    version,
    disable_version_flag = true,
    about = "Mount an s3fs filesystem",
    long_about = "Mount an s3fs filesystem.\n\nRuns in the background by default and exits 0 only once the mount is up; otherwise it prints the reason and exits with one of the codes below. Also works as a mount(8) helper: `mount.s3fs STORAGE_URL MOUNTPOINT -o opt,opt=val` (as used by `mount -t s3fs` and /etc/fstab), where each option is a long option without the dashes (`cachedir=/var/cache/s3fs,allow_other`), the kernel's mount flags (noexec, nosuid, nodev, ...) are applied as with --kernel-flags, user/users/owner/group imply noexec,nosuid,nodev as in mount(8), the words only mount(8), fstab and systemd read (_netdev, noauto, nofail, x-systemd.*, ...) are ignored, and sync, dirsync and mand are refused. SIGINT and SIGTERM unmount cleanly: everything is uploaded before the process ends.",
    after_long_help = mount_help()
)]
pub struct MountArgs {
    /// Mount read-only, without taking the filesystem's lock and without writing
    /// anything to the store, also while the writer is mounted on another host: the
    /// newest metadata version, following the newer ones the writer publishes (see
    /// --follow-interval), or the one --version names, for the mount's life. Every change
    /// fails with EROFS. Its files in the cache directory are removed at unmount
    #[arg(long)]
    pub ro: bool,
    /// With --ro: mount this retained metadata version, by its seq (as s3fsadm
    /// restore-metadata lists them) or a UTC date (YYYY-MM-DD[THH:MM[:SS]], the newest
    /// version published at or before it). Without a value: print the program's version
    #[arg(long, short = 'V', value_name = "SEQ|DATE", num_args = 0..=1, default_missing_value = "")]
    pub version: Option<String>,
    /// With --ro and without --version (a follower): look for a newer metadata version
    /// in the store this often (one GET), and move to it when the writer has published
    /// one (one LIST and the metadata chunks that changed; unchanged cached blocks are
    /// kept). A follower lags the writer by its --publish-after, the upload of the dirty
    /// blocks, this interval and 1 s of kernel caching
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub follow_interval: u64,
    /// For read-only followers on other hosts: publish a metadata version this many
    /// seconds after a change (only when something changed) [default: 0, off: only
    /// every --metadata-backup-interval]. Followers cannot tell the writer they exist
    /// (they never write to the store), so this is how it knows. Each publish waits for
    /// the dirty blocks to be uploaded (at most 60 s more) and costs about 10 requests
    #[arg(long, value_name = "SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub publish_after: u64,
    /// The filesystem (see STORAGE URLS below)
    #[arg(value_name = "STORAGE_URL")]
    pub storage_url: String,
    /// Where to mount it
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Maximum size of the block cache in KiB [default: from the free space of the cache disk]
    #[arg(long, value_name = "KIB")]
    pub cachesize: Option<u64>,
    /// Maximum number of cached blocks [default: from the open-file limit]
    #[arg(long, value_name = "N")]
    pub max_cache_entries: Option<usize>,
    /// Keep the cached blocks at unmount, for the next mount on this machine
    #[arg(long)]
    pub keep_cache: bool,
    /// Let every user access the filesystem (permissions are checked by the kernel on
    /// every mount, as on a local filesystem)
    #[arg(long, conflicts_with = "allow_root")]
    pub allow_other: bool,
    /// Let root access the filesystem too
    #[arg(long)]
    pub allow_root: bool,
    /// Stay in the foreground
    #[arg(long)]
    pub fg: bool,
    /// Mount flags for the kernel, comma-separated: noexec/exec, nosuid/suid, nodev/dev,
    /// noatime, rw, async; later words win [default: nosuid,nodev, as for every FUSE
    /// mount]. atime, relatime, strictatime, lazytime and the diratime words are accepted
    /// but change nothing: reads never update access times (only utimensat does). sync,
    /// dirsync and mand are refused (exit 2).
    #[arg(long, value_name = "WORDS", value_delimiter = ',')]
    pub kernel_flags: Vec<String>,
    /// Name in the first column of `mount` [default: the storage URL]
    #[arg(long, value_name = "NAME")]
    pub fs_name: Option<String>,
    /// Run as a systemd Type=notify service: stay in the foreground and send READY=1
    #[arg(long)]
    pub systemd: bool,
    /// Upload the metadata at least this often, in seconds; 0 = only at unmount and on request
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub metadata_backup_interval: u64,
    /// Compression of new objects: none, zlib[-0..9], zstd[-1..19] [default: zstd-3]
    #[arg(long, value_name = "ALG[-LEVEL]")]
    pub compress: Option<String>,
    /// Threads for hashing, compression and encryption [default: number of cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_threads: Option<u16>,
    /// Upload a dirty block once it has not been written for this many seconds (on a
    /// remote store, a block just written from its start to its end goes at once)
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub dirty_block_upload_delay: u64,
    /// Once the store has failed every request for this many seconds, writes that need
    /// cache space it would free fail with ENOSPC and reads of blocks not in the cache
    /// with EIO, instead of waiting; cached data and metadata keep working throughout
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub store_timeout: u64,
    /// Write the log to this file, or `syslog`, or `none` [default: CACHEDIR/mount.log]
    #[arg(long, value_name = "TARGET")]
    pub log: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub logging: LogArgs,
}

fn fsck_help() -> String {
    store_tool_help(&[
        (
            ExitCode::MountedElsewhere,
            "the filesystem is mounted on another machine",
        ),
        (ExitCode::MountedHere, "the filesystem is mounted on this machine"),
        (
            ExitCode::BatchNeedsInput,
            "--batch, but going on needs a confirmation (use --force-remote to accept the loss)",
        ),
        (ExitCode::LocalDbCorrupt, "the local metadata database is corrupt"),
        (
            ExitCode::Uncorrectable,
            "no local metadata and no intact metadata version in the store",
        ),
        (ExitCode::ErrorsFound, "errors were found and repaired"),
        (
            ExitCode::UncorrectableFound,
            "errors were found and some could not be repaired",
        ),
    ])
}

/// fsck.s3fs: check and repair a filesystem.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "fsck.s3fs",
    version,
    about = "Check and repair an s3fs filesystem",
    long_about = "Check and repair an s3fs filesystem that is not mounted.\n\nAfter a crash of the mount on this machine (kill -9, power cut), run it here with the same cache directory: it uploads every block that was dirty in the cache, repairs the metadata and marks the filesystem clean, so that every fsync'ed file reads back exactly. It then runs every consistency check (names, entries, inodes, blocks, objects and their reference counts, orphans into /lost+found, objects missing from or unknown to the store, sizes, directory loops, xattrs, symlinks, POSIX sanity, DB integrity, recent metadata versions) and names damaged files by their path. A filesystem marked clean and checked in the last 31 days is not checked again unless --force is given, so running it before every mount is cheap. Safe to interrupt: the next run starts over.",
    after_long_help = fsck_help()
)]
pub struct FsckArgs {
    /// The filesystem (see STORAGE URLS below)
    #[arg(value_name = "STORAGE_URL")]
    pub storage_url: String,
    /// Never ask: exit 41 where going on would need a confirmation
    #[arg(long)]
    pub batch: bool,
    /// Check even if the filesystem is marked clean
    #[arg(long)]
    pub force: bool,
    /// Use the metadata in the store although the filesystem is marked as mounted elsewhere
    /// (whatever that host had not uploaded is lost); without it a terminal asks you to type
    /// "continue, I know what I am doing"
    #[arg(long)]
    pub force_remote: bool,
    /// Keep the cached blocks after the check
    #[arg(long)]
    pub keep_cache: bool,
    /// Skip the verification of the retained metadata versions in the store
    #[arg(long)]
    pub fast: bool,
    /// Append the log to this file as well as to standard error
    #[arg(long, value_name = "PATH")]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub logging: LogArgs,
}

fn umount_help() -> String {
    // 1 also covers "busy": the message lists the processes using the filesystem.
    exit_codes_help(&[(ExitCode::MountFailed, "the unmount failed")])
}

/// umount.s3fs: unmount and wait until everything is in the store.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "umount.s3fs",
    version,
    about = "Unmount an s3fs filesystem and wait until all data and metadata are in the store",
    long_about = "Unmount an s3fs filesystem. Refuses if the filesystem is busy and lists the processes using it; otherwise unmounts and waits until every dirty block and the metadata are in the store and the mount process has exited, with a progress display on a terminal. Exits 0 only then.",
    after_long_help = umount_help()
)]
pub struct UmountArgs {
    /// The mountpoint
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Detach now and let the upload finish in the background
    #[arg(short = 'z', long)]
    pub lazy: bool,
    #[command(flatten)]
    pub logging: LogArgs,
}

/// Every tool's clap command, for the man pages.
pub fn commands() -> Vec<clap::Command> {
    vec![
        MkfsArgs::command(),
        MountArgs::command(),
        UmountArgs::command(),
        FsckArgs::command(),
        AdmArgs::command(),
        StatArgs::command(),
        CtrlArgs::command(),
        CpArgs::command(),
        LockArgs::command(),
        RmArgs::command(),
        VerifyArgs::command(),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definitions_are_consistent() {
        for cmd in super::commands() {
            cmd.debug_assert();
        }
    }
}
