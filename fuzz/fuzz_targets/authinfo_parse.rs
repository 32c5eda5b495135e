//! `authinfo_parse`: `config::parse_authinfo(text, url)` on hostile authinfo2 text and
//! URLs; it must never panic.
//!
//! Input: `text 0xFF url` (0xFF cannot occur in UTF-8, so each half can be any valid
//! UTF-8; without a separator the URL is empty). Inputs that are not valid UTF-8 are
//! skipped: the real caller reads the file with `read_to_string`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3fs_fuzz::{join_text, split_text};

const SAMPLE: &str = "
[general]
storage-url: s3c://
backend-login: general-login
backend-password: general-pw

[specific]
storage-url = s3c://host:9000/bucket/fs1
backend-password: specific-pw
fs-passphrase: secret phrase
max-connections: 8
max-threads: 4
compress: zstd-6
cachedir: /var/cache/s3fs
backend-options: no-ssl,tcp-timeout=5

[other]
storage-url: s3c://host:9000/bucket/fs2
backend-login: other-login

[no-url]
backend-login: ignored
";

fn init() {
    s3fs_fuzz::write_seeds([
        (
            "sample-fs1".to_string(),
            join_text(SAMPLE, "s3c://host:9000/bucket/fs1"),
        ),
        ("sample-local".to_string(), join_text(SAMPLE, "local:///x/")),
        (
            "bad-number".to_string(),
            join_text("[a]\nstorage-url: x\nmax-threads: many\n", "x"),
        ),
        (
            "duplicate".to_string(),
            join_text("[a]\nstorage-url: x\n[a]\nstorage-url: y\n", "x"),
        ),
        (
            "quotes-comments".to_string(),
            join_text(
                "; comment\n# other\n[s3]\nstorage-url = \"s3://eu-west-1/b\"\nbackend-password = 'p=w;#x'\n",
                "s3://eu-west-1/b/",
            ),
        ),
        (
            "outside-section".to_string(),
            join_text("backend-login: x\n[a]\n", "local:///x/"),
        ),
    ]);
}

fuzz_target!(init: init(), |data: &[u8]| {
    let Some((text, url)) = split_text(data) else {
        return;
    };
    let _ = s3fs::config::parse_authinfo(text, url);
});
