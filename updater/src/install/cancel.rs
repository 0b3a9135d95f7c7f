//! Cancelling `slotctl install` with SIGTERM or SIGINT (Ctrl-C; the D-Bus
//! service's `Cancel`) before its point of no return.
//!
//! [`arm`] blocks both signals before any other thread exists (every thread
//! inherits the mask, so only the waiter it starts receives them) and sets
//! a process-wide gate to "running". [`install_on`](super::install_on)
//! passes [`commit_point`] right before its final flags step (activate,
//! factory mark-good, or the no-activate message): the gate goes to
//! "committing".
//!
//! A signal while the gate is "running" ends the process at once with exit
//! code 6 ([`crate::exit::CANCELLED`]): with `--json` a last
//! `{"event":"result","ok":false,"cancelled":true,"error":...}` line, and
//! the one-line error on stderr. Ending the process anywhere before the
//! commit point is milder than the power cut the install already survives
//! (DESIGN.md, invariant 4): the target is left invalidated if the
//! invalidation happened (else untouched), the booted slot untouched, and
//! the lock goes with the process. A signal after the commit point only
//! prints "too late to cancel: activating" and the install finishes. If the
//! main thread reaches the commit point after a cancel was decided, it
//! waits there for the exit instead of activating.
//!
//! Unarmed (the agent, the in-process tests), [`commit_point`] does nothing.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use nix::sys::signal::{SigSet, Signal};

const UNARMED: u8 = 0;
const RUNNING: u8 = 1;
const COMMITTING: u8 = 2;
const CANCELLED: u8 = 3;

static GATE: AtomicU8 = AtomicU8::new(UNARMED);

/// Block SIGTERM and SIGINT and wait for them on a thread. Call before any
/// other thread exists; `json`: the caller prints JSON lines.
pub fn arm(json: bool) -> anyhow::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    GATE.store(RUNNING, Ordering::SeqCst);
    std::thread::spawn(move || loop {
        let Ok(sig) = set.wait() else { return };
        match GATE.compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => cancel(sig, json),
            Err(_) => eprintln!("slotctl: {sig} received: too late to cancel: activating"),
        }
    });
    Ok(())
}

/// The point of no return: after it a signal no longer cancels. Waits for
/// the process to end when a cancel was already decided.
pub fn commit_point() {
    if GATE
        .compare_exchange(RUNNING, COMMITTING, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
        && GATE.load(Ordering::SeqCst) == CANCELLED
    {
        // The waiter is printing its result and exiting.
        loop {
            std::thread::park();
        }
    }
}

fn cancel(sig: Signal, json: bool) -> ! {
    let error = format!(
        "install cancelled by {} before activation: the target slot is not activated, the booted slot untouched",
        sig.as_str()
    );
    eprintln!("slotctl: error: {error}");
    // Stdout stays locked until the exit: no progress line of the main
    // thread follows the result line.
    let mut out = std::io::stdout().lock();
    if json {
        let line = serde_json::json!({
            "event": "result", "ok": false, "cancelled": true, "error": error,
        });
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    std::process::exit(i32::from(crate::exit::CANCELLED));
}
