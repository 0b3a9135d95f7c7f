//! `slotctl agent`: the loop a systemd service runs.
//!
//! Each cycle: check the feed, install what it offers, reboot into it when
//! the config allows (`agent.reboot`, inside `agent.reboot_window`). Then
//! sleep the interval plus a random jitter; after an error sleep a backoff
//! that doubles up to its maximum. SIGTERM and SIGINT are blocked and
//! received by a thread that only sets a flag: sleeps end at once, no new
//! download, install or reboot is started, and an install in progress runs
//! to its end (every step of it leaves a state a
//! power cut could have left, and the state file is written atomically), so
//! a stop never leaves anything half-written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use super::state::{random_below, StateDir};
use crate::cli::Globals;
use crate::config::Config;
use crate::device;
use crate::feed::time::Timestamp;

/// A flag set by SIGTERM/SIGINT.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Block before any other thread exists, so every thread inherits it and
    // only the waiter below receives the signals.
    set.thread_block()?;
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("slotctl agent: {sig} received, stopping");
            f.store(true, Ordering::SeqCst);
        }
    });
    Ok(flag)
}

/// Sleep up to `d`, returning early (true) when stopped. A `d` past what
/// an `Instant` can hold (the config's bounds keep it far below) sleeps
/// until stopped.
pub(crate) fn sleep(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now().checked_add(d);
    while end.is_none_or(|end| Instant::now() < end) {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        let left = end.map_or(Duration::MAX, |end| {
            end.saturating_duration_since(Instant::now())
        });
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    stop.load(Ordering::SeqCst)
}

/// True when an installed update waits for its reboot.
fn reboot_pending(cfg: &Config, globals: &Globals) -> anyhow::Result<bool> {
    let Some(st) = StateDir::new(&cfg.state_dir).read()? else {
        return Ok(false);
    };
    let Some(p) = st.pending else {
        return Ok(false);
    };
    let opened = device::open(globals, cfg, false)?;
    let target = device::parse_slot(&p.slot)?;
    Ok(opened.disk.booted() != Some(target) && opened.disk.next_boot() == Some(target))
}

/// One cycle: update, then reboot if one waits and the window is open
/// (and no stop was asked for meanwhile).
fn cycle(cfg: &Config, globals: &Globals, stop: &AtomicBool) -> anyhow::Result<()> {
    if let Some(v) = super::update(cfg, globals, stop)? {
        println!("slotctl agent: installed {}", crate::term::printable(&v));
    }
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    reboot_if_due(cfg, globals)
}

/// Reboot when an installed update waits for it, `agent.reboot` is set and
/// the reboot window is open (shared with the DDI backend).
pub(crate) fn reboot_if_due(cfg: &Config, globals: &Globals) -> anyhow::Result<()> {
    if cfg.agent.reboot && reboot_pending(cfg, globals)? {
        let now = Timestamp::now();
        match cfg.agent.window() {
            Some(w) if !w.contains(now) => println!(
                "slotctl agent: reboot into the new slot deferred to the reboot window ({}s from now)",
                w.wait(now)
            ),
            _ => {
                println!("slotctl agent: rebooting into the new slot");
                crate::bootcheck::reboot(cfg, globals)?;
            }
        }
    }
    Ok(())
}

pub fn agent(cfg: &Config, globals: &Globals, once: bool) -> anyhow::Result<()> {
    cfg.agent
        .validate()
        .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    if cfg.agent.feed_url.is_none() {
        anyhow::bail!("no feed: set agent.feed_url in the config");
    }
    if once {
        return cycle(cfg, globals, &AtomicBool::new(false));
    }
    let stop = stop_flag()?;
    let a = &cfg.agent;
    let mut backoff = a.backoff_initial_secs;
    println!(
        "slotctl agent: checking {} every {}s (+ up to {}s jitter)",
        a.feed_url.as_deref().unwrap_or("(no feed_url)"),
        a.interval_secs,
        a.jitter_secs
    );
    while !stop.load(Ordering::SeqCst) {
        let wait = match cycle(cfg, globals, &stop) {
            Ok(()) => {
                backoff = a.backoff_initial_secs;
                let bound = u32::try_from(a.jitter_secs.saturating_add(1)).unwrap_or(u32::MAX);
                let jitter = random_below(bound).map(u64::from).unwrap_or(0);
                let mut wait = a.interval_secs.saturating_add(jitter);
                // A reboot waiting for its window: wake when it opens.
                if a.reboot && reboot_pending(cfg, globals).unwrap_or(false) {
                    if let Some(w) = a.window() {
                        wait = wait.min(w.wait(Timestamp::now()).max(1));
                    }
                }
                wait
            }
            Err(e) => {
                let line = format!("{e:#}").replace('\n', " ");
                let line = crate::term::printable(&line);
                eprintln!("slotctl agent: error: {line}; retrying in {backoff}s");
                let w = backoff;
                backoff = (backoff.saturating_mul(2)).min(a.backoff_max_secs);
                w
            }
        };
        if sleep(&stop, Duration::from_secs(wait)) {
            break;
        }
    }
    println!("slotctl agent: stopped");
    Ok(())
}
