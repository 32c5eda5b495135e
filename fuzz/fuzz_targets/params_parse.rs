//! `params_parse`: `Params::from_json` (the superblock, read from the store) on hostile
//! bytes. It must never panic, and whatever it accepts must survive a round trip:
//! `Params::from_json(&p.to_json()) == Ok(p)`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3fs::params::{FS_REVISION, Params};

fn sample() -> Params {
    Params {
        revision: FS_REVISION,
        uuid: "6f1c2a4e-0b7d-4c59-9a3e-2f8d1e5b7c90".into(),
        label: "backup".into(),
        encrypted: true,
        data_block_size: 1 << 20,
        metadata_block_size: 64 << 10,
        seq: 1_700_000_000,
        db_size: 12_288,
        db_sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        is_mounted: false,
        needs_fsck: false,
        created: 1_700_000_000,
        last_fsck: 1_700_000_000,
        last_modified: 1_700_000_123,
    }
}

fn init() {
    let p = sample();
    let compact = serde_json::to_vec(&p).unwrap_or_default();
    let mut extreme = p.clone();
    extreme.label = "ünïcødé \"quoted\" \\ \u{0} 😀".into();
    extreme.data_block_size = u64::MAX;
    extreme.created = i64::MIN;
    extreme.last_fsck = -1;
    let mut extra_field = p.to_json();
    extra_field.pop(); // the closing brace
    extra_field.extend_from_slice(b",\"unknown\":[1,2,{\"a\":null}]}");
    s3fs_fuzz::write_seeds([
        ("pretty".to_string(), p.to_json()),
        ("compact".to_string(), compact),
        ("extreme".to_string(), extreme.to_json()),
        ("extra-field".to_string(), extra_field),
        (
            "newer".to_string(),
            Params {
                revision: FS_REVISION + 1,
                ..p.clone()
            }
            .to_json(),
        ),
        ("older".to_string(), Params { revision: 0, ..p }.to_json()),
    ]);
}

fuzz_target!(init: init(), |data: &[u8]| {
    if let Ok(p) = Params::from_json(data) {
        let json = p.to_json();
        match Params::from_json(&json) {
            Ok(q) => assert_eq!(p, q, "round trip changed the params"),
            Err(e) => panic!("cannot re-read what to_json wrote: {e:?}"),
        }
    }
});
