//! Filesystem metadata: the SQLite schema ([`schema`]), every operation that changes
//! its rows ([`names`], [`inodes`], [`xattrs`], [`blocks`]), and its versioned, chunked
//! copy in the store ([`chunks`]) with the lifecycle of its versions ([`versions`]).
//!
//! The row operations keep the refcount invariants of the schema; the filesystem, the
//! block cache and fsck's repairs all call them, so each invariant is kept in one place.

pub mod blocks;
pub mod chunks;
pub mod db;
pub mod error;
pub mod inodes;
pub mod names;
pub mod schema;
pub mod stats;
pub mod versions;
pub mod xattrs;
