//! s3fsadm restore-metadata, download-metadata and shrink-db: the metadata versions kept
//! in the store (`s3fs_params_<seq>` with their chunks, see [`crate::meta::chunks`]).
//!
//! - restore-metadata downloads a version into the cache directory and writes local
//!   params with a seq above everything in the store, marked `needs_fsck`: mount.s3fs
//!   then refuses (30) and fsck.s3fs takes the local copy, checks it and uploads it as
//!   the new current version. Nothing in the store changes until fsck runs.
//! - download-metadata writes a version to a file of the user's; nothing else changes.
//! - shrink-db takes the lock, VACUUMs the current metadata and uploads it as a new
//!   version, as fsck does after repairs.
//! - retention shows or changes the policy in the store's superblock; release-versions
//!   takes the lock, expires every version but the current one, deletes the data only
//!   they needed and uploads the result as a new version.

use std::io::Write;
use std::path::Path;

use crate::cli::AdmArgs;
use crate::config::{self, SecretSource};
use crate::exit::{Error, ExitCode};
use crate::fs_store::{self, Connection, FsStore, Opened};
use crate::meta::chunks::{self, ChunkHashes};
use crate::meta::versions::lock;
use crate::meta::versions::state::{LocalFiles, Start, retire_local_cache};
use crate::meta::versions::{decide_start, newest_chunk_seq, publish, retention};
use crate::params::{Params, unix_now};
use crate::runtime::block_on;

fn write_err(e: std::io::Error) -> Error {
    Error::new(ExitCode::Failure, format!("cannot write to standard output: {e}"))
}

fn open(conn: &Connection, secrets: &mut dyn SecretSource) -> Result<Opened, Error> {
    let compression = config::compression(None, conn.auth.compress.as_deref())?;
    block_on(fs_store::open_filesystem(conn, compression, secrets))
}

/// The filesystem's local files; the cache directory is created if missing.
fn local_files(args: &AdmArgs, conn: &Connection) -> Result<LocalFiles, Error> {
    let cachedir = config::cache_dir(args.store.cachedir.as_deref(), &conn.auth)?;
    Ok(LocalFiles::new(&cachedir, &conn.url))
}

fn parallel(args: &AdmArgs, conn: &Connection) -> usize {
    config::max_connections(args.store.max_connections, &conn.auth)
}

/// The retained versions, newest first; an error if there are none.
fn retained(fs: &FsStore) -> Result<Vec<Params>, Error> {
    let versions = block_on(chunks::versions(fs))?;
    if versions.is_empty() {
        return Err(Error::new(
            ExitCode::Failure,
            "the store holds no metadata versions (s3fs_params_<seq> objects)",
        ));
    }
    Ok(versions)
}

fn describe(v: &Params) -> String {
    format!(
        "seq {}, {}, {} bytes",
        v.seq,
        lock::format_time(v.last_modified),
        v.db_size
    )
}

fn print_versions(out: &mut dyn Write, versions: &[Params], current: u64) -> Result<(), Error> {
    writeln!(
        out,
        "{:>5}  {:>12}  {:<23}  {:>14}",
        "index", "seq", "date", "database size"
    )
    .map_err(write_err)?;
    for (i, v) in versions.iter().enumerate() {
        let mark = match (v.seq == current, v.is_mounted) {
            (true, _) => "  (current)",
            (false, true) => "  (while mounted)",
            (false, false) => "",
        };
        writeln!(
            out,
            "{i:>5}  {:>12}  {:<23}  {:>8} bytes{mark}",
            v.seq,
            lock::format_time(v.last_modified),
            v.db_size
        )
        .map_err(write_err)?;
    }
    if !versions.iter().any(|v| v.seq == current) {
        // Its two copies are written at once, and only the current one landed.
        writeln!(
            out,
            "The current metadata (seq {current}) is not among them: its version was not stored (interrupted), so it cannot be restored; the next metadata upload stores a new one."
        )
        .map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

fn by_seq(versions: &[Params], seq: u64) -> Result<&Params, Error> {
    versions.iter().find(|v| v.seq == seq).ok_or_else(|| {
        Error::new(
            ExitCode::BadArgument,
            format!(
                "no retained metadata version has seq {seq} (retained: {})",
                versions
                    .iter()
                    .map(|v| v.seq.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// Refuse while a live process holds the filesystem's lock: here (40) or elsewhere (31).
/// A lock left by a dead process on this machine (a crash) does not hold a restore up:
/// the fsck that must follow takes it over.
fn refuse_if_locked(fs: &FsStore, remote: &Params) -> Result<(), Error> {
    let Some(h) = block_on(lock::read_lock(fs))?.filter(|h| h.fs_uuid == remote.uuid) else {
        return Ok(());
    };
    if h.host != lock::hostname() {
        return Err(Error::new(
            ExitCode::MountedElsewhere,
            format!(
                "the filesystem is mounted by {}, or that host stopped without unmounting: unmount it there, or run fsck.s3fs there first",
                h.describe()
            ),
        ));
    }
    if h.pid != std::process::id() && crate::process::is_running(h.pid) {
        return Err(Error::new(
            ExitCode::MountedHere,
            format!("the filesystem is in use on this machine by {}", h.describe()),
        ));
    }
    Ok(())
}

/// s3fsadm restore-metadata.
pub fn restore(
    args: &AdmArgs,
    conn: &Connection,
    seq: Option<u64>,
    secrets: &mut dyn SecretSource,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let opened = open(conn, secrets)?;
    let remote = &opened.params;
    refuse_if_locked(&opened.fs, remote)?;
    let files = local_files(args, conn)?;
    let versions = retained(&opened.fs)?;
    print_versions(out, &versions, remote.seq)?;
    let chosen = match seq {
        Some(seq) => by_seq(&versions, seq)?,
        None => {
            let answer = secrets
                .ask_visible("Enter the index of the version to restore: ")
                .map_err(|e| match e.code {
                    ExitCode::BatchNeedsInput => Error::new(
                        ExitCode::BatchNeedsInput,
                        "which version to restore is needed: pass --seq N, or give an index on standard input",
                    ),
                    _ => e,
                })?;
            let answer = answer.trim();
            answer
                .parse::<usize>()
                .ok()
                .and_then(|i| versions.get(i))
                .ok_or_else(|| {
                    Error::new(
                        ExitCode::BadArgument,
                        format!("{answer:?} is not an index of the list (0 to {})", versions.len() - 1),
                    )
                })?
        }
    };

    // Download beside the local DB first: a damaged version changes nothing here.
    let fetched = files.db.with_extension("db.restore");
    let checked = block_on(chunks::download(&opened.fs, chosen, &fetched, parallel(args, conn)))
        .and_then(|()| Ok(crate::meta::db::check_integrity(&fetched)?));
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&fetched);
        return Err(Error::new(
            ExitCode::Failure,
            format!(
                "metadata version {} cannot be restored: {}; choose another",
                chosen.seq, e.message
            ),
        ));
    }
    keep_unsynced_local_db(&files, remote)?;
    retire_local_cache(&files)?;
    std::fs::rename(&fetched, &files.db).map_err(|e| {
        Error::new(
            ExitCode::CacheDirInaccessible,
            format!("cannot move the restored metadata to {}: {e}", files.db.display()),
        )
    })?;

    // Above every seq in the store, so that mount.s3fs sees "local newer than the store"
    // and fsck.s3fs picks the local copy.
    let newest = remote.seq.max(versions[0].seq).max(newest_chunk_seq(&opened.fs)?);
    let mut params = chosen.clone();
    params.seq = newest + 1;
    // The policy is the store's current one, not the restored version's.
    params.retention = remote.retention.clone();
    params.is_mounted = false;
    params.needs_fsck = true;
    params.last_modified = unix_now();
    files.write_params(&params)?;
    writeln!(
        out,
        "Restored metadata version {} into the cache directory. Now run fsck.s3fs on this machine with the same cache directory: it checks this version and uploads it as the current one (mount.s3fs refuses until then). The store keeps the data of every retained version, so every file comes back as it was; the versions after it stay retained, and restorable, as the retention policy says.",
        describe(chosen)
    )
    .map_err(write_err)
}

/// A local DB that may hold changes the store lacks (a crash, an interrupted upload or
/// fsck) is kept beside the cache as `<stem>.db.bak-<time>` (with its WAL) rather than
/// overwritten.
fn keep_unsynced_local_db(files: &LocalFiles, remote: &Params) -> Result<(), Error> {
    let unsynced = files
        .read_params()
        .filter(|l| l.uuid == remote.uuid)
        .is_some_and(|l| l.is_mounted || l.needs_fsck || l.seq > remote.seq);
    if !unsynced || !files.db.exists() {
        return Ok(());
    }
    let aside = files.db.with_extension(format!("db.bak-{}", unix_now()));
    let mv = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| {
            Error::new(
                ExitCode::CacheDirInaccessible,
                format!("cannot move {} aside: {e}", from.display()),
            )
        })
    };
    mv(&files.db, &aside)?;
    let wal = files.db.with_extension("db-wal");
    if wal.exists() {
        mv(&wal, Path::new(&format!("{}-wal", aside.display())))?;
    }
    log::warn!(
        "the local metadata may hold changes that are not in the store; it was kept as {} (delete it when you no longer need it)",
        aside.display()
    );
    Ok(())
}

/// s3fsadm download-metadata.
pub fn download(
    args: &AdmArgs,
    conn: &Connection,
    seq: Option<u64>,
    output: &Path,
    secrets: &mut dyn SecretSource,
    out: &mut dyn Write,
) -> Result<(), Error> {
    if output.symlink_metadata().is_ok() {
        return Err(Error::new(
            ExitCode::Failure,
            format!("{} exists; not overwritten", output.display()),
        ));
    }
    let opened = open(conn, secrets)?;
    let versions = retained(&opened.fs)?;
    let chosen = match seq {
        Some(seq) => by_seq(&versions, seq)?,
        None => &versions[0],
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = output.with_file_name(format!(".{name}.s3fs-{}.part", std::process::id()));
    let result = (|| {
        block_on(chunks::download(&opened.fs, chosen, &tmp, parallel(args, conn)))?;
        // create_new: a file created meanwhile is not overwritten either.
        let copy = || -> std::io::Result<()> {
            let mut dst = std::fs::OpenOptions::new().write(true).create_new(true).open(output)?;
            std::io::copy(&mut std::fs::File::open(&tmp)?, &mut dst)?;
            dst.sync_all()
        };
        copy().map_err(|e| Error::new(ExitCode::Failure, format!("writing {}: {e}", output.display())))
    })();
    let _ = std::fs::remove_file(&tmp);
    result?;
    writeln!(
        out,
        "Saved metadata version {} to {}.",
        describe(chosen),
        output.display()
    )
    .map_err(write_err)
}

/// The options of `s3fsadm retention`: `None` leaves a value as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionChange {
    pub keep_last: Option<u32>,
    pub keep_within_secs: Option<u64>,
    pub keep_daily: Option<u32>,
    pub min_age_secs: Option<u64>,
}

/// s3fsadm retention: print the policy, changed first if any option was given. The
/// current superblock (and its version copy) is rewritten with the same seq: mount,
/// fsck and restore take the policy from the store's superblock, not a local copy.
pub fn retention(
    conn: &Connection,
    change: &RetentionChange,
    secrets: &mut dyn SecretSource,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let opened = open(conn, secrets)?;
    let mut params = opened.params.clone();
    let r = &mut params.retention;
    let before = r.clone();
    r.keep_last = change.keep_last.unwrap_or(r.keep_last);
    r.keep_within_secs = change.keep_within_secs.unwrap_or(r.keep_within_secs);
    r.keep_daily = change.keep_daily.unwrap_or(r.keep_daily);
    r.min_age_secs = change.min_age_secs.unwrap_or(r.min_age_secs);
    r.validate().map_err(|e| Error::new(ExitCode::BadArgument, e))?;
    if *r != before {
        refuse_if_locked(&opened.fs, &opened.params)?;
        block_on(opened.fs.write_params(&params))?;
        writeln!(out, "Retention changed; it applies from the next metadata upload.").map_err(write_err)?;
    }
    writeln!(out, "Retention: {}.", params.retention.describe()).map_err(write_err)
}

/// For a clean filesystem that is not mounted (shrink-db, release-versions): take the
/// lock, make the local DB the store's current version, let `change` work on it, then
/// publish it as a new version. The lock is released unless the local copy moved ahead
/// of the store (then the next mount must run fsck, which takes the lock over). Returns
/// what `change` returned and the version published.
fn change_current<T>(
    args: &AdmArgs,
    conn: &Connection,
    opened: &Opened,
    files: &LocalFiles,
    start: Start,
    change: impl FnOnce(&FsStore, &LocalFiles) -> Result<T, Error>,
) -> Result<(T, Params), Error> {
    let (fs, remote) = (&opened.fs, &opened.params);
    block_on(lock::acquire(fs, &remote.uuid))?;
    let result = (|| {
        let parallel = parallel(args, conn);
        if start == Start::Download || !files.db.exists() {
            retire_local_cache(files)?;
            block_on(chunks::download(fs, remote, &files.db, parallel))?;
        }
        let value = change(fs, files)?;
        let mut next = remote.clone();
        next.seq = remote.seq.max(newest_chunk_seq(fs)?) + 1;
        next.is_mounted = false;
        let params = publish(fs, files, &files.db, next, &ChunkHashes::default(), parallel)?.params;
        Ok((value, params))
    })();
    let ahead = files.read_params().is_some_and(|l| l.seq > remote.seq);
    if result.is_ok() || !ahead {
        block_on(lock::release(fs))?;
    }
    result
}

/// s3fsadm release-versions.
pub fn release_versions(
    args: &AdmArgs,
    conn: &Connection,
    secrets: &mut dyn SecretSource,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let opened = open(conn, secrets)?;
    let files = local_files(args, conn)?;
    let start = decide_start(&opened.fs, &opened.params, &files, ExitCode::MountedHere)?;
    let answer = secrets.ask(&format!(
        "Expire every metadata version of {} but the current one, and delete the data only they need? Type \"yes\" to continue: ",
        conn.url
    ))?;
    if answer.trim() != "yes" {
        return Err(Error::new(
            ExitCode::Aborted,
            "nothing released: the answer was not \"yes\"",
        ));
    }
    let seq = opened.params.seq;
    let ((expired, collected), params) = change_current(args, conn, &opened, &files, start, |fs, files| {
        let only_current = crate::params::Retention {
            keep_last: 1,
            keep_within_secs: 0,
            keep_daily: 0,
            min_age_secs: 0,
        };
        let expired = block_on(retention::expire(fs, &only_current))?;
        let db = std::sync::Mutex::new(crate::meta::db::open_exclusive(&files.db)?);
        crate::meta::blocks::stamp_released(&db.lock().unwrap_or_else(|e| e.into_inner()), seq)
            .map_err(crate::exit::db_err("recording released objects"))?;
        let collected = retention::collect_released(fs, &db, &only_current, true)?;
        Ok((expired, collected))
    })?;
    writeln!(
        out,
        "Expired {} metadata versions and deleted {} objects only they needed; the current version is {}.",
        expired.versions, collected.objects, params.seq
    )
    .map_err(write_err)
}

/// s3fsadm shrink-db.
pub fn shrink(
    args: &AdmArgs,
    conn: &Connection,
    secrets: &mut dyn SecretSource,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let opened = open(conn, secrets)?;
    let files = local_files(args, conn)?;
    let start = decide_start(&opened.fs, &opened.params, &files, ExitCode::MountedHere)?;
    let ((before, after), params) = change_current(args, conn, &opened, &files, start, |_, files| {
        let db_err = crate::exit::db_err("shrinking the metadata");
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let db = crate::meta::db::open_exclusive(&files.db)?;
        db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").map_err(db_err)?;
        let before = size(&files.db);
        db.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(db_err)?;
        db.close().map_err(|(_, e)| db_err(e))?;
        Ok((before, size(&files.db)))
    })?;
    writeln!(
        out,
        "Metadata database: {before} bytes before, {after} bytes after; uploaded as version {}.",
        params.seq
    )
    .map_err(write_err)
}
