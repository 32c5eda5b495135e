//! The metadata DB in the store: fixed-size chunks named `s3fs_meta_<chunk>_<seq>`.
//!
//! Version S of the DB is rebuilt by taking, for every chunk below
//! `ceil(db_size / chunk_size)`, the object with the largest seq ≤ S, truncating to
//! `db_size` and checking the SHA-256 recorded in the params of version S. An upload
//! therefore only needs to send the chunks that changed since the previous version.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::exit::{Error, ExitCode};
use crate::fs_store::{FsStore, names};
use crate::params::Params;
use crate::store::{PutMode, list_all};

/// Size and SHA-256 (hex) of a DB file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbDigest {
    pub size: u64,
    pub sha256: String,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ExitCode::Failure, format!("{what} {}: {e}", path.display()))
}

/// Upload every chunk of `db` as version `seq` (a full upload, as after mkfs or VACUUM).
/// `parallel` chunks are in flight at once.
pub async fn upload_all(
    fs: &FsStore,
    db: &Path,
    seq: u64,
    chunk_size: u64,
    parallel: usize,
) -> Result<DbDigest, Error> {
    let bytes = tokio::fs::read(db).await.map_err(|e| io("reading", db, e))?;
    let digest = DbDigest {
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
    };
    let bytes = std::sync::Arc::new(bytes);
    let chunks = bytes.len().div_ceil(chunk_size as usize) as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..chunks {
        if tasks.len() >= parallel.max(1) {
            tasks.join_next().await.expect("task").map_err(join_err)??;
        }
        let (fs, bytes) = (fs.clone(), bytes.clone());
        tasks.spawn(async move {
            let start = (chunk * chunk_size) as usize;
            let end = (start + chunk_size as usize).min(bytes.len());
            fs.put(&names::meta_chunk(chunk, seq), &bytes[start..end], PutMode::Overwrite)
                .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(join_err)??;
    }
    Ok(digest)
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::new(ExitCode::Failure, format!("metadata transfer task failed: {e}"))
}

/// Rebuild the DB of `params.seq` into `dest`, checking its size and SHA-256.
pub async fn download(fs: &FsStore, params: &Params, dest: &Path, parallel: usize) -> Result<(), Error> {
    let chunk_size = params.metadata_block_size;
    let chunks = params.db_size.div_ceil(chunk_size);
    // For each chunk, the newest version not newer than params.seq.
    let mut newest: BTreeMap<u64, u64> = BTreeMap::new();
    for obj in list_all(fs.store().as_ref(), names::META_PREFIX).await? {
        if let Some((chunk, seq)) = names::parse_meta_chunk(&obj.key)
            && chunk < chunks
            && seq <= params.seq
        {
            let e = newest.entry(chunk).or_insert(seq);
            *e = (*e).max(seq);
        }
    }
    if let Some(missing) = (0..chunks).find(|c| !newest.contains_key(c)) {
        return Err(Error::new(
            ExitCode::Failure,
            format!(
                "metadata version {} is incomplete: chunk {missing} is missing",
                params.seq
            ),
        ));
    }
    let mut db = vec![0u8; params.db_size as usize];
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = newest.into_iter();
    loop {
        while tasks.len() < parallel.max(1) {
            let Some((chunk, seq)) = pending.next() else { break };
            let fs = fs.clone();
            tasks.spawn(async move { (chunk, fs.get(&names::meta_chunk(chunk, seq)).await) });
        }
        let Some(done) = tasks.join_next().await else { break };
        let (chunk, body) = done.map_err(join_err)?;
        let body = body?;
        let start = (chunk * chunk_size) as usize;
        let end = (start + chunk_size as usize).min(db.len());
        if body.len() < end - start {
            return Err(Error::new(
                ExitCode::Failure,
                format!("metadata chunk {chunk} of version {} is too short", params.seq),
            ));
        }
        db[start..end].copy_from_slice(&body[..end - start]);
    }
    let sha = hex::encode(Sha256::digest(&db));
    if sha != params.db_sha256 {
        return Err(Error::new(
            ExitCode::Failure,
            format!("metadata version {} does not match its checksum", params.seq),
        ));
    }
    let tmp = dest.with_extension("download");
    tokio::fs::write(&tmp, &db).await.map_err(|e| io("writing", &tmp, e))?;
    tokio::fs::rename(&tmp, dest).await.map_err(|e| io("renaming", &tmp, e))
}
