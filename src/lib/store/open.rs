//! Open the store a storage URL names, with retries, ready for use.

use std::sync::Arc;

/// Also reachable here, the path the tools and tests have used.
pub use crate::store::credentials::Credentials;
use crate::store::local::LocalStore;
use crate::store::options::parse_s3_options;
use crate::store::retry::{RetryPolicy, RetryStore};
use crate::store::s3::S3Store;
use crate::store::{OpenError, StorageUrl, Store};

/// Open `url` with `backend_options` (validated here: an unknown one is
/// [`OpenError::BackendOption`]). `credentials` `None` for `s3://` means the standard
/// AWS chain (environment, profiles).
pub fn open_store(
    url: &StorageUrl,
    backend_options: &str,
    credentials: Option<Credentials>,
) -> Result<Arc<dyn Store>, OpenError> {
    let options = parse_s3_options(url, backend_options)?;
    let raw: Arc<dyn Store> = match url {
        StorageUrl::Local { path } => Arc::new(LocalStore::open(path)?),
        StorageUrl::S3 { .. } | StorageUrl::S3c { .. } => {
            Arc::new(crate::runtime::block_on(S3Store::connect(url, &options, credentials))?)
        }
    };
    let raw = match std::env::var(FAULT_ENV) {
        Ok(spec) => inject_faults(raw, &spec)?,
        Err(_) => raw,
    };
    Ok(Arc::new(RetryStore::new(raw, RetryPolicy::default())))
}

/// For crash and fault tests of the real binaries only, below the retry layer:
/// `S3FS_TEST_FAULTS=RATE[,SEED]` makes that share of store requests fail with a
/// temporary error (half of them after the request was carried out, as when a reply
/// is lost); `S3FS_TEST_FAULTS=latency-ms=N` delays every request; and
/// `S3FS_TEST_FAULTS=down-while=PATH` fails every request while PATH exists. Forms
/// combine: `rate=0.1,seed=3,latency-ms=20`.
pub const FAULT_ENV: &str = "S3FS_TEST_FAULTS";

fn inject_faults(raw: Arc<dyn Store>, spec: &str) -> Result<Arc<dyn Store>, OpenError> {
    let bad = || OpenError::BadFaultSpec(spec.to_owned());
    let mut config = crate::store::fault::FaultConfig {
        lost_reply_share: 0.5,
        seed: 1,
        ..Default::default()
    };
    for (i, item) in spec.split(',').map(str::trim).enumerate() {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, v),
            // The positional form: RATE[,SEED].
            None => (["rate", "seed"].get(i).copied().ok_or_else(bad)?, item),
        };
        match key {
            "rate" => config.error_rate = value.parse().ok().filter(|r| (0.0..1.0).contains(r)).ok_or_else(bad)?,
            "seed" => config.seed = value.parse().map_err(|_| bad())?,
            "latency-ms" => config.latency = Some(std::time::Duration::from_millis(value.parse().map_err(|_| bad())?)),
            "down-while" => config.down_while = Some(value.into()),
            _ => return Err(bad()),
        }
    }
    log::warn!("{FAULT_ENV}={spec}: injecting store faults (testing only)");
    Ok(Arc::new(crate::store::fault::FaultStore::new(raw, config)))
}
