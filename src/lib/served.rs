//! What a mount serves: one version of the filesystem (its namespace and block cache),
//! which a read-only follower replaces with a newer one between requests.
//!
//! A writer serves one [`Generation`] for its whole life. A follower
//! (`mount.s3fs --ro` following a writer elsewhere) [`Served::switch`]es to each newer
//! metadata version it downloads; a file or directory opened before the switch keeps
//! the generation it was opened on until it is released, so an open file reads one
//! consistent version even if the writer deleted it meanwhile. A generation nothing
//! uses any more is finished (its cache shut down, its files removed) when dropped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::cache::BlockCache;
use crate::fs::Filesystem;

/// One metadata version, served.
pub struct Generation {
    pub fs: Arc<Filesystem>,
    pub cache: Arc<BlockCache>,
    /// Its metadata version.
    pub seq: u64,
    /// When it was published (Unix seconds).
    pub published: i64,
    /// A follower's: the directory of its DB and cache, removed once nothing uses it.
    dir: Option<PathBuf>,
}

impl Generation {
    pub fn new(fs: Arc<Filesystem>, cache: Arc<BlockCache>, seq: u64, published: i64) -> Generation {
        Generation {
            fs,
            cache,
            seq,
            published,
            dir: None,
        }
    }

    /// When dropped, shut the cache down and remove `dir`, which holds its DB and cache
    /// (a read-only mount's).
    pub fn owning(mut self, dir: PathBuf) -> Generation {
        self.dir = Some(dir);
        self
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            self.cache.shutdown();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The generation being served, and the ones open handles still use.
pub struct Served {
    current: RwLock<Arc<Generation>>,
    /// Followers only: each open file or directory handle and the generation it was
    /// opened on.
    handles: Option<Mutex<HashMap<u64, Arc<Generation>>>>,
    next_fh: AtomicU64,
}

impl Served {
    /// One generation for the mount's life (a writer, or a read-only mount of one
    /// version): handles are all 0.
    pub fn fixed(g: Generation) -> Served {
        Served {
            current: RwLock::new(Arc::new(g)),
            handles: None,
            next_fh: AtomicU64::new(1),
        }
    }

    /// A follower's: generations change, handles keep theirs.
    pub fn following(g: Generation) -> Served {
        Served {
            handles: Some(Mutex::new(HashMap::new())),
            ..Served::fixed(g)
        }
    }

    pub fn follows(&self) -> bool {
        self.handles.is_some()
    }

    pub fn current(&self) -> Arc<Generation> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serve `g` from the next request on; the previous generation lives on while open
    /// handles use it.
    pub fn switch(&self, g: Generation) {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(g),
        );
        // Dropped here, outside the lock, if nothing else holds it.
        drop(old);
    }

    /// A handle for a file or directory being opened, bound to the current generation
    /// (0, unbound, unless following).
    pub fn open(&self) -> (u64, Arc<Generation>) {
        let g = self.current();
        let Some(handles) = &self.handles else { return (0, g) };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        handles.lock().unwrap_or_else(|e| e.into_inner()).insert(fh, g.clone());
        (fh, g)
    }

    /// The generation handle `fh` was opened on (the current one for 0 or unknown).
    pub fn handle(&self, fh: u64) -> Arc<Generation> {
        self.handles
            .as_ref()
            .and_then(|h| h.lock().unwrap_or_else(|e| e.into_inner()).get(&fh).cloned())
            .unwrap_or_else(|| self.current())
    }

    /// Handle `fh` is closed.
    pub fn release(&self, fh: u64) {
        let released = self
            .handles
            .as_ref()
            .and_then(|h| h.lock().unwrap_or_else(|e| e.into_inner()).remove(&fh));
        // Outside the lock: the last user of an old generation finishes it.
        drop(released);
    }
}
