//! `cancelAction` (docs/ddi.md): the server asks to stop an action. GET the
//! link as given, then answer on `{link}/feedback` (DDI's
//! `.../cancelAction/{id}/feedback`):
//!
//! - the action is not activated on this device (never started, waiting
//!   for `skip` or a maintenance window, or its download failed): nothing
//!   bootable was written (the install pipeline invalidates the target slot
//!   before writing and only its last step activates it), so it is dropped:
//!   `closed` + `success`;
//! - the action's slot is activated (it boots next, or it runs): too late,
//!   the reboot and boot-check decide now: `rejected` (hawkBit's execution
//!   for a refused cancel: the action goes back to running) with the reason
//!   in `details`; its end is reported later on its deployment's feedback.

use anyhow::{anyhow, Context};
use boot_flags::{Disk, FileDevice, SlotId};

use super::client::Client;
use super::cycle::{say, Mode};
use super::model::CancelAction;
use super::{feedback, state};
use crate::cli::Globals;
use crate::config::Config;
use crate::device;

/// What the device answered to a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Dropped: `closed` + `success`.
    Cancelled { id: String },
    /// Too late: `rejected`.
    Refused { id: String },
}

/// Follow the `cancelAction` link `href`: decide and (in Update mode)
/// answer. Returns the decision.
pub fn handle(
    cfg: &Config,
    client: &Client,
    disk: &Disk<FileDevice>,
    booted: SlotId,
    href: &str,
    mode: Mode,
    globals: &Globals,
) -> anyhow::Result<Answer> {
    let c: CancelAction = client.get_json(href)?;
    let id = c
        .stop_id()
        .ok_or_else(|| anyhow!("{href}: the cancel names no action (no id, no stopId)"))?;
    let open = state::read(&cfg.state_dir)?.filter(|a| a.id == id);
    let (answer, details) = match open {
        None => (
            Answer::Cancelled { id: id.clone() },
            format!(
                "action {id} cancelled before activation: nothing of it boots on this device (slot {booted} runs, as before)"
            ),
        ),
        Some(a) => {
            let target = device::parse_slot(&a.slot)?;
            let now = if target == booted {
                if disk.flags(booted).successful {
                    "it runs, committed by boot-check"
                } else {
                    "it runs, on trial until boot-check"
                }
            } else {
                "it boots next"
            };
            (
                Answer::Refused { id: id.clone() },
                format!(
                    "action {id} cannot be cancelled: {} is already activated in slot {target} ({now}); its result will be reported",
                    a.version
                ),
            )
        }
    };
    if mode == Mode::Check {
        say(
            globals,
            "note",
            &format!("the server cancels: {details} (not yet answered)"),
        );
        return Ok(answer);
    }
    let fb = feedback::feedback_url(href);
    let details = vec![details];
    match &answer {
        Answer::Cancelled { .. } => {
            feedback::closed(client, &fb, true, &details)
                .with_context(|| format!("answering the cancel of action {id}"))?;
            say(globals, "cancelled", &details[0]);
        }
        Answer::Refused { .. } => {
            feedback::rejected(client, &fb, &details)
                .with_context(|| format!("answering the cancel of action {id}"))?;
            say(globals, "cancel-refused", &details[0]);
        }
    }
    Ok(answer)
}
