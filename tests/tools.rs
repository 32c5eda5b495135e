//! mkfs.s3fs and s3fsadm tested through their real binaries, on `local://` and on the S3
//! servers started for the test run.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use s3fs::codec::Compression;
use s3fs::fs_store::{self, ConnectOptions, names};
use s3fs::runtime::block_on;
use s3fs::store::list_all;

const MKFS: &str = env!("CARGO_BIN_EXE_mkfs-s3fs");
const ADM: &str = env!("CARGO_BIN_EXE_s3fsadm");

/// A scratch HOME with an authinfo2 file and a cache directory.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(authinfo: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let env = Env { dir };
        std::fs::write(env.authfile(), authinfo).unwrap();
        std::fs::set_permissions(env.authfile(), std::fs::Permissions::from_mode(0o600)).unwrap();
        env
    }

    fn authfile(&self) -> PathBuf {
        self.dir.path().join("authinfo2")
    }

    fn cachedir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Run `bin` with the common options first, feeding `stdin`.
    fn run(&self, bin: &str, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new(bin);
        cmd.env("HOME", self.dir.path())
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .arg("--authfile")
            .arg(self.authfile())
            .arg("--cachedir")
            .arg(self.cachedir())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally, not by a signal")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn assert_exit(o: &Output, expected: i32, what: &str) {
    assert_eq!(code(o), expected, "{what}: stdout: {} stderr: {}", stdout(o), stderr(o));
    if expected != 0 {
        let err = stderr(o);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{what}: one-line error expected, got {err:?}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

/// The master key block that mkfs printed.
fn master_key(mkfs_out: &str) -> String {
    let start = mkfs_out
        .find("---BEGIN MASTER KEY---")
        .expect("mkfs prints the master key");
    let end = mkfs_out.find("---END MASTER KEY---").expect("end marker") + "---END MASTER KEY---".len();
    mkfs_out[start..end].to_owned()
}

/// Open the filesystem through the library and check that its metadata DB, rebuilt
/// from the store, holds the root and lost+found.
fn check_filesystem(env: &Env, url: &str, passphrase: &str) {
    let auth = env.authfile();
    let opts = ConnectOptions {
        authfile: Some(&auth),
        backend_options: None,
    };
    let conn = fs_store::connect(url, &opts, &mut Answers(vec![passphrase.to_owned()])).unwrap();
    let opened = block_on(fs_store::open_filesystem(
        &conn,
        Compression::default(),
        &mut Answers(vec![passphrase.to_owned()]),
    ))
    .unwrap();
    assert_eq!(opened.params.data_block_size, 4 << 20, "the default block size");
    assert!(!opened.params.is_mounted && !opened.params.needs_fsck);
    let db_path = env.dir.path().join("check.db");
    block_on(s3fs::meta::chunks::download(&opened.fs, &opened.params, &db_path, 4)).unwrap();
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let names: Vec<Vec<u8>> = db
        .prepare("SELECT name FROM contents_v WHERE parent_inode = 1")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(names, vec![b"lost+found".to_vec()]);
    std::fs::remove_file(db_path).unwrap();
}

struct Answers(Vec<String>);
impl s3fs::config::SecretSource for Answers {
    fn ask(&mut self, prompt: &str) -> Result<String, s3fs::Error> {
        if self.0.is_empty() {
            panic!("unexpected prompt {prompt:?}");
        }
        Ok(self.0.remove(0))
    }
    fn is_interactive(&self) -> bool {
        false
    }
}

/// mkfs, then passphrase change, then key recovery, through the binaries.
fn key_round_trip(env: &Env, url: &str) {
    let mk = env.run(MKFS, &[url], "first pass\n");
    assert_exit(&mk, 0, "mkfs");
    let key = master_key(&stdout(&mk));
    assert_eq!(
        key.lines().nth(1).unwrap().split_whitespace().count(),
        11,
        "11 groups of 4 characters: {key}"
    );
    check_filesystem(env, url, "first pass");

    let again = env.run(MKFS, &[url], "x\n");
    assert_exit(&again, 1, "mkfs over an existing filesystem");
    assert!(stderr(&again).contains("s3fsadm clear"), "{}", stderr(&again));

    assert_exit(
        &env.run(ADM, &["passphrase", url], "wrong\nnew\n"),
        17,
        "passphrase with a wrong old passphrase",
    );
    assert_exit(
        &env.run(ADM, &["passphrase", url], "first pass\nsecond pass\n"),
        0,
        "passphrase change",
    );
    assert_exit(
        &env.run(ADM, &["passphrase", url], "first pass\nthird\n"),
        17,
        "old passphrase after the change",
    );
    check_filesystem(env, url, "second pass");

    // Lost passphrase: the printed master key restores access.
    let wrong_key = s3fs::crypto::MasterKey::generate().to_printable().replace('\n', " ");
    assert_exit(
        &env.run(ADM, &["recover-key", url], &format!("{wrong_key}\nrecovered\n")),
        17,
        "recover-key with another key",
    );
    assert_exit(
        &env.run(
            ADM,
            &["recover-key", url],
            &format!("{}\nrecovered\n", key.replace('\n', " ")),
        ),
        0,
        "recover-key",
    );
    assert_exit(
        &env.run(ADM, &["passphrase", url], "second pass\nx\n"),
        17,
        "passphrase replaced by recover-key",
    );
    check_filesystem(env, url, "recovered");

    // clear: anything but "yes" keeps the filesystem.
    assert_exit(&env.run(ADM, &["clear", url], "no\n"), 42, "clear answered no");
    check_filesystem(env, url, "recovered");
    let cleared = env.run(ADM, &["clear", url], "yes\n");
    assert_exit(&cleared, 0, "clear");
    let auth = env.authfile();
    let conn = fs_store::connect(
        url,
        &ConnectOptions {
            authfile: Some(&auth),
            backend_options: None,
        },
        &mut Answers(vec![]),
    )
    .unwrap();
    assert!(
        block_on(list_all(conn.store.as_ref(), "")).unwrap().is_empty(),
        "clear leaves nothing in the store"
    );
    assert_exit(&env.run(MKFS, &["--plain", url], ""), 0, "mkfs after clear");
}

#[test]
fn key_round_trip_on_local() {
    let env = Env::new("");
    let url = format!("local://{}/store", env.dir.path().display());
    key_round_trip(&env, &url);
}

fn s3_env(server: &common::S3Server) -> (Env, String) {
    let url = server.url_with_prefix("tools");
    let env = Env::new(&format!(
        "[test]\nstorage-url: {}\nbackend-login: {}\nbackend-password: {}\nbackend-options: {}\n",
        server.url, server.login, server.password, server.options
    ));
    (env, url)
}

#[test]
fn key_round_trip_on_garage() {
    let (env, url) = s3_env(&common::s3_server("GARAGE"));
    key_round_trip(&env, &url);
}

#[test]
fn key_round_trip_on_moto() {
    let (env, url) = s3_env(&common::s3_server("MOTO"));
    key_round_trip(&env, &url);
}

#[test]
fn mkfs_writes_superblock_key_copies_and_metadata() {
    let env = Env::new("");
    let url = format!("local://{}/store", env.dir.path().display());
    assert_exit(
        &env.run(MKFS, &["-L", "backups", "--data-block-size", "512", &url], "pw\n"),
        0,
        "mkfs",
    );
    let store = s3fs::store::local::LocalStore::open(&env.dir.path().join("store")).unwrap();
    let keys: Vec<String> = block_on(list_all(&store, ""))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    for k in names::KEY_COPIES.iter().chain([&names::PARAMS]) {
        assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
    }
    assert!(keys.iter().any(|k| k.starts_with("s3fs_params_")), "versioned params");
    assert!(
        keys.iter().any(|k| k.starts_with(names::META_PREFIX)),
        "metadata chunks"
    );
    let auth = env.authfile();
    let conn = fs_store::connect(
        &url,
        &ConnectOptions {
            authfile: Some(&auth),
            backend_options: None,
        },
        &mut Answers(vec![]),
    )
    .unwrap();
    let p = block_on(fs_store::open_filesystem(
        &conn,
        Compression::default(),
        &mut Answers(vec!["pw".into()]),
    ))
    .unwrap()
    .params;
    assert_eq!(
        (p.label.as_str(), p.data_block_size, p.encrypted),
        ("backups", 512 * 1024, true)
    );
    // Objects are encrypted: the superblock's text does not appear in the store.
    let raw = std::fs::read(env.dir.path().join("store/s3fs_params")).unwrap();
    assert!(!raw.windows(7).any(|w| w == b"backups"), "superblock stored in clear");
    // The temporary DB was removed from the cache directory.
    let left: Vec<_> = std::fs::read_dir(env.cachedir()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn plain_filesystem_has_no_key_and_no_passphrase() {
    let env = Env::new("");
    let url = format!("local://{}/store", env.dir.path().display());
    assert_exit(&env.run(MKFS, &["--plain", &url], ""), 0, "mkfs --plain");
    assert!(!env.dir.path().join("store/s3fs_key").exists());
    let raw = std::fs::read(env.dir.path().join("store/s3fs_params")).unwrap();
    let plain = s3fs::codec::Codec::new(None, Compression::default())
        .decode("s3fs_params", &raw)
        .unwrap();
    assert!(
        plain.windows(8).any(|w| w == b"revision"),
        "a plain superblock decodes without a key"
    );
    let o = env.run(ADM, &["passphrase", &url], "");
    assert_exit(&o, 1, "passphrase on a plain filesystem");
    assert!(stderr(&o).contains("not encrypted"), "{}", stderr(&o));
    check_filesystem(&env, &url, "unused");
}

#[test]
fn passphrase_from_authinfo_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("local://{}/store", dir.path().display());
    let env = Env::new(&format!("[fs]\nstorage-url: {url}\nfs-passphrase: from file\n"));
    assert_exit(
        &env.run(MKFS, &[&url], "from file\n"),
        0,
        "mkfs (never reads the new passphrase from authinfo2)",
    );
    // Only the new passphrase is read from stdin; the old one comes from authinfo2.
    assert_exit(&env.run(ADM, &["passphrase", &url], "changed\n"), 0, "passphrase");
}

#[test]
fn insecure_authinfo_is_refused_with_exit_12() {
    let env = Env::new("[a]\nstorage-url: local://\n");
    std::fs::set_permissions(env.authfile(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = format!("local://{}/store", env.dir.path().display());
    let o = env.run(MKFS, &["--plain", &url], "");
    assert_exit(&o, 12, "group-readable authinfo2");
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
}

#[test]
fn bad_input_gives_documented_exit_codes() {
    let env = Env::new("");
    let url = format!("local://{}/store", env.dir.path().display());
    assert_exit(
        &env.run(MKFS, &["--backend-options", "no-ssl", &url], ""),
        3,
        "backend option on local://",
    );
    assert_exit(&env.run(MKFS, &["ftp://x/y"], ""), 2, "unknown scheme");
    assert_exit(
        &env.run(MKFS, &["--compress", "lzma-9", "--plain", &url], ""),
        2,
        "unknown compression",
    );
    let no_input = env.run(MKFS, &[&url], "");
    assert_exit(&no_input, 41, "passphrase needed but stdin is empty");
    // A new passphrase is never read from authinfo2: the message must not send the
    // user there.
    assert!(
        stderr(&no_input).contains("new passphrase needed") && !stderr(&no_input).contains("authinfo2"),
        "{}",
        stderr(&no_input)
    );
    assert_exit(&env.run(MKFS, &[&url], "\n"), 2, "empty passphrase");
    assert_exit(
        &env.run(
            ADM,
            &["passphrase", &format!("local://{}/missing", env.dir.path().display())],
            "",
        ),
        16,
        "missing directory",
    );
    assert_exit(&env.run(ADM, &["passphrase", &url], ""), 18, "no filesystem there");
    let clap_error = env.run(MKFS, &["--no-such-flag", &url], "");
    assert_eq!(code(&clap_error), 2, "unknown command-line option");
    let bad_key = Env::new("[a]\nstorage-url: local://\nbackend-pasword: x\n");
    assert_exit(&bad_key.run(MKFS, &["--plain", &url], ""), 2, "unknown authinfo2 key");
}

/// Swapping or damaging stored objects is detected when the filesystem is opened.
#[test]
fn tampered_objects_are_detected() {
    let env = Env::new("");
    let url = format!("local://{}/store", env.dir.path().display());
    assert_exit(&env.run(MKFS, &[&url], "pw\n"), 0, "mkfs");
    let store = env.dir.path().join("store");
    let chunk = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with(names::META_PREFIX))
        .unwrap();
    // Put a metadata chunk where the superblock should be: same key, wrong name → corrupt.
    let params = std::fs::read(store.join("s3fs_params")).unwrap();
    std::fs::copy(store.join(&chunk), store.join("s3fs_params")).unwrap();
    let o = env.run(ADM, &["passphrase", &url], "pw\nnew\n");
    assert_exit(&o, 1, "swapped superblock");
    assert!(
        stderr(&o).contains("s3fs_params") && stderr(&o).contains("corrupt"),
        "{}",
        stderr(&o)
    );
    std::fs::write(store.join("s3fs_params"), params).unwrap();
    // A damaged key copy is skipped in favour of an intact one.
    let mut k = std::fs::read(store.join("s3fs_key")).unwrap();
    k[20] ^= 1;
    std::fs::write(store.join("s3fs_key"), k).unwrap();
    assert_exit(
        &env.run(ADM, &["passphrase", &url], "pw\nnew\n"),
        0,
        "one damaged key copy",
    );
}
