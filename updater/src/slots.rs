//! Slot commands: status, mark-good, mark-bad, rollback, cancel, activate,
//! set-flags, boot-select, repair, disk init.

/// `print!` that returns write errors, treating a closed pipe
/// (`slotctl status | head`) as success.
macro_rules! out {
    ($($t:tt)*) => { $crate::slots::write_stdout(&format!($($t)*))? };
}

/// `println!` counterpart of `out!`.
macro_rules! outln {
    ($($t:tt)*) => { $crate::slots::write_stdout(&format!("{}\n", format_args!($($t)*)))? };
}

mod boot;
mod chain;
mod init;
mod status;

use anyhow::anyhow;
use boot_flags::{Flags, Nibble, Op};
use clap::Subcommand;

use crate::cli::Globals;
use crate::config::Config;
use crate::device::{self, parse_slot, Opened};
use crate::exit;

#[derive(Subcommand, Debug)]
pub enum SlotCommand {
    /// Show both slots, their flags and which GPT copies are healthy.
    Status,
    /// Mark the booted slot's boot good (successful=1).
    MarkGood,
    /// Mark a slot bad (priority, tries, successful all 0); default: the
    /// booted slot. Refused on the only bootable slot unless --force.
    MarkBad {
        /// A or B (default: the booted slot).
        slot: Option<String>,
        /// Allow leaving no bootable slot.
        #[arg(long)]
        force: bool,
    },
    /// Boot the other slot next (it must be bootable): other priority 2,
    /// booted priority 1.
    Rollback,
    /// Undo an activation that has not booted yet.
    Cancel,
    /// Make SLOT the next boot on trial: priority 2, tries N, successful 0;
    /// the booted slot gets priority 1.
    Activate {
        /// A or B.
        slot: String,
        /// Tries for the new slot (1..=15) [default: config `tries`, 3].
        #[arg(long)]
        tries: Option<u8>,
    },
    /// Set a slot's flags exactly (the technician's escape hatch); fields
    /// not given keep their value.
    SetFlags {
        /// A or B.
        slot: String,
        /// Priority 0..=15 (0 = never boot).
        #[arg(long)]
        priority: Option<u8>,
        /// Tries remaining 0..=15.
        #[arg(long)]
        tries: Option<u8>,
        /// 0 or 1.
        #[arg(long)]
        successful: Option<u8>,
    },
    /// Boot stage: repair a bad GPT copy, pick the slot (giving up a
    /// committed slot whose boots did not reach boot-check too often, for a
    /// good other slot), count the boot, use one try if it is on trial,
    /// verify the slot (--keyring: its record, its dm-verity roots; a slot
    /// that fails is given up), print SLOTCTL_* shell assignments; with
    /// --kexec, boot the slot's own kernel (docs/verified-boot.md).
    BootSelect(boot::BootSelectArgs),
    /// Rewrite a bad GPT copy from the good one.
    Repair,
    /// Disk image commands.
    #[command(subcommand)]
    Disk(init::DiskCommand),
}

/// Write to stdout; a closed pipe is not an error.
pub fn write_stdout(s: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|()| o.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Turn a library error into the CLI's: refusals exit 3, naming what to do.
pub fn lib_error(e: boot_flags::Error, what: &str) -> anyhow::Error {
    match e {
        boot_flags::Error::Refused(r @ boot_flags::Refusal::NeedBooted { .. }) => {
            exit::refused(format!("{r}: pass --booted A|B"))
        }
        boot_flags::Error::Refused(r) => exit::refused(r.to_string()),
        other => anyhow::Error::new(other).context(what.to_string()),
    }
}

pub fn run(cmd: SlotCommand, globals: &Globals) -> anyhow::Result<()> {
    if let SlotCommand::Disk(cmd) = cmd {
        return init::run(cmd, globals);
    }
    let config = Config::load(globals)?;
    let writable = !matches!(
        cmd,
        SlotCommand::Status | SlotCommand::BootSelect(boot::BootSelectArgs { dry_run: true, .. })
    ) && !matches!(
        cmd,
        SlotCommand::BootSelect(boot::BootSelectArgs { slot: Some(_), .. })
    );
    let mut o = if matches!(cmd, SlotCommand::BootSelect(_)) {
        device::open_unchecked(globals, &config, writable)?
    } else {
        device::open(globals, &config, writable)?
    };
    let what = o.path.display().to_string();
    let op = match cmd {
        SlotCommand::Status => return status::print(&mut o, globals.json, &config),
        SlotCommand::BootSelect(args) => return boot::run(&mut o, &args, &config),
        SlotCommand::Repair => return repair(&mut o, globals.json),
        SlotCommand::Disk(_) => unreachable!("handled above"),
        SlotCommand::MarkGood => Op::MarkGood,
        SlotCommand::MarkBad { slot, force } => Op::MarkBad {
            slot: slot.as_deref().map(parse_slot).transpose()?,
            force,
        },
        SlotCommand::Rollback => {
            // The state machine first (it needs the booted slot, and the
            // other slot bootable), then the policy every path that makes a
            // slot bootable shares: the other slot's record verifies, is for
            // this device, is not below the booted slot's rollback floor
            // (an older version with the same index is fine), and its
            // partitions re-hash to it.
            let op = Op::Rollback;
            boot_flags::state::apply(o.disk.slot_flags(), o.disk.booted(), &op)
                .map_err(|r| lib_error(boot_flags::Error::Refused(r), &what))?;
            let target = o
                .disk
                .booted()
                .expect("rollback needs the booted slot")
                .other();
            crate::install::verify::require_verified_slot(
                &mut o.disk,
                target,
                &config,
                globals.json,
                "rollback",
            )?;
            op
        }
        SlotCommand::Cancel => Op::Cancel,
        SlotCommand::Activate { slot, tries } => {
            let tries = tries.unwrap_or(config.tries);
            let tries = Nibble::new(tries)
                .filter(|t| t.get() > 0)
                .ok_or_else(|| anyhow!("--tries {tries} is out of range 1..=15"))?;
            let target = parse_slot(&slot)?;
            let op = Op::Activate { target, tries };
            // The state machine's refusals first (cheap), then the policy
            // every path that makes a slot bootable shares (as install and
            // rollback): the booted slot's verified rollback floor; the
            // target's record verifies against the keyring, is for this
            // device and not below the floor; its partitions re-hash to it.
            boot_flags::state::apply(o.disk.slot_flags(), o.disk.booted(), &op)
                .map_err(|r| lib_error(boot_flags::Error::Refused(r), &what))?;
            crate::install::verify::require_verified_slot(
                &mut o.disk,
                target,
                &config,
                globals.json,
                "activate",
            )?;
            op
        }
        SlotCommand::SetFlags {
            slot,
            priority,
            tries,
            successful,
        } => {
            let slot = parse_slot(&slot)?;
            if priority.is_none() && tries.is_none() && successful.is_none() {
                anyhow::bail!("set-flags: give at least one of --priority, --tries, --successful");
            }
            let old = o.disk.flags(slot);
            let successful = match successful {
                None => old.successful,
                Some(0) => false,
                Some(1) => true,
                Some(v) => anyhow::bail!("--successful {v}: expected 0 or 1"),
            };
            let new = Flags::new(
                priority.unwrap_or(old.priority.get()),
                tries.unwrap_or(old.tries.get()),
                successful,
            )
            .map_err(|e| anyhow!("set-flags: {e}"))?;
            Op::SetFlags(slot, new)
        }
    };
    let before = o.disk.slot_flags();
    let after = o.disk.apply(op).map_err(|e| lib_error(e, &what))?;
    if globals.json {
        return status::print(&mut o, true, &config);
    }
    for id in boot_flags::SlotId::ALL {
        let (b, a) = (before.get(id), after.get(id));
        if b != a {
            outln!("slot {id}: {b} -> {a}");
        }
    }
    if before == after {
        outln!("{}: nothing to change", op.name());
    }
    Ok(())
}

fn repair(o: &mut Opened, json: bool) -> anyhow::Result<()> {
    let what = o.path.display().to_string();
    let fixed = o.disk.repair().map_err(|e| lib_error(e, &what))?;
    if json {
        let list: Vec<_> = fixed
            .iter()
            .map(|(c, why)| serde_json::json!({"copy": c.to_string(), "was": why}))
            .collect();
        outln!("{}", serde_json::json!({ "repaired": list }));
    } else if fixed.is_empty() {
        outln!("both GPT copies are good: nothing to repair");
    } else {
        for (c, why) in &fixed {
            outln!(
                "rewrote the {} GPT copy from the {} (it was bad: {why})",
                c,
                c.other()
            );
        }
    }
    Ok(())
}

/// Quote a value for `eval` when it holds anything beyond a safe set.
pub(crate) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A role as a shell variable suffix: upper case, anything else `_`.
pub(crate) fn var_suffix(role: &str) -> String {
    role.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/dev/vda4"), "/dev/vda4");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(var_suffix("root-fs"), "ROOT_FS");
    }
}
