//! s3fs_verify: check that every data object is in the store and intact.

use std::path::PathBuf;

use clap::Parser;

use super::{LogArgs, StoreArgs, store_tool_help};
use crate::exit::ExitCode;

fn verify_help() -> String {
    store_tool_help(&[
        (
            ExitCode::NeedsFsck,
            "the filesystem was not unmounted cleanly or needs a check: run fsck.s3fs",
        ),
        (
            ExitCode::MountedElsewhere,
            "the filesystem is mounted on another machine (the message names the host)",
        ),
        (ExitCode::MountedHere, "the filesystem is mounted on this machine"),
        (ExitCode::LocalDbCorrupt, "the local metadata database is corrupt"),
        (
            ExitCode::VerifyFoundProblems,
            "objects are missing or corrupt (their names are in the report files)",
        ),
    ])
}

/// s3fs_verify: verify the data objects of a filesystem.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "s3fs_verify",
    version,
    about = "Verify that the data objects of an s3fs filesystem are in the store and intact",
    long_about = "Verify that the data objects of an s3fs filesystem that is not mounted are in the store and intact.\n\nWithout --data, asks the store for the size of every object the metadata names (one HEAD request each): finds missing and truncated objects cheaply. With --data, downloads, authenticates and decrypts every object and compares each block's SHA-256 with the metadata: finds every damaged byte, at the cost of reading the whole filesystem. The names of missing objects are written to the --missing-file, those of damaged ones to the --corrupted-file, as they are found; both files are removed at the end if they are empty. Nothing is changed, neither in the store nor in the cache directory: the metadata is read from the local copy if it is current, otherwise the newest version is downloaded to a temporary file. The position is shown on a terminal (logged every 10 seconds otherwise): after an interruption, --start-with that position resumes the check.",
    after_long_help = verify_help()
)]
pub struct VerifyArgs {
    /// The filesystem (see STORAGE URLS below)
    #[arg(value_name = "STORAGE_URL")]
    pub storage_url: String,
    /// Download and decrypt every object and check the SHA-256 of every block, instead of
    /// only its presence and size
    #[arg(long)]
    pub data: bool,
    /// Skip the first N objects (to resume an interrupted check)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub start_with: u64,
    /// Write the names of missing objects to this file (it must not exist or be empty)
    #[arg(long, value_name = "NAME", default_value = "missing_objects.txt")]
    pub missing_file: PathBuf,
    /// Write the names of corrupt objects to this file (it must not exist or be empty)
    #[arg(long, value_name = "NAME", default_value = "corrupted_objects.txt")]
    pub corrupted_file: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub log: LogArgs,
}
