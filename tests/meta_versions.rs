//! Versioned, incremental upload of the metadata DB: only changed chunks are sent, every
//! retained version can be rebuilt exactly, and expiry keeps what retained versions need.

mod common;

use common::counting::Counting;

use std::path::Path;
use std::sync::Arc;

use s3fs::codec::{Codec, Compression};
use s3fs::crypto::MasterKey;
use s3fs::fs_store::{FsStore, names};
use s3fs::meta::chunks::{self, ChunkHashes};
use s3fs::params::{FS_REVISION, Params};
use s3fs::runtime::block_on;
use s3fs::store::{Store, list_all, open_store};

const CHUNK: u64 = 16 * 1024;

fn params(seq: u64, digest: &chunks::DbDigest) -> Params {
    Params {
        revision: FS_REVISION,
        uuid: "test".into(),
        label: String::new(),
        encrypted: true,
        data_block_size: 1 << 20,
        metadata_block_size: CHUNK,
        seq,
        db_size: digest.size,
        db_sha256: digest.sha256.clone(),
        is_mounted: false,
        needs_fsck: false,
        created: 0,
        last_fsck: 0,
        last_modified: 0,
        retention: Default::default(),
    }
}

/// A DB with `rows` rows of 200 bytes each.
fn make_db(path: &Path, rows: u32) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);")
        .unwrap();
    let tx = db.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO t (id, v) VALUES (?1, ?2)",
            rusqlite::params![i, vec![(i % 251) as u8; 200]],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    db
}

/// One backup as the mount will do it: snapshot, upload what changed, write params.
fn backup(fs: &FsStore, db: &Path, dir: &Path, seq: u64, prev: &ChunkHashes) -> (Params, chunks::Uploaded) {
    let snap = dir.join(format!("snap-{seq}.db"));
    chunks::snapshot(db, &snap).unwrap();
    let up = block_on(chunks::upload_version(fs, &snap, seq, CHUNK, prev, 8)).unwrap();
    let p = params(seq, &up.digest);
    block_on(fs.write_params(&p)).unwrap();
    (p, up)
}

fn sha_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn versions_round_trip(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStore::new(
        store.clone(),
        Codec::new(Some(MasterKey::generate()), Compression::default()),
    );
    let db_path = dir.path().join("live.db");
    let db = make_db(&db_path, 5000); // ~1.2 MB: ~70 chunks

    let (p1, up1) = backup(&fs, &db_path, dir.path(), 100, &ChunkHashes::default());
    assert_eq!(up1.chunks_sent, up1.chunks_total, "first upload is full");
    assert!(up1.chunks_total > 50);

    // A small change sends a few chunks, not the DB.
    db.execute("UPDATE t SET v = x'ff' WHERE id = 4000", []).unwrap();
    let (p2, up2) = backup(&fs, &db_path, dir.path(), 101, &up1.hashes);
    assert!(
        up2.chunks_sent >= 1 && up2.chunks_sent <= 4,
        "sent {} of {} chunks",
        up2.chunks_sent,
        up2.chunks_total
    );

    // Growth adds chunks; shrinking (VACUUM after a delete) is still rebuilt exactly.
    for i in 5000..6000u32 {
        db.execute(
            "INSERT INTO t (id, v) VALUES (?1, ?2)",
            rusqlite::params![i, vec![7u8; 200]],
        )
        .unwrap();
    }
    let (p3, up3) = backup(&fs, &db_path, dir.path(), 102, &up2.hashes);
    db.execute_batch("DELETE FROM t WHERE id >= 1000; VACUUM;").unwrap();
    let (p4, up4) = backup(&fs, &db_path, dir.path(), 103, &up3.hashes);
    assert!(up4.digest.size < up3.digest.size);

    // Every version rebuilds byte for byte.
    for (p, seq) in [(&p1, 100), (&p2, 101), (&p3, 102), (&p4, 103)] {
        let out = dir.path().join(format!("restored-{seq}.db"));
        block_on(chunks::download(&fs, p, &out, 8)).unwrap();
        assert_eq!(
            sha_of(&out),
            sha_of(&dir.path().join(format!("snap-{seq}.db"))),
            "version {seq}"
        );
    }
    let restored = rusqlite::Connection::open(dir.path().join("restored-101.db")).unwrap();
    let v: Vec<u8> = restored
        .query_row("SELECT v FROM t WHERE id = 4000", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, vec![0xff]);

    let listed: Vec<u64> = block_on(chunks::versions(&fs)).unwrap().iter().map(|p| p.seq).collect();
    assert_eq!(listed, vec![103, 102, 101, 100], "newest first");

    // Keep two versions: the older ones go, and so do the chunks only they needed.
    let before = block_on(list_all(store.as_ref(), names::META_PREFIX)).unwrap().len();
    let keep_two = s3fs::params::Retention {
        keep_last: 2,
        keep_within_secs: 0,
        keep_daily: 0,
        min_age_secs: 0,
    };
    let expired = block_on(s3fs::meta::versions::retention::expire(&fs, &keep_two)).unwrap();
    assert_eq!(expired.versions, 2);
    assert!(expired.chunks > 0);
    let after = block_on(list_all(store.as_ref(), names::META_PREFIX)).unwrap().len();
    assert_eq!(after, before - expired.chunks);
    for (p, seq) in [(&p3, 102), (&p4, 103)] {
        let out = dir.path().join(format!("after-expiry-{seq}.db"));
        block_on(chunks::download(&fs, p, &out, 8)).unwrap();
        assert_eq!(
            sha_of(&out),
            sha_of(&dir.path().join(format!("snap-{seq}.db"))),
            "version {seq} after expiry"
        );
    }
    assert!(
        block_on(chunks::download(&fs, &p1, &dir.path().join("gone.db"), 8)).is_err(),
        "expired version"
    );
    assert_eq!(block_on(chunks::versions(&fs)).unwrap().len(), 2);
}

#[test]
fn versions_round_trip_on_local() {
    let dir = tempfile::tempdir().unwrap();
    let url = s3fs::store::StorageUrl::parse(&format!("local://{}", dir.path().display())).unwrap();
    versions_round_trip(open_store(&url, "", None).unwrap());
}

#[test]
fn versions_round_trip_on_garage() {
    let server = common::s3_server("GARAGE");
    let url = s3fs::store::StorageUrl::parse(&server.url_with_prefix("meta")).unwrap();
    versions_round_trip(open_store(&url, &server.options, Some(server.credentials())).unwrap());
}

#[test]
fn versions_round_trip_on_moto() {
    let server = common::s3_server("MOTO");
    let url = s3fs::store::StorageUrl::parse(&server.url_with_prefix("meta")).unwrap();
    versions_round_trip(open_store(&url, &server.options, Some(server.credentials())).unwrap());
}

/// A snapshot taken while another connection keeps writing is one consistent state.
#[test]
fn snapshot_is_consistent_while_writers_continue() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("live.db");
    let db = make_db(&db_path, 2000);
    db.execute_batch("CREATE TABLE total (n INTEGER); INSERT INTO total VALUES (2000);")
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, stop) = (db_path.clone(), stop.clone());
        std::thread::spawn(move || {
            let db = rusqlite::Connection::open(path).unwrap();
            db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            let mut i = 100_000u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Rows and the total change together, in one transaction.
                db.execute_batch(&format!(
                    "BEGIN; INSERT INTO t (id, v) VALUES ({i}, x'00'); UPDATE total SET n = n + 1; COMMIT;"
                ))
                .unwrap();
                i += 1;
            }
        })
    };
    for k in 0..5 {
        let snap = dir.path().join(format!("snap{k}.db"));
        chunks::snapshot(&db_path, &snap).unwrap();
        let s = rusqlite::Connection::open(&snap).unwrap();
        let ok: String = s.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
        let (rows, total): (i64, i64) = s
            .query_row("SELECT (SELECT count(*) FROM t), (SELECT n FROM total)", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(rows, total, "snapshot {k} mixes two states");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

/// A damaged or missing chunk is reported, never turned into a wrong DB.
#[test]
fn damaged_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    std::fs::create_dir(&store_dir).unwrap();
    let url = s3fs::store::StorageUrl::parse(&format!("local://{}", store_dir.display())).unwrap();
    let fs = FsStore::new(
        open_store(&url, "", None).unwrap(),
        Codec::new(None, Compression::default()),
    );
    let db_path = dir.path().join("live.db");
    drop(make_db(&db_path, 1000));
    let (p, _) = backup(&fs, &db_path, dir.path(), 5, &ChunkHashes::default());
    let chunk = store_dir.join(names::meta_chunk(2, 5));
    let good = std::fs::read(&chunk).unwrap();
    let mut bad = good.clone();
    bad[40] ^= 1;
    std::fs::write(&chunk, &bad).unwrap();
    let e = block_on(chunks::download(&fs, &p, &dir.path().join("x.db"), 4)).unwrap_err();
    assert!(e.message.contains("corrupt"), "{}", e.message);
    std::fs::remove_file(&chunk).unwrap();
    let e = block_on(chunks::download(&fs, &p, &dir.path().join("x.db"), 4)).unwrap_err();
    assert!(e.message.contains("chunk 2 is missing"), "{}", e.message);
    assert!(!dir.path().join("x.db").exists(), "nothing written on failure");
}

#[test]
fn chunk_hashes_survive_a_round_trip_and_garbage_means_full_upload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hashes");
    let h = ChunkHashes {
        chunk_size: 4096,
        hashes: vec![[1; 32], [2; 32]],
    };
    h.save(&path).unwrap();
    assert_eq!(ChunkHashes::load(&path), h);
    std::fs::write(&path, b"short").unwrap();
    assert_eq!(ChunkHashes::load(&path), ChunkHashes::default());
    assert_eq!(ChunkHashes::load(&dir.path().join("missing")), ChunkHashes::default());
}

/// The superblocks of the retained versions are fetched together, not one after the
/// other: the first expiry after a mount reads every version this process has not seen
/// (tens of them with the default policy), at one round trip each before.
#[test]
fn the_versions_are_read_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let url = s3fs::store::StorageUrl::parse(&format!("local://{}", dir.path().display())).unwrap();
    let raw = open_store(&url, "", None).unwrap();
    let counting = Counting::new(raw, std::time::Duration::from_millis(20));
    let fs = FsStore::new(counting.clone(), Codec::new(None, Compression::default()));
    let digest = chunks::DbDigest {
        size: 0,
        sha256: "00".repeat(32),
    };
    for seq in 1..=12 {
        block_on(fs.write_params(&params(seq, &digest))).unwrap();
    }
    counting.reset();
    let seqs: Vec<u64> = block_on(chunks::versions(&fs)).unwrap().iter().map(|p| p.seq).collect();
    assert_eq!(seqs, (1..=12).rev().collect::<Vec<u64>>(), "newest first");
    let most = counting.max_in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most >= 4, "at most {most} GETs in flight for 12 versions");
}

/// A superblock's two copies (its version and the current one) are written together:
/// one round trip of every publish, mount and unmount, not two.
#[test]
fn both_superblock_copies_are_written_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = s3fs::store::StorageUrl::parse(&format!("local://{}", dir.path().display())).unwrap();
    let raw = open_store(&url, "", None).unwrap();
    let ms = std::time::Duration::from_millis(20);
    let counting = Counting::with_put_latency(raw, ms, ms);
    let fs = FsStore::new(counting.clone(), Codec::new(None, Compression::default()));
    let digest = chunks::DbDigest {
        size: 0,
        sha256: "00".repeat(32),
    };
    block_on(fs.write_params(&params(7, &digest))).unwrap();
    assert_eq!(counting.puts.load(std::sync::atomic::Ordering::SeqCst), 2);
    let most = counting.max_puts_in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(most, 2, "the two copies were written one after the other");
    assert_eq!(block_on(fs.read_params()).unwrap().seq, 7);
    assert_eq!(block_on(chunks::newest_listed_version(&fs)).unwrap(), Some(7));
}
