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
    /// Concurrent requests to the store [default: 32]
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
        let level = if self.debug {
            log::LevelFilter::Debug
        } else if self.quiet {
            log::LevelFilter::Warn
        } else {
            log::LevelFilter::Info
        };
        let _ = env_logger::Builder::new()
            .filter_level(log::LevelFilter::Warn)
            .filter_module("s3fs", level)
            .format_target(false)
            .format_timestamp(None)
            .try_init();
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
    store_tool_help(&[(ExitCode::MountedHere, "the filesystem is mounted on this machine")])
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
    /// Maximum size of a file data block in KiB; fixed for the life of the filesystem
    #[arg(long, value_name = "KIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(4..=65536))]
    pub data_block_size: u64,
    /// Size of the metadata chunks in the store in KiB; fixed for the life of the filesystem
    #[arg(long, value_name = "KIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(4..=65536))]
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
    about = "Manage an s3fs filesystem that is not mounted: passphrase, key recovery, deletion",
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
    /// Delete the filesystem: every object under the storage URL and the local cache
    /// (asks you to type "yes")
    Clear {
        #[arg(value_name = "STORAGE_URL")]
        storage_url: String,
    },
}

/// Every tool's clap command, for the man pages.
pub fn commands() -> Vec<clap::Command> {
    vec![MkfsArgs::command(), AdmArgs::command()]
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
