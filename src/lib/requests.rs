//! FUSE requests received since the mount, by kind, for `s3fsstat`. A FUSE operation
//! costs mostly its kernel round trip, so these counts show what a workload really
//! costs, and tests use them to check that round trips the kernel can be spared are
//! spared. A FORGET is counted per inode, also when the kernel batches them. Requests
//! on the control file (the admin tools' own traffic) are not counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! kinds {
    ($($kind:ident => $name:literal),* $(,)?) => {
        /// A kind of FUSE request.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind { $($kind),* }
        const NAMES: &[&str] = &[$($name),*];
    };
}

kinds! {
    Lookup => "lookup", Forget => "forget", Getattr => "getattr",
    Setattr => "setattr", Readlink => "readlink", Mknod => "mknod", Mkdir => "mkdir",
    Unlink => "unlink", Rmdir => "rmdir", Symlink => "symlink", Rename => "rename", Link => "link",
    Open => "open", Read => "read", Write => "write", Flush => "flush", Release => "release",
    Fsync => "fsync", Opendir => "opendir", Readdir => "readdir", Readdirplus => "readdirplus",
    Releasedir => "releasedir", Fsyncdir => "fsyncdir", Statfs => "statfs", Setxattr => "setxattr",
    Getxattr => "getxattr", Listxattr => "listxattr", Removexattr => "removexattr",
    Access => "access", Create => "create", Fallocate => "fallocate", Lseek => "lseek",
    CopyFileRange => "copy_file_range",
}

static COUNTS: [AtomicU64; NAMES.len()] = [const { AtomicU64::new(0) }; NAMES.len()];

/// Count one request of `kind`.
pub fn count(kind: Kind) {
    COUNTS[kind as usize].fetch_add(1, Ordering::Relaxed);
}

/// The kinds received at least once, with their counts.
pub fn snapshot() -> BTreeMap<String, u64> {
    NAMES
        .iter()
        .zip(&COUNTS)
        .map(|(name, n)| (name.to_string(), n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_name() {
        let before = snapshot().get("copy_file_range").copied().unwrap_or(0);
        count(Kind::CopyFileRange);
        count(Kind::CopyFileRange);
        assert_eq!(snapshot()["copy_file_range"], before + 2);
        assert_eq!(NAMES[Kind::Lookup as usize], "lookup");
        assert_eq!(NAMES[Kind::CopyFileRange as usize], "copy_file_range");
    }
}
