//! s3fs: a POSIX filesystem stored in an object store (S3, any S3-compatible store, or a
//! local directory), in the style of S3QL.
//!
//! Layering (bottom-up): [`store`] moves opaque bytes to and from an object store;
//! [`codec`] turns plaintext into self-describing, compressed, encrypted objects;
//! [`crypto`] owns the master key and its passphrase wrapping; [`fs_store`] ties the two
//! together for the filesystem's own object names; [`meta`] holds the SQLite schema and
//! the versioned metadata copies in the store; [`cache`] is the write-back block cache;
//! [`fs`] is the filesystem core (POSIX semantics, no FUSE types) and [`fuse`] the thin
//! adapter to the kernel; [`mount`] runs a mount from start to clean exit; [`config`]
//! reads authinfo2 and prompts for secrets; [`cli`] holds the clap definitions shared by
//! the binaries and the man pages; [`mkfs`], [`fsck`], [`adm`] and [`verify`] are tool
//! entry points ([`fsck`] also holds crash recovery and the consistency checks).

pub mod adm;
pub mod cache;
pub mod cli;
pub mod codec;
pub mod config;
pub mod control;
pub mod crypto;
pub mod daemon;
pub mod exit;
pub mod fs;
pub mod fs_store;
pub mod fsck;
pub mod fuse;
pub mod localdisk;
pub mod logging;
pub mod meta;
pub mod mkfs;
pub mod mount;
pub mod params;
pub mod process;
pub mod requests;
pub mod runtime;
pub mod served;
pub mod store;
pub mod tool_errors;
pub mod tools;
pub mod verify;

pub use exit::{Error, ExitCode, Result};
