//! The superblock (`s3fs_params`): what a filesystem is and which metadata version is
//! current. Stored through the codec (so it is authenticated, and encrypted on encrypted
//! filesystems) as `s3fs_params` and, per retained metadata version, `s3fs_params_<seq>`.

use serde::{Deserialize, Serialize};

use crate::exit::{Error, ExitCode};

/// On-store format revision written by this version of s3fs.
///
/// 2: blocks may be segments of packs (several blocks in one object, each encoded on
///    its own and fetched with a ranged GET). A release that knows only revision 1
///    would read a pack as one block, so it must refuse the filesystem: a writer
///    ([`Params::upgrade`]) raises the revision before it stores anything.
pub const FS_REVISION: u32 = 2;
/// The oldest revision this version of s3fs reads (and upgrades when it writes).
pub const OLDEST_REVISION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Format revision; a newer one than [`FS_REVISION`] is refused (exit 33).
    pub revision: u32,
    /// Random id, so local caches of one filesystem are never mistaken for another's.
    pub uuid: String,
    pub label: String,
    pub encrypted: bool,
    /// Maximum size of a file data block, fixed at mkfs.
    pub data_block_size: u64,
    /// Size of the metadata DB chunks in the store, fixed at mkfs.
    pub metadata_block_size: u64,
    /// Metadata version; only ever increases. Starts at the mkfs time in seconds, so a
    /// filesystem made anew at the same URL is always newer than any stale local cache.
    pub seq: u64,
    /// Size and SHA-256 (hex) of the metadata DB of version `seq`.
    pub db_size: u64,
    pub db_sha256: String,
    pub is_mounted: bool,
    pub needs_fsck: bool,
    /// Unix times in seconds.
    pub created: i64,
    pub last_fsck: i64,
    pub last_modified: i64,
}

/// Block sizes a filesystem may have, in KiB: what mkfs.s3fs takes, and so what a
/// superblock may say.
pub const BLOCK_SIZES_KIB: std::ops::RangeInclusive<u64> = 4..=65536;
/// [`BLOCK_SIZES_KIB`] in bytes.
pub const BLOCK_SIZES: std::ops::RangeInclusive<u64> =
    (*BLOCK_SIZES_KIB.start() << 10)..=(*BLOCK_SIZES_KIB.end() << 10);
/// Largest metadata database accepted: it is downloaded to disk, so this bounds what a
/// superblock can make us write, not what we hold in memory.
pub const MAX_DB_SIZE: u64 = 1 << 40;

impl Params {
    /// Largest superblock read from the store or the cache directory.
    pub const MAX_JSON_LEN: u64 = 64 << 10;

    /// Check every number and string a superblock from the store could use against
    /// what this s3fs writes: a zero chunk size divided by zero, a huge one would be
    /// allocated. The message says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !BLOCK_SIZES.contains(&self.data_block_size) {
            return Err(format!("data block size {} is out of range", self.data_block_size));
        }
        if !BLOCK_SIZES.contains(&self.metadata_block_size) {
            return Err(format!(
                "metadata block size {} is out of range",
                self.metadata_block_size
            ));
        }
        if self.db_size > MAX_DB_SIZE {
            return Err(format!("metadata size {} is out of range", self.db_size));
        }
        if self.db_sha256.len() != 64 || !self.db_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("metadata checksum is not a SHA-256".into());
        }
        if self.uuid.is_empty() || self.uuid.len() > 64 || !self.uuid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("uuid is malformed".into());
        }
        if self.label.len() > 256 {
            return Err("label is longer than 256 bytes".into());
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("params serialize")
    }

    /// Parse, refusing revisions this version cannot handle and values out of range
    /// ([`Params::validate`]).
    pub fn from_json(bytes: &[u8]) -> Result<Params, Error> {
        #[derive(Deserialize)]
        struct Rev {
            revision: u32,
        }
        let rev: Rev = serde_json::from_slice(bytes)
            .map_err(|e| Error::new(ExitCode::Failure, format!("superblock is unreadable: {e}")))?;
        if rev.revision > FS_REVISION {
            return Err(Error::new(
                ExitCode::RevisionTooNew,
                format!(
                    "filesystem revision {} is newer than this s3fs supports ({FS_REVISION}); upgrade s3fs",
                    rev.revision
                ),
            ));
        }
        if rev.revision < OLDEST_REVISION {
            return Err(Error::new(
                ExitCode::RevisionTooOld,
                format!("filesystem revision {} is too old for this s3fs", rev.revision),
            ));
        }
        let params: Params = serde_json::from_slice(bytes)
            .map_err(|e| Error::new(ExitCode::Failure, format!("superblock is unreadable: {e}")))?;
        params
            .validate()
            .map_err(|e| Error::new(ExitCode::Failure, format!("superblock is invalid: {e}")))?;
        Ok(params)
    }
}

impl Params {
    /// Raise the revision to [`FS_REVISION`] before the filesystem is written to (mount,
    /// fsck): from then on, releases that cannot read what this one writes refuse it
    /// (exit 33) instead of misreading it. Returns the revision it had.
    pub fn upgrade(&mut self) -> u32 {
        let old = self.revision;
        if old < FS_REVISION {
            log::info!(
                "upgrading the filesystem from revision {old} to {FS_REVISION}: s3fs releases \
                 older than this one will refuse it"
            );
            self.revision = FS_REVISION;
        }
        old
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Params {
        Params {
            revision: FS_REVISION,
            uuid: "u".into(),
            label: "l".into(),
            encrypted: true,
            data_block_size: 1 << 20,
            metadata_block_size: 64 << 10,
            seq: 5,
            db_size: 10,
            db_sha256: "ab".repeat(32),
            is_mounted: false,
            needs_fsck: false,
            created: 1,
            last_fsck: 1,
            last_modified: 1,
        }
    }

    #[test]
    fn round_trip_and_revision_checks() {
        let p = sample();
        assert_eq!(Params::from_json(&p.to_json()).unwrap(), p);
        let newer = Params {
            revision: FS_REVISION + 1,
            ..sample()
        };
        assert_eq!(
            Params::from_json(&newer.to_json()).unwrap_err().code,
            ExitCode::RevisionTooNew
        );
        let older = Params {
            revision: 0,
            ..sample()
        };
        assert_eq!(
            Params::from_json(&older.to_json()).unwrap_err().code,
            ExitCode::RevisionTooOld
        );
        // Revision 1 (before packs) is read, and raised by a writer.
        let before_packs = Params {
            revision: 1,
            ..sample()
        };
        let mut read = Params::from_json(&before_packs.to_json()).unwrap();
        assert_eq!(read.upgrade(), 1);
        assert_eq!(read.revision, FS_REVISION);
        assert_eq!(read.upgrade(), FS_REVISION);
    }

    /// Values from the store that crashed or exhausted the mount are refused at parse.
    #[test]
    fn out_of_range_values_are_refused() {
        let bad = [
            Params {
                metadata_block_size: 0,
                ..sample()
            },
            Params {
                data_block_size: 0,
                ..sample()
            },
            Params {
                data_block_size: 1 << 40,
                ..sample()
            },
            Params {
                db_size: u64::MAX,
                ..sample()
            },
            Params {
                db_sha256: "x".into(),
                ..sample()
            },
            Params {
                uuid: "../../etc".into(),
                ..sample()
            },
            Params {
                label: "l".repeat(10_000),
                ..sample()
            },
        ];
        for p in bad {
            let e = Params::from_json(&p.to_json()).unwrap_err();
            assert!(e.message.contains("superblock is invalid"), "{p:?}: {}", e.message);
        }
    }
}
