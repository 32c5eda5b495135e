//! Retry temporary store failures with capped exponential backoff and jitter.
//!
//! Permanent failures (authentication, missing bucket, missing object) are returned at
//! once. A conditional put whose earlier attempt failed temporarily may in fact have
//! succeeded (the reply was lost); when the retry then reports "precondition failed",
//! the object is read back and the put counts as done if the bytes are ours.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rand::RngExt;

use crate::store::metrics::{Kind, METRICS};
use crate::store::{ListPage, ObjectInfo, PutMode, Store, StoreError, StoreResult};

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubled after each further failure.
    pub initial_delay: Duration,
    /// Upper bound of one delay (also for a server's `Retry-After`).
    pub max_delay: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    /// 20 ms doubling to at most 60 s between attempts, for up to 30 minutes: long enough
    /// to ride out a store restart or a network blip, short enough that a tool run by
    /// hand still ends.
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(60),
            give_up_after: Duration::from_secs(30 * 60),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` (attempt counts from 0), with jitter of
    /// ×1 to ×1.5; a server's `Retry-After` is honoured up to `max_delay`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_delay);
        }
        let base = self
            .initial_delay
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max_delay);
        let jitter: f64 = rand::rng().random_range(1.0..1.5);
        base.mul_f64(jitter).min(self.max_delay)
    }
}

/// Counters for `s3fsstat` and tests.
#[derive(Debug, Default)]
pub struct RetryStats {
    pub retries: AtomicU64,
    pub gave_up: AtomicU64,
}

#[derive(Debug)]
pub struct RetryStore {
    inner: Arc<dyn Store>,
    policy: RetryPolicy,
    stats: Arc<RetryStats>,
    /// Since when every attempt has failed without an answer, and the last failure: a
    /// store failing long is "down", and what waits for it gives up (see the cache).
    failing: std::sync::Mutex<(Option<Instant>, Option<String>)>,
}

impl RetryStore {
    pub fn new(inner: Arc<dyn Store>, policy: RetryPolicy) -> Self {
        RetryStore {
            inner,
            policy,
            stats: Arc::default(),
            failing: std::sync::Mutex::new((None, None)),
        }
    }

    pub fn stats(&self) -> Arc<RetryStats> {
        self.stats.clone()
    }

    /// An attempt that failed without an answer starts (or continues) an outage; any
    /// answer, "no such object" included, ends it.
    fn record_health<T>(&self, what: &str, result: &StoreResult<T>) {
        let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(e @ (StoreError::Temporary { .. } | StoreError::Unreachable(_))) => {
                f.0.get_or_insert_with(Instant::now);
                f.1 = Some(format!("{what}: {e}"));
            }
            _ => {
                if let Some(since) = f.0.take() {
                    log::info!("the store answers again (after {:.0?} of failures)", since.elapsed());
                }
            }
        }
    }

    /// Run `op` until it succeeds or fails permanently; each attempt is counted as one
    /// request of `kind` carrying `sent` bytes.
    async fn retry<T, F, Fut>(&self, what: &str, kind: Kind, sent: u64, mut op: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = StoreResult<T>> + Send,
    {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            METRICS.request(kind, sent);
            let began = Instant::now();
            let result = op().await;
            // Each attempt's latency, for `s3fsctrl log debug store::retry`: how a
            // workload's time splits between requests over a slow link.
            log::debug!(
                "{what}: {} in {:.1?}",
                if result.is_ok() { "done" } else { "failed" },
                began.elapsed()
            );
            if let Err(e) = &result
                && !matches!(e, StoreError::NotFound(_) | StoreError::PreconditionFailed(_))
            {
                METRICS.error();
            }
            self.record_health(what, &result);
            match result {
                Err(StoreError::Temporary { message, retry_after }) => {
                    let delay = self.policy.delay(attempt, retry_after);
                    if start.elapsed() + delay > self.policy.give_up_after {
                        self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
                        return Err(StoreError::Temporary {
                            message: format!(
                                "{what}: gave up after {} attempts over {:.0?}: {message}",
                                attempt + 1,
                                start.elapsed()
                            ),
                            retry_after: None,
                        });
                    }
                    log::debug!("{what}: {message}; retrying in {delay:.2?}");
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    METRICS.retry();
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl Store for RetryStore {
    async fn get(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        let body = self
            .retry(&format!("GET {key}"), Kind::Get, 0, || self.inner.get(key, max_len))
            .await?;
        METRICS.received(Kind::Get, body.len() as u64);
        Ok(body)
    }

    async fn get_authenticated(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        let body = self
            .retry(&format!("GET {key}"), Kind::Get, 0, || {
                self.inner.get_authenticated(key, max_len)
            })
            .await?;
        METRICS.received(Kind::Get, body.len() as u64);
        Ok(body)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let body = self
            .retry(&format!("GET {key}"), Kind::Get, 0, || {
                self.inner.get_range(key, range.clone())
            })
            .await?;
        METRICS.received(Kind::Get, body.len() as u64);
        Ok(body)
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StoreResult<()> {
        let mut failed_before = false;
        self.retry(&format!("PUT {key}"), Kind::Put, data.len() as u64, || {
            let data = data.clone();
            let mode = mode.clone();
            let first = !failed_before;
            failed_before = true;
            async move {
                match self.inner.put(key, data.clone(), mode.clone()).await {
                    Err(StoreError::PreconditionFailed(k)) if !first && mode != PutMode::Overwrite => {
                        // An earlier attempt may have landed: is the object ours?
                        match self.inner.get(key, data.len() as u64).await {
                            Ok(body) if body == data => Ok(()),
                            Ok(_) | Err(StoreError::NotFound(_) | StoreError::TooLarge { .. }) => {
                                Err(StoreError::PreconditionFailed(k))
                            }
                            Err(e) => Err(e),
                        }
                    }
                    other => other,
                }
            }
        })
        .await
    }

    fn health(&self) -> crate::store::Health {
        let f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        crate::store::Health {
            failing_for: f.0.map(|t| t.elapsed()),
            last_failure: f.1.clone(),
        }
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        self.retry(&format!("HEAD {key}"), Kind::Head, 0, || self.inner.head(key))
            .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.retry(&format!("DELETE {key}"), Kind::Delete, 0, || self.inner.delete(key))
            .await
    }

    async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
        self.retry(&format!("DELETE {} objects", keys.len()), Kind::Delete, 0, || {
            self.inner.delete_many(keys)
        })
        .await
    }

    async fn list(&self, prefix: &str, continuation: Option<String>) -> StoreResult<ListPage> {
        self.retry(&format!("LIST {prefix}"), Kind::List, 0, || {
            self.inner.list(prefix, continuation.clone())
        })
        .await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_and_are_capped() {
        let p = RetryPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
            give_up_after: Duration::from_secs(10),
        };
        let d0 = p.delay(0, None);
        assert!(
            d0 >= Duration::from_millis(20) && d0 <= Duration::from_millis(30),
            "{d0:?}"
        );
        let d3 = p.delay(3, None);
        assert!(
            d3 >= Duration::from_millis(160) && d3 <= Duration::from_millis(240),
            "{d3:?}"
        );
        assert_eq!(p.delay(30, None), Duration::from_secs(1));
        assert_eq!(p.delay(0, Some(Duration::from_millis(700))), Duration::from_millis(700));
        assert_eq!(p.delay(0, Some(Duration::from_secs(300))), Duration::from_secs(1));
    }
}
