//! mount.s3fs --ro: a metadata version mounted read-only, beside a writer that may be
//! mounted elsewhere. With `--version`, that version for the mount's life; without, a
//! *follower*: it starts from the newest version and, every `--follow-interval`, looks
//! for a newer one in the store (one GET of the superblock), downloads only the chunks
//! of the metadata that changed ([`chunks::download_reusing`]) and switches to it
//! between requests ([`Served::switch`]); files and directories opened before keep
//! their version until closed.
//!
//! It never takes the single-writer lock and never writes to the store (it reaches the
//! store only through [`ReadOnlyStore`], which refuses every write): the version is
//! downloaded into a directory of its own in the cache directory (`<stem>.ro-<pid>`, so
//! that it shares nothing with a writer's files there), served with the kernel's
//! read-only flag (every change fails with EROFS before it reaches us), and no metadata
//! is published, no block uploaded, no object deleted. The directory is removed at
//! unmount, and a later read-only mount removes those left by dead processes.
//!
//! The data of a version stays in the store while the retention policy retains it
//! (deferred deletion); a version that expires while mounted keeps working for the
//! blocks already cached, and for the rest until `--min-age` after the data's release.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::serve::{FollowTick, Mounted, open_cache, serve};
use crate::cli::MountArgs;
use crate::control::MountShared;
use crate::daemon::Reporter;
use crate::exit::{Error, ExitCode};
use crate::fs::Filesystem;
use crate::fs_store::{FsStore, Opened};
use crate::meta::chunks::{self, ChunkHashes, ChunkPlan};
use crate::meta::versions::state::LocalFiles;
use crate::params::Params;
use crate::runtime::block_on;
use crate::served::{Generation, Served};
use crate::store::StorageUrl;
use crate::store::read_only::ReadOnlyStore;

/// Mount `opened` read-only at the version `args.version` names (the current one
/// without it) and serve until unmounted.
#[allow(clippy::too_many_arguments)]
pub fn run(
    args: &MountArgs,
    kernel_options: Vec<fuser::MountOption>,
    reporter: &mut Reporter,
    url: &StorageUrl,
    opened: &Opened,
    cachedir: &Path,
    parallel: usize,
) -> Result<(), Error> {
    // Every request through a store that refuses writes.
    let store = FsStore::new(
        Arc::new(ReadOnlyStore::new(opened.fs.store().clone())),
        opened.fs.codec().clone(),
    );
    let chosen = choose(&store, &opened.params, args.version.as_deref())?;
    let follows = args.version.as_deref().is_none_or(|v| v.trim().is_empty());
    let dir = own_dir(cachedir, url);
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::new(
            ExitCode::CacheDirInaccessible,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let result = (|| {
        log::info!(
            "mounting metadata version {} ({}) read-only{}",
            chosen.seq,
            crate::meta::versions::lock::format_time(chosen.last_modified),
            if follows { ", following newer versions" } else { "" }
        );
        let first = open_generation(args, &store, url, &dir, &chosen, None, parallel)?;
        let follower = follows.then(|| {
            let mut f = Follower {
                args: args.clone(),
                store: store.clone(),
                url: url.clone(),
                dir: dir.clone(),
                uuid: chosen.uuid.clone(),
                interval: Duration::from_secs(args.follow_interval),
                parallel,
                last_check: Instant::now(),
                served_seq: chosen.seq,
                pristine: first.pristine.clone(),
                plan: first.plan.clone(),
            };
            Box::new(move |served: &Served, shared: &Mutex<MountShared>| f.tick(served, shared)) as FollowTick
        });
        serve(
            args,
            kernel_options,
            &url.to_string(),
            reporter,
            Mounted {
                fs_store: store.clone(),
                files: first.files,
                params: chosen.clone(),
                hashes: ChunkHashes::default(),
                fs: first.generation.fs.clone(),
                cache: first.generation.cache.clone(),
                parallel,
                read_only: true,
                first_generation: Some(first.generation),
                follower,
                published_changes: 0,
                expire_due: false,
            },
        )
    })();
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        log::warn!("cannot remove {}: {e}", dir.display());
    }
    result
}

/// One downloaded version, opened.
struct OpenVersion {
    generation: Generation,
    files: LocalFiles,
    /// The download as it came from the store (the live copy beside it is what SQLite
    /// opens, and it may change it): the base of the next incremental download.
    pristine: PathBuf,
    plan: ChunkPlan,
    fetched: usize,
}

/// Where a follower keeps version `seq`.
fn generation_dir(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("gen-{seq}"))
}

/// The generation being replaced: the base of the next one's download and cache.
struct Previous<'a> {
    pristine: &'a Path,
    plan: &'a ChunkPlan,
    cache_dir: &'a Path,
}

/// Download version `params` into `dir/gen-<seq>` (reusing the unchanged chunks of
/// `previous`, and linking its cached blocks that did not change), open it and its block
/// cache; the generation removes its directory when it is dropped.
fn open_generation(
    args: &MountArgs,
    store: &FsStore,
    url: &StorageUrl,
    dir: &Path,
    params: &Params,
    previous: Option<Previous<'_>>,
    parallel: usize,
) -> Result<OpenVersion, Error> {
    let gen_dir = generation_dir(dir, params.seq);
    let _ = std::fs::remove_dir_all(&gen_dir);
    std::fs::create_dir_all(&gen_dir).map_err(|e| {
        Error::new(
            ExitCode::CacheDirInaccessible,
            format!("cannot create {}: {e}", gen_dir.display()),
        )
    })?;
    let files = LocalFiles::new(&gen_dir, url);
    let pristine = gen_dir.join("pristine.db");
    let reuse = previous.as_ref().map(|p| (p.pristine, p.plan));
    let got = block_on(chunks::download_reusing(store, params, &pristine, parallel, reuse))?;
    if let Some(p) = &previous {
        let linked = carry_cache_over(p, &pristine, &files.cache);
        log::debug!(
            "following: {linked} cached blocks carried over to version {}",
            params.seq
        );
    }
    std::fs::copy(&pristine, &files.db).map_err(|e| {
        Error::new(
            ExitCode::CacheDirInaccessible,
            format!("cannot copy the metadata to {}: {e}", files.db.display()),
        )
    })?;
    let fs = Arc::new(Filesystem::open(&files.db, params.data_block_size)?);
    let cache = open_cache(args, url, &files, params, store, &fs, parallel)?;
    let generation = Generation::new(fs, cache, params.seq, params.last_modified).owning(gen_dir);
    Ok(OpenVersion {
        generation,
        files,
        pristine,
        plan: got.plan,
        fetched: got.fetched,
    })
}

/// Link the cached blocks of the previous generation whose block is the same in the new
/// version (same block id at the same place) into the new cache directory, so that a
/// switch does not make a follower fetch again what it had. Failures only cost refetches.
fn carry_cache_over(previous: &Previous<'_>, new_db: &Path, new_cache: &Path) -> usize {
    let open = |p: &Path| crate::meta::db::open_copy(&p.to_string_lossy()).ok();
    let (Some(old), Some(new)) = (open(previous.pristine), open(new_db)) else {
        return 0;
    };
    let block = |c: &rusqlite::Connection, ino: u64, blockno: u64| -> Option<i64> {
        c.prepare_cached("SELECT block_id FROM inode_blocks WHERE inode = ?1 AND blockno = ?2")
            .ok()?
            .query_row([ino as i64, blockno as i64], |r| r.get(0))
            .ok()
    };
    crate::cache::link_unchanged(previous.cache_dir, new_cache, |ino, blockno| {
        let was = block(&old, ino, blockno);
        was.is_some() && was == block(&new, ino, blockno)
    })
    .unwrap_or(0)
}

/// A follower's state between looks at the store.
struct Follower {
    args: MountArgs,
    store: FsStore,
    url: StorageUrl,
    dir: PathBuf,
    uuid: String,
    interval: Duration,
    parallel: usize,
    last_check: Instant,
    served_seq: u64,
    pristine: PathBuf,
    plan: ChunkPlan,
}

impl Follower {
    /// Every `--follow-interval`: if the store's current version is newer than the one
    /// served, download it and switch to it. A failure is logged and shown by
    /// s3fsstat; the version served stays, and the next interval tries again.
    fn tick(&mut self, served: &Served, shared: &Mutex<MountShared>) {
        if self.last_check.elapsed() < self.interval {
            return;
        }
        self.last_check = Instant::now();
        let result = self.look();
        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
        sh.follow_checked = Some(SystemTime::now());
        match result {
            Ok(None) => sh.follow_error = None,
            Ok(Some(next)) => {
                log::info!(
                    "following: now serving metadata version {} ({} of {} chunks fetched)",
                    next.generation.seq,
                    next.fetched,
                    next.plan.len()
                );
                sh.metadata_seq = next.generation.seq;
                sh.served_published = next.generation.published;
                sh.follow_error = None;
                sh.switches += 1;
                self.served_seq = next.generation.seq;
                self.pristine = next.pristine;
                self.plan = next.plan;
                drop(sh);
                served.switch(next.generation);
            }
            Err(e) => {
                log::warn!("following: {} (still serving version {})", e.message, self.served_seq);
                sh.follow_error = Some(e.message);
            }
        }
    }

    /// The store's current version, opened, if it is newer than the one served.
    fn look(&self) -> Result<Option<OpenVersion>, Error> {
        let remote = block_on(self.store.read_params())?;
        if remote.uuid != self.uuid {
            return Err(Error::new(
                ExitCode::Tampered,
                "the store now holds another filesystem; not following it",
            ));
        }
        if remote.seq <= self.served_seq {
            return Ok(None);
        }
        let cache_dir = LocalFiles::new(&generation_dir(&self.dir, self.served_seq), &self.url).cache;
        let previous = Some(Previous {
            pristine: &self.pristine,
            plan: &self.plan,
            cache_dir: &cache_dir,
        });
        let next = open_generation(
            &self.args,
            &self.store,
            &self.url,
            &self.dir,
            &remote,
            previous,
            self.parallel,
        )?;
        // What serve() does for the first generation.
        next.generation.fs.attach_cache(next.generation.cache.clone());
        next.generation.fs.enable_stats()?;
        Ok(Some(next))
    }
}

/// The version `spec` names among the retained ones: a seq, or a UTC date (the newest
/// version published at or before it); `None` or empty: `current`.
fn choose(fs: &FsStore, current: &Params, spec: Option<&str>) -> Result<Params, Error> {
    let Some(spec) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(current.clone());
    };
    let bad = |why: String| Error::new(ExitCode::BadArgument, why);
    let versions = block_on(chunks::versions(fs))?;
    let found = if let Ok(seq) = spec.parse::<u64>() {
        versions.iter().find(|v| v.seq == seq)
    } else if let Some(at) = parse_utc(spec) {
        versions.iter().filter(|v| v.last_modified <= at).max_by_key(|v| v.seq)
    } else {
        return Err(bad(format!(
            "--version {spec:?} is neither a seq nor a date (YYYY-MM-DD[THH:MM[:SS]], UTC)"
        )));
    };
    found.cloned().ok_or_else(|| {
        let listed: Vec<String> = versions.iter().map(|v| v.seq.to_string()).collect();
        bad(format!(
            "no retained metadata version matches --version {spec} (retained: {})",
            listed.join(", ")
        ))
    })
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH:MM:SS` (or a space for the T), UTC,
/// as Unix seconds; the end of the given day, minute or second, so that a date names the
/// versions published on it. `None` if malformed or out of range.
pub fn parse_utc(text: &str) -> Option<i64> {
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let num = |s: &str, range: std::ops::RangeInclusive<i64>| -> Option<i64> {
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().filter(|n| range.contains(n))
    };
    let mut d = date.split('-');
    let (y, m, day) = (
        num(d.next()?, 1970..=9999)?,
        num(d.next()?, 1..=12)?,
        num(d.next()?, 1..=31)?,
    );
    if d.next().is_some() || day > days_in_month(y, m) {
        return None;
    }
    let start = days_from_civil(y, m, day) * 86400;
    let Some(time) = time else {
        return Some(start + 86399);
    };
    let mut t = time.split(':');
    let h = num(t.next()?, 0..=23)?;
    let min = num(t.next()?, 0..=59)?;
    let (s, rest) = match t.next() {
        Some(s) => (num(s, 0..=59)?, 0),
        None => (0, 59),
    };
    if t.next().is_some() {
        return None;
    }
    Some(start + h * 3600 + min * 60 + s + rest)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// This process's directory in `cachedir`; those of read-only mounts of the same
/// filesystem whose process is gone are removed first.
fn own_dir(cachedir: &Path, url: &StorageUrl) -> PathBuf {
    let prefix = format!("{}.ro-", crate::config::cache_stem(url));
    if let Ok(entries) = std::fs::read_dir(cachedir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !crate::process::is_running(pid) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    cachedir.join(format!("{prefix}{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_name_the_end_of_what_they_give() {
        assert_eq!(parse_utc("1970-01-01"), Some(86399));
        assert_eq!(parse_utc("1970-01-02T00:00"), Some(86400 + 59));
        assert_eq!(parse_utc("1970-01-02 00:00:05"), Some(86405));
        assert_eq!(parse_utc("2000-03-01"), Some(951_955_199));
        assert_eq!(parse_utc("2024-02-29T12:00:00"), Some(1_709_208_000));
        for bad in [
            "",
            "2024",
            "2024-02-30",
            "2023-02-29",
            "2024-13-01",
            "2024-1-1x",
            "1969-12-31",
            "2024-01-01T24:00",
            "2024-01-01T10",
            "2024-01-01T10:00:00:00",
            "99999-01-01",
            "2024-01-01T-1:00",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad:?}");
        }
    }
}
