//! `object_decode`: `Codec::decode` on hostile objects, and the encode/decode round trip.
//!
//! Input: `[flags, name_len, name (name_len % 48 bytes, lossy UTF-8), body ...]`.
//! `flags & 3` picks the mode:
//!
//! 0. Raw: `body` is decoded by an unencrypted and by an encrypted codec (master key
//!    `[7; 32]`). Neither may panic, and whatever decodes must survive re-encoding
//!    (`decode(encode(p)) == p`). Raw bytes hardly ever carry a right checksum or tag, so
//!    this mode covers the header checks.
//! 1. Round trip: `body` is the plaintext (cycled to 64 KiB + its length if
//!    `flags & 0x20`, so that the entropy sampling of large blocks runs; such large
//!    plaintexts only go through the unencrypted codec, to keep runs fast); with the
//!    compression that `(flags >> 2) & 7` picks, `encode` then `decode` under the same
//!    name must give it back for both codecs, the header must state its length, and
//!    decoding under another name must fail.
//! 2. Forged unencrypted object: `body` is a 16-byte header and a payload; the target
//!    appends the right SHA-256, as anyone with write access to an unencrypted store can.
//!    That is how mutated payloads reach the zlib and zstd decoders.
//! 3. Forged encrypted object: `body` is a 44-byte header and a payload, which the target
//!    seals with the fixed master key, to reach the decompressors behind decryption.
//!
//! In modes 2 and 3 decoding must not panic; an Ok result must come from a well-formed
//! header, have the length the header claims, equal the payload if uncompressed, survive
//! re-encoding and agree with a fresh one-shot reference decoder (`zstd_safe::decompress`,
//! `flate2::Decompress`); and an object that the reference decodes to exactly the claimed
//! length, with no trailing bytes, must not be refused. The reference runs only for
//! claims up to 16 MiB.
#![no_main]

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::{AeadInOut, KeyInit};
use hkdf::Hkdf;
use libfuzzer_sys::fuzz_target;
use s3fs::codec::{Codec, CodecError, Compression, MAX_PLAINTEXT_LEN};
use s3fs::crypto::MasterKey;
use sha2::{Digest, Sha256};
use zstd::zstd_safe;

const KEY: [u8; 32] = [7; 32];
/// Copied from src/lib/codec.rs (private there); `init` checks they still agree.
const BASE_HEADER_LEN: usize = 16;
const ENC_HEADER_LEN: usize = 44;
const HASH_LEN: usize = 32;
const HKDF_INFO: &[u8] = b"s3fs object key v1";
/// Largest claimed length the reference decoders and re-encoding are run for.
const REFERENCE_LIMIT: usize = 16 << 20;

const COMPRESSIONS: [Compression; 8] = [
    Compression::None,
    Compression::Zlib(0),
    Compression::Zlib(6),
    Compression::Zlib(9),
    Compression::Zstd(1),
    Compression::Zstd(3),
    Compression::Zstd(19),
    Compression::Zstd(-5),
];

fn plain_codec(c: Compression) -> Codec {
    Codec::new(None, c)
}

fn enc_codec(c: Compression) -> Codec {
    Codec::new(Some(MasterKey::from_bytes(KEY)), c)
}

/// The unencrypted object for `header || payload` with its checksum appended.
fn forge_plain(header: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(header);
    h.update(name.as_bytes());
    h.update(payload);
    let hash: [u8; HASH_LEN] = h.finalize().into();
    let mut out = Vec::with_capacity(header.len() + payload.len() + HASH_LEN);
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    out.extend_from_slice(&hash);
    out
}

/// The encrypted object for `header` (salt and nonce at its end) and `payload`, sealed
/// with [`KEY`] as `Codec::encode` does.
fn forge_encrypted(header: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let salt = &header[BASE_HEADER_LEN..BASE_HEADER_LEN + 16];
    let nonce: [u8; 12] = header[BASE_HEADER_LEN + 16..ENC_HEADER_LEN].try_into().unwrap();
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), &KEY)
        .expand(HKDF_INFO, &mut okm)
        .unwrap();
    let cipher = Aes256GcmSiv::new(&okm.into());
    let mut aad = header.to_vec();
    aad.extend_from_slice(name.as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(payload);
    let tag = cipher
        .encrypt_inout_detached(&nonce.into(), &aad, (&mut out[ENC_HEADER_LEN..]).into())
        .unwrap();
    out.extend_from_slice(&tag);
    out
}

/// Whether `header` passes every structural check `decode` makes, for a codec that is
/// `encrypted` or not.
fn header_ok(header: &[u8], encrypted: bool) -> bool {
    &header[..4] == b"S3FS"
        && header[4] == 1
        && header[5] <= 2
        && header[6] == u8::from(encrypted)
        && header[7] == 0
        && claimed_len(header) <= MAX_PLAINTEXT_LEN
}

fn claimed_len(header: &[u8]) -> u64 {
    u64::from_le_bytes(header[8..16].try_into().unwrap())
}

/// What a fresh, one-shot decoder makes of `payload` if it decodes to exactly `len`
/// bytes and consumes all of it; `None` otherwise.
fn reference_decompress(comp: u8, payload: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len + 1);
    match comp {
        0 => (payload.len() == len).then(|| payload.to_vec()),
        1 => {
            use flate2::{Decompress, FlushDecompress, Status};
            let mut d = Decompress::new(true);
            match d.decompress_vec(payload, &mut out, FlushDecompress::Finish) {
                Ok(Status::StreamEnd) if d.total_in() as usize == payload.len() && out.len() == len => Some(out),
                _ => None,
            }
        }
        2 => match zstd_safe::decompress(&mut out, payload) {
            Ok(n) if n == len && out.len() == len => Some(out),
            _ => None,
        },
        _ => None,
    }
}

/// `p`, decoded by `codec` under `name`, must survive re-encoding.
fn check_reencode(codec: &Codec, name: &str, p: &[u8]) {
    if p.len() > REFERENCE_LIMIT {
        return;
    }
    let again = codec.encode(name, p);
    assert_eq!(
        codec.decode(name, &again).as_deref(),
        Ok(p),
        "re-encoding changed the plaintext"
    );
}

fn raw(name: &str, body: &[u8]) {
    for codec in [plain_codec(Compression::default()), enc_codec(Compression::default())] {
        if let Ok(p) = codec.decode(name, body) {
            assert!(body.len() >= BASE_HEADER_LEN && header_ok(&body[..BASE_HEADER_LEN], codec.is_encrypted()));
            assert_eq!(p.len() as u64, claimed_len(body));
            check_reencode(&codec, name, &p);
        }
    }
}

fn round_trip(flags: u8, name: &str, body: &[u8]) {
    let compression = COMPRESSIONS[usize::from((flags >> 2) & 7)];
    let expand = flags & 0x20 != 0 && !body.is_empty();
    let plaintext: Vec<u8> = if expand {
        body.iter().copied().cycle().take((64 << 10) + body.len()).collect()
    } else {
        body.iter().copied().take(64 << 10).collect()
    };
    let other_name = format!("{name}x");
    // Large plaintexts only through the unencrypted codec: compressing them is what costs
    // (tens of milliseconds at zlib-9 or zstd-19), and encryption adds nothing new there.
    let codecs = if expand {
        vec![plain_codec(compression)]
    } else {
        vec![plain_codec(compression), enc_codec(compression)]
    };
    for codec in codecs {
        let obj = codec.encode(name, &plaintext);
        assert_eq!(claimed_len(&obj), plaintext.len() as u64, "header length field");
        assert!(obj[5] <= 2);
        if obj[5] != 0 {
            let overhead = if codec.is_encrypted() {
                ENC_HEADER_LEN + 16
            } else {
                BASE_HEADER_LEN + HASH_LEN
            };
            assert!(obj.len() < plaintext.len() + overhead, "compressed but not smaller");
        }
        assert_eq!(
            codec.decode(name, &obj).as_deref(),
            Ok(&plaintext[..]),
            "{codec:?}: round trip"
        );
        let renamed = codec.decode(&other_name, &obj);
        assert!(
            matches!(renamed, Err(CodecError::Corrupt { .. })),
            "{codec:?}: decoded under another name"
        );
    }
}

fn forged(encrypted: bool, name: &str, body: &[u8]) {
    let hlen = if encrypted { ENC_HEADER_LEN } else { BASE_HEADER_LEN };
    if body.len() < hlen {
        return;
    }
    let (header, payload) = body.split_at(hlen);
    let (codec, obj) = if encrypted {
        (
            enc_codec(Compression::default()),
            forge_encrypted(header, name, payload),
        )
    } else {
        (plain_codec(Compression::default()), forge_plain(header, name, payload))
    };
    let result = codec.decode(name, &obj);
    let len = claimed_len(header);
    if let Ok(p) = &result {
        assert!(header_ok(header, encrypted), "accepted a malformed header");
        assert_eq!(p.len() as u64, len, "plaintext length differs from the header's");
        if header[5] == 0 {
            assert_eq!(&p[..], payload);
        }
        check_reencode(&codec, name, p);
    }
    if header_ok(header, encrypted) && len as usize <= REFERENCE_LIMIT {
        let expected = reference_decompress(header[5], payload, len as usize);
        match (&result, &expected) {
            (Ok(p), Some(q)) => assert_eq!(p, q, "differs from the reference decoder"),
            (Ok(_), None) => panic!("decoded what the reference decoder refuses"),
            (Err(e), Some(_)) => panic!("refused what the reference decoder accepts: {e}"),
            (Err(_), None) => {}
        }
    }
}

/// Text-like bytes that compress well.
fn text(n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the ", "quick ", "brown ", "fox ", "s3fs ", "object ", "block ", "inode ", "\n",
    ];
    let mut v = Vec::with_capacity(n + 8);
    let mut s: u32 = 12345;
    while v.len() < n {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
        v.extend_from_slice(WORDS[(s >> 16) as usize % WORDS.len()].as_bytes());
    }
    v.truncate(n);
    v
}

fn noise(n: usize) -> Vec<u8> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn input(flags: u8, name: &str, body: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(body);
    v
}

/// Check that the forging above still matches `Codec::encode` (else modes 2 and 3 would
/// silently test nothing), and write the seed corpus.
fn init() {
    let name = "s3fs_data_1";
    let obj = plain_codec(Compression::None).encode(name, b"hello, world");
    let (header, rest) = obj.split_at(BASE_HEADER_LEN);
    assert_eq!(
        forge_plain(header, name, &rest[..rest.len() - HASH_LEN]),
        obj,
        "forge_plain is stale"
    );
    let obj = enc_codec(Compression::None).encode(name, b"hello, world");
    assert_eq!(
        forge_encrypted(&obj[..ENC_HEADER_LEN], name, b"hello, world"),
        obj,
        "forge_encrypted is stale"
    );

    let plaintexts = [
        b"".to_vec(),
        b"hello, world".to_vec(),
        text(3000),
        vec![0; 4000],
        noise(2000),
    ];
    let names = ["s3fs_data_1", "s3fs_params", "s3fs_metadata_3"];
    let mut seeds = Vec::new();
    for (i, p) in plaintexts.iter().enumerate() {
        let name = names[i % names.len()];
        for (ci, c) in [Compression::None, Compression::Zlib(6), Compression::Zstd(3)]
            .into_iter()
            .enumerate()
        {
            for codec in [plain_codec(c), enc_codec(c)] {
                let obj = codec.encode(name, p);
                let e = if codec.is_encrypted() { "enc" } else { "plain" };
                seeds.push((format!("raw-{e}-{c}-{i}"), input(0, name, &obj)));
                if !codec.is_encrypted() {
                    // The same payload, to be forged as unencrypted and encrypted objects.
                    let body = &obj[..obj.len() - HASH_LEN];
                    seeds.push((format!("forge-plain-{c}-{i}"), input(2, name, body)));
                    let mut enc = body[..BASE_HEADER_LEN].to_vec();
                    enc[6] = 1;
                    enc.extend((0..28).map(|b| b as u8 ^ 0x5a));
                    enc.extend_from_slice(&body[BASE_HEADER_LEN..]);
                    seeds.push((format!("forge-enc-{c}-{i}"), input(3, name, &enc)));
                }
            }
            // COMPRESSIONS[0, 2, 5] are None, Zlib(6) and Zstd(3).
            let flags = 1 | ([0u8, 2, 5][ci] << 2);
            seeds.push((format!("roundtrip-{c}-{i}"), input(flags, name, p)));
        }
    }
    seeds.push((
        "roundtrip-expand".into(),
        input(1 | (5 << 2) | 0x20, "s3fs_data_2", &text(500)),
    ));
    seeds.push((
        "roundtrip-expand-noise".into(),
        input(1 | (5 << 2) | 0x20, "s3fs_data_2", &noise(4000)),
    ));
    s3fs_fuzz::write_seeds(seeds);
}

fuzz_target!(init: init(), |data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let flags = data[0];
    let name_len = usize::from(data[1]) % 48;
    let Some(name_bytes) = data.get(2..2 + name_len) else {
        return;
    };
    let name = String::from_utf8_lossy(name_bytes);
    let body = &data[2 + name_len..];
    match flags & 3 {
        0 => raw(&name, body),
        1 => round_trip(flags, &name, body),
        2 => forged(false, &name, body),
        _ => forged(true, &name, body),
    }
});
