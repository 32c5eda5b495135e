//! Storage URLs: `local://PATH`, `s3://REGION/BUCKET[/PREFIX]`,
//! `s3c://HOST[:PORT]/BUCKET[/PREFIX]`.
//!
//! URLs are canonicalised before use (relative local paths made absolute, a trailing `/`
//! added where the prefix is empty) because authinfo2 sections are matched against the
//! canonical form by string prefix, as S3QL does.

use std::fmt;
use std::path::{Path, PathBuf};

/// The grammar, for `--help` and the man pages.
pub const URL_GRAMMAR: &str = "\
STORAGE URLS
  local://PATH
      A directory on this machine (the embedded default). A relative PATH is taken
      relative to the current directory and made absolute.
  s3://REGION/BUCKET[/PREFIX]
      Amazon S3. Credentials come from authinfo2, else from the standard AWS
      environment variables and profiles, else a prompt.
  s3c://HOST[:PORT]/BUCKET[/PREFIX]
      Any S3-compatible store (Garage, Ceph RGW, MinIO, ...), path-style addressing,
      SigV4 signatures. HTTPS unless the backend option no-ssl is given.
  PREFIX is a raw string prefix of every object name: s3://r/b/p and s3://r/b/p/ are
  different filesystems. Filesystems must not be nested.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    Local {
        path: PathBuf,
    },
    S3 {
        region: String,
        bucket: String,
        prefix: String,
    },
    S3c {
        host: String,
        port: Option<u16>,
        bucket: String,
        prefix: String,
    },
}

/// A storage URL that does not parse (exit code 2 in the tools).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid storage URL {url:?}: {why}")]
pub struct UrlError {
    pub url: String,
    pub why: String,
}

fn bad(url: &str, why: &str) -> UrlError {
    UrlError {
        url: url.to_owned(),
        why: why.to_owned(),
    }
}

/// Split `BUCKET[/PREFIX]`.
fn bucket_and_prefix(url: &str, rest: &str) -> Result<(String, String), UrlError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad(url, "no bucket name"));
    }
    let valid = bucket.len() >= 3
        && bucket.len() <= 63
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid {
        return Err(bad(url, "bucket names are 3-63 characters of a-z, 0-9, '-' and '.'"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// `HOST[:PORT]` of an s3c URL. The host is a DNS name, an IPv4 address or a bracketed
/// IPv6 address, nothing else: it goes into the endpoint the credentials are sent to,
/// and `good.example@evil.example` (which an authinfo2 section for `s3c://good.example`
/// matches) names evil.example.
fn host_and_port<'a>(url: &str, hostport: &'a str) -> Result<(&'a str, Option<u16>), UrlError> {
    let (host, port) = match hostport.strip_prefix('[').and_then(|h| h.find(']')) {
        Some(end) => {
            let (host, after) = hostport.split_at(end + 2);
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad(url, "garbage after the IPv6 address"))?,
                    ),
                ),
            }
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(url, "port is not a number 1-65535"))
        })
        .transpose()?;
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ip6) => !ip6.is_empty() && ip6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
        None => {
            !host.is_empty()
                && !host.starts_with(['-', '.'])
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    };
    if !valid {
        return Err(bad(
            url,
            "the host must be a DNS name, an IPv4 address or an IPv6 address in brackets",
        ));
    }
    Ok((host, port))
}

impl StorageUrl {
    /// Parse and canonicalise.
    pub fn parse(url: &str) -> Result<StorageUrl, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad(url, "expected SCHEME://..."))?;
        match scheme {
            "local" => {
                if rest.is_empty() {
                    return Err(bad(url, "no directory given"));
                }
                let path = Path::new(rest);
                let abs = if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    std::env::current_dir()
                        .map_err(|e| bad(url, &format!("cannot resolve relative path: {e}")))?
                        .join(path)
                };
                Ok(StorageUrl::Local { path: normalize(&abs) })
            }
            "s3" => {
                let (region, rest) = rest
                    .split_once('/')
                    .ok_or_else(|| bad(url, "expected s3://REGION/BUCKET[/PREFIX]"))?;
                if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(bad(
                        url,
                        "expected s3://REGION/BUCKET[/PREFIX] with a region such as eu-west-1",
                    ));
                }
                let (bucket, prefix) = bucket_and_prefix(url, rest)?;
                Ok(StorageUrl::S3 {
                    region: region.to_owned(),
                    bucket,
                    prefix,
                })
            }
            "s3c" => {
                let (hostport, rest) = rest
                    .split_once('/')
                    .ok_or_else(|| bad(url, "expected s3c://HOST[:PORT]/BUCKET[/PREFIX]"))?;
                let (host, port) = host_and_port(url, hostport)?;
                let (bucket, prefix) = bucket_and_prefix(url, rest)?;
                Ok(StorageUrl::S3c {
                    host: host.to_owned(),
                    port,
                    bucket,
                    prefix,
                })
            }
            other => Err(bad(url, &format!("unknown scheme {other:?} (known: local, s3, s3c)"))),
        }
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            StorageUrl::Local { .. } => "local",
            StorageUrl::S3 { .. } => "s3",
            StorageUrl::S3c { .. } => "s3c",
        }
    }

    /// Whether the store needs a login and password.
    pub fn needs_login(&self) -> bool {
        !matches!(self, StorageUrl::Local { .. })
    }

    /// Whether requests cross a network (every store but `local://`).
    pub fn is_remote(&self) -> bool {
        !matches!(self, StorageUrl::Local { .. })
    }
}

/// Remove `.` and `..` components lexically (the directory may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for StorageUrl {
    /// The canonical form, which authinfo2 sections are matched against.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::Local { path } => {
                let p = path.display().to_string();
                if p.ends_with('/') {
                    write!(f, "local://{p}")
                } else {
                    write!(f, "local://{p}/")
                }
            }
            StorageUrl::S3 { region, bucket, prefix } => write!(f, "s3://{region}/{bucket}/{prefix}"),
            StorageUrl::S3c {
                host,
                port,
                bucket,
                prefix,
            } => match port {
                Some(p) => write!(f, "s3c://{host}:{p}/{bucket}/{prefix}"),
                None => write!(f, "s3c://{host}/{bucket}/{prefix}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(
            StorageUrl::parse("local:///srv/fs").unwrap().to_string(),
            "local:///srv/fs/"
        );
        assert_eq!(
            StorageUrl::parse("local:///srv/./a/../fs/").unwrap().to_string(),
            "local:///srv/fs/"
        );
        assert_eq!(
            StorageUrl::parse("s3://eu-west-1/my-bucket").unwrap().to_string(),
            "s3://eu-west-1/my-bucket/"
        );
        assert_eq!(
            StorageUrl::parse("s3://eu-west-1/my-bucket/p/q").unwrap().to_string(),
            "s3://eu-west-1/my-bucket/p/q"
        );
        let u = StorageUrl::parse("s3c://127.0.0.1:3900/bkt/pre_").unwrap();
        assert_eq!(
            u,
            StorageUrl::S3c {
                host: "127.0.0.1".into(),
                port: Some(3900),
                bucket: "bkt".into(),
                prefix: "pre_".into()
            }
        );
        assert_eq!(u.to_string(), "s3c://127.0.0.1:3900/bkt/pre_");
        for v6 in ["s3c://[::1]/bkt/", "s3c://[::1]:9000/bkt/"] {
            assert_eq!(StorageUrl::parse(v6).unwrap().to_string(), v6);
        }
    }

    #[test]
    fn relative_local_paths_become_absolute() {
        let u = StorageUrl::parse("local://rel/dir").unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            u,
            StorageUrl::Local {
                path: cwd.join("rel/dir")
            }
        );
    }

    #[test]
    fn rejects_malformed_urls_with_exit_2() {
        for url in [
            "",
            "nope",
            "ftp://x/y",
            "s3://region",
            "s3c://host:99999/b",
            "s3c://h/B!",
            "local://",
            "s3c:///bucket",
            "s3c://good.example@evil.example/bucket",
            "s3c://user:pw@host/bucket",
            "s3c://host:0/bucket",
            "s3c://-host/bucket",
            "s3c://[::1]x/bucket",
            "s3c://ho st/bucket",
        ] {
            let e = StorageUrl::parse(url).unwrap_err();
            assert_eq!(e.url, url);
        }
    }
}
