//! A store that can only be read: what a read-only mount talks to, so that "a read-only
//! mount never writes to the store" holds by construction, not by every code path
//! remembering it. Writes fail (and are logged as the bug they would be).

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Health, ListPage, ObjectInfo, PutMode, Store, StoreError, StoreResult};

#[derive(Debug)]
pub struct ReadOnlyStore {
    inner: Arc<dyn Store>,
}

impl ReadOnlyStore {
    pub fn new(inner: Arc<dyn Store>) -> ReadOnlyStore {
        ReadOnlyStore { inner }
    }

    fn refuse(what: &str, key: &str) -> StoreError {
        log::error!("refused to {what} {key}: this is a read-only mount");
        StoreError::Permanent(format!("a read-only mount never writes to the store ({what} {key})"))
    }
}

#[async_trait]
impl Store for ReadOnlyStore {
    async fn get(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        self.inner.get(key, max_len).await
    }
    async fn get_authenticated(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        self.inner.get_authenticated(key, max_len).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn put(&self, key: &str, _data: Bytes, _mode: PutMode) -> StoreResult<()> {
        Err(Self::refuse("store", key))
    }
    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        Err(Self::refuse("delete", key))
    }
    async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
        Err(Self::refuse("delete", keys.first().map_or("nothing", String::as_str)))
    }
    async fn list(&self, prefix: &str, continuation: Option<String>) -> StoreResult<ListPage> {
        self.inner.list(prefix, continuation).await
    }
    fn describe(&self) -> String {
        format!("{} (read-only)", self.inner.describe())
    }
    fn health(&self) -> Health {
        self.inner.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::block_on;

    #[test]
    fn reads_pass_and_writes_fail() {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Store> = Arc::new(crate::store::local::LocalStore::open(dir.path()).unwrap());
        block_on(local.put("k", Bytes::from_static(b"v"), PutMode::Overwrite)).unwrap();
        let ro = ReadOnlyStore::new(local.clone());
        assert_eq!(&block_on(ro.get("k", 10)).unwrap()[..], b"v");
        assert_eq!(&block_on(ro.get_range("k", 0..1)).unwrap()[..], b"v");
        assert!(block_on(ro.put("k2", Bytes::from_static(b"x"), PutMode::Overwrite)).is_err());
        assert!(block_on(ro.delete("k")).is_err());
        assert!(block_on(ro.delete_many(&["k".to_string()])).is_err());
        assert_eq!(&block_on(local.get("k", 10)).unwrap()[..], b"v", "still there");
        assert!(block_on(local.head("k2")).is_err(), "nothing written");
    }
}
