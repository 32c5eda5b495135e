//! `backend_options`: `store::options::parse_s3_options(&url, text)` on hostile
//! `--backend-options` text, for `s3c://127.0.0.1:9000/bucket` and for
//! `local:///tmp/x`. It must never panic; local:// accepts only option lists without
//! items; empty items are ignored (`,text,` gives the same answer as `text`); a parsed
//! TCP timeout is positive.
//!
//! Inputs that are not valid UTF-8 are skipped (the argument is a `&str`).
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use s3fs::store::StorageUrl;
use s3fs::store::options::{parse_s3_options, split_options};

static URLS: LazyLock<[StorageUrl; 2]> = LazyLock::new(|| {
    [
        StorageUrl::parse("s3c://127.0.0.1:9000/bucket").unwrap(),
        StorageUrl::parse("local:///tmp/x").unwrap(),
    ]
});

fn init() {
    let texts = [
        "no-ssl, tcp-timeout=2.5,sig-region=garage,sse,rrs,ia",
        "storage-class=STANDARD_IA,oia,it",
        "ssl-ca-path=/etc/ssl/certs/ca.pem, tcp-timeout = 20",
        "tcp-timeout=0.001",
        // Float syntax for the mutator to work from: exponents, signs, specials.
        "tcp-timeout=1e3",
        "tcp-timeout=2.5E-1,sse",
        "tcp-timeout=+inf",
        ",,",
    ];
    s3fs_fuzz::write_seeds(
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("opts-{i}"), t.as_bytes().to_vec())),
    );
}

fuzz_target!(init: init(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let padded = format!(",{text},");
    for url in URLS.iter() {
        let r = parse_s3_options(url, text);
        if url.scheme() == "local" {
            assert_eq!(r.is_ok(), split_options(text).is_empty(), "local:// accepted options: {text:?}");
        }
        if let Ok(o) = &r {
            assert!(o.tcp_timeout > Duration::ZERO, "{text:?}: zero timeout");
        }
        let p = parse_s3_options(url, &padded);
        let code = |e: s3fs::store::options::BackendOptionError| s3fs::Error::from(e).code;
        assert_eq!(r.map_err(code), p.map_err(code), "{text:?} vs {padded:?}");
    }
});
