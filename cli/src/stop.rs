//! Stopping on a signal: the first SIGINT (Ctrl-C) or SIGTERM (what `kill`, `timeout` and batch
//! schedulers send) asks training to save a checkpoint and stop, with exit status 128 + the signal
//! (130, 143); a second one exits at once (safe: a checkpoint is complete or absent at every
//! instant).

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked to stop; 0 while none has.
static REQUESTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    if REQUESTED.swap(signal, Ordering::SeqCst) != 0 {
        // SAFETY: `_exit` is async-signal-safe (unlike `exit`, it runs no handlers).
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Routes SIGINT and SIGTERM to [`requested`] from now on.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler does only async-signal-safe work (an atomic swap, `_exit`).
        unsafe { libc::signal(signal, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

/// The signal that asked to stop, if one has.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}
