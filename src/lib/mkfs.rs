//! mkfs.s3fs: create a filesystem.

use std::io::Write;

use crate::cli::MkfsArgs;
use crate::codec::Codec;
use crate::config::{self, SecretSource};
use crate::crypto::MasterKey;
use crate::exit::{Error, ExitCode};
use crate::fs_store::{self, ConnectOptions, FsStore, names};
use crate::meta::{chunks, schema};
use crate::params::{FS_REVISION, Params, unix_now};
use crate::runtime::block_on;
use crate::store::{PutMode, StorageUrl};

/// Create the filesystem; progress and the master key go to `out`.
pub fn run(args: &MkfsArgs, secrets: &mut dyn SecretSource, out: &mut dyn Write) -> Result<(), Error> {
    // A local store is a directory we may create; a bucket must exist already.
    if let StorageUrl::Local { path } = StorageUrl::parse(&args.storage_url)? {
        std::fs::create_dir_all(&path).map_err(|e| {
            Error::new(
                ExitCode::AccessDenied,
                format!("cannot create directory {}: {e}", path.display()),
            )
        })?;
    }
    let opts = ConnectOptions {
        authfile: args.store.authfile.as_deref(),
        backend_options: args.store.backend_options.as_deref(),
    };
    let conn = fs_store::connect(&args.storage_url, &opts, secrets)?;
    let compression = config::compression(args.compress.as_deref(), conn.auth.compress.as_deref())?;
    let cachedir = config::cache_dir(args.store.cachedir.as_deref(), &conn.auth)?;
    let parallel = args
        .store
        .max_connections
        .or(conn.auth.max_connections.map(|n| n as u16))
        .unwrap_or(32) as usize;

    if block_on(fs_store::has_filesystem(conn.store.as_ref()))? {
        return Err(Error::new(
            ExitCode::Failure,
            format!(
                "refusing to overwrite the existing filesystem at {} (delete it first with `s3fsadm clear`)",
                conn.url
            ),
        ));
    }
    if conn.url.scheme() == "s3" && matches!(&conn.url, StorageUrl::S3 { bucket, .. } if bucket.contains('.')) {
        log::warn!("bucket names with dots do not work with virtual-hosted TLS certificates on S3");
    }

    let key = if args.plain {
        None
    } else {
        let passphrase = config::ask_new_passphrase(secrets)?;
        let key = MasterKey::generate();
        block_on(fs_store::write_key_copies(conn.store.as_ref(), &key, &passphrase))?;
        Some(key)
    };
    let mut fs = FsStore::new(conn.store.clone(), Codec::new(key.clone(), compression));
    fs.write_for_revision(crate::params::FS_REVISION);

    // Build the empty metadata DB in the cache directory, upload it, then the superblock.
    let now = unix_now();
    let db_path = cachedir.join(format!(
        "{}.mkfs-{}.db",
        config::cache_stem(&conn.url),
        std::process::id()
    ));
    let result = (|| {
        let db = rusqlite::Connection::open(&db_path).map_err(|e| {
            Error::new(
                ExitCode::CacheDirInaccessible,
                format!("cannot create {}: {e}", db_path.display()),
            )
        })?;
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        schema::create_filesystem(&db, uid, gid, now * 1_000_000_000)?;
        db.execute_batch("VACUUM")
            .map_err(|e| Error::new(ExitCode::Failure, format!("metadata database: {e}")))?;
        drop(db);
        let chunk_size = args.metadata_block_size * 1024;
        let seq = now.max(1) as u64;
        let digest = block_on(chunks::upload_all(&fs, &db_path, seq, chunk_size, parallel))?;
        let mut uuid = [0u8; 16];
        getrandom::fill(&mut uuid).map_err(|e| Error::new(ExitCode::Failure, format!("no randomness: {e}")))?;
        let params = Params {
            revision: FS_REVISION,
            uuid: hex::encode(uuid),
            label: args.label.clone(),
            encrypted: key.is_some(),
            data_block_size: args.data_block_size * 1024,
            metadata_block_size: chunk_size,
            seq,
            db_size: digest.size,
            db_sha256: digest.sha256,
            is_mounted: false,
            needs_fsck: false,
            created: now,
            last_fsck: now,
            last_modified: now,
            retention: Default::default(),
        };
        block_on(fs.put(&names::params_version(seq), &params.to_json(), PutMode::Overwrite))?;
        block_on(fs.put(names::PARAMS, &params.to_json(), PutMode::IfNoneMatch))
    })();
    let _ = std::fs::remove_file(&db_path);
    result?;

    let w = |e: std::io::Error| Error::new(ExitCode::Failure, format!("cannot write to standard output: {e}"));
    writeln!(out, "Created s3fs filesystem at {}", conn.url).map_err(w)?;
    if let Some(key) = key {
        writeln!(out, "\nThis is the master key. Print it or write it down and keep it offline, away from the passphrase.\nWith it, `s3fsadm recover-key` restores access if the passphrase is lost.\n\n{}", key.to_printable()).map_err(w)?;
    }
    Ok(())
}
