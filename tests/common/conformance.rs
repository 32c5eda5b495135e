//! The store conformance suite: every `Store` implementation must pass all of it.
//! Each check starts from an empty namespace of its own (a key prefix) so checks do not
//! see each other's objects.

use std::collections::BTreeSet;

use bytes::Bytes;
use s3fs::store::{PutMode, Store, StoreError, list_all, probe_conditional_writes};

fn data(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

/// Run every check. `name` is used in failure messages.
pub async fn run_all(store: &dyn Store) {
    put_get_overwrite(store, "c1/").await;
    missing_objects(store, "c2/").await;
    ranges(store, "c3/").await;
    head_reports_size_and_etag(store, "c4/").await;
    delete_is_idempotent(store, "c5/").await;
    odd_keys(store, "c6/").await;
    empty_and_large_objects(store, "c7/").await;
    list_sorted_with_prefix(store, "c8/").await;
    list_pages(store, "c9/").await;
    concurrent_puts(store, "c10/").await;
    conditional_writes(store, "c11/").await;
    oversized_objects_are_refused(store, "c12/").await;
}

/// A reader says how much it will hold: a larger object is refused, not read.
pub async fn oversized_objects_are_refused(s: &dyn Store, p: &str) {
    let k = format!("{p}big");
    s.put(&k, data(10_000, 9), PutMode::Overwrite).await.unwrap();
    match s.get(&k, 9_999).await {
        Err(StoreError::TooLarge { size, max, .. }) => assert_eq!((size, max), (10_000, 9_999)),
        other => panic!("an object over the limit: {other:?}"),
    }
    assert_eq!(s.get(&k, 10_000).await.unwrap(), data(10_000, 9));
    assert_eq!(
        s.get_range(&k, 9_990..20_000).await.unwrap(),
        data(10_000, 9).slice(9_990..)
    );
}

pub async fn put_get_overwrite(s: &dyn Store, p: &str) {
    let k = format!("{p}obj");
    s.put(&k, data(1000, 1), PutMode::Overwrite).await.unwrap();
    assert_eq!(s.get(&k, u64::MAX).await.unwrap(), data(1000, 1), "read after write");
    s.put(&k, data(500, 2), PutMode::Overwrite).await.unwrap();
    assert_eq!(s.get(&k, u64::MAX).await.unwrap(), data(500, 2), "read after overwrite");
}

pub async fn missing_objects(s: &dyn Store, p: &str) {
    let k = format!("{p}nothing-here");
    assert!(
        matches!(s.get(&k, u64::MAX).await, Err(StoreError::NotFound(_))),
        "get of a missing object"
    );
    assert!(
        matches!(s.get_range(&k, 0..10).await, Err(StoreError::NotFound(_))),
        "range get of a missing object"
    );
    assert!(
        matches!(s.head(&k).await, Err(StoreError::NotFound(_))),
        "head of a missing object"
    );
}

pub async fn ranges(s: &dyn Store, p: &str) {
    let k = format!("{p}ranged");
    let d = data(10_000, 3);
    s.put(&k, d.clone(), PutMode::Overwrite).await.unwrap();
    assert_eq!(s.get_range(&k, 0..1).await.unwrap(), d.slice(0..1));
    assert_eq!(s.get_range(&k, 1234..5678).await.unwrap(), d.slice(1234..5678));
    assert_eq!(s.get_range(&k, 9000..10_000).await.unwrap(), d.slice(9000..));
    assert_eq!(
        s.get_range(&k, 9000..20_000).await.unwrap(),
        d.slice(9000..),
        "range past the end is cut"
    );
    assert!(s.get_range(&k, 50..50).await.unwrap().is_empty(), "empty range");
}

pub async fn head_reports_size_and_etag(s: &dyn Store, p: &str) {
    let k = format!("{p}headed");
    s.put(&k, data(4321, 4), PutMode::Overwrite).await.unwrap();
    let info = s.head(&k).await.unwrap();
    assert_eq!(info.key, k);
    assert_eq!(info.size, 4321);
    let etag1 = info.etag.clone();
    s.put(&k, data(4321, 5), PutMode::Overwrite).await.unwrap();
    let etag2 = s.head(&k).await.unwrap().etag;
    if etag1.is_some() {
        assert_ne!(etag1, etag2, "etag changes when the object changes");
    }
}

pub async fn delete_is_idempotent(s: &dyn Store, p: &str) {
    let keys: Vec<String> = (0..5).map(|i| format!("{p}d{i}")).collect();
    for k in &keys {
        s.put(k, data(10, 6), PutMode::Overwrite).await.unwrap();
    }
    s.delete(&keys[0]).await.unwrap();
    s.delete(&keys[0]).await.unwrap();
    assert!(matches!(s.get(&keys[0], u64::MAX).await, Err(StoreError::NotFound(_))));
    let mut many = keys[1..4].to_vec();
    many.push(format!("{p}never-existed"));
    s.delete_many(&many).await.unwrap();
    let left: Vec<String> = list_all(s, p).await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(left, vec![keys[4].clone()]);
    s.delete_many(&[]).await.unwrap();
}

pub async fn odd_keys(s: &dyn Store, p: &str) {
    let names = [
        "a/b/c",
        "with space",
        "ünïcødé",
        "x=y#z%20",
        ".dot",
        "s3fs_data_1",
        "s3fs_data_123456789",
        "trailing/",
    ];
    for (i, n) in names.iter().enumerate() {
        let k = format!("{p}{n}");
        s.put(&k, data(100 + i, 7), PutMode::Overwrite).await.unwrap();
        assert_eq!(s.get(&k, u64::MAX).await.unwrap(), data(100 + i, 7), "key {k:?}");
    }
    let listed: BTreeSet<String> = list_all(s, p).await.unwrap().into_iter().map(|o| o.key).collect();
    let expected: BTreeSet<String> = names.iter().map(|n| format!("{p}{n}")).collect();
    assert_eq!(listed, expected);
}

pub async fn empty_and_large_objects(s: &dyn Store, p: &str) {
    let k = format!("{p}empty");
    s.put(&k, Bytes::new(), PutMode::Overwrite).await.unwrap();
    assert!(s.get(&k, u64::MAX).await.unwrap().is_empty());
    assert_eq!(s.head(&k).await.unwrap().size, 0);
    let k = format!("{p}large");
    let big = data(8 << 20, 8);
    s.put(&k, big.clone(), PutMode::Overwrite).await.unwrap();
    assert!(s.get(&k, u64::MAX).await.unwrap() == big, "8 MiB object round trip");
    assert_eq!(
        s.get_range(&k, (5 << 20)..(5 << 20) + 7).await.unwrap(),
        big.slice((5 << 20)..(5 << 20) + 7)
    );
}

pub async fn list_sorted_with_prefix(s: &dyn Store, p: &str) {
    let keys = [
        "b",
        "a",
        "ab",
        "s3fs_data_12",
        "s3fs_data_1200",
        "s3fs_data_2",
        "s3fs_data_1234567",
        "s3fs_data_123",
        "z/1",
        "z/2",
    ];
    for k in keys {
        s.put(&format!("{p}{k}"), data(3, 9), PutMode::Overwrite).await.unwrap();
    }
    let all: Vec<String> = list_all(s, p).await.unwrap().into_iter().map(|o| o.key).collect();
    let mut sorted: Vec<String> = keys.iter().map(|k| format!("{p}{k}")).collect();
    sorted.sort();
    assert_eq!(all, sorted, "listing is complete and sorted");
    let sub: Vec<String> = list_all(s, &format!("{p}s3fs_data_12"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let expected: Vec<String> = sorted
        .iter()
        .filter(|k| k.starts_with(&format!("{p}s3fs_data_12")))
        .cloned()
        .collect();
    assert_eq!(sub, expected, "listing by prefix");
    assert!(list_all(s, &format!("{p}nomatch")).await.unwrap().is_empty());
    let sizes: Vec<u64> = list_all(s, p).await.unwrap().into_iter().map(|o| o.size).collect();
    assert!(sizes.iter().all(|&n| n == 3), "listing reports sizes");
}

/// More keys than one page holds (1000 on S3), to exercise continuations.
pub async fn list_pages(s: &dyn Store, p: &str) {
    let keys: Vec<String> = (0..2100).map(|i| format!("{p}s3fs_data_{}", i * 7)).collect();
    let mut tasks = Vec::new();
    for chunk in keys.chunks(keys.len().div_ceil(32)) {
        tasks.push(async move {
            for k in chunk {
                s.put(k, Bytes::from_static(b"x"), PutMode::Overwrite).await.unwrap();
            }
        });
    }
    join_all(tasks).await;
    let first = s.list(p, None).await.unwrap();
    assert!(first.next.is_some(), "a listing of 2100 keys has more than one page");
    assert!(first.objects.len() <= 1000);
    let all: Vec<String> = list_all(s, p).await.unwrap().into_iter().map(|o| o.key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(all.len(), sorted.len(), "no key lost or repeated across pages");
    assert_eq!(all, sorted);
    s.delete_many(&keys).await.unwrap();
    assert!(
        list_all(s, p).await.unwrap().is_empty(),
        "delete_many removed every key"
    );
}

pub async fn concurrent_puts(s: &dyn Store, p: &str) {
    let tasks: Vec<_> = (0..32)
        .map(|i| async move {
            let k = format!("{p}par{i}");
            s.put(&k, data(50_000 + i, i as u8), PutMode::Overwrite).await.unwrap();
            assert_eq!(s.get(&k, u64::MAX).await.unwrap(), data(50_000 + i, i as u8));
        })
        .collect();
    join_all(tasks).await;
    assert_eq!(list_all(s, p).await.unwrap().len(), 32);
}

/// Creating with `IfNoneMatch` always works on a new key; on an existing key it must fail
/// wherever the store honours conditional writes (probed, never assumed).
pub async fn conditional_writes(s: &dyn Store, p: &str) {
    let k = format!("{p}cond");
    s.put(&k, data(10, 10), PutMode::IfNoneMatch).await.unwrap();
    assert_eq!(s.get(&k, u64::MAX).await.unwrap(), data(10, 10));
    if probe_conditional_writes(s).await.unwrap() {
        assert!(matches!(
            s.put(&k, data(10, 11), PutMode::IfNoneMatch).await,
            Err(StoreError::PreconditionFailed(_))
        ));
        assert_eq!(
            s.get(&k, u64::MAX).await.unwrap(),
            data(10, 10),
            "a refused put changes nothing"
        );
        let etag = s
            .head(&k)
            .await
            .unwrap()
            .etag
            .expect("stores with conditional writes report etags");
        s.put(&k, data(10, 12), PutMode::IfMatch(etag.clone())).await.unwrap();
        assert_eq!(s.get(&k, u64::MAX).await.unwrap(), data(10, 12));
        assert!(
            matches!(
                s.put(&k, data(10, 13), PutMode::IfMatch(etag)).await,
                Err(StoreError::PreconditionFailed(_))
            ),
            "stale etag"
        );
        assert_eq!(s.get(&k, u64::MAX).await.unwrap(), data(10, 12));
    }
    // The probe leaves nothing behind.
    let left: Vec<String> = list_all(s, "")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.starts_with("s3fs_probe_"))
        .collect();
    assert!(left.is_empty(), "probe objects left behind: {left:?}");
}

/// Await futures concurrently on the current task (no extra dependency needed).
pub async fn join_all<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        futs.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futs.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
