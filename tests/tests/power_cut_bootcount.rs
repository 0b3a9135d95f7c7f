//! Power cuts during boots that use the boot counter (boot-flags
//! `bootstate`, docs/state-machine.md "The boot counter"), at every write
//! and flush, with torn and reordered writes (tests/src/sim.rs), on 512-
//! and 4096-byte-sector disks. Slot B fails: as a committed slot that never
//! reaches boot-check, as a slot whose check fails at boot, and as a slot
//! on trial that never reaches boot-check or whose check fails; slot A is
//! good and healthy.
//!
//! Boot after boot is explored breadth first until slot A is chosen; A then
//! reaches boot-check (mark-good) and boots once more. Every boot and
//! mark-good of the uncut path is cut at every write, and each crash state
//! is booted on to the end, cut at every write again (up to two cuts per
//! path, three in the long mode, `SLOTCTL_RELIABILITY=full`). In every
//! crash state:
//!
//! 1. the GPT reads, and the flags are those of one of the operation's
//!    commits (before, or after one of its GPT commits);
//! 2. no slot's count of unchecked boots is lower than before the
//!    operation (a boot never lowers it; mark-good clears only the booted
//!    slot's);
//! 3. once B is seen given up (not bootable), no later disk of that path
//!    makes it bootable again, and its boot state holds the reason (the
//!    reason is written before the flags);
//!
//! and along every path the boots that chose B number at most
//! [`BOUND`] (committed B) or its tries (B on trial), with no extra
//! constant: a boot's count is flushed and read back before boot-select
//! returns, so a boot that happened was counted, and a cut before that
//! point is a boot that did not happen; the give-up writes the reason, then
//! one GPT commit, and each boot re-applies the rule until that commit
//! lands. A failing check costs B no boot at all.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use boot_flags::{BootState, Disk, Flags, SlotFlags, SlotId};
use slotctl_tests::sim::flagdisk::{fl, fresh_disk, with_flags};
use slotctl_tests::sim::{
    disk_identity, full_mode, seed_from_env, CrashOptions, CrashStates, Event, Invariants, Rng,
    SimDevice, SliceDevice, Trace,
};

/// The bound the boots run with.
const BOUND: u8 = 3;
/// The failing slot, and the good one.
const F: SlotId = SlotId::B;
const G: SlotId = SlotId::A;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// B committed (good), never reaches boot-check.
    Unchecked,
    /// B committed, its check fails at every boot.
    CheckFails,
    /// B on trial with 3 tries, never reaches boot-check.
    Trial,
    /// B on trial with 3 tries, its check fails at every boot.
    TrialCheckFails,
}

/// What a reader sees on a disk: both slots' flags and boot states.
fn view(bytes: &[u8], sector: u32, report: bool) -> Result<(SlotFlags, [BootState; 2]), String> {
    let dev = SliceDevice {
        bytes,
        sector_size: report.then_some(sector),
    };
    let mut d = Disk::open(dev, None).map_err(|e| format!("the GPT does not read: {e}"))?;
    let mut st = |id| {
        d.boot_state(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("slot {id} has no boot state"))
    };
    let states = [st(SlotId::A)?, st(SlotId::B)?];
    Ok((d.slot_flags(), states))
}

/// The flags a reader may see during a trace: before it, and after each of
/// its flushes (every GPT commit ends with one).
fn committed_flags(t: &Trace, sector: u32, report: bool) -> HashSet<(Flags, Flags)> {
    let mut disk = t.base.clone();
    let mut out = HashSet::new();
    let mut add = |d: &[u8]| {
        if let Ok((f, _)) = view(d, sector, report) {
            out.insert((f.a, f.b));
        }
    };
    add(&disk);
    for e in &t.events {
        match e {
            Event::Write(w) => {
                let s = w.off as usize;
                disk[s..s + w.data.len()].copy_from_slice(&w.data);
            }
            Event::Flush => add(&disk),
        }
    }
    out
}

/// One disk to boot, with what its path did so far.
#[derive(Clone)]
struct Item {
    disk: Vec<u8>,
    /// Boots of B on this path.
    f_boots: u8,
    /// B was seen given up on this path.
    f_gone: bool,
    /// A reached boot-check on this path (the last boot to explore).
    done: bool,
    /// Power cuts on this path so far.
    crashes: u8,
}

struct Ctx {
    case: Case,
    sector: u32,
    report: bool,
    base: u64,
}

impl Ctx {
    fn scenario(&self, it: &Item) -> u64 {
        self.base
            | u64::from(it.f_boots) << 40
            | u64::from(it.f_gone) << 48
            | u64::from(it.done) << 49
            | u64::from(it.crashes) << 52
    }

    /// The check boot-select runs on the chosen slot.
    fn check(&self, id: SlotId) -> Result<(), String> {
        if matches!(self.case, Case::CheckFails | Case::TrialCheckFails) && id == F {
            Err("the root hash does not verify".into())
        } else {
            Ok(())
        }
    }
}

/// Invariants 1 to 3 on one crash state of a trace from `before`.
fn check_state(
    cx: &Ctx,
    it: &Item,
    allowed: &HashSet<(Flags, Flags)>,
    before: &[BootState; 2],
    cleared: Option<SlotId>,
    d: &[u8],
    inv: &Invariants,
) -> bool {
    let what = || format!("{:?} ({}-byte sectors)", cx.case, cx.sector);
    let (f, st) = inv.ok(view(d, cx.sector, cx.report), |e| {
        format!("{}: crash state: {e}", what())
    });
    inv.that(allowed.contains(&(f.a, f.b)), || {
        format!(
            "{}: crash state flags {f:?} are none of the commits' {allowed:?}",
            what()
        )
    });
    for id in SlotId::ALL {
        let (now, was) = (&st[id as usize], &before[id as usize]);
        let ok = now.unchecked_boots >= was.unchecked_boots
            || (cleared == Some(id) && now.unchecked_boots == 0);
        inv.that(ok, || {
            format!(
                "{}: slot {id}'s count went from {} to {}",
                what(),
                was.unchecked_boots,
                now.unchecked_boots
            )
        });
    }
    let gone = !f.get(F).bootable();
    inv.that(!it.f_gone || gone, || {
        format!("{}: slot {F} was given up and is bootable again", what())
    });
    if gone && matches!(cx.case, Case::Unchecked | Case::CheckFails) {
        inv.that(st[F as usize].given_up.is_some(), || {
            format!("{}: slot {F} is given up with no reason", what())
        });
    }
    gone
}

#[derive(Default)]
struct Totals {
    boots: usize,
    cut_boots: usize,
    max_f_boots: u8,
    given_up_seen: usize,
}

/// Power cuts per path: every boot (and mark-good) of a path with fewer
/// cuts is cut at every write, and each crash state is booted on; a path
/// that has had this many boots on without cuts. Two: a cut during the
/// boot (or mark-good) after a cut; three in the long mode
/// (`SLOTCTL_RELIABILITY=full`).
fn max_crashes() -> u8 {
    if full_mode() {
        3
    } else {
        2
    }
}

fn explore(cx: &Ctx, start: Vec<u8>, rng: &mut Rng, states: &mut CrashStates, t: &mut Totals) {
    let opts = CrashOptions::default();
    let mut queue = VecDeque::from([Item {
        disk: start,
        f_boots: 0,
        f_gone: false,
        done: false,
        crashes: 0,
    }]);
    let mut seen: HashSet<(u64, u8, bool, bool, u8)> = HashSet::new();
    while let Some(it) = queue.pop_front() {
        let key = (disk_identity(&it.disk), it.f_boots, it.f_gone, it.done);
        if !seen.insert((key.0, key.1, key.2, key.3, it.crashes)) {
            continue;
        }
        let cut = it.crashes < max_crashes();
        t.boots += 1;
        assert!(t.boots < 100_000, "the boot exploration does not converge");
        let before = view(&it.disk, cx.sector, cx.report)
            .expect("a reached disk reads")
            .1;
        let mut dev = SimDevice::new(it.disk.clone(), cx.sector, cx.report);
        let (res, trace) = Trace::record(&mut dev, |d| -> Result<_, String> {
            let mut disk = Disk::open(d, None).map_err(|e| e.to_string())?;
            disk.boot_select_checked(false, BOUND, &mut |id| cx.check(id))
                .map_err(|e| e.to_string())
        });
        let report = res.unwrap_or_else(|e| panic!("{:?}: boot failed: {e}", cx.case));
        let slot = report.choice.slot;
        let allowed = committed_flags(&trace, cx.sector, cx.report);
        let scenario = cx.scenario(&it);
        if cut {
            t.cut_boots += 1;
            trace.for_each_crash(&opts, rng, scenario, states, |_, _, d, inv| {
                let gone = check_state(cx, &it, &allowed, &before, None, d, inv);
                if !it.done {
                    queue.push_back(Item {
                        disk: d.to_vec(),
                        f_gone: it.f_gone || gone,
                        crashes: it.crashes + 1,
                        ..it
                    });
                }
            });
        }
        // What the medium holds when boot-select returns: the boot that
        // follows may lose anything not flushed.
        let after = dev.durable().to_vec();
        let (flags, st) = view(&after, cx.sector, cx.report).expect("the booted disk reads");
        t.given_up_seen += usize::from(!report.given_up.is_empty());
        if slot == F {
            assert!(!it.f_gone, "{:?}: a given-up slot {F} was chosen", cx.case);
            let n = it.f_boots + 1;
            let limit = if cx.case == Case::Trial { 3 } else { BOUND };
            assert!(
                n <= limit,
                "{:?}: slot {F} chosen for the {n}th time (limit {limit})",
                cx.case
            );
            assert!(
                !matches!(cx.case, Case::CheckFails | Case::TrialCheckFails),
                "{:?}: a failing check booted {F}",
                cx.case
            );
            // The boot is counted on the medium before it is booted.
            assert!(
                st[F as usize].unchecked_boots >= n,
                "{:?}: boot {n} not counted",
                cx.case
            );
            t.max_f_boots = t.max_f_boots.max(n);
            queue.push_back(Item {
                disk: after,
                f_boots: n,
                ..it
            });
            continue;
        }
        assert_eq!(slot, G, "{:?}: chose {slot}", cx.case);
        assert!(
            !flags.get(F).bootable(),
            "{:?}: {G} chosen over a bootable {F}",
            cx.case
        );
        if it.done {
            continue;
        }
        // A reaches boot-check: mark-good, cut at every write.
        let mut dev = SimDevice::new(after, cx.sector, cx.report);
        let (res, trace) = Trace::record(&mut dev, |d| -> Result<(), String> {
            let mut disk = Disk::open(d, None).map_err(|e| e.to_string())?;
            disk.set_booted(Some(G));
            disk.mark_good().map_err(|e| e.to_string())
        });
        res.unwrap_or_else(|e| panic!("{:?}: mark-good failed: {e}", cx.case));
        let allowed = committed_flags(&trace, cx.sector, cx.report);
        let it_g = Item {
            f_gone: true,
            ..it.clone()
        };
        let scenario = cx.scenario(&it_g) | 1 << 50;
        if cut {
            trace.for_each_crash(&opts, rng, scenario, states, |_, _, d, inv| {
                check_state(cx, &it_g, &allowed, &st, Some(G), d, inv);
                // The device reboots: A again, until its boot-check lands.
                queue.push_back(Item {
                    disk: d.to_vec(),
                    crashes: it_g.crashes + 1,
                    ..it_g
                });
            });
        }
        let marked = dev.durable().to_vec();
        let (_, st) = view(&marked, cx.sector, cx.report).expect("the marked disk reads");
        assert!(
            st[G as usize].is_clear(),
            "{:?}: mark-good left a count",
            cx.case
        );
        queue.push_back(Item {
            disk: marked,
            done: true,
            ..it_g
        });
    }
}

#[test]
fn reliability_power_cut_boot_counter() {
    let seed = seed_from_env();
    eprintln!("power_cut_bootcount: seed {seed} (SLOTCTL_SEED={seed} reproduces)");
    let start = Instant::now();
    let mut states = CrashStates::new("power_cut_bootcount");
    let mut rng = Rng::new(seed);
    for (sector, report) in [(512u32, false), (4096, true)] {
        for (n, case) in [
            Case::Unchecked,
            Case::CheckFails,
            Case::Trial,
            Case::TrialCheckFails,
        ]
        .into_iter()
        .enumerate()
        {
            let b = if matches!(case, Case::Trial | Case::TrialCheckFails) {
                fl(2, 3, false)
            } else {
                fl(2, 0, true)
            };
            let dev = with_flags(fresh_disk(sector, report), fl(1, 0, true), b);
            let cx = Ctx {
                case,
                sector,
                report,
                base: (u64::from(sector) << 8) | n as u64,
            };
            let mut t = Totals::default();
            explore(&cx, dev.durable().to_vec(), &mut rng, &mut states, &mut t);
            eprintln!(
                "power_cut_bootcount: {case:?}, {sector}-byte sectors: {} boots explored ({} cut at every write), slot B chosen at most {} times, given up on {} boots",
                t.boots, t.cut_boots, t.max_f_boots, t.given_up_seen
            );
            let want = match case {
                Case::Unchecked => BOUND,
                Case::CheckFails | Case::TrialCheckFails => 0,
                Case::Trial => 3,
            };
            assert_eq!(
                t.max_f_boots, want,
                "{case:?}: the bound is not reached exactly"
            );
            assert!(
                t.given_up_seen > 0 && t.boots > 10,
                "{case:?}: too little explored"
            );
        }
    }
    eprintln!("{}", states.summary());
    eprintln!("power_cut_bootcount: in {:.1?}", start.elapsed());
    assert!(
        states.distinct() >= 200,
        "too few crash states: {}",
        states.distinct()
    );
}
