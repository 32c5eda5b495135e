//! Helpers shared by the fuzz targets: how an input is split into several arguments, and
//! the seed corpus.
//!
//! Seeds are not committed: each target builds its own from the real encoders (so they
//! follow the formats as they change) in its `init` block, and writes them into the
//! directory named by `S3FS_FUZZ_SEED_DIR` when that is set (contrib/fuzz.sh sets it to
//! the target's corpus directory). Existing files are left alone.

use std::path::PathBuf;

/// The separator of the two halves of a text input: 0xFF never occurs in UTF-8, so each
/// half can be any valid UTF-8 (NUL and newlines included).
pub const TEXT_SEPARATOR: u8 = 0xFF;

/// Split `data` at the first [`TEXT_SEPARATOR`] into two UTF-8 strings (the second is
/// empty if there is no separator). `None` if either half is not valid UTF-8.
pub fn split_text(data: &[u8]) -> Option<(&str, &str)> {
    let (a, b) = match data.iter().position(|&b| b == TEXT_SEPARATOR) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    Some((std::str::from_utf8(a).ok()?, std::str::from_utf8(b).ok()?))
}

/// The inverse of [`split_text`], for seeds.
pub fn join_text(a: &str, b: &str) -> Vec<u8> {
    let mut v = a.as_bytes().to_vec();
    v.push(TEXT_SEPARATOR);
    v.extend_from_slice(b.as_bytes());
    v
}

/// Write `seeds` (file label, content) as `seed-<label>` into `$S3FS_FUZZ_SEED_DIR`, if
/// that is set, without overwriting anything.
pub fn write_seeds(seeds: impl IntoIterator<Item = (String, Vec<u8>)>) {
    let Some(dir) = std::env::var_os("S3FS_FUZZ_SEED_DIR").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    for (label, content) in seeds {
        let path = dir.join(format!("seed-{label}"));
        if !path.exists() {
            std::fs::write(&path, content).expect("write a seed");
        }
    }
}
