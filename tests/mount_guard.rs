//! The single-writer lock on real stores: exclusive where conditional writes are
//! honoured (local, moto), check-then-write where they are not (Garage).

mod common;

use std::sync::Arc;

use s3fs::ExitCode;
use s3fs::codec::{Codec, Compression};
use s3fs::crypto::MasterKey;
use s3fs::fs_store::FsStore;
use s3fs::meta::versions::lock::{self, Guard};
use s3fs::runtime::block_on;
use s3fs::store::{StorageUrl, Store, open_store};

fn fs_on(store: Arc<dyn Store>) -> FsStore {
    FsStore::new(store, Codec::new(Some(MasterKey::generate()), Compression::default()))
}

fn lock_cycle(fs: &FsStore, expected: Guard) {
    assert_eq!(block_on(lock::acquire(fs, "uuid-1")).unwrap(), expected);
    let holder = block_on(lock::read_lock(fs)).unwrap().expect("lock present");
    assert_eq!(holder.pid, std::process::id());
    assert_eq!(holder.host, lock::hostname());
    let e = block_on(lock::acquire(fs, "uuid-1")).unwrap_err();
    assert_eq!(e.code, ExitCode::MountedElsewhere);
    assert!(
        e.message.contains(&format!("pid {}", std::process::id())),
        "{}",
        e.message
    );
    block_on(lock::release(fs)).unwrap();
    assert!(block_on(lock::read_lock(fs)).unwrap().is_none());
    assert_eq!(
        block_on(lock::acquire(fs, "uuid-1")).unwrap(),
        expected,
        "free again after release"
    );
    block_on(lock::release(fs)).unwrap();
}

/// Many mounts starting at the same instant: exactly one wins.
fn race(fs: &FsStore) {
    let winners = block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let fs = fs.clone();
            tasks.spawn(async move { lock::acquire(&fs, "uuid-1").await });
        }
        let mut winners = 0;
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(_) => winners += 1,
                Err(e) => assert_eq!(e.code, ExitCode::MountedElsewhere, "{}", e.message),
            }
        }
        winners
    });
    assert_eq!(winners, 1, "exactly one of 8 simultaneous mounts may win");
    block_on(lock::release(fs)).unwrap();
}

#[test]
fn lock_is_exclusive_on_local() {
    let dir = tempfile::tempdir().unwrap();
    let url = StorageUrl::parse(&format!("local://{}", dir.path().display())).unwrap();
    let fs = fs_on(open_store(&url, "", None).unwrap());
    lock_cycle(&fs, Guard::Conditional);
    race(&fs);
}

#[test]
fn lock_is_exclusive_on_moto() {
    let server = common::s3_server("MOTO");
    let url = StorageUrl::parse(&server.url_with_prefix("guard")).unwrap();
    let fs = fs_on(open_store(&url, &server.options, Some(server.credentials())).unwrap());
    lock_cycle(&fs, Guard::Conditional);
    race(&fs);
}

/// Garage ignores If-None-Match: the guard says so, and still refuses a second mount
/// that starts after the first.
#[test]
fn lock_is_check_then_write_on_garage() {
    let server = common::s3_server("GARAGE");
    let url = StorageUrl::parse(&server.url_with_prefix("guard")).unwrap();
    let fs = fs_on(open_store(&url, &server.options, Some(server.credentials())).unwrap());
    lock_cycle(&fs, Guard::CheckThenWrite);
}
