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
/// 3: unencrypted objects may be in object format 2 (XXH3-128 checksum instead of
///    SHA-256, see [`crate::codec`]), which a release that knows only revision 2 cannot
///    decode. Encrypted filesystems store the same objects as before.
pub const FS_REVISION: u32 = 3;
/// The first revision whose unencrypted objects are written in object format 2.
pub const FAST_CHECKSUM_REVISION: u32 = 3;
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
    /// Which metadata versions the store keeps, and so how long released data stays
    /// restorable. Absent from superblocks written before it existed: the defaults.
    #[serde(default)]
    pub retention: Retention,
}

/// The retention policy of metadata versions (like restic's `forget --keep-*`), set with
/// `s3fsadm retention` and kept in the superblock so that every tool that publishes a
/// version expires the same ones.
///
/// A version is retained if it is one of the newest `keep_last`, or younger than
/// `keep_within_secs`, or the newest of its UTC day among the `keep_daily` newest days
/// that have a version. An object no block references any more is deleted from the
/// store only once no retained version can name it and `min_age_secs` have passed since
/// it was released; until then `s3fsadm restore-metadata` of any retained version
/// gives back every file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub keep_last: u32,
    pub keep_within_secs: u64,
    pub keep_daily: u32,
    pub min_age_secs: u64,
}

/// Defaults: every version of the last 24 hours (an error through the mount, or an
/// attack, is usually noticed the same day), and one a day for a week (last night's
/// backup run and the nights before it); 10 versions at least, as S3QL keeps 10 metadata
/// backups. The cost is the data the filesystem drops in a week, held in the store a
/// week longer; one hour of minimum age gives a reader of a version that just expired
/// (a restore that chose it) time to finish.
impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_last: 10,
            keep_within_secs: 24 * 3600,
            keep_daily: 7,
            min_age_secs: 3600,
        }
    }
}

impl Retention {
    /// Largest accepted values: a superblock from the store must not keep every version
    /// forever by accident of arithmetic, nor overflow a time computation.
    pub const MAX_COUNT: u32 = 100_000;
    pub const MAX_SECS: u64 = 100 * 365 * 86400;

    pub fn validate(&self) -> Result<(), String> {
        if self.keep_last > Self::MAX_COUNT || self.keep_daily > Self::MAX_COUNT {
            return Err(format!("retention counts are limited to {}", Self::MAX_COUNT));
        }
        if self.keep_within_secs > Self::MAX_SECS || self.min_age_secs > Self::MAX_SECS {
            return Err("retention durations are limited to 100 years".into());
        }
        Ok(())
    }

    /// The policy in words, for `s3fsadm retention` and the logs.
    pub fn describe(&self) -> String {
        format!(
            "keep the newest {} versions, every version of the last {}, the newest of each of the last {} days; release data {} after no retained version needs it",
            self.keep_last,
            crate::params::format_duration(self.keep_within_secs),
            self.keep_daily,
            crate::params::format_duration(self.min_age_secs)
        )
    }
}

/// `90` → "1m30s", `86400` → "1d": durations as `parse_duration` takes them.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut left = secs;
    for (unit, len) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= len {
            out.push_str(&format!("{}{unit}", left / len));
            left %= len;
        }
    }
    out
}

/// A duration such as `30`, `90s`, `15m`, `24h`, `7d` or `1d12h`, in seconds (a bare
/// number is seconds); at most 100 years.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a duration (examples: 0, 90s, 15m, 24h, 7d, 1d12h)");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = text.parse::<u64>() {
        return (n <= Retention::MAX_SECS).then_some(n).ok_or_else(bad);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            'd' => 86400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .filter(|&t| t <= Retention::MAX_SECS)
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
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
        self.retention.validate()
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

#[cfg(test)]
impl Params {
    /// A plain superblock of version `seq` with default values, for unit tests.
    pub(crate) fn for_tests(seq: u64) -> Params {
        Params {
            revision: FS_REVISION,
            uuid: "fs".into(),
            label: String::new(),
            encrypted: false,
            data_block_size: 1 << 20,
            metadata_block_size: 65536,
            seq,
            db_size: 0,
            db_sha256: "00".repeat(32),
            is_mounted: false,
            needs_fsck: false,
            created: 0,
            last_fsck: 0,
            last_modified: 0,
            retention: Retention::default(),
        }
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
            retention: Retention::default(),
        }
    }

    #[test]
    fn a_superblock_without_a_retention_policy_gets_the_defaults() {
        let mut json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        json.as_object_mut().unwrap().remove("retention");
        let p = Params::from_json(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(p.retention, Retention::default());
    }

    #[test]
    fn durations_parse_and_format_both_ways() {
        for (text, secs) in [
            ("0", 0),
            ("90", 90),
            ("90s", 90),
            ("15m", 900),
            ("24h", 86400),
            ("7d", 604800),
            ("1d12h", 129600),
        ] {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
            assert_eq!(parse_duration(&format_duration(secs)), Ok(secs), "{text}");
        }
        for bad in [
            "",
            "h",
            "5x",
            "-1",
            "1.5h",
            "12h3",
            "99999999999999999999d",
            "200000000000",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
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
            Params {
                retention: Retention {
                    keep_last: u32::MAX,
                    ..Retention::default()
                },
                ..sample()
            },
            Params {
                retention: Retention {
                    min_age_secs: u64::MAX,
                    ..Retention::default()
                },
                ..sample()
            },
        ];
        for p in bad {
            let e = Params::from_json(&p.to_json()).unwrap_err();
            assert!(e.message.contains("superblock is invalid"), "{p:?}: {}", e.message);
        }
    }
}
