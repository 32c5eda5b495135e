//! The master key and its passphrase wrapping.
//!
//! Every encrypted filesystem has one random 256-bit [`MasterKey`]. Object keys are derived
//! from it per object (see [`crate::codec`]). The master key itself is stored in the
//! object store only in wrapped form ([`wrap_key`]): encrypted with AES-256-GCM-SIV under a
//! key-encryption key derived from the passphrase with Argon2id.
//!
//! Wrapped key layout (98 bytes):
//!
//! | bytes | content                                         |
//! |-------|-------------------------------------------------|
//! | 8     | magic `b"S3FSKEY\0"`                            |
//! | 1     | format version (1)                              |
//! | 1     | KDF id (1 = Argon2id, version 0x13)             |
//! | 4×3   | `m_cost_kib`, `t_cost`, `p_cost`, u32 LE        |
//! | 16    | random salt                                     |
//! | 12    | random nonce                                    |
//! | 48    | AES-256-GCM-SIV(kek, master key) incl. 16-byte tag |
//!
//! The associated data is every header byte before the ciphertext, so the KDF parameters
//! cannot be downgraded without detection.

use std::fmt;

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::{AeadInOut, KeyInit};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Length of the master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The filesystem's master key. Zeroized on drop; `Debug` does not reveal it.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<hidden>)")
    }
}

const PRINTABLE_BEGIN: &str = "---BEGIN MASTER KEY---";
const PRINTABLE_END: &str = "---END MASTER KEY---";

impl MasterKey {
    /// A fresh random key from the operating system's CSPRNG.
    ///
    /// # Panics
    /// If the operating system cannot supply random bytes.
    pub fn generate() -> MasterKey {
        let mut key = MasterKey([0; MASTER_KEY_LEN]);
        fill_random(&mut key.0);
        key
    }

    pub fn from_bytes(b: [u8; MASTER_KEY_LEN]) -> MasterKey {
        MasterKey(b)
    }

    pub fn as_bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }

    /// For offline safekeeping, printed once by mkfs: base64 of the 32 bytes (44 chars) in
    /// 11 groups of 4 separated by spaces, between lines `---BEGIN MASTER KEY---` and
    /// `---END MASTER KEY---` (S3QL's format). No trailing newline.
    pub fn to_printable(&self) -> String {
        let b64 = Zeroizing::new(STANDARD.encode(self.0));
        let mut out = String::with_capacity(PRINTABLE_BEGIN.len() + PRINTABLE_END.len() + 60);
        out.push_str(PRINTABLE_BEGIN);
        out.push('\n');
        for (i, group) in b64.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                out.push(' ');
            }
            // base64 output is ASCII, so every chunk is valid UTF-8.
            out.push_str(std::str::from_utf8(group).expect("base64 is ASCII"));
        }
        out.push('\n');
        out.push_str(PRINTABLE_END);
        out
    }

    /// Parse what [`to_printable`](Self::to_printable) produced, or just the base64 groups.
    /// Whitespace (including newlines) and the BEGIN/END lines are ignored; padding is
    /// optional; the text must decode to exactly 32 bytes.
    pub fn parse_printable(text: &str) -> Result<MasterKey, KeyError> {
        // Drop all whitespace first (the markers then read "---BEGINMASTERKEY---" etc.),
        // so no copy of the key is left behind un-zeroized.
        let owned: Zeroizing<String> = Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
        let strip = |m: &str| m.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        let (begin, end) = (strip(PRINTABLE_BEGIN), strip(PRINTABLE_END));
        let mut compact = owned.as_str();
        compact = compact.strip_prefix(begin.as_str()).unwrap_or(compact);
        compact = compact.strip_suffix(end.as_str()).unwrap_or(compact);
        if compact.is_empty() {
            return Err(KeyError::InvalidMasterKey("no key given".into()));
        }
        let bytes = Zeroizing::new(
            STANDARD_PAD_INDIFFERENT
                .decode(compact.as_bytes())
                .map_err(|e| KeyError::InvalidMasterKey(format!("not valid base64 ({e})")))?,
        );
        let arr: [u8; MASTER_KEY_LEN] = bytes[..].try_into().map_err(|_| {
            KeyError::InvalidMasterKey(format!("decodes to {} bytes, expected {MASTER_KEY_LEN}", bytes.len()))
        })?;
        Ok(MasterKey(arr))
    }
}

/// Fill `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the operating system cannot supply random bytes (there is no safe way to go on).
pub(crate) fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// Argon2id cost parameters used to derive the key-encryption key from the passphrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 65536,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    // The parameters come from the key object, which anyone who can write to the bucket
    // can replace, and they are only authenticated once the derivation is done: what is
    // accepted is what a hostile key object can make every mount spend. s3fs writes the
    // defaults (64 MiB, 3 passes, 1 lane); up to 4 times that is accepted.

    /// Largest accepted memory cost: 256 MiB.
    pub const MAX_M_COST_KIB: u32 = 256 * 1024;
    /// Largest accepted number of passes.
    pub const MAX_T_COST: u32 = 12;
    /// Largest accepted parallelism.
    pub const MAX_P_COST: u32 = 8;

    /// Check that the parameters are within the sane range this s3fs accepts (and that
    /// Argon2 accepts: at least 8 KiB per lane). The error text says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let KdfParams {
            m_cost_kib,
            t_cost,
            p_cost,
        } = *self;
        if !(1..=Self::MAX_P_COST).contains(&p_cost) {
            return Err(format!("parallelism {p_cost} out of range 1..={}", Self::MAX_P_COST));
        }
        if !(1..=Self::MAX_T_COST).contains(&t_cost) {
            return Err(format!("time cost {t_cost} out of range 1..={}", Self::MAX_T_COST));
        }
        let min_m = 8 * p_cost;
        if !(min_m..=Self::MAX_M_COST_KIB).contains(&m_cost_kib) {
            return Err(format!(
                "memory cost {m_cost_kib} KiB out of range {min_m}..={} KiB",
                Self::MAX_M_COST_KIB
            ));
        }
        Ok(())
    }
}

/// Errors about the master key and its wrapped form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("key object is damaged: {0}")]
    Corrupt(String),
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
}

const KEY_MAGIC: &[u8; 8] = b"S3FSKEY\0";
const KEY_FORMAT_VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Header: magic, version, KDF id, three u32 params, salt, nonce.
const KEY_HEADER_LEN: usize = 8 + 1 + 1 + 12 + SALT_LEN + NONCE_LEN;
/// Total length of a wrapped key.
pub const WRAPPED_KEY_LEN: usize = KEY_HEADER_LEN + MASTER_KEY_LEN + TAG_LEN;

fn derive_kek(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>, String> {
    params.validate()?;
    let p = Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| format!("invalid KDF parameters: {e}"))?;
    let mut kek = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(passphrase, salt, &mut kek[..])
        .map_err(|e| format!("key derivation failed: {e}"))?;
    Ok(kek)
}

/// Wrap (encrypt) the master key under a passphrase; the result is the content of the
/// `s3fs_key` object (and its backups). Takes as long as Argon2id with `params` does.
///
/// # Panics
/// If `params` fail [`KdfParams::validate`] (validate user-supplied parameters first), or
/// if the operating system cannot supply random bytes.
pub fn wrap_key(master: &MasterKey, passphrase: &[u8], params: KdfParams) -> Vec<u8> {
    let mut out = Vec::with_capacity(WRAPPED_KEY_LEN);
    out.extend_from_slice(KEY_MAGIC);
    out.push(KEY_FORMAT_VERSION);
    out.push(KDF_ARGON2ID);
    out.extend_from_slice(&params.m_cost_kib.to_le_bytes());
    out.extend_from_slice(&params.t_cost.to_le_bytes());
    out.extend_from_slice(&params.p_cost.to_le_bytes());
    let mut salt_nonce = [0u8; SALT_LEN + NONCE_LEN];
    fill_random(&mut salt_nonce);
    out.extend_from_slice(&salt_nonce);
    debug_assert_eq!(out.len(), KEY_HEADER_LEN);
    let (salt, nonce) = salt_nonce.split_at(SALT_LEN);

    let kek = derive_kek(passphrase, salt, params).unwrap_or_else(|e| panic!("wrap_key: {e}"));
    let cipher = Aes256GcmSiv::new(&(*kek).into());
    out.extend_from_slice(master.as_bytes());
    let (aad, body) = out.split_at_mut(KEY_HEADER_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("nonce length");
    let tag = cipher
        .encrypt_inout_detached(&nonce.into(), aad, body.into())
        .expect("32 bytes are not too long for AES-GCM-SIV");
    out.extend_from_slice(&tag);
    debug_assert_eq!(out.len(), WRAPPED_KEY_LEN);
    out
}

/// Unwrap the master key from the stored form produced by [`wrap_key`].
///
/// A structurally damaged object (wrong length or magic, unknown version or KDF, parameters
/// out of the sane range) gives [`KeyError::Corrupt`]; an intact one that fails to
/// authenticate gives [`KeyError::WrongPassphrase`] (a damaged salt, nonce or ciphertext is
/// indistinguishable from a wrong passphrase).
pub fn unwrap_key(blob: &[u8], passphrase: &[u8]) -> Result<MasterKey, KeyError> {
    if blob.len() < KEY_MAGIC.len() || &blob[..KEY_MAGIC.len()] != KEY_MAGIC {
        return Err(KeyError::Corrupt("not an s3fs key object (bad magic)".into()));
    }
    if blob.len() != WRAPPED_KEY_LEN {
        return Err(KeyError::Corrupt(format!(
            "length {} bytes, expected {WRAPPED_KEY_LEN}",
            blob.len()
        )));
    }
    let version = blob[8];
    if version != KEY_FORMAT_VERSION {
        return Err(KeyError::Corrupt(format!("unknown format version {version}")));
    }
    let kdf = blob[9];
    if kdf != KDF_ARGON2ID {
        return Err(KeyError::Corrupt(format!("unknown KDF id {kdf}")));
    }
    let u32_at = |i: usize| u32::from_le_bytes(blob[i..i + 4].try_into().expect("4 bytes"));
    let params = KdfParams {
        m_cost_kib: u32_at(10),
        t_cost: u32_at(14),
        p_cost: u32_at(18),
    };
    params
        .validate()
        .map_err(|e| KeyError::Corrupt(format!("bad KDF parameters: {e}")))?;
    let salt = &blob[22..22 + SALT_LEN];
    let nonce: [u8; NONCE_LEN] = blob[22 + SALT_LEN..KEY_HEADER_LEN].try_into().expect("nonce length");
    let (aad, rest) = blob.split_at(KEY_HEADER_LEN);
    let (ciphertext, tag) = rest.split_at(MASTER_KEY_LEN);
    let tag: [u8; TAG_LEN] = tag.try_into().expect("tag length");

    let kek = derive_kek(passphrase, salt, params).map_err(KeyError::Corrupt)?;
    let cipher = Aes256GcmSiv::new(&(*kek).into());
    let mut key = MasterKey([0; MASTER_KEY_LEN]);
    let buf = aes_gcm_siv::aead::inout::InOutBuf::new(ciphertext, &mut key.0).expect("equal lengths");
    cipher
        .decrypt_inout_detached(&nonce.into(), aad, buf, &tag.into())
        .map_err(|_| KeyError::WrongPassphrase)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };

    fn wrapped() -> (MasterKey, Vec<u8>) {
        let key = MasterKey::generate();
        let blob = wrap_key(&key, b"correct horse", FAST);
        (key, blob)
    }

    #[test]
    fn generate_is_random() {
        assert_ne!(MasterKey::generate(), MasterKey::generate());
        assert_ne!(MasterKey::generate().as_bytes(), &[0u8; 32]);
    }

    #[test]
    fn debug_hides_key() {
        let key = MasterKey::from_bytes([0xab; 32]);
        let s = format!("{key:?}");
        assert!(s.contains("<hidden>"));
        assert!(!s.contains("171"));
    }

    #[test]
    fn wrap_unwrap_round_trip() {
        let (key, blob) = wrapped();
        assert_eq!(blob.len(), WRAPPED_KEY_LEN);
        assert_eq!(&blob[..8], KEY_MAGIC);
        assert_eq!(unwrap_key(&blob, b"correct horse").unwrap(), key);
        // Fresh salt and nonce every time.
        assert_ne!(wrap_key(&key, b"correct horse", FAST), blob);
    }

    #[test]
    fn empty_passphrase_round_trip() {
        let key = MasterKey::generate();
        let blob = wrap_key(&key, b"", FAST);
        assert_eq!(unwrap_key(&blob, b"").unwrap(), key);
        assert_eq!(unwrap_key(&blob, b"x"), Err(KeyError::WrongPassphrase));
    }

    #[test]
    fn default_params_round_trip() {
        assert_eq!(
            KdfParams::default(),
            KdfParams {
                m_cost_kib: 65536,
                t_cost: 3,
                p_cost: 1
            }
        );
        let key = MasterKey::generate();
        let blob = wrap_key(&key, b"pw", KdfParams::default());
        assert_eq!(u32::from_le_bytes(blob[10..14].try_into().unwrap()), 65536);
        assert_eq!(unwrap_key(&blob, b"pw").unwrap(), key);
    }

    #[test]
    fn wrong_passphrase() {
        let (_, blob) = wrapped();
        assert_eq!(unwrap_key(&blob, b"correct horsf"), Err(KeyError::WrongPassphrase));
        assert_eq!(unwrap_key(&blob, b""), Err(KeyError::WrongPassphrase));
    }

    #[test]
    fn flipped_bytes_never_succeed() {
        let (_, blob) = wrapped();
        for i in 0..blob.len() {
            for mask in [0x01u8, 0x80] {
                let mut bad = blob.clone();
                bad[i] ^= mask;
                let r = unwrap_key(&bad, b"correct horse");
                assert!(
                    matches!(r, Err(KeyError::WrongPassphrase | KeyError::Corrupt(_))),
                    "flip at {i} mask {mask:#x}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn flipped_params_detected() {
        let (_, blob) = wrapped();
        // Parameters that are still valid but differ: the AAD catches the change.
        let mut bad = blob.clone();
        bad[10] ^= 0x01; // m_cost 256 -> 257
        assert_eq!(unwrap_key(&bad, b"correct horse"), Err(KeyError::WrongPassphrase));
    }

    #[test]
    fn bad_magic_length_version() {
        let (_, blob) = wrapped();
        let mut bad = blob.clone();
        bad[0] = b'X';
        assert!(matches!(unwrap_key(&bad, b"correct horse"), Err(KeyError::Corrupt(_))));
        assert!(matches!(unwrap_key(b"", b"x"), Err(KeyError::Corrupt(_))));
        assert!(matches!(
            unwrap_key(&blob[..blob.len() - 1], b"correct horse"),
            Err(KeyError::Corrupt(_))
        ));
        let mut longer = blob.clone();
        longer.push(0);
        assert!(matches!(
            unwrap_key(&longer, b"correct horse"),
            Err(KeyError::Corrupt(_))
        ));
        let mut bad = blob.clone();
        bad[8] = 2;
        assert!(matches!(unwrap_key(&bad, b"correct horse"), Err(KeyError::Corrupt(_))));
        let mut bad = blob.clone();
        bad[9] = 2;
        assert!(matches!(unwrap_key(&bad, b"correct horse"), Err(KeyError::Corrupt(_))));
    }

    #[test]
    fn absurd_params_rejected_without_work() {
        let (_, blob) = wrapped();
        let set = |off: usize, v: u32| {
            let mut b = blob.clone();
            b[off..off + 4].copy_from_slice(&v.to_le_bytes());
            b
        };
        for bad in [
            set(10, u32::MAX),                      // m_cost 4 TiB
            set(10, KdfParams::MAX_M_COST_KIB + 1), // just above 256 MiB
            set(10, 4 * 1024 * 1024),               // 4 GiB, once accepted
            set(14, 64),                            // 64 passes, once accepted
            set(10, 0),                             // m_cost 0
            set(14, 0),                             // t_cost 0
            set(14, u32::MAX),                      // t_cost absurd
            set(18, 0),                             // p_cost 0
            set(18, 1000),                          // p_cost absurd
        ] {
            let r = unwrap_key(&bad, b"correct horse");
            assert!(matches!(r, Err(KeyError::Corrupt(_))), "{r:?}");
        }
    }

    #[test]
    fn validate_params() {
        assert!(KdfParams::default().validate().is_ok());
        assert!(FAST.validate().is_ok());
        assert!(
            KdfParams {
                m_cost_kib: 8,
                t_cost: 1,
                p_cost: 2
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    #[should_panic]
    fn wrap_with_invalid_params_panics() {
        let params = KdfParams { m_cost_kib: 0, ..FAST };
        wrap_key(&MasterKey::generate(), b"x", params);
    }

    #[test]
    fn kdf_params_serde() {
        let json = serde_json::to_string(&KdfParams::default()).unwrap();
        assert_eq!(serde_json::from_str::<KdfParams>(&json).unwrap(), KdfParams::default());
    }

    #[test]
    fn printable_round_trip() {
        let key = MasterKey::generate();
        let text = key.to_printable();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "---BEGIN MASTER KEY---");
        assert_eq!(lines[2], "---END MASTER KEY---");
        let groups: Vec<&str> = lines[1].split(' ').collect();
        assert_eq!(groups.len(), 11);
        assert!(groups.iter().all(|g| g.len() == 4));
        assert_eq!(MasterKey::parse_printable(&text).unwrap(), key);
        // Just the groups, too.
        assert_eq!(MasterKey::parse_printable(lines[1]).unwrap(), key);
    }

    #[test]
    fn printable_known_value() {
        let key = MasterKey::from_bytes([0; 32]);
        assert_eq!(
            key.to_printable(),
            "---BEGIN MASTER KEY---\nAAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAA=\n---END MASTER KEY---"
        );
    }

    #[test]
    fn parse_printable_tolerates_whitespace() {
        let key = MasterKey::generate();
        let text = key.to_printable();
        let groups = text.lines().nth(1).unwrap();
        let messy = format!(
            "  \r\n---BEGIN MASTER KEY---\r\n\t{}\n\n  ---END MASTER KEY---  \n",
            groups.replace(' ', "\n  ")
        );
        assert_eq!(MasterKey::parse_printable(&messy).unwrap(), key);
        let no_spaces: String = groups.chars().filter(|c| *c != ' ').collect();
        assert_eq!(MasterKey::parse_printable(&no_spaces).unwrap(), key);
        // Padding is optional.
        assert_eq!(
            MasterKey::parse_printable(no_spaces.trim_end_matches('=')).unwrap(),
            key
        );
    }

    #[test]
    fn parse_printable_rejects_bad_input() {
        let bad = |s: &str| {
            let r = MasterKey::parse_printable(s);
            assert!(matches!(r, Err(KeyError::InvalidMasterKey(_))), "{s:?}: {r:?}");
        };
        bad("");
        bad("---BEGIN MASTER KEY---\n---END MASTER KEY---");
        bad("AAAA AAAA"); // too short
        bad(&STANDARD.encode([0u8; 31]));
        bad(&STANDARD.encode([0u8; 33]));
        bad("AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AA!="); // invalid char
        bad("AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA"); // 48 chars = 36 bytes
    }
}
