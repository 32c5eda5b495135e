//! mount.s3fs from start to clean exit.
//!
//! 1. Check the mountpoint and that this URL is not mounted here; open the store, the
//!    key and the superblock.
//! 2. Decide between the local DB and the store's version ([`crate::meta::versions`]),
//!    take the lock ([`crate::meta::versions::lock`]), download the DB if needed.
//! 3. Mark the filesystem mounted (new seq, `is_mounted`) in the store and locally.
//! 4. Serve FUSE requests; upload the metadata every `--metadata-backup-interval`.
//! 5. On SIGINT/SIGTERM or an external unmount: unmount, upload every dirty block, upload
//!    the metadata, mark the filesystem clean, release the lock.

use std::path::Path;
use std::sync::Arc;

use super::serve::{Mounted, open_cache, serve};
pub use super::signals::block_exit_signals;
use crate::cli::MountArgs;
use crate::config::{self, SecretSource};
use crate::daemon::Reporter;
use crate::exit::{Error, ExitCode};
use crate::fs::Filesystem;
use crate::fs_store::{self, ConnectOptions};
use crate::meta::chunks::{self, ChunkHashes};
use crate::meta::versions::state::{LocalFiles, Start};
use crate::meta::versions::{self, lock};
use crate::params::unix_now;
use crate::runtime::block_on;

/// Limit the C allocator to two arenas; call before any thread starts.
///
/// glibc gives threads their own arenas (up to 8 per core) and keeps freed memory in
/// them. The upload pipeline frees block-sized buffers from dozens of blocking threads,
/// which left about 70 MiB of freed memory resident: the daemon's peak RSS while
/// uploading 1 GiB was 140 MiB with the default and 70 MiB with two arenas, at the
/// same CPU time.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; no thread is running yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Where a mount logs: `--log FILE`, `none` (stderr, for --fg/--systemd), or by default
/// `mount.log` in the cache directory when running in the background.
pub fn log_target(args: &MountArgs) -> Option<Box<dyn std::io::Write + Send>> {
    let path = match args.log.as_deref() {
        Some("none") => return None,
        Some(p) => std::path::PathBuf::from(p),
        None if args.fg || args.systemd => return None,
        None => args
            .store
            .cachedir
            .clone()
            .unwrap_or_else(config::default_dir)
            .join("mount.log"),
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut options = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(options.create(true).append(true), 0o600);
    match options.open(&path) {
        Ok(f) => Some(Box::new(f)),
        Err(e) => {
            eprintln!("mount.s3fs: warning: cannot open log file {}: {e}", path.display());
            None
        }
    }
}

fn check_mountpoint(path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::new(
            ExitCode::NoMountpoint,
            format!("{} is not a directory", path.display()),
        )),
        Err(e) => Err(Error::new(
            ExitCode::NoMountpoint,
            format!("mountpoint {}: {e}", path.display()),
        )),
    }
}

/// Mount and serve until unmounted. Reports readiness through `reporter`.
pub fn run(args: &MountArgs, reporter: &mut Reporter, secrets: &mut dyn SecretSource) -> Result<(), Error> {
    let kernel_options = kernel_mount_options(&args.kernel_flags)?;
    check_mountpoint(&args.mountpoint)?;
    if is_mountpoint(&args.mountpoint) {
        return Err(Error::new(
            ExitCode::MountedHere,
            format!("{} is already a mountpoint", args.mountpoint.display()),
        ));
    }
    let opts = ConnectOptions {
        authfile: args.store.authfile.as_deref(),
        backend_options: args.store.backend_options.as_deref(),
    };
    let conn = fs_store::connect(&args.storage_url, &opts, secrets)?;
    let compression = config::compression(args.compress.as_deref(), conn.auth.compress.as_deref())?;
    let mut opened = block_on(fs_store::open_filesystem(&conn, compression, secrets))?;
    let cachedir = config::cache_dir(args.store.cachedir.as_deref(), &conn.auth)?;
    let files = LocalFiles::new(&cachedir, &conn.url);
    let parallel = config::max_connections(args.store.max_connections, &conn.auth);
    if args.ro {
        return super::read_only::run(args, kernel_options, reporter, &conn.url, &opened, &cachedir, parallel);
    }
    if args.version.as_deref().is_some_and(|v| !v.is_empty()) {
        return Err(Error::new(
            ExitCode::BadArgument,
            "--version SEQ|DATE mounts a past version read-only: it needs --ro",
        ));
    }
    let mut params = opened.params.clone();

    let start = versions::decide_start(&opened.fs, &params, &files, ExitCode::MountedElsewhere)?;
    let guard_kind = block_on(lock::acquire(&opened.fs, &params.uuid))?;
    log::info!("single-writer guard: {}", guard_kind.describe());
    if !params.encrypted {
        log::warn!("the filesystem is not encrypted: whoever can read the store can read its data");
    }
    let result = (|| {
        let mut hashes = ChunkHashes::load(&files.chunks);
        if start == Start::Download {
            log::info!("downloading metadata version {}", params.seq);
            let _ = std::fs::remove_dir_all(&files.cache);
            for stale in [
                &files.chunks,
                &files.db.with_extension("db-wal"),
                &files.db.with_extension("db-shm"),
            ] {
                let _ = std::fs::remove_file(stale);
            }
            block_on(chunks::download(&opened.fs, &params, &files.db, parallel))?;
            hashes = ChunkHashes::default();
        }
        params.seq += 1;
        params.is_mounted = true;
        params.last_modified = unix_now();
        params.upgrade();
        files.write_params(&params)?;
        block_on(opened.fs.write_params(&params))?;
        opened.fs.write_for_revision(params.revision);
        let fs = Arc::new(Filesystem::open(&files.db, params.data_block_size)?);
        let cache = open_cache(args, &conn.url, &files, &params, &opened.fs, &fs, parallel)?;
        serve(
            args,
            kernel_options,
            &conn.url.to_string(),
            reporter,
            Mounted {
                fs_store: opened.fs.clone(),
                files: files.clone(),
                params: params.clone(),
                hashes,
                fs,
                cache,
                parallel,
                read_only: false,
                first_generation: None,
                follower: None,
                published_changes: 0,
                expire_due: false,
            },
        )
    })();
    match &result {
        // Unmounted cleanly: the metadata in the store is current.
        Ok(()) => block_on(lock::release(&opened.fs))?,
        // Failed before anything was changed: let the next mount try again.
        Err(_)
            if !files
                .read_params()
                .is_some_and(|p| p.is_mounted && p.seq > opened.params.seq) =>
        {
            let _ = block_on(lock::release(&opened.fs));
        }
        // Failed while mounted: keep the lock, the next mount must run fsck.
        Err(_) => {}
    }
    result
}

/// The kernel mount flags of `--kernel-flags` (see its help), later words winning.
/// Words the kernel's FUSE cannot take (the atime variants other than noatime) are
/// accepted without effect: reads never update access times here.
fn kernel_mount_options(words: &[String]) -> Result<Vec<fuser::MountOption>, Error> {
    use fuser::MountOption as M;
    // Each flag with its opposite: only the last of a pair is passed on.
    let pairs: [(&str, M, &str, M); 4] = [
        ("exec", M::Exec, "noexec", M::NoExec),
        ("suid", M::Suid, "nosuid", M::NoSuid),
        ("dev", M::Dev, "nodev", M::NoDev),
        ("atime", M::Atime, "noatime", M::NoAtime),
    ];
    let mut chosen: Vec<Option<M>> = vec![None; pairs.len()];
    for word in words.iter().map(|w| w.trim()).filter(|w| !w.is_empty()) {
        if let Some(i) = pairs.iter().position(|(on, _, off, _)| word == *on || word == *off) {
            let (on, on_opt, _, off_opt) = &pairs[i];
            chosen[i] = Some(if word == *on { on_opt.clone() } else { off_opt.clone() });
            continue;
        }
        let known = crate::cli::mount_helper::KERNEL_FLAGS;
        if !known.contains(&word) {
            return Err(Error::new(
                ExitCode::BadArgument,
                format!("unknown kernel flag {word:?} (known: {})", known.join(", ")),
            ));
        }
    }
    Ok(chosen.into_iter().flatten().collect())
}

/// Whether `path` is currently a mountpoint.
pub fn is_mountpoint(path: &Path) -> bool {
    super::mounts::at(path).is_some()
}
