//! Filesystem metadata: the SQLite schema ([`schema`]) and its versioned, chunked copy in
//! the store ([`chunks`]).

pub mod chunks;
pub mod schema;
