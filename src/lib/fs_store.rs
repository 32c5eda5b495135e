//! The filesystem's objects in the store: their names, the codec applied to them, the
//! master key copies, and opening a filesystem from a storage URL.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{Codec, CodecError, Compression};
use crate::config::{self, AuthInfo, SecretSource};
use crate::crypto::{self, KeyError, MasterKey};
use crate::exit::{Error, ExitCode};
use crate::params::Params;
use crate::store::credentials::Credentials;
use crate::store::{PutMode, StorageUrl, Store, StoreError, open_store};

/// Object names. Every name starts with `s3fs_`.
pub mod names {
    pub const PREFIX: &str = "s3fs_";
    pub const PARAMS: &str = "s3fs_params";
    /// The wrapped master key and its backup copies, tried in this order.
    pub const KEY_COPIES: [&str; 4] = ["s3fs_key", "s3fs_key_bak1", "s3fs_key_bak2", "s3fs_key_bak3"];
    pub const META_PREFIX: &str = "s3fs_meta_";
    pub const PARAMS_VERSION_PREFIX: &str = "s3fs_params_";

    pub fn params_version(seq: u64) -> String {
        format!("{PARAMS_VERSION_PREFIX}{seq:010x}")
    }

    pub fn data(id: u64) -> String {
        format!("s3fs_data_{id}")
    }

    /// What a segment of pack `id` at byte `offset` is bound to when encoded, in place
    /// of an object name: a segment decodes only where it was written, so a segment
    /// moved within its pack, into another, or presented as a whole object fails to
    /// decode. Never a key in the store.
    pub fn segment(id: u64, offset: u64) -> String {
        format!("s3fs_data_{id}@{offset}")
    }

    pub fn meta_chunk(chunk: u64, seq: u64) -> String {
        format!("{META_PREFIX}{chunk:012x}_{seq:010x}")
    }

    /// Whether `name` (relative to the storage URL) is an object s3fs writes, by its exact
    /// grammar. On S3 a prefix is a string, not a directory: the listing of `…/p` also
    /// holds the objects of `…/p-2` (as `-2s3fs_data_1`) and of `…/ps3fs_x`, which are
    /// not ours to delete.
    pub fn is_filesystem_object(name: &str) -> bool {
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        name == PARAMS
            || name == "s3fs_lock"
            || KEY_COPIES.contains(&name)
            || name.strip_prefix(PARAMS_VERSION_PREFIX).is_some_and(hex)
            || name.strip_prefix("s3fs_data_").is_some_and(digits)
            || name.strip_prefix("s3fs_probe_").is_some_and(hex)
            || parse_meta_chunk(name).is_some_and(|(c, s)| meta_chunk(c, s) == name)
    }

    /// `(chunk, seq)` of a metadata chunk name.
    pub fn parse_meta_chunk(name: &str) -> Option<(u64, u64)> {
        let rest = name.strip_prefix(META_PREFIX)?;
        let (chunk, seq) = rest.split_once('_')?;
        Some((u64::from_str_radix(chunk, 16).ok()?, u64::from_str_radix(seq, 16).ok()?))
    }
}

/// How many times an object that fails its integrity check is fetched again before it is
/// declared corrupt: a truncated or damaged transfer is not damage at rest.
const CORRUPT_REFETCHES: usize = 2;

/// An object as fetched by [`FsStore::get_decoded`].
#[derive(Debug)]
pub struct Fetched {
    /// Bytes in the store (after compression and encryption).
    pub stored_size: u64,
    /// The plaintext, or why the object could not be decoded.
    pub plaintext: Result<Bytes, CodecError>,
}

/// A store plus the codec of one filesystem. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FsStore {
    store: Arc<dyn Store>,
    codec: Codec,
}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::new(ExitCode::Failure, e.to_string())
    }
}

impl FsStore {
    pub fn new(store: Arc<dyn Store>, codec: Codec) -> Self {
        FsStore { store, codec }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Write objects as a filesystem of `revision` may hold them (the object format of
    /// unencrypted objects depends on it): set once the revision is known, and again
    /// after [`Params::upgrade`] raised it.
    pub fn write_for_revision(&mut self, revision: u32) {
        let fast = revision >= crate::params::FAST_CHECKSUM_REVISION;
        self.codec = self.codec.clone().with_fast_plain_checksum(fast);
    }

    /// Fetch and decode `name`, whose plaintext is at most `max_plain` bytes; a missing
    /// object is an error.
    pub async fn get(&self, name: &str, max_plain: u64) -> Result<Bytes, Error> {
        match self.get_if_exists(name, max_plain).await? {
            Some(body) => Ok(body),
            None => Err(StoreError::NotFound(name.to_owned()).into()),
        }
    }

    /// Fetch and decode `name`, whose plaintext is at most `max_plain` bytes, or `None`
    /// if there is no such object.
    pub async fn get_if_exists(&self, name: &str, max_plain: u64) -> Result<Option<Bytes>, Error> {
        match self.get_decoded(name, max_plain).await? {
            None => Ok(None),
            Some(fetched) => Ok(Some(fetched.plaintext?)),
        }
    }

    /// Fetch and decode `name`, or `None` if there is no such object. Store failures are
    /// errors; an object that cannot be decoded (checked again after re-fetching it) is
    /// returned with its [`CodecError`], so that callers can tell damage from failure.
    ///
    /// The plaintext is at most `max_plain` bytes: a larger object is refused before it
    /// is read, and one whose header claims more is corrupt, so what the store says
    /// never decides how much memory is taken.
    pub async fn get_decoded(&self, name: &str, max_plain: u64) -> Result<Option<Fetched>, Error> {
        let mut attempt = 0;
        loop {
            // The codec authenticates what it decodes; a damaged transfer is fetched again.
            let raw = match self
                .store
                .get_authenticated(name, Codec::max_object_len(max_plain))
                .await
            {
                Ok(raw) => raw,
                Err(StoreError::NotFound(_)) => return Ok(None),
                // Larger than anything of ours that name can hold: damage, like any
                // other object that fails to decode.
                Err(e @ StoreError::TooLarge { size, .. }) => {
                    return Ok(Some(Fetched {
                        stored_size: size,
                        plaintext: Err(CodecError::Corrupt {
                            name: name.to_owned(),
                            why: e.to_string(),
                        }),
                    }));
                }
                Err(e) => return Err(e.into()),
            };
            let stored_size = raw.len() as u64;
            match self.codec.decode_shared(name, raw, max_plain) {
                Err(CodecError::Corrupt { .. }) if attempt < CORRUPT_REFETCHES => {
                    log::debug!("object {name} failed its integrity check; fetching it again");
                    attempt += 1;
                }
                plaintext => return Ok(Some(Fetched { stored_size, plaintext })),
            }
        }
    }

    /// Fetch bytes `range` of object `name` (a run of pack segments), or `None` if there
    /// is no such object. Never more than the range is held, whatever the server sends;
    /// fewer bytes (the object is shorter than the metadata says) are returned as they
    /// are, for the caller to judge.
    pub async fn get_range_if_exists(&self, name: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>, Error> {
        match self.store.get_range(name, range).await {
            Ok(raw) => Ok(Some(raw)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Encode and store `plaintext` as `name`.
    pub async fn put(&self, name: &str, plaintext: &[u8], mode: PutMode) -> Result<(), Error> {
        let body = self.codec.encode(name, plaintext);
        Ok(self.store.put(name, Bytes::from(body), mode).await?)
    }

    pub async fn read_params(&self) -> Result<Params, Error> {
        match self.get_if_exists(names::PARAMS, Params::MAX_JSON_LEN).await? {
            Some(raw) => Params::from_json(&raw),
            None => Err(Error::new(
                ExitCode::NoFilesystem,
                format!("no s3fs filesystem at {}", self.store.describe()),
            )),
        }
    }

    /// Store `params` as the version of its `seq` and as the current superblock, both at
    /// once: one round trip of every publish, mount and unmount instead of two. In object
    /// format 1, so that every release can read the revision and refuse a newer one
    /// cleanly.
    ///
    /// A crash or a failed PUT may leave either one without the other. A listed version
    /// newer than the current superblock is what an interrupted publish always left (the
    /// local copy, written first, then asks for fsck). A current superblock whose version
    /// is not listed is a version that cannot be restored, nothing worse: expiry keeps
    /// every chunk newer than the newest listed version, and its older chunks are that
    /// version's too (a chunk keeps its seq until it changes).
    pub async fn write_params(&self, params: &Params) -> Result<(), Error> {
        let json = params.to_json();
        let version_name = names::params_version(params.seq);
        let (version, current) = tokio::join!(
            self.put_portable(&version_name, &json),
            self.put_portable(names::PARAMS, &json)
        );
        version.and(current)
    }

    /// Store `params` as the current superblock only, creating no version: for states
    /// that must never be restored (fsck in progress).
    pub async fn write_current_params(&self, params: &Params) -> Result<(), Error> {
        self.put_portable(names::PARAMS, &params.to_json()).await
    }

    /// [`FsStore::put`] (overwriting) in object format 1, which every release reads.
    pub async fn put_portable(&self, name: &str, plaintext: &[u8]) -> Result<(), Error> {
        let body = self.codec.encode_portable(name, plaintext);
        Ok(self.store.put(name, Bytes::from(body), PutMode::Overwrite).await?)
    }
}

/// A store opened from a storage URL and its authinfo2 settings.
#[derive(Debug)]
pub struct Connection {
    pub url: StorageUrl,
    pub store: Arc<dyn Store>,
    pub auth: AuthInfo,
}

/// What a tool needs to reach a store, from its command line.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions<'a> {
    pub authfile: Option<&'a Path>,
    pub backend_options: Option<&'a str>,
}

/// Parse `url`, read authinfo2, find credentials (authinfo2, then the standard AWS
/// environment/profiles, then a prompt) and open the store.
pub fn connect(url: &str, opts: &ConnectOptions, secrets: &mut dyn SecretSource) -> Result<Connection, Error> {
    let url = StorageUrl::parse(url)?;
    let authfile = opts
        .authfile
        .map(Path::to_path_buf)
        .unwrap_or_else(config::default_authfile);
    let auth = config::read_authinfo(&authfile, &url)?;
    let backend_options = opts
        .backend_options
        .map(str::to_owned)
        .or_else(|| auth.backend_options.clone())
        .unwrap_or_default();
    // Validate options before asking for any secret.
    crate::store::options::parse_s3_options(&url, &backend_options)?;
    let credentials = credentials_for(&url, &auth, secrets)?;
    let store = open_store(&url, &backend_options, credentials)?;
    Ok(Connection { url, store, auth })
}

fn credentials_for(
    url: &StorageUrl,
    auth: &AuthInfo,
    secrets: &mut dyn SecretSource,
) -> Result<Option<Credentials>, Error> {
    if !url.needs_login() {
        return Ok(None);
    }
    if let (Some(login), Some(password)) = (&auth.backend_login, &auth.backend_password) {
        return Ok(Some(Credentials {
            login: login.clone(),
            password: password.clone(),
        }));
    }
    if auth.backend_login.is_none() && aws_credentials_available(url) {
        return Ok(None);
    }
    let login = match &auth.backend_login {
        Some(l) => l.clone(),
        None => secrets.ask("Enter backend login: ")?,
    };
    let password = match &auth.backend_password {
        Some(p) => p.clone(),
        None => secrets.ask("Enter backend password: ")?,
    };
    Ok(Some(Credentials { login, password }))
}

/// Whether the standard AWS sources could supply credentials: the environment for any
/// S3 store, and profiles for `s3://`.
fn aws_credentials_available(url: &StorageUrl) -> bool {
    let env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    if env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY") {
        return true;
    }
    if !matches!(url, StorageUrl::S3 { .. }) {
        return false;
    }
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    env("AWS_PROFILE")
        || env("AWS_WEB_IDENTITY_TOKEN_FILE")
        || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/credentials"))
            .exists()
}

/// Whether anything of an s3fs filesystem is stored at this URL.
pub async fn has_filesystem(store: &dyn Store) -> Result<bool, Error> {
    let page = store.list(names::PREFIX, None).await?;
    Ok(!page.objects.is_empty())
}

/// Which copies of the wrapped key exist, with their bytes.
async fn key_copies(store: &dyn Store) -> Result<Vec<(&'static str, Bytes)>, Error> {
    let mut found = Vec::new();
    for name in names::KEY_COPIES {
        match store.get(name, crypto::WRAPPED_KEY_LEN as u64).await {
            Ok(b) => found.push((name, b)),
            Err(StoreError::NotFound(_)) => {}
            // Not a key this s3fs wrote: it fails to unwrap as damaged, like any other.
            Err(StoreError::TooLarge { .. }) => found.push((name, Bytes::new())),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(found)
}

/// Unwrap the master key with `passphrase`, trying every copy (a passphrase change that
/// was interrupted can leave copies under both passphrases).
pub fn unwrap_any(copies: &[(&str, Bytes)], passphrase: &str) -> Result<MasterKey, Error> {
    let mut wrong = false;
    let mut damage = Vec::new();
    for (name, blob) in copies {
        match crypto::unwrap_key(blob, passphrase.as_bytes()) {
            Ok(k) => return Ok(k),
            Err(KeyError::WrongPassphrase) => wrong = true,
            Err(e) => damage.push(format!("{name}: {e}")),
        }
    }
    if wrong {
        return Err(Error::new(ExitCode::WrongPassphrase, "wrong passphrase"));
    }
    Err(Error::new(
        ExitCode::Failure,
        format!(
            "every copy of the master key is damaged ({}); restore it with `s3fsadm recover-key`",
            damage.join("; ")
        ),
    ))
}

/// Write the wrapped key to all copies.
pub async fn write_key_copies(store: &dyn Store, key: &MasterKey, passphrase: &str) -> Result<(), Error> {
    for name in names::KEY_COPIES {
        let blob = crypto::wrap_key(key, passphrase.as_bytes(), crypto::KdfParams::default());
        store.put(name, Bytes::from(blob), PutMode::Overwrite).await?;
    }
    Ok(())
}

/// An opened filesystem: store + codec, its superblock and (if encrypted) its key.
#[derive(Debug)]
pub struct Opened {
    pub fs: FsStore,
    pub params: Params,
    pub key: Option<MasterKey>,
}

/// Load the master key (passphrase from authinfo2 or `secrets`) and the superblock.
pub async fn open_filesystem(
    conn: &Connection,
    compression: Compression,
    secrets: &mut dyn SecretSource,
) -> Result<Opened, Error> {
    let copies = key_copies(conn.store.as_ref()).await?;
    let key = if copies.is_empty() {
        if conn.auth.fs_passphrase.is_some() {
            // The owner said it is encrypted; the store says otherwise. Whoever can write
            // to the bucket can delete the keys and put a plain filesystem there.
            return Err(Error::new(
                ExitCode::Tampered,
                format!(
                    "authinfo2 gives a passphrase for {}, but the store holds no encryption key: the filesystem there is not encrypted. If it was, someone with access to the bucket may have replaced it; refusing to use it. (For a filesystem made with --plain, remove fs-passphrase from its section.)",
                    conn.url
                ),
            ));
        }
        None
    } else {
        let passphrase = match &conn.auth.fs_passphrase {
            Some(p) => p.clone(),
            None => secrets.ask("Enter filesystem encryption passphrase: ")?,
        };
        Some(unwrap_any(&copies, &passphrase)?)
    };
    let mut fs = FsStore::new(conn.store.clone(), Codec::new(key.clone(), compression));
    let params = fs.read_params().await.map_err(|e| match (&key, e.message.contains("is encrypted")) {
        (None, true) => Error::new(
            ExitCode::Failure,
            "the filesystem is encrypted but every copy of its key is missing; restore it with `s3fsadm recover-key`",
        ),
        _ => e,
    })?;
    if params.encrypted != key.is_some() {
        return Err(Error::new(
            ExitCode::Tampered,
            format!(
                "the superblock says the filesystem is {}encrypted, but the store holds {}: refusing to use it",
                if params.encrypted { "" } else { "not " },
                if key.is_some() { "a key" } else { "no key" }
            ),
        ));
    }
    fs.write_for_revision(params.revision);
    Ok(Opened { fs, params, key })
}

#[cfg(test)]
mod tests {
    use super::names::*;

    #[test]
    fn meta_chunk_names_round_trip() {
        assert_eq!(meta_chunk(3, 0x65432), "s3fs_meta_000000000003_0000065432");
        assert_eq!(parse_meta_chunk(&meta_chunk(77, 123456789)), Some((77, 123456789)));
        assert_eq!(parse_meta_chunk("s3fs_meta_zz_1"), None);
        assert_eq!(params_version(255), "s3fs_params_00000000ff");
    }

    #[test]
    fn only_our_own_object_names_are_ours() {
        for ours in [
            "s3fs_params",
            "s3fs_key_bak2",
            "s3fs_data_17",
            "s3fs_lock",
            &meta_chunk(3, 9),
            &params_version(9),
        ] {
            assert!(is_filesystem_object(ours), "{ours}");
        }
        for theirs in [
            "-2s3fs_data_1",
            ".olds3fs_params",
            "s3fs_xs3fs_data_1",
            "s3fs_data_",
            "s3fs_data_1x",
            "s3fs_meta_zz_1",
        ] {
            assert!(!is_filesystem_object(theirs), "{theirs}");
        }
    }
}
