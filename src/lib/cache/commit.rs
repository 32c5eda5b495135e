//! Group commit of the upload pipeline's DB steps.
//!
//! Every upload needs two short transactions: before the PUT the dedup lookup (or a new
//! object id), after it the `blocks` row and the inode's pointer. Run one by one from
//! each upload task, they formed a queue on the DB mutex in front of the filesystem's
//! own requests (a `getattr` waited 18 ms on average while a tree of small files was
//! being uploaded), and each wrote its own copy of the shared pages to the WAL. Upload
//! tasks now hand their steps to one thread, which runs everything queued meanwhile in
//! one transaction: the DB mutex is taken once per batch, and the filesystem's requests
//! compete with one thread instead of one per upload in flight.
//!
//! A batch that fails as a whole (disk full, I/O error) is rolled back and its steps
//! retried one transaction each, so that every step gets its own result.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{Entry, lock};
use crate::fs_store::names;
use crate::meta::{blocks, inodes};

/// Most steps per transaction: bounds how long one batch holds the DB mutex.
const MAX_BATCH: usize = 128;

/// One DB step of one block's upload.
pub(super) enum Step {
    /// Dedup lookup: a hit is linked at once, a miss gets a new object id, or, with
    /// `packed`, is answered [`Prepared::Pack`] (the packer allocates the pack's id).
    Prepare { packed: bool },
    /// After the PUT of object `obj_id` (`phys` bytes stored): record it and the block,
    /// and point the inode at the block, unless the entry was removed meanwhile.
    Commit { obj_id: i64, phys: u64 },
    /// After the PUT of pack `obj_id` (`pack_size` bytes stored): record the block as its
    /// segment `[offset, offset + phys_len)` and point the inode at it, unless the entry
    /// was removed meanwhile. The pack's row is the packer's to drop if no block of it
    /// was recorded.
    CommitPacked {
        obj_id: i64,
        offset: u64,
        phys_len: u64,
        pack_size: u64,
    },
}

/// What a step decided for the block.
pub(super) enum Prepared {
    /// Nothing (more) to upload.
    Done(Outcome),
    /// Upload the block as the new object of this id, then run [`Step::Commit`].
    Upload(i64),
    /// Hand the block to the packer, which runs [`Step::CommitPacked`].
    Pack,
}

/// How a block's upload ended in the DB.
pub(super) enum Outcome {
    /// `inode_blocks` points at the content of generation `.0`; objects to delete.
    Committed(u64, Vec<String>),
    /// The entry was removed or is not dirty any more; objects to delete.
    Skipped(Vec<String>),
    /// The inode no longer exists: drop the entry.
    Orphan(Vec<String>),
}

/// Why a step, or the upload attempt it belongs to, failed; permanent failures end a
/// waiting `upload_all`.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) message: String,
    pub(super) permanent: bool,
}

impl Failure {
    pub(super) fn permanent(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            permanent: true,
        }
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::permanent(format!("metadata database: {e}"))
    }
}

struct Request {
    entry: Arc<Entry>,
    hash: Vec<u8>,
    len: u64,
    generation: u64,
    step: Step,
}

/// What a step did; `dedup` counts a block found already stored.
pub(super) struct Done {
    pub prepared: Prepared,
    pub dedup: bool,
}

type Reply = oneshot::Sender<Result<Done, Failure>>;

/// The handle upload tasks send their steps through; the thread stops when it is dropped.
pub(super) struct Committer {
    queue: mpsc::Sender<(Request, Reply)>,
    /// Batches run so far, one transaction each (a diagnostic: steps per batch show the
    /// batching). The retries of a failed batch are not counted.
    batches: Arc<AtomicU64>,
}

impl Committer {
    pub fn start(db: Arc<Mutex<Connection>>) -> std::io::Result<Committer> {
        let (queue, rx) = mpsc::channel();
        let batches = Arc::new(AtomicU64::new(0));
        let counter = batches.clone();
        let db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("s3fs-commit".into())
            .spawn(move || run(&db, &rx, &counter))?;
        Ok(Committer { queue, batches })
    }

    /// How many batches have been run.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Run `step` for the content `generation` of `entry` (hash and length of that
    /// content) in the next batch.
    pub async fn run(
        &self,
        entry: Arc<Entry>,
        hash: Vec<u8>,
        len: u64,
        generation: u64,
        step: Step,
    ) -> Result<Done, Failure> {
        self.submit(entry, hash, len, generation, step)?.await
    }

    /// Queue `step` (see [`Committer::run`]) now; its result arrives through the answer.
    /// Steps submitted together share a batch.
    pub fn submit(
        &self,
        entry: Arc<Entry>,
        hash: Vec<u8>,
        len: u64,
        generation: u64,
        step: Step,
    ) -> Result<impl std::future::Future<Output = Result<Done, Failure>> + use<>, Failure> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            entry,
            hash,
            len,
            generation,
            step,
        };
        let stopped = || Failure::permanent("the metadata committer has stopped");
        self.queue.send((request, reply)).map_err(|_| stopped())?;
        Ok(async move { answer.await.map_err(|_| stopped())? })
    }
}

/// Holds the connection only weakly, and strongly only while a batch runs: the
/// filesystem's last handle must close it, which checkpoints and removes the WAL.
fn run(db: &Weak<Mutex<Connection>>, rx: &mpsc::Receiver<(Request, Reply)>, batches: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (requests, replies): (Vec<Request>, Vec<Reply>) = batch.into_iter().unzip();
        // Without a connection the replies are dropped: the callers see "stopped".
        let Some(db) = db.upgrade() else { return };
        let results = run_batch(&db, &requests, batches);
        drop(db);
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// All `requests` in one transaction or, if that fails, one transaction each.
fn run_batch(db: &Mutex<Connection>, requests: &[Request], batches: &AtomicU64) -> Vec<Result<Done, Failure>> {
    let mut conn = lock(db);
    batches.fetch_add(1, Ordering::Relaxed);
    match in_one_transaction(&mut conn, requests) {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) if requests.len() == 1 => vec![Err(Failure::from(e))],
        Err(e) => {
            log::debug!(
                "upload commit of {} steps failed ({e}); retrying them one by one",
                requests.len()
            );
            requests
                .iter()
                .map(|request| {
                    in_one_transaction(&mut conn, std::slice::from_ref(request))
                        .map(|mut r| r.remove(0))
                        .map_err(Failure::from)
                })
                .collect()
        }
    }
}

fn in_one_transaction(conn: &mut Connection, requests: &[Request]) -> rusqlite::Result<Vec<Done>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let done = requests
        .iter()
        .map(|r| step(&tx, r))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    tx.commit()?;
    Ok(done)
}

/// One step, inside the batch's transaction. The entry's `removed` and `releasing`
/// flags are read with the DB mutex held, which is what the cache's contract with
/// truncate and unlink needs; a block being released is skipped like a removed one.
fn step(c: &Connection, r: &Request) -> rusqlite::Result<Done> {
    let removed = r.entry.removed.load(Ordering::Acquire) || r.entry.releasing.load(Ordering::Acquire);
    let (inode, blockno) = r.entry.key;
    let done = |outcome, dedup| Done {
        prepared: Prepared::Done(outcome),
        dedup,
    };
    match r.step {
        Step::Prepare { packed } => {
            if removed {
                return Ok(done(Outcome::Skipped(Vec::new()), false));
            }
            if !inodes::exists(c, inode as i64)? {
                return Ok(done(Outcome::Orphan(Vec::new()), false));
            }
            if let Some(block_id) = blocks::find_block(c, &r.hash)? {
                blocks::link_block(c, inode as i64, blockno as i64, block_id)?;
                return Ok(done(Outcome::Committed(r.generation, Vec::new()), true));
            }
            if packed {
                return Ok(Done {
                    prepared: Prepared::Pack,
                    dedup: false,
                });
            }
            Ok(Done {
                prepared: Prepared::Upload(blocks::new_object(c, r.len)?),
                dedup: false,
            })
        }
        Step::Commit { obj_id, phys } => {
            let ours = names::data(obj_id as u64);
            if removed || !inodes::exists(c, inode as i64)? {
                blocks::drop_object(c, obj_id)?;
                return Ok(done(
                    if removed {
                        Outcome::Skipped(vec![ours])
                    } else {
                        Outcome::Orphan(vec![ours])
                    },
                    false,
                ));
            }
            let mut deleted = Vec::new();
            let mut dedup = false;
            let block_id = match blocks::insert_block(c, &r.hash, r.len, obj_id, phys)? {
                Ok(id) => id,
                Err(existing) => {
                    blocks::drop_object(c, obj_id)?;
                    deleted.push(ours);
                    dedup = true;
                    existing
                }
            };
            // An object the old block leaves empty is released, not deleted: retained
            // metadata versions may name it.
            blocks::link_block(c, inode as i64, blockno as i64, block_id)?;
            Ok(done(Outcome::Committed(r.generation, deleted), dedup))
        }
        Step::CommitPacked {
            obj_id,
            offset,
            phys_len,
            pack_size,
        } => {
            if removed {
                return Ok(done(Outcome::Skipped(Vec::new()), false));
            }
            if !inodes::exists(c, inode as i64)? {
                return Ok(done(Outcome::Orphan(Vec::new()), false));
            }
            let (block_id, dedup) =
                match blocks::insert_packed_block(c, &r.hash, r.len, (offset, phys_len), obj_id, pack_size)? {
                    Ok(id) => (id, false),
                    // Stored meanwhile: this segment is garbage in its pack.
                    Err(existing) => (existing, true),
                };
            blocks::link_block(c, inode as i64, blockno as i64, block_id)?;
            Ok(done(Outcome::Committed(r.generation, Vec::new()), dedup))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{EntryFile, Key};
    use std::sync::atomic::AtomicBool;

    /// A fresh DB with one regular file (its inode number) and a committer on it.
    fn committer_on_one_inode() -> (Arc<Mutex<Connection>>, u64, Committer) {
        let conn = Connection::open_in_memory().unwrap();
        crate::meta::schema::create_filesystem(&conn, 0, 0, 1).unwrap();
        conn.execute(
            "INSERT INTO inodes (uid, gid, mode, mtime_ns, atime_ns, ctime_ns, refcount) VALUES (0, 0, ?1, 1, 1, 1, 1)",
            [libc::S_IFREG | 0o644],
        )
        .unwrap();
        let ino = conn.last_insert_rowid() as u64;
        let db = Arc::new(Mutex::new(conn));
        let c = Committer::start(db.clone()).unwrap();
        (db, ino, c)
    }

    fn entry(key: Key) -> Arc<Entry> {
        Arc::new(Entry {
            key,
            removed: AtomicBool::new(false),
            releasing: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            file: Mutex::new(EntryFile::default()),
        })
    }

    /// Queue `steps` while the DB mutex is held, so no batch can finish before all are
    /// queued; returns their results in order.
    fn run_while_db_is_busy(c: &Committer, db: &Mutex<Connection>, steps: Vec<Request>) -> Vec<Done> {
        let answers: Vec<_> = {
            let _busy = lock(db);
            steps
                .into_iter()
                .map(|r| {
                    let (reply, answer) = oneshot::channel();
                    c.queue.send((r, reply)).unwrap();
                    answer
                })
                .collect()
        };
        answers
            .into_iter()
            .map(|a| a.blocking_recv().unwrap().map_err(|f| format!("{f:?}")).unwrap())
            .collect()
    }

    #[test]
    fn steps_queued_meanwhile_share_one_transaction_and_see_each_other() {
        let (db, ino, c) = committer_on_one_inode();
        let hash = |n: u8| vec![n; 32];
        let entries: Vec<_> = (0..40).map(|b| entry((ino, b))).collect();
        let prepare = |i: usize, h: Vec<u8>| Request {
            entry: entries[i].clone(),
            hash: h,
            len: 100,
            generation: 1,
            step: Step::Prepare { packed: false },
        };

        // 40 blocks, two of each content: every one needs an upload, none is linked yet.
        let done = run_while_db_is_busy(&c, &db, (0..40).map(|i| prepare(i, hash(i as u8 / 2))).collect());
        assert!(c.batches() <= 2, "{} transactions for 40 queued steps", c.batches());
        let ids: Vec<i64> = done
            .iter()
            .map(|d| match d.prepared {
                Prepared::Upload(id) => id,
                Prepared::Done(_) | Prepared::Pack => panic!("nothing is stored yet"),
            })
            .collect();
        let before = c.batches();

        // Their commits: within the batch, the second block of each content finds the
        // first one's row and is deduplicated; its object is to be deleted.
        let commits = (0..40)
            .map(|i| Request {
                step: Step::Commit {
                    obj_id: ids[i],
                    phys: 120,
                },
                ..prepare(i, hash(i as u8 / 2))
            })
            .collect();
        let done = run_while_db_is_busy(&c, &db, commits);
        assert!(
            c.batches() - before <= 2,
            "{} transactions for 40 queued steps",
            c.batches() - before
        );
        for (i, d) in done.iter().enumerate() {
            let Prepared::Done(Outcome::Committed(1, ref deleted)) = d.prepared else {
                panic!("step {i} was not committed");
            };
            assert_eq!(d.dedup, i % 2 == 1, "step {i}");
            assert_eq!(deleted.len(), i % 2, "step {i}: {deleted:?}");
        }
        let conn = lock(&db);
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM blocks"), 20);
        assert_eq!(count("SELECT count(*) FROM blocks WHERE refcount = 2"), 20);
        assert_eq!(count("SELECT count(*) FROM objects"), 20);
        assert_eq!(count("SELECT count(*) FROM inode_blocks"), 40);
        // A block found stored is linked by the prepare step itself.
        drop(conn);
        let e = entry((ino, 40));
        let again = run_while_db_is_busy(
            &c,
            &db,
            vec![Request {
                entry: e,
                hash: hash(0),
                len: 100,
                generation: 1,
                step: Step::Prepare { packed: false },
            }],
        );
        assert!(again[0].dedup);
        assert!(matches!(again[0].prepared, Prepared::Done(Outcome::Committed(1, _))));
        // Between batches the committer holds no strong reference: the filesystem's
        // last handle closes the connection (and with it checkpoints the WAL).
        assert_eq!(Arc::strong_count(&db), 1);
    }

    #[test]
    fn removed_or_releasing_entries_and_purged_inodes_are_not_linked() {
        let (db, ino, c) = committer_on_one_inode();
        let removed = entry((ino, 0));
        removed.removed.store(true, Ordering::Release);
        let releasing = entry((ino, 1));
        releasing.releasing.store(true, Ordering::Release);
        let orphan = entry((ino + 1000, 0));
        let req = |e: &Arc<Entry>, step| Request {
            entry: e.clone(),
            hash: vec![9; 32],
            len: 10,
            generation: 1,
            step,
        };
        let done = run_while_db_is_busy(
            &c,
            &db,
            vec![
                req(&removed, Step::Prepare { packed: false }),
                req(&orphan, Step::Prepare { packed: false }),
                req(&removed, Step::Commit { obj_id: 77, phys: 20 }),
                req(&orphan, Step::Commit { obj_id: 78, phys: 20 }),
                req(&releasing, Step::Prepare { packed: false }),
                req(&releasing, Step::Commit { obj_id: 79, phys: 20 }),
            ],
        );
        assert!(matches!(done[0].prepared, Prepared::Done(Outcome::Skipped(ref d)) if d.is_empty()));
        assert!(matches!(done[1].prepared, Prepared::Done(Outcome::Orphan(ref d)) if d.is_empty()));
        assert!(matches!(done[2].prepared, Prepared::Done(Outcome::Skipped(ref d)) if d == &[names::data(77)]));
        assert!(matches!(done[3].prepared, Prepared::Done(Outcome::Orphan(ref d)) if d == &[names::data(78)]));
        // A block whose rows are being released is skipped like a removed one.
        assert!(matches!(done[4].prepared, Prepared::Done(Outcome::Skipped(ref d)) if d.is_empty()));
        assert!(matches!(done[5].prepared, Prepared::Done(Outcome::Skipped(ref d)) if d == &[names::data(79)]));
        let n: i64 = lock(&db)
            .query_row("SELECT count(*) FROM inode_blocks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }
}
