//! Cache file names, the start-up scan, and the few syscalls std does not wrap.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Key;

const DIRTY_SUFFIX: &str = ".dirty";
const TMP_SUFFIX: &str = ".tmp";
/// Holds the time before the last `syncfs` of the cache's filesystem began (see
/// [`write_synced_mark`]).
const SYNCED_MARK: &str = "synced";

/// `<inode>-<blockno>` (clean) or `<inode>-<blockno>.dirty`.
pub(super) fn block_path(dir: &Path, key: Key, dirty: bool) -> PathBuf {
    let suffix = if dirty { DIRTY_SUFFIX } else { "" };
    dir.join(format!("{}-{}{suffix}", key.0, key.1))
}

pub(super) fn tmp_path(dir: &Path, key: Key) -> PathBuf {
    dir.join(format!("{}-{}{TMP_SUFFIX}", key.0, key.1))
}

fn parse_key(s: &str) -> Option<Key> {
    let (i, b) = s.split_once('-')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    if !digits(i) || !digits(b) {
        return None;
    }
    Some((i.parse().ok()?, b.parse().ok()?))
}

/// One block file found by [`scan`].
#[derive(Debug)]
pub(super) struct Found {
    pub key: Key,
    pub dirty: bool,
    pub len: u64,
    pub mtime: SystemTime,
}

/// List the block files of `dir`, deleting leftover `.tmp` files. When both the clean and
/// the dirty file of a block exist (impossible with atomic renames, but cheap to handle),
/// the dirty one wins and the clean one is deleted. Unknown files are left alone.
pub(super) fn scan(dir: &Path) -> io::Result<Vec<Found>> {
    let mut found: std::collections::BTreeMap<Key, Found> = Default::default();
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            log::warn!("cache: ignoring unexpected file {:?}", item.path());
            continue;
        };
        if name == SYNCED_MARK || name.strip_suffix(TMP_SUFFIX) == Some(SYNCED_MARK) {
            continue;
        }
        if let Some(stem) = name.strip_suffix(TMP_SUFFIX)
            && parse_key(stem).is_some()
        {
            remove_if_exists(&item.path())?;
            continue;
        }
        let (stem, dirty) = match name.strip_suffix(DIRTY_SUFFIX) {
            Some(stem) => (stem, true),
            None => (name, false),
        };
        let Some(key) = parse_key(stem) else {
            log::warn!("cache: ignoring unexpected file {:?}", item.path());
            continue;
        };
        let meta = item.metadata()?;
        let f = Found {
            key,
            dirty,
            len: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        };
        match found.get(&key) {
            Some(prev) if prev.dirty => remove_if_exists(&block_path(dir, key, false))?,
            Some(_) => {
                remove_if_exists(&block_path(dir, key, false))?;
                found.insert(key, f);
            }
            None => {
                found.insert(key, f);
            }
        }
    }
    Ok(found.into_values().collect())
}

/// Hard-link into `new_dir` (created if missing) every clean block file of `old_dir`
/// for which `unchanged(inode, blockno)` says the block is the same in the version the
/// new cache serves; returns how many. Without a synced mark in `new_dir` the links are
/// trusted as they are: for a read-only follower, whose cache never outlives its
/// process, that is right (see `mount::read_only`). Unreadable entries are skipped.
pub fn link_unchanged(
    old_dir: &Path,
    new_dir: &Path,
    mut unchanged: impl FnMut(u64, u64) -> bool,
) -> io::Result<usize> {
    fs::create_dir_all(new_dir)?;
    let mut linked = 0;
    for item in fs::read_dir(old_dir)?.flatten() {
        let name = item.file_name();
        let Some(key) = name.to_str().and_then(parse_key) else {
            continue; // dirty, temporary, the mark, or foreign
        };
        if unchanged(key.0, key.1) && fs::hard_link(item.path(), block_path(new_dir, key, false)).is_ok() {
            linked += 1;
        }
    }
    Ok(linked)
}

/// What the last [`write_synced_mark`] in `dir` recorded: every file of the cache last
/// modified before the time, or every file (a clean shutdown), is on disk. `None` if
/// there is no mark (a cache made before marks existed, whose clean files were each
/// fsync'ed).
pub(super) fn read_synced_mark(dir: &Path) -> Option<SyncedMark> {
    let text = fs::read_to_string(dir.join(SYNCED_MARK)).ok()?;
    let text = text.trim();
    if text == "clean" {
        return Some(SyncedMark::Everything);
    }
    let nanos: u64 = text.parse().ok()?;
    Some(SyncedMark::Before(
        SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos),
    ))
}

/// See [`read_synced_mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SyncedMark {
    Everything,
    Before(SystemTime),
}

impl SyncedMark {
    /// Whether a clean file last modified at `mtime` survived whatever ended the last
    /// session.
    pub(super) fn covers(self, mtime: SystemTime) -> bool {
        match self {
            SyncedMark::Everything => true,
            SyncedMark::Before(t) => mtime < t,
        }
    }
}

/// `syncfs` the cache's filesystem, then record (durably) a time before it began, or
/// with `everything` (no file changes any more: the cache is shut down) that all files
/// are on disk. Clean block files are not fsync'ed one by one (a cold read of 8,000
/// small files spent most of its time in those fsyncs); after a crash, the ones
/// modified after the mark are deleted instead (see `BlockCache::open`), and fetched
/// again when read.
pub(super) fn write_synced_mark(dir: &Path, everything: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // The kernel stamps files with a coarse clock that may lag this one: a second of
    // margin, so that no file modified after the syncfs began looks older than the mark.
    let before = SystemTime::now() - std::time::Duration::from_secs(1);
    let d = File::open(dir)?;
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let text = if everything {
        "clean".to_owned()
    } else {
        before
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .to_string()
    };
    let tmp = dir.join(format!("{SYNCED_MARK}{TMP_SUFFIX}"));
    {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(SYNCED_MARK))?;
    d.sync_all()
}

pub(super) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// fsync a directory, so that renames and creations in it are durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Make the SQLite database durable: fdatasync its `-wal` file (commits with
/// `synchronous=NORMAL` are written there without sync) or, without a WAL file, the DB.
pub(super) fn sync_db(db_path: &Path) -> io::Result<()> {
    let mut wal = db_path.as_os_str().to_owned();
    wal.push("-wal");
    match File::open(&wal) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => File::open(db_path)?.sync_all(),
        Err(e) => Err(e),
    }
}

/// Read `len` bytes at `offset` of `file` onto the end of `buf`, into its spare capacity
/// without zeroing it first (that memset was 2 % of an upload's CPU). Fails with
/// `UnexpectedEof` if the file is shorter; `buf` then keeps its length.
pub(super) fn append_read_at(file: &File, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    buf.reserve(len);
    let start = buf.len();
    let mut done = 0;
    while done < len {
        let at = offset
            .checked_add(done as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read beyond the largest file offset"))?;
        let spare = &mut buf.spare_capacity_mut()[done..len];
        // SAFETY: pread writes at most `spare.len()` bytes into memory the vector owns
        // (its spare capacity, reserved above); nothing reads them before set_len below.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        match n {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as usize,
        }
    }
    // SAFETY: the `len` bytes after `start` were written by pread above.
    unsafe { buf.set_len(start + len) };
    Ok(())
}

/// Start writing `file`'s dirty pages to disk without waiting (sync_file_range), so
/// that a later fdatasync of many files waits for I/O that is already under way.
pub(super) fn start_writeback(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open file descriptor; offset 0 and length 0 mean the whole file.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) use crate::localdisk::disk_space;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let dir = Path::new("/c");
        assert_eq!(block_path(dir, (7, 12), true), Path::new("/c/7-12.dirty"));
        assert_eq!(block_path(dir, (7, 12), false), Path::new("/c/7-12"));
        assert_eq!(parse_key("7-12"), Some((7, 12)));
        assert_eq!(parse_key("7-"), None);
        assert_eq!(parse_key("a-1"), None);
        assert_eq!(parse_key("1-+2"), None);
    }

    #[test]
    fn append_read_at_reads_onto_the_end_or_leaves_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data).unwrap();
        let f = File::open(&path).unwrap();
        let mut buf = b"head".to_vec();
        append_read_at(&f, &mut buf, 60_000, 40_000).unwrap();
        assert_eq!(&buf[..4], b"head");
        assert_eq!(&buf[4..], &data[40_000..]);
        let mut short = b"x".to_vec();
        let err = append_read_at(&f, &mut short, 10, 99_995).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(short, b"x", "a failed read leaves the length as it was");
        let mut empty = Vec::new();
        append_read_at(&f, &mut empty, 0, 1 << 40).unwrap();
        assert!(empty.is_empty());
        let err = append_read_at(&f, &mut empty, 1, u64::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
