//! Serving a mounted filesystem until it is unmounted: the FUSE session, the main loop
//! (signals, control-file requests, metadata uploads, repacking, a follower's moves to
//! newer versions) and the unmount, for the writer ([`super::run`]) and read-only
//! mounts ([`super::read_only`]) alike.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::signals::wait_signal;
use crate::cache::{BlockCache, CacheConfig};
use crate::cli::MountArgs;
use crate::control::{Control, MountRequest, MountShared};
use crate::daemon::Reporter;
use crate::exit::{Error, ExitCode};
use crate::fs::Filesystem;
use crate::fs_store::FsStore;
use crate::meta::chunks::{self, ChunkHashes};
use crate::meta::versions;
use crate::meta::versions::state::LocalFiles;
use crate::params::Params;
use crate::served::{Generation, Served};

/// A follower's step, called by the main loop about five times a second (see
/// `read_only::Follower::tick`).
pub type FollowTick = Box<dyn FnMut(&Served, &Mutex<MountShared>) + Send>;

/// Everything a mounted filesystem consists of.
pub(super) struct Mounted {
    pub fs_store: FsStore,
    pub files: LocalFiles,
    pub params: Params,
    pub hashes: ChunkHashes,
    pub fs: Arc<Filesystem>,
    pub cache: Arc<BlockCache>,
    pub parallel: usize,
    /// `--ro` (see [`super::read_only`]): nothing is published, uploaded or deleted.
    pub read_only: bool,
    /// The generation of `fs` and `cache`, if it has a finishing step of its own (a
    /// follower's removes its files); else one is made of them.
    pub first_generation: Option<Generation>,
    /// A follower's step (`--ro` without `--version`).
    pub follower: Option<FollowTick>,
    /// `total_changes()` of the DB when the last published version was snapshotted:
    /// more means unpublished changes.
    pub published_changes: u64,
    /// A version was published since old ones were last expired: expired at the end of
    /// the main loop's turn, after the reply to a waiting `s3fsctrl sync`.
    pub expire_due: bool,
}

/// With --publish-after, how long a publish waits for the dirty blocks to be uploaded
/// before it goes ahead without them.
const PUBLISH_WAIT_MAX: Duration = Duration::from_secs(60);

/// How often the mount looks for packs worth repacking (and, if it finds some, repacks
/// one round and publishes a metadata version).
const REPACK_INTERVAL: Duration = Duration::from_secs(600);

impl Mounted {
    /// Rows changed through the DB connection since it was opened.
    fn db_changes(&self) -> u64 {
        self.fs.db().lock().unwrap_or_else(|e| e.into_inner()).total_changes()
    }

    /// Upload a new metadata version; `mounted` is what its params say. While mounted,
    /// a repack round runs first. Data that only expired versions needed is deleted
    /// first (see [`versions::before_publish`]).
    fn backup_metadata(&mut self, mounted: bool) -> Result<(), Error> {
        if mounted && let Err(e) = self.cache.repack() {
            log::warn!("repacking failed (will retry at the next metadata upload): {e}");
        }
        versions::before_publish(&self.fs_store, &self.fs.db(), self.params.seq, &self.params.retention)?;
        self.fs
            .sync_metadata()
            .map_err(|e| Error::new(ExitCode::Failure, format!("metadata database: {e}")))?;
        self.published_changes = self.db_changes();
        let snap = self.files.db.with_extension("snapshot");
        chunks::snapshot(&self.files.db, &snap)?;
        let mut next = self.params.clone();
        next.seq += 1;
        next.is_mounted = mounted;
        let published = versions::publish(&self.fs_store, &self.files, &snap, next, &self.hashes, self.parallel);
        let _ = std::fs::remove_file(&snap);
        let published = published?;
        log::info!(
            "metadata version {} uploaded ({} of {} chunks changed)",
            published.params.seq,
            published.chunks_sent,
            published.chunks_total
        );
        self.hashes = published.hashes;
        self.params = published.params;
        self.expire_due = true;
        Ok(())
    }

    /// Expire the metadata versions the retention policy drops, if a publish made some.
    fn expire_if_due(&mut self) {
        if std::mem::take(&mut self.expire_due) {
            versions::expire_old(&self.fs_store, &self.params.retention);
        }
    }
}

pub(super) fn open_cache(
    args: &MountArgs,
    url: &crate::store::StorageUrl,
    files: &LocalFiles,
    params: &Params,
    fs_store: &FsStore,
    fs: &Filesystem,
    parallel: usize,
) -> Result<Arc<BlockCache>, Error> {
    let mut config = CacheConfig::new(files.cache.clone(), params.data_block_size);
    let (max_bytes, max_entries) = crate::cache::auto_limits(
        &files.cache,
        params.data_block_size,
        parallel,
        args.cachesize.map(|kib| kib.saturating_mul(1024)),
        args.max_cache_entries,
    )?;
    log::info!("cache limits: {} MiB, {max_entries} entries", max_bytes >> 20);
    config.max_bytes = max_bytes;
    config.max_entries = max_entries;
    if let Some(n) = args.max_threads {
        config.max_threads = usize::from(n);
    }
    config.max_connections = parallel;
    config.dirty_upload_delay = Duration::from_secs(args.dirty_block_upload_delay);
    config.upload_full_blocks = url.is_remote();
    config.store_timeout = Duration::from_secs(args.store_timeout);
    // The cache and the namespace share one connection: see the cache's lock order.
    Ok(BlockCache::open(config, fs.db(), files.db.clone(), fs_store.clone())?)
}

pub(super) fn serve(
    args: &MountArgs,
    kernel_options: Vec<fuser::MountOption>,
    canonical_url: &str,
    reporter: &mut Reporter,
    mut m: Mounted,
) -> Result<(), Error> {
    m.fs.attach_cache(m.cache.clone());
    // Totals for s3fsstat: one scan now, kept current by triggers from here on.
    m.fs.enable_stats()?;
    let (requests_tx, requests) = std::sync::mpsc::channel();
    let mut shared = MountShared::new(m.params.seq, m.params.encrypted);
    shared.read_only = m.read_only;
    shared.following = m.follower.is_some();
    shared.served_published = m.params.last_modified;
    let shared = Arc::new(Mutex::new(shared));
    let first = m
        .first_generation
        .take()
        .unwrap_or_else(|| Generation::new(m.fs.clone(), m.cache.clone(), m.params.seq, m.params.last_modified));
    let served = Arc::new(match m.follower {
        Some(_) => Served::following(first),
        None => Served::fixed(first),
    });
    let control = Arc::new(Control::new(served.clone(), requests_tx, shared.clone()));
    let adapter = crate::fuse::Adapter::new(served.clone(), Some(control));
    let notifier = adapter.notifier_slot();
    let mut options = vec![
        // The canonical URL, which s3fsadm looks for in the mount table.
        fuser::MountOption::FSName(args.fs_name.clone().unwrap_or_else(|| canonical_url.to_owned())),
        fuser::MountOption::Subtype("s3fs".into()),
        // The kernel checks modes and ownership as on any local filesystem, for the
        // mounting user too (a 0444 file is read-only, chown needs root), as S3QL does.
        fuser::MountOption::DefaultPermissions,
    ];
    options.extend(kernel_options);
    if m.read_only {
        // The kernel answers every change with EROFS before it reaches the core.
        options.push(fuser::MountOption::RO);
    }
    let acl = if args.allow_other {
        fuser::SessionACL::All
    } else if args.allow_root {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = acl;
    config.n_threads = Some(std::thread::available_parallelism().map_or(4, |n| n.get() * 2).max(4));
    config.clone_fd = true;
    let session = fuser::spawn_mount(adapter, &args.mountpoint, &config).map_err(|e| {
        Error::new(
            ExitCode::MountFailed,
            format!("cannot mount {}: {e}", args.mountpoint.display()),
        )
    })?;
    let _ = notifier.set(session.notifier());
    // The connection's number, to cut off users of a detached mount (see `Ending`).
    let connection = std::fs::metadata(&args.mountpoint)
        .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
        .ok();
    // Unmounted by path later, whatever the working directory is then.
    let mountpoint = std::fs::canonicalize(&args.mountpoint).unwrap_or_else(|_| args.mountpoint.clone());
    log::info!("mounted {canonical_url} on {}", args.mountpoint.display());
    reporter.ready();

    // Serve until the session ends: the kernel ends it once the filesystem is
    // unmounted (by a signal here, umount.s3fs, fusermount -u, umount -l) and its last
    // user is gone. Until then requests may arrive, so the loop keeps answering the
    // control file's requests and backing up metadata whatever happens; only after
    // the session has ended is the filesystem marked clean.
    let interval = Duration::from_secs(args.metadata_backup_interval);
    let publish_after = Duration::from_secs(args.publish_after);
    m.published_changes = m.db_changes();
    let mut last_backup = Instant::now();
    let mut last_repack_check = Instant::now();
    let mut ending: Option<Ending> = None;
    while !session.guard.is_finished() {
        // Woken at once by a control request (a `sync` waits for it), else every 200 ms;
        // an exit signal waits for the next turn.
        let asked = match requests.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => Some(r),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(200));
                None
            }
        };
        if let Some(sig) = wait_signal(Duration::ZERO) {
            match &ending {
                None => ending = Some(Ending::start(sig, &mountpoint)),
                Some(_) => {
                    log::warn!("signal {sig} again: cutting off the processes that still use the filesystem");
                    cut_off(connection);
                }
            }
        }
        if let Some(e) = &mut ending
            && e.grace_over()
        {
            log::warn!(
                "the filesystem is still in use {} s after it was detached: cutting off the processes that use it",
                BUSY_GRACE.as_secs()
            );
            cut_off(connection);
            e.cut_off = true;
        }
        lock_shared(&shared).sample_uploads(m.cache.stats().uploaded_bytes);
        if let Some(tick) = m.follower.as_mut() {
            tick(&served, &shared);
        }
        if !m.read_only {
            // Unpublished changes: how far behind followers are, and, with
            // --publish-after, when to publish for them.
            let changed = m.db_changes() != m.published_changes;
            let since = {
                let mut sh = lock_shared(&shared);
                if !changed {
                    sh.unpublished_since = None;
                } else if sh.unpublished_since.is_none() {
                    sh.unpublished_since = Some(Instant::now());
                }
                sh.unpublished_since
            };
            // Blocks not yet uploaded are not in the metadata (a version would show
            // their files with holes): they go first, unless writes never stop.
            let waited = since
                .map(|t| t.elapsed())
                .filter(|w| !publish_after.is_zero() && *w >= publish_after);
            let c = m.cache.stats();
            let settled = c.dirty_entries == 0 && c.uploads_in_flight == 0;
            if waited.is_some() && !settled {
                m.cache.hurry();
            }
            if waited.is_some_and(|w| settled || w >= publish_after + PUBLISH_WAIT_MAX) {
                let r = m.backup_metadata(true);
                last_backup = Instant::now();
                record_backup(&shared, &m, &r);
                if let Err(e) = r {
                    log::error!("metadata upload for followers failed (will retry): {e}");
                    // Not again before another --publish-after.
                    lock_shared(&shared).unpublished_since = Some(Instant::now());
                }
            }
        }
        // Asked through the control file (s3fsctrl backup-metadata / sync).
        let mut asked = asked;
        while let Some(MountRequest::BackupMetadata { done }) = asked.take().or_else(|| requests.try_recv().ok()) {
            if m.read_only {
                if let Some(done) = done {
                    let _ = done.send(Err("a read-only mount publishes no metadata".into()));
                }
                continue;
            }
            let r = m.backup_metadata(true);
            last_backup = Instant::now();
            record_backup(&shared, &m, &r);
            if let Some(done) = done {
                let _ = done.send(r.map_err(|e| e.to_string()));
            }
        }
        if !m.read_only && last_repack_check.elapsed() >= REPACK_INTERVAL {
            last_repack_check = Instant::now();
            match m.cache.repack_due() {
                Ok(true) => {
                    let r = m.backup_metadata(true);
                    last_backup = Instant::now();
                    record_backup(&shared, &m, &r);
                    if let Err(e) = r {
                        log::error!("metadata upload after repacking failed (will retry): {e}");
                    }
                }
                Ok(false) => {}
                Err(e) => log::warn!("cannot look for packs to repack: {e}"),
            }
        }
        if !m.read_only && !interval.is_zero() && last_backup.elapsed() >= interval {
            let r = m.backup_metadata(true);
            record_backup(&shared, &m, &r);
            if let Err(e) = r {
                log::error!("metadata backup failed (will retry): {e}");
            }
            last_backup = Instant::now();
        }
        m.expire_if_due();
    }
    // No request can reach the filesystem any more.
    if let Err(e) = session.join() {
        log::warn!("FUSE session: {e}");
    }
    drop(requests);
    log::info!("the filesystem is unmounted and no request is in progress");
    if m.read_only {
        m.cache.shutdown();
        served.current().cache.shutdown();
        drop(served);
        log::info!("unmounted the read-only mount of metadata version {}", m.params.seq);
        return Ok(());
    }

    // Everything into the store, then the final metadata version.
    log::info!("uploading dirty blocks");
    m.cache
        .upload_all()
        .map_err(|e| Error::new(ExitCode::Failure, format!("uploading dirty blocks: {e}")))?;
    m.cache.shutdown();
    m.backup_metadata(false)?;
    m.expire_if_due();
    if !args.keep_cache {
        let _ = std::fs::remove_dir_all(&m.files.cache);
    }
    log::info!("unmounted cleanly; metadata version {} is in the store", m.params.seq);
    Ok(())
}

/// How long a mount that a signal asked to end, and that is busy, keeps serving the
/// processes that still use it after it was detached; then they are cut off.
const BUSY_GRACE: Duration = Duration::from_secs(30);

/// A signal asked the mount to end: it is unmounted, or detached if busy.
struct Ending {
    /// When it was detached while busy; `None` once unmounted outright.
    detached: Option<Instant>,
    cut_off: bool,
}

impl Ending {
    fn start(sig: i32, mountpoint: &Path) -> Ending {
        log::info!("signal {sig}: unmounting");
        match super::umount::unmount(mountpoint, false) {
            Ok(()) => Ending {
                detached: None,
                cut_off: false,
            },
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let detached = super::umount::unmount(mountpoint, true);
                match &detached {
                    Ok(()) => log::warn!(
                        "the filesystem is in use: detached it; the processes using it are served for up to {} s more (a second signal cuts them off now), then everything is uploaded",
                        BUSY_GRACE.as_secs()
                    ),
                    Err(e) => log::error!("cannot detach the busy filesystem: {e}"),
                }
                Ending {
                    detached: detached.is_ok().then(Instant::now),
                    cut_off: false,
                }
            }
            Err(e) => {
                // Unmounted already (not a mountpoint), or no permission: the session
                // ends when the kernel is done with the filesystem.
                log::warn!("unmount: {e}");
                Ending {
                    detached: None,
                    cut_off: false,
                }
            }
        }
    }

    fn grace_over(&self) -> bool {
        !self.cut_off && self.detached.is_some_and(|t| t.elapsed() >= BUSY_GRACE)
    }
}

/// Abort the FUSE connection `dev` (the mount's st_dev): every request in the kernel's
/// queue and every later one fails (ENOTCONN), so the session ends. Nothing a process
/// was told succeeded is lost: what it writes from now on fails. Needs root (fusectl).
fn cut_off(dev: Option<u64>) {
    let Some(dev) = dev else {
        log::error!("cannot cut off the filesystem's users: its connection is unknown");
        return;
    };
    const FUSECTL: &str = "/sys/fs/fuse/connections";
    let path = format!("{FUSECTL}/{}/abort", libc::minor(dev));
    if !Path::new(&path).exists() {
        // The fusectl filesystem is usually mounted at boot (systemd does); where it is
        // not, root can mount it: it only shows the FUSE connections.
        let (src, dir, kind) = (c"fusectl", c"/sys/fs/fuse/connections", c"fusectl");
        // SAFETY: mount(2) with NUL-terminated strings and no data.
        let r = unsafe { libc::mount(src.as_ptr(), dir.as_ptr(), kind.as_ptr(), 0, std::ptr::null()) };
        if r != 0 {
            log::debug!("mounting fusectl on {FUSECTL}: {}", std::io::Error::last_os_error());
        }
    }
    if let Err(e) = std::fs::write(&path, b"1") {
        log::error!("cannot cut off the filesystem's users ({path}: {e}); it ends when the last one is gone");
    }
}

fn lock_shared(shared: &Mutex<MountShared>) -> std::sync::MutexGuard<'_, MountShared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tell the control interface about a finished metadata upload.
fn record_backup(shared: &Mutex<MountShared>, m: &Mounted, r: &Result<(), Error>) {
    if r.is_ok() {
        let mut s = lock_shared(shared);
        s.last_metadata_upload = Some(SystemTime::now());
        s.metadata_seq = m.params.seq;
    }
}
