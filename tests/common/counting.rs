//! A store decorator for tests: counts requests, holds each GET (and, if asked, each
//! PUT) for a fixed latency, and records the most of each it had in flight at once.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use s3fs::store::{ListPage, ObjectInfo, PutMode, Store, StoreResult};

/// A store that counts requests, holds each GET for `latency` and each PUT for
/// `put_latency`, and records the most GETs and the most PUTs it had in flight at once.
#[derive(Debug)]
pub struct Counting {
    pub inner: Arc<dyn Store>,
    pub latency: Duration,
    pub put_latency: Duration,
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub puts_in_flight: AtomicUsize,
    pub max_puts_in_flight: AtomicUsize,
}

impl Counting {
    pub fn new(inner: Arc<dyn Store>, latency: Duration) -> Arc<Counting> {
        Counting::with_put_latency(inner, latency, Duration::ZERO)
    }

    pub fn with_put_latency(inner: Arc<dyn Store>, latency: Duration, put_latency: Duration) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            latency,
            put_latency,
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            puts_in_flight: AtomicUsize::new(0),
            max_puts_in_flight: AtomicUsize::new(0),
        })
    }

    async fn timed_get<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let gauge = (&self.gets, &self.in_flight, &self.max_in_flight);
        timed(gauge, self.latency, f).await
    }

    pub fn reset(&self) {
        self.gets.store(0, Ordering::SeqCst);
        self.puts.store(0, Ordering::SeqCst);
        self.max_in_flight.store(0, Ordering::SeqCst);
        self.max_puts_in_flight.store(0, Ordering::SeqCst);
    }
}

/// Count one request in `count`, hold it for `latency` while it counts in `in_flight`,
/// and keep the most in flight at once in `max`.
async fn timed<T>(
    (count, in_flight, max): (&AtomicU64, &AtomicUsize, &AtomicUsize),
    latency: Duration,
    f: impl std::future::Future<Output = T>,
) -> T {
    count.fetch_add(1, Ordering::SeqCst);
    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    max.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(latency).await;
    let r = f.await;
    in_flight.fetch_sub(1, Ordering::SeqCst);
    r
}

#[async_trait]
impl Store for Counting {
    async fn get(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        self.timed_get(self.inner.get(key, max_len)).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.timed_get(self.inner.get_range(key, range)).await
    }
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StoreResult<()> {
        let gauge = (&self.puts, &self.puts_in_flight, &self.max_puts_in_flight);
        timed(gauge, self.put_latency, self.inner.put(key, data, mode)).await
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
        self.inner.list(prefix, continuation).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}
