//! Power cuts during every state-machine operation of boot-flags (the code
//! `slotctl activate`, `mark-good`, `mark-bad`, `rollback`, `cancel`,
//! `set-flags`, `repair` and `boot-select` run), on 512- and 4096-byte
//! sector disks, at every write and flush boundary, with torn and reordered
//! writes (tests/src/sim.rs). After each crash the device boots as the boot
//! stage does, and the invariants of DESIGN.md are checked:
//!
//! 1. the table reads as exactly before or exactly after the operation
//!    (the whole entry array, not only the flags), never unreadable;
//! 2. boot-select succeeds, repairs any bad copy, and commits what the
//!    state machine decides;
//! 3. a slot bootable both before and after the operation is bootable in
//!    every crash state;
//!
//! and repeated power cuts during boots (rauc #683) never leave the device
//! without a slot to boot. Counts are printed (run with `--nocapture`).

use std::time::Instant;

mod power_cut_boots;
use power_cut_boots::repeated_boots;

use boot_flags::{BlockDevice, Disk, Nibble, Op, SlotFlags, SlotId};
use slotctl_tests::sim::flagdisk::{boot, fl, fresh_disk, read_view, with_flags};
use slotctl_tests::sim::{
    disk_identity, full_mode, seed_from_env, CrashOptions, CrashStates, CrashStats, Invariants,
    Rng, SimDevice, Trace,
};

/// What a scenario does to the disk.
#[derive(Clone, Copy, Debug)]
enum Action {
    Op(Op),
    Repair,
    BootSelect,
}

/// How the disk is damaged before the operation (a leftover of an
/// earlier crash).
#[derive(Clone, Copy, Debug)]
enum Damage {
    None,
    /// Primary header sector zeroed.
    PrimaryHeader,
    /// Backup header sector zeroed.
    BackupHeader,
    /// Backup holds an older table (CRCs valid, content stale).
    StaleBackup,
}

struct Scenario {
    name: &'static str,
    a: (u8, u8, bool),
    b: (u8, u8, bool),
    booted: Option<SlotId>,
    action: Action,
    damage: Damage,
}

fn scenarios() -> Vec<Scenario> {
    let t3 = Nibble::new(3).unwrap();
    let s = |name, a, b, booted, action, damage| Scenario {
        name,
        a,
        b,
        booted,
        action,
        damage,
    };
    use Action::*;
    use Damage::*;
    let a = Some(SlotId::A);
    let b = Some(SlotId::B);
    vec![
        s(
            "invalidate",
            (2, 0, true),
            (1, 0, true),
            a,
            Op(boot_flags::Op::Invalidate(SlotId::B)),
            None,
        ),
        s(
            "activate",
            (2, 0, true),
            (0, 0, false),
            a,
            Op(boot_flags::Op::Activate {
                target: SlotId::B,
                tries: t3,
            }),
            None,
        ),
        s(
            "mark-good",
            (1, 0, true),
            (2, 2, false),
            b,
            Op(boot_flags::Op::MarkGood),
            None,
        ),
        s(
            "mark-bad",
            (1, 0, true),
            (2, 2, false),
            b,
            Op(boot_flags::Op::MarkBad {
                slot: Option::None,
                force: false,
            }),
            None,
        ),
        s(
            "rollback",
            (2, 0, true),
            (1, 0, true),
            a,
            Op(boot_flags::Op::Rollback),
            None,
        ),
        s(
            "cancel",
            (1, 0, true),
            (2, 3, false),
            a,
            Op(boot_flags::Op::Cancel),
            None,
        ),
        s(
            "set-flags",
            (1, 0, true),
            (0, 0, false),
            Option::None,
            Op(boot_flags::Op::SetFlags(SlotId::B, fl(2, 5, false))),
            None,
        ),
        s(
            "boot-select",
            (1, 0, true),
            (2, 3, false),
            Option::None,
            BootSelect,
            None,
        ),
        s(
            "boot-select-last-try",
            (1, 0, true),
            (2, 1, false),
            Option::None,
            BootSelect,
            None,
        ),
        s(
            "repair-primary",
            (1, 0, true),
            (2, 3, false),
            Option::None,
            Repair,
            PrimaryHeader,
        ),
        s(
            "repair-backup",
            (1, 0, true),
            (2, 3, false),
            Option::None,
            Repair,
            BackupHeader,
        ),
        s(
            "repair-stale-backup",
            (1, 0, true),
            (2, 3, false),
            Option::None,
            Repair,
            StaleBackup,
        ),
        s(
            "boot-select-bad-primary",
            (1, 0, true),
            (2, 3, false),
            Option::None,
            BootSelect,
            PrimaryHeader,
        ),
        s(
            "boot-select-stale-backup",
            (1, 0, true),
            (2, 3, false),
            Option::None,
            BootSelect,
            StaleBackup,
        ),
        s(
            "mark-good-bad-primary",
            (1, 0, true),
            (2, 2, false),
            b,
            Op(boot_flags::Op::MarkGood),
            PrimaryHeader,
        ),
        s(
            "activate-stale-backup",
            (2, 0, true),
            (0, 0, false),
            a,
            Op(boot_flags::Op::Activate {
                target: SlotId::B,
                tries: t3,
            }),
            StaleBackup,
        ),
    ]
}

fn damage(dev: &mut SimDevice, d: Damage, sector: u32, report: bool) {
    let ss = u64::from(sector);
    let len = dev.len().unwrap();
    let zero = vec![0u8; sector as usize];
    match d {
        Damage::None => {}
        Damage::PrimaryHeader => dev.write_all_at(ss, &zero).unwrap(),
        Damage::BackupHeader => dev.write_all_at(len - ss, &zero).unwrap(),
        Damage::StaleBackup => {
            // Commit a change, then put the primary copy back as it was:
            // the backup now describes a different (newer) table.
            let before = dev.bytes().to_vec();
            {
                let mut disk = Disk::open(&mut *dev, None).unwrap();
                let f = disk.slot_flags();
                let mut a = f.a;
                a.tries = Nibble::new(7).unwrap();
                disk.write_flags(SlotFlags { a, b: f.b }).unwrap();
            }
            let gpt =
                boot_flags::Gpt::read(&mut SimDevice::new(before.clone(), sector, report)).unwrap();
            let entries_end = (2 * ss + gpt.entry_bytes().len() as u64) as usize;
            let range = ss as usize..entries_end;
            dev.write_all_at(ss, &before[range]).unwrap();
        }
    }
    dev.flush().unwrap();
}

fn run(dev: &mut SimDevice, sc: &Scenario) -> Result<(), String> {
    let mut disk = Disk::open(&mut *dev, None).map_err(|e| e.to_string())?;
    disk.set_booted(sc.booted);
    match sc.action {
        Action::Op(op) => disk.apply(op).map(drop).map_err(|e| e.to_string()),
        Action::Repair => disk.repair().map(drop).map_err(|e| e.to_string()),
        Action::BootSelect => disk.boot_select(false).map(drop).map_err(|e| e.to_string()),
    }
}

fn check_scenario(
    sc: &Scenario,
    (sector, report): (u32, bool),
    opts: &CrashOptions,
    rng: &mut Rng,
    scenario: u64,
    states: &mut CrashStates,
    tool_budget: &mut usize,
) -> CrashStats {
    let mut tick = 0usize;
    let (fa, fb) = (fl(sc.a.0, sc.a.1, sc.a.2), fl(sc.b.0, sc.b.1, sc.b.2));
    let mut dev = with_flags(fresh_disk(sector, report), fa, fb);
    damage(&mut dev, sc.damage, sector, report);
    let before = dev.durable().to_vec();
    let (res, trace) = Trace::record(&mut dev, |d| run(d, sc));
    res.unwrap_or_else(|e| panic!("{} ({sector}): the operation itself failed: {e}", sc.name));
    let after = trace.final_disk();
    assert_eq!(
        after,
        dev.durable(),
        "the trace replays to the disk the operation left"
    );
    let (entries_before, flags_before) = read_view(&before, sector, report).expect("before reads");
    let (entries_after, flags_after) = read_view(&after, sector, report).expect("after reads");
    assert!(
        trace.flushes() >= 1,
        "{}: an operation that writes must flush",
        sc.name
    );
    let stats = trace.for_each_crash(opts, rng, scenario, states, |cut, variant, disk, inv| {
        let ctx = || format!("{} ({sector}-byte sectors), cut {cut}, {variant:?}", sc.name);
        // Invariant 1: exactly before or after, never unreadable, never a mix.
        let (entries, flags) = inv.ok(read_view(disk, sector, report), |e| {
            format!("{}: the table is unreadable: {e}", ctx())
        });
        inv.that(entries == entries_before || entries == entries_after, || format!(
            "{}: the entry array is neither as before nor as after (flags {flags:?}; before {flags_before:?}, after {flags_after:?})",
            ctx()
        ));
        // Invariant 3: a slot bootable before and after stays bootable.
        for id in SlotId::ALL {
            if flags_before.get(id).bootable() && flags_after.get(id).bootable() {
                inv.that(flags.get(id).bootable(), || format!("{}: slot {id} stopped being bootable", ctx()));
            }
        }
        // The real readers agree: cgpt and sfdisk see the same flags.
        if sector == 512 && !report && *tool_budget > 0 && rng_tick(&mut tick, if full_mode() { 1 } else { 3 }) {
            *tool_budget -= 1;
            cross_check_tools(disk, &flags, &ctx(), inv);
        }
        // The boot: repair, select, use a try; the table is healthy after.
        let booted = inv.ok(boot(disk, sector, report), |e| format!("{}: boot failed: {e}", ctx()));
        if flags.next_boot().is_some() {
            inv.that(booted.before.get(booted.choice.slot).bootable(), || format!(
                "{}: boot-select chose a slot that is not bootable",
                ctx()
            ));
        }
    });
    // The operation must be reachable: the disk it started from and the
    // disk it left are among the checked states, and they differ (the
    // operation wrote something).
    assert_ne!(before, after, "{}: the operation changed nothing", sc.name);
    for (what, d) in [("before", &before), ("after", &after)] {
        assert!(
            states.was_checked(scenario, disk_identity(d)),
            "{}: the disk {what} the operation is not among the checked crash states",
            sc.name
        );
    }
    stats
}

/// Every n-th call is true.
fn rng_tick(tick: &mut usize, n: usize) -> bool {
    *tick += 1;
    (*tick - 1) % n == 0
}

/// Write a (512-byte sector) crash disk to a file and check that cgpt and
/// sfdisk read the same flags for both flags partitions (BOOT-A = 1,
/// BOOT-B = 3) as boot-flags did.
fn cross_check_tools(disk: &[u8], flags: &SlotFlags, ctx: &str, inv: &Invariants) {
    slotctl_tests::require_tool("cgpt");
    slotctl_tests::require_tool("sfdisk");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.img");
    std::fs::write(&path, disk).unwrap();
    let run = |cmd: &str, args: &[&str]| -> String {
        let out = std::process::Command::new(cmd)
            .args(args)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{ctx}: {cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let sf: serde_json::Value = serde_json::from_str(&run("sfdisk", &["--json"])).unwrap();
    let parts = sf["partitiontable"]["partitions"]
        .as_array()
        .expect("sfdisk partitions")
        .clone();
    for (id, index) in [(SlotId::A, 1u32), (SlotId::B, 3)] {
        let f = flags.get(id);
        let want = (f.priority.get(), f.tries.get(), u8::from(f.successful));
        let i = index.to_string();
        let num = |flag: &str| {
            run("cgpt", &["show", "-i", &i, flag])
                .parse::<u8>()
                .unwrap()
        };
        let cg = (num("-P"), num("-T"), num("-S"));
        inv.that(cg == want, || {
            format!("{ctx}: cgpt reads slot {id} as {cg:?}, boot-flags as {want:?}")
        });
        let p = &parts[index as usize - 1];
        let mut word = 0u64;
        for tok in p["attrs"].as_str().unwrap_or_default().split_whitespace() {
            if let Some(bits) = tok.strip_prefix("GUID:") {
                for b in bits.split(',') {
                    word |= 1 << b.parse::<u32>().unwrap();
                }
            }
        }
        let sfw = (
            ((word >> 48) & 0xf) as u8,
            ((word >> 52) & 0xf) as u8,
            ((word >> 56) & 1) as u8,
        );
        inv.that(sfw == want, || {
            format!("{ctx}: sfdisk reads slot {id} as {sfw:?}, boot-flags as {want:?}")
        });
    }
}

fn opts() -> CrashOptions {
    CrashOptions {
        max_tears: if full_mode() { usize::MAX } else { 64 },
        ..CrashOptions::default()
    }
}

/// One suite, one count: the flags operations and the repeated boots
/// reach some of the same disks (a boot-select from "A good, B on trial"
/// is both a scenario and the start of a boot exploration), so their crash
/// states are counted in one set.
#[test]
fn reliability_power_cut_flags_operations_and_repeated_boots() {
    let seed = seed_from_env();
    eprintln!("power_cut: seed {seed} (SLOTCTL_SEED={seed} reproduces)");
    let mut states = CrashStates::new("power_cut");
    flags_operations(&mut Rng::new(seed), &mut states);
    let before = states.distinct();
    states.new_phase();
    repeated_boots(&mut Rng::new(seed ^ 0x683), &mut states);
    eprintln!(
        "power_cut: {} of the repeated boots' disks were not reached by the flags operations",
        states.distinct() - before
    );
    eprintln!("{}", states.summary());
    assert!(
        states.distinct() >= 150,
        "too few distinct crash states: {}",
        states.distinct()
    );
}

fn flags_operations(rng: &mut Rng, states: &mut CrashStates) {
    let start = Instant::now();
    let mut total = CrashStats::default();
    let opts = opts();
    let tool_budget_start = if full_mode() { usize::MAX } else { 48 };
    let mut tool_budget = tool_budget_start;
    let checks = (states.state_checks(), states.invariant_checks());
    for (sector, report) in [(512u32, false), (4096, true), (4096, false)] {
        for (i, sc) in scenarios().iter().enumerate() {
            // What the checks expect: the operation, its disk and device.
            let scenario = (u64::from(sector) << 32) | (u64::from(report) << 16) | i as u64;
            total += check_scenario(
                sc,
                (sector, report),
                &opts,
                rng,
                scenario,
                states,
                &mut tool_budget,
            );
        }
    }
    eprintln!(
        "power_cut: flags operations: {} distinct crash states ({} variants at {} cut points), {} state checks, {} invariant checks, in {:.1?}",
        states.phase_distinct(),
        total.generated,
        total.cut_points,
        states.state_checks() - checks.0,
        states.invariant_checks() - checks.1,
        start.elapsed()
    );
    let checked_by_tools = tool_budget_start.saturating_sub(tool_budget);
    eprintln!("power_cut: {checked_by_tools} of them cross-checked with cgpt and sfdisk");
    assert!(
        checked_by_tools >= 20,
        "too few crash states cross-checked with the real tools"
    );
    assert!(
        states.phase_distinct() >= 100,
        "too few crash states: {}",
        states.phase_distinct()
    );
}
