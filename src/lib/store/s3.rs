//! Amazon S3 (`s3://REGION/BUCKET[/PREFIX]`) and S3-compatible stores
//! (`s3c://HOST[:PORT]/BUCKET[/PREFIX]`: Garage, Ceph RGW, MinIO, ...).
//!
//! The SDK's own retries are disabled: [`crate::store::retry::RetryStore`] retries, and
//! this module's job is to classify every failure into a [`StoreError`] it can act on.
//!
//! Transport integrity does not rely on the SDK's flexible checksums (which many
//! S3-compatible servers implement partially): every PUT carries `Content-MD5`, which the
//! server verifies, and every GET is checked against the ETag when the ETag is a plain
//! MD5, and against `Content-Length` always.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    Region, RequestChecksumCalculation, ResponseChecksumValidation, SharedHttpClient, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, ServerSideEncryption, StorageClass};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};

use crate::store::credentials::Credentials;
use crate::store::options::{BackendOptionError, S3Options};
use crate::store::{ListPage, ObjectInfo, OpenError, PutMode, StorageUrl, Store, StoreError, StoreResult};

/// Most keys one DeleteObjects request may name.
const DELETE_BATCH: usize = 1000;
/// Most keys one ListObjectsV2 page returns.
const LIST_PAGE: i32 = 1000;
/// Attempts of the bucket probe in [`S3Store::connect`] when the server answers with a
/// temporary error.
const PROBE_ATTEMPTS: u32 = 4;

/// An S3 bucket (and key prefix) reached through the AWS SDK.
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Prepended to every key.
    prefix: String,
    /// The canonical storage URL.
    url: String,
    /// Where requests go, for messages ("https://host:port" or "AWS region eu-west-1").
    endpoint: String,
    sse: bool,
    storage_class: Option<StorageClass>,
    /// How PUT bodies are protected on the way, found out at the first PUT.
    put_check: tokio::sync::OnceCell<PutCheck>,
}

/// What a PUT carries for the server to verify its body against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCheck {
    /// `Content-MD5`: every S3 server verifies it, but MD5 costs the client a quarter
    /// of an upload's CPU.
    Md5,
    /// `x-amz-checksum-crc32c`: computed in hardware, for a fraction of that; used only
    /// once the server was seen to refuse a wrong one (several S3-compatible servers
    /// ignore the header, which would leave the body unchecked).
    Crc32c,
}

fn base64_crc32c(data: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("sse", &self.sse)
            .field("storage_class", &self.storage_class)
            .finish_non_exhaustive()
    }
}

fn base64_md5(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

/// ETags come quoted on the wire; we hand them out bare and quote them again for
/// `If-Match`.
fn bare_etag(etag: &str) -> String {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    e.trim_matches('"').to_owned()
}

fn is_plain_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The innermost error of a chain: for I/O failures this is the operating system's
/// words ("Connection refused (os error 111)"), the clearest thing to show.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    one_line(&cur.to_string())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a service error (an HTTP response with an error status) means.
struct ServiceFailure<'a> {
    status: u16,
    code: Option<&'a str>,
    message: Option<&'a str>,
    retry_after: Option<Duration>,
}

/// Parse `Content-Range: bytes START-END/TOTAL` into (START, END inclusive).
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, _total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

impl S3Store {
    /// Build the client for `url` and check, with one listing request, that the bucket
    /// exists and the credentials work. The errors the tools tell apart (by exit code):
    /// bad or missing credentials, access denied, no such bucket, endpoint unreachable
    /// ([`OpenError::Store`]), unusable `ssl-ca-path` ([`OpenError::BackendOption`]).
    pub async fn connect(
        url: &StorageUrl,
        options: &S3Options,
        credentials: Option<Credentials>,
    ) -> Result<S3Store, OpenError> {
        let (region, bucket, prefix, endpoint_url) = match url {
            StorageUrl::S3 { region, bucket, prefix } => {
                let endpoint = if options.no_ssl {
                    let suffix = if region.starts_with("cn-") {
                        "amazonaws.com.cn"
                    } else {
                        "amazonaws.com"
                    };
                    Some(format!("http://s3.{region}.{suffix}"))
                } else {
                    None
                };
                (region.clone(), bucket.clone(), prefix.clone(), endpoint)
            }
            StorageUrl::S3c {
                host,
                port,
                bucket,
                prefix,
            } => {
                let scheme = if options.no_ssl { "http" } else { "https" };
                let endpoint = match port {
                    Some(p) => format!("{scheme}://{host}:{p}"),
                    None => format!("{scheme}://{host}"),
                };
                let region = options.sig_region.clone().unwrap_or_else(|| "us-east-1".to_owned());
                (region, bucket.clone(), prefix.clone(), Some(endpoint))
            }
            StorageUrl::Local { .. } => {
                return Err(OpenError::NotS3(url.clone()));
            }
        };

        let timeouts = TimeoutConfig::builder()
            .connect_timeout(options.tcp_timeout)
            .read_timeout(options.tcp_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts)
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(options.tcp_timeout)
                    .build(),
            );
        if let Some(client) = http_client(options)? {
            loader = loader.http_client(client);
        }
        let explicit_credentials = credentials.is_some();
        match credentials {
            Some(c) => {
                loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                    c.login, c.password, None, None, "s3fs",
                ))
            }
            None if matches!(url, StorageUrl::S3c { .. }) => {
                // The environment and the AWS profiles, but not the EC2/ECS metadata
                // services, which make no sense for a non-AWS endpoint.
                let chain =
                    CredentialsProviderChain::first_try("Environment", EnvironmentVariableCredentialsProvider::new())
                        .or_else("Profile", ProfileFileCredentialsProvider::builder().build());
                loader = loader.credentials_provider(chain);
            }
            None => {} // the SDK's default chain
        }
        let sdk_config = loader.load().await;

        if !explicit_credentials {
            let found = match sdk_config.credentials_provider() {
                Some(p) => tokio::time::timeout(Duration::from_secs(60), p.provide_credentials())
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => None,
            };
            if found.is_none() {
                return Err(StoreError::AuthFailed(format!(
                    "no credentials for {url}: give them in the authinfo2 file, or set \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ))
                .into());
            }
        }

        let mut s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        let endpoint = match &endpoint_url {
            Some(e) => {
                s3_config = s3_config.endpoint_url(e.clone());
                e.clone()
            }
            None => format!("AWS S3 in {region}"),
        };
        if matches!(url, StorageUrl::S3c { .. }) {
            s3_config = s3_config.force_path_style(true);
        }
        let store = S3Store {
            client: Client::from_conf(s3_config.build()),
            bucket,
            prefix,
            url: url.to_string(),
            endpoint,
            sse: options.sse,
            storage_class: options.storage_class.as_deref().map(StorageClass::from),
            put_check: tokio::sync::OnceCell::new(),
        };
        store.probe().await?;
        Ok(store)
    }

    /// How PUTs are checked (see [`PutCheck`]), once found out.
    pub fn put_check(&self) -> Option<PutCheck> {
        self.put_check.get().copied()
    }

    /// Whether the server verifies `x-amz-checksum-crc32c`: a PUT of a scratch object
    /// with a wrong one must be refused and one with the right one accepted. Anything
    /// else, a failure included, keeps `Content-MD5`, which every server verifies.
    async fn probe_put_check(&self) -> PutCheck {
        let mut nonce = [0u8; 8];
        if getrandom::fill(&mut nonce).is_err() {
            return PutCheck::Md5;
        }
        let key = self.full_key(&format!("s3fs_probe_{}", hex::encode(nonce)));
        let body = Bytes::from_static(b"s3fs checksum probe");
        let put = |crc: String| {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_length(body.len() as i64)
                .checksum_crc32_c(crc)
                .body(ByteStream::from(body.clone()))
                .customize()
                .disable_payload_signing()
                .send()
        };
        let wrong = base64_crc32c(b"something else");
        let refused = match put(wrong).await {
            Ok(_) => false,
            Err(e) => e.raw_response().is_some_and(|r| r.status().as_u16() == 400),
        };
        let accepted = refused && put(base64_crc32c(&body)).await.is_ok();
        let _ = self.client.delete_object().bucket(&self.bucket).key(&key).send().await;
        let check = if accepted { PutCheck::Crc32c } else { PutCheck::Md5 };
        log::debug!("{}: PUT bodies are checked with {check:?}", self.url);
        check
    }

    /// One small listing: fails at once on a missing bucket, bad credentials or an
    /// unreachable endpoint.
    async fn probe(&self) -> StoreResult<()> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            let mut req = self.client.list_objects_v2().bucket(&self.bucket).max_keys(1);
            if !self.prefix.is_empty() {
                req = req.prefix(&self.prefix);
            }
            match req.send().await {
                Ok(_) => return Ok(()),
                Err(e @ (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_))) => {
                    return Err(StoreError::Unreachable(format!(
                        "cannot connect to {}: {}",
                        self.endpoint,
                        root_cause(&e)
                    )));
                }
                Err(e) => {
                    let err = self.no_such_bucket_if_not_found(self.classify(e, "LIST", ""));
                    if !err.is_temporary() || attempt >= PROBE_ATTEMPTS {
                        return Err(err);
                    }
                    log::debug!("probing {}: {err}; retrying in {delay:?}", self.url);
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// A 404 on a bucket-level request means the bucket is missing, whatever the code.
    fn no_such_bucket_if_not_found(&self, err: StoreError) -> StoreError {
        match err {
            StoreError::NotFound(_) => self.no_such_bucket(),
            other => other,
        }
    }

    fn no_such_bucket(&self) -> StoreError {
        StoreError::NoSuchBucket(format!("bucket {} does not exist at {}", self.bucket, self.endpoint))
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Classify a failed request on `key` (relative) made by operation `op`.
    fn classify<E>(&self, err: SdkError<E, HttpResponse>, op: &str, key: &str) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let what = if key.is_empty() {
            op.to_owned()
        } else {
            format!("{op} {key}")
        };
        match &err {
            SdkError::ServiceError(ctx) => {
                let raw = ctx.raw();
                let retry_after = raw
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let f = ServiceFailure {
                    status: raw.status().as_u16(),
                    code: ctx.err().code(),
                    message: ctx.err().message(),
                    retry_after,
                };
                self.classify_service(&f, &what, key)
            }
            SdkError::TimeoutError(_) => {
                StoreError::temporary(format!("{what}: timed out talking to {}", self.endpoint))
            }
            SdkError::DispatchFailure(d) => {
                let cause = root_cause(&err);
                let conn = d.as_connector_error();
                if conn.is_some_and(|c| c.is_user()) {
                    // The request itself could not be sent as built: retrying won't help.
                    StoreError::Permanent(format!("{what}: {cause}"))
                } else if conn.is_some_and(|c| c.is_timeout()) {
                    StoreError::temporary(format!("{what}: timed out talking to {}: {cause}", self.endpoint))
                } else {
                    StoreError::temporary(format!("{what}: connection to {} failed: {cause}", self.endpoint))
                }
            }
            SdkError::ResponseError(_) => StoreError::temporary(format!(
                "{what}: bad response from {}: {}",
                self.endpoint,
                root_cause(&err)
            )),
            _ => StoreError::Permanent(format!("{what}: {}", root_cause(&err))),
        }
    }

    fn classify_service(&self, f: &ServiceFailure<'_>, what: &str, key: &str) -> StoreError {
        let code = f.code.unwrap_or("");
        let detail = match f.message.map(one_line) {
            Some(m) if !m.is_empty() => format!(": {m}"),
            _ => String::new(),
        };
        let described = if code.is_empty() {
            format!("{what}: HTTP {}{detail}", f.status)
        } else {
            format!("{what}: S3 error {code} (HTTP {}){detail}", f.status)
        };
        let message_lc = f.message.unwrap_or("").to_ascii_lowercase();
        match code {
            "NoSuchBucket" => return self.no_such_bucket(),
            "NoSuchKey" | "NotFound" => return StoreError::NotFound(key.to_owned()),
            "PreconditionFailed" => return StoreError::PreconditionFailed(key.to_owned()),
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "InvalidToken"
            | "ExpiredToken"
            | "TokenRefreshRequired"
            | "RequestTimeTooSkewed"
            | "AuthorizationHeaderMalformed"
            | "InvalidSecurity"
            | "InvalidClientTokenId"
            | "MissingSecurityHeader"
            | "Unauthorized" => return StoreError::AuthFailed(described),
            // Garage answers a bad signature or an unknown key id with AccessDenied.
            "AccessDenied"
                if message_lc.contains("invalid signature")
                    || message_lc.contains("no such key")
                    || message_lc.contains("has expired") =>
            {
                return StoreError::AuthFailed(described);
            }
            "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => {
                return StoreError::AccessDenied(described);
            }
            "SlowDown"
            | "InternalError"
            | "RequestTimeout"
            | "BadDigest"
            // Garage's word for a body that fails its x-amz-checksum-crc32c: damaged on
            // the way, like BadDigest.
            | "InvalidDigest"
            | "ServiceUnavailable"
            | "Throttling"
            | "ThrottlingException"
            | "RequestThrottled"
            | "XAmzContentSHA256Mismatch"
            | "IncompleteBody"
            | "ConditionalRequestConflict"
            | "OperationAborted" => {
                return StoreError::Temporary {
                    message: described,
                    retry_after: f.retry_after,
                };
            }
            _ => {}
        }
        match f.status {
            404 => StoreError::NotFound(key.to_owned()),
            412 => StoreError::PreconditionFailed(key.to_owned()),
            401 => StoreError::AuthFailed(described),
            403 => StoreError::AccessDenied(described),
            408 | 429 => StoreError::Temporary {
                message: described,
                retry_after: f.retry_after,
            },
            s if s >= 500 && s != 501 => StoreError::Temporary {
                message: described,
                retry_after: f.retry_after,
            },
            _ => StoreError::Permanent(described),
        }
    }

    /// GET the whole object (at most `max_len` bytes), or `range` of it, and check what
    /// arrived. No more is read than that: a larger object is refused before its body is
    /// read, and of a server's answer to a range with the whole object only the bytes up
    /// to the end of the range are read.
    /// GET `key`, or `range` of it; `verify_md5`: check a whole body against an MD5
    /// ETag (a range cannot be).
    async fn fetch(&self, key: &str, range: Option<Range<u64>>, max_len: u64, verify_md5: bool) -> StoreResult<Bytes> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(self.full_key(key));
        if let Some(r) = &range {
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                // A range starting at or past the end (including any range of an
                // empty object) is "416 Range Not Satisfiable": nothing to read.
                if range.is_some() && e.raw_response().is_some_and(|r| r.status().as_u16() == 416) {
                    return Ok(Bytes::new());
                }
                return Err(self.classify(e, "GET", key));
            }
        };
        let content_length = out.content_length();
        let content_range = out.content_range().map(str::to_owned);
        // How much to hold, and whether the rest of a longer body is simply not read
        // (a whole object sent for a range: only the bytes up to its end are needed).
        let (limit, cut) = match (&range, &content_range) {
            (None, _) => (max_len, false),
            (Some(r), Some(_)) => (r.end - r.start, false),
            (Some(r), None) => (r.end, true),
        };
        let too_large = |size: u64| {
            if range.is_some() {
                StoreError::temporary(format!(
                    "GET {key}: the server sent {size} bytes for a {limit}-byte range"
                ))
            } else {
                StoreError::TooLarge {
                    key: key.to_owned(),
                    size,
                    max: limit,
                }
            }
        };
        if !cut
            && let Some(len) = content_length.and_then(|l| u64::try_from(l).ok())
            && len > limit
        {
            return Err(too_large(len));
        }
        let etag = out.e_tag().map(bare_etag);
        // With SSE-KMS or SSE-C the ETag is not the MD5 of the content.
        let etag_is_md5 = !matches!(
            out.server_side_encryption(),
            Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
        ) && out.sse_customer_algorithm().is_none();
        let read_err = |e: aws_smithy_types::byte_stream::error::Error| {
            StoreError::temporary(format!("GET {key}: reading the response failed: {}", root_cause(&e)))
        };
        let mut stream = out.body;
        // Room for the whole body at once: growing a 4 MiB buffer by doubling copied it
        // again (8 % of a cold read's CPU). The server's length is trusted no further
        // than the limit.
        let expected = content_length
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0)
            .min(limit);
        let mut buf = bytes::BytesMut::with_capacity(expected as usize);
        let mut truncated = false;
        while let Some(piece) = stream.try_next().await.map_err(read_err)? {
            let room = limit - buf.len() as u64;
            if piece.len() as u64 > room {
                if !cut {
                    return Err(too_large(buf.len() as u64 + piece.len() as u64));
                }
                buf.extend_from_slice(&piece[..room as usize]);
                truncated = true;
                break;
            }
            buf.extend_from_slice(&piece);
        }
        let body = buf.freeze();
        if !truncated
            && let Some(len) = content_length
            && u64::try_from(len).ok() != Some(body.len() as u64)
        {
            return Err(StoreError::temporary(format!(
                "GET {key}: received {} bytes but Content-Length is {len}",
                body.len()
            )));
        }
        let check_md5 = |body: &[u8]| -> StoreResult<()> {
            if let Some(etag) = &etag
                && etag_is_md5
                && is_plain_md5(etag)
            {
                let actual = hex::encode(Md5::digest(body));
                if !actual.eq_ignore_ascii_case(etag) {
                    return Err(StoreError::temporary(format!(
                        "GET {key}: checksum mismatch (ETag {etag}, MD5 of the data received {actual})"
                    )));
                }
            }
            Ok(())
        };
        match range {
            None => {
                if verify_md5 {
                    check_md5(&body)?;
                }
                Ok(body)
            }
            Some(r) => match content_range.as_deref() {
                Some(cr) => {
                    let (start, end) = parse_content_range(cr)
                        .ok_or_else(|| StoreError::Permanent(format!("GET {key}: unparsable Content-Range {cr:?}")))?;
                    if start != r.start || end >= r.end || end + 1 - start != body.len() as u64 {
                        return Err(StoreError::temporary(format!(
                            "GET {key}: asked for bytes {}-{}, got Content-Range {cr:?} with {} bytes",
                            r.start,
                            r.end - 1,
                            body.len()
                        )));
                    }
                    Ok(body)
                }
                None => {
                    // The server ignored the Range header and sent the whole object (of
                    // which only the part up to the range's end was read).
                    if !truncated {
                        check_md5(&body)?;
                    }
                    let len = body.len() as u64;
                    let (a, b) = (r.start.min(len) as usize, r.end.min(len) as usize);
                    Ok(body.slice(a..b))
                }
            },
        }
    }

    async fn delete_batch(&self, keys: &[String]) -> StoreResult<()> {
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Permanent(format!("DELETE: {e}")))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| StoreError::Permanent(format!("DELETE: {e}")))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .customize()
            // S3 and older S3-compatible servers insist on Content-MD5 here; the SDK
            // only adds a CRC32 checksum, which some servers do not understand.
            .mutate_request(|req| {
                if let Some(body) = req.body().bytes() {
                    let md5 = base64_md5(body);
                    req.headers_mut().insert("Content-MD5", md5);
                }
            })
            .send()
            .await
            .map_err(|e| self.classify(e, "DELETE", &format!("({} objects)", keys.len())))?;
        for e in out.errors() {
            let full = e.key().unwrap_or("");
            let key = full.strip_prefix(self.prefix.as_str()).unwrap_or(full);
            // Per-key errors carry no HTTP status: the code decides, else Permanent.
            let f = ServiceFailure {
                status: 0,
                code: e.code(),
                message: e.message(),
                retry_after: None,
            };
            match self.classify_service(&f, &format!("DELETE {key}"), key) {
                StoreError::NotFound(_) => {}
                other => return Err(other),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Store for S3Store {
    async fn get(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        self.fetch(key, None, max_len, true).await
    }

    async fn get_authenticated(&self, key: &str, max_len: u64) -> StoreResult<Bytes> {
        self.fetch(key, None, max_len, false).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        self.fetch(key, Some(range), u64::MAX, false).await
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> StoreResult<()> {
        let check = *self.put_check.get_or_init(|| self.probe_put_check()).await;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(data.len() as i64);
        req = match check {
            PutCheck::Md5 => req.content_md5(base64_md5(&data)),
            PutCheck::Crc32c => req.checksum_crc32_c(base64_crc32c(&data)),
        };
        if self.sse {
            req = req.server_side_encryption(ServerSideEncryption::Aes256);
        }
        if let Some(class) = &self.storage_class {
            req = req.storage_class(class.clone());
        }
        let if_match = matches!(mode, PutMode::IfMatch(_));
        match mode {
            PutMode::Overwrite => {}
            PutMode::IfNoneMatch => req = req.if_none_match("*"),
            PutMode::IfMatch(etag) => req = req.if_match(format!("\"{}\"", bare_etag(&etag))),
        }
        // The body is not hashed into the signature: its signed Content-MD5, which the
        // server checks, already binds it to the request, and a second pass over every
        // byte (SHA-256, on the client and again on the server) cost a third of an
        // upload's CPU.
        match req
            .body(ByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.classify(e, "PUT", key) {
                // If-Match on a missing object: the precondition does not hold.
                StoreError::NotFound(k) if if_match => Err(StoreError::PreconditionFailed(k)),
                other => Err(other),
            },
        }
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.classify(e, "HEAD", key))?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: out.content_length().and_then(|l| u64::try_from(l).ok()).unwrap_or(0),
            etag: out.e_tag().map(bare_etag),
        })
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.classify(e, "DELETE", key) {
                StoreError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            self.delete_batch(batch).await?;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str, continuation: Option<String>) -> StoreResult<ListPage> {
        let full = self.full_key(prefix);
        let mut req = self.client.list_objects_v2().bucket(&self.bucket).max_keys(LIST_PAGE);
        if !full.is_empty() {
            req = req.prefix(full);
        }
        if let Some(token) = continuation {
            req = req.continuation_token(token);
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.no_such_bucket_if_not_found(self.classify(e, "LIST", prefix)))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                let key = o.key()?.strip_prefix(self.prefix.as_str())?;
                Some(ObjectInfo {
                    key: key.to_owned(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    etag: o.e_tag().map(bare_etag),
                })
            })
            .collect();
        let next = if out.is_truncated() == Some(true) {
            match out.next_continuation_token() {
                Some(t) if !t.is_empty() => Some(t.to_owned()),
                _ => {
                    return Err(StoreError::Permanent(format!(
                        "LIST {prefix}: listing truncated but the server gave no continuation token"
                    )));
                }
            }
        } else {
            None
        };
        Ok(ListPage { objects, next })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// The HTTP client: the SDK's default unless `ssl-ca-path` asks to trust only a given
/// PEM bundle.
fn http_client(options: &S3Options) -> Result<Option<SharedHttpClient>, BackendOptionError> {
    let Some(path) = &options.ssl_ca_path else {
        return Ok(None);
    };
    let bad = |why: String| BackendOptionError::SslCaPath {
        path: path.clone(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    // The SDK parses the bundle lazily and panics on a bad one: check it here first,
    // with the same parser.
    {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let mut count = 0;
        for der in CertificateDer::pem_slice_iter(&pem) {
            let der = der.map_err(|e| bad(format!("not a valid PEM file: {e}")))?;
            roots.add(der).map_err(|e| bad(format!("invalid certificate: {e}")))?;
            count += 1;
        }
        if count == 0 {
            return Err(bad("no PEM certificate in the file".into()));
        }
    }
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(pem))
        .build()
        .map_err(|e| bad(e.to_string()))?;
    Ok(Some(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    #[test]
    fn etags_and_ranges() {
        assert_eq!(bare_etag("\"0123\""), "0123");
        assert_eq!(bare_etag("W/\"ab\""), "ab");
        assert!(is_plain_md5("d41d8cd98f00b204e9800998ecf8427e"));
        assert!(!is_plain_md5("d41d8cd98f00b204e9800998ecf8427e-2"));
        assert_eq!(parse_content_range("bytes 3-9/100"), Some((3, 9)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(base64_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }

    fn store() -> S3Store {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        S3Store {
            client: Client::from_conf(config),
            bucket: "bkt".into(),
            prefix: "p/".into(),
            url: "s3c://h:1/bkt/p/".into(),
            endpoint: "http://h:1".into(),
            sse: false,
            storage_class: None,
            put_check: tokio::sync::OnceCell::new(),
        }
    }

    fn service(status: u16, code: Option<&str>, message: &str, retry_after: Option<&str>) -> StoreError {
        let mut meta = ErrorMetadata::builder().message(message);
        if let Some(c) = code {
            meta = meta.code(c);
        }
        let mut raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        if let Some(r) = retry_after {
            raw.headers_mut().insert("retry-after", r.to_owned());
        }
        let err = SdkError::service_error(PutObjectError::generic(meta.build()), raw);
        store().classify(err, "PUT", "k")
    }

    #[test]
    fn service_errors_are_classified() {
        use StoreError::*;
        assert_eq!(service(404, Some("NoSuchKey"), "", None), NotFound("k".into()));
        assert_eq!(service(404, None, "", None), NotFound("k".into()));
        assert_eq!(
            service(412, Some("PreconditionFailed"), "", None),
            PreconditionFailed("k".into())
        );
        assert_eq!(service(412, None, "", None), PreconditionFailed("k".into()));
        match service(404, Some("NoSuchBucket"), "", None) {
            NoSuchBucket(m) => assert!(m.contains("bkt"), "{m}"),
            e => panic!("{e:?}"),
        }
        for (status, code, message) in [
            (403, "InvalidAccessKeyId", "x"),
            (403, "SignatureDoesNotMatch", "x"),
            (403, "AccessDenied", "Forbidden: Invalid signature"),
            (403, "AccessDenied", "Forbidden: No such key: GK123"),
            (401, "Whatever", "x"),
        ] {
            assert!(
                matches!(service(status, Some(code), message, None), AuthFailed(_)),
                "{code} {message}"
            );
        }
        assert!(matches!(
            service(403, Some("AccessDenied"), "Access Denied", None),
            AccessDenied(_)
        ));
        assert!(matches!(service(403, None, "", None), AccessDenied(_)));
        for (status, code) in [
            (503, Some("SlowDown")),
            (500, Some("InternalError")),
            (400, Some("RequestTimeout")),
            (400, Some("BadDigest")),
            (400, Some("InvalidDigest")),
            (502, None),
            (504, None),
            (408, None),
            (429, None),
            (503, Some("ServiceUnavailable")),
        ] {
            assert!(service(status, code, "x", None).is_temporary(), "{status} {code:?}");
        }
        assert_eq!(
            service(503, Some("SlowDown"), "slow", Some("7")),
            Temporary {
                message: "PUT k: S3 error SlowDown (HTTP 503): slow".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        match service(501, Some("NotImplemented"), "no\nway", None) {
            Permanent(m) => assert_eq!(m, "PUT k: S3 error NotImplemented (HTTP 501): no way"),
            e => panic!("{e:?}"),
        }
        match service(400, Some("InvalidArgument"), "bad", None) {
            Permanent(m) => assert!(m.contains("InvalidArgument") && m.contains("400"), "{m}"),
            e => panic!("{e:?}"),
        }
    }
}
