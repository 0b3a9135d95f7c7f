//! Slot commands: status, mark-good, mark-bad, rollback, cancel, activate,
//! set-flags, boot-select, repair, disk init.

use clap::Subcommand;

use crate::cli::Globals;

#[derive(Subcommand, Debug)]
pub enum SlotCommand {
    /// Show both slots, their flags and which GPT copies are healthy.
    Status,
}

pub fn run(cmd: SlotCommand, _globals: &Globals) -> anyhow::Result<()> {
    match cmd {
        SlotCommand::Status => anyhow::bail!("status: not implemented yet"),
    }
}
