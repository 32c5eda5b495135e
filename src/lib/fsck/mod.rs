//! fsck.s3fs: bring a filesystem that is not mounted back to a consistent, clean state.
//!
//! 1. Refuse if it is mounted here (40) or by a live process on this machine.
//! 2. Pick the metadata: the local DB when it is at least as new as the store's (after a
//!    crash here it is the only copy of the newest changes), else the store's newest
//!    intact version. If the store says the filesystem is mounted elsewhere, using its
//!    metadata loses what that host had not uploaded: only with `--force-remote` or a
//!    typed confirmation (exit 41 in `--batch` mode).
//! 3. Skip a filesystem that is marked clean and was checked in the last 31 days.
//! 4. Take the lock, mark the filesystem in check (`needs_fsck`, current params only, so
//!    an interrupted fsck leaves no half-made metadata version and the next run starts
//!    over).
//! 5. Crash recovery: open the DB (purging inodes left without entries), upload every
//!    `.dirty` cache block with the normal pipeline ([`crate::cache::recover_dirty`]).
//! 6. DB integrity check, every consistency check ([`checks`]), the store listing
//!    compared with the DB (streamed), verification of the retained metadata versions.
//! 7. Upload the metadata as a new version (in full after a crash or repairs), mark the
//!    filesystem clean, expire old versions, release the lock.
//!
//! Nothing is deleted from the store that a retained metadata version still references:
//! objects unknown to the current DB are kept when a retained version names them.

pub mod checks;
pub mod paths;

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rusqlite::Connection;

use crate::cache::{self, CacheConfig};
use crate::cli::FsckArgs;
use crate::config::{self, SecretSource};
use crate::exit::{Error, ExitCode, db_err};
use crate::fs::Filesystem;
use crate::fs_store::{self, ConnectOptions, FsStore, names};
use crate::meta::chunks::{self, ChunkHashes};
use crate::meta::versions::state::{LocalFiles, retire_local_cache};
use crate::meta::versions::{self, lock, newest_chunk_seq};
use crate::params::{Params, unix_now};
use crate::runtime::block_on;
use checks::Findings;

/// A filesystem checked this recently and marked clean is not checked again without
/// `--force` (S3QL's rule).
const RECHECK_AFTER_SECS: i64 = 31 * 86_400;
/// Retained metadata versions verified unless `--fast`.
const VERIFY_VERSIONS: usize = 5;
/// The sentence a user types to accept losing what another host had not uploaded.
pub const FORCE_REMOTE_PHRASE: &str = "continue, I know what I am doing";

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Checked, nothing wrong.
    Clean,
    /// Marked clean and checked recently: not checked again.
    Skipped,
    /// Errors were found and repaired (exit 128).
    Repaired,
    /// Some errors could not be repaired (exit 172).
    Uncorrectable,
}

/// Asks the user to accept a loss. Tests answer it; the tool reads standard input.
pub trait Confirm {
    /// Show `warning` and return whether the user typed `phrase`.
    fn confirm(&mut self, warning: &str, phrase: &str) -> Result<bool, Error>;
}

/// Standard input: one line.
pub struct StdinConfirm;

impl Confirm for StdinConfirm {
    fn confirm(&mut self, warning: &str, phrase: &str) -> Result<bool, Error> {
        let mut err = std::io::stderr();
        let _ = writeln!(err, "{warning}");
        let _ = write!(err, "Type \"{phrase}\" to go on: ");
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::new(ExitCode::Failure, format!("cannot read the answer: {e}")))?;
        Ok(line.trim_end_matches(['\r', '\n']) == phrase)
    }
}

/// The tool: run the check, log to `--log` (or `<cachedir>/fsck.log`) and stderr, and map
/// the outcome to S3QL's exit codes.
pub fn main(args: &FsckArgs, secrets: &mut dyn SecretSource) -> Result<(), Error> {
    match &args.log {
        None => args.logging.init(),
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::new(ExitCode::LogFile, format!("log file {}: {e}", path.display())))?;
            args.logging.init_to(Some(Box::new(Tee(file))));
        }
    }
    match run(args, secrets, &mut StdinConfirm)? {
        Outcome::Clean | Outcome::Skipped => Ok(()),
        Outcome::Repaired => Err(Error::new(ExitCode::ErrorsFound, "errors were found and repaired")),
        Outcome::Uncorrectable => Err(Error::new(
            ExitCode::UncorrectableFound,
            "errors were found and some could not be repaired (see above)",
        )),
    }
}

/// Log lines to a file and to standard error.
struct Tee(std::fs::File);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        self.0.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// One phase of the check: a progress bar on a terminal, one log line at its end.
struct Phase {
    name: String,
    started: Instant,
    bar: ProgressBar,
}

impl Phase {
    fn start(name: &str) -> Phase {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg:<28} {wide_bar} {pos}/{len} [{elapsed_precise}, ETA {eta}]")
                    .expect("valid template"),
            );
            bar.set_message(name.to_owned());
            bar
        } else {
            ProgressBar::hidden()
        };
        Phase {
            name: name.to_owned(),
            started: Instant::now(),
            bar,
        }
    }

    fn set(&self, done: u64, total: u64) {
        self.bar.set_length(total.max(done));
        self.bar.set_position(done);
    }

    fn finish(self, what: &str) {
        self.bar.finish_and_clear();
        log::info!("{}: {what} ({:.1} s)", self.name, self.started.elapsed().as_secs_f64());
    }
}

/// Check the filesystem at `args.storage_url`. See the module documentation.
pub fn run(args: &FsckArgs, secrets: &mut dyn SecretSource, confirm: &mut dyn Confirm) -> Result<Outcome, Error> {
    let Some(plan) = plan(args, secrets, confirm)? else {
        return Ok(Outcome::Skipped);
    };
    lock::take_over(&plan.store, &plan.remote.uuid)?;
    let mut findings = Findings::new();
    let params = prepare(&plan, &mut findings)?;
    check(&plan, args.fast, params.data_block_size, &mut findings)?;
    for f in &findings.items {
        log::warn!("{f}");
    }
    finish(&plan, args.keep_cache, params, &findings)?;
    Ok(if findings.uncorrectable {
        Outcome::Uncorrectable
    } else if !findings.is_clean() {
        Outcome::Repaired
    } else {
        Outcome::Clean
    })
}

/// What steps 1 to 3 decided: the store, the local files, which metadata to check and
/// why.
struct Plan {
    store: FsStore,
    files: LocalFiles,
    cachedir: std::path::PathBuf,
    parallel: usize,
    /// The store's current superblock.
    remote: Params,
    /// This machine's superblock of this filesystem, with its DB.
    local: Option<Params>,
    /// Check the local DB (else the store's newest version).
    use_local: bool,
    /// The local DB was left by a crash or an interrupted check here.
    crashed_here: bool,
    /// Why a check is needed (empty: a forced or periodic check).
    reasons: Vec<String>,
}

/// Steps 1 to 3: refuse a mounted filesystem, choose the metadata, and say whether a
/// check is needed (`None`: checked recently and clean).
fn plan(args: &FsckArgs, secrets: &mut dyn SecretSource, confirm: &mut dyn Confirm) -> Result<Option<Plan>, Error> {
    let opts = ConnectOptions {
        authfile: args.store.authfile.as_deref(),
        backend_options: args.store.backend_options.as_deref(),
    };
    let conn = fs_store::connect(&args.storage_url, &opts, secrets)?;
    crate::mount::mounts::refuse_if_mounted_here(&conn.url)?;
    let compression = config::compression(None, conn.auth.compress.as_deref())?;
    let opened = block_on(fs_store::open_filesystem(&conn, compression, secrets))?;
    let mut store = opened.fs.clone();
    let cachedir = config::cache_dir(args.store.cachedir.as_deref(), &conn.auth)?;
    std::fs::create_dir_all(&cachedir).map_err(|e| {
        Error::new(
            ExitCode::CacheDirInaccessible,
            format!("cache directory {}: {e}", cachedir.display()),
        )
    })?;
    let files = LocalFiles::new(&cachedir, &conn.url);
    let parallel = config::max_connections(args.store.max_connections, &conn.auth);
    let remote = opened.params.clone();
    // This machine's superblock of the URL, of whatever filesystem; `local` only if it
    // is this one's, with its DB.
    let local_any = files.read_params();
    let local = local_any.clone().filter(|l| l.uuid == remote.uuid && files.db.exists());

    let holder = block_on(lock::read_lock(&store))?.filter(|h| h.fs_uuid == remote.uuid);
    if let Some(h) = &holder
        && h.host == lock::hostname()
        && h.pid != std::process::id()
        && crate::process::is_running(h.pid)
    {
        return Err(Error::new(
            ExitCode::MountedHere,
            format!("the filesystem is in use on this machine by {}", h.describe()),
        ));
    }

    // Which metadata, and why a check is needed.
    let mut reasons: Vec<String> = Vec::new();
    let use_local = local.as_ref().is_some_and(|l| l.seq >= remote.seq);
    // Starting from the store's version of a rolled-back store would make the rollback
    // permanent; this machine's newer copy is the repair.
    let newest = if use_local {
        None
    } else {
        block_on(chunks::newest_listed_version(&store))?
    };
    crate::meta::versions::state::check_store(&remote, local_any.as_ref(), &files.params, newest)?;
    let mut crashed_here = false;
    if let Some(l) = local.as_ref().filter(|_| use_local) {
        if l.is_mounted {
            crashed_here = true;
            reasons.push("the filesystem was not unmounted cleanly on this machine".into());
        } else if l.needs_fsck {
            crashed_here = true;
            reasons.push(
                "the local metadata is marked as needing a check (a restored metadata version, or an interrupted check)"
                    .into(),
            );
        }
        if l.seq > remote.seq {
            reasons.push("the local metadata is newer than the store's".into());
        }
    } else {
        let elsewhere = holder.as_ref().filter(|h| h.host != lock::hostname());
        if remote.is_mounted || elsewhere.is_some() {
            let who = elsewhere.map_or_else(|| "another machine".to_owned(), |h| h.describe());
            let warning = format!(
                "The filesystem is marked as mounted by {who}. If it is still mounted there, or stopped \
                 without unmounting, using the metadata in the store loses every change that host had \
                 not uploaded: run fsck.s3fs on that host instead if you can."
            );
            if !args.force_remote {
                if args.batch {
                    return Err(Error::new(
                        ExitCode::BatchNeedsInput,
                        format!(
                            "the filesystem is marked as mounted by {who}: run fsck.s3fs there, or use --force-remote to accept losing what it had not uploaded"
                        ),
                    ));
                }
                if !confirm.confirm(&warning, FORCE_REMOTE_PHRASE)? {
                    return Err(Error::new(ExitCode::Aborted, "aborted: nothing was changed"));
                }
            }
            log::warn!("using the store's metadata although the filesystem is marked as mounted by {who}");
            reasons.push(format!("the filesystem was in use by {who}"));
        }
    }
    if remote.needs_fsck {
        reasons.push("the filesystem is marked as needing a check".into());
    }
    if reasons.is_empty() && !args.force && unix_now() - remote.last_fsck < RECHECK_AFTER_SECS {
        log::info!("the filesystem is marked clean and was checked recently: not checking (use --force)");
        release_stale_lock(&store, holder.as_ref())?;
        return Ok(None);
    }
    // What the check writes, it writes after `prepare` raised the revision.
    store.write_for_revision(crate::params::FS_REVISION);
    for r in &reasons {
        log::warn!("{r}");
    }

    Ok(Some(Plan {
        store,
        files,
        cachedir,
        parallel,
        remote,
        local,
        use_local,
        crashed_here,
        reasons,
    }))
}

/// Steps 4 and 5: the metadata to check in `files.db`, the filesystem marked in check,
/// and after a crash here the dirty cache blocks uploaded. Returns the superblock of
/// the check.
fn prepare(plan: &Plan, findings: &mut Findings) -> Result<Params, Error> {
    let Plan {
        store,
        files,
        parallel,
        remote,
        local,
        use_local,
        ..
    } = plan;
    let (parallel, use_local) = (*parallel, *use_local);
    // The metadata to check, in files.db.
    let mut params = if use_local {
        local.clone().expect("use_local implies a local copy")
    } else {
        retire_local_cache(files)?;
        download_newest(store, remote, files, parallel, findings)?
    };
    check_local_db(&files.db)?;

    // In check from now on: an interruption leaves needs_fsck behind. Only the current
    // superblock is written, so no metadata version exists that lacks its chunks.
    let newest_chunk = newest_chunk_seq(store)?;
    params.seq = params.seq.max(remote.seq).max(newest_chunk) + 1;
    params.is_mounted = true;
    params.needs_fsck = true;
    params.upgrade();
    files.write_params(&params)?;
    block_on(store.write_current_params(&params))?;

    if use_local {
        recover_cache(files, &params, store, parallel, findings)?;
    }
    Ok(params)
}

/// Step 6: every check of the DB, the store's listing compared with it, what is
/// unreferenced deleted, the retained versions verified (unless `fast`).
fn check(plan: &Plan, fast: bool, data_block_size: u64, findings: &mut Findings) -> Result<(), Error> {
    let Plan {
        store,
        files,
        cachedir,
        parallel,
        ..
    } = plan;
    let parallel = *parallel;
    let db = crate::meta::db::open_exclusive(&files.db)?;
    {
        let mut phase: Option<Phase> = None;
        let mut progress = |name: &str, done: u64, total: u64| {
            if name == "done" {
                return;
            }
            if phase.as_ref().is_none_or(|p| p.name != name) {
                if let Some(p) = phase.take() {
                    p.finish("done");
                }
                phase = Some(Phase::start(name));
            }
            if let Some(p) = &phase {
                p.set(done, total);
            }
        };
        checks::check_db(&db, data_block_size, &mut progress, findings).map_err(db_err("checking the metadata"))?;
        if let Some(p) = phase.take() {
            p.finish("done");
        }
    }
    compare_with_store(&db, store, cachedir, parallel, findings)?;
    delete_objects(store, &findings.objects_to_delete)?;
    if !fast {
        verify_versions(store, files, parallel, findings)?;
    }
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(db_err("checkpointing the metadata"))?;
    drop(db);
    Ok(())
}

/// Step 7: the checked metadata published as a new version, marked clean (unless
/// something could not be repaired), the cache cleaned, the lock released.
fn finish(plan: &Plan, keep_cache: bool, mut params: Params, findings: &Findings) -> Result<(), Error> {
    let Plan {
        store,
        files,
        parallel,
        use_local,
        crashed_here,
        reasons,
        ..
    } = plan;
    // A new version, in full when anything was wrong (older chunk objects may come from
    // an interrupted upload), incrementally otherwise.
    let full = *crashed_here || !reasons.is_empty() || !findings.is_clean() || !use_local;
    // The store's superblock says which versions to retain (s3fsadm retention changes
    // it there); data only expired versions needed goes before the upload.
    params.retention = plan.remote.retention.clone();
    let db = std::sync::Mutex::new(crate::meta::db::open_exclusive(&files.db)?);
    versions::before_publish(store, &db, params.seq, &params.retention)?;
    drop(db);
    let phase = Phase::start("uploading metadata");
    let previous = if full {
        ChunkHashes::default()
    } else {
        ChunkHashes::load(&files.chunks)
    };
    params.seq += 1;
    params.is_mounted = false;
    params.needs_fsck = findings.uncorrectable;
    params.last_fsck = unix_now();
    let published = versions::publish(store, files, &files.db, params, &previous, *parallel)?;
    versions::expire_old(store, &published.params.retention);
    phase.finish(&format!(
        "{} of {} chunks sent",
        published.chunks_sent, published.chunks_total
    ));
    if !keep_cache {
        remove_clean_cache_files(files);
    }
    block_on(lock::release(store))?;
    Ok(())
}

/// The local DB must be intact: it cannot be repaired here (exit 43).
fn check_local_db(db: &Path) -> Result<(), Error> {
    let phase = Phase::start("database integrity");
    crate::meta::db::check_integrity(db).map_err(|e| {
        Error::new(
            ExitCode::LocalDbCorrupt,
            format!(
                "the metadata database {} is corrupt ({}); restore a metadata version with s3fsadm restore-metadata",
                db.display(),
                e
            ),
        )
    })?;
    phase.finish("ok");
    Ok(())
}

/// A clean filesystem whose lock is still held by a dead process on this machine: the
/// unmount (or an fsck) was killed after the metadata was marked clean but before the
/// lock was given up. Nothing needs checking; only the lock must go, or every mount
/// would be refused.
fn release_stale_lock(store: &FsStore, holder: Option<&lock::LockInfo>) -> Result<(), Error> {
    if let Some(h) = holder.filter(|h| h.host == lock::hostname()) {
        log::warn!(
            "releasing the lock left by {}, which is no longer running",
            h.describe()
        );
        block_on(lock::release(store))?;
    }
    Ok(())
}

/// Download the store's current metadata; if it is damaged, the newest intact retained
/// version (reported: the changes after it are lost).
fn download_newest(
    store: &FsStore,
    remote: &Params,
    files: &LocalFiles,
    parallel: usize,
    findings: &mut Findings,
) -> Result<Params, Error> {
    let phase = Phase::start("downloading metadata");
    match block_on(chunks::download(store, remote, &files.db, parallel)) {
        Ok(()) => {
            phase.finish(&format!("version {}", remote.seq));
            return Ok(remote.clone());
        }
        Err(e) => log::warn!("the store's current metadata (version {}) is damaged: {e}", remote.seq),
    }
    for v in block_on(chunks::versions(store))? {
        if v.seq >= remote.seq {
            continue;
        }
        if block_on(chunks::download(store, &v, &files.db, parallel)).is_ok() {
            findings.add_repaired(
                "metadata",
                format!(
                    "metadata version {} was damaged; using version {} instead (later changes are lost)",
                    remote.seq, v.seq
                ),
            );
            phase.finish(&format!("version {}", v.seq));
            let mut p = v.clone();
            p.seq = remote.seq;
            return Ok(p);
        }
    }
    Err(Error::new(
        ExitCode::Uncorrectable,
        "no intact metadata version in the store; nothing can be recovered without a local copy",
    ))
}

/// After a crash here: purge inodes left without entries, then upload every dirty cache
/// block with the normal pipeline (dedup included) and commit it to the DB.
fn recover_cache(
    files: &LocalFiles,
    params: &Params,
    store: &FsStore,
    parallel: usize,
    findings: &mut Findings,
) -> Result<(), Error> {
    let phase = Phase::start("uploading dirty blocks");
    let fs = Filesystem::open(&files.db, params.data_block_size)?;
    let mut config = CacheConfig::new(files.cache.clone(), params.data_block_size);
    let (max_bytes, max_entries) = cache::auto_limits(&files.cache, params.data_block_size, parallel, None, None)?;
    config.max_bytes = max_bytes;
    config.max_entries = max_entries;
    config.max_connections = parallel;
    config.dirty_upload_delay = std::time::Duration::ZERO;
    let db: Arc<Mutex<Connection>> = fs.db();
    let report = cache::recover_dirty(config, db, files.db.clone(), store.clone())?;
    fs.sync_metadata()
        .map_err(|e| Error::new(ExitCode::LocalDbCorrupt, format!("syncing the metadata: {e}")))?;
    drop(fs);
    if report.uploaded_blocks > 0 {
        findings.add_repaired(
            "cache",
            format!(
                "{} blocks were dirty in the cache after the crash; uploaded",
                report.uploaded_blocks
            ),
        );
    }
    phase.finish(&format!(
        "{} dirty blocks uploaded, {} stale cache files dropped",
        report.uploaded_blocks, report.discarded_files
    ));
    Ok(())
}

/// Stream the store's listing of data objects into the DB and compare. Objects unknown
/// to the DB are deleted, except those a retained metadata version still names.
fn compare_with_store(
    db: &Connection,
    store: &FsStore,
    scratch: &Path,
    parallel: usize,
    findings: &mut Findings,
) -> Result<(), Error> {
    let phase = Phase::start("listing the store");
    checks::begin_listing(db).map_err(db_err("listing the store"))?;
    let prefix = "s3fs_data_";
    let mut listing = crate::store::Listing::new(prefix);
    let mut listed = 0u64;
    while let Some(page) = block_on(listing.next_page(store.store().as_ref()))? {
        let mut ids = Vec::with_capacity(page.len());
        for o in &page {
            match o.key.strip_prefix(prefix).and_then(|s| s.parse::<i64>().ok()) {
                Some(id) if id > 0 && !o.key.ends_with(".tmp") => ids.push((id, o.size)),
                _ => log::warn!("ignoring unexpected object {} in the store", o.key),
            }
        }
        checks::record_listed(db, &ids).map_err(db_err("listing the store"))?;
        listed += ids.len() as u64;
        phase.set(listed, listed);
    }
    let spurious = checks::compare_with_store(db, findings).map_err(db_err("comparing with the store"))?;
    phase.finish(&format!("{listed} data objects"));
    if spurious.is_empty() {
        return Ok(());
    }
    let needed = referenced_by_versions(store, scratch, &spurious, parallel)?;
    let mut delete = Vec::new();
    for id in spurious {
        match needed.iter().find(|(i, ..)| *i == id) {
            Some(&(_, seq, phys_size)) => {
                // Not damage: an object of a later version, or released by one, unknown
                // to this metadata (an older version was restored, or a crash lost its
                // row) that restoring version `seq` would need. Released, so that it is
                // deleted once that version expires.
                let prefix = format!("object {id} is ");
                findings
                    .items
                    .retain(|f| !(f.check == checks::check_id::STORE_SPURIOUS && f.message.starts_with(&prefix)));
                crate::meta::blocks::defer_unknown_object(db, id, phys_size, seq)
                    .map_err(db_err("recording an object an older version needs"))?;
                log::info!(
                    "object {} is unknown to the current metadata but metadata version {seq} still needs it: kept until that version expires",
                    names::data(id as u64)
                );
            }
            None => delete.push(id),
        }
    }
    delete_objects(store, &delete)
}

/// Which of `ids` the retained metadata versions reference: each with the newest such
/// version and its stored size there.
fn referenced_by_versions(
    store: &FsStore,
    scratch: &Path,
    ids: &[i64],
    parallel: usize,
) -> Result<Vec<(i64, u64, i64)>, Error> {
    let wanted: BTreeSet<i64> = ids.iter().copied().collect();
    let mut found: Vec<(i64, u64, i64)> = Vec::new();
    for v in block_on(chunks::versions(store))? {
        let path = scratch.join(format!(".fsck-version-{}.db", v.seq));
        if block_on(chunks::download(store, &v, &path, parallel)).is_err() {
            continue; // a damaged version is reported by verify_versions
        }
        let c = crate::meta::db::open_copy(&path.to_string_lossy())?;
        // Versions are listed newest first: the first one found is the newest.
        let mut st = c
            .prepare("SELECT id, phys_size FROM objects")
            .map_err(db_err("reading a metadata version"))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .map_err(db_err("reading a metadata version"))?;
        for (id, size) in rows.flatten() {
            if wanted.contains(&id) && !found.iter().any(|(i, ..)| *i == id) {
                found.push((id, v.seq, size));
            }
        }
        drop(st);
        drop(c);
        let _ = std::fs::remove_file(&path);
    }
    Ok(found)
}

fn delete_objects(store: &FsStore, ids: &[i64]) -> Result<(), Error> {
    let names: Vec<String> = ids.iter().map(|&id| names::data(id as u64)).collect();
    for batch in names.chunks(1000) {
        block_on(store.store().delete_many(batch))?;
    }
    Ok(())
}

/// Download the newest retained metadata versions and check each (size, SHA-256, SQLite
/// integrity). A damaged version's superblock copy is deleted so that it is never offered
/// for restoring; then every other retained version is checked too, since they may share
/// the damaged chunk.
fn verify_versions(store: &FsStore, files: &LocalFiles, parallel: usize, findings: &mut Findings) -> Result<(), Error> {
    let phase = Phase::start("verifying metadata versions");
    let versions = block_on(chunks::versions(store))?;
    let dir = files.db.parent().unwrap_or(Path::new("."));
    let mut limit = VERIFY_VERSIONS.min(versions.len());
    let mut i = 0;
    let mut damaged = 0;
    while i < limit {
        let v = &versions[i];
        phase.set(i as u64, limit as u64);
        let path = dir.join(format!(".fsck-verify-{}.db", v.seq));
        let r = block_on(chunks::download(store, v, &path, parallel))
            .and_then(|()| Ok(crate::meta::db::check_integrity(&path)?));
        let _ = std::fs::remove_file(&path);
        if let Err(e) = r {
            damaged += 1;
            block_on(store.store().delete(&names::params_version(v.seq)))?;
            findings.add_repaired(
                "metadata versions",
                format!(
                    "metadata version {} is damaged ({}); removed from the retained versions",
                    v.seq, e.message
                ),
            );
            limit = versions.len();
        }
        i += 1;
    }
    phase.finish(&format!("{i} checked, {damaged} damaged"));
    Ok(())
}

/// Delete the clean block files (their content is in the store); dirty ones were uploaded.
fn remove_clean_cache_files(files: &LocalFiles) {
    let _ = std::fs::remove_dir_all(&files.cache);
}
