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

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use boot_flags::{BlockDevice, Disk, Nibble, Op, SlotFlags, SlotId};
use slotctl_tests::sim::flagdisk::{boot, fl, fresh_disk, read_view, with_flags};
use slotctl_tests::sim::{
    full_mode, seed_from_env, CrashOptions, CrashStats, Rng, SimDevice, Trace,
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
    sector: u32,
    report: bool,
    opts: &CrashOptions,
    rng: &mut Rng,
    tag: u64,
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
    let mut seen = HashSet::new();
    let stats = trace.for_each_crash(opts, rng, tag, &mut seen, |cut, variant, disk| {
        let ctx = || format!("{} ({sector}-byte sectors), cut {cut}, {variant:?}", sc.name);
        // Invariant 1: exactly before or after, never unreadable, never a mix.
        let (entries, flags) = read_view(disk, sector, report)
            .unwrap_or_else(|e| panic!("{}: the table is unreadable: {e}", ctx()));
        assert!(
            entries == entries_before || entries == entries_after,
            "{}: the entry array is neither as before nor as after (flags {flags:?}; before {flags_before:?}, after {flags_after:?})",
            ctx()
        );
        // Invariant 3: a slot bootable before and after stays bootable.
        for id in SlotId::ALL {
            if flags_before.get(id).bootable() && flags_after.get(id).bootable() {
                assert!(flags.get(id).bootable(), "{}: slot {id} stopped being bootable", ctx());
            }
        }
        // The real readers agree: cgpt and sfdisk see the same flags.
        if sector == 512 && !report && *tool_budget > 0 && rng_tick(&mut tick, if full_mode() { 1 } else { 3 }) {
            *tool_budget -= 1;
            cross_check_tools(disk, &flags, &ctx());
        }
        // The boot: repair, select, use a try; the table is healthy after.
        let booted = boot(disk, sector, report).unwrap_or_else(|e| panic!("{}: boot failed: {e}", ctx()));
        if flags.next_boot().is_some() {
            assert!(
                booted.before.get(booted.choice.slot).bootable(),
                "{}: boot-select chose a slot that is not bootable",
                ctx()
            );
        }
    });
    // The operation must be reachable: the final state is one of the checked ones.
    assert!(
        stats.distinct >= 2,
        "{}: fewer crash states than expected",
        sc.name
    );
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
fn cross_check_tools(disk: &[u8], flags: &SlotFlags, ctx: &str) {
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
        assert_eq!(cg, want, "{ctx}: cgpt reads slot {id} differently");
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
        assert_eq!(sfw, want, "{ctx}: sfdisk reads slot {id} differently");
    }
}

fn opts() -> CrashOptions {
    CrashOptions {
        max_tears: if full_mode() { usize::MAX } else { 64 },
        ..CrashOptions::default()
    }
}

#[test]
fn reliability_power_cut_every_flags_operation() {
    let seed = seed_from_env();
    eprintln!("power_cut: seed {seed} (SLOTCTL_SEED={seed} reproduces)");
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut total = CrashStats::default();
    let opts = opts();
    let tool_budget_start = if full_mode() { usize::MAX } else { 48 };
    let mut tool_budget = tool_budget_start;
    for (sector, report) in [(512u32, false), (4096, true), (4096, false)] {
        for (i, sc) in scenarios().iter().enumerate() {
            let tag = (u64::from(sector) << 32) | (u64::from(report) << 16) | i as u64;
            let s = check_scenario(sc, sector, report, &opts, &mut rng, tag, &mut tool_budget);
            total += s;
        }
    }
    eprintln!(
        "power_cut: flags operations: {} distinct crash states checked ({} generated at {} cut points) in {:.1?}",
        total.distinct,
        total.generated,
        total.cut_points,
        start.elapsed()
    );
    let checked_by_tools = tool_budget_start.saturating_sub(tool_budget);
    eprintln!("power_cut: {checked_by_tools} of them cross-checked with cgpt and sfdisk");
    assert!(
        checked_by_tools >= 20,
        "too few crash states cross-checked with the real tools"
    );
    assert!(
        total.distinct >= 250,
        "too few crash states: {}",
        total.distinct
    );
}

/// The state of the repeated-boot exploration: a disk after some boots.
fn gpt_region_hash(bytes: &[u8], sector: usize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes[..sector * 40].hash(&mut h);
    bytes[bytes.len() - sector * 40..].hash(&mut h);
    h.finish()
}

/// rauc #683: power cuts during boot after boot, with every crash state of
/// each boot-select explored (breadth first, to a fixed point): every
/// reachable disk boots something, the slot marked good is never lost,
/// and a slot on trial is never chosen once its tries are spent.
#[test]
fn reliability_repeated_power_cuts_during_boot_never_leave_nothing_to_boot() {
    let start = Instant::now();
    let seed = seed_from_env();
    let mut rng = Rng::new(seed ^ 0x683);
    let mut explored = 0usize;
    let mut crash_states = 0usize;
    let mut marked_good = 0usize;
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
        for (a, b) in cases {
            let start_dev = with_flags(
                fresh_disk(sector, report),
                fl(a.0, a.1, a.2),
                fl(b.0, b.1, b.2),
            );
            let good_before: Vec<SlotId> = SlotId::ALL
                .into_iter()
                .filter(|&id| {
                    let f = if id == SlotId::A {
                        fl(a.0, a.1, a.2)
                    } else {
                        fl(b.0, b.1, b.2)
                    };
                    f.good()
                })
                .collect();
            let mut queue = VecDeque::from([start_dev.durable().to_vec()]);
            let mut visited = HashSet::new();
            while let Some(disk) = queue.pop_front() {
                if !visited.insert(gpt_region_hash(&disk, sector as usize)) {
                    continue;
                }
                explored += 1;
                assert!(explored < 200_000, "the boot exploration does not converge");
                let mut dev = SimDevice::new(disk.clone(), sector, report);
                let (res, trace) = Trace::record(&mut dev, |d| -> Result<_, String> {
                    let mut disk = Disk::open(d, None).map_err(|e| e.to_string())?;
                    let flags = disk.slot_flags();
                    let r = disk.boot_select(false).map_err(|e| e.to_string())?;
                    Ok((flags, r.choice))
                });
                let (flags, choice) =
                    res.unwrap_or_else(|e| panic!("boot failed from {a:?}/{b:?}: {e}"));
                // Something is always chosen; a bootable slot when there is one.
                if flags.next_boot().is_some() {
                    assert!(
                        flags.get(choice.slot).bootable(),
                        "chose an unbootable slot from {flags:?}"
                    );
                    if !flags.get(choice.slot).successful {
                        assert!(
                            flags.get(choice.slot).tries.get() > 0,
                            "a trial with no tries left"
                        );
                    }
                }
                // With no bootable slot, the last successful one (else A).
                if flags.next_boot().is_none() {
                    if let Some(&g) = good_before.first() {
                        assert!(
                            flags.get(choice.slot).successful,
                            "last resort {} is not the good slot {g}",
                            choice.slot
                        );
                    } else {
                        assert_eq!(
                            choice.slot,
                            SlotId::A,
                            "last resort without a good slot must be A"
                        );
                    }
                } else if good_before.iter().any(|&g| flags.get(g).priority.get() > 0) {
                    assert!(flags.get(choice.slot).bootable());
                }
                // A slot that was good stays good.
                for &id in &good_before {
                    assert!(
                        flags.get(id).good(),
                        "slot {id} lost its successful bit: {flags:?}"
                    );
                }
                let mut seen = HashSet::new();
                let s = trace.for_each_crash(
                    &CrashOptions::default(),
                    &mut rng,
                    0,
                    &mut seen,
                    |_, _, d| {
                        if !visited.contains(&gpt_region_hash(d, sector as usize)) {
                            queue.push_back(d.to_vec());
                        }
                    },
                );
                crash_states += s.distinct;
                let fin = trace.final_disk();
                // The booted system's boot-check marks a trial boot good; the
                // power may be cut during that commit too.
                if matches!(choice.kind, boot_flags::BootKind::Trial { .. }) {
                    let mut dev = SimDevice::new(fin.clone(), sector, report);
                    let (res, trace) = Trace::record(&mut dev, |d| -> Result<(), String> {
                        let mut disk = Disk::open(d, None).map_err(|e| e.to_string())?;
                        disk.set_booted(Some(choice.slot));
                        disk.mark_good().map_err(|e| e.to_string())
                    });
                    res.unwrap_or_else(|e| panic!("mark-good after a trial boot failed: {e}"));
                    let mut seen = HashSet::new();
                    let s = trace.for_each_crash(
                        &CrashOptions::default(),
                        &mut rng,
                        1,
                        &mut seen,
                        |_, _, d| {
                            if !visited.contains(&gpt_region_hash(d, sector as usize)) {
                                queue.push_back(d.to_vec());
                            }
                        },
                    );
                    crash_states += s.distinct;
                    marked_good += 1;
                }
                if !visited.contains(&gpt_region_hash(&fin, sector as usize)) {
                    queue.push_back(fin);
                }
            }
        }
    }
    eprintln!(
        "power_cut: repeated boots: {explored} distinct disks explored, {crash_states} crash states of boot-select and of mark-good after {marked_good} trial boots, in {:.1?}",
        start.elapsed()
    );
    assert!(explored >= 20);
}
