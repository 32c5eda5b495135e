//! `storage_url`: `StorageUrl::parse` on hostile text; it must never panic, and the
//! canonical form must be a fixed point: if `parse(text)` is `Ok(u)`, then
//! `parse(&u.to_string())` is `Ok(u)` again and prints the same string (authinfo2
//! sections and cache file names are keyed by that string).
//!
//! Inputs that are not valid UTF-8 are skipped (the argument is a `&str`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3fs::store::StorageUrl;

fn init() {
    let urls = [
        "local:///srv/fs",
        "local:///srv/./a/../fs/",
        "local://rel/dir",
        "s3://eu-west-1/my-bucket",
        "s3://eu-west-1/my-bucket/p/q",
        "s3c://127.0.0.1:3900/bkt/pre_",
        "s3c://[::1]:9000/bucket/",
        "s3c://s3.example.com/bucket.with.dots/prefix/",
    ];
    s3fs_fuzz::write_seeds(
        urls.iter()
            .enumerate()
            .map(|(i, u)| (format!("url-{i}"), u.as_bytes().to_vec())),
    );
}

fuzz_target!(init: init(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = StorageUrl::parse(text) {
        let canonical = u.to_string();
        match StorageUrl::parse(&canonical) {
            Ok(v) => {
                assert_eq!(u, v, "{text:?} -> {canonical:?} parses differently");
                assert_eq!(canonical, v.to_string(), "{text:?}: canonical form is not a fixed point");
            }
            Err(e) => panic!("{text:?}: canonical form {canonical:?} does not parse: {e:?}"),
        }
    }
});
