//! The repeated-boots part of `power_cut.rs` (rauc #683): power cuts
//! during boot after boot, explored to a fixed point.
//!
//! These boots run with the boot counter off (`max_unchecked` 0): they
//! check the flags rules of DESIGN.md alone, whose model never gives up a
//! good slot, and a counted boot writes a new sequence number each time,
//! so no fixed point would be reached. The counter's own repeated boots
//! (a committed slot that never reaches boot-check, a failing check) are
//! `power_cut_bootcount.rs`.

use std::collections::VecDeque;
use std::time::Instant;

use boot_flags::{Disk, SlotId};
use slotctl_tests::sim::flagdisk::{check_choice, fl, fresh_disk, with_flags};
use slotctl_tests::sim::{CrashOptions, CrashStates, Invariants, Rng, SimDevice, Trace};

/// Boot selection with the counter off (see the module's comment).
fn select<D: boot_flags::BlockDevice>(
    disk: &mut Disk<D>,
) -> Result<boot_flags::BootReport, String> {
    disk.boot_select_checked(false, 0, &mut |_| Ok(()))
        .map_err(|e| e.to_string())
}

/// The boot of one disk of the exploration (a crash state of an earlier
/// boot or mark-good), checked: it succeeds, chooses the slot DESIGN.md
/// says, never a trial with no tries left, and no slot that was good at
/// the start has lost its successful bit.
fn boot_and_check(
    disk: &[u8],
    sector: u32,
    report: bool,
    good_before: &[SlotId],
    inv: &Invariants,
    ctx: &dyn Fn() -> String,
) {
    let mut dev = SimDevice::new(disk.to_vec(), sector, report);
    let r = (|| -> Result<_, String> {
        let mut disk = Disk::open(&mut dev, None).map_err(|e| e.to_string())?;
        let flags = disk.slot_flags();
        Ok((flags, select(&mut disk)?.choice))
    })();
    let (flags, choice) = inv.ok(r, |e| format!("{}: boot failed: {e}", ctx()));
    // The choice, the flags it leaves and its kind, against the rules of
    // DESIGN.md written out in sim::flagdisk (not taken from boot-flags).
    inv.ok(check_choice(flags, &choice), |e| format!("{}: {e}", ctx()));
    if flags.get(choice.slot).bootable() {
        let f = flags.get(choice.slot);
        inv.that(f.successful || f.tries.get() > 0, || {
            format!("{}: a trial with no tries left: {flags:?}", ctx())
        });
    }
    for &id in good_before {
        inv.that(flags.get(id).good(), || {
            format!("{}: slot {id} lost its successful bit: {flags:?}", ctx())
        });
    }
}

/// rauc #683: power cuts during boot after boot, with every crash state of
/// each boot-select explored (breadth first, to a fixed point): every
/// reachable disk boots something, the slot marked good is never lost,
/// and a slot on trial is never chosen once its tries are spent. Each disk
/// is checked when first reached, and its own boot (and mark-good after a
/// trial boot) is power-cut in turn.
pub fn repeated_boots(rng: &mut Rng, states: &mut CrashStates) {
    let start = Instant::now();
    let mut explored = 0usize;
    let mut marked_good = 0usize;
    let checks = (states.state_checks(), states.invariant_checks());
    let cases = [
        // A good, B freshly activated.
        ((1, 0, true), (2, 3, false)),
        // Both on trial (a device provisioned without a good slot).
        ((2, 2, false), (1, 2, false)),
        // Nothing good and nothing bootable: the last resort.
        ((0, 0, false), (0, 0, false)),
        // A good but priority 0 after a forced mark-bad, B on trial.
        ((0, 0, true), (2, 1, false)),
    ];
    for (sector, report) in [(512u32, false), (4096, true)] {
        for (n, (a, b)) in cases.into_iter().enumerate() {
            let (fa, fb) = (fl(a.0, a.1, a.2), fl(b.0, b.1, b.2));
            let start_dev = with_flags(fresh_disk(sector, report), fa, fb);
            let good_before: Vec<SlotId> = SlotId::ALL
                .into_iter()
                .filter(|&id| {
                    if id == SlotId::A {
                        fa.good()
                    } else {
                        fb.good()
                    }
                })
                .collect();
            // The checks depend on the case (its good slots) and the device.
            let scenario = (1 << 48) | (u64::from(sector) << 8) | n as u64;
            let ctx = || format!("repeated boots from {a:?}/{b:?} ({sector}-byte sectors)");
            let mut queue = VecDeque::from([start_dev.durable().to_vec()]);
            // The start disk is the first boot's cut before anything was
            // written: it is checked as a crash state of that boot.
            let reached = |d: &[u8], inv: &Invariants, queue: &mut VecDeque<Vec<u8>>| {
                boot_and_check(d, sector, report, &good_before, inv, &ctx);
                queue.push_back(d.to_vec());
            };
            while let Some(disk) = queue.pop_front() {
                explored += 1;
                assert!(explored < 200_000, "the boot exploration does not converge");
                let mut dev = SimDevice::new(disk, sector, report);
                let (res, trace) = Trace::record(&mut dev, |d| -> Result<_, String> {
                    let mut disk = Disk::open(d, None).map_err(|e| e.to_string())?;
                    Ok(select(&mut disk)?.choice)
                });
                let choice = res.unwrap_or_else(|e| panic!("{}: boot failed: {e}", ctx()));
                trace.for_each_crash(
                    &CrashOptions::default(),
                    rng,
                    scenario,
                    states,
                    |_, _, d, inv| reached(d, inv, &mut queue),
                );
                // The booted system's boot-check marks a trial boot good; the
                // power may be cut during that commit too.
                if matches!(choice.kind, boot_flags::BootKind::Trial { .. }) {
                    let mut dev = SimDevice::new(trace.final_disk(), sector, report);
                    let (res, trace) = Trace::record(&mut dev, |d| -> Result<(), String> {
                        let mut disk = Disk::open(d, None).map_err(|e| e.to_string())?;
                        disk.set_booted(Some(choice.slot));
                        disk.mark_good().map_err(|e| e.to_string())
                    });
                    res.unwrap_or_else(|e| {
                        panic!("{}: mark-good after a trial boot failed: {e}", ctx())
                    });
                    trace.for_each_crash(
                        &CrashOptions::default(),
                        rng,
                        scenario,
                        states,
                        |_, _, d, inv| reached(d, inv, &mut queue),
                    );
                    marked_good += 1;
                }
            }
        }
    }
    eprintln!(
        "power_cut: repeated boots: {} distinct disks reached (crash states of boot-select, and of mark-good after {marked_good} trial boots), {explored} boots explored, {} state checks, {} invariant checks, in {:.1?}",
        states.phase_distinct(),
        states.state_checks() - checks.0,
        states.invariant_checks() - checks.1,
        start.elapsed()
    );
    assert!(explored >= 20);
}
