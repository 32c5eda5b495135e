//! Open the store a storage URL names, with retries, ready for use.

use std::sync::Arc;

use crate::exit::Error;
use crate::store::local::LocalStore;
use crate::store::options::parse_s3_options;
use crate::store::retry::{RetryPolicy, RetryStore};
use crate::store::s3::S3Store;
use crate::store::{StorageUrl, Store};

/// Login and password for a store (access key id and secret for S3).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub login: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Open `url` with `backend_options` (validated here: unknown → exit 3). `credentials`
/// `None` for `s3://` means the standard AWS chain (environment, profiles).
pub fn open_store(
    url: &StorageUrl,
    backend_options: &str,
    credentials: Option<Credentials>,
) -> Result<Arc<dyn Store>, Error> {
    let options = parse_s3_options(url, backend_options)?;
    let raw: Arc<dyn Store> = match url {
        StorageUrl::Local { path } => Arc::new(LocalStore::open(path)?),
        StorageUrl::S3 { .. } | StorageUrl::S3c { .. } => {
            Arc::new(crate::runtime::block_on(S3Store::connect(url, &options, credentials))?)
        }
    };
    Ok(Arc::new(RetryStore::new(raw, RetryPolicy::default())))
}
