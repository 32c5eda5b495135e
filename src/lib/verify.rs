//! s3fs_verify: check that every data object the metadata names is in the store and
//! intact, without changing anything.
//!
//! 1. Refuse a filesystem that is mounted here (40), mounted elsewhere (31) or that needs
//!    fsck (30), with the same rules as a mount ([`state::decide`]).
//! 2. Read the metadata: the local DB when it is the current version (opened read-only,
//!    without even SQLite's shared-memory files), otherwise the newest version downloaded
//!    to a temporary file, unlinked as soon as SQLite has it open.
//! 3. Walk `objects` in id order from `--start-with` with a cursor (no list of millions of
//!    rows in memory), at most `--max-connections` objects in flight: a HEAD per object
//!    (present, stored size = `objects.phys_size`), or with `--data` a GET, decoding
//!    (authentication, decryption, decompression) and the SHA-256 of each block stored in
//!    the object (`blocks` is read with a second cursor sorted by object).
//! 4. Missing and corrupt objects are appended to the report files as they are found;
//!    report files left empty are removed.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::cli::VerifyArgs;
use crate::codec::Compression;
use crate::config::{self, SecretSource};
use crate::exit::{Error, ExitCode};
use crate::fs_store::{self, ConnectOptions, Fetched, FsStore, names};
use crate::meta::chunks;
use crate::meta::versions::state::{LocalFiles, Start};
use crate::params::Params;
use crate::runtime::block_on;
use crate::store::{StorageUrl, StoreError};

/// Without a terminal, the position is logged this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a run found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Objects checked in this run (after `--start-with`).
    pub checked: u64,
    pub missing: u64,
    pub corrupted: u64,
}

/// The tool: verify, print a one-line summary, exit 46 if anything is missing or corrupt.
pub fn main(args: &VerifyArgs, secrets: &mut dyn SecretSource) -> Result<(), Error> {
    args.log.init();
    let s = run(args, secrets)?;
    println!(
        "{} objects checked: {} missing, {} corrupted",
        s.checked, s.missing, s.corrupted
    );
    let mut where_ = Vec::new();
    if s.missing > 0 {
        where_.push(format!("missing ones in {}", args.missing_file.display()));
    }
    if s.corrupted > 0 {
        where_.push(format!("corrupted ones in {}", args.corrupted_file.display()));
    }
    if where_.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ExitCode::VerifyFoundProblems,
            format!(
                "{} objects are missing or corrupted (listed: {})",
                s.missing + s.corrupted,
                where_.join(", ")
            ),
        ))
    }
}

fn db_err(e: rusqlite::Error) -> Error {
    crate::exit::db_err("reading the metadata")(e)
}

/// Verify the filesystem at `args.storage_url`. See the module documentation.
pub fn run(args: &VerifyArgs, secrets: &mut dyn SecretSource) -> Result<Summary, Error> {
    crate::mount::mounts::refuse_if_mounted_here(&StorageUrl::parse(&args.storage_url)?)?;
    for report in [&args.missing_file, &args.corrupted_file] {
        refuse_non_empty(report)?;
    }
    let opts = ConnectOptions {
        authfile: args.store.authfile.as_deref(),
        backend_options: args.store.backend_options.as_deref(),
    };
    let conn = fs_store::connect(&args.storage_url, &opts, secrets)?;
    // Nothing is encoded: the compression setting does not matter.
    let opened = block_on(fs_store::open_filesystem(&conn, Compression::default(), secrets))?;
    let store = opened.fs.clone();
    let remote = &opened.params;
    // Only read: a missing cache directory means no local copy, not one to create.
    let files = LocalFiles::new(
        &config::cache_dir_path(args.store.cachedir.as_deref(), &conn.auth),
        &conn.url,
    );
    let parallel = config::max_connections(args.store.max_connections, &conn.auth);

    let start = crate::meta::versions::decide_start(&store, remote, &files, ExitCode::MountedHere)?;

    let meta = MetaDb::load(start, &files, &store, remote, parallel)?;
    let db = meta.open()?;
    let unfinished: i64 = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM objects WHERE phys_size < 0)
                  + (SELECT COUNT(*) FROM blocks WHERE hash IS NULL)",
            [],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    if unfinished > 0 {
        return Err(Error::new(
            ExitCode::NeedsFsck,
            format!("the metadata records {unfinished} unfinished uploads; run fsck.s3fs first"),
        ));
    }
    let total: i64 = db
        .query_row("SELECT COUNT(*) FROM objects", [], |r| r.get(0))
        .map_err(db_err)?;
    let total = total as u64;
    let first_id: Option<i64> = if args.start_with < total {
        Some(
            db.query_row(
                "SELECT id FROM objects ORDER BY id LIMIT 1 OFFSET ?1",
                [args.start_with as i64],
                |r| r.get(0),
            )
            .map_err(db_err)?,
        )
    } else {
        None
    };
    if args.start_with > 0 {
        log::info!("skipping the first {} of {total} objects", args.start_with.min(total));
    }

    let mut reports = Reports::create(&args.missing_file, &args.corrupted_file)?;
    let mut progress = Progress::new(args.start_with.min(total), total, args.data);
    let checked = match first_id {
        None => 0,
        Some(first_id) => block_on(check_objects(
            &db,
            &store,
            Walk {
                first_id,
                first_index: args.start_with,
                data: args.data,
                parallel,
            },
            &mut reports,
            &mut progress,
        ))?,
    };
    progress.finish();
    Ok(Summary {
        checked,
        missing: reports.missing.count,
        corrupted: reports.corrupted.count,
    })
}

fn refuse_non_empty(path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => Err(Error::new(
            ExitCode::BadArgument,
            format!(
                "{} exists and is not empty; refusing to overwrite it (move it away or choose another name)",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// The metadata DB to read: the local copy, or a downloaded version removed at drop.
struct MetaDb {
    path: PathBuf,
    temporary: bool,
}

impl MetaDb {
    fn load(
        start: Start,
        files: &LocalFiles,
        store: &FsStore,
        remote: &Params,
        parallel: usize,
    ) -> Result<MetaDb, Error> {
        if start == Start::Local && files.db.exists() {
            log::info!("using the local metadata (version {})", remote.seq);
            return Ok(MetaDb {
                path: files.db.clone(),
                temporary: false,
            });
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let meta = MetaDb {
            path: std::env::temp_dir().join(format!("s3fs_verify-{}-{nanos}.db", std::process::id())),
            temporary: true,
        };
        log::info!("downloading metadata version {} to {}", remote.seq, meta.path.display());
        block_on(chunks::download(store, remote, &meta.path, parallel))?;
        Ok(meta)
    }

    /// Open read-only. Without a pending write-ahead log, as an immutable file: SQLite
    /// then creates no `-wal`/`-shm` files next to it (a plain read-only open does, and
    /// leaves them behind).
    fn open(&self) -> Result<Connection, Error> {
        let wal = sibling(&self.path, "-wal");
        let pending = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        let uri = format!(
            "file:{}?{}",
            uri_path(&self.path),
            if pending { "mode=ro" } else { "immutable=1" }
        );
        let db = crate::meta::db::open_copy(&uri)?;
        if self.temporary {
            // SQLite keeps reading through its open descriptor (immutable: no journal, no
            // locks), and an interrupted run leaves no copy of the metadata behind.
            let _ = std::fs::remove_file(&self.path);
        }
        Ok(db)
    }
}

impl Drop for MetaDb {
    fn drop(&mut self) {
        if self.temporary {
            for p in [
                self.path.clone(),
                self.path.with_extension("download"),
                sibling(&self.path, "-wal"),
                sibling(&self.path, "-shm"),
            ] {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// `path` with `suffix` appended to its file name (`x.db` → `x.db-wal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `path` for an SQLite URI: every byte but a few safe ones percent-encoded.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~=:+,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One report file: created empty at the start, one object name per line, removed at
/// the end if nothing was written to it.
struct Report {
    path: PathBuf,
    file: File,
    count: u64,
}

impl Report {
    fn create(path: &Path) -> Result<Report, Error> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::new(ExitCode::Failure, format!("cannot create {}: {e}", path.display())))?;
        Ok(Report {
            path: path.to_owned(),
            file,
            count: 0,
        })
    }

    fn add(&mut self, key: &str) -> Result<(), Error> {
        self.count += 1;
        self.file
            .write_all(format!("{key}\n").as_bytes())
            .map_err(|e| Error::new(ExitCode::Failure, format!("cannot write {}: {e}", self.path.display())))
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if self.count == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct Reports {
    missing: Report,
    corrupted: Report,
}

impl Reports {
    fn create(missing: &Path, corrupted: &Path) -> Result<Reports, Error> {
        Ok(Reports {
            missing: Report::create(missing)?,
            corrupted: Report::create(corrupted)?,
        })
    }
}

/// Position display: a bar on a terminal, a log line every [`LOG_EVERY`] otherwise. The
/// position is the number of leading objects all checked, so `--start-with` it resumes
/// without a gap, whatever order the parallel checks finish in.
struct Progress {
    bar: ProgressBar,
    total: u64,
    next: u64,
    finished_ahead: BTreeSet<u64>,
    last_log: Instant,
}

impl Progress {
    fn new(start: u64, total: u64, data: bool) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} [{elapsed_precise}, ETA {eta}]")
                    .expect("valid template"),
            );
            bar.set_message(if data { "verifying data" } else { "checking objects" });
            bar.set_position(start);
            bar.reset_eta();
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            total,
            next: start,
            finished_ahead: BTreeSet::new(),
            last_log: Instant::now(),
        }
    }

    fn done(&mut self, index: u64) {
        if index == self.next {
            self.next += 1;
            while self.finished_ahead.remove(&self.next) {
                self.next += 1;
            }
        } else {
            self.finished_ahead.insert(index);
        }
        self.bar.set_position(self.next);
        if self.bar.is_hidden() && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            log::info!(
                "{} of {} objects checked (to resume from here: --start-with {})",
                self.next,
                self.total,
                self.next
            );
        }
    }

    /// Log without tearing the bar.
    fn warn(&self, message: &str) {
        self.bar.suspend(|| log::warn!("{message}"));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Where and how to walk the objects.
struct Walk {
    first_id: i64,
    /// Position of the object `first_id` among all objects.
    first_index: u64,
    data: bool,
    parallel: usize,
}

/// A block as the metadata records it.
#[derive(Debug)]
struct BlockRow {
    obj_id: i64,
    offset: i64,
    size: i64,
    hash: Vec<u8>,
    /// Stored length of a segment of a pack; 0 for a block that is a whole object.
    phys_len: i64,
}

/// One object to check.
#[derive(Debug)]
struct Job {
    index: u64,
    id: i64,
    phys_size: i64,
    length: i64,
    /// Only with `--data`.
    blocks: Vec<BlockRow>,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Intact,
    Missing,
    Corrupt(String),
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::new(ExitCode::Failure, format!("verification task failed: {e}"))
}

/// Check every object from `walk.first_id` on, reading the metadata with cursors as the
/// checks progress. Runs on the calling thread (the cursors are not `Send`); the checks
/// run on the I/O runtime. Returns how many objects were checked.
async fn check_objects(
    db: &Connection,
    store: &FsStore,
    walk: Walk,
    reports: &mut Reports,
    progress: &mut Progress,
) -> Result<u64, Error> {
    let mut objects = db
        .prepare("SELECT id, phys_size, length FROM objects WHERE id >= ?1 ORDER BY id")
        .map_err(db_err)?;
    let mut object_rows = objects.query([walk.first_id]).map_err(db_err)?;
    let mut blocks = if walk.data {
        Some({
            // A DB of schema version 1 (before packs) has no segments.
            let version = crate::meta::schema::schema_version(db).map_err(db_err)?;
            let phys_len = if version >= 2 { "phys_len" } else { "0" };
            db.prepare(&format!(
                "SELECT obj_id, obj_offset, size, hash, {phys_len} FROM blocks WHERE obj_id >= ?1
                     ORDER BY obj_id, obj_offset"
            ))
            .map_err(db_err)?
        })
    } else {
        None
    };
    let mut block_rows = match blocks.as_mut() {
        Some(st) => Some(st.query([walk.first_id]).map_err(db_err)?),
        None => None,
    };
    let mut next_block: Option<BlockRow> = None;
    let mut blocks_done = false;
    let mut objects_done = false;
    let mut index = walk.first_index;
    let mut checked = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while !objects_done && tasks.len() < walk.parallel.max(1) {
            let Some(row) = object_rows.next().map_err(db_err)? else {
                objects_done = true;
                break;
            };
            let mut job = Job {
                index,
                id: row.get(0).map_err(db_err)?,
                phys_size: row.get(1).map_err(db_err)?,
                length: row.get(2).map_err(db_err)?,
                blocks: Vec::new(),
            };
            index += 1;
            if let Some(rows) = block_rows.as_mut() {
                loop {
                    if next_block.is_none() && !blocks_done {
                        match rows.next().map_err(db_err)? {
                            Some(r) => {
                                next_block = Some(BlockRow {
                                    obj_id: r.get(0).map_err(db_err)?,
                                    offset: r.get(1).map_err(db_err)?,
                                    size: r.get(2).map_err(db_err)?,
                                    hash: r.get(3).map_err(db_err)?,
                                    phys_len: r.get(4).map_err(db_err)?,
                                });
                            }
                            None => blocks_done = true,
                        }
                    }
                    match next_block.take() {
                        // A block whose object is not in `objects` is fsck's business.
                        Some(b) if b.obj_id < job.id => {}
                        Some(b) if b.obj_id == job.id => job.blocks.push(b),
                        other => {
                            next_block = other;
                            break;
                        }
                    }
                }
            }
            let (store, data) = (store.clone(), walk.data);
            tasks.spawn(async move {
                let (index, key) = (job.index, names::data(job.id as u64));
                let verdict = check_object(&store, &key, job, data).await;
                (index, key, verdict)
            });
        }
        let Some(finished) = tasks.join_next().await else {
            break;
        };
        let (i, key, verdict) = finished.map_err(join_err)?;
        match verdict? {
            Verdict::Intact => {}
            Verdict::Missing => {
                progress.warn(&format!("object {key} is missing"));
                reports.missing.add(&key)?;
            }
            Verdict::Corrupt(why) => {
                progress.warn(&format!("object {key} is corrupted: {why}"));
                reports.corrupted.add(&key)?;
            }
        }
        checked += 1;
        progress.done(i);
    }
    Ok(checked)
}

/// HEAD `key` and compare its size, or with `data` fetch, decode and check it. Store
/// failures other than a missing object are errors.
async fn check_object(store: &FsStore, key: &str, job: Job, data: bool) -> Result<Verdict, Error> {
    if !data {
        return match store.store().head(key).await {
            Ok(info) if i64::try_from(info.size) != Ok(job.phys_size) => Ok(Verdict::Corrupt(format!(
                "{} bytes in the store, the metadata says {}",
                info.size, job.phys_size
            ))),
            Ok(_) => Ok(Verdict::Intact),
            Err(StoreError::NotFound(_)) => Ok(Verdict::Missing),
            Err(e) => Err(e.into()),
        };
    };
    if job.blocks.iter().any(|b| b.phys_len > 0) {
        return check_pack(store, key, job).await;
    }
    // The metadata says how long the plaintext is; a larger object is damage.
    let expected = u64::try_from(job.length).unwrap_or(0);
    let Some(fetched) = store.get_decoded(key, expected).await? else {
        return Ok(Verdict::Missing);
    };
    // Hashing a whole object is CPU work: off the I/O threads.
    tokio::task::spawn_blocking(move || judge(fetched, job.phys_size, job.length, &job.blocks))
        .await
        .map_err(join_err)
}

/// Fetch a pack and check it: its stored size, and every block recorded in it decoded
/// from its own segment against its SHA-256.
async fn check_pack(store: &FsStore, key: &str, job: Job) -> Result<Verdict, Error> {
    // The metadata says how long the pack is; a larger object is damage.
    let expected = u64::try_from(job.phys_size).unwrap_or(0);
    let raw = match store.store().get(key, expected).await {
        Ok(raw) => raw,
        Err(StoreError::NotFound(_)) => return Ok(Verdict::Missing),
        Err(e @ StoreError::TooLarge { .. }) => return Ok(Verdict::Corrupt(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let codec = store.codec().clone();
    tokio::task::spawn_blocking(move || judge_pack(&codec, &raw, &job))
        .await
        .map_err(join_err)
}

fn judge_pack(codec: &crate::codec::Codec, raw: &[u8], job: &Job) -> Verdict {
    if i64::try_from(raw.len()) != Ok(job.phys_size) {
        return Verdict::Corrupt(format!(
            "{} bytes in the store, the metadata says {}",
            raw.len(),
            job.phys_size
        ));
    }
    for BlockRow {
        offset,
        size,
        hash,
        phys_len,
        ..
    } in &job.blocks
    {
        let range = usize::try_from(*offset)
            .ok()
            .zip(usize::try_from(*phys_len).ok())
            .and_then(|(o, s)| Some(o..o.checked_add(s)?))
            .filter(|r| r.end <= raw.len() && *phys_len > 0);
        let Some(range) = range else {
            return Verdict::Corrupt(format!(
                "the metadata places a segment of {phys_len} bytes at offset {offset}, outside the pack"
            ));
        };
        let binding = names::segment(job.id as u64, *offset as u64);
        let plain = match codec.decode_at_most(&binding, &raw[range], u64::try_from(*size).unwrap_or(0)) {
            Ok(p) => p,
            Err(e) => return Verdict::Corrupt(format!("the block at offset {offset}: {e}")),
        };
        if Sha256::digest(&plain).as_slice() != hash.as_slice() {
            return Verdict::Corrupt(format!(
                "the block at offset {offset} ({size} bytes) does not match its SHA-256"
            ));
        }
    }
    Verdict::Intact
}

/// Whether a fetched object matches what the metadata says of it.
fn judge(fetched: Fetched, phys_size: i64, length: i64, blocks: &[BlockRow]) -> Verdict {
    if i64::try_from(fetched.stored_size) != Ok(phys_size) {
        return Verdict::Corrupt(format!(
            "{} bytes in the store, the metadata says {phys_size}",
            fetched.stored_size
        ));
    }
    let plaintext = match fetched.plaintext {
        Ok(p) => p,
        Err(e) => return Verdict::Corrupt(e.to_string()),
    };
    if i64::try_from(plaintext.len()) != Ok(length) {
        return Verdict::Corrupt(format!("{} bytes of data, the metadata says {length}", plaintext.len()));
    }
    for BlockRow { offset, size, hash, .. } in blocks {
        let range = usize::try_from(*offset)
            .ok()
            .zip(usize::try_from(*size).ok())
            .and_then(|(o, s)| Some(o..o.checked_add(s)?))
            .filter(|r| r.end <= plaintext.len());
        let Some(range) = range else {
            return Verdict::Corrupt(format!(
                "the metadata places a block of {size} bytes at offset {offset}, outside the object"
            ));
        };
        if Sha256::digest(&plaintext[range]).as_slice() != hash.as_slice() {
            return Verdict::Corrupt(format!(
                "the block at offset {offset} ({size} bytes) does not match its SHA-256"
            ));
        }
    }
    Verdict::Intact
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(body: &[u8], stored: u64) -> Fetched {
        Fetched {
            stored_size: stored,
            plaintext: Ok(bytes::Bytes::copy_from_slice(body)),
        }
    }

    fn block(offset: i64, size: i64, content: &[u8]) -> BlockRow {
        BlockRow {
            obj_id: 1,
            offset,
            size,
            hash: Sha256::digest(content).to_vec(),
            phys_len: 0,
        }
    }

    #[test]
    fn judge_checks_sizes_and_every_block_hash() {
        let body = b"hello world";
        let blocks = vec![block(0, 5, b"hello"), block(5, 6, b" world")];
        assert_eq!(judge(fetched(body, 40), 40, 11, &blocks), Verdict::Intact);
        assert!(matches!(judge(fetched(body, 41), 40, 11, &blocks), Verdict::Corrupt(_)));
        assert!(matches!(judge(fetched(body, 40), 40, 12, &blocks), Verdict::Corrupt(_)));
        let wrong = vec![block(0, 5, b"hellO")];
        assert!(matches!(judge(fetched(body, 40), 40, 11, &wrong), Verdict::Corrupt(w) if w.contains("SHA-256")));
        for outside in [(6, 6), (-1, 3), (0, -1), (i64::MAX, 2)] {
            let b = vec![block(outside.0, outside.1, b"")];
            assert!(matches!(judge(fetched(body, 40), 40, 11, &b), Verdict::Corrupt(w) if w.contains("outside")));
        }
        let undecodable = Fetched {
            stored_size: 40,
            plaintext: Err(crate::codec::CodecError::Corrupt {
                name: "s3fs_data_1".into(),
                why: "bad tag".into(),
            }),
        };
        assert!(matches!(judge(undecodable, 40, 11, &blocks), Verdict::Corrupt(w) if w.contains("bad tag")));
    }

    #[test]
    fn progress_position_is_the_finished_prefix() {
        let mut p = Progress::new(10, 20, false);
        p.done(11);
        p.done(12);
        assert_eq!(p.next, 10);
        p.done(10);
        assert_eq!(p.next, 13);
        assert!(p.finished_ahead.is_empty());
    }

    #[test]
    fn uri_paths_escape_what_sqlite_would_interpret() {
        assert_eq!(
            uri_path(Path::new("/c/local:=2Fa b?c#d%.db")),
            "/c/local:=2Fa%20b%3Fc%23d%25.db"
        );
        assert_eq!(sibling(Path::new("/x/y.db"), "-wal"), PathBuf::from("/x/y.db-wal"));
    }
}
