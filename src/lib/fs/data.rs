//! File data: read, write, fsync, fallocate, lseek and copy_file_range, through the block
//! cache. A file's bytes `[N·bs, (N+1)·bs)` are block N; a block the cache does not
//! have and the store never got is a hole and reads as zeros.
//!
//! The cache is never called while the DB lock is held (its lock order): block I/O
//! happens first, then one short transaction updates size and times.

use super::db::{ino_id, load_inode};
use super::{Ctx, Filesystem, FsError, FsResult, err};
use crate::cache::{BlockCache, CacheError};
use crate::meta::{blocks, inodes};

/// Largest file size: 2^53 bytes keeps every block number and offset exact everywhere.
pub const MAX_FILE_SIZE: u64 = 1 << 53;

fn cache_err(e: CacheError) -> FsError {
    log::warn!("block cache: {e}");
    FsError::new(e.errno())
}

impl Filesystem {
    fn data_cache(&self) -> FsResult<&BlockCache> {
        self.cache().map(|c| c.as_ref()).ok_or(FsError::new(libc::EIO))
    }

    /// Size of a regular file that may be written; EPERM if locked.
    fn writable_file(&self, id: i64) -> FsResult<u64> {
        self.query(|c| {
            let row = load_inode(c, id)?;
            if row.locked {
                return err(libc::EPERM);
            }
            match row.fmt() {
                libc::S_IFREG => Ok(row.size()),
                libc::S_IFDIR => err(libc::EISDIR),
                _ => err(libc::EINVAL),
            }
        })
    }

    /// open(2) of an existing inode; `write` if it may change the file (EPERM if locked).
    pub fn open_file(&self, ino: u64, write: bool) -> FsResult<()> {
        let id = ino_id(ino)?;
        self.query(|c| {
            let row = load_inode(c, id)?;
            if write && row.locked {
                return err(libc::EPERM);
            }
            Ok(())
        })
    }

    /// Split `[offset, offset + len)` at block boundaries: `(blockno, offset in block,
    /// length, position in the request)`.
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, u32, u32, usize)> + '_ {
        let bs = self.block_size();
        let end = offset + len;
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let blockno = pos / bs;
            let in_block = pos % bs;
            let n = (bs - in_block).min(end - pos);
            let piece = (blockno, in_block as u32, n as u32, (pos - offset) as usize);
            pos += n;
            Some(piece)
        })
    }

    /// Read up to `size` bytes at `offset`; fewer only at the end of the file.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let id = ino_id(ino)?;
        let file_size = self.query(|c| {
            let row = load_inode(c, id)?;
            if row.is_dir() {
                return err(libc::EISDIR);
            }
            Ok(row.size())
        })?;
        if offset >= file_size {
            return Ok(Vec::new());
        }
        let len = u64::from(size).min(file_size - offset);
        let cache = self.data_cache()?;
        let mut pieces = self.pieces(offset, len).peekable();
        if let Some(&(blockno, in_block, n, _)) = pieces.peek()
            && u64::from(n) == len
        {
            // Within one block (most reads): the block's bytes are the answer, without
            // zeroing a buffer and copying them into it.
            let mut data = cache.read(ino, blockno, in_block, n).map_err(cache_err)?;
            data.resize(len as usize, 0);
            return Ok(data);
        }
        let mut out = vec![0u8; len as usize];
        for (blockno, in_block, n, at) in pieces {
            let data = cache.read(ino, blockno, in_block, n).map_err(cache_err)?;
            // Shorter than asked: the rest of the range is a hole (already zeros).
            out[at..at + data.len()].copy_from_slice(&data);
        }
        Ok(out)
    }

    /// Write `data` at `offset`. Returns once the data is in the local cache.
    pub fn write(&self, ctx: &Ctx, ino: u64, offset: u64, data: &[u8]) -> FsResult<usize> {
        let id = ino_id(ino)?;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::new(libc::EFBIG))?;
        let size = self.writable_file(id)?;
        let cache = self.data_cache()?;
        for (blockno, in_block, n, at) in self.pieces(offset, data.len() as u64) {
            let piece = &data[at..at + n as usize];
            if blockno * self.block_size() >= size {
                cache.write_past_end(ino, blockno, in_block, piece)
            } else {
                cache.write(ino, blockno, in_block, piece)
            }
            .map_err(cache_err)?;
        }
        self.grow_and_touch(ctx, id, end)?;
        Ok(data.len())
    }

    /// After data changed: see [`written`].
    fn grow_and_touch(&self, ctx: &Ctx, id: i64, end: u64) -> FsResult<()> {
        self.transact(|op| written(op, ctx, id, end))
    }

    /// fsync/fdatasync: the file's data and all metadata durable on local disk.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        if let Some(cache) = self.cache() {
            cache.flush_inode(ino).map_err(cache_err)?;
        }
        self.sync_metadata().map_err(|e| {
            log::error!("syncing the metadata database: {e}");
            FsError::new(libc::EIO)
        })
    }

    /// Modes: 0 (extend the size), `FALLOC_FL_KEEP_SIZE` (nothing to reserve in an object
    /// store), `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE` (the range reads as zeros).
    pub fn fallocate(&self, ctx: &Ctx, ino: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        let id = ino_id(ino)?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::new(libc::EFBIG))?;
        let size = self.writable_file(id)?;
        match mode {
            0 => {
                if end > size {
                    self.grow_and_touch(ctx, id, end)?;
                }
                Ok(())
            }
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            m if m == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE => {
                self.punch_hole(ino, id, offset, end.min(size), size)
            }
            _ => err(libc::EOPNOTSUPP),
        }
    }

    /// Make `[offset, end)` of a file of `size` bytes read as zeros. Blocks the range
    /// covers up to their end (or the end of the file) are released, as a truncate
    /// releases them: a hole stores nothing, and the work does not grow with the range.
    /// Only the partial blocks at its ends are zeroed through the cache.
    fn punch_hole(&self, ino: u64, id: i64, offset: u64, end: u64, size: u64) -> FsResult<()> {
        if offset >= end {
            return Ok(());
        }
        let bs = self.block_size();
        let cache = self.data_cache()?;
        // A block is wholly inside when the range covers it up to its end, or up to the
        // end of the file for the last block.
        let first_whole = offset.div_ceil(bs);
        let after_whole = if end == size { end.div_ceil(bs) } else { end / bs };
        let zero = |from: u64, to: u64| -> FsResult<()> {
            let zeros = vec![0u8; (to - from) as usize];
            cache
                .write(ino, from / bs, (from % bs) as u32, &zeros)
                .map_err(cache_err)
        };
        let touch = |op: &mut super::Op<'_>| -> FsResult<()> { Ok(inodes::touch(&op.tx, id, op.now)?) };
        if first_whole >= after_whole {
            // Within one block, or across one boundary without a whole block between.
            for (blockno, in_block, n, _) in self.pieces(offset, end - offset) {
                let from = blockno * bs + u64::from(in_block);
                zero(from, from + u64::from(n))?;
            }
            return self.transact(touch);
        }
        if offset < first_whole * bs {
            zero(offset, first_whole * bs)?;
        }
        if end > after_whole * bs {
            zero(after_whole * bs, end)?;
        }
        let (from_bno, to_bno) = (first_whole, after_whole - 1);
        // The cached copies are dropped once this commits (the cache's contract).
        cache.release_range(ino, from_bno, to_bno, || {
            self.transact(|op| {
                let released = blocks::release_block_range(&op.tx, id, from_bno as i64, to_bno as i64)?;
                op.deleted_objects.extend(released.objects);
                touch(op)
            })
        })
    }

    /// SEEK_DATA / SEEK_HOLE (the kernel handles the other whences). The whole file is
    /// reported as data, which POSIX allows.
    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> FsResult<i64> {
        let id = ino_id(ino)?;
        let size = self.query(|c| Ok(load_inode(c, id)?.size))?;
        if offset < 0 {
            return err(libc::EINVAL);
        }
        match whence {
            libc::SEEK_DATA if offset < size => Ok(offset),
            libc::SEEK_HOLE if offset < size => Ok(size),
            libc::SEEK_DATA | libc::SEEK_HOLE => err(libc::ENXIO),
            _ => err(libc::EINVAL),
        }
    }

    /// Copy `len` bytes between files. Whole blocks at the same offset within a block
    /// on both sides, whose source is in the store, are shared: the destination's row
    /// points at the same block and its refcount goes up, so no data is read, written
    /// or uploaded (a reflink). Other pieces (partial blocks, blocks still dirty in the
    /// cache) are copied through the cache, and stored once by the upload's dedup.
    pub fn copy_file_range(
        &self,
        ctx: &Ctx,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
    ) -> FsResult<usize> {
        let (id_in, id_out) = (ino_id(ino_in)?, ino_id(ino_out)?);
        let src_size = self.query(|c| {
            let row = load_inode(c, id_in)?;
            if row.is_dir() {
                return err(libc::EISDIR);
            }
            Ok(row.size())
        })?;
        self.writable_file(id_out)?;
        let len = len.min(src_size.saturating_sub(off_in)).min(u32::MAX as u64 / 2);
        off_out
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::new(libc::EFBIG))?;
        let bs = self.block_size();
        let cache = self.data_cache()?;
        // Ranges in one file may overlap: copy them, so no block is shared with itself
        // while being replaced.
        let same_file = id_in == id_out;
        let mut done = 0u64;
        while done < len {
            let (from, to) = (off_in + done, off_out + done);
            let n = (bs - to % bs).min(len - done);
            let whole = n == bs && from % bs == 0;
            if whole && !same_file && !cache.is_dirty(ino_in, from / bs) {
                self.share_block(ctx, id_in, from / bs, id_out, to / bs, to + n)?;
                done += n;
                continue;
            }
            let data = self.read(ino_in, from, n as u32)?;
            if data.is_empty() {
                break;
            }
            self.write(ctx, ino_out, to, &data)?;
            done += data.len() as u64;
        }
        Ok(done as usize)
    }

    /// Make block `bno_out` of `id_out` the stored block `bno_in` of `id_in` (a hole if
    /// that is one), and the file at least `end` bytes long.
    fn share_block(&self, ctx: &Ctx, id_in: i64, bno_in: u64, id_out: i64, bno_out: u64, end: u64) -> FsResult<()> {
        let cache = self.data_cache()?;
        // The destination's cached copy is dropped once this commits (the cache's
        // contract for releases).
        cache.release_range(id_out as u64, bno_out, bno_out, || {
            self.transact(|op| {
                let released = blocks::release_block_range(&op.tx, id_out, bno_out as i64, bno_out as i64)?;
                op.deleted_objects.extend(released.objects);
                if let Some(block) = blocks::block_of(&op.tx, id_in, bno_in as i64)? {
                    // The destination was released above: nothing more is freed.
                    blocks::link_block(&op.tx, id_out, bno_out as i64, block)?;
                }
                written(op, ctx, id_out, end)
            })
        })
    }
}

/// In the transaction `op`, after data of `id` changed: size at least `end`, new
/// mtime/ctime, and (as ext4 does) the set-user-ID bit, and the set-group-ID bit of a
/// group-executable file, cleared when an unprivileged process writes.
fn written(op: &mut super::Op<'_>, ctx: &Ctx, id: i64, end: u64) -> FsResult<()> {
    let kill = if ctx.uid == 0 { 0 } else { libc::S_ISUID };
    inodes::data_written(&op.tx, id, end, op.now, kill)?;
    super::xattr::kill_capability(op, id)
}
