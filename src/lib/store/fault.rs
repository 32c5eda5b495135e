//! A store decorator that injects faults, for tests of the retry, integrity and
//! crash-recovery paths against a real backend.
//!
//! Faults: temporary errors (either before the operation reaches the store, or after it
//! succeeded, as when a reply is lost), added latency, short reads (a GET returns a
//! truncated body, as an undetected transport failure would), and a permanent failure
//! mode in which every operation fails with a given error.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::store::{ListPage, ObjectInfo, PutMode, Store, StoreError, StoreResult};

#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Probability that an operation fails with a temporary error.
    pub error_rate: f64,
    /// Of the injected errors, the share that happen after the operation was carried out.
    pub lost_reply_share: f64,
    /// Probability that a GET returns only part of the body.
    pub short_read_rate: f64,
    /// Latency added to every operation.
    pub latency: Option<Duration>,
    /// If set, every operation fails with this error.
    pub permanent: Option<StoreError>,
    /// While this file exists, every operation fails with a temporary error: a store
    /// that is down, switched from outside the process (tests of real mounts).
    pub down_while: Option<std::path::PathBuf>,
    pub seed: u64,
}

/// How many faults were injected, so tests can check they were exercised.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub errors: AtomicU64,
    pub short_reads: AtomicU64,
    pub operations: AtomicU64,
}

#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn Store>,
    config: Mutex<FaultConfig>,
    rng: Mutex<StdRng>,
    counts: Arc<FaultCounts>,
}

enum Fault {
    None,
    /// The operation is carried out, then its reply is "lost" (if it succeeded).
    After,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn Store>, config: FaultConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        FaultStore {
            inner,
            config: Mutex::new(config),
            rng: Mutex::new(rng),
            counts: Arc::default(),
        }
    }

    /// Change the faults while the store is in use.
    pub fn set_config(&self, config: FaultConfig) {
        *self.config.lock().unwrap() = config;
    }

    pub fn counts(&self) -> Arc<FaultCounts> {
        self.counts.clone()
    }

    async fn begin(&self, op: &str, key: &str) -> StoreResult<Fault> {
        self.counts.operations.fetch_add(1, Ordering::Relaxed);
        let (latency, permanent, error_rate, lost_share, down_while) = {
            let c = self.config.lock().unwrap();
            (
                c.latency,
                c.permanent.clone(),
                c.error_rate,
                c.lost_reply_share,
                c.down_while.clone(),
            )
        };
        if let Some(l) = latency {
            tokio::time::sleep(l).await;
        }
        if down_while.is_some_and(|p| p.exists()) {
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::temporary(format!(
                "{op} {key}: the store is down (injected)"
            )));
        }
        if let Some(e) = permanent {
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        let mut rng = self.rng.lock().unwrap();
        if rng.random_bool(error_rate.clamp(0.0, 1.0)) {
            if rng.random_bool(lost_share.clamp(0.0, 1.0)) {
                return Ok(Fault::After);
            }
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
            return Err(injected(op, key));
        }
        Ok(Fault::None)
    }

    async fn run<T>(&self, op: &str, key: &str, fut: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let fault = self.begin(op, key).await?;
        let result = fut.await;
        match fault {
            Fault::After if result.is_ok() => {
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
                Err(injected(op, key))
            }
            _ => result,
        }
    }

    fn maybe_truncate(&self, body: Bytes) -> Bytes {
        let rate = self.config.lock().unwrap().short_read_rate;
        let mut rng = self.rng.lock().unwrap();
        if !body.is_empty() && rng.random_bool(rate.clamp(0.0, 1.0)) {
            self.counts.short_reads.fetch_add(1, Ordering::Relaxed);
            let keep = rng.random_range(0..body.len());
            body.slice(..keep)
        } else {
            body
        }
    }
}

fn injected(op: &str, key: &str) -> StoreError {
    StoreError::temporary(format!("injected fault during {op} {key}"))
}

#[async_trait]
impl Store for FaultStore {
    async fn get(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        let body = self.run("GET", key, self.inner.get(key, max_len)).await?;
        Ok(self.maybe_truncate(body))
    }

    async fn get_authenticated(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        let body = self.run("GET", key, self.inner.get_authenticated(key, max_len)).await?;
        Ok(self.maybe_truncate(body))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let body = self.run("GET", key, self.inner.get_range(key, range)).await?;
        Ok(self.maybe_truncate(body))
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StoreResult<()> {
        self.run("PUT", key, self.inner.put(key, data, mode)).await
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        self.run("HEAD", key, self.inner.head(key)).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.run("DELETE", key, self.inner.delete(key)).await
    }

    async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
        self.run("DELETE", "(many)", self.inner.delete_many(keys)).await
    }

    async fn list(&self, prefix: &str, continuation: Option<String>) -> StoreResult<ListPage> {
        self.run("LIST", prefix, self.inner.list(prefix, continuation)).await
    }

    fn describe(&self) -> String {
        format!("fault({})", self.inner.describe())
    }
}
