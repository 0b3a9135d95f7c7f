//! The policy checks: those an install makes before writing anything, and
//! the ones every path that makes a slot bootable shares ([`check_policy`],
//! [`booted_floor`], [`check_bootable`] for `activate` and `rollback`).
//! Every refusal is one line and exit code 3 (`exit::refused`).

use std::cmp::Ordering;

use anyhow::Context;
use boot_flags::{state, BlockDevice, Disk, FileDevice, Op, SlotId};
use image_format::{Keyring, PublicKey, VerifiedHeader};

use super::{verify, InstallArgs, InstallOptions, KeyArgs};
use crate::config::Config;
use crate::device::{self, BootedSource, Opened};
use crate::exit::refused;
use crate::progress::Progress;
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
/// fresh disk's slot (no booted slot, no slot that runs or ran:
/// [`check_fresh`]). Otherwise the disk must know its booted slot, the
/// target must be the other one, and the state machine decides, without
/// writing, whether the target may be invalidated (not booted, booted slot
/// not on trial).
pub fn check_target<D: BlockDevice>(
    disk: &Disk<D>,
    target: SlotId,
    factory: bool,
) -> anyhow::Result<()> {
    if factory {
        return check_fresh(disk, target);
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

/// `--factory` provisions a fresh disk: refused, before anything is
/// written, when a slot (the target included) is bootable or marked
/// successful. Such a disk has a slot that runs or ran, and with it a
/// rollback floor; a factory install (no booted slot, `--compatible` of its
/// choice) would bypass it. To reprovision on purpose, clear the slots'
/// flags with `set-flags` first (docs/slot-record.md).
pub fn check_fresh<D: BlockDevice>(disk: &Disk<D>, target: SlotId) -> anyhow::Result<()> {
    for slot in SlotId::ALL {
        let f = disk.flags(slot);
        if f.bootable() || f.successful {
            let what = if f.successful {
                "marked successful"
            } else {
                "bootable"
            };
            return Err(refused(format!(
                "--factory is for a fresh disk, and slot {slot} is {what} ({f}): to reprovision slot {target}, first clear the flags with `slotctl set-flags {slot} --priority 0 --tries 0 --successful 0`"
            )));
        }
    }
    Ok(())
}

/// Semantic-version precedence (build metadata ignored).
fn precedence(a: &semver::Version, b: &semver::Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

/// What a slot's record says it holds, NOT signature-checked: for what is
/// shown (`status` needs no keyring) and the agent's choice of a release,
/// never for a decision to write or boot: the policy uses [`booted_floor`]
/// and [`check_bootable`], which verify.
pub struct Installed {
    pub version: semver::Version,
    pub rollback_index: u64,
    /// The roles of the image's payloads.
    pub roles: Vec<String>,
}

/// Read a slot's record, if it has one.
pub fn installed<D: BlockDevice>(
    disk: &mut Disk<D>,
    slot: SlotId,
) -> anyhow::Result<Option<Installed>> {
    let Some(blob) = record::read_slot(disk, slot).with_context(|| format!("slot {slot}"))? else {
        return Ok(None);
    };
    let img = image_format::ImageReader::new(&blob[..])
        .and_then(|r| r.into_untrusted())
        .with_context(|| format!("slot {slot}: slot record holds no valid image header"))?;
    let h = img.header();
    Ok(Some(Installed {
        version: h.version().clone(),
        rollback_index: h.rollback_index(),
        roles: h.payloads().iter().map(|p| p.role.clone()).collect(),
    }))
}

/// The install's checks of an image header, before anything is written:
/// the shared policy ([`check_policy`]: compatible, the booted slot's
/// verified rollback floor), the version against the booted slot's unless
/// `--allow-downgrade`, then roles and sizes.
pub fn check_header<D: BlockDevice>(
    args: &InstallOptions,
    cfg: &Config,
    disk: &mut Disk<D>,
    target: SlotId,
    header: &VerifiedHeader,
    keyring: &Keyring,
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
    let floor = booted_floor(disk, keyring, cfg.signature_threshold)?;
    check_policy(header, want, floor.as_ref())?;
    if let Some(f) = &floor {
        if precedence(header.version(), &f.version) == Ordering::Less && !args.allow_downgrade {
            return Err(refused(format!(
                "version {} is older than {} (use --allow-downgrade)",
                header.version(),
                f.describe(&f.version)
            )));
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

/// The rollback floor: the version and rollback index of a verified slot
/// record, normally the booted slot's.
#[derive(Debug, Clone)]
pub struct Floor {
    /// The slot whose record sets it.
    pub slot: SlotId,
    /// True when that is the booted slot; false for the one case where the
    /// other slot's record sets it (see [`booted_floor`]).
    pub booted: bool,
    pub version: semver::Version,
    pub rollback_index: u64,
}

impl Floor {
    /// `value` (its version or rollback index) with whose it is: "the
    /// booted slot A's 5", or "slot B's 5 (pending: booted slot A has no
    /// record)", for the refusals that compare against it.
    fn describe(&self, value: impl std::fmt::Display) -> String {
        if self.booted {
            format!("the booted slot {}'s {value}", self.slot)
        } else {
            format!(
                "slot {}'s {value} (pending: booted slot {} has no record)",
                self.slot,
                self.slot.other()
            )
        }
    }
}

const WAY_OUT: &str =
    "the rollback floor is unknown, refusing (docs/slot-record.md: reprovisioning)";

/// The header of a record blob, its signatures meeting the threshold; a
/// refusal (naming `who`) when they do not.
fn verify_record(
    keyring: &Keyring,
    threshold: usize,
    blob: &[u8],
    who: &str,
) -> anyhow::Result<VerifiedHeader> {
    VerifiedHeader::from_record_bytes(keyring, threshold, blob).map_err(|e| {
        if e.is_refusal() {
            refused(format!(
                "{who}: slot record does not verify: {e}: {WAY_OUT}"
            ))
        } else {
            anyhow::Error::new(e).context(format!("{who}: slot record"))
        }
    })
}

/// The rollback floor (docs/slot-record.md), failing closed. `None`
/// without a booted slot. The booted slot's record region:
///
/// - holds a record that decodes and whose signatures meet the keyring's
///   threshold: the floor is its rollback index;
/// - is damaged (not all zero yet no record: no magic, corrupt, a header
///   that does not parse) or does not verify: refused;
/// - is all zero (no record). Then the other slot's region decides:
///   all zero too (no slot record anywhere on the disk: a disk provisioned
///   outside slotctl) gives no floor, whatever the flags say; a record that
///   verifies, on a slot that is *pending* (bootable, not marked
///   successful: what install and activate leave, after checking the image
///   against the floor of that time) sets the floor; anything else
///   (a record on a slot that ran or was cancelled, a damaged or
///   unverifiable one) is a refusal.
///
/// So zeroing or forging the booted slot's record alone never lowers the
/// floor: a pending slot's rollback index is at least the floor it was
/// activated under, and the booted slot's record cannot change while the
/// other slot is pending (install and `--factory` refuse then). `install`
/// calls this before it writes anything, so its target's record (the other
/// slot's) is read before the install erases it.
pub fn booted_floor<D: BlockDevice>(
    disk: &mut Disk<D>,
    keyring: &Keyring,
    threshold: usize,
) -> anyhow::Result<Option<Floor>> {
    let Some(booted) = disk.booted() else {
        return Ok(None);
    };
    let who = format!("booted slot {booted}");
    match record::read_slot(disk, booted) {
        Ok(Some(blob)) => {
            let h = verify_record(keyring, threshold, &blob, &who)?;
            return Ok(Some(Floor {
                slot: booted,
                booted: true,
                version: h.version().clone(),
                rollback_index: h.rollback_index(),
            }));
        }
        Ok(None) => {}
        Err(e @ record::RecordError::Io { .. }) => {
            return Err(anyhow::Error::new(e).context(who));
        }
        Err(e) => return Err(refused(format!("{who}: {e}: {WAY_OUT}"))),
    }
    let other = booted.other();
    let has_one = format!("{who} has no slot record while slot {other} has one");
    let blob = match record::read_slot(disk, other) {
        Ok(None) => return Ok(None),
        Ok(Some(blob)) => blob,
        Err(e @ record::RecordError::Io { .. }) => {
            return Err(anyhow::Error::new(e).context(format!("slot {other}")));
        }
        Err(e) => return Err(refused(format!("{has_one} ({e}): {WAY_OUT}"))),
    };
    let f = disk.flags(other);
    if !f.bootable() || f.successful {
        return Err(refused(format!("{has_one}: {WAY_OUT}")));
    }
    let h = verify_record(keyring, threshold, &blob, &has_one)?;
    Ok(Some(Floor {
        slot: other,
        booted: false,
        version: h.version().clone(),
        rollback_index: h.rollback_index(),
    }))
}

/// The policy every path that makes a slot bootable applies (install
/// before writing, `activate` and `rollback` through [`check_bootable`]) to
/// the signed header of what the slot holds or will hold: its signatures
/// met the threshold (a [`VerifiedHeader`] is only made by verifying), its
/// `compatible` is the device's, and its rollback index is not below the
/// booted slot's floor (never overridable).
pub fn check_policy(
    header: &VerifiedHeader,
    compatible: &str,
    floor: Option<&Floor>,
) -> anyhow::Result<()> {
    if header.compatible() != compatible {
        return Err(refused(format!(
            "image is for {:?}, this device is {:?}",
            header.compatible(),
            compatible
        )));
    }
    if let Some(f) = floor {
        if header.rollback_index() < f.rollback_index {
            return Err(refused(format!(
                "rollback index {} is below {}",
                header.rollback_index(),
                f.describe(f.rollback_index)
            )));
        }
    }
    Ok(())
}

/// For `activate` and `rollback`: may `slot` be made the next boot? The
/// booted slot's floor ([`booted_floor`], fail closed), then `slot`'s
/// record (present, decodes, signatures meet the threshold), the shared
/// [`check_policy`] (compatible, rollback floor), and last its partitions
/// re-hashed against the record (past the page cache). Every failure is a
/// refusal (exit 3) naming `op`; nothing is written. Returns the slot's
/// verified header.
pub fn check_bootable(
    disk: &mut Disk<FileDevice>,
    slot: SlotId,
    cfg: &Config,
    keyring: &Keyring,
    op: &str,
    progress: &Progress,
) -> anyhow::Result<VerifiedHeader> {
    let inner = |disk: &mut Disk<FileDevice>| -> anyhow::Result<VerifiedHeader> {
        let compatible = cfg.compatible.as_deref().ok_or_else(|| {
            refused("no `compatible` in the config: the device cannot check what a slot holds")
        })?;
        let floor = booted_floor(disk, keyring, cfg.signature_threshold)?;
        let header = verify::verify_slot(
            disk,
            slot,
            keyring,
            cfg.signature_threshold,
            false,
            progress,
        )?;
        check_policy(&header, compatible, floor.as_ref())
            .with_context(|| format!("slot {slot}"))?;
        // Every managed role of the slot is covered by the record
        // (docs/image-format.md, "Roles").
        super::roles::check_coverage(
            disk.layout().slot(slot),
            header.payloads(),
            cfg,
            super::roles::Of::Record,
        )?;
        verify::rehash_slot(disk, slot, &header, progress)?;
        Ok(header)
    };
    inner(disk).context(op.to_string())
}
