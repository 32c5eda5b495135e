//! The process-wide tokio runtime that all object I/O runs on.
//!
//! Tools and FUSE threads are plain threads; they enter the runtime with [`block_on`].
//! Never call [`block_on`] from inside a runtime worker.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("s3fs-io")
            .build()
            .expect("cannot start the I/O runtime")
    })
}

/// Run `fut` to completion on the I/O runtime from a non-runtime thread.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    runtime().block_on(fut)
}
