//! The metadata DB in the store: fixed-size chunks named `s3fs_meta_<chunk>_<seq>`.
//!
//! Version S of the DB is rebuilt by taking, for every chunk below
//! `ceil(db_size / chunk_size)`, the object with the largest seq ≤ S, truncating to
//! `db_size` and checking the SHA-256 recorded in the params of version S. An upload
//! therefore only sends the chunks whose bytes changed since the previous upload; which
//! ones did is found by comparing per-chunk SHA-256s with those of the last upload
//! (kept in a small local file), not by tracing SQLite's writes as S3QL does — simpler,
//! and it cannot miss a write.
//!
//! The bytes uploaded come from a snapshot made with SQLite's online backup API in one
//! step: a read transaction on a second connection sees one consistent state while the
//! filesystem keeps writing through its own connection (WAL mode), and the copy keeps
//! the page layout, so unchanged pages produce unchanged chunks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::exit::{Error, ExitCode, db_err};
use crate::fs_store::{FsStore, names};
use crate::params::Params;
use crate::store::{PutMode, list_all};

/// Size and SHA-256 (hex) of a DB file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbDigest {
    pub size: u64,
    pub sha256: String,
}

/// SHA-256 of each chunk of the last uploaded version, to find what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkHashes {
    pub chunk_size: u64,
    pub hashes: Vec<[u8; 32]>,
}

impl ChunkHashes {
    /// Read the file written by [`ChunkHashes::save`]; a missing or unreadable file means
    /// "nothing known", which makes the next upload a full one.
    pub fn load(path: &Path) -> ChunkHashes {
        let Ok(bytes) = std::fs::read(path) else {
            return ChunkHashes::default();
        };
        if bytes.len() < 8 || (bytes.len() - 8) % 32 != 0 {
            return ChunkHashes::default();
        }
        let chunk_size = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let hashes = bytes[8..].chunks_exact(32).map(|c| c.try_into().unwrap()).collect();
        ChunkHashes { chunk_size, hashes }
    }

    /// Write atomically (temp file, fsync, rename), after the version it describes is
    /// completely in the store.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let mut bytes = self.chunk_size.to_le_bytes().to_vec();
        for h in &self.hashes {
            bytes.extend_from_slice(h);
        }
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| io("writing", path, e))
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ExitCode::Failure, format!("{what} {}: {e}", path.display()))
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::new(ExitCode::Failure, format!("metadata transfer task failed: {e}"))
}

/// Run `job` on every item, at most `parallel` at once; the results in the order the
/// jobs finished. The first failure is returned (jobs still running finish on their
/// own).
async fn run_bounded<I, T, Fut>(
    items: impl IntoIterator<Item = I>,
    parallel: usize,
    mut job: impl FnMut(I) -> Fut,
) -> Result<Vec<T>, Error>
where
    Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    for item in items {
        if tasks.len() >= parallel.max(1) {
            out.push(tasks.join_next().await.expect("task").map_err(join_err)??);
        }
        tasks.spawn(job(item));
    }
    while let Some(r) = tasks.join_next().await {
        out.push(r.map_err(join_err)??);
    }
    Ok(out)
}

/// Copy a consistent state of the live DB at `db` into `dest` without blocking writers.
pub fn snapshot(db: &Path, dest: &Path) -> Result<(), Error> {
    let _ = std::fs::remove_file(dest);
    let src = super::db::open_snapshot_source(db).map_err(db_err("opening the metadata for a snapshot"))?;
    let mut dst = super::db::open(dest, None).map_err(db_err("creating the metadata snapshot"))?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(db_err("snapshot"))?;
        // All pages in one step: one read transaction, so one consistent state. A DB
        // locked by another process for a minute is an error, not a reason to hang.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match backup.step(-1).map_err(db_err("snapshot"))? {
                rusqlite::backup::StepResult::Done => break,
                _ if std::time::Instant::now() >= deadline => {
                    return Err(Error::new(
                        ExitCode::Failure,
                        "snapshot: the metadata database stays locked",
                    ));
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
    dst.close().map_err(|(_, e)| db_err("closing the metadata snapshot")(e))
}

/// What [`upload_version`] did.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub digest: DbDigest,
    pub hashes: ChunkHashes,
    pub chunks_total: u64,
    pub chunks_sent: u64,
}

/// Upload the chunks of `db` (a snapshot nobody writes to) that differ from `previous`,
/// as version `seq`. With an empty `previous` this is a full upload.
pub async fn upload_version(
    fs: &FsStore,
    db: &Path,
    seq: u64,
    chunk_size: u64,
    previous: &ChunkHashes,
    parallel: usize,
) -> Result<Uploaded, Error> {
    let bytes = Arc::new(tokio::fs::read(db).await.map_err(|e| io("reading", db, e))?);
    let digest = DbDigest {
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes.as_slice())),
    };
    let cs = chunk_size as usize;
    let hashes: Vec<[u8; 32]> = bytes.chunks(cs).map(|c| Sha256::digest(c).into()).collect();
    let comparable = previous.chunk_size == chunk_size;
    let changed: Vec<u64> = (0..hashes.len())
        .filter(|&i| !comparable || previous.hashes.get(i) != Some(&hashes[i]))
        .map(|i| i as u64)
        .collect();
    run_bounded(changed.iter().copied(), parallel, |chunk| {
        let (fs, bytes) = (fs.clone(), bytes.clone());
        async move {
            let start = chunk as usize * cs;
            let end = (start + cs).min(bytes.len());
            fs.put(&names::meta_chunk(chunk, seq), &bytes[start..end], PutMode::Overwrite)
                .await
        }
    })
    .await?;
    Ok(Uploaded {
        digest,
        chunks_total: hashes.len() as u64,
        chunks_sent: changed.len() as u64,
        hashes: ChunkHashes { chunk_size, hashes },
    })
}

/// Upload every chunk of `db` as version `seq` (after mkfs or VACUUM).
pub async fn upload_all(
    fs: &FsStore,
    db: &Path,
    seq: u64,
    chunk_size: u64,
    parallel: usize,
) -> Result<DbDigest, Error> {
    Ok(
        upload_version(fs, db, seq, chunk_size, &ChunkHashes::default(), parallel)
            .await?
            .digest,
    )
}

/// For each chunk of version `params` that exists, the seq of the object holding it;
/// and the first chunk that does not exist, if any.
pub(crate) fn chunks_of(
    params: &Params,
    available: &BTreeMap<u64, BTreeSet<u64>>,
) -> (BTreeMap<u64, u64>, Option<u64>) {
    let chunks = params.db_size.div_ceil(params.metadata_block_size);
    let mut plan = BTreeMap::new();
    let mut missing = None;
    for c in 0..chunks {
        match available.get(&c).and_then(|seqs| seqs.range(..=params.seq).next_back()) {
            Some(&s) => {
                plan.insert(c, s);
            }
            None => {
                missing.get_or_insert(c);
            }
        }
    }
    (plan, missing)
}

/// Every metadata chunk object in the store: chunk → seqs.
pub(crate) async fn list_chunks(fs: &FsStore) -> Result<BTreeMap<u64, BTreeSet<u64>>, Error> {
    let mut available: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for obj in list_all(fs.store().as_ref(), names::META_PREFIX).await? {
        if let Some((chunk, seq)) = names::parse_meta_chunk(&obj.key) {
            available.entry(chunk).or_default().insert(seq);
        }
    }
    Ok(available)
}

/// Chunks held in memory at once by a download, in bytes.
const DOWNLOAD_MEMORY: u64 = 256 << 20;

/// Rebuild the DB of `params.seq` into `dest`, checking its size and SHA-256.
///
/// The superblock's sizes are the store's word: chunks go to a file on disk as they
/// arrive (after a check that the disk has room), never into one buffer of the claimed
/// size, and at most [`DOWNLOAD_MEMORY`] of them are in memory at once.
pub async fn download(fs: &FsStore, params: &Params, dest: &Path, parallel: usize) -> Result<(), Error> {
    download_reusing(fs, params, dest, parallel, None).await.map(drop)
}

/// Which chunk object (by seq) holds each chunk of a downloaded version: what
/// [`download_reusing`] needs to fetch only the chunks a newer version changed.
pub type ChunkPlan = BTreeMap<u64, u64>;

/// What [`download_reusing`] did.
#[derive(Debug, Clone, Default)]
pub struct Downloaded {
    pub plan: ChunkPlan,
    /// Chunks fetched from the store; the others were copied from the previous file.
    pub fetched: usize,
}

/// [`download`], copying from `previous` (an untouched earlier download and its plan)
/// every chunk the new version takes from the same chunk object: a follower moving to
/// a newer version fetches only the chunks that changed. The whole file is checked
/// against the version's SHA-256 all the same.
pub async fn download_reusing(
    fs: &FsStore,
    params: &Params,
    dest: &Path,
    parallel: usize,
    previous: Option<(&Path, &ChunkPlan)>,
) -> Result<Downloaded, Error> {
    params
        .validate()
        .map_err(|e| Error::new(ExitCode::Failure, format!("superblock is invalid: {e}")))?;
    let tmp = dest.with_extension("download");
    let dir = dest.parent().unwrap_or(Path::new("."));
    if let Ok(free) = crate::localdisk::disk_space(dir).map(|(_, avail)| avail)
        && free < params.db_size
    {
        return Err(Error::new(
            ExitCode::CacheDirInaccessible,
            format!(
                "{} has {free} bytes free, too few for metadata version {} ({} bytes)",
                dir.display(),
                params.seq,
                params.db_size
            ),
        ));
    }
    let chunk_size = params.metadata_block_size;
    let (plan, missing) = chunks_of(params, &list_chunks(fs).await?);
    let previous = previous.and_then(|(path, old)| Some((Arc::new(std::fs::File::open(path).ok()?), old)));
    let mut fetch = Vec::new();
    let mut copy = Vec::new();
    for (&chunk, &seq) in &plan {
        match previous {
            Some((_, old)) if old.get(&chunk) == Some(&seq) => copy.push(chunk),
            _ => fetch.push((chunk, seq)),
        }
    }
    let fetched = fetch.len();
    if let Some(missing) = missing {
        return Err(Error::new(
            ExitCode::Failure,
            format!(
                "metadata version {} is incomplete: chunk {missing} is missing",
                params.seq
            ),
        ));
    }
    let file = Arc::new(
        std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
            // The plaintext metadata, whatever the umask (s3fs_verify puts it in $TMPDIR).
            0o600,
        )
        .open(&tmp)
        .and_then(|f| f.set_len(params.db_size).map(|()| f))
        .map_err(|e| io("creating", &tmp, e))?,
    );
    let result = async {
        if let Some((old, _)) = &previous {
            let (old, file, copy) = (old.clone(), file.clone(), std::mem::take(&mut copy));
            let db_size = params.db_size;
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; chunk_size as usize];
                for chunk in copy {
                    let start = chunk * chunk_size;
                    let len = (start + chunk_size).min(db_size) - start;
                    old.read_exact_at(&mut buf[..len as usize], start)?;
                    crate::localdisk::write_all_at(&file, &buf[..len as usize], start)?;
                }
                Ok(())
            })
            .await
            .map_err(join_err)?
            .map_err(|e| {
                Error::new(
                    ExitCode::CacheDirInaccessible,
                    format!("copying unchanged metadata: {e}"),
                )
            })?;
        }
        let parallel = parallel.clamp(1, (DOWNLOAD_MEMORY / chunk_size).max(1) as usize);
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = fetch.into_iter();
        loop {
            while tasks.len() < parallel {
                let Some((chunk, seq)) = pending.next() else { break };
                let (fs, file) = (fs.clone(), file.clone());
                let db_size = params.db_size;
                tasks.spawn(async move {
                    let body = fs.get(&names::meta_chunk(chunk, seq), chunk_size).await?;
                    // chunk < db_size / chunk_size (chunks_of), so neither overflows.
                    let start = chunk * chunk_size;
                    let end = (start + chunk_size).min(db_size);
                    let want = (end - start) as usize;
                    if body.len() < want {
                        return Err(Error::new(
                            ExitCode::Failure,
                            format!("metadata chunk {chunk} of version {seq} is too short"),
                        ));
                    }
                    tokio::task::spawn_blocking(move || crate::localdisk::write_all_at(&file, &body[..want], start))
                        .await
                        .map_err(join_err)?
                        .map_err(|e| Error::new(ExitCode::CacheDirInaccessible, format!("writing the metadata: {e}")))
                });
            }
            let Some(done) = tasks.join_next().await else { break };
            done.map_err(join_err)??;
        }
        let file = file.clone();
        let sha = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            use std::io::{Read, Seek};
            file.sync_all()?;
            let mut f = &*file;
            f.seek(std::io::SeekFrom::Start(0))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(hex::encode(hasher.finalize()));
                }
                hasher.update(&buf[..n]);
            }
        })
        .await
        .map_err(join_err)?
        .map_err(|e| io("reading", &tmp, e))?;
        if sha != params.db_sha256 {
            return Err(Error::new(
                ExitCode::Failure,
                format!("metadata version {} does not match its checksum", params.seq),
            ));
        }
        tokio::fs::rename(&tmp, dest).await.map_err(|e| io("renaming", &tmp, e))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| Downloaded { plan, fetched })
}

/// The seqs of the metadata versions the store lists, newest first (names only).
pub async fn listed_versions(fs: &FsStore) -> Result<Vec<u64>, Error> {
    let mut seqs: Vec<u64> = list_all(fs.store().as_ref(), names::PARAMS_VERSION_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| u64::from_str_radix(o.key.strip_prefix(names::PARAMS_VERSION_PREFIX)?, 16).ok())
        .collect();
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    Ok(seqs)
}

/// The seq of the newest metadata version the store lists (names only: one LIST).
pub async fn newest_listed_version(fs: &FsStore) -> Result<Option<u64>, Error> {
    Ok(listed_versions(fs).await?.first().copied())
}

/// Superblocks of versions older than the newest, as read before in this process, by
/// (store, seq): a version's superblock does not change once a newer one exists, and a
/// writer publishing every few seconds (for followers) would otherwise read every
/// retained one at each publish. Entries of versions no longer listed are dropped.
static KNOWN_VERSIONS: std::sync::LazyLock<std::sync::Mutex<BTreeMap<(String, u64), Params>>> =
    std::sync::LazyLock::new(Default::default);

/// Keep `params`, just published by this process, as the superblock of its version:
/// the next publish then finds it known instead of reading it back (one GET fewer per
/// publish; the newest version is still read, as it may be rewritten).
pub fn remember_version(fs: &FsStore, params: &Params) {
    let mut k = KNOWN_VERSIONS.lock().unwrap_or_else(|e| e.into_inner());
    k.insert((fs.store().describe(), params.seq), params.clone());
}

/// Superblocks of versions fetched at once by [`versions`].
const VERSION_FETCHES: usize = 16;

/// The retained metadata versions, newest first.
pub async fn versions(fs: &FsStore) -> Result<Vec<Params>, Error> {
    let seqs = listed_versions(fs).await?;
    let store = fs.store().describe();
    let known = |seq: u64| {
        let k = KNOWN_VERSIONS.lock().unwrap_or_else(|e| e.into_inner());
        k.get(&(store.clone(), seq)).cloned()
    };
    // The ones not known are fetched together (the first expiry after a mount reads
    // every retained version), at most VERSION_FETCHES at once.
    let mut fetched: BTreeMap<u64, Params> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (i, &seq) in seqs.iter().enumerate() {
        // The newest is always read again: it may have been rewritten.
        if i > 0
            && let Some(p) = known(seq)
        {
            fetched.insert(seq, p);
        } else {
            unknown.push(seq);
        }
    }
    let got = run_bounded(unknown, VERSION_FETCHES, |seq| {
        let fs = fs.clone();
        async move {
            // A version deleted meanwhile by a concurrent expiry is not retained any more.
            let raw = fs
                .get_if_exists(&names::params_version(seq), Params::MAX_JSON_LEN)
                .await?;
            raw.map(|raw| Params::from_json(&raw).map(|p| (seq, p))).transpose()
        }
    })
    .await?;
    fetched.extend(got.into_iter().flatten());
    let out: Vec<Params> = seqs.iter().filter_map(|seq| fetched.remove(seq)).collect();
    let mut k = KNOWN_VERSIONS.lock().unwrap_or_else(|e| e.into_inner());
    k.retain(|(s, seq), _| *s != store || seqs.binary_search_by(|x| seq.cmp(x)).is_ok());
    for p in out.iter().skip(1) {
        k.insert((store.clone(), p.seq), p.clone());
    }
    Ok(out)
}
