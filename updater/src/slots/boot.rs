//! `slotctl boot-select`: what a boot stage runs (docs/state-machine.md for
//! the selection, docs/verified-boot.md for the chain that checks the
//! chosen slot: its record, its dm-verity roots, its own kernel).

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use boot_flags::{BootKind, SlotId};
use clap::Args;

use super::chain::{Chain, ChainArgs, KexecPaths, Passed};
use super::{lib_error, shell_quote, var_suffix};
use crate::config::Config;
use crate::device::{parse_slot, Opened};
use crate::exit::refused;
use crate::install::{policy, KeyArgs};

#[derive(Args, Debug, Clone)]
pub struct BootSelectArgs {
    /// Write nothing and open nothing; print what would be booted.
    #[arg(long)]
    pub dry_run: bool,
    /// Boots in a row of a committed slot that may fail to reach
    /// boot-check before the other slot, if good, is booted instead
    /// (0 = do not count).
    #[arg(long, value_name = "N", default_value_t = boot_flags::DEFAULT_MAX_UNCHECKED_BOOTS)]
    pub max_unchecked_boots: u8,
    /// The boot stage's own keyring (a directory of public keys): the
    /// chosen slot's record must verify against it, and its dm-verity
    /// roots are opened from the root hashes it signs; a slot that fails
    /// is given up for the other.
    #[arg(long, value_name = "DIR")]
    pub keyring: Option<PathBuf>,
    /// Load the chosen slot's own kernel, initramfs and command line from
    /// its verified root and boot it with kexec (the fixed first stage;
    /// needs --keyring: a kernel is loaded only from a verified root).
    #[arg(long, conflicts_with_all = ["dry_run", "slot"], requires = "keyring")]
    pub kexec: bool,
    /// With --kexec: the slot's kernel, inside its root.
    #[arg(long, value_name = "PATH", default_value = "/boot/vmlinuz")]
    pub kernel: PathBuf,
    /// With --kexec: the slot's initramfs, inside its root (optional).
    #[arg(long, value_name = "PATH", default_value = "/boot/initrd.img")]
    pub initrd: PathBuf,
    /// With --kexec: a file in the slot's root holding its kernel command
    /// line (optional: else the running one). `slotctl.slot=A|B` is added.
    #[arg(long, value_name = "PATH", default_value = "/boot/cmdline")]
    pub cmdline_file: PathBuf,
    /// With --kexec: where the slot's root is mounted, read-only, to read them.
    #[arg(long, value_name = "DIR", default_value = "/sysroot")]
    pub mount_dir: PathBuf,
    /// With --kexec: the role whose file system holds the kernel.
    #[arg(long, value_name = "ROLE", default_value = "ROOT")]
    pub kernel_role: String,
    /// The second stage, after kexec: boot this slot, the one the first
    /// stage chose (its kernel command line says `slotctl.slot=`). Checks
    /// it and opens its verity roots again; writes nothing, uses no try.
    #[arg(long, value_name = "A|B", conflicts_with = "dry_run")]
    pub slot: Option<String>,
}

pub fn run(o: &mut Opened, args: &BootSelectArgs, config: &Config) -> anyhow::Result<()> {
    let what = o.path.display().to_string();
    // The boot stage's own keyring, loaded as every command loads one.
    let keyring = args
        .keyring
        .as_ref()
        .map(|dir| {
            let keys = KeyArgs {
                keyring: Some(dir.clone()),
                pubkey: Vec::new(),
            };
            policy::load_keyring(&keys, config).context("the boot keyring")
        })
        .transpose()?;
    let mut chain = Chain::prepare(
        o,
        ChainArgs {
            keyring,
            threshold: config.signature_threshold,
            open: !args.dry_run,
            kexec: args.kexec.then(|| KexecPaths {
                kernel: args.kernel.clone(),
                initrd: args.initrd.clone(),
                cmdline: args.cmdline_file.clone(),
                mount_dir: args.mount_dir.clone(),
                role: args.kernel_role.clone(),
            }),
        },
    )?;
    if let Some(s) = &args.slot {
        let slot = parse_slot(s)?;
        chain
            .check(slot)
            .map_err(|why| refused(format!("slot {slot} does not pass its boot check: {why}")))?;
        eprintln!("slotctl: booting slot {slot}, chosen by the first stage (nothing written)");
        return print_vars(o, slot, chain.passed(slot));
    }
    let active = chain.active();
    let report = o
        .disk
        .boot_select_checked(args.dry_run, args.max_unchecked_boots, &mut |s| {
            if active {
                chain.check(s)
            } else {
                Ok(())
            }
        })
        .map_err(|e| lib_error(e, &what))?;
    if let Some(why) = &report.unwritable {
        eprintln!(
            "slotctl: warning: the partition table cannot be written safely ({why}): \
             booting from it as it is, nothing written"
        );
    }
    for s in &report.untried {
        eprintln!(
            "slotctl: warning: slot {s} is on trial but its try cannot be recorded: not booting it"
        );
    }
    let verb = if args.dry_run {
        "would rewrite"
    } else {
        "rewrote"
    };
    for (c, why) in &report.repaired {
        eprintln!("slotctl: warning: {verb} the bad {c} GPT copy ({why})");
    }
    let verb = if args.dry_run { "would give" } else { "gave" };
    for (s, why) in &report.given_up {
        let why = crate::term::printable(why);
        eprintln!("slotctl: warning: {verb} up slot {s}: {why}");
    }
    if let Some(why) = &report.forced {
        let why = crate::term::printable(why);
        eprintln!("slotctl: WARNING: {why}");
    }
    let choice = report.choice;
    match choice.kind {
        BootKind::NoBootable { .. } => {
            eprintln!("slotctl: WARNING: NO BOOTABLE SLOT: booting {choice}");
        }
        BootKind::Trial { .. } if args.dry_run => eprintln!("slotctl: would boot {choice}"),
        BootKind::Trial { .. } => eprintln!("slotctl: booting {choice}"),
        BootKind::Good => {}
    }
    let slot = choice.slot;
    // A slot booted as a last resort, or because the other could not be
    // booted either, has not passed the check (or never ran it): with a
    // keyring, unverified code is not booted (docs/verified-boot.md).
    if active && chain.passed(slot).is_none() {
        chain.check(slot).map_err(|why| {
            refused(format!(
                "no slot passes its boot check; slot {slot}: {why}: refusing to boot it"
            ))
        })?;
    }
    if chain.passed(slot).is_some_and(|p| p.kexec_loaded) {
        eprintln!("slotctl: starting slot {slot}'s own kernel (kexec)");
        let e = match bootchain::kexec_reboot() {
            Ok(never) => match never {},
            Err(e) => e,
        };
        return Err(anyhow!("kexec into slot {slot}'s kernel failed: {e}"));
    }
    print_vars(o, slot, chain.passed(slot))
}

/// The SLOTCTL_* lines: the slot, and each role's device (its verity
/// device when the check opened one), offset and size on the disk.
fn print_vars(o: &Opened, slot: SlotId, passed: Option<&Passed>) -> anyhow::Result<()> {
    let layout = o.disk.layout().slot(slot);
    let mut out = format!("SLOTCTL_SLOT={slot}\n");
    for p in &layout.partitions {
        let raw = o.partition_path(p.index);
        let node = passed
            .and_then(|x| x.devices.iter().find(|(r, _)| *r == p.role))
            .map_or(raw, |(_, n)| n.clone());
        let v = var_suffix(&p.role);
        out.push_str(&format!(
            "SLOTCTL_PART_{v}={}\nSLOTCTL_PART_{v}_OFFSET={}\nSLOTCTL_PART_{v}_SIZE={}\n",
            shell_quote(&node.to_string_lossy()),
            p.offset,
            p.size
        ));
        if let Some((_, table)) = passed.and_then(|x| x.tables.iter().find(|(r, _)| *r == p.role)) {
            out.push_str(&format!("SLOTCTL_VERITY_{v}={}\n", shell_quote(table)));
        }
    }
    out!("{out}");
    Ok(())
}
