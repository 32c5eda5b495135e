//! The superblock (`s3fs_params`): what a filesystem is and which metadata version is
//! current. Stored through the codec (so it is authenticated, and encrypted on encrypted
//! filesystems) as `s3fs_params` and, per retained metadata version, `s3fs_params_<seq>`.

use serde::{Deserialize, Serialize};

use crate::exit::{Error, ExitCode};

/// On-store format revision written by this version of s3fs.
pub const FS_REVISION: u32 = 1;

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

impl Params {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("params serialize")
    }

    /// Parse, refusing revisions this version cannot handle.
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
        if rev.revision < FS_REVISION {
            return Err(Error::new(
                ExitCode::RevisionTooOld,
                format!("filesystem revision {} is too old for this s3fs", rev.revision),
            ));
        }
        serde_json::from_slice(bytes)
            .map_err(|e| Error::new(ExitCode::Failure, format!("superblock is unreadable: {e}")))
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
            db_sha256: "00".into(),
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
    }
}
