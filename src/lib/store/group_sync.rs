//! One flush of a whole filesystem shared by every writer that asks for one meanwhile.
//!
//! `fsync` of a small new file and of its directory cost far more than writing it on
//! ext4 (each writes an inode table block and waits for the disk), and many small
//! objects are written at once when a tree of small files is uploaded. A `syncfs` makes
//! everything written before it durable at once: callers that arrive while one runs wait
//! for it to finish and share the next one, so N concurrent writers cost about two
//! flushes instead of 2N.

use std::collections::HashMap;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Failures kept for callers that wake late; older generations are forgotten.
const KEPT_FAILURES: u64 = 1024;

#[derive(Default)]
struct State {
    /// The generation new callers join; it runs once the previous one is done.
    open: u64,
    /// Every generation below this one has run.
    done: u64,
    running: bool,
    failures: HashMap<u64, String>,
}

/// See the module documentation. `flush` must make durable everything written before
/// it was called.
pub struct GroupSync<F> {
    flush: F,
    state: Mutex<State>,
    finished: Condvar,
}

impl<F: Fn() -> io::Result<()>> GroupSync<F> {
    pub fn new(flush: F) -> Self {
        GroupSync {
            flush,
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
        }
    }

    /// Return once a flush that started after this call has succeeded, or its error.
    pub fn sync(&self) -> io::Result<()> {
        let mut st = self.lock();
        let mine = st.open;
        loop {
            if st.done > mine {
                return match st.failures.get(&mine) {
                    Some(e) => Err(io::Error::other(e.clone())),
                    None => Ok(()),
                };
            }
            if st.running {
                st = self.finished.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Nothing runs, so every generation before the open one is done: it is ours.
            let generation = st.open;
            st.open += 1;
            st.running = true;
            drop(st);
            let result = (self.flush)();
            st = self.lock();
            st.running = false;
            st.done = generation + 1;
            if let Err(e) = result {
                st.failures.insert(generation, e.to_string());
            }
            let done = st.done;
            st.failures.retain(|g, _| g + KEPT_FAILURES > done);
            self.finished.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn concurrent_callers_share_flushes() {
        let flushes = Arc::new(AtomicU64::new(0));
        let counter = flushes.clone();
        let group = Arc::new(GroupSync::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            Ok(())
        }));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let group = group.clone();
                std::thread::spawn(move || group.sync())
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!((1..16).contains(&n), "{n} flushes for 16 callers");
    }

    #[test]
    fn a_flush_that_started_before_the_call_does_not_count() {
        // The flush records how many writes it saw; a caller must only return after a
        // flush that saw its write.
        let written = Arc::new(AtomicU64::new(0));
        let flushed = Arc::new(AtomicU64::new(0));
        let (w, f) = (written.clone(), flushed.clone());
        let group = Arc::new(GroupSync::new(move || {
            let seen = w.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            f.fetch_max(seen, Ordering::SeqCst);
            Ok(())
        }));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (group, written, flushed) = (group.clone(), written.clone(), flushed.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(7 * i));
                    let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                    group.sync().unwrap();
                    assert!(
                        flushed.load(Ordering::SeqCst) >= mine,
                        "returned before its write was flushed"
                    );
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn every_caller_of_a_failed_flush_gets_the_error_and_the_next_one_can_succeed() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = fail.clone();
        let group = Arc::new(GroupSync::new(move || {
            std::thread::sleep(Duration::from_millis(30));
            if f.load(Ordering::SeqCst) {
                Err(io::Error::other("disk on fire"))
            } else {
                Ok(())
            }
        }));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let group = group.clone();
                std::thread::spawn(move || group.sync())
            })
            .collect();
        for t in threads {
            let err = t.join().unwrap().unwrap_err();
            assert!(err.to_string().contains("disk on fire"), "{err}");
        }
        fail.store(false, Ordering::SeqCst);
        group.sync().unwrap();
    }
}
