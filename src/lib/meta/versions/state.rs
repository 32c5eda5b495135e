//! Which metadata a mount starts from, and the local files that remember it.
//!
//! In the cache directory, each filesystem (storage URL) has `<stem>.params` (the
//! superblock as of the local DB), `<stem>.db` (the metadata DB, primary while mounted),
//! `<stem>.chunks` (chunk hashes of the last metadata upload) and `<stem>-cache/` (the
//! block cache). The local params are written atomically whenever the local DB moves
//! to a new version, so comparing them with the store's tells what happened since.

use std::path::{Path, PathBuf};

use crate::config::cache_stem;
use crate::exit::{Error, ExitCode};
use crate::params::Params;
use crate::store::StorageUrl;

/// Paths of one filesystem's local files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFiles {
    pub params: PathBuf,
    pub db: PathBuf,
    pub chunks: PathBuf,
    pub cache: PathBuf,
}

impl LocalFiles {
    pub fn new(cachedir: &Path, url: &StorageUrl) -> LocalFiles {
        let stem = cache_stem(url);
        LocalFiles {
            params: cachedir.join(format!("{stem}.params")),
            db: cachedir.join(format!("{stem}.db")),
            chunks: cachedir.join(format!("{stem}.chunks")),
            cache: cachedir.join(format!("{stem}-cache")),
        }
    }

    /// Whether `file_name`, in the cache directory, is one of the files s3fs keeps there
    /// for this filesystem (those above and their temporary, journal and set-aside
    /// companions). Exact, not a prefix test: the stems of `…/p` and `…/p-2` or
    /// `…/p.old` are prefixes of each other, and `s3fsadm clear` must not touch another
    /// filesystem's files.
    pub fn owns(&self, file_name: &str) -> bool {
        let stem = self
            .db
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".db"))
            .unwrap_or_default();
        let Some(rest) = file_name.strip_prefix(stem) else {
            return false;
        };
        const EXACT: &[&str] = &[
            ".db",
            ".db-wal",
            ".db-shm",
            ".db-journal",
            ".db.restore",
            ".params",
            ".params.tmp",
            ".chunks",
            ".tmp",
            ".snapshot",
            ".snapshot-journal",
            ".download",
            "-cache",
        ];
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let stamped = |rest: &str, prefix: &str, tails: &[&str]| {
            rest.strip_prefix(prefix)
                .is_some_and(|r| tails.iter().any(|t| r.strip_suffix(t).is_some_and(&digits)))
        };
        EXACT.contains(&rest)
            || stamped(rest, ".db.bak-", &["", "-wal", "-shm"])
            || stamped(rest, "-cache.bak-", &[""])
            || stamped(rest, ".mkfs-", &[".db", ".db-journal"])
    }

    /// The local superblock, if there is a readable one.
    pub fn read_params(&self) -> Option<Params> {
        let raw = std::fs::read(&self.params).ok()?;
        match Params::from_json(&raw) {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("ignoring unreadable {}: {e}", self.params.display());
                None
            }
        }
    }

    /// Write the local superblock atomically and durably.
    pub fn write_params(&self, params: &Params) -> Result<(), Error> {
        let tmp = self.params.with_extension("params.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&params.to_json())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.params)?;
            if let Some(dir) = self.params.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            Error::new(
                ExitCode::CacheDirInaccessible,
                format!("cannot write {}: {e}", self.params.display()),
            )
        })
    }
}

/// Where a mount's metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The local DB is the newest version: use it as it is.
    Local,
    /// Download the store's current version (first mount on this host, an empty cache
    /// directory, or the filesystem was used elsewhere since); the local block cache is
    /// stale and must be discarded.
    Download,
}

/// Decide how to start, or refuse with S3QL's exit codes: 30 when fsck must run first,
/// 31 when the filesystem is mounted elsewhere.
pub fn decide(remote: &Params, local: Option<&Params>) -> Result<Start, Error> {
    let fsck = |why: &str| {
        Error::new(
            ExitCode::NeedsFsck,
            format!("{why}; run fsck.s3fs on this machine with the same cache directory first"),
        )
    };
    // A local copy of a different filesystem at the same URL means nothing here.
    let local = local.filter(|l| l.uuid == remote.uuid);
    if let Some(l) = local {
        if l.is_mounted {
            return Err(fsck("the filesystem was not unmounted cleanly on this machine"));
        }
        if l.seq > remote.seq {
            return Err(fsck(
                "the local metadata is newer than the store's (an upload was interrupted, or the store's superblock was rolled back)",
            ));
        }
    }
    if remote.needs_fsck {
        return Err(fsck("the filesystem is marked as needing a check"));
    }
    if remote.is_mounted {
        return Err(Error::new(
            ExitCode::MountedElsewhere,
            "the filesystem is mounted on another machine, or was not unmounted cleanly there: unmount it there, or run fsck.s3fs there",
        ));
    }
    match local {
        Some(l) if l.seq == remote.seq => Ok(Start::Local),
        _ => Ok(Start::Download),
    }
}

/// Refuse (exit 47) a store that contradicts what is known of the filesystem, before
/// anything is read from it or written to it:
///
/// - `local`, this machine's superblock of the URL (of any filesystem there), says it
///   was encrypted and the store's superblock says it is not: someone who can write to
///   the bucket can delete the keys and put a plain filesystem there;
/// - the store is clean but lists a metadata version newer than its superblock's
///   (`newest_listed`): the superblock was rolled back (object versioning, a restored
///   bucket), and new objects would reuse the ids of newer ones.
///
/// A whole bucket restored to an older state on a host that never saw a newer one
/// cannot be told from the real thing (README, "What s3fs refuses").
pub fn check_store(
    remote: &Params,
    local: Option<&Params>,
    local_path: &Path,
    newest_listed: Option<u64>,
) -> Result<(), Error> {
    if let Some(l) = local
        && l.encrypted
        && !remote.encrypted
    {
        return Err(Error::new(
            ExitCode::Tampered,
            format!(
                "the filesystem at this URL was encrypted when this machine last used it, but the store's superblock says it is not encrypted: someone with access to the bucket may have replaced it; refusing to use it (if you made it anew without encryption on purpose, delete {})",
                local_path.display()
            ),
        ));
    }
    if let Some(newest) = newest_listed
        && newest > remote.seq
        && !remote.is_mounted
        && !remote.needs_fsck
    {
        return Err(Error::new(
            ExitCode::Tampered,
            format!(
                "the store holds metadata version {newest}, newer than its superblock's version {}: the superblock was rolled back (object versioning, a restored bucket?), and using it would overwrite newer data; refusing. Run fsck.s3fs on the machine that last mounted the filesystem, or make a version current on purpose with `s3fsadm restore-metadata`",
                remote.seq
            ),
        ));
    }
    Ok(())
}

/// The local cache belongs to older metadata: keep it aside if it holds dirty blocks
/// (the user may want them), delete it otherwise, and forget the local DB's files.
pub fn retire_local_cache(files: &LocalFiles) -> Result<(), Error> {
    let dirty = std::fs::read_dir(&files.cache)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".dirty"))
        })
        .unwrap_or(false);
    if dirty {
        // Appended, not with_extension: a stem with a dot (`…/p.old`) has an extension.
        let aside = std::path::PathBuf::from(format!("{}.bak-{}", files.cache.display(), crate::params::unix_now()));
        std::fs::rename(&files.cache, &aside).map_err(|e| {
            Error::new(
                ExitCode::CacheDirInaccessible,
                format!("cannot move {} aside: {e}", files.cache.display()),
            )
        })?;
        log::warn!(
            "the local cache held blocks newer than the store's metadata; they were moved to {} (delete it when you no longer need them)",
            aside.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&files.cache);
    }
    for stale in [
        files.chunks.clone(),
        files.db.with_extension("db-wal"),
        files.db.with_extension("db-shm"),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(seq: u64) -> Params {
        Params::for_tests(seq)
    }

    #[test]
    fn clean_local_copy_of_the_current_version_is_used() {
        assert_eq!(decide(&p(5), Some(&p(5))).unwrap(), Start::Local);
    }

    #[test]
    fn missing_older_or_foreign_local_copies_are_downloaded_again() {
        assert_eq!(decide(&p(5), None).unwrap(), Start::Download);
        assert_eq!(decide(&p(5), Some(&p(4))).unwrap(), Start::Download);
        let foreign = Params {
            uuid: "other".into(),
            seq: 9,
            is_mounted: true,
            ..p(9)
        };
        assert_eq!(decide(&p(5), Some(&foreign)).unwrap(), Start::Download);
    }

    #[test]
    fn crashes_need_fsck_and_mounts_elsewhere_are_refused() {
        let crashed = Params {
            is_mounted: true,
            ..p(5)
        };
        let e = decide(
            &Params {
                is_mounted: true,
                ..p(5)
            },
            Some(&crashed),
        )
        .unwrap_err();
        assert_eq!(e.code, ExitCode::NeedsFsck);
        assert!(e.message.contains("fsck.s3fs"), "{}", e.message);
        assert_eq!(decide(&p(5), Some(&p(6))).unwrap_err().code, ExitCode::NeedsFsck);
        assert_eq!(
            decide(
                &Params {
                    needs_fsck: true,
                    ..p(5)
                },
                None
            )
            .unwrap_err()
            .code,
            ExitCode::NeedsFsck
        );
        assert_eq!(
            decide(
                &Params {
                    is_mounted: true,
                    ..p(5)
                },
                None
            )
            .unwrap_err()
            .code,
            ExitCode::MountedElsewhere
        );
        assert_eq!(
            decide(
                &Params {
                    is_mounted: true,
                    ..p(5)
                },
                Some(&p(5))
            )
            .unwrap_err()
            .code,
            ExitCode::MountedElsewhere
        );
    }

    #[test]
    fn only_a_filesystems_own_files_are_its_own() {
        let dir = Path::new("/c");
        let p = LocalFiles::new(dir, &StorageUrl::parse("s3c://h/bucket/p").unwrap());
        let stem = |url: &str| cache_stem(&StorageUrl::parse(url).unwrap());
        let mine = stem("s3c://h/bucket/p");
        for suffix in [
            ".db",
            ".db-wal",
            ".params",
            ".chunks",
            "-cache",
            ".db.bak-1796000000",
            ".mkfs-42.db",
        ] {
            assert!(p.owns(&format!("{mine}{suffix}")), "{suffix}");
        }
        for other in ["s3c://h/bucket/p-2", "s3c://h/bucket/p.old", "s3c://h/bucket/p.db"] {
            let theirs = stem(other);
            for suffix in [".db", ".db-wal", ".params", "-cache", ".db.bak-1"] {
                assert!(!p.owns(&format!("{theirs}{suffix}")), "{other} {suffix}");
            }
        }
        assert!(!p.owns(&format!("{mine}.db.bak-x")));
        assert!(!p.owns("authinfo2"));
    }

    #[test]
    fn local_params_are_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path(), &StorageUrl::parse("local:///x/y").unwrap());
        assert!(files.read_params().is_none());
        files.write_params(&p(7)).unwrap();
        assert_eq!(files.read_params(), Some(p(7)));
        std::fs::write(&files.params, b"garbage").unwrap();
        assert!(files.read_params().is_none());
        assert!(files.db.to_string_lossy().ends_with(".db") && !files.cache.to_string_lossy().contains("//"));
    }
}
