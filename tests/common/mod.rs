//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod conformance;
pub mod counting;
pub mod mount;

use std::sync::atomic::{AtomicU64, Ordering};

/// An S3 server started by `tests/servers/start.sh` for this test run.
#[derive(Debug, Clone)]
pub struct S3Server {
    pub name: &'static str,
    /// Storage URL of a bucket on the server, without a prefix.
    pub url: String,
    pub login: String,
    pub password: String,
    pub options: String,
}

/// The server `name` ("GARAGE" or "MOTO"). Fails the test if the servers are not
/// running: S3 tests never pass silently.
pub fn s3_server(name: &'static str) -> S3Server {
    let var = |k: &str| {
        let key = format!("S3FS_TEST_{name}_{k}");
        std::env::var(&key).unwrap_or_else(|_| {
            panic!("{key} is not set: the S3 test servers are not running. Run the tests through the README's test command (tests/run.sh), which starts them.")
        })
    };
    S3Server {
        name,
        url: var("URL"),
        login: var("LOGIN"),
        password: var("PASSWORD"),
        options: var("OPTIONS"),
    }
}

/// A prefix no other test in this run uses, so tests can share a bucket.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}-{n}/", std::process::id())
}

impl S3Server {
    /// This server's bucket with a fresh prefix.
    pub fn url_with_prefix(&self, test: &str) -> String {
        let base = self.url.trim_end_matches('/');
        format!("{base}/{}", unique_prefix(test))
    }

    pub fn credentials(&self) -> s3fs::store::open::Credentials {
        s3fs::store::open::Credentials {
            login: self.login.clone(),
            password: self.password.clone(),
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift): incompressible, and different for every
/// seed, so deduplication never merges test blocks by accident.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Map block `blockno` of inode `ino` to block `block` stored in object `obj`, creating
/// the object (`obj_len` bytes) and block (`block_len` bytes) rows if needed and keeping
/// every refcount right: the tests' way to give a file data without the block cache.
pub fn map_block(
    c: &rusqlite::Connection,
    ino: i64,
    blockno: i64,
    (block, obj): (i64, i64),
    obj_len: i64,
    block_len: i64,
) {
    use rusqlite::params;
    c.execute(
        "INSERT INTO objects (id, refcount, phys_size, length) VALUES (?1, 0, ?2, ?2) ON CONFLICT DO NOTHING",
        params![obj, obj_len],
    )
    .unwrap();
    let new = c
        .execute(
            "INSERT INTO blocks (id, hash, refcount, size, obj_id) VALUES (?1, randomblob(32), 0, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![block, block_len, obj],
        )
        .unwrap();
    if new == 1 {
        c.execute("UPDATE objects SET refcount = refcount + 1 WHERE id = ?1", [obj])
            .unwrap();
    }
    c.execute(
        "INSERT INTO inode_blocks (inode, blockno, block_id) VALUES (?1, ?2, ?3)",
        params![ino, blockno, block],
    )
    .unwrap();
    c.execute("UPDATE blocks SET refcount = refcount + 1 WHERE id = ?1", [block])
        .unwrap();
}

/// Exit status of a finished tool (-1 if a signal ended it).
pub fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A tool's standard output and error, for assertions and their messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every entry below `root` (not following symlinks): path relative to `root`, full
/// path, and its metadata.
pub fn walk(root: &std::path::Path) -> Vec<(std::path::PathBuf, std::path::PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push((p.strip_prefix(root).unwrap().to_owned(), p, m));
        }
    }
    out
}

/// A secret source for tools that must not ask for anything (unencrypted filesystems).
pub struct NoSecrets;

impl s3fs::config::SecretSource for NoSecrets {
    fn ask(&mut self, prompt: &str) -> Result<String, s3fs::Error> {
        panic!("unexpected prompt {prompt:?}")
    }
    fn is_interactive(&self) -> bool {
        false
    }
}
