//! The device side of OTA updates: `slotctl check`, `update` and `agent`
//! (docs/feed.md).
//!
//! `check` fetches the signed feed (bounded in size), verifies it (trusted
//! signatures, not expired, serial not lower than the last one seen), then
//! picks the newest release this device may take now ([`select`]): newer
//! than the booted slot's, not pulled, not failed here, its wave open for
//! this device's seed. `update` then installs it through the install
//! pipeline, downloading it once, pinned to the feed's release
//! ([`crate::install::pin`]): the signed header is checked against the feed
//! before any write, the whole image's size and SHA-256 before the slot
//! record and the activation. `agent` does that in a loop.

pub mod check;
pub mod config;
pub mod fetch;
pub mod lastcheck;
pub mod run;
pub mod select;
pub mod state;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::cli::Globals;
use crate::config::Config;
use crate::feed::time::Timestamp;
use crate::install::pin::ImagePin;
use crate::install::{self, InstallArgs};
use crate::term::printable;
use lastcheck::{LastCheck, Outcome};
use state::{Pending, StateDir};

pub use state::failed_versions;

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Is there an update for this device now, and why or why not.
    Check,
    /// Check, then install what check chose (through the install pipeline).
    Update {
        /// Reboot into the new slot once it is installed.
        #[arg(long)]
        reboot: bool,
    },
    /// The OTA agent for a systemd service: check and update in a loop
    /// (interval with jitter, backoff on errors, reboot window), stopping
    /// cleanly on SIGTERM.
    Agent(AgentArgs),
    /// The agent's state: the update installed and awaiting its commit
    /// (pending), the versions that failed here, and the last feed check.
    AgentState,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Run one cycle and exit (for a systemd timer).
    #[arg(long)]
    pub once: bool,
}

/// Warnings (HTTP retries) go to stderr as they happen.
pub fn stderr_warn() -> crate::source::Warn {
    Box::new(|m| eprintln!("slotctl: warning: {}", crate::term::printable(m)))
}

pub fn run(cmd: AgentCommand, globals: &Globals) -> anyhow::Result<()> {
    let cfg = Config::load(globals)?;
    // A `[ddi]` table: the DDI server instead of the feed (docs/ddi.md).
    if let Some(ddi) = &cfg.ddi {
        return crate::ddi::run(cmd, &cfg, ddi, globals);
    }
    match cmd {
        AgentCommand::Check => {
            let out = check::check(&cfg, globals, stderr_warn(), true);
            let lc = match &out {
                Ok(o) => match &o.chosen {
                    Some((rel, _)) => LastCheck::now(
                        Outcome::UpdateAvailable,
                        Some(rel.version.clone()),
                        &o.reason,
                    ),
                    None => LastCheck::now(Outcome::UpToDate, None, &o.reason),
                },
                Err(e) => LastCheck::error(e),
            };
            lastcheck::record(&cfg.state_dir, &lc);
            let out = out?;
            if globals.json {
                println!("{}", serde_json::to_string_pretty(&out.to_json())?);
            } else {
                for n in &out.notes {
                    println!("{}", printable(n));
                }
                println!("{}", printable(&out.reason));
                if let Some(n) = out.download_bytes {
                    println!(
                        "download: {n} bytes ({})",
                        crate::install::counters::human(n)
                    );
                }
                for c in &out.considered {
                    let line = format!("  {}: {}", c.version, c.verdict.describe());
                    println!("{}", printable(&line));
                }
            }
            Ok(())
        }
        AgentCommand::Update { reboot } => {
            let installed = update(&cfg, globals, &AtomicBool::new(false))?;
            if reboot && installed.is_some() {
                crate::bootcheck::reboot(&cfg, globals)?;
            }
            Ok(())
        }
        AgentCommand::Agent(args) => run::agent(&cfg, globals, args.once),
        AgentCommand::AgentState => agent_state(&cfg, globals),
    }
}

/// `slotctl agent-state`: pending, failed versions, last check.
pub(crate) fn agent_state(cfg: &Config, globals: &Globals) -> anyhow::Result<()> {
    let st = StateDir::new(&cfg.state_dir).read()?;
    let last = lastcheck::read(&cfg.state_dir)?;
    let pending = st.as_ref().and_then(|s| s.pending.clone());
    let failed = st.map(|s| s.failed).unwrap_or_default();
    if globals.json {
        let v = serde_json::json!({
            "pending": pending,
            "failed_versions": failed,
            "last_check": last,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut lines = Vec::new();
    match &pending {
        Some(p) => lines.push(format!(
            "pending: {} in slot {} (installed {})",
            p.version, p.slot, p.installed_at
        )),
        None => lines.push("pending: none".to_string()),
    }
    if failed.is_empty() {
        lines.push("failed versions: none".to_string());
    } else {
        lines.push("failed versions:".to_string());
        for f in &failed {
            lines.push(format!("  {} (at {}): {}", f.version, f.at, f.reason));
        }
    }
    match &last {
        Some(l) => {
            let outcome = serde_json::to_value(l.outcome)?;
            let version = l
                .version
                .as_deref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default();
            lines.push(format!(
                "last check: {} {}{}: {}",
                l.at,
                outcome.as_str().unwrap_or("?"),
                version,
                l.message
            ));
        }
        None => lines.push("last check: never".to_string()),
    }
    for l in lines {
        println!("{}", printable(&l));
    }
    Ok(())
}

/// Check, and install the chosen release. Returns its version when one was
/// installed (and activated). When `stop` is set (SIGTERM in the agent) no
/// new download or install is started; one already running goes to its end.
///
/// Records the outcome as the last check ([`lastcheck`]).
pub fn update(
    cfg: &Config,
    globals: &Globals,
    stop: &AtomicBool,
) -> anyhow::Result<Option<String>> {
    let res = update_inner(cfg, globals, stop);
    let lc = match &res {
        Ok((_, lc)) => lc.clone(),
        Err(e) => LastCheck::error(e),
    };
    lastcheck::record(&cfg.state_dir, &lc);
    res.map(|(installed, _)| installed)
}

fn update_inner(
    cfg: &Config,
    globals: &Globals,
    stop: &AtomicBool,
) -> anyhow::Result<(Option<String>, LastCheck)> {
    let out = check::check(cfg, globals, stderr_warn(), false)?;
    if !globals.json {
        for n in &out.notes {
            println!("{}", printable(n));
        }
    }
    let Some((rel, url)) = out.chosen.clone() else {
        if globals.json {
            println!("{}", serde_json::to_string(&out.to_json())?);
        } else {
            println!("{}", printable(&out.reason));
        }
        return Ok((None, LastCheck::now(Outcome::UpToDate, None, &out.reason)));
    };
    let from = out
        .running
        .version
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "an unrecorded version".into());
    if globals.json {
        let line =
            serde_json::json!({"event": "update", "from": from, "to": rel.version, "url": url});
        println!("{line}");
    } else {
        let line = format!("updating from {from} to {} ({url})", rel.version);
        println!("{}", printable(&line));
    }
    if stop.load(Ordering::SeqCst) {
        let v = printable(&rel.version);
        println!("stop requested: not starting the update to {v}");
        let lc = LastCheck::now(
            Outcome::UpdateAvailable,
            Some(rel.version.clone()),
            "stop requested: not started",
        );
        return Ok((None, lc));
    }
    // One download: the install reads the image once, checks its header
    // against the feed's release before any write and the whole image's
    // size and SHA-256 before the slot record and the activation.
    let pin = ImagePin::from_release(&rel)?;
    let report = install::install(InstallArgs::unattended(url.clone()), globals, Some(pin))?;
    let sd = StateDir::new(&cfg.state_dir);
    let mut st = sd.read()?.unwrap_or(out.state);
    st.pending = Some(Pending {
        version: rel.version.clone(),
        slot: report.slot.as_str().to_string(),
        installed_at: Timestamp::now(),
    });
    sd.save(&st).context("saving the agent state")?;
    let lc = LastCheck::now(
        Outcome::Installed,
        Some(rel.version.clone()),
        report.message.clone(),
    );
    Ok((Some(rel.version), lc))
}
