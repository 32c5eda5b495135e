//! The `local://` store: the conformance suite, crash-safety properties, and the retry
//! and fault-injection decorators on top of it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use s3fs::codec::{Codec, Compression};
use s3fs::crypto::MasterKey;
use s3fs::fs_store::FsStore;
use s3fs::runtime::block_on;
use s3fs::store::fault::{FaultConfig, FaultStore};
use s3fs::store::local::LocalStore;
use s3fs::store::retry::{RetryPolicy, RetryStore};
use s3fs::store::{PutMode, Store, StoreError, list_all, probe_conditional_writes};

fn local() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    (dir, Arc::new(store))
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        give_up_after: Duration::from_secs(60),
    }
}

#[test]
fn local_store_passes_conformance_suite() {
    let (_dir, store) = local();
    block_on(common::conformance::run_all(store.as_ref()));
}

#[test]
fn local_store_honours_conditional_writes() {
    let (_dir, store) = local();
    assert!(block_on(probe_conditional_writes(store.as_ref())).unwrap());
}

#[test]
fn missing_directory_is_exit_16() {
    let dir = tempfile::tempdir().unwrap();
    let e = s3fs::Error::from(LocalStore::open(&dir.path().join("nope")).unwrap_err());
    assert_eq!(e.code, s3fs::ExitCode::NoSuchBucket);
    assert!(e.message.contains("nope"), "{}", e.message);
}

#[test]
fn data_objects_are_sharded_and_no_temporary_file_is_left() {
    let (dir, store) = local();
    block_on(async {
        for id in [1u64, 1234, 1234567] {
            store
                .put(&format!("s3fs_data_{id}"), Bytes::from_static(b"d"), PutMode::Overwrite)
                .await
                .unwrap();
        }
    });
    assert!(
        dir.path()
            .join("s3fs_data_#/s3fs_data_123#/s3fs_data_123456#/s3fs_data_1234567")
            .is_file()
    );
    assert!(dir.path().join("s3fs_data_#/s3fs_data_123#/s3fs_data_1234").is_file());
    let mut stray = Vec::new();
    for e in walk(dir.path()) {
        if e.file_name().unwrap().to_string_lossy().starts_with(".tmp-") {
            stray.push(e);
        }
    }
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

/// Small data objects put at once share their flushes to disk: every put returns, and
/// every object reads back under its own name with its own content.
#[test]
fn concurrent_small_data_objects_all_land() {
    let (dir, store) = local();
    let puts: Vec<_> = (1..=64u64)
        .map(|id| {
            let store = store.clone();
            s3fs::runtime::runtime().spawn(async move {
                let body = Bytes::from(format!("object {id}").repeat(id as usize));
                store.put(&format!("s3fs_data_{id}"), body, PutMode::Overwrite).await
            })
        })
        .collect();
    block_on(async {
        for put in puts {
            put.await.unwrap().unwrap();
        }
        for id in 1..=64u64 {
            let got = store.get(&format!("s3fs_data_{id}"), u64::MAX).await.unwrap();
            assert_eq!(
                got,
                format!("object {id}").repeat(id as usize).as_bytes(),
                "object {id}"
            );
        }
        assert_eq!(list_all(store.as_ref(), "s3fs_data_").await.unwrap().len(), 64);
    });
    let stray: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|e| e.file_name().unwrap().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

/// Large objects are written with direct I/O, padded to the alignment and truncated
/// back: every size around the threshold and the alignment reads back exactly, on disk
/// too, including an object overwritten by a shorter one.
#[test]
fn objects_of_every_size_around_the_direct_io_threshold_read_back_exactly() {
    let (dir, store) = local();
    let sizes = [
        (128 << 10) - 1,
        128 << 10,
        (128 << 10) + 1,
        (1 << 20) + 4095,
        (1 << 20) + 4097,
        3 << 20,
        17,
    ];
    block_on(async {
        for (i, &n) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..n).map(|j| (j * 31 + i * 7) as u8).collect();
            for mode in [PutMode::Overwrite, PutMode::IfNoneMatch] {
                let key = format!("s3fs_data_{}{}", i + 1, matches!(mode, PutMode::IfNoneMatch) as u8);
                store.put(&key, Bytes::from(data.clone()), mode).await.unwrap();
                assert_eq!(store.get(&key, u64::MAX).await.unwrap(), data, "size {n}");
                assert_eq!(store.head(&key).await.unwrap().size, n as u64, "size {n}");
            }
        }
        // The same name, shorter content: no stale tail.
        let short = vec![5u8; (128 << 10) + 3];
        store
            .put("s3fs_data_61", Bytes::from(short.clone()), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(store.get("s3fs_data_61", u64::MAX).await.unwrap(), short);
    });
    let on_disk: Vec<u64> = walk(dir.path())
        .iter()
        .filter(|p| p.is_file())
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    let mut expected: Vec<u64> = sizes.iter().flat_map(|&n| [n as u64, n as u64]).collect();
    expected[10] = (128 << 10) + 3;
    let (mut a, mut b) = (on_disk, expected);
    a.sort();
    b.sort();
    assert_eq!(a, b, "file sizes in the store directory");
}

/// A temporary file as a crash would leave it is never listed or read as an object.
#[test]
fn leftover_temporary_files_are_invisible() {
    let (dir, store) = local();
    std::fs::write(dir.path().join(".tmp-999-0"), b"half an object").unwrap();
    block_on(store.put("s3fs_params", Bytes::from_static(b"p"), PutMode::Overwrite)).unwrap();
    let keys: Vec<String> = block_on(list_all(store.as_ref(), ""))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, vec!["s3fs_params".to_string()]);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// With 10 % of requests failing (half of them after the operation took effect, as when
/// a reply is lost), every operation still succeeds through the retry layer, and the
/// whole conformance suite passes.
#[test]
fn ten_percent_failures_are_absorbed_by_retries() {
    let (_dir, raw) = local();
    let config = FaultConfig {
        error_rate: 0.10,
        lost_reply_share: 0.5,
        seed: 7,
        ..Default::default()
    };
    let faulty = Arc::new(FaultStore::new(raw, config));
    let retry = RetryStore::new(faulty.clone(), fast_retries());
    let stats = retry.stats();
    block_on(common::conformance::run_all(&retry));
    let injected = faulty.counts().errors.load(std::sync::atomic::Ordering::Relaxed);
    let ops = faulty.counts().operations.load(std::sync::atomic::Ordering::Relaxed);
    assert!(injected > ops / 20, "faults were injected: {injected} of {ops}");
    assert_eq!(
        stats.retries.load(std::sync::atomic::Ordering::Relaxed),
        injected,
        "every injected fault was retried"
    );
}

/// A conditional create whose reply was lost is retried; the retry sees the object that
/// the first attempt wrote and must report success, not "precondition failed".
#[test]
fn conditional_put_with_lost_reply_succeeds() {
    let (_dir, raw) = local();
    let config = FaultConfig {
        error_rate: 1.0,
        lost_reply_share: 1.0,
        seed: 1,
        ..Default::default()
    };
    let faulty = Arc::new(FaultStore::new(raw.clone(), config));
    let retry = RetryStore::new(faulty.clone(), fast_retries());
    block_on(async {
        // First attempt lands but "fails"; stop injecting so the retry gets through.
        let f = faulty.clone();
        let put = retry.put("k", Bytes::from_static(b"mine"), PutMode::IfNoneMatch);
        let heal = async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            f.set_config(FaultConfig::default());
        };
        let (r, ()) = tokio::join!(put, heal);
        r.unwrap();
        assert_eq!(raw.get("k", u64::MAX).await.unwrap(), Bytes::from_static(b"mine"));
        // Someone else's object under the name is still a conflict.
        assert!(matches!(
            retry.put("k", Bytes::from_static(b"other"), PutMode::IfNoneMatch).await,
            Err(StoreError::PreconditionFailed(_))
        ));
    });
}

/// A permanent failure is not retried and comes back at once with its message.
#[test]
fn permanent_failure_is_reported_at_once() {
    let (_dir, raw) = local();
    let config = FaultConfig {
        permanent: Some(StoreError::AccessDenied("bucket policy forbids PUT".into())),
        ..Default::default()
    };
    let retry = RetryStore::new(Arc::new(FaultStore::new(raw, config)), RetryPolicy::default());
    let start = std::time::Instant::now();
    let e = block_on(retry.put("k", Bytes::from_static(b"x"), PutMode::Overwrite)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(e, StoreError::AccessDenied("bucket policy forbids PUT".into()));
    let e: s3fs::Error = e.into();
    assert_eq!(e.code, s3fs::ExitCode::AccessDenied);
}

/// Temporary failures that never stop end in a clear error once the retry budget is spent.
#[test]
fn endless_temporary_failures_give_up_with_a_clear_error() {
    let (_dir, raw) = local();
    let config = FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    };
    let policy = RetryPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
        give_up_after: Duration::from_millis(200),
    };
    let retry = RetryStore::new(Arc::new(FaultStore::new(raw, config)), policy);
    let e = block_on(retry.get("k", u64::MAX)).unwrap_err();
    assert!(e.is_temporary());
    assert!(e.to_string().contains("gave up after"), "{e}");
}

/// Short reads (a truncated body, as an undetected transport failure would give) are
/// caught by the codec's integrity check and the object is fetched again.
#[test]
fn short_reads_are_detected_and_refetched() {
    let (_dir, raw) = local();
    for key in [None, Some(MasterKey::generate())] {
        let writer = FsStore::new(raw.clone(), Codec::new(key.clone(), Compression::default()));
        let payloads: Vec<Vec<u8>> = (0..40)
            .map(|i| (0..20_000).map(|j| ((i * j) % 251) as u8).collect())
            .collect();
        block_on(async {
            for (i, p) in payloads.iter().enumerate() {
                writer.put(&format!("obj{i}"), p, PutMode::Overwrite).await.unwrap();
            }
        });
        let config = FaultConfig {
            short_read_rate: 0.2,
            seed: 3,
            ..Default::default()
        };
        let faulty = Arc::new(FaultStore::new(raw.clone(), config));
        let reader = FsStore::new(faulty.clone(), Codec::new(key, Compression::default()));
        block_on(async {
            for (i, p) in payloads.iter().enumerate() {
                assert_eq!(&reader.get(&format!("obj{i}"), u64::MAX).await.unwrap(), p);
            }
        });
        assert!(
            faulty.counts().short_reads.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "short reads were injected"
        );
    }
}

/// An object damaged at rest is reported as corrupt, naming it, never returned as data.
#[test]
fn object_corrupt_at_rest_is_an_error() {
    let (dir, raw) = local();
    let fs = FsStore::new(raw, Codec::new(Some(MasterKey::generate()), Compression::default()));
    block_on(fs.put("s3fs_params", b"superblock", PutMode::Overwrite)).unwrap();
    let path = dir.path().join("s3fs_params");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let e = block_on(fs.get("s3fs_params", 1 << 16)).unwrap_err();
    assert!(
        e.message.contains("s3fs_params") && e.message.contains("corrupt"),
        "{}",
        e.message
    );
}

/// A store whose listing never ends (the same page, or the same continuation, again and
/// again): `list_all` refuses instead of looping forever.
#[test]
fn a_listing_that_does_not_advance_is_refused() {
    use async_trait::async_trait;
    use s3fs::store::{ListPage, ObjectInfo, StoreResult};

    #[derive(Debug)]
    struct Endless {
        inner: LocalStore,
        same_token: bool,
    }

    #[async_trait]
    impl Store for Endless {
        async fn get(&self, key: &str, max_len: u64) -> StoreResult<bytes::Bytes> {
            self.inner.get(key, max_len).await
        }
        async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> StoreResult<bytes::Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn put(&self, key: &str, data: bytes::Bytes, mode: PutMode) -> StoreResult<()> {
            self.inner.put(key, data, mode).await
        }
        async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
            self.inner.head(key).await
        }
        async fn delete(&self, key: &str) -> StoreResult<()> {
            self.inner.delete(key).await
        }
        async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
            self.inner.delete_many(keys).await
        }
        async fn list(&self, prefix: &str, continuation: Option<String>) -> StoreResult<ListPage> {
            let mut page = self.inner.list(prefix, None).await?;
            page.next = Some(if self.same_token {
                "again".to_owned()
            } else {
                format!("{}x", continuation.unwrap_or_default())
            });
            Ok(page)
        }
        fn describe(&self) -> String {
            "endless".into()
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let inner = LocalStore::open(dir.path()).unwrap();
    block_on(inner.put("s3fs_a", bytes::Bytes::from_static(b"a"), PutMode::Overwrite)).unwrap();
    for same_token in [true, false] {
        let store = Endless {
            inner: LocalStore::open(dir.path()).unwrap(),
            same_token,
        };
        let e = block_on(s3fs::store::list_all(&store, "s3fs_")).unwrap_err();
        assert!(e.to_string().contains("does not advance"), "{e}");
    }
}
