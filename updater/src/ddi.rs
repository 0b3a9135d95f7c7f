//! The hawkBit DDI backend of `check`, `update` and `agent` (docs/ddi.md),
//! chosen by a `[ddi]` table in the config instead of the signed feed.
//!
//! The server says what to install and hears how it went; the device
//! still decides: the image's own signatures against the keyring, its
//! compatible, the rollback floor and the failed-versions memory apply as
//! for any install.

pub mod artifact;
pub mod cancel;
pub mod client;
pub mod config;
pub mod cycle;
pub mod deploy;
pub mod feedback;
pub mod model;
pub mod state;
pub mod unwrap;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::agent::state::random_below;
use crate::agent::AgentCommand;
use crate::cli::Globals;
use crate::config::Config;
use config::DdiConfig;
use cycle::Mode;

/// `check`, `update` and `agent` with a `[ddi]` table.
pub fn run(
    cmd: AgentCommand,
    cfg: &Config,
    ddi: &DdiConfig,
    globals: &Globals,
) -> anyhow::Result<()> {
    let no_stop = AtomicBool::new(false);
    match cmd {
        AgentCommand::Check => recorded(cfg, ddi, globals, Mode::Check, &no_stop).map(drop),
        AgentCommand::Update { reboot } => {
            let out = recorded(cfg, ddi, globals, Mode::Update, &no_stop)?;
            if reboot && out.installed.is_some() {
                crate::bootcheck::reboot(cfg, globals)?;
            }
            Ok(())
        }
        AgentCommand::Agent(args) => agent(cfg, ddi, globals, args.once),
        // The same state files as with the feed (`agent.json`,
        // `last-check.json`); the open DDI action is in `ddi-action.json`.
        AgentCommand::AgentState => crate::agent::agent_state(cfg, globals),
    }
}

/// One cycle, its outcome recorded as the last check
/// (`last-check.json`, as the feed's cycles record theirs).
fn recorded(
    cfg: &Config,
    ddi: &DdiConfig,
    globals: &Globals,
    mode: Mode,
    stop: &AtomicBool,
) -> anyhow::Result<cycle::Outcome> {
    use crate::agent::lastcheck::{self, LastCheck, Outcome};
    let res = cycle::run(cfg, ddi, globals, mode, stop);
    let lc = match &res {
        Ok(out) => match &out.installed {
            Some(v) => LastCheck::now(
                Outcome::Installed,
                Some(v.clone()),
                format!("installed {v} from the DDI server"),
            ),
            None => LastCheck::now(
                Outcome::UpToDate,
                None,
                "the DDI server has nothing to install now",
            ),
        },
        Err(e) => LastCheck::error(e),
    };
    lastcheck::record(&cfg.state_dir, &lc);
    res
}

/// The wait after a good cycle: the server's polling interval (else
/// `agent.interval_secs`) plus a random jitter of at most
/// `agent.jitter_secs` and at most a tenth of that interval.
fn wait_after(cfg: &Config, sleep: Option<Duration>) -> Duration {
    let base = sleep.unwrap_or(Duration::from_secs(cfg.agent.interval_secs));
    let cap = cfg.agent.jitter_secs.min(base.as_secs() / 10);
    let bound = u32::try_from(cap.saturating_add(1)).unwrap_or(u32::MAX);
    let jitter = random_below(bound).map(u64::from).unwrap_or(0);
    base + Duration::from_secs(jitter)
}

fn agent(cfg: &Config, ddi: &DdiConfig, globals: &Globals, once: bool) -> anyhow::Result<()> {
    cfg.agent
        .validate()
        .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let one = |stop: &AtomicBool| -> anyhow::Result<cycle::Outcome> {
        let out = recorded(cfg, ddi, globals, Mode::Update, stop)?;
        if let Some(v) = &out.installed {
            println!("slotctl agent: installed {}", crate::term::printable(v));
        }
        if !stop.load(Ordering::SeqCst) {
            crate::agent::run::reboot_if_due(cfg, globals)?;
        }
        Ok(out)
    };
    if once {
        return one(&AtomicBool::new(false)).map(drop);
    }
    let stop = crate::agent::run::stop_flag()?;
    let a = &cfg.agent;
    let mut backoff = a.backoff_initial_secs;
    println!(
        "slotctl agent: polling the DDI server {} (tenant {})",
        crate::term::printable(&ddi.server_url),
        crate::term::printable(&ddi.tenant)
    );
    while !stop.load(Ordering::SeqCst) {
        let wait = match one(&stop) {
            Ok(out) => {
                backoff = a.backoff_initial_secs;
                wait_after(cfg, out.sleep)
            }
            Err(e) => {
                let line = format!("{e:#}").replace('\n', " ");
                let line = crate::term::printable(&line);
                eprintln!("slotctl agent: error: {line}; retrying in {backoff}s");
                let w = backoff;
                backoff = backoff.saturating_mul(2).min(a.backoff_max_secs);
                Duration::from_secs(w)
            }
        };
        if crate::agent::run::sleep(&stop, wait) {
            break;
        }
    }
    println!("slotctl agent: stopped");
    Ok(())
}
