//! `check`: fetch and verify the feed, learn from the disk what runs and
//! what failed, and decide. Shared by `check`, `update` and `agent`.

use anyhow::{anyhow, Context};
use boot_flags::SlotId;
use serde_json::{json, Value};

use super::select::{self, Considered, Running};
use super::state::{State, StateDir};
use crate::cli::Globals;
use crate::config::Config;
use crate::device;
use crate::exit::refused;
use crate::feed::doc::{resolve_url, Release};
use crate::feed::time::Timestamp;
use crate::feed::{self, FeedKeyring};
use crate::install::policy;

/// What `check` found.
pub struct Outcome {
    pub state: State,
    pub booted: SlotId,
    pub running: Running,
    /// The feed's serial and expiry.
    pub serial: u64,
    pub expires: Timestamp,
    /// The release to install now, with its absolute URL.
    pub chosen: Option<(Release, String)>,
    /// Bytes the install of `chosen` would download now (docs/delta.md):
    /// the delta plan for a chunked image from a server honouring Range,
    /// else the image's length; `None` when not estimated.
    pub download_bytes: Option<u64>,
    /// Why nothing is installed, when `chosen` is None (or why it waits).
    pub reason: String,
    pub considered: Vec<Considered>,
    /// Something to tell the user about the last update (committed, failed).
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        json!({
            "update_available": self.chosen.is_some(),
            "release": self.chosen.as_ref().map(|(r, url)| json!({
                "version": r.version,
                "rollback_index": r.rollback_index,
                "url": url,
                "size": r.size,
                "sha256": r.sha256,
                "header_sha256": r.header_sha256,
                "download_bytes": self.download_bytes,
            })),
            "reason": self.reason,
            "booted_slot": self.booted.as_str(),
            "running_version": self.running.version.as_ref().map(|v| v.to_string()),
            "feed": {"serial": self.serial, "expires": self.expires.to_string()},
            "seed": self.state.seed,
            "releases": self.considered,
            "failed_versions": self.state.failed,
            "notes": self.notes,
        })
    }
}

/// Learn what became of the last update: committed, still on trial,
/// awaiting its reboot, or rolled back (then the version is failed here).
/// Changes `st` only; the caller saves it.
pub fn reconcile(
    st: &mut State,
    disk: &boot_flags::Disk<boot_flags::FileDevice>,
    booted: SlotId,
    now: Timestamp,
) -> Option<String> {
    let p = st.pending.clone()?;
    let Ok(target) = device::parse_slot(&p.slot) else {
        st.pending = None;
        return None;
    };
    if target == booted {
        if disk.flags(booted).successful {
            st.pending = None;
            return Some(format!("version {} committed in slot {booted}", p.version));
        }
        return Some(format!(
            "version {} is on trial in slot {booted}",
            p.version
        ));
    }
    if disk.next_boot() == Some(target) {
        return Some(format!(
            "version {} is installed in slot {target}, waiting for a reboot",
            p.version
        ));
    }
    st.pending = None;
    st.add_failed(
        &p.version,
        now,
        &format!("slot {target} rolled back to slot {booted}"),
    );
    Some(format!(
        "version {} was rolled back (slot {target}); it will not be installed again automatically",
        p.version
    ))
}

/// The bytes the install of the image at `url` would download now.
fn estimate_download(
    cfg: &Config,
    disk: &mut boot_flags::Disk<boot_flags::FileDevice>,
    booted: SlotId,
    url: &str,
    warn: crate::source::Warn,
) -> anyhow::Result<u64> {
    let keyring = policy::load_keyring(&crate::install::KeyArgs::default(), cfg)?;
    let src = crate::source::open(url, &crate::source::HttpOptions::from_config(cfg), warn)?;
    crate::install::delta::download_bytes(disk, booted, src, &keyring, cfg.signature_threshold)
}

/// The feed keyring: `agent.feed_keyring`, else the image keyring.
pub fn feed_keyring(cfg: &Config) -> anyhow::Result<FeedKeyring> {
    let path = cfg.agent.feed_keyring.as_ref().unwrap_or(&cfg.keyring);
    Ok(FeedKeyring::load(path)?)
}

/// Run the whole check. Saves the state (seed, serial, failed versions).
/// With `estimate`, the chosen release's `download_bytes` is computed
/// (`check`: its header and chunk tables are downloaded and the booted
/// slot is scanned, reading only); `update` does not, since its install
/// reports what it downloaded.
pub fn check(
    cfg: &Config,
    globals: &Globals,
    warn: crate::source::Warn,
    estimate: bool,
) -> anyhow::Result<Outcome> {
    cfg.agent.validate().map_err(|e| anyhow!("config: {e}"))?;
    let url = cfg
        .agent
        .feed_url
        .clone()
        .ok_or_else(|| anyhow!("no feed: set agent.feed_url in the config"))?;
    let compatible = cfg
        .compatible
        .clone()
        .ok_or_else(|| anyhow!("no compatible in the config: the device cannot pick releases"))?;
    let now = Timestamp::now();
    let sd = StateDir::new(&cfg.state_dir);
    let (mut st, _) = sd.load_or_new()?;
    let mut opened = device::open(globals, cfg, false)?;
    let booted = opened
        .disk
        .booted()
        .ok_or_else(|| anyhow!("the booted slot is unknown: pass --booted A|B on a disk image"))?;
    let mut notes = Vec::new();
    if let Some(n) = reconcile(&mut st, &opened.disk, booted, now) {
        notes.push(n);
    }
    // Save now: a rollback learnt must stick even when the feed fails.
    sd.save(&st)?;
    let installed = policy::installed(&mut opened.disk, booted)?;
    let running = Running {
        version: installed.as_ref().map(|i| i.version.clone()),
        rollback_index: installed.as_ref().map(|i| i.rollback_index).unwrap_or(0),
    };

    let bytes = super::fetch::fetch_feed(&url, cfg, warn)?;
    let ring = feed_keyring(cfg)?;
    let verified = feed::verify(&bytes, &ring, cfg.agent.feed_signature_threshold)
        .map_err(|e| refused(format!("{url}: {e}")))?;
    let last = st.last_serial.zip(st.last_feed_sha256.as_deref());
    feed::check_fresh(&verified, now, last).map_err(|e| refused(format!("{url}: {e}")))?;
    let d = verified.doc();
    if d.compatible != compatible {
        return Err(refused(format!(
            "{url}: {}",
            feed::FeedError::Incompatible {
                feed: d.compatible.clone(),
                device: compatible
            }
        )));
    }
    st.last_serial = Some(d.serial);
    st.last_feed_sha256 = Some(verified.sha256().to_string());
    sd.save(&st).context("saving the agent state")?;

    let (chosen, considered) = select::choose(&d.releases, &running, &st.failed, st.seed, now);
    let mut chosen = chosen.map(|r| (r.clone(), resolve_url(&url, &r.url)));
    let mut reason = match &chosen {
        Some((r, _)) => format!("update to {} available", r.version),
        None => match considered.first() {
            None => "the feed lists no release".into(),
            Some(c) => format!(
                "no update: newest release {}: {}",
                c.version,
                c.verdict.describe()
            ),
        },
    };
    // An update already installed and waiting for its reboot, or a booted
    // slot still on trial, is not the moment to install another.
    if let Some((r, _)) = &chosen {
        let other = booted.other();
        if opened.disk.next_boot() == Some(other) {
            let held = policy::installed(&mut opened.disk, other)?;
            if held.is_some_and(|h| h.version.to_string() == r.version) {
                reason = format!(
                    "{} is installed in slot {other}, waiting for a reboot",
                    r.version
                );
                chosen = None;
            }
        } else if !opened.disk.flags(booted).successful {
            reason = format!(
                "{} is available, but the booted slot {booted} is on trial: waiting for boot-check",
                r.version
            );
            chosen = None;
        }
    }
    let mut download_bytes = None;
    if let (true, Some((rel, url))) = (estimate, &chosen) {
        match estimate_download(cfg, &mut opened.disk, booted, url, super::stderr_warn()) {
            Ok(n) => download_bytes = Some(n),
            Err(e) => notes.push(format!(
                "the download size of {} is unknown: {e:#}",
                rel.version
            )),
        }
    }
    Ok(Outcome {
        download_bytes,
        state: st,
        booted,
        running,
        serial: d.serial,
        expires: d.expires,
        chosen,
        reason,
        considered,
        notes,
    })
}
