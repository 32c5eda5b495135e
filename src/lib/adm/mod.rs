//! s3fsadm: passphrase change, key recovery, deletion of a filesystem, and the metadata
//! versions ([`metadata`]).

pub mod metadata;

use std::io::Write;

use crate::cli::{AdmAction, AdmArgs};
use crate::codec::{Codec, Compression};
use crate::config::{self, SecretSource};
use crate::crypto::MasterKey;
use crate::exit::{Error, ExitCode};
use crate::fs_store::{self, ConnectOptions, Connection, FsStore, names};
use crate::runtime::block_on;
use crate::store::StorageUrl;

pub fn run(args: &AdmArgs, secrets: &mut dyn SecretSource, out: &mut dyn Write) -> Result<(), Error> {
    let url = args.action.storage_url();
    // Reading a version changes nothing: allowed while mounted.
    if !matches!(args.action, AdmAction::DownloadMetadata { .. }) {
        crate::mount::mounts::refuse_if_mounted_here(&StorageUrl::parse(url)?)?;
    }
    let opts = ConnectOptions {
        authfile: args.store.authfile.as_deref(),
        backend_options: args.store.backend_options.as_deref(),
    };
    let conn = fs_store::connect(url, &opts, secrets)?;
    let w = |e: std::io::Error| Error::new(ExitCode::Failure, format!("cannot write to standard output: {e}"));
    match &args.action {
        AdmAction::Passphrase { .. } => {
            let opened = block_on(fs_store::open_filesystem(&conn, Compression::default(), secrets))?;
            let key = opened.key.ok_or_else(|| {
                Error::new(
                    ExitCode::Failure,
                    "this filesystem is not encrypted; it has no passphrase",
                )
            })?;
            let new = config::ask_new_passphrase(secrets)?;
            block_on(fs_store::write_key_copies(conn.store.as_ref(), &key, &new))?;
            writeln!(out, "Passphrase changed. Anyone who knows the old passphrase and kept a copy of the old key objects can still decrypt the filesystem; the master key itself is unchanged.").map_err(w)?;
        }
        AdmAction::RecoverKey { .. } => {
            let text = secrets.ask("Enter master key: ")?;
            let key =
                MasterKey::parse_printable(&text).map_err(|e| Error::new(ExitCode::BadArgument, e.to_string()))?;
            verify_key(&conn, &key)?;
            let new = config::ask_new_passphrase(secrets)?;
            block_on(fs_store::write_key_copies(conn.store.as_ref(), &key, &new))?;
            writeln!(
                out,
                "Master key verified; the filesystem now opens with the new passphrase."
            )
            .map_err(w)?;
        }
        AdmAction::Clear { .. } => {
            let answer = secrets.ask(&format!(
                "Delete everything under {}? Type \"yes\" to continue: ",
                conn.url
            ))?;
            if answer.trim() != "yes" {
                return Err(Error::new(ExitCode::Aborted, "not deleted: the answer was not \"yes\""));
            }
            let deleted = clear(&conn)?;
            let cachedir = config::cache_dir(args.store.cachedir.as_deref(), &conn.auth)?;
            remove_local_cache(&cachedir, &conn.url)?;
            writeln!(out, "Deleted {deleted} objects from {}.", conn.url).map_err(w)?;
        }
        AdmAction::RestoreMetadata { seq, .. } => metadata::restore(args, &conn, *seq, secrets, out)?,
        AdmAction::DownloadMetadata { seq, output, .. } => metadata::download(args, &conn, *seq, output, secrets, out)?,
        AdmAction::ShrinkDb { .. } => metadata::shrink(args, &conn, secrets, out)?,
        AdmAction::Retention {
            keep_last,
            keep_within,
            keep_daily,
            min_age,
            ..
        } => {
            let change = metadata::RetentionChange {
                keep_last: *keep_last,
                keep_within_secs: *keep_within,
                keep_daily: *keep_daily,
                min_age_secs: *min_age,
            };
            metadata::retention(&conn, &change, secrets, out)?
        }
        AdmAction::ReleaseVersions { .. } => metadata::release_versions(args, &conn, secrets, out)?,
    }
    Ok(())
}

/// A master key is right if it decrypts the superblock.
fn verify_key(conn: &Connection, key: &MasterKey) -> Result<(), Error> {
    let fs = FsStore::new(
        conn.store.clone(),
        Codec::new(Some(key.clone()), Compression::default()),
    );
    match block_on(fs.get_if_exists(names::PARAMS, crate::params::Params::MAX_JSON_LEN)) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::new(
            ExitCode::NoFilesystem,
            format!("no s3fs filesystem at {}", conn.url),
        )),
        Err(e) => Err(Error::new(
            ExitCode::WrongPassphrase,
            format!("this master key does not open the filesystem ({e})"),
        )),
    }
}

/// Delete every object of the filesystem at the URL, page by page, with a progress
/// display: objects named as s3fs names them, not everything the listing of the prefix
/// shows (see [`names::is_filesystem_object`]).
fn clear(conn: &Connection) -> Result<u64, Error> {
    let bar = crate::cli::progress::counter("deleting objects");
    let mut deleted = 0u64;
    let mut listing = crate::store::Listing::new(names::PREFIX);
    // Keys deleted are not listed again; the continuation skips past them.
    while let Some(page) = block_on(listing.next_page(conn.store.as_ref()))? {
        let keys: Vec<String> = page
            .into_iter()
            .map(|o| o.key)
            .filter(|k| names::is_filesystem_object(k))
            .collect();
        if !keys.is_empty() {
            block_on(conn.store.delete_many(&keys))?;
            deleted += keys.len() as u64;
            bar.set_position(deleted);
        }
    }
    bar.finish_and_clear();
    Ok(deleted)
}

fn remove_local_cache(cachedir: &std::path::Path, url: &StorageUrl) -> Result<(), Error> {
    let files = crate::meta::versions::state::LocalFiles::new(cachedir, url);
    let Ok(entries) = std::fs::read_dir(cachedir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if files.owns(&name.to_string_lossy()) {
            let p = e.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|err| {
                Error::new(
                    ExitCode::CacheDirInaccessible,
                    format!("cannot remove {}: {err}", p.display()),
                )
            })?;
        }
    }
    Ok(())
}
