//! The mount table (/proc/mounts), read in one place.

use std::path::Path;

use crate::exit::{Error, ExitCode};
use crate::store::StorageUrl;

/// One line of /proc/mounts, with its octal escapes (`\040` for a space) decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub source: String,
    pub target: String,
    pub fstype: String,
}

fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every current mount; empty if the table cannot be read.
pub fn entries() -> Vec<MountEntry> {
    let Ok(text) = std::fs::read_to_string("/proc/mounts") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some(MountEntry {
                source: unescape(f.next()?),
                target: unescape(f.next()?),
                fstype: f.next()?.to_owned(),
            })
        })
        .collect()
}

/// The mount whose mountpoint is `path` (compared after resolving symlinks).
pub fn at(path: &Path) -> Option<MountEntry> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let want = path.to_string_lossy();
    entries().into_iter().find(|e| e.target == want)
}

/// Tools that change or read a filesystem as a whole (fsck, s3fsadm, s3fs_verify) need
/// it unmounted here (exit 40 otherwise).
pub fn refuse_if_mounted_here(url: &StorageUrl) -> Result<(), Error> {
    let canonical = url.to_string();
    if entries().iter().any(|m| m.source == canonical) {
        return Err(Error::new(
            ExitCode::MountedHere,
            format!("{canonical} is mounted on this machine; unmount it first"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(super::unescape("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(super::unescape("plain"), "plain");
        assert_eq!(super::unescape("tail\\04"), "tail\\04");
    }

    #[test]
    fn the_root_is_a_mount() {
        assert!(super::at(std::path::Path::new("/")).is_some());
    }
}
