//! `slotctl verify-slot [SLOT]`: re-check a slot against its record — the
//! record's signatures against the keyring, then the SHA-256 of each
//! partition's first `raw_size` bytes, read past the page cache.
//!
//! [`verify_slot`] and [`rehash_slot`] are also what `activate` and
//! `rollback` use (through `policy::check_bootable`) to require a verified
//! slot record.

use anyhow::Context;
use boot_flags::{BlockDevice, Disk, FileDevice, SlotId, SlotPartition};
use image_format::{Keyring, VerifiedHeader};
use serde_json::json;

use super::{pipeline, policy, VerifySlotArgs};
use crate::cli::Globals;
use crate::config::Config;
use crate::exit::refused;
use crate::progress::Progress;
use crate::{device, record};

/// Check a slot's record (signature and threshold) and, with `rehash`, the
/// bytes of its partitions. Every failure is a refusal (exit 3).
pub fn verify_slot(
    disk: &mut Disk<FileDevice>,
    slot: SlotId,
    keyring: &Keyring,
    threshold: usize,
    rehash: bool,
    progress: &Progress,
) -> anyhow::Result<VerifiedHeader> {
    let blob = record::read_slot(disk, slot)
        .map_err(|e| refused(format!("slot {slot}: {e}")))?
        .ok_or_else(|| {
            refused(format!(
                "slot {slot} has no slot record (no verified image installed)"
            ))
        })?;
    let header = VerifiedHeader::from_record_bytes(keyring, threshold, &blob)
        .map_err(|e| refused(format!("slot {slot}: slot record: {e}")))?;
    if rehash {
        rehash_slot(disk, slot, &header, progress)?;
    }
    Ok(header)
}

/// The SHA-256 of each of `slot`'s partitions' first `raw_size` bytes,
/// read past the page cache, against the payloads of its verified record.
pub fn rehash_slot(
    disk: &mut Disk<FileDevice>,
    slot: SlotId,
    header: &VerifiedHeader,
    progress: &Progress,
) -> anyhow::Result<()> {
    let layout = disk.layout().slot(slot).clone();
    for p in header.payloads() {
        let target = layout.partition(&p.role).ok_or_else(|| {
            refused(format!(
                "slot {slot}: role {} of the record is missing on the disk",
                p.role
            ))
        })?;
        if p.raw_size > target.size {
            return Err(refused(format!(
                "slot {slot}: payload {} ({} bytes) is larger than partition {}",
                p.role, p.raw_size, target.name
            )));
        }
        let dev = disk.device();
        dev.drop_cache(target.offset, p.raw_size)
            .with_context(|| format!("dropping the cache of {}", target.name))?;
        progress.phase("verify", &p.role, p.raw_size);
        let digest = pipeline::hash_region(dev, target.offset, p.raw_size, |d| progress.update(d))
            .map_err(|(off, e)| {
                anyhow::Error::new(e).context(format!("reading {} at disk byte {off}", target.name))
            })?;
        progress.finish_phase();
        if digest.digest != p.sha256 {
            return Err(refused(format!(
                "slot {slot}: partition {} does not match its record (SHA-256 of the first {} bytes differs)",
                target.name, p.raw_size
            )));
        }
    }
    Ok(())
}

/// After writing a record: read it back from the medium and compare.
pub fn check_record_matches(
    dev: &mut dyn BlockDevice,
    part: &SlotPartition,
    blob: &[u8],
) -> anyhow::Result<()> {
    let off = record::region_offset(part.offset, part.size)?;
    dev.drop_cache(off, record::RECORD_RESERVED)
        .context("dropping the cache of the slot record")?;
    match record::read(dev, part.offset, part.size)? {
        Some(b) if b == blob => Ok(()),
        _ => anyhow::bail!(
            "the slot record read back from {} differs from what was written",
            part.name
        ),
    }
}

pub fn run(args: VerifySlotArgs, globals: &Globals) -> anyhow::Result<()> {
    let cfg = Config::load(globals)?;
    let keyring = policy::load_keyring(&args.keys, &cfg)?;
    let mut opened = device::open(globals, &cfg, false)?;
    let slots: Vec<SlotId> = match (&args.slot, opened.disk.booted()) {
        (Some(s), _) => vec![device::parse_slot(s)?],
        (None, Some(b)) => vec![b],
        (None, None) => SlotId::ALL.to_vec(),
    };
    let progress = Progress::new(globals.json);
    let mut results = Vec::new();
    let mut first_err = None;
    for slot in slots {
        match verify_slot(
            &mut opened.disk,
            slot,
            &keyring,
            cfg.signature_threshold,
            true,
            &progress,
        ) {
            Ok(h) => {
                let roles: Vec<&str> = h.payloads().iter().map(|p| p.role.as_str()).collect();
                // Which roles the record covers; a managed role it does not
                // cover fails the slot (exit 3) after this line is printed.
                let layout = opened.disk.layout().slot(slot);
                let coverage = super::roles::Coverage::of(layout, roles.iter().copied(), &cfg);
                let uncovered = super::roles::check_coverage(
                    layout,
                    h.payloads(),
                    &cfg,
                    super::roles::Of::Record,
                )
                .err();
                if !globals.json {
                    let line = format!(
                        "slot {slot}: {} (rollback index {}) {}",
                        h.version(),
                        h.rollback_index(),
                        coverage.describe("verified")
                    );
                    println!("{}", crate::term::printable(&line));
                }
                let mut r = json!({
                    "slot": slot.as_str(), "ok": uncovered.is_none(),
                    "version": h.version().to_string(),
                    "rollback_index": h.rollback_index(),
                    "roles": roles,
                    "coverage": coverage.to_json(),
                });
                if let Some(e) = &uncovered {
                    r["error"] = json!(format!("{e:#}"));
                }
                results.push(r);
                if let (Some(e), None) = (uncovered, &first_err) {
                    first_err = Some(e);
                }
            }
            Err(e) => {
                results
                    .push(json!({"slot": slot.as_str(), "ok": false, "error": format!("{e:#}")}));
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    progress.result(first_err.is_none(), json!({ "slots": results }));
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// For `slotctl activate` and `slotctl rollback` (`op`): refuse (exit 3)
/// unless `slot` may be made the next boot under the shared policy
/// ([`policy::check_bootable`]: the booted slot's verified floor; `slot`'s
/// record verifies against the config's keyring, is for the config's
/// `compatible`, is not below the floor, and its partitions re-hash to it).
pub fn require_verified_slot(
    disk: &mut Disk<FileDevice>,
    slot: SlotId,
    cfg: &Config,
    json: bool,
    op: &str,
) -> anyhow::Result<()> {
    let keyring = policy::load_keyring(&super::KeyArgs::default(), cfg)?;
    let progress = Progress::new(json);
    policy::check_bootable(disk, slot, cfg, &keyring, op, &progress).map(drop)
}

/// For `slotctl status`: what a slot's record says it holds, as JSON:
/// `{"version": "2.0.0", "rollback_index": 5}`, `null` without a record, or
/// `{"error": "..."}` for a corrupt one. Not signature-checked (status needs
/// no keyring); `verify-slot` does that. `held` is what
/// [`policy::installed`] read; called by slots/status.rs.
pub fn installed_json(held: &anyhow::Result<Option<policy::Installed>>) -> serde_json::Value {
    match held {
        Ok(Some(i)) => json!({
            "version": i.version.to_string(),
            "rollback_index": i.rollback_index,
        }),
        Ok(None) => serde_json::Value::Null,
        Err(e) => json!({ "error": format!("{e:#}") }),
    }
}
