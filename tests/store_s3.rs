//! The S3 store against real servers (Garage and moto, started by
//! `tests/servers/start.sh`): the conformance suite, S3-specific behaviour, and the
//! error classification that the tools' exit codes depend on.
//!
//! Without the servers' environment variables every test here fails (never passes
//! silently): run the tests through `tests/run.sh`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{S3Server, s3_server, unique_prefix};
use s3fs::ExitCode;
use s3fs::runtime::block_on;
use s3fs::store::options::parse_s3_options;
use s3fs::store::s3::S3Store;
use s3fs::store::{PutMode, StorageUrl, Store, StoreError, open_store, probe_conditional_writes};

fn garage() -> S3Server {
    s3_server("GARAGE")
}

fn moto() -> S3Server {
    s3_server("MOTO")
}

/// The server's bucket under a fresh prefix, through `open_store` (with retries).
fn open(server: &S3Server, test: &str) -> std::sync::Arc<dyn Store> {
    let url = StorageUrl::parse(&server.url_with_prefix(test)).unwrap();
    open_store(&url, &server.options, Some(server.credentials()))
        .unwrap_or_else(|e| panic!("cannot open {} ({}): {e}", server.url, server.name))
}

/// The bare S3 store (no retry layer), so that temporary errors are seen as such.
fn open_raw(server: &S3Server, url: &str, options: &str) -> S3Store {
    let url = StorageUrl::parse(url).unwrap();
    let options = parse_s3_options(&url, options).unwrap();
    block_on(S3Store::connect(&url, &options, Some(server.credentials()))).unwrap()
}

fn open_err(url: &str, options: &str, credentials: Option<s3fs::store::open::Credentials>) -> s3fs::Error {
    let url = StorageUrl::parse(url).unwrap();
    match open_store(&url, options, credentials) {
        Ok(store) => panic!("opening {url} succeeded: {store:?}"),
        Err(e) => e.into(),
    }
}

/// The server's URL with another bucket name.
fn with_bucket(server: &S3Server, bucket: &str) -> String {
    let base = server.url.trim_end_matches('/');
    let (endpoint, _) = base.rsplit_once('/').unwrap();
    format!("{endpoint}/{bucket}/")
}

#[test]
fn garage_passes_conformance_suite() {
    let store = open(&garage(), "conformance");
    block_on(common::conformance::run_all(store.as_ref()));
}

#[test]
fn moto_passes_conformance_suite() {
    let store = open(&moto(), "conformance");
    block_on(common::conformance::run_all(store.as_ref()));
}

#[test]
fn moto_honours_conditional_writes() {
    let store = open(&moto(), "probe");
    assert!(block_on(probe_conditional_writes(store.as_ref())).unwrap());
}

/// A documented fact the filesystem relies on probing for: Garage 2.5 ignores
/// `If-None-Match` on PUT.
#[test]
fn garage_ignores_conditional_writes() {
    let store = open(&garage(), "probe");
    assert!(!block_on(probe_conditional_writes(store.as_ref())).unwrap());
}

#[test]
fn moto_if_match_with_stale_etag_is_precondition_failed() {
    let store = open(&moto(), "ifmatch");
    block_on(async {
        let s = store.as_ref();
        s.put("k", Bytes::from_static(b"one"), PutMode::Overwrite)
            .await
            .unwrap();
        let stale = s.head("k").await.unwrap().etag.expect("moto reports etags");
        s.put("k", Bytes::from_static(b"two"), PutMode::Overwrite)
            .await
            .unwrap();
        let r = s.put("k", Bytes::from_static(b"three"), PutMode::IfMatch(stale)).await;
        assert!(matches!(r, Err(StoreError::PreconditionFailed(_))), "{r:?}");
        assert_eq!(s.get("k", u64::MAX).await.unwrap(), Bytes::from_static(b"two"));
        // The etag a listing reports is just as usable.
        let listed = s.list("", None).await.unwrap().objects;
        let current = listed
            .iter()
            .find(|o| o.key == "k")
            .and_then(|o| o.etag.clone())
            .unwrap();
        s.put("k", Bytes::from_static(b"four"), PutMode::IfMatch(current))
            .await
            .unwrap();
        assert_eq!(s.get("k", u64::MAX).await.unwrap(), Bytes::from_static(b"four"));
        let r = s
            .put("missing", Bytes::from_static(b"x"), PutMode::IfMatch("0123".into()))
            .await;
        assert!(
            matches!(r, Err(StoreError::PreconditionFailed(_))),
            "If-Match on a missing object: {r:?}"
        );
    });
}

#[test]
fn keys_are_relative_to_the_url_prefix() {
    for server in [garage(), moto()] {
        let prefix = unique_prefix("prefix");
        let base = server.url.trim_end_matches('/');
        let outer = open_store(
            &StorageUrl::parse(&format!("{base}/{prefix}")).unwrap(),
            &server.options,
            Some(server.credentials()),
        )
        .unwrap();
        let inner = open_store(
            &StorageUrl::parse(&format!("{base}/{prefix}sub/")).unwrap(),
            &server.options,
            Some(server.credentials()),
        )
        .unwrap();
        block_on(async {
            inner
                .put("obj", Bytes::from_static(b"data"), PutMode::Overwrite)
                .await
                .unwrap();
            assert_eq!(
                outer.get("sub/obj", u64::MAX).await.unwrap(),
                Bytes::from_static(b"data"),
                "{}",
                server.name
            );
            let keys: Vec<String> = inner
                .list("", None)
                .await
                .unwrap()
                .objects
                .into_iter()
                .map(|o| o.key)
                .collect();
            assert_eq!(keys, vec!["obj".to_owned()], "{}", server.name);
            assert_eq!(inner.head("obj").await.unwrap().key, "obj");
            inner.delete("obj").await.unwrap();
            assert!(matches!(
                outer.get("sub/obj", u64::MAX).await,
                Err(StoreError::NotFound(_))
            ));
        });
        assert!(
            inner.describe().ends_with(&format!("{prefix}sub/")),
            "{}",
            inner.describe()
        );
    }
}

#[test]
fn sse_and_storage_class_options_are_accepted() {
    let server = moto();
    let url = server.url_with_prefix("sse");
    let store = open_raw(
        &server,
        &url,
        &format!("{},sse,storage-class=STANDARD_IA", server.options),
    );
    block_on(async {
        store
            .put("obj", Bytes::from_static(b"secret"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(store.get("obj", u64::MAX).await.unwrap(), Bytes::from_static(b"secret"));
    });
}

#[test]
fn missing_bucket_is_exit_16_and_names_the_bucket() {
    for server in [garage(), moto()] {
        let e = open_err(
            &with_bucket(&server, "s3fs-no-such-bucket"),
            &server.options,
            Some(server.credentials()),
        );
        assert_eq!(e.code, ExitCode::NoSuchBucket, "{}: {e}", server.name);
        assert!(e.message.contains("s3fs-no-such-bucket"), "{}: {e}", server.name);
    }
}

#[test]
fn wrong_secret_is_exit_14() {
    let server = garage();
    let mut creds = server.credentials();
    creds.password = "0".repeat(64);
    let e = open_err(&server.url_with_prefix("badsecret"), &server.options, Some(creds));
    assert_eq!(e.code, ExitCode::AuthFailed, "{e}");
}

#[test]
fn unknown_key_id_is_exit_14() {
    let server = garage();
    let mut creds = server.credentials();
    creds.login = "GK000000000000000000000000".into();
    let e = open_err(&server.url_with_prefix("badkey"), &server.options, Some(creds));
    assert_eq!(e.code, ExitCode::AuthFailed, "{e}");
}

#[test]
fn unknown_backend_option_is_exit_3() {
    let server = moto();
    let e = open_err(
        &server.url_with_prefix("badopt"),
        "no-ssl,frobnicate",
        Some(server.credentials()),
    );
    assert_eq!(e.code, ExitCode::BadBackendOption, "{e}");
}

#[test]
fn bad_ca_file_is_exit_3() {
    let server = moto();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    // Checked before any connection is made.
    let e = open_err(
        "s3c://127.0.0.1:1/s3fs-test/badca/",
        &format!("ssl-ca-path={}", path.display()),
        Some(server.credentials()),
    );
    assert_eq!(e.code, ExitCode::BadBackendOption, "{e}");
}

#[test]
fn closed_port_is_exit_19_with_a_clear_message() {
    let server = moto();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let start = Instant::now();
    let e = open_err(
        &format!("s3c://127.0.0.1:{port}/s3fs-test/x/"),
        "no-ssl,tcp-timeout=2",
        Some(server.credentials()),
    );
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert_eq!(e.code, ExitCode::HostUnresolvable, "{e}");
    assert!(!e.message.contains('\n'), "one line: {e}");
    assert!(
        e.message.contains(&format!("127.0.0.1:{port}")),
        "names the endpoint: {e}"
    );
    assert!(e.message.to_lowercase().contains("refused"), "says why: {e}");
}

#[test]
fn missing_object_classification() {
    for server in [garage(), moto()] {
        let store = open_raw(&server, &server.url_with_prefix("missing"), &server.options);
        block_on(async {
            assert_eq!(
                store.get("nope", u64::MAX).await,
                Err(StoreError::NotFound("nope".into())),
                "{}",
                server.name
            );
            assert_eq!(
                store.head("nope").await,
                Err(StoreError::NotFound("nope".into())),
                "{}",
                server.name
            );
            store.delete("nope").await.unwrap();
            store.delete_many(&["nope".into(), "nope2".into()]).await.unwrap();
            // A range of an empty object, and a range starting past the end.
            store.put("empty", Bytes::new(), PutMode::Overwrite).await.unwrap();
            assert!(
                store.get_range("empty", 0..10).await.unwrap().is_empty(),
                "{}",
                server.name
            );
            store
                .put("small", Bytes::from_static(b"abc"), PutMode::Overwrite)
                .await
                .unwrap();
            assert!(
                store.get_range("small", 5..10).await.unwrap().is_empty(),
                "{}",
                server.name
            );
            assert_eq!(
                store.get_range("small", 1..10).await.unwrap(),
                Bytes::from_static(b"bc")
            );
        });
    }
}

/// A TCP proxy to `target` that replaces `from` by `to` (same length) in the bytes going
/// one way: towards the client (`to_client`) or towards the server.
fn corrupting_proxy(target: u16, from: &'static [u8], to: &'static [u8], to_client: bool) -> u16 {
    assert_eq!(from.len(), to.len());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                return;
            };
            let pipe = move |mut src: TcpStream, mut dst: TcpStream, corrupt: bool| {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = match src.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if corrupt && let Some(i) = buf[..n].windows(from.len()).position(|w| w == from) {
                            buf[i..i + to.len()].copy_from_slice(to);
                        }
                        if dst.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = dst.shutdown(Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), !to_client);
            pipe(server, client, to_client);
        }
    });
    port
}

/// `server`'s bucket under `prefix`, reached through the proxy listening on `proxy`.
fn via_proxy(server: &S3Server, proxy: u16, prefix: &str) -> String {
    let rest = server.url.strip_prefix("s3c://").unwrap();
    let (_, path) = rest.split_once('/').unwrap();
    format!("s3c://127.0.0.1:{proxy}/{}/{prefix}", path.trim_end_matches('/'))
}

fn port_of(url: &str) -> u16 {
    let rest = url.strip_prefix("s3c://").unwrap();
    let hostport = rest.split('/').next().unwrap();
    hostport.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Corruption on the way back is caught by comparing the ETag with the MD5 of what
/// arrived, and reported as temporary (worth retrying).
#[test]
fn corrupted_download_is_a_temporary_checksum_error() {
    for server in [garage(), moto()] {
        let prefix = unique_prefix("corrupt-get");
        let direct = open_raw(
            &server,
            &format!("{}/{prefix}", server.url.trim_end_matches('/')),
            &server.options,
        );
        let body = Bytes::from_static(b"some data CORRUPTME more data");
        block_on(direct.put("obj", body.clone(), PutMode::Overwrite)).unwrap();
        let proxy = corrupting_proxy(port_of(&server.url), b"CORRUPTME", b"CORRUPTED", true);
        let proxied = open_raw(&server, &via_proxy(&server, proxy, &prefix), &server.options);
        match block_on(proxied.get("obj", u64::MAX)) {
            Err(StoreError::Temporary { message, .. }) => {
                assert!(message.contains("checksum mismatch"), "{}: {message}", server.name)
            }
            other => panic!("{}: corrupted GET gave {other:?}", server.name),
        }
        assert_eq!(block_on(direct.get("obj", u64::MAX)).unwrap(), body);
    }
}

/// Corruption on the way out is caught by the server (the body's CRC32C, which Garage
/// verifies, else its Content-MD5), reported as temporary, and stores nothing. Garage
/// only: moto verifies neither.
#[test]
fn corrupted_upload_is_refused_by_the_server() {
    let server = garage();
    let prefix = unique_prefix("corrupt-put");
    let proxy = corrupting_proxy(port_of(&server.url), b"CORRUPTME", b"CORRUPTED", false);
    let proxied = open_raw(&server, &via_proxy(&server, proxy, &prefix), &server.options);
    let r = block_on(proxied.put("obj", Bytes::from_static(b"xx CORRUPTME xx"), PutMode::Overwrite));
    assert!(
        matches!(r, Err(StoreError::Temporary { .. })),
        "corrupted PUT gave {r:?}"
    );
    assert!(matches!(block_on(proxied.head("obj")), Err(StoreError::NotFound(_))));
}

/// PUT bodies carry a checksum the server verifies: CRC32C where the server was seen to
/// refuse a wrong one (Garage does), else Content-MD5 (moto accepts a wrong CRC32C: the
/// case the probe is for); either way the data round-trips and the probe leaves nothing
/// behind.
#[test]
fn put_bodies_carry_a_checksum_the_server_verifies() {
    use s3fs::store::s3::PutCheck;
    for (name, expected) in [("GARAGE", PutCheck::Crc32c), ("MOTO", PutCheck::Md5)] {
        let server = s3_server(name);
        let url = server.url_with_prefix("put-check");
        let store = open_raw(&server, &url, &server.options);
        assert_eq!(store.put_check(), None, "found out at the first PUT");
        let body = Bytes::from(common::random_bytes(100_000, 3));
        block_on(store.put("k", body.clone(), PutMode::Overwrite)).unwrap();
        assert_eq!(store.put_check(), Some(expected), "{name}");
        assert!(block_on(store.get("k", 200_000)).unwrap() == body, "{name}");
        let keys: Vec<String> = block_on(s3fs::store::list_all(&store, ""))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["k".to_owned()], "{name}: the probe's object is gone");
    }
}
