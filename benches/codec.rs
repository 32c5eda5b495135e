//! Throughput of the object codec on 1 MiB blocks, and the cost of Argon2id key wrapping.
//!
//! Run with `cargo bench --bench codec`. "MB/s" is 10^6 plaintext bytes per second on one
//! thread. The encode figure includes the SHA-256 of the plaintext that the upload path
//! computes for deduplication.

use std::hint::black_box;
use std::time::{Duration, Instant};

use s3fs::codec::{Codec, Compression, Framed};
use s3fs::crypto::{KdfParams, MasterKey, wrap_key};
use sha2::{Digest, Sha256};

const BLOCK: usize = 1 << 20;
const MIN_TIME: Duration = Duration::from_millis(700);

fn random_block() -> Vec<u8> {
    let mut v = vec![0u8; BLOCK];
    getrandom::fill(&mut v).expect("random bytes");
    v
}

/// Text-like data with some randomness: compresses about 3:1 with zstd-3.
fn compressible_block() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the ",
        "of ",
        "and ",
        "to ",
        "in ",
        "is ",
        "that ",
        "for ",
        "it ",
        "as ",
        "with ",
        "was ",
        "on ",
        "be ",
        "by ",
        "this ",
        "file ",
        "system ",
        "object ",
        "store ",
        "block ",
        "inode ",
        "data ",
        "cache ",
        "upload ",
        "metadata ",
        "directory ",
        "compress ",
        "encrypt ",
        "bucket ",
        ". ",
        ", ",
        "\n",
    ];
    let noise = random_block();
    let mut v = Vec::with_capacity(BLOCK + 16);
    let mut i = 0;
    while v.len() < BLOCK {
        let b = noise[i];
        let c = noise[(i + 1) % BLOCK];
        if b < 90 {
            // Random letters and digits: the part that does not compress well.
            v.push(b"abcdefghijklmnopqrstuvwxyz0123456789"[c as usize % 36]);
        } else {
            v.extend_from_slice(WORDS[c as usize % WORDS.len()].as_bytes());
        }
        i += 2;
        if i + 1 >= BLOCK {
            i = 0;
        }
    }
    v.truncate(BLOCK);
    v
}

/// Run `f` repeatedly for at least MIN_TIME (and at least 3 times); return MB/s for
/// `bytes` per call.
fn throughput(bytes: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up (thread-local contexts, page faults)
    let start = Instant::now();
    let mut n = 0u64;
    while n < 3 || start.elapsed() < MIN_TIME {
        f();
        n += 1;
    }
    (bytes as f64 * n as f64) / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let key = MasterKey::generate();
    let data = [("random      ", random_block()), ("compressible", compressible_block())];
    let compressions = [
        Compression::Zstd(3),
        Compression::Zstd(1),
        Compression::Zlib(6),
        Compression::None,
    ];
    for compression in compressions {
        for (enc_name, key) in [("plain", None), ("aes  ", Some(key.clone()))] {
            let codec = Codec::new(key, compression);
            for (data_name, block) in &data {
                let name = "s3fs_data_12345";
                let object = codec.encode(name, block);
                let ratio = block.len() as f64 / object.len() as f64;
                let enc = throughput(block.len(), || {
                    let hash = Sha256::digest(black_box(block));
                    black_box(hash);
                    black_box(codec.encode(name, black_box(block)));
                });
                println!(
                    "encode {:<7} {enc_name} {data_name} 1 MiB: {enc:8.1} MB/s  (ratio {ratio:.2}:1)",
                    compression.to_string()
                );
                let dec = throughput(block.len(), || {
                    black_box(codec.decode(name, black_box(&object)).expect("decodes"));
                });
                println!(
                    "decode {:<7} {enc_name} {data_name} 1 MiB: {dec:8.1} MB/s",
                    compression.to_string()
                );
            }
        }
    }

    // The upload path from a block's cache file (page cache: a memcpy here) to the object
    // to PUT, on a full 4 MiB block of random bytes, stored as it is: into a zeroed
    // buffer and copied into the object, or read into a framed buffer and made into the
    // object where it lies.
    let big: Vec<u8> = (0..4).flat_map(|_| random_block()).collect();
    for (enc_name, key) in [("plain", None), ("aes  ", Some(key.clone()))] {
        let codec = Codec::new(key, Compression::Zstd(3)).with_fast_plain_checksum(true);
        let name = "s3fs_data_12345";
        let copied = throughput(big.len(), || {
            let mut read = vec![0u8; big.len()];
            read.copy_from_slice(black_box(&big));
            black_box(Sha256::digest(&read));
            black_box(codec.encode(name, &read));
        });
        let framed = throughput(big.len(), || {
            let read = Framed::fill(big.len(), |b| {
                b.extend_from_slice(black_box(&big));
                Ok::<(), ()>(())
            })
            .expect("filled");
            black_box(Sha256::digest(read.plaintext()));
            black_box(codec.encode_framed(name, read));
        });
        println!(
            "upload {enc_name} random 4 MiB, read + SHA-256 + encode: copied {copied:8.1} MB/s, framed {framed:8.1} MB/s"
        );
    }

    let params = KdfParams::default();
    let runs = 5;
    let start = Instant::now();
    for _ in 0..runs {
        black_box(wrap_key(&key, black_box(b"passphrase"), params));
    }
    let per = start.elapsed() / runs;
    println!(
        "wrap_key Argon2id m={} KiB t={} p={}: {:.1} ms",
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        per.as_secs_f64() * 1e3
    );
}
