//! The lifecycle of metadata versions: which version a tool starts from ([`state`],
//! [`decide_start`]), who may write ([`lock`], the single-writer lock), and how a new
//! version is published and old ones expire ([`publish`]).
//!
//! A version is the DB's chunks (`s3fs_metadata_*`, see [`super::chunks`]) plus the
//! superblock (`s3fs_params_<seq>`) naming their size and digest. Mount, fsck and
//! `s3fsadm` all move a filesystem from version to version through this module, so the
//! ordering rules (chunks before superblock, local superblock before the store's) hold
//! in one place.

pub mod lock;
pub mod retention;
pub mod state;

use std::path::Path;

use self::state::{LocalFiles, Start};
use super::chunks::{self, ChunkHashes};
use crate::exit::{Error, ExitCode};
use crate::fs_store::{FsStore, names};
use crate::params::{Params, unix_now};
use crate::runtime::block_on;

/// A metadata version uploaded and made current.
#[derive(Debug)]
pub struct Published {
    /// Its superblock, as written locally and to the store.
    pub params: Params,
    /// Its chunk hashes (the base of the next incremental upload).
    pub hashes: ChunkHashes,
    pub chunks_sent: u64,
    pub chunks_total: u64,
}

/// Publish the SQLite file `db` as metadata version `next.seq`: upload its chunks (only
/// those whose hash differs from `previous`), then write `next`, with the DB's size,
/// digest and the time, first locally, then to the store; save the chunk hashes. The
/// caller then expires the versions the retention policy drops ([`expire_old`]): that
/// takes two more round trips, which a waiting `s3fsctrl sync` need not wait for.
///
/// Local first: if the store write fails, the local copy is "newer", which makes the
/// next mount insist on fsck instead of silently using older metadata.
pub fn publish(
    store: &FsStore,
    files: &LocalFiles,
    db: &Path,
    mut next: Params,
    previous: &ChunkHashes,
    parallel: usize,
) -> Result<Published, Error> {
    let up = block_on(chunks::upload_version(
        store,
        db,
        next.seq,
        next.metadata_block_size,
        previous,
        parallel,
    ))?;
    next.db_size = up.digest.size;
    next.db_sha256 = up.digest.sha256;
    next.last_modified = unix_now();
    files.write_params(&next)?;
    block_on(store.write_params(&next))?;
    chunks::remember_version(store, &next);
    up.hashes.save(&files.chunks)?;
    Ok(Published {
        params: next,
        hashes: up.hashes,
        chunks_sent: up.chunks_sent,
        chunks_total: up.chunks_total,
    })
}

/// After [`publish`]: delete the metadata versions `policy` does not keep. A failure is
/// only logged; the next publish expires them.
pub fn expire_old(store: &FsStore, policy: &crate::params::Retention) {
    if let Err(e) = block_on(retention::expire(store, policy)) {
        log::warn!("cannot expire old metadata versions: {e}");
    }
}

/// Before the DB behind `db` is snapshotted as version `published + 1`: the objects
/// released since version `published` was snapshotted are named by no later version
/// (stamped so), then the released objects no retained version names any more are
/// deleted from the store ([`retention::collect_released`]; a store failure there is
/// only logged, and the next publish retries).
pub fn before_publish(
    store: &FsStore,
    db: &std::sync::Mutex<rusqlite::Connection>,
    published: u64,
    policy: &crate::params::Retention,
) -> Result<(), Error> {
    crate::meta::blocks::stamp_released(&db.lock().unwrap_or_else(|e| e.into_inner()), published)
        .map_err(crate::exit::db_err("recording released objects"))?;
    match retention::collect_released(store, db, policy, false) {
        Ok(c) if c.objects > 0 => {
            log::info!("deleted {} objects that no retained metadata version needs", c.objects)
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot delete data only expired metadata versions needed (will retry): {e}"),
    }
    Ok(())
}

/// Whether the filesystem may be opened here, and from which metadata (mount, verify,
/// shrink-db): a live holder of its lock on this machine fails with `live_holder` (any
/// cache directory), then the metadata state as [`state::decide`] says; a lock left by a
/// dead process here (killed between marking the filesystem clean and giving the lock
/// up) asks for fsck, which releases it, and a holder on another host is refused (31).
pub fn decide_start(fs: &FsStore, remote: &Params, files: &LocalFiles, live_holder: ExitCode) -> Result<Start, Error> {
    let holder = block_on(lock::read_lock(fs))?.filter(|h| h.fs_uuid == remote.uuid);
    let here = holder.as_ref().filter(|h| h.host == lock::hostname());
    if let Some(h) = here
        && crate::process::is_running(h.pid)
    {
        return Err(Error::new(
            live_holder,
            format!("the filesystem is in use on this machine by {}", h.describe()),
        ));
    }
    let local = files.read_params();
    let start = state::decide(remote, local.as_ref())?;
    let newest = block_on(chunks::newest_listed_version(fs))?;
    state::check_store(remote, local.as_ref(), &files.params, newest)?;
    match (&holder, here) {
        (_, Some(h)) => Err(Error::new(
            ExitCode::NeedsFsck,
            format!(
                "{} stopped without releasing the filesystem's lock; run fsck.s3fs on this machine first",
                h.describe()
            ),
        )),
        (Some(h), None) => Err(lock::held_elsewhere(h)),
        (None, None) => Ok(start),
    }
}

/// Highest seq of any metadata chunk object in the store (an interrupted upload can
/// leave chunks newer than every superblock). A new version must be above it.
pub fn newest_chunk_seq(store: &FsStore) -> Result<u64, Error> {
    let listed = block_on(crate::store::list_all(store.store().as_ref(), names::META_PREFIX))?;
    Ok(listed
        .iter()
        .filter_map(|o| names::parse_meta_chunk(&o.key).map(|(_, seq)| seq))
        .max()
        .unwrap_or(0))
}
