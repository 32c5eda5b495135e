//! `--backend-options`: a comma-separated list of `key` or `key=value`, validated per
//! scheme. An unknown key is exit code 3, as in S3QL.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::StorageUrl;

/// Documentation for `--help` and the man pages.
pub const BACKEND_OPTIONS_HELP: &str = "\
BACKEND OPTIONS (--backend-options, comma-separated; s3:// and s3c:// only)
  no-ssl              plain HTTP instead of HTTPS
  ssl-ca-path=PATH    PEM file of CA certificates to trust instead of the system store
  tcp-timeout=SECS    timeout for connecting and for each read or write, 0.1 to 86400
                      (default 20)
  sig-region=REGION   region used in SigV4 signatures (s3c://; default us-east-1)
  sse                 ask the store to encrypt objects at rest (x-amz-server-side-encryption: AES256)
  storage-class=NAME  storage class for new objects (e.g. STANDARD_IA)
  ia, oia, rrs, it    shorthands for STANDARD_IA, ONEZONE_IA, REDUCED_REDUNDANCY,
                      INTELLIGENT_TIERING (S3QL compatible)
  local:// takes no options.";

/// Parsed options for the S3 stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    pub no_ssl: bool,
    pub ssl_ca_path: Option<PathBuf>,
    pub tcp_timeout: Duration,
    pub sig_region: Option<String>,
    pub sse: bool,
    pub storage_class: Option<String>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            no_ssl: false,
            ssl_ca_path: None,
            tcp_timeout: Duration::from_secs(20),
            sig_region: None,
            sse: false,
            storage_class: None,
        }
    }
}

/// Accepted `tcp-timeout` values, in seconds.
const TCP_TIMEOUT_SECS: std::ops::RangeInclusive<f64> = 0.1..=86400.0;

/// An unusable backend option (exit code 3 in the tools, as in S3QL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendOptionError {
    #[error("backend option {0} needs a value ({0}=...)")]
    NeedsValue(String),
    #[error("backend option {0} takes no value")]
    TakesNoValue(String),
    #[error("unknown backend option {0:?}: local:// takes no backend options")]
    NoneForLocal(String),
    #[error("unknown backend option {key:?} for {scheme}:// (see --help)")]
    Unknown { key: String, scheme: &'static str },
    #[error(
        "tcp-timeout must be a number of seconds from {min} to {max}, not {0:?}",
        min = TCP_TIMEOUT_SECS.start(),
        max = TCP_TIMEOUT_SECS.end()
    )]
    TcpTimeout(String),
    /// The `ssl-ca-path` file cannot be read or holds no valid certificate.
    #[error("ssl-ca-path={}: {why}", .path.display())]
    SslCaPath { path: PathBuf, why: String },
}

/// Split `a,b=c` into pairs; empty items are ignored.
pub fn split_options(text: &str) -> Vec<(String, Option<String>)> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
            None => (item.to_owned(), None),
        })
        .collect()
}

/// Validate options for `url`'s scheme. Local stores accept none.
pub fn parse_s3_options(url: &StorageUrl, text: &str) -> Result<S3Options, BackendOptionError> {
    let mut o = S3Options::default();
    let scheme = url.scheme();
    for (key, value) in split_options(text) {
        let need_value = |v: &Option<String>| v.clone().ok_or_else(|| BackendOptionError::NeedsValue(key.clone()));
        let no_value = |v: &Option<String>| match v {
            Some(_) => Err(BackendOptionError::TakesNoValue(key.clone())),
            None => Ok(()),
        };
        if scheme == "local" {
            return Err(BackendOptionError::NoneForLocal(key));
        }
        match key.as_str() {
            "no-ssl" => {
                no_value(&value)?;
                o.no_ssl = true
            }
            "ssl-ca-path" => o.ssl_ca_path = Some(PathBuf::from(need_value(&value)?)),
            "tcp-timeout" => {
                let v = need_value(&value)?;
                // Bounded before it becomes a Duration (which panics past ~5·10^11 years):
                // below 0.1 s every request times out, above a day a dead store hangs.
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| TCP_TIMEOUT_SECS.contains(s))
                    .ok_or_else(|| BackendOptionError::TcpTimeout(v.clone()))?;
                o.tcp_timeout = Duration::from_secs_f64(secs);
            }
            "sig-region" => o.sig_region = Some(need_value(&value)?),
            "sse" => {
                no_value(&value)?;
                o.sse = true
            }
            "storage-class" => o.storage_class = Some(need_value(&value)?),
            "ia" | "oia" | "rrs" | "it" => {
                no_value(&value)?;
                // S3QL's precedence: ia, then oia, then rrs, then it.
                let class = match key.as_str() {
                    "ia" => "STANDARD_IA",
                    "oia" => "ONEZONE_IA",
                    "rrs" => "REDUCED_REDUNDANCY",
                    _ => "INTELLIGENT_TIERING",
                };
                let rank = |c: &str| {
                    ["STANDARD_IA", "ONEZONE_IA", "REDUCED_REDUNDANCY", "INTELLIGENT_TIERING"]
                        .iter()
                        .position(|x| *x == c)
                };
                match o.storage_class.as_deref().and_then(rank) {
                    Some(r) if r < rank(class).unwrap() => {}
                    _ => o.storage_class = Some(class.to_owned()),
                }
            }
            _ => {
                return Err(BackendOptionError::Unknown { key, scheme });
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3c() -> StorageUrl {
        StorageUrl::parse("s3c://h:1/bucket/p").unwrap()
    }

    #[test]
    fn parses_known_options() {
        let o = parse_s3_options(&s3c(), "no-ssl, tcp-timeout=2.5,sig-region=garage,sse,rrs,ia").unwrap();
        assert!(o.no_ssl && o.sse);
        assert_eq!(o.tcp_timeout, Duration::from_millis(2500));
        assert_eq!(o.sig_region.as_deref(), Some("garage"));
        assert_eq!(o.storage_class.as_deref(), Some("STANDARD_IA"));
    }

    #[test]
    fn unknown_or_malformed_options_are_exit_3() {
        for text in [
            "bogus",
            "no-ssl=1",
            "tcp-timeout",
            "tcp-timeout=-1",
            "tcp-timeout=x",
            "tcp-timeout=1e30",
            "tcp-timeout=1e-30",
            "tcp-timeout=inf",
        ] {
            assert!(parse_s3_options(&s3c(), text).is_err(), "{text}");
        }
        let local = StorageUrl::parse("local:///tmp/x").unwrap();
        assert_eq!(
            parse_s3_options(&local, "no-ssl").unwrap_err(),
            BackendOptionError::NoneForLocal("no-ssl".into())
        );
        assert!(parse_s3_options(&local, "").is_ok());
    }
}
