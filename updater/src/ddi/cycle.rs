//! One DDI cycle (docs/ddi.md): learn how the last action ended and tell
//! the server; poll the controller base; send `configData` when asked;
//! follow `deploymentBase`; install its artifact through the install
//! pipeline ([`super::deploy`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context};
use boot_flags::{Disk, FileDevice, SlotId};

use super::client::Client;
use super::config::DdiConfig;
use super::model::{self, ControllerBase, DeploymentBase};
use super::{cancel, deploy, feedback, state};
use crate::agent::check::reconcile;
use crate::agent::state::StateDir;
use crate::cli::Globals;
use crate::config::Config;
use crate::device;
use crate::feed::time::Timestamp;
use crate::install::policy;
use crate::term::printable;

/// What a cycle did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The polling interval the server asked for.
    pub sleep: Option<Duration>,
    /// The version installed in this cycle.
    pub installed: Option<String>,
}

/// How far a cycle may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `check`: poll and read the deployment; no feedback, no install.
    Check,
    /// `update` and `agent`: everything.
    Update,
}

pub fn say(globals: &Globals, event: &str, msg: &str) {
    if globals.json {
        println!("{}", serde_json::json!({"event": event, "message": msg}));
    } else {
        println!("{}", printable(msg));
    }
}

/// The version in a slot's record, as a configData attribute.
fn slot_version(disk: &mut Disk<FileDevice>, slot: SlotId) -> String {
    match policy::installed(disk, slot) {
        Ok(Some(i)) => i.version.to_string(),
        Ok(None) => "none".into(),
        Err(_) => "unreadable".into(),
    }
}

/// The attributes sent as configData. `hw_revision` carries the
/// compatible string (the `.swu` wrapper's hardware-compatibility, which
/// goosebit matches), `sw_version` the booted slot's version.
pub fn attributes(
    cfg: &Config,
    disk: &mut Disk<FileDevice>,
    booted: SlotId,
) -> BTreeMap<String, String> {
    let compatible = cfg.compatible.clone().unwrap_or_default();
    let mut a = BTreeMap::new();
    a.insert("compatible".into(), compatible.clone());
    a.insert("hw_revision".into(), compatible);
    a.insert("slot_a_version".into(), slot_version(disk, SlotId::A));
    a.insert("slot_b_version".into(), slot_version(disk, SlotId::B));
    a.insert("booted_slot".into(), booted.as_str().into());
    a.insert("sw_version".into(), slot_version(disk, booted));
    a.insert("slotctl_version".into(), env!("CARGO_PKG_VERSION").into());
    a
}

/// Learn how the action installed earlier ended and, in Update mode, tell
/// the server: `success` once the booted slot is the installed one and
/// boot-check has committed it; `failure` when the device runs the other
/// slot and the installed one no longer boots next (it fell back). The
/// action file is removed once the server took the news. Returns true
/// while the action is still open (awaiting its reboot or boot-check).
fn settle(
    cfg: &Config,
    client: &Client,
    disk: &Disk<FileDevice>,
    booted: SlotId,
    mode: Mode,
    globals: &Globals,
) -> anyhow::Result<bool> {
    // The agent state's own memory first: a rollback marks the version
    // failed here, whichever backend installed it.
    let sd = StateDir::new(&cfg.state_dir);
    let (mut st, _) = sd.load_or_new()?;
    if let Some(note) = reconcile(&mut st, disk, booted, Timestamp::now()) {
        say(globals, "note", &note);
    }
    sd.save(&st)?;
    let Some(a) = state::read(&cfg.state_dir)? else {
        return Ok(false);
    };
    let target = device::parse_slot(&a.slot)?;
    let (success, details) = if target == booted {
        if !disk.flags(booted).successful {
            let m = format!(
                "action {}: {} is on trial in slot {booted}, waiting for boot-check",
                a.id, a.version
            );
            say(globals, "waiting", &m);
            return Ok(true);
        }
        let m = format!("{} committed in slot {booted} by boot-check", a.version);
        (true, vec![m])
    } else if disk.next_boot() == Some(target) {
        let m = format!(
            "action {}: {} is installed in slot {target}, waiting for a reboot",
            a.id, a.version
        );
        say(globals, "waiting", &m);
        return Ok(true);
    } else {
        let m = format!(
            "{} in slot {target} did not commit: the device fell back to slot {booted} (boot-check failed or the boot did not come up)",
            a.version
        );
        (false, vec![m])
    };
    if mode == Mode::Check {
        say(
            globals,
            "note",
            &format!("action {}: {} (not yet reported)", a.id, details[0]),
        );
        return Ok(false);
    }
    feedback::closed(client, &a.feedback, success, &details)
        .with_context(|| format!("reporting the end of action {}", a.id))?;
    state::clear(&cfg.state_dir)?;
    let verdict = if success { "success" } else { "failure" };
    say(
        globals,
        "reported",
        &format!("action {}: reported {verdict}: {}", a.id, details[0]),
    );
    Ok(false)
}

pub fn run(
    cfg: &Config,
    ddi: &DdiConfig,
    globals: &Globals,
    mode: Mode,
    stop: &AtomicBool,
) -> anyhow::Result<Outcome> {
    let client = Client::new(cfg, ddi)?;
    let mut opened = device::open(globals, cfg, false)?;
    let booted = opened
        .disk
        .booted()
        .ok_or_else(|| anyhow!("the booted slot is unknown: pass --booted A|B on a disk image"))?;
    let open_action = settle(cfg, &client, &opened.disk, booted, mode, globals)?;

    let base: ControllerBase = client.get_json(&client.base)?;
    let mut out = Outcome {
        sleep: base.sleep(),
        installed: None,
    };
    if let Some(href) = base.link("configData") {
        if mode == Mode::Update {
            let attrs = attributes(cfg, &mut opened.disk, booted);
            client
                .send_json("PUT", href, &model::config_data(&attrs))
                .context("sending configData")?;
            say(globals, "config-data", "sent configData (the server asked)");
        } else {
            say(globals, "config-data", "the server asks for configData");
        }
    }
    // A cancel first: hawkBit links it instead of the deployment it stops.
    let mut cancelled = None;
    if let Some(href) = base.link("cancelAction") {
        let answer = cancel::handle(cfg, &client, &opened.disk, booted, href, mode, globals)?;
        if let cancel::Answer::Cancelled { id } = answer {
            cancelled = Some(id);
        }
    }
    let Some(href) = base.link("deploymentBase").map(str::to_string) else {
        say(globals, "idle", "no deployment offered");
        return Ok(out);
    };
    let dep: DeploymentBase = client.get_json(&href)?;
    let Some(id) = dep.action_id() else {
        return Err(anyhow!("{href}: the deployment has no action id"));
    };
    if cancelled.as_deref() == Some(id.as_str()) {
        say(
            globals,
            "idle",
            &format!("action {id}: cancelled, not taken"),
        );
        return Ok(out);
    }
    let Some(deployment) = dep.deployment else {
        say(
            globals,
            "idle",
            &format!("action {id}: no deployment in it"),
        );
        return Ok(out);
    };
    if open_action {
        say(
            globals,
            "waiting",
            &format!("action {id} offered; the last action is not closed yet"),
        );
        return Ok(out);
    }
    if !opened.disk.flags(booted).successful {
        say(
            globals,
            "waiting",
            &format!("action {id} offered, but the booted slot {booted} is on trial: waiting for boot-check"),
        );
        return Ok(out);
    }
    let fb = feedback::feedback_url(&href);
    let plan = match deploy::plan(&id, &deployment) {
        Ok(p) => p,
        Err(reason) => {
            if mode == Mode::Update {
                feedback::closed(&client, &fb, false, std::slice::from_ref(&reason))?;
            }
            return Err(crate::exit::refused(format!("action {id}: {reason}")));
        }
    };
    say(
        globals,
        "deployment",
        &format!(
            "action {id}: {} {} offered (download {}, update {})",
            plan.artifact.filename,
            plan.version.as_deref().unwrap_or("(no version)"),
            deployment.download.as_deref().unwrap_or("-"),
            deployment.update.as_deref().unwrap_or("-"),
        ),
    );
    // `skip` (hawkBit: not now) and a closed maintenance window: wait.
    // The download streams into the slot, so an update that may not be
    // installed yet is not downloaded yet either.
    let skip = |v: &Option<String>| v.as_deref() == Some("skip");
    if skip(&deployment.download)
        || skip(&deployment.update)
        || deployment.maintenance_window.as_deref() == Some("unavailable")
    {
        say(
            globals,
            "waiting",
            &format!(
                "action {id}: the server says not now (skip, or outside its maintenance window)"
            ),
        );
        return Ok(out);
    }
    // The version offered already runs here (an operator who forces an
    // update again, a server that missed the last report): nothing to
    // download; the action is closed as a success.
    let running = policy::installed(&mut opened.disk, booted)?.map(|i| i.version.to_string());
    if plan.version.is_some() && plan.version == running {
        let m = format!(
            "{} already runs in slot {booted}: nothing to install",
            running.unwrap_or_default()
        );
        if mode == Mode::Update {
            feedback::closed(&client, &fb, true, std::slice::from_ref(&m))?;
            say(
                globals,
                "reported",
                &format!("action {id}: reported success: {m}"),
            );
        } else {
            say(globals, "note", &format!("action {id}: {m}"));
        }
        return Ok(out);
    }
    if mode == Mode::Check {
        return Ok(out);
    }
    if stop.load(Ordering::SeqCst) {
        say(
            globals,
            "stop",
            &format!("stop requested: not starting action {id}"),
        );
        return Ok(out);
    }
    drop(opened);
    out.installed = deploy::install(cfg, globals, &client, &plan, &fb)?;
    Ok(out)
}
