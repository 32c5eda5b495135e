//! The exit signals of a mount: blocked in every thread, taken by the main loop.

use std::time::Duration;

/// Signals that end the mount cleanly. They are blocked in every thread (call
/// [`block_exit_signals`] before any thread starts) and taken synchronously by the main
/// thread, so a worker thread never dies of them.
const EXIT_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in EXIT_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block the exit signals in the calling thread and every thread started after.
pub fn block_exit_signals() {
    let set = signal_set();
    // SAFETY: changes the calling thread's signal mask only.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Wait up to `timeout` for an exit signal; returns it if one came.
pub(super) fn wait_signal(timeout: Duration) -> Option<i32> {
    let set = signal_set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait with a valid set and timeout.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}
