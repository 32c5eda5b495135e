//! Process-wide counters of store requests, for `s3fsstat`: requests and bytes by kind,
//! failed attempts and retries. Counted once per attempt by [`super::retry::RetryStore`],
//! which every store of a mount sits behind. One mount is one process, so global
//! counters are the mount's counters.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The kinds of request, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Get,
    Put,
    Head,
    Delete,
    List,
}

const KINDS: usize = 5;

#[derive(Debug, Default)]
struct Counter {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// The counters. Use [`METRICS`].
#[derive(Debug, Default)]
pub struct Metrics {
    by_kind: [Counter; KINDS],
    errors: AtomicU64,
    retries: AtomicU64,
}

pub static METRICS: Metrics = Metrics {
    by_kind: [const {
        Counter {
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }; KINDS],
    errors: AtomicU64::new(0),
    retries: AtomicU64::new(0),
};

/// Requests and payload bytes of one kind (bytes received for GET, sent for PUT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindSnapshot {
    pub requests: u64,
    pub bytes: u64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub get: KindSnapshot,
    pub put: KindSnapshot,
    pub head: KindSnapshot,
    pub delete: KindSnapshot,
    pub list: KindSnapshot,
    /// Attempts that failed (a missing object asked for is not an error).
    pub errors: u64,
    /// Attempts repeated after a temporary failure.
    pub retries: u64,
}

impl Metrics {
    pub fn request(&self, kind: Kind, bytes: u64) {
        let c = &self.by_kind[kind as usize];
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn received(&self, kind: Kind, bytes: u64) {
        self.by_kind[kind as usize].bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let k = |kind: Kind| {
            let c = &self.by_kind[kind as usize];
            KindSnapshot {
                requests: c.requests.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
            }
        };
        MetricsSnapshot {
            get: k(Kind::Get),
            put: k(Kind::Put),
            head: k(Kind::Head),
            delete: k(Kind::Delete),
            list: k(Kind::List),
            errors: self.errors.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}
