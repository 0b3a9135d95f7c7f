//! The checks an install makes before writing anything. Every refusal is one
//! line and exit code 3 (`exit::refused`).

use std::cmp::Ordering;

use anyhow::Context;
use boot_flags::{state, BlockDevice, Disk, Op, SlotId};
use image_format::{Keyring, PublicKey, VerifiedHeader};

use super::{InstallArgs, InstallOptions, KeyArgs};
use crate::config::Config;
use crate::device::{self, BootedSource, Opened};
use crate::exit::refused;
use crate::record::{self, RECORD_RESERVED};

/// The trusted keys: `--pubkey` files, else `--keyring DIR`, else the
/// config's keyring directory.
pub fn load_keyring(keys: &KeyArgs, cfg: &Config) -> anyhow::Result<Keyring> {
    if !keys.pubkey.is_empty() {
        let mut ring = Keyring::new();
        for p in &keys.pubkey {
            let k = PublicKey::load_file(p)
                .with_context(|| format!("cannot load public key {}", p.display()))?;
            ring.add(k);
        }
        return Ok(ring);
    }
    let dir = keys.keyring.as_ref().unwrap_or(&cfg.keyring);
    let ring =
        Keyring::load_dir(dir).with_context(|| format!("cannot load keyring {}", dir.display()))?;
    if ring.is_empty() {
        anyhow::bail!("keyring {} holds no public key", dir.display());
    }
    Ok(ring)
}

/// An image-format error: a verification failure is a refusal (exit 3),
/// anything else (I/O) an error.
pub fn image_error(e: image_format::Error, name: &str) -> anyhow::Error {
    if e.is_refusal() {
        refused(format!("{name}: {e}"))
    } else {
        anyhow::Error::new(e).context(name.to_string())
    }
}

/// The slot to write, after checking the state machine would allow it.
pub fn choose_target(args: &InstallArgs, opened: &Opened) -> anyhow::Result<SlotId> {
    let disk = &opened.disk;
    if args.factory {
        match opened.booted_source {
            BootedSource::Detected => {
                return Err(refused(format!(
                    "--factory is for a fresh disk, and {} is the disk the system runs from",
                    opened.path.display()
                )))
            }
            BootedSource::Option => {
                return Err(refused(
                    "--factory provisions a disk with no booted slot: drop --booted",
                ))
            }
            BootedSource::Unknown => {}
        }
        let slot = args.slot.as_deref().unwrap_or("A");
        return device::parse_slot(slot);
    }
    let booted = disk.booted().ok_or_else(|| {
        refused(format!(
            "install needs the booted slot, and none is known for {}: pass --booted A|B for a disk image, or --factory --slot A to provision a fresh one",
            opened.path.display()
        ))
    })?;
    let target = booted.other();
    if let Some(s) = &args.slot {
        let s = device::parse_slot(s)?;
        if s == booted {
            return Err(refused(format!(
                "target slot {s} is the booted slot; install writes the other slot ({target})"
            )));
        }
    }
    check_target(disk, target, false)?;
    Ok(target)
}

/// Whether `target` may be written on `disk`. A factory install writes a
/// fresh disk's slot (no booted slot, nothing to protect). Otherwise the
/// disk must know its booted slot, the target must be the other one, and the
/// state machine decides, without writing, whether the target may be
/// invalidated (not booted, booted slot not on trial).
pub fn check_target<D: BlockDevice>(
    disk: &Disk<D>,
    target: SlotId,
    factory: bool,
) -> anyhow::Result<()> {
    if factory {
        return Ok(());
    }
    let booted = disk
        .booted()
        .ok_or_else(|| refused("install needs the booted slot, and the disk has none set"))?;
    if target == booted {
        return Err(refused(format!(
            "target slot {target} is the booted slot; install writes the other slot ({})",
            booted.other()
        )));
    }
    state::apply(disk.slot_flags(), Some(booted), &Op::Invalidate(target))
        .map_err(|r| refused(r.to_string()))?;
    Ok(())
}

/// Semantic-version precedence (build metadata ignored).
fn precedence(a: &semver::Version, b: &semver::Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

/// What a slot's record says it holds (unverified: the record was written
/// by us after verification; its own CRC and SHA-256 guard its integrity).
pub struct Installed {
    pub version: semver::Version,
    pub rollback_index: u64,
}

/// Read a slot's record, if it has one.
pub fn installed<D: BlockDevice>(
    disk: &mut Disk<D>,
    slot: SlotId,
) -> anyhow::Result<Option<Installed>> {
    let part = disk.layout().slot(slot).flags_partition().clone();
    let Some(blob) = record::read(disk.device(), part.offset, part.size)
        .with_context(|| format!("slot {slot}"))?
    else {
        return Ok(None);
    };
    let img = image_format::ImageReader::new(&blob[..])
        .and_then(|r| r.into_untrusted())
        .with_context(|| format!("slot {slot}: slot record holds no valid image header"))?;
    let h = img.header();
    Ok(Some(Installed {
        version: h.version().clone(),
        rollback_index: h.rollback_index(),
    }))
}

/// compatible, rollback index, version, roles and sizes.
pub fn check_header<D: BlockDevice>(
    args: &InstallOptions,
    cfg: &Config,
    disk: &mut Disk<D>,
    target: SlotId,
    header: &VerifiedHeader,
) -> anyhow::Result<()> {
    let want = if args.factory {
        args.compatible.as_ref().or(cfg.compatible.as_ref())
    } else {
        cfg.compatible.as_ref()
    };
    let want = want.ok_or_else(|| {
        refused(if args.factory {
            "no compatible string: pass --compatible or set `compatible` in the config"
        } else {
            "no `compatible` in the config: the device cannot check what an image is for"
        })
    })?;
    if header.compatible() != want {
        return Err(refused(format!(
            "image is for {:?}, this device is {:?}",
            header.compatible(),
            want
        )));
    }

    if let Some(booted) = disk.booted() {
        if let Some(cur) = installed(disk, booted).map_err(|e| {
            refused(format!(
                "{e:#}; cannot check the rollback index against the booted slot"
            ))
        })? {
            if header.rollback_index() < cur.rollback_index {
                return Err(refused(format!(
                    "rollback index {} is below the booted slot {booted}'s {}",
                    header.rollback_index(),
                    cur.rollback_index
                )));
            }
            if precedence(header.version(), &cur.version) == Ordering::Less && !args.allow_downgrade
            {
                return Err(refused(format!(
                    "version {} is older than the booted slot {booted}'s {} (use --allow-downgrade)",
                    header.version(),
                    cur.version
                )));
            }
        }
    }

    let slot = disk.layout().slot(target);
    let fp = slot.flags_partition();
    record::region_offset(fp.offset, fp.size)
        .map_err(|e| refused(format!("slot {target}: {e} ({})", fp.name)))?;
    for p in header.payloads() {
        let Some(part) = slot.partition(&p.role) else {
            let roles: Vec<&str> = slot.roles().collect();
            return Err(refused(format!(
                "role {} missing on the disk (slot {target} has {})",
                p.role,
                roles.join(", ")
            )));
        };
        let usable = if part.index == slot.flags_index {
            part.size.saturating_sub(RECORD_RESERVED)
        } else {
            part.size
        };
        if p.raw_size > usable {
            return Err(refused(format!(
                "payload {} is {} bytes, partition {} holds {usable}{}",
                p.role,
                p.raw_size,
                part.name,
                if part.index == slot.flags_index {
                    " (its last 64 KiB hold the slot record)"
                } else {
                    ""
                }
            )));
        }
    }
    super::roles::check_coverage(slot, header.payloads(), cfg, super::roles::Of::Image).map(drop)
}
