//! The write-back block cache against a local store (no FUSE): round trips, upload and
//! dedup bookkeeping, eviction and back-pressure, crash recovery, faults, concurrency.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use s3fs::cache::{BlockCache, CacheConfig, recover_dirty};
use s3fs::codec::{Codec, Compression};
use s3fs::crypto::MasterKey;
use s3fs::fs_store::FsStore;
use s3fs::runtime::block_on;
use s3fs::store::fault::{FaultConfig, FaultStore};
use s3fs::store::local::LocalStore;
use s3fs::store::{Store, list_all};

const BS: u64 = 64 * 1024;

struct Fixture {
    dir: tempfile::TempDir,
    db: Arc<Mutex<Connection>>,
    db_path: PathBuf,
    raw: Arc<dyn Store>,
    key: MasterKey,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("store")).unwrap();
        let db_path = dir.path().join("meta.db");
        let conn = Connection::open(&db_path).unwrap();
        s3fs::meta::schema::create_filesystem(&conn, 0, 0, 1).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        let raw: Arc<dyn Store> = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
        let f = Fixture {
            dir,
            db: Arc::new(Mutex::new(conn)),
            db_path,
            raw,
            key: MasterKey::generate(),
        };
        for _ in 0..8 {
            f.new_inode();
        }
        f
    }

    /// Create a regular-file inode and return its number.
    fn new_inode(&self) -> u64 {
        let c = self.db.lock().unwrap();
        c.execute(
            "INSERT INTO inodes (uid, gid, mode, mtime_ns, atime_ns, ctime_ns, refcount) VALUES (0, 0, ?1, 1, 1, 1, 1)",
            [libc::S_IFREG | 0o644],
        )
        .unwrap();
        c.last_insert_rowid() as u64
    }

    fn fs_store(&self, store: Arc<dyn Store>) -> FsStore {
        FsStore::new(store, Codec::new(Some(self.key.clone()), Compression::default()))
    }

    fn cache_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, name: &str) -> CacheConfig {
        let mut c = CacheConfig::new(self.cache_dir(name), BS);
        c.min_free_bytes = Some(0);
        c.dirty_upload_delay = Duration::ZERO;
        c.max_threads = 2;
        c.max_connections = 4;
        c
    }

    fn open_with(&self, config: CacheConfig, store: Arc<dyn Store>) -> Arc<BlockCache> {
        BlockCache::open(config, self.db.clone(), self.db_path.clone(), self.fs_store(store)).unwrap()
    }

    fn open(&self, name: &str) -> Arc<BlockCache> {
        self.open_with(self.config(name), self.raw.clone())
    }

    fn data_objects(&self) -> Vec<String> {
        let mut v: Vec<String> = block_on(list_all(self.raw.as_ref(), "s3fs_data_"))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        v.sort();
        v
    }

    fn query(&self, sql: &str) -> i64 {
        self.db.lock().unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The refcounts match the rows pointing at each block and object, every object has
    /// its real size, and exactly the objects in the DB are in the store.
    fn check_consistent(&self) {
        assert_eq!(
            self.query(
                "SELECT count(*) FROM blocks b WHERE refcount != (SELECT count(*) FROM inode_blocks WHERE block_id = b.id)"
            ),
            0,
            "block refcounts"
        );
        assert_eq!(
            self.query(
                "SELECT count(*) FROM objects o WHERE refcount != (SELECT count(*) FROM blocks WHERE obj_id = o.id)"
            ),
            0,
            "object refcounts"
        );
        assert_eq!(self.query("SELECT count(*) FROM objects WHERE phys_size <= 0"), 0);
        assert_eq!(self.query("SELECT count(*) FROM blocks WHERE refcount <= 0"), 0);
        let ids: Vec<i64> = {
            let c = self.db.lock().unwrap();
            // Released objects stay in the store for retained metadata versions.
            let mut st = c
                .prepare("SELECT id FROM objects UNION SELECT id FROM released_objects ORDER BY id")
                .unwrap();
            st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        let mut expected: Vec<String> = ids.iter().map(|id| format!("s3fs_data_{id}")).collect();
        expected.sort();
        assert_eq!(self.data_objects(), expected, "objects in the store");
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    common::random_bytes(len, seed)
}

fn dirty_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".dirty"))
        .collect()
}

fn read_block(c: &BlockCache, ino: u64, blk: u64) -> Vec<u8> {
    c.read(ino, blk, 0, BS as u32).unwrap()
}

/// A write to a block past the end of its file creates the block without asking the DB
/// whether it is stored, so it completes while the DB is held (as by a batch of upload
/// commits).
#[test]
fn writes_past_the_end_of_a_file_do_not_wait_for_the_db() {
    let f = Fixture::new();
    let c = f.open("c");
    let ino = f.new_inode();
    let busy = f.db.lock().unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            c.write_past_end(ino, 0, 10, b"new file").unwrap();
            done.send(()).unwrap();
        });
        let answer = finished.recv_timeout(Duration::from_secs(60));
        drop(busy);
        answer.expect("the write waited for the DB");
    });
    assert_eq!(c.read(ino, 0, 10, 8).unwrap(), b"new file");
    c.upload_all().unwrap();
    f.check_consistent();
}

#[test]
fn write_read_round_trip_holes_and_truncate() {
    let f = Fixture::new();
    let c = f.open("c");
    let ino = f.new_inode();
    // Hole: nothing cached, nothing stored.
    assert!(c.read(ino, 0, 0, 100).unwrap().is_empty());
    assert_eq!(c.stats().entries, 0);
    // Partial writes at various offsets.
    c.write(ino, 0, 10, b"hello").unwrap();
    assert_eq!(c.read(ino, 0, 0, 100).unwrap(), b"\0\0\0\0\0\0\0\0\0\0hello");
    assert_eq!(c.read(ino, 0, 12, 2).unwrap(), b"ll");
    assert!(c.read(ino, 0, 15, 10).unwrap().is_empty());
    c.write(ino, 0, 12, b"LLOOO").unwrap();
    assert_eq!(c.read(ino, 0, 10, 100).unwrap(), b"heLLOOO");
    // A write at the end of the block.
    c.write(ino, 3, (BS - 3) as u32, b"end").unwrap();
    let b3 = read_block(&c, ino, 3);
    assert_eq!(b3.len(), BS as usize);
    assert!(b3[..BS as usize - 3].iter().all(|&b| b == 0));
    assert_eq!(&b3[BS as usize - 3..], b"end");
    // A write past the block is refused.
    assert_eq!(
        c.write(ino, 0, (BS - 1) as u32, b"xx").unwrap_err().errno(),
        libc::EINVAL
    );
    // truncate_block: cut, extend with zeros, create.
    c.truncate_block(ino, 0, 12).unwrap();
    assert_eq!(c.read(ino, 0, 0, 100).unwrap(), b"\0\0\0\0\0\0\0\0\0\0he");
    c.truncate_block(ino, 0, 20).unwrap();
    assert_eq!(c.read(ino, 0, 10, 100).unwrap(), b"he\0\0\0\0\0\0\0\0");
    c.truncate_block(ino, 5, 7).unwrap();
    assert_eq!(c.read(ino, 5, 0, 100).unwrap(), vec![0u8; 7]);
    c.truncate_block(ino, 6, 0).unwrap();
    assert!(c.read(ino, 6, 0, 100).unwrap().is_empty());

    // The same after a round trip through the store, in a fresh cache.
    c.upload_all().unwrap();
    c.shutdown();
    let fresh = f.open("fresh");
    assert_eq!(fresh.read(ino, 0, 10, 100).unwrap(), b"he\0\0\0\0\0\0\0\0");
    assert_eq!(read_block(&fresh, ino, 3), b3);
    assert_eq!(fresh.read(ino, 5, 0, 100).unwrap(), vec![0u8; 7]);
    assert!(fresh.read(ino, 1, 0, 100).unwrap().is_empty());
    // Truncating a stored, uncached block downloads it first.
    fresh.truncate_block(ino, 3, (BS - 2) as u32).unwrap();
    assert_eq!(fresh.read(ino, 3, (BS - 4) as u32, 10).unwrap(), b"\0e");
    fresh.write(ino, 0, 0, b"AB").unwrap();
    assert_eq!(fresh.read(ino, 0, 0, 12).unwrap(), b"AB\0\0\0\0\0\0\0\0he");
    fresh.upload_all().unwrap();
    f.check_consistent();
}

#[test]
fn upload_all_leaves_nothing_dirty_and_db_is_consistent() {
    let f = Fixture::new();
    let mut cfg = f.config("c");
    cfg.dirty_upload_delay = Duration::from_secs(3600);
    let c = f.open_with(cfg, f.raw.clone());
    let ino = f.new_inode();
    for blk in 0..5 {
        c.write(ino, blk, 0, &pattern(blk, BS as usize)).unwrap();
    }
    c.write(ino, 5, 0, &pattern(99, 1000)).unwrap();
    assert_eq!(dirty_files(&f.cache_dir("c")).len(), 6);
    assert_eq!(c.stats().dirty_entries, 6);
    assert!(f.data_objects().is_empty(), "nothing uploaded before the delay");
    c.upload_all().unwrap();
    assert!(dirty_files(&f.cache_dir("c")).is_empty());
    let s = c.stats();
    assert_eq!((s.dirty_entries, s.dirty_bytes, s.uploads, s.entries), (0, 0, 6, 6));
    // Two DB steps per uploaded block at most, fewer when they were batched.
    assert!((1..=12).contains(&s.upload_transactions), "{s:?}");
    assert_eq!(f.data_objects().len(), 6);
    assert_eq!(f.query("SELECT count(*) FROM inode_blocks"), 6);
    assert_eq!(
        f.query("SELECT size FROM blocks b JOIN inode_blocks ib ON ib.block_id = b.id WHERE blockno = 5"),
        1000
    );
    f.check_consistent();
    c.shutdown();
}

#[test]
fn a_block_written_to_its_end_is_uploaded_at_once_when_asked() {
    let f = Fixture::new();
    let mut cfg = f.config("c");
    cfg.dirty_upload_delay = Duration::from_secs(3600);
    cfg.upload_full_blocks = true;
    let c = f.open_with(cfg, f.raw.clone());
    let ino = f.new_inode();
    let half = BS as usize / 2;
    // Block 0 in two writes, the second reaching its end; block 1 whole at once. They
    // wait for the delay like any block a writer may come back to: block 2, only half
    // written, and block 3, whose end was written before its start.
    c.write(ino, 0, 0, &pattern(0, half)).unwrap();
    c.write(ino, 0, half as u32, &pattern(1, half)).unwrap();
    c.write(ino, 1, 0, &pattern(2, BS as usize)).unwrap();
    c.write(ino, 2, 0, &pattern(3, half)).unwrap();
    c.write(ino, 3, half as u32, &pattern(4, half)).unwrap();
    c.write(ino, 3, 0, &pattern(5, half)).unwrap();
    // Until the two full blocks are uploaded and clean (or a block due too soon is being
    // uploaded as well).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let settled = |s: &s3fs::cache::CacheStats| s.uploads >= 2 && s.uploads_in_flight == 0 && s.dirty_entries <= 2;
    while !settled(&c.stats()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        f.data_objects().len(),
        2,
        "the two full blocks are stored long before the delay"
    );
    let s = c.stats();
    assert_eq!(s.uploads, 2, "only the two full blocks went: {s:?}");
    assert_eq!((s.dirty_entries, s.dirty_bytes), (2, 3 * half as u64), "{s:?}");
    assert_eq!(
        f.query("SELECT count(*) FROM inode_blocks WHERE blockno IN (0, 1)"),
        2,
        "both full blocks are recorded"
    );
    c.upload_all().unwrap();
    f.check_consistent();
    c.shutdown();
}

/// A store that holds every PUT for 100 ms and records the most PUTs in flight at once.
#[derive(Debug)]
struct SlowPuts {
    inner: Arc<dyn Store>,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Store for SlowPuts {
    async fn get(&self, key: &str, max_len: u64) -> s3fs::store::StoreResult<bytes::Bytes> {
        self.inner.get(key, max_len).await
    }
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> s3fs::store::StoreResult<bytes::Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn put(&self, key: &str, data: bytes::Bytes, mode: s3fs::store::PutMode) -> s3fs::store::StoreResult<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = self.inner.put(key, data, mode).await;
        self.in_flight.fetch_sub(1, SeqCst);
        r
    }
    async fn head(&self, key: &str) -> s3fs::store::StoreResult<s3fs::store::ObjectInfo> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &str) -> s3fs::store::StoreResult<()> {
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: &[String]) -> s3fs::store::StoreResult<()> {
        self.inner.delete_many(keys).await
    }
    async fn list(
        &self,
        prefix: &str,
        continuation: Option<String>,
    ) -> s3fs::store::StoreResult<s3fs::store::ListPage> {
        self.inner.list(prefix, continuation).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[test]
fn uploads_of_big_blocks_in_flight_are_bounded_by_bytes() {
    let f = Fixture::new();
    const BIG: u64 = 8 << 20;
    let mut cfg = f.config("c");
    cfg.block_size = BIG;
    cfg.max_bytes = 1 << 30;
    cfg.max_threads = 1;
    cfg.max_connections = 32;
    // All due at once, at upload_all.
    cfg.dirty_upload_delay = Duration::from_secs(3600);
    let store = Arc::new(SlowPuts {
        inner: f.raw.clone(),
        in_flight: Default::default(),
        most: Default::default(),
    });
    let c = f.open_with(cfg, store.clone());
    let ino = f.new_inode();
    for blk in 0..12 {
        c.write(ino, blk, 0, &pattern(blk, BIG as usize)).unwrap();
    }
    c.upload_all().unwrap();
    // 32 MiB of 8 MiB blocks, plus one for the CPU thread: 5 uploads at most, where the
    // count alone (16) would have let all 12 go at once.
    let most = store.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=5).contains(&most), "{most} PUTs of 8 MiB in flight at once");
    assert_eq!(f.data_objects().len(), 12);
    f.check_consistent();
    c.shutdown();
}

#[test]
fn identical_blocks_are_stored_once() {
    let f = Fixture::new();
    let c = f.open("c");
    let (a, b) = (f.new_inode(), f.new_inode());
    let data = pattern(7, BS as usize);
    c.write(a, 0, 0, &data).unwrap();
    c.write(b, 4, 0, &data).unwrap();
    c.write(a, 1, 0, &data).unwrap();
    c.upload_all().unwrap();
    assert_eq!(f.data_objects().len(), 1);
    assert_eq!(f.query("SELECT refcount FROM blocks"), 3);
    // Concurrent uploads of the same content may both PUT; the loser's object is
    // deleted and its block deduplicated at commit.
    let stats = c.stats();
    assert!(stats.dedup_hits >= 2, "{stats:?}");
    f.check_consistent();

    // Rewriting a block with the same content changes nothing.
    let objects = f.data_objects();
    let uploads = c.stats().uploads;
    c.write(a, 0, 100, &data[100..200]).unwrap();
    c.upload_all().unwrap();
    assert_eq!(f.data_objects(), objects);
    assert_eq!(c.stats().uploads, uploads);
    assert_eq!(f.query("SELECT refcount FROM blocks"), 3);
    f.check_consistent();
    c.shutdown();
}

#[test]
fn replaced_block_object_is_released_once_unreferenced() {
    let f = Fixture::new();
    let c = f.open("c");
    let (a, b) = (f.new_inode(), f.new_inode());
    c.write(a, 0, 0, &pattern(1, 5000)).unwrap();
    c.upload_all().unwrap();
    let first = f.data_objects();
    assert_eq!(first.len(), 1);
    // Shared by a second inode: replacing it in one keeps the object.
    c.write(b, 0, 0, &pattern(1, 5000)).unwrap();
    c.upload_all().unwrap();
    assert_eq!(f.data_objects(), first);
    c.write(a, 0, 0, b"new content").unwrap();
    c.upload_all().unwrap();
    assert_eq!(f.data_objects().len(), 2);
    assert!(f.data_objects().contains(&first[0]));
    // Last reference gone: released, kept in the store for the metadata versions that
    // name it (deleted later by meta::versions::retention).
    c.write(b, 0, 0, b"other content").unwrap();
    c.upload_all().unwrap();
    let now = f.data_objects();
    assert_eq!(now.len(), 3);
    assert!(now.contains(&first[0]));
    let id = first[0].strip_prefix("s3fs_data_").unwrap();
    assert_eq!(f.query(&format!("SELECT count(*) FROM objects WHERE id = {id}")), 0);
    assert_eq!(
        f.query(&format!("SELECT count(*) FROM released_objects WHERE id = {id}")),
        1
    );
    f.check_consistent();
    let mut want = b"new content".to_vec();
    want.extend_from_slice(&pattern(1, 5000)[11..100]);
    assert_eq!(c.read(a, 0, 0, 100).unwrap(), want);
    c.shutdown();
}

#[test]
fn eviction_and_back_pressure() {
    let f = Fixture::new();
    let mut cfg = f.config("c");
    cfg.max_bytes = 4 * BS;
    cfg.max_entries = 6;
    // Counts the store's requests (and injects no fault).
    let counted = Arc::new(FaultStore::new(f.raw.clone(), FaultConfig::default()));
    let c = f.open_with(cfg, counted.clone());
    let ino = f.new_inode();
    // A writer filling 5x what the cache holds completes, waiting for uploads.
    let n = 20;
    for blk in 0..n {
        c.write(ino, blk, 0, &pattern(blk + 100, BS as usize)).unwrap();
        let s = c.stats();
        assert!(s.bytes <= 5 * BS, "cache holds {} bytes", s.bytes);
    }
    c.upload_all().unwrap();
    assert!(c.stats().bytes <= 4 * BS);
    // Everything reads back: evicted blocks are downloaded again, by the reads or by the
    // read-ahead before them (so misses alone would depend on its timing).
    let requests = || counted.counts().operations.load(std::sync::atomic::Ordering::Relaxed);
    let before = requests();
    for blk in 0..n {
        assert_eq!(read_block(&c, ino, blk), pattern(blk + 100, BS as usize), "block {blk}");
    }
    assert!(requests() >= before + 10, "{} downloads", requests() - before);
    assert!(c.stats().bytes <= 5 * BS);
    f.check_consistent();
    c.shutdown();

    // Dirty blocks are never evicted: with uploads held back by a long delay, dirty
    // data stays even when it exceeds the limit.
    let mut cfg = f.config("d");
    cfg.max_bytes = 2 * BS;
    cfg.dirty_upload_delay = Duration::from_secs(3600);
    let d = f.open_with(cfg, f.raw.clone());
    let ino2 = f.new_inode();
    d.write(ino2, 0, 0, b"dirty zero").unwrap();
    d.write(ino2, 1, 0, b"dirty one").unwrap();
    d.drop_clean();
    assert_eq!(d.stats().dirty_entries, 2);
    assert_eq!(d.read(ino2, 1, 0, 100).unwrap(), b"dirty one");
    // Cached clean blocks are dropped by drop_clean and read back from the store.
    for blk in 0..3 {
        assert_eq!(read_block(&d, ino, blk), pattern(blk + 100, BS as usize));
    }
    d.drop_clean();
    assert_eq!(d.stats().entries, d.stats().dirty_entries);
    assert_eq!(read_block(&d, ino, 2), pattern(102, BS as usize));
    assert_eq!(d.read(ino2, 0, 0, 100).unwrap(), b"dirty zero");
    d.upload_all().unwrap();
    d.shutdown();
}

#[test]
fn crash_recovery_uploads_dirty_files() {
    let f = Fixture::new();
    let ino = f.new_inode();
    let gone = f.new_inode();
    {
        let mut cfg = f.config("c");
        cfg.dirty_upload_delay = Duration::from_secs(3600);
        let c = f.open_with(cfg, f.raw.clone());
        for blk in 0..4 {
            c.write(ino, blk, 0, &pattern(blk, 40_000)).unwrap();
        }
        c.write(gone, 0, 0, b"of a deleted file").unwrap();
        c.flush_inode(ino).unwrap();
        // Crash: the cache is dropped with everything dirty.
    }
    assert_eq!(dirty_files(&f.cache_dir("c")).len(), 5);
    assert!(f.data_objects().is_empty());
    std::fs::write(f.cache_dir("c").join(format!("{ino}-0.tmp")), b"partial download").unwrap();
    f.db.lock()
        .unwrap()
        .execute("DELETE FROM inodes WHERE id = ?1", [gone as i64])
        .unwrap();

    let report = recover_dirty(
        f.config("c"),
        f.db.clone(),
        f.db_path.clone(),
        f.fs_store(f.raw.clone()),
    )
    .unwrap();
    assert_eq!(report.uploaded_blocks, 4);
    assert_eq!(report.discarded_files, 1);
    assert!(dirty_files(&f.cache_dir("c")).is_empty());
    assert!(!f.cache_dir("c").join(format!("{ino}-0.tmp")).exists());
    // Short blocks are stored in packs: 4 blocks, in fewer objects.
    assert_eq!(f.query("SELECT count(*) FROM blocks"), 4);
    assert!((1..4).contains(&f.data_objects().len()), "{:?}", f.data_objects());
    f.check_consistent();

    let fresh = f.open("fresh");
    for blk in 0..4 {
        assert_eq!(read_block(&fresh, ino, blk), pattern(blk, 40_000));
    }
    fresh.shutdown();
}

#[test]
fn write_during_upload_keeps_block_dirty() {
    let f = Fixture::new();
    let slow: Arc<dyn Store> = Arc::new(FaultStore::new(
        f.raw.clone(),
        FaultConfig {
            latency: Some(Duration::from_millis(400)),
            ..Default::default()
        },
    ));
    let c = f.open_with(f.config("c"), slow);
    let ino = f.new_inode();
    c.write(ino, 0, 0, b"first version").unwrap();
    let start = std::time::Instant::now();
    while c.stats().uploads_in_flight == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "upload never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    c.write(ino, 0, 0, b"SECOND").unwrap();
    // Reads during the upload see the local file.
    assert_eq!(c.read(ino, 0, 0, 100).unwrap(), b"SECONDversion");
    c.upload_all().unwrap();
    assert!(dirty_files(&f.cache_dir("c")).is_empty());
    c.shutdown();
    let fresh = f.open("fresh");
    assert_eq!(fresh.read(ino, 0, 0, 100).unwrap(), b"SECONDversion");
    fresh.shutdown();
    f.check_consistent();
}

#[test]
fn upload_failures_are_retried_and_nothing_is_lost() {
    let f = Fixture::new();
    let faulty = Arc::new(FaultStore::new(
        f.raw.clone(),
        FaultConfig {
            error_rate: 0.3,
            lost_reply_share: 0.3,
            seed: 42,
            ..Default::default()
        },
    ));
    let counts = faulty.counts();
    let c = f.open_with(f.config("c"), faulty.clone());
    let ino = f.new_inode();
    // Odd blocks are short (stored in packs), even ones full (objects of their own).
    let len = |blk: u64| if blk.is_multiple_of(2) { BS as usize } else { 3000 };
    for blk in 0..16 {
        c.write(ino, blk, 0, &pattern(blk + 500, len(blk))).unwrap();
    }
    // Replace half of them, so deletions run under faults too.
    for blk in 0..8 {
        c.write(ino, blk, 0, &pattern(blk + 900, len(blk))).unwrap();
    }
    c.upload_all().unwrap();
    assert!(
        counts.errors.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "faults were injected"
    );
    assert!(dirty_files(&f.cache_dir("c")).is_empty());
    c.shutdown();
    f.check_consistent();
    let fresh = f.open("fresh");
    for blk in 0..16 {
        let seed = if blk < 8 { blk + 900 } else { blk + 500 };
        assert_eq!(read_block(&fresh, ino, blk), pattern(seed, len(blk)), "block {blk}");
    }
    fresh.shutdown();
}

#[test]
fn remove_blocks_forgets_cached_and_pending_blocks() {
    let f = Fixture::new();
    let mut cfg = f.config("c");
    cfg.dirty_upload_delay = Duration::from_secs(3600);
    let c = f.open_with(cfg, f.raw.clone());
    let ino = f.new_inode();
    for blk in 0..4 {
        c.write(ino, blk, 0, &pattern(blk, 2000)).unwrap();
    }
    c.remove_blocks(ino, 2);
    assert_eq!(c.stats().dirty_entries, 2);
    assert_eq!(dirty_files(&f.cache_dir("c")).len(), 2);
    assert!(c.read(ino, 3, 0, 10).unwrap().is_empty());
    c.upload_all().unwrap();
    assert_eq!(f.query("SELECT count(*) FROM inode_blocks"), 2);
    f.check_consistent();
    c.shutdown();
}

#[test]
fn concurrent_writers_and_readers() {
    let f = Fixture::new();
    let mut cfg = f.config("c");
    cfg.max_bytes = 16 * BS;
    let c = f.open_with(cfg, f.raw.clone());
    let inodes: Vec<u64> = (0..4).map(|_| f.new_inode()).collect();
    let shared = f.new_inode();
    let chunk = 4096usize;
    let c = &*c;
    std::thread::scope(|s| {
        for (t, &ino) in inodes.iter().enumerate() {
            s.spawn(move || {
                for blk in 0..6u64 {
                    let data = pattern(ino * 100 + blk, BS as usize);
                    for (i, piece) in data.chunks(chunk).enumerate() {
                        c.write(ino, blk, (i * chunk) as u32, piece).unwrap();
                    }
                    // A shared block everyone writes to at its own offset.
                    c.write(shared, 0, (t * chunk) as u32, &pattern(t as u64, chunk))
                        .unwrap();
                }
            });
            s.spawn(move || {
                for _ in 0..15 {
                    for blk in 0..6u64 {
                        let got = c.read(ino, blk, 0, BS as u32).unwrap();
                        let want = pattern(ino * 100 + blk, BS as usize);
                        assert_eq!(got[..], want[..got.len()]);
                    }
                }
            });
        }
    });
    c.upload_all().unwrap();
    c.shutdown();
    let fresh = f.open("fresh");
    for &ino in &inodes {
        for blk in 0..6u64 {
            assert_eq!(read_block(&fresh, ino, blk), pattern(ino * 100 + blk, BS as usize));
        }
    }
    let got = fresh.read(shared, 0, 0, BS as u32).unwrap();
    for t in 0..inodes.len() {
        assert_eq!(got[t * chunk..(t + 1) * chunk], pattern(t as u64, chunk)[..]);
    }
    fresh.shutdown();
}

/// An object that disappears while a read fetches it (a truncate or a reflink released
/// its block meanwhile) makes the read look the block up again: a released block is a
/// hole, a block now held by another object is read from that one, and only an object
/// that its row still names is an error.
#[test]
fn an_object_gone_during_a_read_is_looked_up_again() {
    let f = Fixture::new();
    let slow = Arc::new(FaultStore::new(f.raw.clone(), FaultConfig::default()));
    let c = f.open_with(f.config("c"), slow.clone());
    let ino = f.new_inode();
    for blk in 0..5 {
        c.write(ino, blk, 0, &pattern(blk + 10, BS as usize)).unwrap();
    }
    c.upload_all().unwrap();
    c.drop_clean();
    let block_id = |blk: u64| {
        f.query(&format!(
            "SELECT block_id FROM inode_blocks WHERE inode = {ino} AND blockno = {blk}"
        ))
    };
    let object_of = |blk: u64| {
        let id = f.query(&format!("SELECT obj_id FROM blocks WHERE id = {}", block_id(blk)));
        format!("s3fs_data_{id}")
    };
    // Start reading `blk`; once its GET is under way (held back by the store's latency),
    // change the DB as `change` says and delete the object the read is fetching.
    let race = |blk: u64, change: &dyn Fn()| {
        let gone = object_of(blk);
        slow.set_config(FaultConfig {
            latency: Some(Duration::from_millis(300)),
            ..FaultConfig::default()
        });
        let before = slow.counts().operations.load(std::sync::atomic::Ordering::Relaxed);
        std::thread::scope(|s| {
            let reader = s.spawn(|| c.read(ino, blk, 0, BS as u32));
            while slow.counts().operations.load(std::sync::atomic::Ordering::Relaxed) == before {
                std::thread::sleep(Duration::from_millis(1));
            }
            change();
            block_on(f.raw.delete(&gone)).unwrap();
            let r = reader.join().unwrap();
            slow.set_config(FaultConfig::default());
            r
        })
    };

    // Released: the row is gone.
    let r = race(0, &|| {
        f.db.lock()
            .unwrap()
            .execute(
                &format!("DELETE FROM inode_blocks WHERE inode = {ino} AND blockno = 0"),
                [],
            )
            .unwrap();
    });
    assert_eq!(r.unwrap(), Vec::<u8>::new(), "a released block reads as a hole");

    // Shared: the row now names block 4's object. (Blocks 0, 2, 4: a reader that
    // jumps gets no read-ahead, which would fetch the next block before it is raced.)
    let four = block_id(4);
    let r = race(2, &|| {
        f.db.lock()
            .unwrap()
            .execute(
                &format!("UPDATE inode_blocks SET block_id = {four} WHERE inode = {ino} AND blockno = 2"),
                [],
            )
            .unwrap();
    });
    assert!(
        r.unwrap() == pattern(14, BS as usize),
        "the block is read from its new object"
    );

    // Damaged: the row still names the deleted object.
    let r = race(4, &|| {});
    let err = r.unwrap_err().to_string();
    assert!(err.contains("is missing from the store"), "{err}");
}

/// Clean files are not fsync'ed one by one: after a crash, the ones made since the last
/// synced mark are deleted at open (a power loss may have torn them) and fetched again;
/// older ones, and all of them after a clean shutdown, are kept.
#[test]
fn clean_files_made_after_the_last_sync_are_fetched_again_after_a_crash() {
    let f = Fixture::new();
    let ino = f.new_inode();
    let clean = |blk: u64| f.cache_dir("c").join(format!("{ino}-{blk}")).exists();
    {
        let c = f.open("c");
        for blk in 0..2 {
            c.write(ino, blk, 0, &pattern(blk + 60, 3000)).unwrap();
        }
        c.upload_all().unwrap();
        c.shutdown();
    }
    assert!(clean(0) && clean(1));
    // Older than the mark of the next open (which leaves a second of margin).
    std::thread::sleep(Duration::from_millis(1200));
    {
        let c = f.open("c");
        assert_eq!(c.stats().entries, 2, "a clean shutdown keeps every clean file");
        c.write(ino, 2, 0, &pattern(62, 3000)).unwrap();
        c.upload_all().unwrap();
        assert!(clean(2));
        // Crash: no shutdown, no mark since the open.
    }
    let c = f.open("c");
    assert!(clean(0) && clean(1), "made before the last mark: kept");
    assert!(!clean(2), "made after the last mark: deleted");
    assert_eq!(read_block(&c, ino, 2)[..3000], pattern(62, 3000)[..], "fetched again");
    c.shutdown();
}
