//! Packs and read-ahead through `fs::Filesystem` with the block cache, without FUSE:
//! small files stored together and read back through an empty cache (local and Garage),
//! dedup across packs, space freed only when a pack is empty, and read-ahead that keeps
//! several GETs in flight for a sequential reader and none extra for a random one.

mod common;

use common::counting::Counting;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use s3fs::cache::{BlockCache, CacheConfig};
use s3fs::codec::{Codec, Compression};
use s3fs::fs::{Ctx, Filesystem};
use s3fs::fs_store::FsStore;
use s3fs::fsck::checks::{Findings, check_db};
use s3fs::runtime::block_on;
use s3fs::store::local::LocalStore;
use s3fs::store::{StorageUrl, Store, list_all, open_store};

const BS: u64 = 64 * 1024;
const ROOT: u64 = 1;
const CTX: Ctx = Ctx { uid: 0, gid: 0, pid: 1 };

struct Setup {
    dir: tempfile::TempDir,
    db: std::path::PathBuf,
    fs: Arc<Filesystem>,
    cache: Arc<BlockCache>,
    store: Arc<Counting>,
    caches: Mutex<u32>,
}

fn local_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    Arc::new(LocalStore::open(&store_dir).unwrap())
}

fn garage_store() -> Arc<dyn Store> {
    let server = common::s3_server("GARAGE");
    let url = StorageUrl::parse(&server.url_with_prefix("packs")).unwrap();
    open_store(&url, &server.options, Some(server.credentials())).unwrap()
}

/// A new filesystem on `raw` (behind a counting store adding `latency` to GETs), with a
/// block cache uploading at once.
fn setup(dir: tempfile::TempDir, raw: Arc<dyn Store>, latency: Duration) -> Setup {
    let db = dir.path().join("meta.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    s3fs::meta::schema::create_filesystem(&conn, 0, 0, 1).unwrap();
    drop(conn);
    let store = Counting::new(raw, latency);
    let fs = Arc::new(Filesystem::open(&db, BS).unwrap());
    let cache = new_cache(dir.path(), &db, &fs, &store, "cache0", |_| {});
    Setup {
        dir,
        db,
        fs,
        cache,
        store,
        caches: Mutex::new(0),
    }
}

/// A block cache uploading at once, its configuration changed by `tune` first.
fn new_cache(
    dir: &std::path::Path,
    db: &std::path::Path,
    fs: &Arc<Filesystem>,
    store: &Arc<Counting>,
    name: &str,
    tune: impl FnOnce(&mut CacheConfig),
) -> Arc<BlockCache> {
    let mut config = CacheConfig::new(dir.join(name), BS);
    config.dirty_upload_delay = Duration::ZERO;
    tune(&mut config);
    let fs_store = FsStore::new(store.clone(), Codec::new(None, Compression::default()));
    let cache = BlockCache::open(config, fs.db(), db.to_path_buf(), fs_store).unwrap();
    fs.attach_cache(cache.clone());
    cache
}

impl Setup {
    /// Upload everything, then reopen the filesystem with an empty cache: every read
    /// goes to the store.
    fn with_empty_cache(&mut self) {
        self.cache.upload_all().unwrap();
        self.reopen(|_| {});
        self.store.reset();
    }

    /// Shut the cache down and reopen the filesystem with a new, empty cache configured
    /// by `tune`.
    fn reopen(&mut self, tune: impl FnOnce(&mut CacheConfig)) {
        self.cache.shutdown();
        self.fs = Arc::new(Filesystem::open(&self.db, BS).unwrap());
        let n = {
            let mut n = self.caches.lock().unwrap();
            *n += 1;
            *n
        };
        let name = format!("cache{n}");
        self.cache = new_cache(self.dir.path(), &self.db, &self.fs, &self.store, &name, tune);
    }

    fn query(&self, sql: &str) -> i64 {
        self.fs.db().lock().unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn data_objects(&self) -> usize {
        block_on(list_all(self.store.as_ref(), "s3fs_data_")).unwrap().len()
    }

    fn write_file(&self, name: &str, data: &[u8]) -> u64 {
        let ino = self.fs.create(&CTX, ROOT, name.as_bytes(), 0o100644, 0).unwrap().ino;
        self.fs.write(&CTX, ino, 0, data).unwrap();
        ino
    }

    fn read_file(&self, ino: u64) -> Vec<u8> {
        let size = self.fs.getattr(ino).unwrap().size;
        let mut out = Vec::new();
        while (out.len() as u64) < size {
            let chunk = self.fs.read(ino, out.len() as u64, 128 * 1024).unwrap();
            assert!(!chunk.is_empty(), "short read of inode {ino}");
            out.extend_from_slice(&chunk);
        }
        out
    }

    fn assert_fsck_clean(&self) {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut out = Findings::new();
        check_db(&conn, BS, &mut |_, _, _| {}, &mut out).unwrap();
        let items: Vec<String> = out.items.iter().map(|f| f.to_string()).collect();
        assert!(out.is_clean(), "fsck found: {items:?}");
    }
}

/// `n` small files of 0 to 20,000 bytes (every tenth a copy of the first) and a file
/// of 5.5 blocks; returns `(inode, content)` of each.
fn write_tree(s: &Setup, n: usize) -> Vec<(u64, Vec<u8>)> {
    let mut files: Vec<(u64, Vec<u8>)> = Vec::new();
    for i in 0..n {
        let data = if i % 10 == 9 {
            files[0].1.clone()
        } else {
            common::random_bytes((i * 7919) % 20_000, i as u64)
        };
        files.push((s.write_file(&format!("small{i}"), &data), data));
    }
    let big = common::random_bytes(5 * BS as usize + BS as usize / 2, 999);
    files.push((s.write_file("big", &big), big));
    files
}

fn round_trip(raw: Arc<dyn Store>) {
    let mut s = setup(tempfile::tempdir().unwrap(), raw, Duration::ZERO);
    let files = write_tree(&s, 300);
    s.cache.upload_all().unwrap();
    // 270 distinct small contents and the big file's tail in packs; its 5 full blocks
    // are objects of their own.
    let packed = s.query("SELECT count(*) FROM blocks WHERE phys_len > 0");
    let own = s.query("SELECT count(*) FROM blocks WHERE phys_len = 0");
    assert!(packed >= 270, "{packed} blocks in packs");
    assert_eq!(own, 5, "full blocks are objects of their own");
    let objects = s.data_objects();
    assert!(objects <= 5 + 10, "{objects} objects for {} blocks", packed + own);
    let puts = s.store.puts.load(Ordering::SeqCst);
    assert!(puts <= 5 + 10, "{puts} PUTs");
    s.assert_fsck_clean();

    s.with_empty_cache();
    for (ino, data) in &files {
        assert!(s.read_file(*ino) == *data, "inode {ino} differs after the round trip");
    }
    // A cold read of a block in a pack brings its neighbours along.
    let gets = s.store.gets.load(Ordering::SeqCst);
    assert!(gets <= 5 + 10, "{gets} GETs to read back {} files", files.len());
    s.cache.shutdown();
}

#[test]
fn a_tree_of_small_files_and_a_big_file_round_trip_through_packs_on_local() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(local_store(dir.path()));
}

#[test]
fn a_tree_of_small_files_and_a_big_file_round_trip_through_packs_on_garage() {
    round_trip(garage_store());
}

#[test]
fn blocks_are_deduplicated_across_packs() {
    let dir = tempfile::tempdir().unwrap();
    let raw = local_store(dir.path());
    let s = setup(dir, raw, Duration::ZERO);
    let content = common::random_bytes(5000, 1);
    let a = s.write_file("a", &content);
    s.cache.upload_all().unwrap();
    let objects = s.data_objects();
    // Later, in another pack, the same content with something new beside it.
    let b = s.write_file("b", &content);
    let c = s.write_file("c", &common::random_bytes(7000, 2));
    s.cache.upload_all().unwrap();
    assert_eq!(s.query("SELECT count(*) FROM blocks"), 2);
    assert_eq!(s.data_objects(), objects + 1, "only the new content is stored");
    let block = |ino: u64| {
        s.fs.db()
            .lock()
            .unwrap()
            .query_row(
                "SELECT block_id FROM inode_blocks WHERE inode = ?1",
                [ino as i64],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
    };
    assert_eq!(block(a), block(b));
    assert_ne!(block(a), block(c));
    assert_eq!(
        s.query("SELECT refcount FROM blocks WHERE id = (SELECT min(id) FROM blocks)"),
        2
    );
    s.assert_fsck_clean();
    s.cache.shutdown();
}

/// Small files due one at a time, far apart (a long backup's files become due one by one
/// after the upload delay), share a pack while nothing waits for them, instead of making
/// a pack each; a sync (`upload_all`) seals the open pack at once, without waiting out
/// its linger.
#[test]
fn a_trickle_of_small_files_shares_a_pack_until_a_sync_seals_it() {
    let dir = tempfile::tempdir().unwrap();
    let raw = local_store(dir.path());
    let mut s = setup(dir, raw, Duration::ZERO);
    let linger = Duration::from_secs(60);
    s.reopen(|c| c.pack_linger = linger);
    let files: Vec<(u64, Vec<u8>)> = (0..12u64)
        .map(|i| {
            let data = common::random_bytes(3000, 100 + i);
            let ino = s.write_file(&format!("t{i}"), &data);
            std::thread::sleep(Duration::from_millis(60));
            (ino, data)
        })
        .collect();
    let started = std::time::Instant::now();
    s.cache.upload_all().unwrap();
    assert!(
        started.elapsed() < linger / 2,
        "the sync waited {:?} for the open pack",
        started.elapsed()
    );
    let packs = s.data_objects();
    assert!(
        (1..=2).contains(&packs),
        "12 files trickled in over 0.7 s made {packs} packs"
    );
    s.with_empty_cache();
    for (ino, data) in &files {
        assert_eq!(&s.read_file(*ino), data, "inode {ino}");
    }
    s.assert_fsck_clean();
    s.cache.shutdown();
}

#[test]
fn a_file_deleted_inside_a_pack_releases_its_space_only_when_the_pack_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let raw = local_store(dir.path());
    let s = setup(dir, raw.clone(), Duration::ZERO);
    for i in 0..10u64 {
        s.write_file(&format!("f{i}"), &common::random_bytes(9000, i));
    }
    s.cache.upload_all().unwrap();
    // A pack of two blocks or more (which of the open packs a block joins is a race),
    // and the files stored in it: (name, inode).
    let conn = s.fs.db();
    let (pack, files): (i64, Vec<(String, u64)>) = {
        let c = conn.lock().unwrap();
        let pack: i64 = c
            .query_row(
                "SELECT obj_id FROM blocks GROUP BY obj_id HAVING count(*) >= 2 ORDER BY obj_id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut st = c
            .prepare(
                "SELECT n.name, ib.inode FROM inode_blocks ib JOIN blocks b ON b.id = ib.block_id
                 JOIN contents_v n ON n.inode = ib.inode WHERE b.obj_id = ?1 ORDER BY ib.inode",
            )
            .unwrap();
        let files = st
            .query_map([pack], |r| {
                Ok((String::from_utf8(r.get(0)?).unwrap(), r.get::<_, i64>(1)? as u64))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (pack, files)
    };
    let key = format!("s3fs_data_{pack}");
    let stored = || {
        block_on(list_all(raw.as_ref(), "s3fs_data_"))
            .unwrap()
            .into_iter()
            .any(|o| o.key == key)
    };
    let garbage = |s: &Setup| {
        let db = s.fs.db();
        let c = db.lock().unwrap();
        let live: i64 = c
            .query_row(
                "SELECT coalesce(sum(phys_len), 0) FROM blocks WHERE obj_id = ?1",
                [pack],
                |r| r.get(0),
            )
            .unwrap();
        let size: i64 = c
            .query_row("SELECT phys_size FROM objects WHERE id = ?1", [pack], |r| r.get(0))
            .unwrap();
        size - live
    };
    assert!(stored());
    assert_eq!(garbage(&s), 0);

    // Every file of the pack but the last: the pack stays, its garbage grows.
    let (last, others) = files.split_last().unwrap();
    for (name, ino) in others {
        s.fs.unlink(ROOT, name.as_bytes()).unwrap();
        s.fs.forget(*ino, 1);
        s.cache.upload_all().unwrap();
        assert!(stored(), "the pack still holds {}", last.0);
        assert!(garbage(&s) > 0, "{name}'s segment is garbage");
        s.assert_fsck_clean();
    }
    // The last one: the pack is released, whole. It stays in the store while retained
    // metadata versions name it (tests/retention.rs shows its deletion after that).
    s.fs.unlink(ROOT, last.0.as_bytes()).unwrap();
    s.fs.forget(last.1, 1);
    s.cache.upload_all().unwrap();
    assert_eq!(s.query(&format!("SELECT count(*) FROM objects WHERE id = {pack}")), 0);
    assert_eq!(
        s.query(&format!("SELECT count(*) FROM released_objects WHERE id = {pack}")),
        1,
        "an empty pack is released"
    );
    assert!(stored(), "and kept for the metadata versions that name it");
    s.assert_fsck_clean();
    s.cache.shutdown();
}

/// Read `blocks` of a file of 32 blocks through an empty cache, one FUSE-sized read
/// after the other, from a store that takes 20 ms per GET: returns the most GETs that
/// were in flight at once, and the GETs.
fn gets_in_flight(order: impl Iterator<Item = u64>) -> (usize, u64) {
    let dir = tempfile::tempdir().unwrap();
    let raw = local_store(dir.path());
    let mut s = setup(dir, raw, Duration::from_millis(20));
    let data = common::random_bytes(32 * BS as usize, 5);
    let ino = s.write_file("f", &data);
    s.with_empty_cache();
    for b in order {
        let mut at = b * BS;
        while at < (b + 1) * BS {
            let got = s.fs.read(ino, at, 16 * 1024).unwrap();
            assert_eq!(got, data[at as usize..at as usize + got.len()], "block {b}");
            at += got.len() as u64;
        }
    }
    let r = (
        s.store.max_in_flight.load(Ordering::SeqCst),
        s.store.gets.load(Ordering::SeqCst),
    );
    s.cache.shutdown();
    r
}

#[test]
fn a_sequential_reader_keeps_several_gets_in_flight_and_a_random_one_does_not() {
    let (sequential, gets) = gets_in_flight(0..32);
    assert!(
        sequential >= 4,
        "a sequential read had at most {sequential} GETs in flight"
    );
    assert!(gets <= 32 + 2, "{gets} GETs for 32 blocks");
    // The blocks after the second one are fetched along with it, not after it.
    let (two, _) = gets_in_flight(0..2);
    assert!(two >= 3, "reading 2 blocks had at most {two} GETs in flight");
    // Stride 7 over 32 blocks: never the block after the last one read.
    let (random, gets) = gets_in_flight((0..32).map(|i| (i * 7) % 32));
    assert_eq!(random, 1, "a random read had {random} GETs in flight");
    assert_eq!(gets, 32, "a random reader fetches only what it reads");
}

#[test]
fn a_mostly_garbage_pack_is_repacked_and_its_blocks_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let raw = local_store(dir.path());
    let mut s = setup(dir, raw.clone(), Duration::ZERO);
    let files: Vec<(u64, Vec<u8>)> = (0..30)
        .map(|i| {
            let data = common::random_bytes(4000 + i * 10, 70 + i as u64);
            (s.write_file(&format!("f{i}"), &data), data)
        })
        .collect();
    s.cache.upload_all().unwrap();
    let packs_before = block_on(list_all(raw.as_ref(), "s3fs_data_")).unwrap();
    // Nothing to repack yet.
    assert!(!s.cache.repack_due().unwrap());
    assert_eq!(s.cache.repack().unwrap().moved_blocks, 0);

    // Delete all but every fifth file: the packs are mostly garbage.
    let mut kept = Vec::new();
    for (i, (ino, data)) in files.into_iter().enumerate() {
        if i % 5 == 0 {
            kept.push((ino, data));
        } else {
            s.fs.unlink(ROOT, format!("f{i}").as_bytes()).unwrap();
            s.fs.forget(ino, 1);
        }
    }
    s.cache.upload_all().unwrap();
    assert!(s.cache.repack_due().unwrap());
    let r = s.cache.repack().unwrap();
    // The kept blocks of the packs that were at least half garbage (which pack a block
    // joined is a race, so not necessarily all of them).
    assert!((1..=kept.len() as u64).contains(&r.moved_blocks), "{r:?}");
    let retired: Vec<String> = r.retired.clone();
    assert!(!retired.is_empty() && r.freed_bytes > 0, "{r:?}");
    assert!(!s.cache.repack_due().unwrap(), "no pack is half garbage any more");
    s.assert_fsck_clean();
    // The old packs are the caller's to delete (after it has published metadata
    // without them); their blocks read back from the new pack.
    block_on(raw.delete_many(&retired)).unwrap();
    let left = block_on(list_all(raw.as_ref(), "s3fs_data_")).unwrap();
    assert!(
        retired.iter().all(|r| left.iter().all(|o| &o.key != r)),
        "the retired packs are gone: {left:?}"
    );
    assert!(left.len() <= packs_before.len(), "{left:?} after {packs_before:?}");
    s.with_empty_cache();
    for (ino, data) in &kept {
        assert!(s.read_file(*ino) == *data, "inode {ino} after the repack");
    }
    s.cache.shutdown();
}
