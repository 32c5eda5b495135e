//! The control interface of a mounted filesystem, as S3QL has it: a hidden file
//! [`CTRL_NAME`] that every directory resolves but no directory lists, spoken to with
//! `setxattr` (commands) and `getxattr` (queries). No socket, no extra permissions
//! model: the file belongs to the mounting user, and only that user or root may use it.
//!
//! The tools (`s3fsstat`, `s3fsctrl`, `s3fscp`, `s3fslock`, `s3fsrm`) live in
//! [`crate::tools`]; this module is the mount's side. Commands that need the mount's
//! main loop (a metadata upload) are sent to it as a [`MountRequest`].

use std::collections::VecDeque;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cache::BlockCache;
use crate::fs::{Attr, DbStats, Filesystem, FsError, FsResult};
use crate::served::Served;
use crate::store::metrics::{METRICS, MetricsSnapshot};

/// Name of the control file in every directory.
pub const CTRL_NAME: &str = crate::fs::CONTROL_NAME;
/// Its inode number: far above any id SQLite's AUTOINCREMENT will hand out.
pub const CTRL_INO: u64 = 1 << 62;

/// `setxattr` names (commands) and `getxattr` names (queries) of the control file.
pub mod cmd {
    pub const FLUSHCACHE: &str = "s3fs.flushcache";
    pub const DROPCACHE: &str = "s3fs.dropcache";
    pub const BACKUP_METADATA: &str = "s3fs.backup-metadata";
    pub const SYNC: &str = "s3fs.sync";
    /// Value: the new limit in bytes, decimal.
    pub const CACHESIZE: &str = "s3fs.cachesize";
    /// Start uploading every dirty block now; returns at once (umount.s3fs).
    pub const UPLOAD_NOW: &str = "s3fs.upload-now";
    /// Value: `LEVEL [MODULE…]`, space-separated.
    pub const LOG: &str = "s3fs.log";
    /// Value: `SRC_INO DST_INO`.
    pub const COPY: &str = "s3fs.copy";
    /// Value: `INO`.
    pub const LOCK: &str = "s3fs.lock";
    /// Value: `PARENT_INO ` followed by the raw name bytes.
    pub const RMTREE: &str = "s3fs.rmtree";
    /// Query: the mount process's PID, decimal.
    pub const PID: &str = "s3fs.pid";
    /// Query: [`super::MountStats`] as JSON.
    pub const STAT: &str = "s3fs.stat";
}

/// What the mount's main loop is asked to do.
#[derive(Debug)]
pub enum MountRequest {
    /// Upload the metadata now; report the outcome on `done` if given.
    BackupMetadata { done: Option<Sender<Result<(), String>>> },
}

/// State the main loop shares with the control interface.
#[derive(Debug, Default)]
pub struct MountShared {
    pub last_metadata_upload: Option<SystemTime>,
    pub metadata_seq: u64,
    pub encrypted: bool,
    /// A `--ro` mount of version `metadata_seq`.
    pub read_only: bool,
    /// A follower: when the version served was published, when the store was last
    /// looked at, what failed then, how many times it moved to a newer version.
    pub following: bool,
    pub served_published: i64,
    pub follow_checked: Option<SystemTime>,
    pub follow_error: Option<String>,
    pub switches: u64,
    /// The writer: since when the metadata has changes no published version has
    /// (every follower lags at least that much).
    pub unpublished_since: Option<Instant>,
    /// (when, bytes uploaded so far) samples for the upload rate.
    samples: VecDeque<(Instant, u64)>,
}

/// Window of the upload rate.
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl MountShared {
    pub fn new(metadata_seq: u64, encrypted: bool) -> MountShared {
        MountShared {
            metadata_seq,
            encrypted,
            ..Default::default()
        }
    }

    /// Record the cache's upload counter (the main loop calls this about twice a
    /// second).
    pub fn sample_uploads(&mut self, uploaded_bytes: u64) {
        let now = Instant::now();
        self.samples.push_back((now, uploaded_bytes));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    fn upload_rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, b0)), Some(&(t1, b1))) if t1 > t0 => {
                b1.saturating_sub(b0) as f64 / t1.duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// Everything `s3fsstat` shows. Sizes in bytes, times in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MountStats {
    /// Whether objects are encrypted (a plain filesystem says so here).
    pub encrypted: bool,
    /// Entries, inodes, objects and sizes before and after dedup and compression.
    #[serde(flatten)]
    pub db: DbStats,
    /// Packs, the blocks in them, their bytes and how many are still live.
    #[serde(default)]
    pub packs: crate::meta::blocks::PackTotals,
    /// Blocks moved out of mostly-garbage packs since the mount, and the stored bytes
    /// of the packs that emptied.
    #[serde(default)]
    pub repacked_blocks: u64,
    #[serde(default)]
    pub repack_freed_bytes: u64,
    /// Objects no file uses any more, kept in the store only for retained metadata
    /// versions, and their stored bytes.
    #[serde(default)]
    pub held_objects: u64,
    #[serde(default)]
    pub held_bytes: u64,
    /// The local metadata database, WAL included.
    pub db_bytes: u64,
    pub cache_bytes: u64,
    pub cache_entries: u64,
    pub cache_max_bytes: u64,
    pub dirty_bytes: u64,
    pub dirty_entries: u64,
    /// Age of the least recently written dirty block.
    pub oldest_dirty_secs: Option<f64>,
    /// Blocks waiting for upload or being uploaded.
    pub upload_queue: u64,
    pub uploads_in_flight: u64,
    /// Bytes sent per second over the last few seconds.
    pub upload_rate: f64,
    pub uploaded_bytes: u64,
    pub dedup_hits: u64,
    /// Object deletions not yet done.
    pub pending_removals: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_hit_ratio: Option<f64>,
    /// Writes refused (ENOSPC) because the cache was full while the store was down.
    #[serde(default)]
    pub refused_writes: u64,
    /// Reads of uncached blocks that failed (EIO) because the store was down.
    #[serde(default)]
    pub failed_reads: u64,
    /// Seconds the store has failed every request, while it does.
    #[serde(default)]
    pub store_failing_secs: Option<f64>,
    /// What the last failed store request said.
    #[serde(default)]
    pub store_last_failure: Option<String>,
    pub secs_since_metadata_upload: Option<f64>,
    pub metadata_seq: u64,
    /// A read-only mount (`--ro`) of version `metadata_seq`.
    #[serde(default)]
    pub read_only: bool,
    /// A follower (`--ro` without `--version`): how old the version served is, how
    /// long ago the store was last looked at for a newer one, the last failure, and
    /// the versions moved to since the mount.
    #[serde(default)]
    pub following: Option<FollowStats>,
    /// The writer: seconds its oldest unpublished change has waited (followers see it
    /// only once a version with it is published).
    #[serde(default)]
    pub unpublished_secs: Option<f64>,
    pub mounted_secs: f64,
    pub store: MetricsSnapshot,
    /// FUSE requests received since the mount, by kind (see [`crate::requests`]).
    pub fuse_requests: std::collections::BTreeMap<String, u64>,
}

/// A follower's view of how far behind the writer it may be.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FollowStats {
    /// Seconds since the version served was published.
    pub version_age_secs: f64,
    /// Seconds since the store was last asked for a newer version.
    pub checked_secs_ago: Option<f64>,
    pub last_error: Option<String>,
    /// Newer versions moved to since the mount.
    pub switches: u64,
}

/// What the FUSE adapter must tell the kernel after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidate {
    Nothing,
    /// Drop the cached entry `name` of directory `parent` (and its subtree) and the
    /// parent's cached listing.
    Entry {
        parent: u64,
        name: Vec<u8>,
    },
    /// Drop the cached attributes and pages of an inode (of a directory: its listing).
    Inode(u64),
}

/// The mount's side of the control file.
pub struct Control {
    /// What the mount serves (a follower's changes with each version).
    served: Arc<Served>,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
    started: Instant,
    requests: Sender<MountRequest>,
    shared: Arc<Mutex<MountShared>>,
}

fn einval<T>(what: &str) -> FsResult<T> {
    log::warn!("control: {what}");
    Err(FsError::new(libc::EINVAL))
}

fn number(s: &str) -> FsResult<u64> {
    match s.trim().parse() {
        Ok(n) => Ok(n),
        Err(_) => einval(&format!("not a number: {s:?}")),
    }
}

impl Control {
    pub fn new(served: Arc<Served>, requests: Sender<MountRequest>, shared: Arc<Mutex<MountShared>>) -> Control {
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Control {
            served,
            uid,
            gid,
            mounted_at: SystemTime::now(),
            started: Instant::now(),
            requests,
            shared,
        }
    }

    fn fs(&self) -> Arc<Filesystem> {
        self.served.current().fs.clone()
    }

    fn cache(&self) -> Arc<BlockCache> {
        self.served.current().cache.clone()
    }

    /// Attributes of the control file: an empty regular file of the mounting user.
    pub fn attr(&self) -> Attr {
        let t = self
            .mounted_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Attr {
            ino: CTRL_INO,
            size: 0,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            mode: libc::S_IFREG | 0o600,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: crate::fs::BLKSIZE,
        }
    }

    /// Only the mounting user and root may use the control file.
    fn check_caller(&self, uid: u32) -> FsResult<()> {
        if uid == 0 || uid == self.uid {
            Ok(())
        } else {
            Err(FsError::new(libc::EACCES))
        }
    }

    /// A query.
    pub fn get(&self, uid: u32, name: &[u8]) -> FsResult<Vec<u8>> {
        self.check_caller(uid)?;
        match std::str::from_utf8(name).unwrap_or("") {
            cmd::PID => Ok(std::process::id().to_string().into_bytes()),
            cmd::STAT => Ok(serde_json::to_vec(&self.stats()?).expect("stats serialize")),
            _ => Err(FsError::new(libc::ENODATA)),
        }
    }

    /// A command. Blocks until it is done (flushcache and sync may take long).
    pub fn set(&self, uid: u32, name: &[u8], value: &[u8]) -> FsResult<Invalidate> {
        self.check_caller(uid)?;
        let text = || std::str::from_utf8(value).map_err(|_| FsError::new(libc::EINVAL));
        let cache_err = |e: crate::cache::CacheError| {
            log::error!("control: {e}");
            FsError::new(e.errno())
        };
        match std::str::from_utf8(name).unwrap_or("") {
            cmd::FLUSHCACHE => {
                log::info!("control: uploading every dirty block");
                self.cache().upload_all_unless_store_down().map_err(cache_err)?;
            }
            cmd::DROPCACHE => {
                log::info!("control: uploading every dirty block, then emptying the cache");
                self.cache().upload_all_unless_store_down().map_err(cache_err)?;
                self.cache().drop_clean();
            }
            cmd::BACKUP_METADATA => self.request_backup(false)?,
            cmd::UPLOAD_NOW => self.cache().hurry(),
            cmd::SYNC => {
                log::info!("control: sync (dirty blocks, then the metadata)");
                self.cache().upload_all_unless_store_down().map_err(cache_err)?;
                self.request_backup(true)?;
            }
            cmd::CACHESIZE => {
                let bytes = number(text()?)?;
                log::info!("control: cache limit set to {} MiB", bytes >> 20);
                self.cache().set_max_bytes(bytes);
            }
            cmd::LOG => {
                let mut words = text()?.split_whitespace();
                let level = words.next().and_then(crate::logging::parse_level);
                let Some(level) = level else {
                    return einval("log: expected LEVEL [MODULE...]");
                };
                let modules: Vec<String> = words.map(str::to_owned).collect();
                crate::logging::set_level(level, &modules);
                log::warn!("control: log level {level}, debug modules {modules:?}");
            }
            cmd::COPY => {
                let v = text()?;
                let mut it = v.split_whitespace();
                let (Some(src), Some(dst), None) = (it.next(), it.next(), it.next()) else {
                    return einval("copy: expected SRC_INO DST_INO");
                };
                let (src, dst) = (number(src)?, number(dst)?);
                let t = Instant::now();
                let r = self.fs().copy_tree(src, dst)?;
                log::info!(
                    "control: copied inode {src} to {dst}: {} inodes, {} entries in {:.1?}",
                    r.inodes,
                    r.entries,
                    t.elapsed()
                );
                return Ok(Invalidate::Inode(dst));
            }
            cmd::LOCK => {
                let ino = number(text()?)?;
                let n = self.fs().lock_tree(ino)?;
                log::info!("control: locked inode {ino} and what is below it ({n} inodes)");
            }
            cmd::RMTREE => {
                let Some(space) = value.iter().position(|&b| b == b' ') else {
                    return einval("rmtree: expected PARENT_INO NAME");
                };
                let parent = number(std::str::from_utf8(&value[..space]).unwrap_or(""))?;
                let name = value[space + 1..].to_vec();
                let t = Instant::now();
                let r = self.fs().remove_tree(parent, &name)?;
                log::info!(
                    "control: removed {} entries under inode {parent} in {:.1?}",
                    r.entries,
                    t.elapsed()
                );
                return Ok(Invalidate::Entry { parent, name });
            }
            other => return einval(&format!("unknown command {other:?}")),
        }
        Ok(Invalidate::Nothing)
    }

    /// Ask the main loop for a metadata upload; with `wait`, until it is in the store.
    fn request_backup(&self, wait: bool) -> FsResult<()> {
        let (tx, rx) = channel();
        let sent = self.requests.send(MountRequest::BackupMetadata {
            done: wait.then_some(tx),
        });
        if sent.is_err() {
            // The main loop is gone: the filesystem is being unmounted.
            return Err(FsError::new(libc::ESHUTDOWN));
        }
        if !wait {
            return Ok(());
        }
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                log::error!("control: metadata upload failed: {e}");
                Err(FsError::new(libc::EIO))
            }
            Err(_) => Err(FsError::new(libc::ESHUTDOWN)),
        }
    }

    /// The numbers for `s3fsstat`: counters, and one scan of the packed blocks on the
    /// read connection.
    pub fn stats(&self) -> FsResult<MountStats> {
        let db = self.fs().db_stats()?.unwrap_or_default();
        let packs = self.fs().pack_totals()?;
        let (held_objects, held_bytes) = self.fs().released_totals()?;
        let c = self.cache().stats();
        let health = self.cache().store_health();
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let lookups = c.hits + c.misses;
        Ok(MountStats {
            encrypted: shared.encrypted,
            db,
            packs,
            repacked_blocks: c.repacked_blocks,
            repack_freed_bytes: c.repack_freed_bytes,
            held_objects,
            held_bytes,
            db_bytes: self.fs().db_file_bytes(),
            cache_bytes: c.bytes,
            cache_entries: c.entries as u64,
            cache_max_bytes: c.max_bytes,
            dirty_bytes: c.dirty_bytes,
            dirty_entries: c.dirty_entries as u64,
            oldest_dirty_secs: c.oldest_dirty.map(|d| d.as_secs_f64()),
            upload_queue: (c.dirty_entries + c.uploads_in_flight) as u64,
            uploads_in_flight: c.uploads_in_flight as u64,
            upload_rate: shared.upload_rate(),
            uploaded_bytes: c.uploaded_bytes,
            dedup_hits: c.dedup_hits,
            pending_removals: c.pending_deletions as u64,
            cache_hits: c.hits,
            cache_misses: c.misses,
            cache_hit_ratio: (lookups > 0).then(|| c.hits as f64 / lookups as f64),
            refused_writes: c.refused_writes,
            failed_reads: c.failed_reads,
            store_failing_secs: health.failing_for.map(|d| d.as_secs_f64()),
            store_last_failure: health.last_failure,
            secs_since_metadata_upload: shared
                .last_metadata_upload
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs_f64()),
            metadata_seq: shared.metadata_seq,
            read_only: shared.read_only,
            following: shared.following.then(|| FollowStats {
                version_age_secs: (crate::params::unix_now() - shared.served_published).max(0) as f64,
                checked_secs_ago: shared
                    .follow_checked
                    .and_then(|t| t.elapsed().ok())
                    .map(|d| d.as_secs_f64()),
                last_error: shared.follow_error.clone(),
                switches: shared.switches,
            }),
            unpublished_secs: shared.unpublished_since.map(|t| t.elapsed().as_secs_f64()),
            mounted_secs: self.started.elapsed().as_secs_f64(),
            store: METRICS.snapshot(),
            fuse_requests: crate::requests::snapshot(),
        })
    }
}
