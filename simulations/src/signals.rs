//! Ctrl-C (SIGINT) and SIGTERM during a sweep: the run under way stops at its next check
//! (tier 1 every 65 536 events), what it started is stopped and removed (tiers 2 and 3: nodes,
//! daemons, state directories, network namespaces), and the rows of the runs finished before
//! it are written, instead of the process dying with all of that lost or left behind.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT or SIGTERM once [`stop_on_signals`] is in place.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    // Only an atomic store: all a signal handler may safely do.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM only ask the run to stop (see [`interrupted`]).
pub fn stop_on_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// Whether a signal asked the run to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Resolves once a signal asked the run to stop (checked every 100 ms).
pub async fn until_interrupted() {
    while !interrupted() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
