//! `local://PATH`: objects are files in a directory.
//!
//! Crash safety: an object is written to a temporary name, fsync'ed, renamed into place
//! and the directory fsync'ed, so a crash never leaves half an object under a real name.
//! Temporary names start with `.tmp-` and are never listed; fsck removes stale ones.
//! Small data objects are the exception: they are renamed into place unsynced and made
//! durable by one `syncfs` shared with every put in flight ([`GroupSync`]), which costs
//! a fraction of two fsyncs each. A crash can then leave half of one under its name, but
//! only of a put that never returned: the filesystem records a data object only after
//! its put returned, and fsck deletes objects it does not know. A data object's name is
//! never reused for other content, so no good object can be replaced by a torn one.
//!
//! File names are the keys with `/`, `=`, `#`, `%`, NUL and a leading `.` escaped as
//! `=XX`. Data objects (`s3fs_data_<decimal id>`) are sharded into directories named after
//! the first 3 and 6 digits of the id (`s3fs_data_#/s3fs_data_123#/s3fs_data_123456#/…`)
//! so no directory grows past ~1000 entries. Shard directories end in `#`, which an
//! escaped key never contains, and sort exactly where their keys do, so a listing is a
//! sorted walk that resumes after the last key without reading the whole tree.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::group_sync::GroupSync;
use crate::store::{ListPage, ObjectInfo, OpenError, PutMode, Store, StoreError, StoreResult};

const DATA_PREFIX: &str = "s3fs_data_";
const TMP_PREFIX: &str = ".tmp-";
const LOCK_FILE: &str = ".lock";
const PAGE_SIZE: usize = 1000;

#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    tmp_counter: AtomicU64,
    /// Makes small data objects durable; see the module documentation.
    group_sync: GroupSync<Box<dyn Fn() -> io::Result<()> + Send + Sync>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl LocalStore {
    /// Open an existing directory. A missing one is [`OpenError::NoSuchDirectory`], which
    /// the tools treat like a missing bucket.
    pub fn open(root: &Path) -> Result<LocalStore, OpenError> {
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(OpenError::NotADirectory(root.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(OpenError::NoSuchDirectory(root.to_path_buf()));
            }
            Err(source) => {
                return Err(OpenError::CannotAccess {
                    path: root.to_path_buf(),
                    source,
                });
            }
        }
        // One descriptor for the store's lifetime: syncfs reports the write-back errors
        // since the descriptor's last report, and a fresh one would miss those that
        // struck before it was opened.
        let root_dir = File::open(root).map_err(|source| OpenError::CannotOpen {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(LocalStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                tmp_counter: AtomicU64::new(0),
                group_sync: GroupSync::new(Box::new(move || syncfs(&root_dir))),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Permanent(format!("local store worker failed: {e}")))?
    }
}

/// Escape a key into one file name component.
fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for (i, ch) in key.char_indices() {
        match ch {
            '/' | '=' | '#' | '%' | '\0' => out.push_str(&format!("={:02X}", ch as u32)),
            '.' if i == 0 => out.push_str("=2E"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(name: &str) -> Option<String> {
    let mut out = Vec::with_capacity(name.len());
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Shard directories a key lives in, outermost first, as key prefixes.
fn shard_prefixes(key: &str) -> Vec<String> {
    let Some(digits) = key.strip_prefix(DATA_PREFIX) else {
        return vec![];
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return vec![];
    }
    let mut v = vec![DATA_PREFIX.to_owned()];
    for n in [3, 6] {
        if digits.len() > n {
            v.push(format!("{DATA_PREFIX}{}", &digits[..n]));
        }
    }
    v
}

fn io_err(what: &str, key: &str, e: io::Error) -> StoreError {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
            StoreError::AccessDenied(format!("{what} {key}: {e}"))
        }
        // A full or failing disk may recover (space freed, device back).
        Some(libc::ENOSPC) | Some(libc::EIO) | Some(libc::EDQUOT) | Some(libc::EINTR) | Some(libc::EAGAIN) => {
            StoreError::temporary(format!("{what} {key}: {e}"))
        }
        _ => StoreError::Permanent(format!("{what} {key}: {e}")),
    }
}

fn not_found_or(what: &str, key: &str, e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::NotFound(key.to_owned())
    } else {
        io_err(what, key, e)
    }
}

fn etag_of(m: &fs::Metadata) -> String {
    format!(
        "{:x}-{:x}-{:x}",
        m.ino(),
        m.size(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
    )
}

/// Objects at least this big are written with direct I/O (see [`write_new_file`]).
const DIRECT_IO_MIN: usize = 128 << 10;
/// Alignment of buffers, offsets and lengths for direct I/O: the largest logical block
/// size in common use.
const DIRECT_IO_ALIGN: usize = 4096;

/// Anonymous memory of its own mapping: page-aligned, as direct I/O needs, and returned
/// to the system when dropped. (From the allocator, buffers of a megabyte freed by many
/// upload threads stayed resident in its per-thread arenas.)
struct MappedBuffer {
    ptr: *mut u8,
    len: usize,
}

impl MappedBuffer {
    fn new(len: usize) -> io::Result<MappedBuffer> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedBuffer { ptr: ptr.cast(), len })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `len` readable and writable bytes (zero-filled by the kernel) mapped
        // for as long as `self` lives, and borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for MappedBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Create `path` (which must not exist) holding `data`; returns it open, not yet synced.
///
/// An object is fsync'ed at once and read back only on a cache miss, so a large one is
/// written with `O_DIRECT`: it does not pass through the page cache, where it would
/// cost a copy into newly allocated pages and push out pages that will be read again.
/// The length is padded to the alignment and the file truncated back. A filesystem
/// that refuses direct I/O (EINVAL at open or at the first write) gets a plain write.
fn write_new_file(path: &Path, data: &[u8]) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let plain = || -> io::Result<File> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
        f.write_all(data)?;
        Ok(f)
    };
    if data.len() < DIRECT_IO_MIN {
        return plain();
    }
    let f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return plain(),
        Err(e) => return Err(e),
    };
    let mut buf = MappedBuffer::new(data.len().next_multiple_of(DIRECT_IO_ALIGN))?;
    let bytes = buf.bytes();
    bytes[..data.len()].copy_from_slice(data);
    let mut written = 0;
    while written < bytes.len() {
        match std::os::unix::fs::FileExt::write_at(&f, &bytes[written..], written as u64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) if n % DIRECT_IO_ALIGN == 0 => written += n,
            // A short write that breaks the alignment: finish without O_DIRECT.
            Ok(n) => {
                written += n;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && written == 0 => {
                drop(f);
                fs::remove_file(path)?;
                return plain();
            }
            Err(e) => return Err(e),
        }
    }
    if written < bytes.len() {
        clear_direct_io(&f)?;
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes[written..], written as u64)?;
    }
    f.set_len(data.len() as u64)?;
    Ok(f)
}

/// Turn `O_DIRECT` off on an open file.
fn clear_direct_io(f: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a valid, owned file descriptor.
    let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flush every file and directory of the filesystem holding `dir` to disk.
fn syncfs(dir: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs on a valid, owned file descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a put of `data` under `key` is made durable by the shared `syncfs`: small
/// data objects only (large ones are written with `O_DIRECT` and gain little; other
/// objects may replace content that must survive a crash).
fn synced_in_group(key: &str, data: &[u8]) -> bool {
    key.starts_with(DATA_PREFIX) && data.len() < DIRECT_IO_MIN
}

impl Inner {
    fn dir_for(&self, key: &str) -> PathBuf {
        let mut p = self.root.clone();
        for prefix in shard_prefixes(key) {
            p.push(format!("{}#", escape(&prefix)));
        }
        p
    }

    fn path_for(&self, key: &str) -> PathBuf {
        self.dir_for(key).join(escape(key))
    }

    fn tmp_path(&self, dir: &Path) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()))
    }

    fn get(&self, key: &str, range: Option<Range<u64>>, max_len: u64) -> StoreResult<Bytes> {
        let path = self.path_for(key);
        let mut f = File::open(&path).map_err(|e| not_found_or("reading", key, e))?;
        let len = f.metadata().map_err(|e| io_err("reading", key, e))?.len();
        if len > max_len {
            return Err(StoreError::TooLarge {
                key: key.to_owned(),
                size: len,
                max: max_len,
            });
        }
        let (start, end) = match range {
            Some(r) => (r.start.min(len), r.end.min(len).max(r.start.min(len))),
            None => (0, len),
        };
        let mut buf = vec![0u8; (end - start) as usize];
        f.seek(SeekFrom::Start(start)).map_err(|e| io_err("reading", key, e))?;
        f.read_exact(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => StoreError::temporary(format!("object {key} changed while being read")),
            _ => io_err("reading", key, e),
        })?;
        Ok(Bytes::from(buf))
    }

    fn put(&self, key: &str, data: &[u8], mode: &PutMode) -> StoreResult<()> {
        let dir = self.dir_for(key);
        fs::create_dir_all(&dir).map_err(|e| io_err("creating directory for", key, e))?;
        let tmp = self.tmp_path(&dir);
        let result = self.put_via(&tmp, &dir, key, data, mode);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn put_via(&self, tmp: &Path, dir: &Path, key: &str, data: &[u8], mode: &PutMode) -> StoreResult<()> {
        let in_group = synced_in_group(key, data) && !matches!(mode, PutMode::IfMatch(_));
        let f = write_new_file(tmp, data).map_err(|e| io_err("writing", key, e))?;
        if !in_group {
            f.sync_all().map_err(|e| io_err("syncing", key, e))?;
        }
        drop(f);
        let dest = self.path_for(key);
        match mode {
            PutMode::Overwrite => fs::rename(tmp, &dest).map_err(|e| io_err("renaming", key, e))?,
            // link(2) fails atomically if the name exists, even between processes.
            PutMode::IfNoneMatch => {
                match fs::hard_link(tmp, &dest) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(StoreError::PreconditionFailed(key.to_owned()));
                    }
                    Err(e) => return Err(io_err("linking", key, e)),
                }
                fs::remove_file(tmp).map_err(|e| io_err("removing temporary file for", key, e))?;
            }
            PutMode::IfMatch(expected) => {
                // Compare-and-swap under an exclusive lock shared by every process using
                // this directory.
                let lock = File::create(self.root.join(LOCK_FILE)).map_err(|e| io_err("locking for", key, e))?;
                // SAFETY: flock on a valid, owned file descriptor.
                if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
                    return Err(io_err("locking for", key, io::Error::last_os_error()));
                }
                match fs::metadata(&dest) {
                    Ok(m) if &etag_of(&m) == expected => {}
                    Ok(_) => return Err(StoreError::PreconditionFailed(key.to_owned())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(StoreError::PreconditionFailed(key.to_owned()));
                    }
                    Err(e) => return Err(io_err("checking", key, e)),
                }
                fs::rename(tmp, &dest).map_err(|e| io_err("renaming", key, e))?;
            }
        }
        if in_group {
            return self.group_sync.sync().map_err(|e| io_err("syncing", key, e));
        }
        fsync_dir(dir).map_err(|e| io_err("syncing directory of", key, e))
    }

    fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        let m = fs::metadata(self.path_for(key)).map_err(|e| not_found_or("inspecting", key, e))?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: m.len(),
            etag: Some(etag_of(&m)),
        })
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        match fs::remove_file(self.path_for(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("deleting", key, e)),
        }
    }

    /// Keys under `prefix` greater than `after`, sorted, at most `PAGE_SIZE` (+1 to know
    /// whether more follow).
    fn list(&self, prefix: &str, after: Option<&str>) -> StoreResult<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        self.walk(&self.root, prefix, after, &mut out)?;
        Ok(out)
    }

    fn walk(&self, dir: &Path, prefix: &str, after: Option<&str>, out: &mut Vec<ObjectInfo>) -> StoreResult<()> {
        enum Entry {
            File(String, PathBuf),
            Shard(String, PathBuf),
        }
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("listing", &dir.display().to_string(), e)),
        };
        let mut entries = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| io_err("listing", &dir.display().to_string(), e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue; // temporary files and the lock file
            }
            if let Some(shard) = name.strip_suffix('#') {
                let Some(p) = unescape(shard) else { continue };
                // Skip shards that cannot hold a key under `prefix` or past `after`.
                let overlaps = p.starts_with(prefix) || prefix.starts_with(&p);
                let after_ok = match after {
                    Some(a) => p.as_str() > a || a.starts_with(&p),
                    None => true,
                };
                if overlaps && after_ok {
                    entries.push(Entry::Shard(p, ent.path()));
                }
            } else if let Some(key) = unescape(name)
                && key.starts_with(prefix)
                && after.is_none_or(|a| key.as_str() > a)
            {
                entries.push(Entry::File(key, ent.path()));
            }
        }
        // A file whose key equals a shard's prefix sorts before the shard's keys.
        let sort_key = |e: &Entry| match e {
            Entry::File(k, _) => (k.clone(), false),
            Entry::Shard(k, _) => (k.clone(), true),
        };
        entries.sort_by_key(sort_key);
        for e in entries {
            if out.len() > PAGE_SIZE {
                return Ok(());
            }
            match e {
                Entry::Shard(_, path) => self.walk(&path, prefix, after, out)?,
                Entry::File(key, path) => match fs::metadata(&path) {
                    Ok(m) => out.push(ObjectInfo {
                        key,
                        size: m.len(),
                        etag: Some(etag_of(&m)),
                    }),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {} // deleted meanwhile
                    Err(e) => return Err(io_err("listing", &key, e)),
                },
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        let key = key.to_owned();
        self.run(move |s| s.get(&key, None, max_len)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let key = key.to_owned();
        self.run(move |s| s.get(&key, Some(range), u64::MAX)).await
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StoreResult<()> {
        let key = key.to_owned();
        self.run(move |s| s.put(&key, &data, &mode)).await
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        let key = key.to_owned();
        self.run(move |s| s.head(&key)).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let key = key.to_owned();
        self.run(move |s| s.delete(&key)).await
    }

    async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
        let keys = keys.to_vec();
        self.run(move |s| keys.iter().try_for_each(|k| s.delete(k))).await
    }

    async fn list(&self, prefix: &str, continuation: Option<String>) -> StoreResult<ListPage> {
        let prefix = prefix.to_owned();
        self.run(move |s| {
            let mut objects = s.list(&prefix, continuation.as_deref())?;
            let next = if objects.len() > PAGE_SIZE {
                objects.truncate(PAGE_SIZE);
                objects.last().map(|o| o.key.clone())
            } else {
                None
            };
            Ok(ListPage { objects, next })
        })
        .await
    }

    fn describe(&self) -> String {
        format!("local://{}/", self.inner.root.display())
    }
}

/// Whether `name` (a file name in a local store) is a leftover temporary file.
pub fn is_temporary_file(name: &OsStr) -> bool {
    name.as_bytes().starts_with(TMP_PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_is_one_component() {
        for key in ["a", "a/b", ".hidden", "x=y#z%", "s3fs_data_12", "ü/ñ"] {
            let e = escape(key);
            assert!(!e.contains('/') && !e.contains('#') && !e.starts_with('.'), "{e}");
            assert_eq!(unescape(&e).as_deref(), Some(key));
        }
    }

    #[test]
    fn data_keys_are_sharded() {
        assert_eq!(shard_prefixes("s3fs_data_12"), vec!["s3fs_data_"]);
        assert_eq!(
            shard_prefixes("s3fs_data_1234567"),
            vec!["s3fs_data_", "s3fs_data_123", "s3fs_data_123456"]
        );
        assert!(shard_prefixes("s3fs_data_x1").is_empty());
        assert!(shard_prefixes("s3fs_params").is_empty());
    }
}
