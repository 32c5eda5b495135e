//! Which metadata versions the store retains ([`select`], by the filesystem's
//! [`Retention`] policy; [`expire`] deletes the others and the chunks only they need)
//! and the deletion of the data only expired versions named
//! ([`collect_released`]): deferred deletion, so that every retained version can be
//! restored with all its files.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use rusqlite::Connection;

use crate::exit::{Error, db_err};
use crate::fs_store::{FsStore, names};
use crate::meta::{blocks, chunks};
use crate::params::{Params, Retention, unix_now};
use crate::runtime::block_on;

/// The seqs of `versions` (seq and publication time in Unix seconds, newest first) that
/// `policy` retains at time `now`; the newest is always retained. A time in the future
/// (a skewed clock, or a hostile store) counts as now: it can only keep a version
/// longer, never drop one early.
pub fn select(versions: &[(u64, i64)], policy: &Retention, now: i64) -> BTreeSet<u64> {
    let mut keep = BTreeSet::new();
    let mut days = HashSet::new();
    for (i, &(seq, time)) in versions.iter().enumerate() {
        let age = now.saturating_sub(time).max(0) as u64;
        let day = time.min(now).div_euclid(86400);
        let daily = days.len() < policy.keep_daily as usize && days.insert(day);
        if i == 0 || i < policy.keep_last as usize || age < policy.keep_within_secs || daily {
            keep.insert(seq);
        }
    }
    keep
}

/// What [`expire`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    pub versions: usize,
    pub chunks: usize,
}

/// Keep the versions `policy` retains now (the newest always) and every chunk object
/// they need; delete the other versions' params first, then the chunks nothing retained
/// needs, so a crash in between never leaves a version that names a missing chunk.
pub async fn expire(fs: &FsStore, policy: &Retention) -> Result<Expired, Error> {
    // Two round trips at once: this process is the only one publishing, so no version
    // can appear between the two lists.
    let (all, available) = tokio::join!(chunks::versions(fs), chunks::list_chunks(fs));
    let (all, available) = (all?, available?);
    let times: Vec<(u64, i64)> = all.iter().map(|p| (p.seq, p.last_modified)).collect();
    let retained = select(&times, policy, unix_now());
    let (kept, old): (Vec<&Params>, Vec<&Params>) = all.iter().partition(|p| retained.contains(&p.seq));
    let mut needed: BTreeSet<(u64, u64)> = BTreeSet::new();
    for p in &kept {
        // A retained version with a missing chunk keeps what it has; fsck reports it.
        let (plan, _) = chunks::chunks_of(p, &available);
        needed.extend(plan);
    }
    let newest_kept = kept.first().map(|p| p.seq).unwrap_or(0);
    let old_params: Vec<String> = old.iter().map(|p| names::params_version(p.seq)).collect();
    fs.store().delete_many(&old_params).await?;
    // Chunks newer than every retained version belong to an upload in progress: keep them.
    let garbage: Vec<String> = available
        .iter()
        .flat_map(|(c, seqs)| seqs.iter().map(move |s| (*c, *s)))
        .filter(|(c, s)| *s <= newest_kept && !needed.contains(&(*c, *s)))
        .map(|(c, s)| names::meta_chunk(c, s))
        .collect();
    for batch in garbage.chunks(1000) {
        fs.store().delete_many(batch).await?;
    }
    Ok(Expired {
        versions: old_params.len(),
        chunks: garbage.len(),
    })
}

/// What [`collect_released`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    pub objects: usize,
}

/// Delete from the store the released objects that no retained metadata version can
/// name any more and that were released at least the policy's minimum age ago (no
/// minimum with `release_now`), then forget them. With no version listed, nothing is
/// deleted.
///
/// The DB lock is held only for the short queries, never across a store request. A
/// crash between the store's delete and the row's leaves the row, and the next round
/// deletes the (missing) object again.
pub fn collect_released(
    store: &FsStore,
    db: &Mutex<Connection>,
    policy: &Retention,
    release_now: bool,
) -> Result<Collected, Error> {
    let min_age = if release_now { 0 } else { policy.min_age_secs };
    let released_by = unix_now().saturating_sub(i64::try_from(min_age).unwrap_or(i64::MAX));
    let lock = || db.lock().unwrap_or_else(|e| e.into_inner());
    // Nothing released long enough ago, whatever the versions: no need to list them (a
    // round trip before every metadata upload that follows no deletion).
    let any = blocks::collectable(&lock(), i64::MAX as u64, released_by, 1)
        .map_err(db_err("finding data only old versions needed"))?;
    if any.is_empty() {
        return Ok(Collected::default());
    }
    let listed = block_on(chunks::listed_versions(store))?;
    let Some(&oldest) = listed.iter().min() else {
        return Ok(Collected::default());
    };
    let mut out = Collected::default();
    loop {
        let ids = blocks::collectable(&lock(), oldest, released_by, 1000)
            .map_err(db_err("finding data only old versions needed"))?;
        if ids.is_empty() {
            return Ok(out);
        }
        let keys: Vec<String> = ids.iter().map(|&id| names::data(id as u64)).collect();
        block_on(store.store().delete_many(&keys))?;
        {
            let mut c = lock();
            let tx = c.transaction().map_err(db_err("forgetting deleted objects"))?;
            blocks::delete_collected(&tx, &ids).map_err(db_err("forgetting deleted objects"))?;
            tx.commit().map_err(db_err("forgetting deleted objects"))?;
        }
        out.objects += ids.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publish that released nothing (most of them) asks the store nothing here; one
    /// that did lists the versions and deletes what none of them names.
    #[test]
    fn collecting_asks_the_store_only_when_something_was_released() {
        use std::sync::Arc;

        use crate::store::fault::{FaultConfig, FaultStore};
        let dir = tempfile::tempdir().unwrap();
        let local = crate::store::local::LocalStore::open(dir.path()).unwrap();
        let faults = FaultStore::new(Arc::new(local), FaultConfig::default());
        let counts = faults.counts();
        let store = FsStore::new(Arc::new(faults), crate::codec::Codec::new(None, Default::default()));
        let conn = Connection::open_in_memory().unwrap();
        crate::meta::schema::create_filesystem(&conn, 0, 0, 1).unwrap();
        let db = Mutex::new(conn);
        let ops = || counts.operations.load(std::sync::atomic::Ordering::Relaxed);
        let policy = Retention {
            min_age_secs: 0,
            ..Retention::default()
        };

        assert_eq!(collect_released(&store, &db, &policy, false).unwrap().objects, 0);
        assert_eq!(ops(), 0, "nothing released: no request");

        let params = Params::for_tests(9);
        crate::runtime::block_on(store.write_params(&params)).unwrap();
        let before = ops();
        db.lock()
            .unwrap()
            .execute(
                "INSERT INTO released_objects (id, phys_size, released_at, after_seq) VALUES (5, 10, 0, 8)",
                [],
            )
            .unwrap();
        assert_eq!(collect_released(&store, &db, &policy, false).unwrap().objects, 1);
        assert!(ops() > before, "versions listed, the object deleted");
    }

    const DAY: i64 = 86400;

    fn policy(keep_last: u32, within_h: u64, daily: u32) -> Retention {
        Retention {
            keep_last,
            keep_within_secs: within_h * 3600,
            keep_daily: daily,
            min_age_secs: 0,
        }
    }

    /// Hourly versions over 10 days, newest first.
    fn hourly(now: i64) -> Vec<(u64, i64)> {
        (0..240).map(|h| (1000 - h as u64, now - h * 3600)).collect()
    }

    #[test]
    fn the_newest_is_always_kept() {
        let now = 100 * DAY;
        let v = hourly(now);
        assert_eq!(select(&v, &policy(0, 0, 0), now), BTreeSet::from([1000]));
        assert!(select(&[], &policy(5, 5, 5), now).is_empty());
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let now = 100 * DAY;
        let kept = select(&hourly(now), &policy(3, 0, 0), now);
        assert_eq!(kept, BTreeSet::from([998, 999, 1000]));
    }

    #[test]
    fn keep_within_keeps_every_version_younger_than_it() {
        let now = 100 * DAY;
        let kept = select(&hourly(now), &policy(0, 24, 0), now);
        assert_eq!(kept.len(), 24, "hours 0 to 23: younger than 24 h");
        assert!(kept.iter().all(|&s| s > 1000 - 24));
        // 0: none, even of the versions published this very second.
        let same_second: Vec<(u64, i64)> = (0..5).map(|i| (100 - i, now)).collect();
        assert_eq!(select(&same_second, &policy(0, 0, 0), now), BTreeSet::from([100]));
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day() {
        let now = 100 * DAY + 12 * 3600; // noon
        let kept = select(&hourly(now), &policy(0, 0, 3), now);
        // Today's newest (now), then the last version of each of the two days before.
        let times: Vec<i64> = hourly(now)
            .into_iter()
            .filter(|(s, _)| kept.contains(s))
            .map(|(_, t)| t)
            .collect();
        assert_eq!(times, vec![now, 100 * DAY - 3600, 99 * DAY - 3600]);
    }

    #[test]
    fn rules_add_up_and_future_times_count_as_now() {
        let now = 100 * DAY;
        let mut v = hourly(now);
        v[0].1 = now + 1000 * DAY; // a hostile or skewed time
        let kept = select(&v, &policy(2, 1, 2), now);
        // last 2 (1000, 999), within 1 h (1000 only: 999 is exactly 1 h old), daily:
        // today's newest (1000), and yesterday's newest (999, at 23:00 yesterday).
        assert_eq!(kept, BTreeSet::from([999, 1000]));
        assert!(select(&v, &policy(0, 0, 0), now).contains(&1000));
    }
}
