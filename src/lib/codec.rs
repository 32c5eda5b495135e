//! The object format: turns plaintext into self-describing, compressed, optionally
//! encrypted objects, and back.
//!
//! Every stored object is a header followed by a body.
//!
//! Header (16 bytes, or 44 if encrypted):
//!
//! | bytes | content                                                   |
//! |-------|-----------------------------------------------------------|
//! | 4     | magic `b"S3FS"`                                           |
//! | 1     | format version (1; 2 for some unencrypted objects, below) |
//! | 1     | compression: 0 none, 1 zlib, 2 zstd                       |
//! | 1     | encryption: 0 none, 1 AES-256-GCM-SIV                     |
//! | 1     | reserved, 0                                               |
//! | 8     | plaintext length, u64 LE                                  |
//! | 16    | (encrypted only) random HKDF salt                         |
//! | 12    | (encrypted only) random nonce                             |
//!
//! Encrypted body: AES-256-GCM-SIV(object key, nonce, compressed payload) with the 16-byte
//! tag at the end; the associated data is the header bytes followed by the object name, and
//! the object key is HKDF-SHA256(ikm = master key, salt, info = `b"s3fs object key v1"`).
//!
//! Unencrypted body: compressed payload followed by a checksum: SHA-256(header || name ||
//! payload) in format 1, XXH3-128(header || name length as u64 LE || name || payload) in
//! format 2. Without a key, anyone who can write the object can also recompute either, so
//! the checksum only has to catch damage and misplaced objects; XXH3 does that at a small
//! fraction of SHA-256's cost, which was a quarter of the CPU a plain filesystem spent on
//! writing and on reading blocks. Format 2 is written on filesystems of revision 3 and
//! later ([`Codec::with_fast_plain_checksum`]); objects every release must read (the
//! superblock, the lock) stay in format 1 ([`Codec::encode_portable`]).
//!
//! Either way a renamed, swapped, truncated or bit-flipped object fails to decode. If
//! compression does not make the payload smaller it is stored uncompressed.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::inout::InOutBuf;
use aes_gcm_siv::aead::{AeadInOut, KeyInit};
use bytes::Bytes;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3Default;
use zeroize::Zeroizing;
use zstd::zstd_safe;

use crate::crypto::{MasterKey, fill_random};

/// Magic bytes at the start of every object.
pub const MAGIC: &[u8; 4] = b"S3FS";
/// The object format version every release reads, and the one encrypted objects use.
pub const FORMAT_VERSION: u8 = 1;
/// Format 2: an unencrypted object checksummed with XXH3-128 instead of SHA-256.
pub const FORMAT_VERSION_FAST_CHECKSUM: u8 = 2;
/// Largest plaintext an object may hold (1 GiB); also bounds what decoding allocates.
pub const MAX_PLAINTEXT_LEN: u64 = 1 << 30;

const BASE_HEADER_LEN: usize = 16;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const ENC_HEADER_LEN: usize = BASE_HEADER_LEN + SALT_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;
/// Length of a format 1 checksum (SHA-256); the longest trailer of any format.
const HASH_LEN: usize = 32;
/// Length of a format 2 checksum (XXH3-128).
const FAST_HASH_LEN: usize = 16;
const HKDF_INFO: &[u8] = b"s3fs object key v1";
/// Room [`Framed`] keeps before its plaintext: the longest header.
const FRAME_ROOM: usize = ENC_HEADER_LEN;
/// Room [`Framed`] keeps after it: the longest trailer.
const FRAME_TAIL: usize = if HASH_LEN > TAG_LEN { HASH_LEN } else { TAG_LEN };

const COMP_NONE: u8 = 0;
const COMP_ZLIB: u8 = 1;
const COMP_ZSTD: u8 = 2;
const ENC_NONE: u8 = 0;
const ENC_AES_GCM_SIV: u8 = 1;

/// Compression algorithm and level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    /// zlib (deflate with zlib framing), level 0-9.
    Zlib(u32),
    /// zstd, level 1-19 (other levels zstd supports are clamped when encoding).
    Zstd(i32),
}

impl Default for Compression {
    /// zstd level 3.
    fn default() -> Self {
        Compression::Zstd(3)
    }
}

/// An unparseable compression specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid compression {0:?}: valid forms are none, zlib, zlib-0 … zlib-9 (zlib = zlib-6), \
     zstd, zstd-1 … zstd-19 (zstd = zstd-3)"
)]
pub struct ParseCompressionError(pub String);

impl FromStr for Compression {
    type Err = ParseCompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseCompressionError(s.to_string());
        let t = s.trim().to_ascii_lowercase();
        let level = |rest: &str, range: std::ops::RangeInclusive<i64>| -> Result<i64, _> {
            // Only plain decimal digits: no sign, no whitespace.
            if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || rest.len() > 3 {
                return Err(err());
            }
            let n: i64 = rest.parse().map_err(|_| err())?;
            if range.contains(&n) { Ok(n) } else { Err(err()) }
        };
        match t.as_str() {
            "none" => Ok(Compression::None),
            "zlib" => Ok(Compression::Zlib(6)),
            "zstd" => Ok(Compression::Zstd(3)),
            _ => {
                if let Some(rest) = t.strip_prefix("zlib-") {
                    Ok(Compression::Zlib(level(rest, 0..=9)? as u32))
                } else if let Some(rest) = t.strip_prefix("zstd-") {
                    Ok(Compression::Zstd(level(rest, 1..=19)? as i32))
                } else {
                    Err(err())
                }
            }
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zlib(l) => write!(f, "zlib-{l}"),
            Compression::Zstd(l) => write!(f, "zstd-{l}"),
        }
    }
}

/// Why an object could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("object {name} is corrupt: {why}")]
    Corrupt { name: String, why: String },
    /// An encrypted filesystem refuses unencrypted objects (a downgrade attack or a foreign
    /// object).
    #[error("object {name} is not encrypted, but the filesystem is")]
    NotEncrypted { name: String },
    /// An unencrypted filesystem cannot read encrypted objects.
    #[error("object {name} is encrypted, but the filesystem is not")]
    UnexpectedlyEncrypted { name: String },
    #[error("object {name} uses format version {version}, which this s3fs does not know")]
    UnknownVersion { name: String, version: u8 },
}

/// A plaintext in a buffer with room for an object's header before it and its trailer
/// after it, so that [`Codec::encode_framed`] can make the object where the plaintext
/// lies.
#[derive(Debug)]
pub struct Framed {
    /// `FRAME_ROOM` bytes of room, then the plaintext; capacity for the trailer.
    buf: Vec<u8>,
}

impl Framed {
    /// A plaintext of `len` bytes that `append` adds to the end of the vector it is
    /// given (which has room for them: `append` may write into its spare capacity).
    pub fn fill<E>(len: usize, append: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<Framed, E> {
        let mut buf = Vec::with_capacity(FRAME_ROOM + len + FRAME_TAIL);
        buf.resize(FRAME_ROOM, 0);
        append(&mut buf)?;
        assert!(
            buf.len() >= FRAME_ROOM,
            "Framed::fill: the room before the plaintext was cut"
        );
        Ok(Framed { buf })
    }

    /// A copy of `plaintext`, framed (for tests: uploads fill the frame from the file).
    #[cfg(test)]
    pub fn copy_of(plaintext: &[u8]) -> Framed {
        let Ok(framed) = Framed::fill(plaintext.len(), |b| {
            b.extend_from_slice(plaintext);
            Ok::<(), std::convert::Infallible>(())
        });
        framed
    }

    pub fn plaintext(&self) -> &[u8] {
        &self.buf[FRAME_ROOM..]
    }

    /// The plaintext alone (moved down over the room: a copy of its length).
    pub fn into_plaintext(mut self) -> Vec<u8> {
        self.buf.drain(..FRAME_ROOM);
        self.buf
    }
}

/// Encodes and decodes objects. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Codec {
    key: Option<MasterKey>,
    compression: Compression,
    /// The format of the unencrypted objects [`Codec::encode`] writes.
    plain_format: u8,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("encrypted", &self.is_encrypted())
            .field("compression", &self.compression)
            .field("plain_format", &self.plain_format)
            .finish()
    }
}

impl Codec {
    /// A codec that encrypts with `key` (if any) and compresses with `compression`.
    /// Decoding accepts any compression; it requires encryption exactly if `key` is given.
    /// It writes format 1, which every release reads.
    pub fn new(key: Option<MasterKey>, compression: Compression) -> Codec {
        Codec {
            key,
            compression,
            plain_format: FORMAT_VERSION,
        }
    }

    /// With `fast`, [`Codec::encode`] writes unencrypted objects in format 2 (XXH3-128
    /// checksum), which releases before filesystem revision 3 cannot read. Encrypted
    /// objects are unchanged. Decoding accepts both formats either way.
    pub fn with_fast_plain_checksum(mut self, fast: bool) -> Codec {
        self.plain_format = if fast {
            FORMAT_VERSION_FAST_CHECKSUM
        } else {
            FORMAT_VERSION
        };
        self
    }

    pub fn is_encrypted(&self) -> bool {
        self.key.is_some()
    }

    /// The compression used for encoding.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Turn `plaintext` into the object to store under `name`.
    ///
    /// # Panics
    /// If `plaintext` is longer than [`MAX_PLAINTEXT_LEN`], or if the operating system
    /// cannot supply random bytes.
    pub fn encode(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        self.encode_in(self.plain_format, name, plaintext)
    }

    /// [`Codec::encode`] in format 1, for the objects a release must read to learn that it
    /// cannot handle the filesystem (the superblock, with its revision) or who holds it
    /// (the lock).
    pub fn encode_portable(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        self.encode_in(FORMAT_VERSION, name, plaintext)
    }

    fn encode_in(&self, plain_format: u8, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let compress = worth_compressing(self.compression, plaintext);
        self.encode_copying(plain_format, name, plaintext, compress)
    }

    /// The object in a new buffer; the payload compressed if `compress` and if that
    /// makes it smaller.
    fn encode_copying(&self, plain_format: u8, name: &str, plaintext: &[u8], compress: bool) -> Vec<u8> {
        assert_within_limit(name, plaintext.len());
        let (header, hlen, version) = self.header(plain_format, plaintext.len());
        let mut out = Vec::with_capacity(hlen + plaintext.len() + FRAME_TAIL);
        out.extend_from_slice(&header[..hlen]);
        out[5] = if compress {
            compress_into(self.compression, plaintext, &mut out)
        } else {
            out.extend_from_slice(plaintext);
            COMP_NONE
        };
        self.seal(version, name, &mut out, 0, hlen);
        out
    }

    /// [`Codec::encode`] of `framed`'s plaintext. A payload stored as it is (no
    /// compression asked for, or the block looks random) is framed where it lies: the
    /// header goes into the room before it, the trailer after it, and it is encrypted in
    /// place, instead of being copied into a new buffer (4 MiB per full block). The same
    /// bytes as [`Codec::encode`] but for an encrypted object's random salt and nonce.
    ///
    /// # Panics
    /// As [`Codec::encode`].
    pub fn encode_framed(&self, name: &str, framed: Framed) -> Bytes {
        let plaintext = framed.plaintext();
        if worth_compressing(self.compression, plaintext) {
            return Bytes::from(self.encode_copying(self.plain_format, name, plaintext, true));
        }
        assert_within_limit(name, plaintext.len());
        let (header, hlen, version) = self.header(self.plain_format, plaintext.len());
        let start = FRAME_ROOM - hlen;
        let mut buf = framed.buf;
        buf[start..FRAME_ROOM].copy_from_slice(&header[..hlen]);
        self.seal(version, name, &mut buf, start, hlen);
        Bytes::from(buf).slice(start..)
    }

    /// The header of an object of `plain_len` bytes of plaintext, with no compression
    /// (byte 5, patched by the caller if it compresses), and its length and format.
    fn header(&self, plain_format: u8, plain_len: usize) -> ([u8; ENC_HEADER_LEN], usize, u8) {
        let (hlen, version) = match self.key {
            Some(_) => (ENC_HEADER_LEN, FORMAT_VERSION),
            None => (BASE_HEADER_LEN, plain_format),
        };
        let mut h = [0u8; ENC_HEADER_LEN];
        h[..4].copy_from_slice(MAGIC);
        h[4] = version;
        h[5] = COMP_NONE;
        h[6] = if self.key.is_some() { ENC_AES_GCM_SIV } else { ENC_NONE };
        h[7] = 0;
        h[8..16].copy_from_slice(&(plain_len as u64).to_le_bytes());
        if self.key.is_some() {
            fill_random(&mut h[BASE_HEADER_LEN..ENC_HEADER_LEN]);
        }
        (h, hlen, version)
    }

    /// Encrypt or checksum the object in `obj[from..]` (its header is the `hlen` bytes
    /// at `from`, its payload the rest) in place and append the tag or checksum.
    fn seal(&self, version: u8, name: &str, obj: &mut Vec<u8>, from: usize, hlen: usize) {
        let (header, payload) = obj[from..].split_at_mut(hlen);
        let trailer = match &self.key {
            Some(key) => {
                let (cipher, nonce) = object_cipher(key, header);
                let aad = aad(header, name);
                cipher
                    .encrypt_inout_detached(&nonce.into(), &aad, payload.into())
                    .expect("payload within AES-GCM-SIV limits")
                    .to_vec()
            }
            None => plain_hash(version, header, name, payload),
        };
        obj.extend_from_slice(&trailer);
    }

    /// The largest object that holds at most `max_plain` bytes of plaintext (the payload
    /// is never larger than the plaintext: compression is used only if it makes it
    /// smaller): what a reader expecting that much fetches at most.
    pub fn max_object_len(max_plain: u64) -> u64 {
        max_plain.saturating_add((ENC_HEADER_LEN + HASH_LEN.max(TAG_LEN)) as u64)
    }

    /// Check and decode `object`, which was stored under `name`, back into the plaintext.
    pub fn decode(&self, name: &str, object: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.decode_at_most(name, object, MAX_PLAINTEXT_LEN)
    }

    /// [`Codec::decode`] of an object whose plaintext its reader expects to be at most
    /// `max_plain` bytes: one whose header claims more is corrupt, before anything is
    /// allocated or decompressed for it (a small object could claim a gigabyte).
    pub fn decode_at_most(&self, name: &str, object: &[u8], max_plain: u64) -> Result<Vec<u8>, CodecError> {
        Ok(match self.decode_in(name, object, max_plain)? {
            Decoded::Stored(range) => object[range].to_vec(),
            Decoded::Made(plaintext) => plaintext,
            Decoded::Sealed { comp, plain_len } => self.unseal_copy(name, object, comp, plain_len)?,
        })
    }

    /// [`Codec::decode_at_most`] of an object held in shared memory, without copying
    /// what need not be: an unencrypted, uncompressed payload (most data blocks of a
    /// plain filesystem) is returned as a view of `object`, and an encrypted one is
    /// decrypted where it lies if nothing else holds `object`.
    pub fn decode_shared(&self, name: &str, object: Bytes, max_plain: u64) -> Result<Bytes, CodecError> {
        Ok(match self.decode_in(name, &object, max_plain)? {
            Decoded::Stored(range) => object.slice(range),
            Decoded::Made(plaintext) => Bytes::from(plaintext),
            Decoded::Sealed { comp, plain_len } => match object.try_into_mut() {
                Ok(mut owned) => {
                    let (header, rest) = owned.split_at_mut(ENC_HEADER_LEN);
                    let len = rest.len() - TAG_LEN;
                    let (ciphertext, tag) = rest.split_at_mut(len);
                    self.unseal(name, header, InOutBuf::from(ciphertext), tag)?;
                    let payload = owned.freeze().slice(ENC_HEADER_LEN..ENC_HEADER_LEN + len);
                    if comp == COMP_NONE {
                        payload
                    } else {
                        Bytes::from(decompressed(name, comp, plain_len, &payload)?)
                    }
                }
                Err(shared) => Bytes::from(self.unseal_copy(name, &shared, comp, plain_len)?),
            },
        })
    }

    /// Decrypt `buf` (the ciphertext in, the payload out) of the encrypted object with
    /// `header` and `tag`, checking it.
    fn unseal(&self, name: &str, header: &[u8], buf: InOutBuf<'_, '_, u8>, tag: &[u8]) -> Result<(), CodecError> {
        let key = self.key.as_ref().expect("only encrypted objects are sealed");
        let (cipher, nonce) = object_cipher(key, header);
        let aad = aad(header, name);
        let tag: [u8; TAG_LEN] = tag.try_into().expect("tag length");
        cipher
            .decrypt_inout_detached(&nonce.into(), &aad, buf, &tag.into())
            .map_err(|_| {
                corrupt(
                    name,
                    "authentication failed (damaged, renamed, or written with another key)".into(),
                )
            })
    }

    /// The plaintext of the encrypted `object` (whose header checked out), decrypted
    /// into a new buffer: for objects that are not the caller's to overwrite.
    fn unseal_copy(&self, name: &str, object: &[u8], comp: u8, plain_len: usize) -> Result<Vec<u8>, CodecError> {
        let (header, rest) = object.split_at(ENC_HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut payload = vec![0u8; ciphertext.len()];
        let buf = InOutBuf::new(ciphertext, &mut payload).expect("equal lengths");
        self.unseal(name, header, buf, tag)?;
        if comp == COMP_NONE {
            Ok(payload)
        } else {
            decompressed(name, comp, plain_len, &payload)
        }
    }

    fn decode_in(&self, name: &str, object: &[u8], max_plain: u64) -> Result<Decoded, CodecError> {
        let corrupt = |why: String| corrupt(name, why);
        if object.len() < MAGIC.len() + 1 || &object[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not an s3fs object (bad magic or too short)".into()));
        }
        let version = object[4];
        if version != FORMAT_VERSION && version != FORMAT_VERSION_FAST_CHECKSUM {
            return Err(CodecError::UnknownVersion {
                name: name.to_string(),
                version,
            });
        }
        if object.len() < BASE_HEADER_LEN {
            return Err(corrupt("truncated header".into()));
        }
        let (comp, enc, reserved) = (object[5], object[6], object[7]);
        let plain_len = u64::from_le_bytes(object[8..16].try_into().expect("8 bytes"));
        match (enc, &self.key) {
            (ENC_NONE, Some(_)) => {
                return Err(CodecError::NotEncrypted { name: name.to_string() });
            }
            (ENC_AES_GCM_SIV, None) => {
                return Err(CodecError::UnexpectedlyEncrypted { name: name.to_string() });
            }
            (ENC_NONE | ENC_AES_GCM_SIV, _) => {}
            _ => return Err(corrupt(format!("unknown encryption {enc}"))),
        }
        if enc != ENC_NONE && version != FORMAT_VERSION {
            return Err(corrupt(format!("format {version} is for unencrypted objects only")));
        }
        if !matches!(comp, COMP_NONE | COMP_ZLIB | COMP_ZSTD) {
            return Err(corrupt(format!("unknown compression {comp}")));
        }
        if reserved != 0 {
            return Err(corrupt(format!("reserved header byte is {reserved}")));
        }
        if plain_len > MAX_PLAINTEXT_LEN.min(max_plain) {
            return Err(corrupt(format!(
                "header claims {plain_len} bytes, more than the {} expected",
                MAX_PLAINTEXT_LEN.min(max_plain)
            )));
        }
        let plain_len = plain_len as usize;

        match &self.key {
            Some(_) => {
                if object.len() < ENC_HEADER_LEN + TAG_LEN {
                    return Err(corrupt("truncated".into()));
                }
                let ciphertext_len = object.len() - ENC_HEADER_LEN - TAG_LEN;
                if comp == COMP_NONE && ciphertext_len != plain_len {
                    return Err(corrupt(format!(
                        "payload is {ciphertext_len} bytes, header says {plain_len}"
                    )));
                }
                Ok(Decoded::Sealed { comp, plain_len })
            }
            None => {
                let hash_len = plain_hash_len(version);
                if object.len() < BASE_HEADER_LEN + hash_len {
                    return Err(corrupt("truncated".into()));
                }
                let (body, hash) = object.split_at(object.len() - hash_len);
                let (header, payload) = body.split_at(BASE_HEADER_LEN);
                if comp == COMP_NONE && payload.len() != plain_len {
                    return Err(corrupt(format!(
                        "payload is {} bytes, header says {plain_len}",
                        payload.len()
                    )));
                }
                if plain_hash(version, header, name, payload)[..] != hash[..] {
                    return Err(corrupt("checksum mismatch (damaged, truncated or renamed)".into()));
                }
                if comp == COMP_NONE {
                    Ok(Decoded::Stored(BASE_HEADER_LEN..BASE_HEADER_LEN + payload.len()))
                } else {
                    decompressed(name, comp, plain_len, payload).map(Decoded::Made)
                }
            }
        }
    }
}

/// What decoding made of an object.
enum Decoded {
    /// The plaintext is these bytes of the object (stored as they are).
    Stored(std::ops::Range<usize>),
    /// The plaintext, decompressed.
    Made(Vec<u8>),
    /// An encrypted object whose header checked out: the payload between the header and
    /// the tag is for the caller to decrypt ([`Codec::unseal`]), then to decompress.
    Sealed { comp: u8, plain_len: usize },
}

/// The plaintext of a compressed `payload`; a payload that does not decompress to
/// exactly `plain_len` bytes is corrupt.
fn decompressed(name: &str, comp: u8, plain_len: usize, payload: &[u8]) -> Result<Vec<u8>, CodecError> {
    decompress(comp, payload, plain_len).map_err(|why| corrupt(name, why))
}

fn corrupt(name: &str, why: String) -> CodecError {
    CodecError::Corrupt {
        name: name.to_string(),
        why,
    }
}

/// The associated data: header bytes followed by the object name.
fn aad(header: &[u8], name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + name.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Length of the checksum that ends an unencrypted object of format `version`.
fn plain_hash_len(version: u8) -> usize {
    if version == FORMAT_VERSION_FAST_CHECKSUM {
        FAST_HASH_LEN
    } else {
        HASH_LEN
    }
}

/// The checksum of an unencrypted object of format `version` (1 or 2), of
/// [`plain_hash_len`] bytes.
fn plain_hash(version: u8, header: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    if version == FORMAT_VERSION_FAST_CHECKSUM {
        let mut h = Xxh3Default::new();
        h.update(header);
        // The name's length first, so that no other name and payload hash alike.
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(payload);
        h.digest128().to_le_bytes().to_vec()
    } else {
        let mut h = Sha256::new();
        h.update(header);
        h.update(name.as_bytes());
        h.update(payload);
        h.finalize().to_vec()
    }
}

/// The per-object cipher and nonce from an encrypted header (salt and nonce at the end).
fn object_cipher(key: &MasterKey, header: &[u8]) -> (Aes256GcmSiv, [u8; NONCE_LEN]) {
    let salt = &header[BASE_HEADER_LEN..BASE_HEADER_LEN + SALT_LEN];
    let nonce: [u8; NONCE_LEN] = header[BASE_HEADER_LEN + SALT_LEN..ENC_HEADER_LEN]
        .try_into()
        .expect("nonce length");
    let mut object_key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), key.as_bytes())
        .expand(HKDF_INFO, &mut object_key[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    (Aes256GcmSiv::new(&(*object_key).into()), nonce)
}

/// Reused (de)compression contexts, shared by all threads: creating one per block costs
/// more than a small block's work. They were kept one per thread, and every thread of
/// tokio's blocking pool that ever encoded a block kept a zstd context of about 2 MiB:
/// 85 MiB of a mount's peak RSS while a tree of small files was uploaded (heaptrack).
/// The contexts in use at once are as many as the callers' concurrent work (the mount
/// bounds its encoding by its CPU threads); at most [`POOL_KEEP`] of each kind stay idle.
struct Pool<T>(Mutex<Vec<T>>);

const POOL_KEEP: usize = 8;

impl<T> Pool<T> {
    const fn new() -> Self {
        Pool(Mutex::new(Vec::new()))
    }

    /// Run `f` with an idle context, or a new one from `make`, and keep it for reuse.
    fn with<R>(&self, make: impl FnOnce() -> T, f: impl FnOnce(&mut T) -> R) -> R {
        let idle = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut item = idle.unwrap_or_else(make);
        let r = f(&mut item);
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_KEEP {
            idle.push(item);
        }
        r
    }
}

static ZSTD_CCTX: Pool<zstd_safe::CCtx<'static>> = Pool::new();
static ZSTD_DCTX: Pool<zstd_safe::DCtx<'static>> = Pool::new();
/// zlib compressors, with their level.
static ZLIB_C: Pool<(u32, flate2::Compress)> = Pool::new();
static ZLIB_D: Pool<flate2::Decompress> = Pool::new();

fn assert_within_limit(name: &str, len: usize) {
    assert!(
        len as u64 <= MAX_PLAINTEXT_LEN,
        "object {name}: {len} bytes exceed the maximum object size"
    );
}

/// Whether compressing `plaintext` may pay: a compression is set, the plaintext is longer
/// than one byte (compressed output must be strictly smaller) and does not look random.
fn worth_compressing(compression: Compression, plaintext: &[u8]) -> bool {
    compression != Compression::None && plaintext.len() > 1 && !looks_incompressible(plaintext)
}

/// Append the payload for `plaintext` to `out` (which holds the header), compressed if that
/// makes it strictly smaller, and return the compression byte actually used. The caller
/// has checked [`worth_compressing`].
fn compress_into(compression: Compression, plaintext: &[u8], out: &mut Vec<u8>) -> u8 {
    let start = out.len();
    // Compressed output must be strictly smaller than the plaintext to be worth it.
    let limit = plaintext.len().saturating_sub(1);
    let used = match compression {
        Compression::None => COMP_NONE,
        Compression::Zstd(level) => {
            if zstd_compress(level, plaintext, out, limit) {
                COMP_ZSTD
            } else {
                COMP_NONE
            }
        }
        Compression::Zlib(level) => {
            if zlib_compress(level, plaintext, out, limit) {
                COMP_ZLIB
            } else {
                COMP_NONE
            }
        }
    };
    if used == COMP_NONE {
        out.truncate(start);
        out.extend_from_slice(plaintext);
    }
    used
}

/// Blocks at least this long are sampled before compression (see [`looks_incompressible`]).
const SAMPLE_MIN_LEN: usize = 64 << 10;
const SAMPLES: usize = 16;
const SAMPLE_LEN: usize = 256;
/// Shannon entropy, in bits per byte, above which a block is taken for random: 4 KiB of
/// uniformly random bytes measure about 7.95; text 4-5, machine code 5-6.5.
const RANDOM_ENTROPY: f64 = 7.85;

/// Whether a large block looks like random bytes (compressed media, archives, encrypted
/// files), which no compressor shrinks: zstd spent 12 % of the upload CPU finding that
/// out for every such block. The byte entropy of 16 samples of 256 bytes, spread over
/// the block, decides, as btrfs and ZFS decide to skip compression. A block that is
/// random in most places but not all of them still has its samples of the rest; only
/// random content that repeats itself within the block is stored without compression
/// where zstd would have shrunk it.
fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < SAMPLE_MIN_LEN {
        return false;
    }
    let mut counts = [0u32; 256];
    let stride = (data.len() - SAMPLE_LEN) / (SAMPLES - 1);
    for i in 0..SAMPLES {
        for &b in &data[i * stride..i * stride + SAMPLE_LEN] {
            counts[b as usize] += 1;
        }
    }
    let total = (SAMPLES * SAMPLE_LEN) as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / total;
            -p * p.log2()
        })
        .sum();
    entropy > RANDOM_ENTROPY
}

/// Compress into `out` after its current contents, using at most `limit` bytes.
/// Returns false (leaving junk in `out`) if that is not possible.
fn zstd_compress(level: i32, plaintext: &[u8], out: &mut Vec<u8>, limit: usize) -> bool {
    let start = out.len();
    let level = level.clamp(zstd_safe::min_c_level(), zstd_safe::max_c_level());
    // compress2 uses zstd's stable-buffer mode: it compresses straight into the
    // destination even when that is smaller than the worst-case bound.
    out.resize(start + limit, 0);
    ZSTD_CCTX.with(zstd_safe::CCtx::create, |cctx| {
        let ok = cctx
            .set_parameter(zstd_safe::CParameter::CompressionLevel(level))
            .is_ok();
        match cctx.compress2(&mut out[start..], plaintext) {
            Ok(n) if ok && n < plaintext.len() => {
                out.truncate(start + n);
                true
            }
            _ => {
                // Most likely "destination too small"; leave the context usable.
                let _ = cctx.reset(zstd_safe::ResetDirective::SessionOnly);
                false
            }
        }
    })
}

fn zlib_compress(level: u32, plaintext: &[u8], out: &mut Vec<u8>, limit: usize) -> bool {
    use flate2::{FlushCompress, Status};
    let start = out.len();
    let level = level.min(9);
    // compress_vec writes into spare capacity only, never reallocating.
    out.reserve_exact(limit);
    let fresh = || (level, flate2::Compress::new(flate2::Compression::new(level), true));
    ZLIB_C.with(fresh, |slot| {
        let c = match slot {
            (l, c) if *l == level => {
                c.reset();
                c
            }
            _ => {
                *slot = fresh();
                &mut slot.1
            }
        };
        loop {
            let (in_before, out_before) = (c.total_in(), out.len());
            let consumed = in_before as usize;
            match c.compress_vec(&plaintext[consumed..], out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return out.len() - start <= limit,
                Ok(_) if out.len() - start < limit => {
                    if c.total_in() == in_before && out.len() == out_before {
                        return false; // no progress
                    }
                }
                _ => return false,
            }
        }
    })
}

/// Decompress `payload` into exactly `len` bytes; never allocates more than `len`.
fn decompress(comp: u8, payload: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(len);
    match comp {
        COMP_ZSTD => ZSTD_DCTX.with(zstd_safe::DCtx::create, |dctx| {
            // Writes at most out.capacity() bytes; more is an error.
            let r = dctx.decompress(&mut out, payload);
            if r.is_err() {
                let _ = dctx.reset(zstd_safe::ResetDirective::SessionOnly);
            }
            r.map_err(|code| format!("zstd decompression failed: {}", zstd_safe::get_error_name(code)))
        })?,
        COMP_ZLIB => ZLIB_D.with(
            || flate2::Decompress::new(true),
            |d| {
                use flate2::{FlushDecompress, Status};
                d.reset(true);
                loop {
                    let (in_before, out_before) = (d.total_in(), out.len());
                    match d.decompress_vec(&payload[in_before as usize..], &mut out, FlushDecompress::Finish) {
                        Ok(Status::StreamEnd) => break,
                        Ok(_) => {
                            if d.total_in() == in_before && out.len() == out_before {
                                return Err(if out.len() >= len {
                                    "decompressed data longer than the header says".to_string()
                                } else {
                                    "zlib stream truncated".to_string()
                                });
                            }
                        }
                        Err(e) => return Err(format!("zlib decompression failed: {e}")),
                    }
                }
                if d.total_in() as usize != payload.len() {
                    return Err("trailing bytes after the zlib stream".to_string());
                }
                Ok(0)
            },
        )?,
        _ => unreachable!("compression byte checked by the caller"),
    };
    if out.len() != len {
        return Err(format!("decompressed to {} bytes, header says {len}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_shared_by_threads_and_few_stay_idle() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let pool: Pool<u32> = Pool::new();
        let make = || {
            MADE.fetch_add(1, SeqCst);
            0
        };
        // One thread after the other: one context for all of them.
        for _ in 0..20 {
            std::thread::scope(|s| {
                s.spawn(|| pool.with(make, |c| *c += 1));
            });
        }
        assert_eq!(MADE.load(SeqCst), 1);
        assert_eq!(pool.with(make, |c| *c), 20, "the same context every time");
        // Many at once: as many contexts, of which POOL_KEEP are kept.
        let barrier = std::sync::Barrier::new(20);
        std::thread::scope(|s| {
            for _ in 0..20 {
                s.spawn(|| {
                    pool.with(make, |_| {
                        barrier.wait();
                    })
                });
            }
        });
        assert_eq!(MADE.load(SeqCst), 20);
        assert_eq!(pool.0.lock().unwrap().len(), POOL_KEEP);
    }

    /// A small deterministic PRNG (xorshift64*), so tests need no extra crates.
    fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            v.extend_from_slice(&s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// Text-like data that compresses well but not trivially.
    fn compressible_bytes(n: usize, seed: u64) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dog ", "s3fs ", "object ", "block ",
            "inode ", "\n",
        ];
        let r = random_bytes(n, seed);
        let mut v = Vec::with_capacity(n + 16);
        let mut i = 0;
        while v.len() < n {
            let b = r[i % r.len()];
            if b < 16 {
                v.push(b'a' + b); // a bit of noise
            } else {
                v.extend_from_slice(WORDS[b as usize % WORDS.len()].as_bytes());
            }
            i += 1;
        }
        v.truncate(n);
        v
    }

    const COMPRESSIONS: [Compression; 4] = [
        Compression::None,
        Compression::Zlib(6),
        Compression::Zstd(3),
        Compression::Zstd(19),
    ];

    fn codecs() -> Vec<Codec> {
        let key = MasterKey::generate();
        let mut v = Vec::new();
        for c in COMPRESSIONS {
            v.push(Codec::new(None, c));
            v.push(Codec::new(None, c).with_fast_plain_checksum(true));
            v.push(Codec::new(Some(key.clone()), c));
        }
        v
    }

    fn is_corrupt(r: &Result<Vec<u8>, CodecError>) -> bool {
        matches!(r, Err(CodecError::Corrupt { .. }))
    }

    /// Round trip with and without encryption on inputs of every interesting size.
    fn round_trip(compression: Compression) {
        let inputs: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("one byte", vec![42]),
            ("random 1 MiB", random_bytes(1 << 20, 1)),
            ("compressible 1 MiB", compressible_bytes(1 << 20, 2)),
            ("zeros 1 MiB", vec![0; 1 << 20]),
            ("compressible 3 MiB", compressible_bytes(3 << 20, 3)),
        ];
        let key = MasterKey::generate();
        for codec in [
            Codec::new(None, compression),
            Codec::new(None, compression).with_fast_plain_checksum(true),
            Codec::new(Some(key), compression),
        ] {
            for (what, data) in &inputs {
                let obj = codec.encode("s3fs_data_17", data);
                let back = codec.decode("s3fs_data_17", &obj);
                assert!(back.as_ref() == Ok(data), "{codec:?} {what}");
            }
        }
    }

    #[test]
    fn round_trip_none() {
        round_trip(Compression::None);
    }

    #[test]
    fn round_trip_zlib_6() {
        round_trip(Compression::Zlib(6));
    }

    #[test]
    fn round_trip_zstd_3() {
        round_trip(Compression::Zstd(3));
    }

    #[test]
    fn round_trip_zstd_19() {
        round_trip(Compression::Zstd(19));
    }

    #[test]
    fn header_layout() {
        let key = MasterKey::generate();
        let data = compressible_bytes(10_000, 4);
        let plain = Codec::new(None, Compression::Zstd(3)).encode("n", &data);
        assert_eq!(&plain[..4], b"S3FS");
        assert_eq!(plain[4], 1);
        assert_eq!(plain[5], COMP_ZSTD);
        assert_eq!(plain[6], ENC_NONE);
        assert_eq!(plain[7], 0);
        assert_eq!(u64::from_le_bytes(plain[8..16].try_into().unwrap()), 10_000);
        let enc = Codec::new(Some(key), Compression::Zlib(6)).encode("n", &data);
        assert_eq!(enc[5], COMP_ZLIB);
        assert_eq!(enc[6], ENC_AES_GCM_SIV);
        assert_eq!(u64::from_le_bytes(enc[8..16].try_into().unwrap()), 10_000);
        let none = Codec::new(None, Compression::None).encode("n", &data);
        assert_eq!(none[5], COMP_NONE);
        assert_eq!(none.len(), BASE_HEADER_LEN + data.len() + HASH_LEN);
        let fast = Codec::new(None, Compression::None).with_fast_plain_checksum(true);
        let obj = fast.encode("n", &data);
        assert_eq!(obj[4], 2);
        assert_eq!(obj.len(), BASE_HEADER_LEN + data.len() + FAST_HASH_LEN);
        assert_eq!(
            fast.encode_portable("n", &data),
            none,
            "format 1 whatever the codec writes"
        );
    }

    /// Format 2 changes unencrypted objects only; either format decodes with either
    /// setting, and an object relabelled as the other format fails its checksum.
    #[test]
    fn fast_plain_checksum_format() {
        let data = compressible_bytes(20_000, 12);
        let key = MasterKey::generate();
        let enc = Codec::new(Some(key.clone()), Compression::Zstd(3)).with_fast_plain_checksum(true);
        assert_eq!(enc.encode("n", &data)[4], 1, "encrypted objects stay in format 1");
        let slow = Codec::new(None, Compression::Zstd(3));
        let fast = slow.clone().with_fast_plain_checksum(true);
        for (writer, version) in [(&slow, 1u8), (&fast, 2)] {
            let obj = writer.encode("s3fs_data_3", &data);
            assert_eq!(obj[4], version);
            for reader in [&slow, &fast] {
                assert_eq!(reader.decode("s3fs_data_3", &obj).as_deref(), Ok(&data[..]));
            }
            let mut relabelled = obj.clone();
            relabelled[4] = 3 - version;
            assert!(
                is_corrupt(&slow.decode("s3fs_data_3", &relabelled)),
                "format {version} as {}",
                3 - version
            );
        }
        // A format 2 object claiming encryption is damaged, not a mode mismatch to report.
        let mut bad = enc.encode("n", &data);
        bad[4] = 2;
        assert!(is_corrupt(
            &Codec::new(Some(key), Compression::Zstd(3)).decode("n", &bad)
        ));
    }

    /// `decode_shared` agrees with `decode`: decrypting in place when it holds the only
    /// reference to the object, by copy when another is held, and refusing what
    /// `decode` refuses either way.
    #[test]
    fn shared_decoding_agrees_with_decoding() {
        for codec in codecs() {
            for data in [random_bytes(100_000, 13), compressible_bytes(100_000, 14), vec![]] {
                let obj = codec.encode("s3fs_data_4", &data);
                let decode = |o: Bytes| codec.decode_shared("s3fs_data_4", o, 1 << 20);
                let owned = Bytes::from(obj.clone());
                let at = owned.as_ptr();
                let plain = decode(owned).unwrap();
                assert_eq!(plain, data, "{codec:?}");
                if obj[5] == COMP_NONE && !data.is_empty() {
                    let hlen = if codec.is_encrypted() {
                        ENC_HEADER_LEN
                    } else {
                        BASE_HEADER_LEN
                    };
                    assert_eq!(plain.as_ptr(), at.wrapping_add(hlen), "{codec:?}: not copied");
                }
                let shared = Bytes::from(obj.clone());
                let other = shared.clone();
                assert_eq!(decode(shared).unwrap(), data, "{codec:?} shared");
                assert_eq!(other, obj, "a shared object is left as it was");
                let mut bad = obj.clone();
                *bad.last_mut().unwrap() ^= 1;
                assert!(matches!(decode(Bytes::from(bad)), Err(CodecError::Corrupt { .. })));
                let moved = codec.decode_shared("s3fs_data_5", Bytes::from(obj), 1 << 20);
                assert!(matches!(moved, Err(CodecError::Corrupt { .. })), "{codec:?}");
            }
        }
    }

    /// A framed plaintext encodes to the object `encode` makes (the same bytes without
    /// encryption; with it, one that decodes the same), and a payload stored as it is
    /// stays in the framed buffer: the object starts in it, right before the plaintext.
    #[test]
    fn framed_encoding_agrees_with_encoding() {
        for codec in codecs() {
            for data in [
                random_bytes(300_000, 21),
                compressible_bytes(300_000, 22),
                vec![9],
                vec![],
            ] {
                let framed = Framed::copy_of(&data);
                let plain_at = framed.plaintext().as_ptr();
                let obj = codec.encode_framed("s3fs_data_8", framed);
                let expected = codec.encode("s3fs_data_8", &data);
                assert_eq!(obj.len(), expected.len(), "{codec:?}");
                if codec.is_encrypted() {
                    assert_eq!(obj[..BASE_HEADER_LEN], expected[..BASE_HEADER_LEN], "{codec:?}");
                } else {
                    assert_eq!(obj[..], expected[..], "{codec:?}");
                }
                assert_eq!(codec.decode("s3fs_data_8", &obj).unwrap(), data, "{codec:?}");
                assert!(
                    is_corrupt(&codec.decode("s3fs_data_9", &obj)),
                    "{codec:?}: bound to its name"
                );
                if obj[5] == COMP_NONE && !data.is_empty() {
                    let hlen = obj.len() - data.len() - codec_trailer_len(&codec);
                    assert_eq!(obj.as_ptr().wrapping_add(hlen), plain_at, "{codec:?}: framed in place");
                }
            }
        }
        let framed = Framed::copy_of(b"abc");
        assert_eq!(framed.into_plaintext(), b"abc");
    }

    fn codec_trailer_len(codec: &Codec) -> usize {
        match codec.key {
            Some(_) => TAG_LEN,
            None => plain_hash_len(codec.plain_format),
        }
    }

    /// The length of the name is hashed in format 2: a name that takes bytes from the
    /// payload does not check out.
    #[test]
    fn fast_checksum_binds_the_name_length() {
        let header = [7u8; BASE_HEADER_LEN];
        assert_ne!(
            plain_hash(2, &header, "s3fs_data_1", b"0abc"),
            plain_hash(2, &header, "s3fs_data_10", b"abc")
        );
        assert_eq!(plain_hash(2, &header, "x", b"abc").len(), FAST_HASH_LEN);
        assert_eq!(plain_hash(1, &header, "x", b"abc").len(), HASH_LEN);
    }

    #[test]
    fn encryption_is_randomized() {
        let codec = Codec::new(Some(MasterKey::generate()), Compression::None);
        let data = b"same plaintext".to_vec();
        let a = codec.encode("n", &data);
        let b = codec.encode("n", &data);
        assert_ne!(a, b);
        assert!(!a.windows(data.len()).any(|w| w == &data[..]));
    }

    #[test]
    fn incompressible_stored_uncompressed() {
        let data = random_bytes(1 << 20, 5);
        for codec in codecs() {
            let obj = codec.encode("n", &data);
            assert_eq!(obj[5], COMP_NONE, "{codec:?}");
            let overhead = if codec.is_encrypted() {
                ENC_HEADER_LEN + TAG_LEN
            } else {
                BASE_HEADER_LEN + plain_hash_len(codec.plain_format)
            };
            assert_eq!(obj.len(), data.len() + overhead, "{codec:?}");
            assert_eq!(codec.decode("n", &obj).unwrap(), data);
        }
        // Tiny inputs cannot shrink either.
        for codec in codecs() {
            assert_eq!(codec.encode("n", b"x")[5], COMP_NONE);
            assert_eq!(codec.encode("n", b"")[5], COMP_NONE);
        }
    }

    #[test]
    fn random_blocks_skip_the_compressor_and_mixed_ones_do_not() {
        let random = random_bytes(1 << 20, 8);
        assert!(looks_incompressible(&random));
        assert!(
            !looks_incompressible(&random[..SAMPLE_MIN_LEN - 1]),
            "small blocks are always tried"
        );
        assert!(!looks_incompressible(&compressible_bytes(1 << 20, 9)));
        assert!(!looks_incompressible(&vec![0u8; 1 << 20]));
        // Random but for its last quarter, which is zeros: still compressed.
        let mut mixed = random.clone();
        mixed[3 << 18..].fill(0);
        assert!(!looks_incompressible(&mixed));
        let obj = Codec::new(None, Compression::Zstd(3)).encode("n", &mixed);
        assert_eq!(obj[5], COMP_ZSTD);
        assert!(obj.len() < mixed.len() * 4 / 5);
        // The samples reach the block's end: random but for a zero tail of 1/8.
        let mut tail = random.clone();
        tail[(1 << 20) - (1 << 17)..].fill(0);
        assert_eq!(Codec::new(None, Compression::Zstd(3)).encode("n", &tail)[5], COMP_ZSTD);
    }

    #[test]
    fn compressible_is_compressed() {
        let data = compressible_bytes(1 << 20, 6);
        for codec in codecs() {
            let obj = codec.encode("n", &data);
            if codec.compression() == Compression::None {
                assert_eq!(obj[5], COMP_NONE);
            } else {
                assert_ne!(obj[5], COMP_NONE, "{codec:?}");
                assert!(obj.len() < data.len() / 2, "{codec:?}: {}", obj.len());
            }
        }
    }

    /// Objects of every shape for the tamper tests: (codec, object, name).
    fn samples() -> Vec<(Codec, Vec<u8>)> {
        let data = compressible_bytes(100_000, 7);
        let mut v = Vec::new();
        for codec in codecs() {
            let obj = codec.encode("s3fs_data_1", &data);
            v.push((codec, obj));
        }
        v
    }

    #[test]
    fn tamper_flip_bytes() {
        for (codec, obj) in samples() {
            let hlen = if codec.is_encrypted() {
                ENC_HEADER_LEN
            } else {
                BASE_HEADER_LEN
            };
            let n = obj.len();
            let mut positions: Vec<usize> = (0..hlen).collect();
            positions.extend([hlen, hlen + 1, n / 2, n - 33, n - 17, n - 16, n - 2, n - 1]);
            for pos in positions {
                for mask in [0x01u8, 0x80, 0xff] {
                    let mut bad = obj.clone();
                    bad[pos] ^= mask;
                    let r = codec.decode("s3fs_data_1", &bad);
                    match pos {
                        4 => assert!(
                            matches!(r, Err(CodecError::UnknownVersion { .. })),
                            "{codec:?} pos {pos}: {r:?}"
                        ),
                        // Flipping the encryption byte to the other valid value is
                        // reported as the mode mismatch.
                        6 if bad[6] <= 1 => assert!(
                            matches!(
                                r,
                                Err(CodecError::NotEncrypted { .. } | CodecError::UnexpectedlyEncrypted { .. })
                            ),
                            "{codec:?} pos {pos}: {r:?}"
                        ),
                        _ => assert!(is_corrupt(&r), "{codec:?} pos {pos}: {r:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn tamper_truncate() {
        for (codec, obj) in samples() {
            let hlen = if codec.is_encrypted() {
                ENC_HEADER_LEN
            } else {
                BASE_HEADER_LEN
            };
            for len in [obj.len() - 1, obj.len() / 2, hlen, hlen + 1, 16, 8, 5] {
                let r = codec.decode("s3fs_data_1", &obj[..len]);
                assert!(is_corrupt(&r), "{codec:?} len {len}: {r:?}");
            }
            for len in [0, 1, 4] {
                assert!(is_corrupt(&codec.decode("s3fs_data_1", &obj[..len])));
            }
            // Appended bytes are rejected too.
            let mut longer = obj.clone();
            longer.push(0);
            assert!(is_corrupt(&codec.decode("s3fs_data_1", &longer)), "{codec:?}");
        }
    }

    #[test]
    fn tamper_rename_and_swap() {
        for codec in codecs() {
            let a = codec.encode("s3fs_data_1", &compressible_bytes(5000, 8));
            let b = codec.encode("s3fs_data_2", &compressible_bytes(5000, 9));
            assert!(is_corrupt(&codec.decode("s3fs_data_2", &a)), "{codec:?}");
            assert!(is_corrupt(&codec.decode("s3fs_data_1", &b)), "{codec:?}");
            assert!(is_corrupt(&codec.decode("s3fs_data_10", &a)), "{codec:?}");
            assert!(is_corrupt(&codec.decode("", &a)), "{codec:?}");
            assert!(codec.decode("s3fs_data_1", &a).is_ok());
        }
    }

    #[test]
    fn encryption_mode_mismatch() {
        let data = compressible_bytes(5000, 10);
        let key = MasterKey::generate();
        for c in COMPRESSIONS {
            let plain = Codec::new(None, c);
            let enc = Codec::new(Some(key.clone()), c);
            assert_eq!(
                enc.decode("n", &plain.encode("n", &data)),
                Err(CodecError::NotEncrypted { name: "n".into() })
            );
            assert_eq!(
                plain.decode("n", &enc.encode("n", &data)),
                Err(CodecError::UnexpectedlyEncrypted { name: "n".into() })
            );
        }
    }

    #[test]
    fn unknown_version() {
        for (codec, obj) in samples() {
            for v in [0u8, 3, 255] {
                let mut bad = obj.clone();
                bad[4] = v;
                assert_eq!(
                    codec.decode("s3fs_data_1", &bad),
                    Err(CodecError::UnknownVersion {
                        name: "s3fs_data_1".into(),
                        version: v
                    })
                );
            }
        }
    }

    #[test]
    fn wrong_master_key() {
        let data = compressible_bytes(5000, 11);
        for c in COMPRESSIONS {
            let a = Codec::new(Some(MasterKey::generate()), c);
            let b = Codec::new(Some(MasterKey::generate()), c);
            assert!(is_corrupt(&b.decode("n", &a.encode("n", &data))));
        }
    }

    #[test]
    fn decompression_bomb_is_bounded() {
        // An unencrypted object whose header understates the plaintext length, with a
        // valid checksum (anyone with write access can forge those).
        let big = vec![0u8; 1 << 20];
        for (comp, version) in [(COMP_ZLIB, 1), (COMP_ZSTD, 1), (COMP_ZLIB, 2), (COMP_ZSTD, 2)] {
            let codec = Codec::new(
                None,
                if comp == COMP_ZLIB {
                    Compression::Zlib(6)
                } else {
                    Compression::Zstd(3)
                },
            )
            .with_fast_plain_checksum(version == 2);
            let obj = codec.encode("n", &big);
            assert_eq!((obj[4], obj[5]), (version, comp));
            let mut header = obj[..BASE_HEADER_LEN].to_vec();
            let payload = &obj[BASE_HEADER_LEN..obj.len() - plain_hash_len(version)];
            for claimed in [0u64, 1000, (1 << 20) - 1, (1 << 20) + 1] {
                header[8..16].copy_from_slice(&claimed.to_le_bytes());
                let mut forged = header.clone();
                forged.extend_from_slice(payload);
                forged.extend_from_slice(&plain_hash(version, &header, "n", payload));
                let r = codec.decode("n", &forged);
                assert!(is_corrupt(&r), "comp {comp} claimed {claimed}: {r:?}");
            }
            // Absurd claimed length is refused before anything is allocated.
            header[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            let mut forged = header.clone();
            forged.extend_from_slice(payload);
            forged.extend_from_slice(&plain_hash(version, &header, "n", payload));
            assert!(is_corrupt(&codec.decode("n", &forged)));
            // Garbage payload with a valid checksum.
            header[8..16].copy_from_slice(&1000u64.to_le_bytes());
            let garbage = random_bytes(500, 12);
            let mut forged = header.clone();
            forged.extend_from_slice(&garbage);
            forged.extend_from_slice(&plain_hash(version, &header, "n", &garbage));
            assert!(is_corrupt(&codec.decode("n", &forged)));
            // Trailing bytes after a valid compressed stream.
            header[8..16].copy_from_slice(&(1u64 << 20).to_le_bytes());
            let mut p = payload.to_vec();
            p.push(0);
            let mut forged = header.clone();
            forged.extend_from_slice(&p);
            forged.extend_from_slice(&plain_hash(version, &header, "n", &p));
            assert!(is_corrupt(&codec.decode("n", &forged)), "comp {comp} trailing");
        }
    }

    #[test]
    fn levels_out_of_range_are_clamped() {
        let data = compressible_bytes(50_000, 13);
        for c in [
            Compression::Zstd(0),
            Compression::Zstd(-5),
            Compression::Zstd(1000),
            Compression::Zlib(0),
            Compression::Zlib(100),
        ] {
            let codec = Codec::new(None, c);
            assert_eq!(codec.decode("n", &codec.encode("n", &data)).unwrap(), data);
        }
    }

    #[test]
    fn switching_levels_on_one_thread() {
        let data = compressible_bytes(50_000, 14);
        for c in [
            Compression::Zlib(1),
            Compression::Zlib(9),
            Compression::Zstd(1),
            Compression::Zstd(19),
            Compression::Zlib(1),
        ] {
            let codec = Codec::new(None, c);
            assert_eq!(codec.decode("n", &codec.encode("n", &data)).unwrap(), data);
        }
    }

    #[test]
    fn debug_hides_key() {
        let codec = Codec::new(Some(MasterKey::from_bytes([7; 32])), Compression::default());
        let s = format!("{codec:?}");
        assert!(s.contains("encrypted: true"), "{s}");
        assert!(!s.contains("7, 7"), "{s}");
    }

    #[test]
    fn send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Codec>();
    }

    #[test]
    fn compression_parse_and_display() {
        let ok = [
            ("none", Compression::None),
            ("zlib", Compression::Zlib(6)),
            ("zlib-0", Compression::Zlib(0)),
            ("zlib-9", Compression::Zlib(9)),
            ("zstd", Compression::Zstd(3)),
            ("zstd-1", Compression::Zstd(1)),
            ("zstd-19", Compression::Zstd(19)),
            ("ZSTD-7", Compression::Zstd(7)),
            (" zlib-2 ", Compression::Zlib(2)),
        ];
        for (s, c) in ok {
            assert_eq!(s.parse::<Compression>(), Ok(c), "{s}");
            assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
        }
        assert_eq!(Compression::default(), Compression::Zstd(3));
        assert_eq!(Compression::Zstd(3).to_string(), "zstd-3");
        assert_eq!(Compression::Zlib(6).to_string(), "zlib-6");
        assert_eq!(Compression::None.to_string(), "none");
        for bad in [
            "",
            "lzma",
            "zlib-10",
            "zlib--1",
            "zlib-",
            "zstd-0",
            "zstd-20",
            "zstd--3",
            "zstd-+3",
            "zstd-3x",
            "zstd 3",
            "zstd-99999999999999999999",
            "bzip2",
        ] {
            let e = bad.parse::<Compression>().unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("zstd-19") && msg.contains("zlib-9"), "{msg}");
        }
    }

    #[test]
    fn error_messages() {
        let e = CodecError::Corrupt {
            name: "s3fs_data_1".into(),
            why: "x".into(),
        };
        assert_eq!(e.to_string(), "object s3fs_data_1 is corrupt: x");
        let e = CodecError::UnknownVersion {
            name: "o".into(),
            version: 9,
        };
        assert_eq!(
            e.to_string(),
            "object o uses format version 9, which this s3fs does not know"
        );
    }
}
