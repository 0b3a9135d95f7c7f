//! Power cuts at every write and flush of a real `slotctl install` (the
//! binary, recorded with strace: invalidate, record erase, payload stream,
//! read-back, record, activate), with torn and reordered writes; after each
//! crash the device boots and the invariants of DESIGN.md are checked:
//!
//! 1. the table reads as before, invalidated, or activated: nothing else;
//! 2. no slot is bootable unless its partitions hold exactly the payloads of
//!    the signed header in its slot record (every byte written and flushed);
//! 3. the old (booted) slot is bootable in every crash state, and boot
//!    selection picks it until the activation commit landed;
//! 4. the same install, run again (the real binary) on the crash disk,
//!    succeeds and the result boots the new slot with the new image
//!    (on a sample of the crash states in CI; on all with
//!    `SLOTCTL_RELIABILITY=full`).
//!
//! Nothing outside the target slot's partitions and the GPT is ever written
//! (checked on the trace). Counts are printed (`--nocapture`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use boot_flags::{Disk, FileDevice, SlotFlags, SlotId};
use slotctl_tests::installfix::{ok, Fix};
use slotctl_tests::sim::flagdisk::boot;
use slotctl_tests::sim::strace::record_binary;
use slotctl_tests::sim::{
    full_mode, seed_from_env, slot_places, CrashOptions, CrashStates, CrashStats, Invariants, Rng,
    SliceDevice, SlotPlace,
};

/// One image version: its file and its payload bytes per role.
struct Version {
    image: PathBuf,
    boot: Vec<u8>,
    root: Vec<u8>,
}

/// Random bytes, so that every torn sector differs from what it replaces.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next_u64() as u8).collect()
}

fn make_version(fix: &Fix, name: &str, version: &str, seed: u64, root_len: usize) -> Version {
    let boot = noise(200 << 10, seed);
    let root = noise(root_len, seed + 1);
    let bp = fix.path(&format!("{name}-boot.bin"));
    let rp = fix.path(&format!("{name}-root.bin"));
    std::fs::write(&bp, &boot).unwrap();
    std::fs::write(&rp, &root).unwrap();
    let image = fix.pack(
        &format!("{name}.img"),
        version,
        1,
        &[("BOOT", &bp), ("ROOT", &rp)],
        "zstd",
    );
    Version { image, boot, root }
}

fn install_cmd(fix: &Fix, disk: &Path, image: &Path, booted: &str) -> Command {
    let mut c = Command::new(slotctl_tests::slotctl_bin());
    c.arg("install")
        .arg(image)
        .args(["--booted", booted, "--disk"])
        .arg(disk)
        .arg("--config")
        .arg(&fix.config);
    c
}

/// A device in the field: A and B both hold v1 and are good, B is booted
/// (P=2), A is the fallback (P=1).
fn field_device(fix: &Fix, v1: &Version, sector: u32) {
    if sector != 512 {
        fix.reinit_disk(sector);
    }
    fix.factory("A", &v1.image);
    ok(install_cmd(fix, &fix.disk, &v1.image, "A")
        .output()
        .unwrap());
    ok(fix.run(&["boot-select"]));
    ok(fix.run(&["--booted", "B", "mark-good"]));
    let b = fix.flags("B");
    assert!(b.0 == 2 && b.2, "B booted and good: {b:?}");
    assert!(fix.flags("A").2);
}

/// Where a slot's partitions are.
/// Which version a slot holds, checked byte for byte: its record must be
/// the signed header of v1 or v2 and its partitions must start with that
/// version's payloads. `Err` says what is wrong.
fn slot_holds<'a>(
    disk: &[u8],
    place: &SlotPlace,
    versions: &'a [(&'a str, Vec<u8>, &'a Version)],
) -> Result<&'a str, String> {
    let (boff, blen) = place.boot;
    let mut dev = SliceDevice {
        bytes: disk,
        sector_size: None,
    };
    let blob = slotctl::record::read(&mut dev, boff as u64, blen as u64)
        .map_err(|e| format!("slot record unreadable: {e}"))?
        .ok_or("no slot record")?;
    let (name, _, v) = versions
        .iter()
        .find(|(_, file, _)| file.starts_with(&blob))
        .ok_or("the slot record is not the header of any signed image")?;
    let (roff, _) = place.root;
    if disk[boff..boff + v.boot.len()] != v.boot[..] {
        return Err(format!("BOOT does not hold {name}'s payload"));
    }
    if disk[roff..roff + v.root.len()] != v.root[..] {
        return Err(format!("ROOT does not hold {name}'s payload"));
    }
    Ok(name)
}

struct Outcome {
    stats: CrashStats,
    reinstalls: usize,
    writes: usize,
    flushes: usize,
}

struct Setup {
    fix: Fix,
    v1: Version,
    v2: Version,
    sector: u32,
}

fn setup(sector: u32, root_len: usize) -> Setup {
    let fix = Fix::new();
    let v1 = make_version(&fix, "v1", "1.0.0", 10, root_len);
    let v2 = make_version(&fix, "v2", "2.0.0", 20, root_len);
    field_device(&fix, &v1, sector);
    Setup {
        fix,
        v1,
        v2,
        sector,
    }
}

/// Cut the power everywhere in an install of v2 into A, starting from the
/// disk as it is in the fixture. Returns the outcome and a disk the install
/// left half-way through its payload (to start the next scenario from).
fn power_cut_install(
    su: &Setup,
    rng: &mut Rng,
    reinstall_sample: usize,
    states: &mut CrashStates,
    scenario: u64,
) -> (Outcome, Option<Vec<u8>>) {
    let Setup {
        fix,
        v1,
        v2,
        sector,
    } = su;
    let sector = *sector;
    let base = fix.disk_bytes();
    let [pa, pb] = slot_places(FileDevice::open(&fix.disk, false).unwrap());
    let versions = [
        ("v1", std::fs::read(&v1.image).unwrap(), v1),
        ("v2", std::fs::read(&v2.image).unwrap(), v2),
    ];

    // The real install of v2 into A, recorded.
    let (out, trace) = record_binary(
        install_cmd(fix, &fix.disk, &v2.image, "B"),
        &fix.disk,
        base.clone(),
        sector,
        &fix.path("strace.log"),
    );
    let out = ok(out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2.0.0"),
        "the install reports the version"
    );
    let fin = fix.disk_bytes();
    assert!(
        trace.final_disk() == fin,
        "the strace capture replays to the disk the install left"
    );
    // Nothing outside slot A's partitions and the GPT areas is written.
    let gpt_areas = {
        let g = boot_flags::Gpt::read(&mut FileDevice::open(&fix.disk, false).unwrap()).unwrap();
        g.written_ranges()
    };
    for e in &trace.events {
        if let slotctl_tests::sim::Event::Write(w) = e {
            let (s, end) = (w.off as usize, w.off as usize + w.data.len());
            let inside = |(o, l): (usize, usize)| s >= o && end <= o + l;
            let ok = inside(pa.boot)
                || inside(pa.root)
                || gpt_areas
                    .iter()
                    .any(|&(o, l)| inside((o as usize, l as usize)));
            assert!(
                ok,
                "the install wrote {s}..{end}, outside slot A and the GPT"
            );
        }
    }

    let read_flags = |disk: &[u8]| -> Result<SlotFlags, String> {
        let d = Disk::open(
            SliceDevice {
                bytes: disk,
                sector_size: None,
            },
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok(d.slot_flags())
    };
    let s0 = read_flags(&base).unwrap();
    let s2 = read_flags(&fin).unwrap();
    let s1 = SlotFlags {
        a: boot_flags::Flags::ZERO,
        b: s0.b,
    };
    assert_eq!(slot_holds(&fin, &pa, &versions), Ok("v2"));

    let opts = CrashOptions {
        max_tears: if full_mode() { usize::MAX } else { 4096 },
        ..CrashOptions::default()
    };
    let mut classes = HashSet::new();
    // 4. The same install, run again (the real binary) on a crash disk,
    // succeeds and boots the new slot. Run inline, so that no crash disk
    // is kept in memory.
    let mut reinstalls = 0usize;
    let mut sampled = 0usize;
    let crash_path = fix.path("crash.img");
    let rerun = |disk: &[u8], ctx: &str, inv: &Invariants| {
        std::fs::write(&crash_path, disk).unwrap();
        let out = install_cmd(fix, &crash_path, &v2.image, "B")
            .output()
            .unwrap();
        inv.that(out.status.success(), || {
            format!(
                "{ctx}: re-running the install failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let after = std::fs::read(&crash_path).unwrap();
        let f = read_flags(&after);
        inv.that(f == Ok(s2), || {
            format!("{ctx}: the re-run did not activate A: {f:?}")
        });
        let holds = slot_holds(&after, &pa, &versions);
        inv.that(holds == Ok("v2"), || {
            format!("{ctx}: after the re-run A holds {holds:?}")
        });
        let b = boot(&after, sector, false).map(|b| b.choice.slot);
        inv.that(b == Ok(SlotId::A), || {
            format!("{ctx}: after the re-run the boot chose {b:?}")
        });
    };
    let mut total_distinct = 0usize;
    let mut mid: Option<Vec<u8>> = None;
    let stats = trace.for_each_crash(&opts, rng, scenario, states, |cut, variant, disk, inv| {
        total_distinct += 1;
        let ctx = || {
            format!(
                "install v2 into A ({sector}-byte sectors), cut {cut}/{}, {variant:?}",
                trace.events.len()
            )
        };
        // 1. The table reads, and as one of the three states.
        let flags = inv.ok(read_flags(disk), |e| {
            format!("{}: the table is unreadable: {e}", ctx())
        });
        inv.that(flags == s0 || flags == s1 || flags == s2, || {
            format!(
                "{}: flags {flags:?} are not before {s0:?}, invalidated {s1:?} or activated {s2:?}",
                ctx()
            )
        });
        // 2. A bootable slot holds every byte of a signed image.
        for (id, place) in [(SlotId::A, &pa), (SlotId::B, &pb)] {
            if flags.get(id).bootable() {
                let holds = slot_holds(disk, place, &versions);
                inv.ok(holds, |why| {
                    format!("{}: slot {id} is bootable but {why}", ctx())
                });
            }
        }
        // 3. The old slot stays bootable and is chosen until activation.
        inv.that(flags.b.bootable(), || {
            format!("{}: the booted slot B is not bootable", ctx())
        });
        let booted = inv.ok(boot(disk, sector, false), |e| {
            format!("{}: boot failed: {e}", ctx())
        });
        let want = if flags == s2 { SlotId::A } else { SlotId::B };
        inv.that(booted.choice.slot == want, || {
            format!(
                "{}: boot-select chose {}, not {want}",
                ctx(),
                booted.choice.slot
            )
        });
        // Candidates for re-running the install: one per (flags, record) class, then random.
        let rec = slot_holds(disk, &pa, &versions).unwrap_or("none");
        if mid.is_none() && flags == s1 && rec == "none" {
            let (ro, _) = pa.root;
            let r = &disk[ro..ro + v2.root.len()];
            if r[..4096] == v2.root[..4096]
                && r[r.len() - 4096..] != v2.root[v2.root.len() - 4096..]
            {
                mid = Some(disk.to_vec());
            }
        }
        // One re-run per (flags, record, health of each GPT copy) class.
        let health = {
            let d = Disk::open(
                SliceDevice {
                    bytes: disk,
                    sector_size: None,
                },
                None,
            )
            .unwrap();
            let g = d.gpt();
            [boot_flags::GptCopy::Primary, boot_flags::GptCopy::Backup].map(|c| g.health(c).is_ok())
        };
        let class = format!("{flags:?}/{rec}/{health:?}");
        // Every class representative, and up to `reinstall_sample` others.
        let new_class = classes.insert(class.clone());
        let sample = !new_class
            && sampled < reinstall_sample
            && (full_mode() || rng_pick(total_distinct, reinstall_sample));
        if new_class || sample {
            sampled += usize::from(sample);
            rerun(disk, &format!("{} [{class}]", ctx()), inv);
            reinstalls += 1;
        }
    });

    let o = Outcome {
        stats,
        reinstalls,
        writes: trace.writes(),
        flushes: trace.flushes(),
    };
    (o, mid)
}

/// Deterministic sampling: every n-th state, so about `sample` of a few
/// thousand are kept.
fn rng_pick(i: usize, sample: usize) -> bool {
    sample > 0 && i % (4000 / sample).max(1) == 0
}

#[test]
fn reliability_power_cut_install_every_write_and_flush() {
    let seed = seed_from_env();
    eprintln!("power_cut_install: seed {seed} (SLOTCTL_SEED={seed} reproduces)");
    let mut rng = Rng::new(seed);
    let sample = if full_mode() { usize::MAX } else { 16 };
    let mut states = CrashStates::new("power_cut_install");
    for sector in [512u32, 4096] {
        let su = setup(sector, 3 << 20);
        // The crash states of each run are checked against that run's
        // starting disk (its flags before): one scenario per run.
        let scenario = |run: u64| (u64::from(sector) << 8) | run;
        let (start, before) = (Instant::now(), states.distinct());
        let (o, mid) = power_cut_install(&su, &mut rng, sample, &mut states, scenario(0));
        report(
            sector,
            "from a field device",
            &o,
            states.distinct() - before,
            start,
        );
        // Power cuts while re-running an install that was itself cut half-way
        // through the payload.
        let mid = mid.expect("a crash state half-way through the payload");
        std::fs::write(&su.fix.disk, mid).unwrap();
        let (start, before) = (Instant::now(), states.distinct());
        let (o, _) = power_cut_install(&su, &mut rng, sample, &mut states, scenario(1));
        let new = states.distinct() - before;
        report(sector, "re-run after a cut mid-payload", &o, new, start);
    }
    eprintln!("{}", states.summary());
    assert!(
        states.distinct() >= 10_000,
        "too few distinct crash states: {}",
        states.distinct()
    );
}

fn report(sector: u32, what: &str, o: &Outcome, new: usize, start: Instant) {
    eprintln!(
        "power_cut_install: {sector}-byte sectors, {what}: {} writes, {} flushes; {} variants at {} cut points, {} distinct disks ({} not reached by an earlier run of the suite), {} checked here; install re-run on {} of them, in {:.1?}",
        o.writes,
        o.flushes,
        o.stats.generated,
        o.stats.cut_points,
        o.stats.distinct,
        new,
        o.stats.checked,
        o.reinstalls,
        start.elapsed()
    );
    assert!(o.reinstalls >= 2, "too few re-runs");
}
