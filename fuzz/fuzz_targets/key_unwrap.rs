//! `key_unwrap`: `crypto::unwrap_key(blob, passphrase)` on hostile key objects; it must
//! never panic, and a key it unwraps must wrap and unwrap again to itself.
//!
//! Input: `blob || passphrase || [passphrase length]` (the last byte; clamped to what
//! is there).
//!
//! The Argon2id costs come from the blob itself, and a valid blob may ask for up to
//! 4 GiB and 64 passes per run. To keep runs fast, inputs whose memory cost (u32 LE at
//! blob offset 10) is above 1024 KiB or whose time cost (offset 14) is above 2 are
//! skipped: the fuzzer does not cover large-cost blobs, which `KdfParams::validate`
//! bounds (see the unit tests in src/lib/crypto.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3fs::crypto::{KdfParams, MasterKey, WRAPPED_KEY_LEN, unwrap_key, wrap_key};

const MAX_M_COST_KIB: u32 = 1024;
const MAX_T_COST: u32 = 2;

fn u32_at(blob: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(blob[i..i + 4].try_into().unwrap())
}

fn input(blob: &[u8], passphrase: &[u8]) -> Vec<u8> {
    let mut v = blob.to_vec();
    v.extend_from_slice(passphrase);
    v.push(passphrase.len() as u8);
    v
}

fn init() {
    let key = MasterKey::from_bytes([7; 32]);
    let mut seeds = Vec::new();
    for (i, (m, t, p)) in [(256, 1, 1), (8, 1, 1), (1024, 2, 4), (512, 1, KdfParams::MAX_P_COST)]
        .into_iter()
        .enumerate()
    {
        let params = KdfParams {
            m_cost_kib: m,
            t_cost: t,
            p_cost: p,
        };
        let blob = wrap_key(&key, b"correct horse", params);
        seeds.push((format!("good-{i}"), input(&blob, b"correct horse")));
        seeds.push((format!("wrong-{i}"), input(&blob, b"correct horsf")));
    }
    let blob = wrap_key(
        &key,
        b"",
        KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
    );
    seeds.push(("empty-passphrase".to_string(), input(&blob, b"")));
    s3fs_fuzz::write_seeds(seeds);
}

fuzz_target!(init: init(), |data: &[u8]| {
    let Some((&plen, rest)) = data.split_last() else {
        return;
    };
    let plen = usize::from(plen).min(rest.len());
    let (blob, passphrase) = rest.split_at(rest.len() - plen);
    if blob.len() >= 18 && (u32_at(blob, 10) > MAX_M_COST_KIB || u32_at(blob, 14) > MAX_T_COST) {
        return;
    }
    if let Ok(key) = unwrap_key(blob, passphrase) {
        assert_eq!(blob.len(), WRAPPED_KEY_LEN);
        let params = KdfParams {
            m_cost_kib: u32_at(blob, 10),
            t_cost: u32_at(blob, 14),
            p_cost: u32_at(blob, 18),
        };
        let again = wrap_key(&key, passphrase, params);
        assert_eq!(unwrap_key(&again, passphrase), Ok(key), "re-wrapped key does not unwrap");
    }
});
