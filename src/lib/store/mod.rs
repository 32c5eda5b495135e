//! Object stores: one small async trait, its implementations, and decorators.
//!
//! Every implementation passes the same conformance suite (`tests/store_conformance.rs`).
//! Keys handed to a store are relative to the storage URL's prefix; the store adds and
//! strips the prefix itself.
//!
//! Decorators: [`retry::RetryStore`] retries temporary failures with capped exponential
//! backoff; [`fault::FaultStore`] injects failures for tests.

use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod credentials;
pub mod fault;
mod group_sync;
pub mod local;
pub mod metrics;
pub mod open;
pub mod options;
pub mod read_only;
pub mod retry;
pub mod s3;
pub mod url;

pub use open::open_store;
pub use url::{StorageUrl, UrlError};

/// What a `head` or `list` tells about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's prefix.
    pub key: String,
    pub size: u64,
    /// Opaque version tag usable with [`PutMode::IfMatch`]; `None` if the store has none.
    pub etag: Option<String>,
}

/// One page of a listing. `next` is `Some` while more keys follow.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    pub next: Option<String>,
}

/// How a `put` treats an existing object of the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Fail with [`StoreError::PreconditionFailed`] if the key exists
    /// (`If-None-Match: *`). Stores that do not honour it overwrite silently, which is
    /// why callers must probe support with [`probe_conditional_writes`].
    IfNoneMatch,
    /// Replace only if the current object's etag equals this one (`If-Match`).
    IfMatch(String),
}

/// Failure of a store operation, classified so that the retry layer and the tools can
/// decide what to do.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("object {0} does not exist")]
    NotFound(String),
    #[error("precondition failed for object {0}")]
    PreconditionFailed(String),
    /// Worth retrying: timeouts, connection resets, 5xx, throttling, checksum mismatch
    /// on the wire.
    #[error("temporary failure: {message}")]
    Temporary {
        message: String,
        retry_after: Option<Duration>,
    },
    /// An object larger than its reader accepts (see [`Store::get`]); not retried.
    #[error("object {key} is {size} bytes or more, larger than the {max} bytes expected")]
    TooLarge { key: String, size: u64, max: u64 },
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("{0}")]
    NoSuchBucket(String),
    #[error("cannot reach the store: {0}")]
    Unreachable(String),
    /// Anything else that retrying will not fix.
    #[error("{0}")]
    Permanent(String),
}

impl StoreError {
    pub fn temporary(message: impl Into<String>) -> Self {
        StoreError::Temporary {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn is_temporary(&self) -> bool {
        matches!(self, StoreError::Temporary { .. })
    }
}

pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// What opening a store can fail with, beyond the failures of its requests. The tools
/// end with a different exit code for each case (see the `From` impls in `crate::tool_errors`).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    BackendOption(#[from] options::BackendOptionError),
    /// A `local://` path that is not a directory: like a missing bucket.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A `local://` directory that does not exist: like a missing bucket.
    #[error("directory {} does not exist", .0.display())]
    NoSuchDirectory(PathBuf),
    /// A `local://` directory that cannot be examined.
    #[error("cannot access {}: {source}", .path.display())]
    CannotAccess { path: PathBuf, source: io::Error },
    /// A `local://` directory that cannot be opened.
    #[error("cannot open {}: {source}", .path.display())]
    CannotOpen { path: PathBuf, source: io::Error },
    /// [`s3::S3Store::connect`] given a URL of another scheme.
    #[error("{0} is not an S3 storage URL")]
    NotS3(StorageUrl),
    /// A malformed [`open::FAULT_ENV`] setting.
    #[error(
        "{var}={0}: expected RATE[,SEED] or rate=, seed=, latency-ms=, down-while=",
        var = open::FAULT_ENV
    )]
    BadFaultSpec(String),
    /// The store's first requests failed (bad credentials, no such bucket, unreachable...).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a store answers (see [`Store::health`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// How long every attempt has failed without an answer (timeouts, resets, 5xx,
    /// unreachable); `None` while the store answers.
    pub failing_for: Option<Duration>,
    /// What the last failed attempt said.
    pub last_failure: Option<String>,
}

/// An object store. Implementations are cheap to share (`Arc<dyn Store>`) and safe to
/// call concurrently.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Whole object; [`StoreError::TooLarge`] without reading it if it is larger than
    /// `max_len` bytes. A size is the store's word and the store may be hostile: every
    /// caller says how much it is prepared to hold.
    async fn get(&self, key: &str, max_len: u64) -> StoreResult<Bytes>;
    /// [`Store::get`] of an object whose content the caller authenticates itself (every
    /// object s3fs writes is, by the codec): the store may skip its own check of the
    /// transfer (S3: the MD5 of the body against the ETag, a CPU cost as high as the
    /// rest of a read's). Wrappers must forward it.
    async fn get_authenticated(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        self.get(key, max_len).await
    }
    /// Bytes `range` of the object; a range past the end is cut at the end. Never
    /// holds more than the range, whatever the server sends.
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes>;
    /// Store `data` under `key`. Returns once the object is durable in the store.
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StoreResult<()>;
    async fn head(&self, key: &str) -> StoreResult<ObjectInfo>;
    /// Delete one object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Delete many objects (batched where the store can); missing ones are ignored.
    async fn delete_many(&self, keys: &[String]) -> StoreResult<()>;
    /// Keys starting with `prefix`, in lexicographic order, one page at a time.
    async fn list(&self, prefix: &str, continuation: Option<String>) -> StoreResult<ListPage>;
    /// Human-readable description for messages ("local:///srv/fs", "s3c://host/bucket").
    fn describe(&self) -> String;
    /// Whether the store answers, as far as this layer knows: the retry layer, which
    /// sees every attempt, tracks it; a bare store knows nothing.
    fn health(&self) -> Health {
        Health::default()
    }
}

/// A listing of every key under a prefix, page by page, that must advance: keys come
/// in increasing order across pages and a continuation is never repeated, else a
/// broken or hostile server (the same page, or the same token, over and over) would
/// make every caller loop forever.
#[derive(Debug)]
pub struct Listing {
    prefix: String,
    next: Option<String>,
    last_key: Option<String>,
    done: bool,
}

impl Listing {
    pub fn new(prefix: &str) -> Listing {
        Listing {
            prefix: prefix.to_owned(),
            next: None,
            last_key: None,
            done: false,
        }
    }

    /// The next page, or `None` after the last one.
    pub async fn next_page(&mut self, store: &dyn Store) -> StoreResult<Option<Vec<ObjectInfo>>> {
        if self.done {
            return Ok(None);
        }
        let page = store.list(&self.prefix, self.next.clone()).await?;
        let stuck = |why: String| {
            StoreError::Permanent(format!(
                "the listing of {:?} in {} does not advance ({why}); refusing to loop",
                self.prefix,
                store.describe()
            ))
        };
        if let (Some(last), Some(first)) = (&self.last_key, page.objects.first())
            && first.key <= *last
        {
            return Err(stuck(format!("key {:?} after {last:?}", first.key)));
        }
        match page.next {
            Some(n) if self.next.as_ref() == Some(&n) => return Err(stuck("the same continuation twice".into())),
            Some(n) => self.next = Some(n),
            None => self.done = true,
        }
        if let Some(o) = page.objects.last() {
            self.last_key = Some(o.key.clone());
        }
        Ok(Some(page.objects))
    }
}

/// List every key under `prefix` (see [`Listing`]).
pub async fn list_all(store: &dyn Store, prefix: &str) -> StoreResult<Vec<ObjectInfo>> {
    let mut out = Vec::new();
    let mut listing = Listing::new(prefix);
    while let Some(page) = listing.next_page(store).await? {
        out.extend(page);
    }
    Ok(out)
}

/// Find out whether the store really honours `If-None-Match: *` on PUT, by trying it on
/// a scratch key. Never assume: Garage 2.5, for one, ignores the header.
pub async fn probe_conditional_writes(store: &dyn Store) -> StoreResult<bool> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| StoreError::Permanent(e.to_string()))?;
    let key = format!("s3fs_probe_{}", hex::encode(nonce));
    store
        .put(&key, Bytes::from_static(b"first"), PutMode::Overwrite)
        .await?;
    let second = store
        .put(&key, Bytes::from_static(b"second"), PutMode::IfNoneMatch)
        .await;
    let body = store.get(&key, 16).await;
    store.delete(&key).await?;
    match second {
        Err(StoreError::PreconditionFailed(_)) => Ok(body? == Bytes::from_static(b"first")),
        Ok(()) => Ok(false),
        Err(e) => Err(e),
    }
}
