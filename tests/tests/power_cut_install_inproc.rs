//! Power cuts at every write, flush and read of `slotctl install`, run
//! in-process (`slotctl::install::install_on`) on the simulated device of
//! tests/src/sim.rs, with no strace capture.
//!
//! Two drivers, on a field device (A and B hold v1 and are good, B booted),
//! installing v2 into A, with 512- and 4096-byte sectors:
//!
//! - **trace**: the install's writes and flushes are recorded, and every
//!   crash state the trace yields (clean cuts, torn writes, reordered
//!   unflushed subsets) is booted and checked;
//! - **live**: the install is run again and again, and the power is cut at
//!   its n-th device operation for every n, reads included: the install
//!   really stops there (inside the read-back of the payloads, inside the
//!   record read-back, ...), must return an error, and the disk it leaves
//!   (the flushed bytes, and the flushed bytes plus every unflushed write)
//!   is booted and checked.
//!
//! The invariants (DESIGN.md), after a boot as the boot stage does it
//! (repair + boot-select, `sim::flagdisk::boot`):
//!
//! 1. the flags read as before, invalidated or activated: nothing else;
//! 2. no slot is bootable unless its partitions hold exactly the payloads
//!    of the signed header in its slot record;
//! 3. the old (booted) slot is bootable in every crash state, and boot
//!    selection picks it until the activation commit landed;
//! 4. the same install, run again in-process on the crash disk, succeeds
//!    and the result boots the new slot with the new image (one re-run per
//!    class of crash state and a sample of the others in CI; all with
//!    `SLOTCTL_RELIABILITY=full`; every live cut).

use std::collections::HashSet;
use std::io;
use std::time::Instant;

mod inproc_env;
use inproc_env::{Env, Version};

use boot_flags::{BlockDevice, Disk, GptCopy, SlotFlags, SlotId};
use slotctl_tests::sim::flagdisk::boot;
use slotctl_tests::sim::{
    full_mode, seed_from_env, slot_places, CrashOptions, CrashStates, CrashStats, Invariants, Rng,
    SimDevice, SliceDevice, SlotPlace, Trace,
};

/// Byte ranges of a slot's partitions.
fn slice(bytes: &[u8]) -> SliceDevice<'_> {
    SliceDevice {
        bytes,
        sector_size: None,
    }
}

fn read_flags(disk: &[u8]) -> Result<SlotFlags, String> {
    let d = Disk::open(slice(disk), None).map_err(|e| e.to_string())?;
    Ok(d.slot_flags())
}

/// Which version a slot holds, byte for byte: its record must be the signed
/// header of v1 or v2 and its partitions must start with that version's
/// payloads. `Err` says what is wrong.
fn slot_holds<'a>(
    disk: &[u8],
    place: &SlotPlace,
    versions: [&'a Version; 2],
) -> Result<&'a str, String> {
    let (boff, blen) = place.boot;
    let blob = slotctl::record::read(&mut slice(disk), boff as u64, blen as u64)
        .map_err(|e| format!("slot record unreadable: {e}"))?
        .ok_or("no slot record")?;
    let v = versions
        .into_iter()
        .find(|v| v.image.starts_with(&blob))
        .ok_or("the slot record is not the header of any signed image")?;
    let (roff, _) = place.root;
    if disk[boff..boff + v.boot.len()] != v.boot[..] {
        return Err(format!("BOOT does not hold {}'s payload", v.name));
    }
    if disk[roff..roff + v.root.len()] != v.root[..] {
        return Err(format!("ROOT does not hold {}'s payload", v.name));
    }
    Ok(v.name)
}

/// What every crash state is checked against.
struct Expect<'a> {
    env: &'a Env,
    sector: u32,
    pa: SlotPlace,
    pb: SlotPlace,
    s0: SlotFlags,
    s1: SlotFlags,
    s2: SlotFlags,
}

impl Expect<'_> {
    /// Invariants 1-3; returns the re-run class of the state.
    fn check(&self, disk: &[u8], ctx: &dyn Fn() -> String, inv: &Invariants) -> String {
        let versions = [&self.env.v1, &self.env.v2];
        let flags = inv.ok(read_flags(disk), |e| {
            format!("{}: the table is unreadable: {e}", ctx())
        });
        let (s0, s1, s2) = (self.s0, self.s1, self.s2);
        inv.that(flags == s0 || flags == s1 || flags == s2, || {
            format!(
                "{}: flags {flags:?} are not before {s0:?}, invalidated {s1:?} or activated {s2:?}",
                ctx()
            )
        });
        for (id, place) in [(SlotId::A, &self.pa), (SlotId::B, &self.pb)] {
            if flags.get(id).bootable() {
                inv.ok(slot_holds(disk, place, versions), |why| {
                    format!("{}: slot {id} is bootable but {why}", ctx())
                });
            }
        }
        inv.that(flags.b.bootable(), || {
            format!("{}: the booted slot B is not bootable", ctx())
        });
        let booted = inv.ok(boot(disk, self.sector, false), |e| {
            format!("{}: boot failed: {e}", ctx())
        });
        let want = if flags == self.s2 {
            SlotId::A
        } else {
            SlotId::B
        };
        inv.that(booted.choice.slot == want, || {
            format!(
                "{}: boot-select chose {}, not {want}",
                ctx(),
                booted.choice.slot
            )
        });
        let rec = slot_holds(disk, &self.pa, versions).unwrap_or("none");
        let health = {
            let d = Disk::open(slice(disk), None).unwrap();
            [GptCopy::Primary, GptCopy::Backup].map(|c| d.gpt().health(c).is_ok())
        };
        format!("{flags:?}/{rec}/{health:?}")
    }

    /// Invariant 4: the same install, in-process, on the crash disk.
    fn rerun(&self, disk: &[u8], ctx: &str, inv: &Invariants) {
        let mut dev = SimDevice::new(disk.to_vec(), self.sector, false);
        let r = inv.ok(
            self.env
                .install(&mut dev, &self.env.v2, SlotId::A, Some(SlotId::B)),
            |e| format!("{ctx}: re-running the install failed: {e}"),
        );
        inv.that(r.activated, || format!("{ctx}: {r:?}"));
        let after = dev.bytes();
        let f = read_flags(after);
        inv.that(f == Ok(self.s2), || format!("{ctx}: not activated: {f:?}"));
        let holds = slot_holds(after, &self.pa, [&self.env.v1, &self.env.v2]);
        inv.that(holds == Ok("v2"), || {
            format!("{ctx}: after the re-run A holds {holds:?}")
        });
        let b = boot(after, self.sector, false).map(|b| b.choice.slot);
        inv.that(b == Ok(SlotId::A), || {
            format!("{ctx}: the re-installed slot does not boot: {b:?}")
        });
    }
}

/// A device whose power is cut at its n-th operation (read, write, flush or
/// cache drop) once armed: that operation and every later one fail.
struct CutDevice<'a> {
    inner: &'a mut SimDevice,
    /// Counting starts when armed (after the disk is opened: the install
    /// proper starts there).
    armed: bool,
    cut_at: Option<usize>,
    ops: usize,
    /// Per operation: the offset of a read, `None` for anything else.
    reads: Vec<Option<u64>>,
}

impl CutDevice<'_> {
    fn op(&mut self, read: Option<u64>) -> io::Result<()> {
        if !self.armed {
            return Ok(());
        }
        let n = self.ops;
        self.ops += 1;
        if self.cut_at.is_some_and(|c| n >= c) {
            return Err(io::Error::other("power cut"));
        }
        self.reads.push(read);
        Ok(())
    }
}

impl BlockDevice for CutDevice<'_> {
    fn len(&mut self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.op(Some(off))?;
        self.inner.read_exact_at(off, buf)
    }
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        self.op(None)?;
        self.inner.write_all_at(off, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.op(None)?;
        self.inner.flush()
    }
    fn write_zeroes(&mut self, off: u64, len: u64) -> io::Result<bool> {
        self.op(None)?;
        self.inner.write_zeroes(off, len)
    }
    fn drop_cache(&mut self, off: u64, len: u64) -> io::Result<()> {
        self.op(None)?;
        self.inner.drop_cache(off, len)
    }
    fn logical_sector_size(&mut self) -> io::Result<Option<u32>> {
        self.inner.logical_sector_size()
    }
}

struct Outcome {
    trace: CrashStats,
    writes: usize,
    flushes: usize,
    reinstalls: usize,
    live_cuts: usize,
    live_read_cuts: usize,
    live_readback_cuts: usize,
    live_named: usize,
    /// Distinct disks the live cuts left (each checked and re-installed).
    live_disks: usize,
}

/// Cut the power everywhere in an install of v2 into A, B booted, from the
/// disk `field`. Returns the outcome and a crash disk the install left
/// half-way through A's root payload (to start the next scenario from).
fn run_sector(
    env: &Env,
    field: &SimDevice,
    sector: u32,
    rng: &mut Rng,
    states: &mut CrashStates,
    scenario: u64,
) -> (Outcome, Option<Vec<u8>>) {
    let base = field.durable().to_vec();
    let [pa, pb] = slot_places(slice(&base));

    // The install of v2 into A, recorded.
    let mut dev = field.clone();
    let (r, trace) = Trace::record(&mut dev, |d| {
        env.install(d, &env.v2, SlotId::A, Some(SlotId::B))
    });
    let r = r.unwrap();
    assert!(r.activated && r.readback && r.version == "2.0.0", "{r:?}");
    if !env.v2.ranges {
        // v2's zero MiB went to the device's own zeroing, so the cuts
        // below also land around and inside a `write_zeroes`.
        assert!(dev.zero_ranges() >= 1, "no write_zeroes in the install");
    }
    let fin = trace.final_disk();
    assert_eq!(fin, dev.bytes(), "the trace replays to the final disk");
    // Nothing outside slot A's partitions and the GPT areas is written.
    let gpt_areas = Disk::open(slice(&base), None)
        .unwrap()
        .gpt()
        .written_ranges();
    for e in &trace.events {
        if let slotctl_tests::sim::Event::Write(w) = e {
            let (s, end) = (w.off as usize, w.off as usize + w.data.len());
            let inside = |(o, l): (usize, usize)| s >= o && end <= o + l;
            assert!(
                inside(pa.boot)
                    || inside(pa.root)
                    || gpt_areas
                        .iter()
                        .any(|&(o, l)| inside((o as usize, l as usize))),
                "the install wrote {s}..{end}, outside slot A and the GPT"
            );
        }
    }
    let s0 = read_flags(&base).unwrap();
    let s2 = read_flags(&fin).unwrap();
    let s1 = SlotFlags {
        a: boot_flags::Flags::ZERO,
        b: s0.b,
    };
    let ex = Expect {
        env,
        sector,
        pa,
        pb,
        s0,
        s1,
        s2,
    };
    assert_eq!(slot_holds(&fin, &ex.pa, [&env.v1, &env.v2]), Ok("v2"));

    // Trace driver.
    let opts = CrashOptions {
        max_tears: if full_mode() { usize::MAX } else { 4096 },
        ..CrashOptions::default()
    };
    let sample = if full_mode() { usize::MAX } else { 48 };
    let mut classes = HashSet::new();
    let (mut reinstalls, mut sampled, mut n) = (0usize, 0usize, 0usize);
    let mut mid: Option<Vec<u8>> = None;
    let stats = trace.for_each_crash(&opts, rng, scenario, states, |cut, variant, disk, inv| {
        n += 1;
        let ctx = || {
            format!(
                "in-process install v2 into A ({sector}-byte sectors), cut {cut}/{}, {variant:?}",
                trace.events.len()
            )
        };
        let class = ex.check(disk, &ctx, inv);
        if mid.is_none() && read_flags(disk) == Ok(s1) {
            let (ro, _) = ex.pa.root;
            let r = &disk[ro..ro + env.v2.root.len()];
            let l = env.v2.root.len();
            if slot_holds(disk, &ex.pa, [&env.v1, &env.v2]).is_err()
                && r[..4096] == env.v2.root[..4096]
                && r[l - 4096..] != env.v2.root[l - 4096..]
            {
                mid = Some(disk.to_vec());
            }
        }
        let new_class = classes.insert(class.clone());
        let pick = !new_class && sampled < sample && (full_mode() || n % 97 == 0);
        if new_class || pick {
            sampled += usize::from(pick);
            ex.rerun(disk, &format!("{} [{class}]", ctx()), inv);
            reinstalls += 1;
        }
    });

    // Live driver: cut at every device operation, reads included.
    let (mut live_cuts, mut live_read_cuts, mut live_readback_cuts) = (0usize, 0usize, 0usize);
    let mut live_named = 0usize;
    let mut live_disks = 0usize;
    // The live cuts' disks are checked in a scenario of their own, so that
    // each is re-installed even when the trace reached it too (counted once).
    let live_scenario = scenario | 1;
    let reads = {
        let mut sim = field.clone();
        let mut cd = CutDevice {
            inner: &mut sim,
            armed: false,
            cut_at: None,
            ops: 0,
            reads: Vec::new(),
        };
        let mut disk = Disk::open(&mut cd, None).unwrap();
        disk.device().armed = true;
        env.install_disk(&mut disk, &env.v2, SlotId::A, Some(SlotId::B))
            .unwrap();
        drop(disk);
        let reads = std::mem::take(&mut cd.reads);
        assert_eq!(sim.bytes(), &fin[..], "the live install is the traced one");
        reads
    };
    let total = reads.len();
    // The read-back of the payloads: reads of A's payload bytes (the slot
    // record, at the end of BOOT, is past them).
    let in_readback = |op: usize| {
        reads[op].is_some_and(|off| {
            let off = off as usize;
            let within = |(o, l): (usize, usize)| off >= o && off < o + l;
            within((ex.pa.boot.0, env.v2.boot.len())) || within((ex.pa.root.0, env.v2.root.len()))
        })
    };
    for (cut, read) in reads.iter().enumerate() {
        let mut sim = field.clone();
        let mut cd = CutDevice {
            inner: &mut sim,
            armed: false,
            cut_at: Some(cut),
            ops: 0,
            reads: Vec::new(),
        };
        let mut disk = Disk::open(&mut cd, None).unwrap();
        disk.device().armed = true;
        let err = env
            .install_disk(&mut disk, &env.v2, SlotId::A, Some(SlotId::B))
            .expect_err("an install whose power was cut returns an error");
        // (boot-flags reports a read error while re-reading the table in a
        // GPT commit as "no GPT on this disk": the I/O error is not named.)
        live_named += usize::from(err.contains("power cut"));
        live_cuts += 1;
        live_read_cuts += usize::from(read.is_some());
        live_readback_cuts += usize::from(in_readback(cut));
        for (what, disk) in [
            ("flushed", sim.durable()),
            ("flushed + unflushed", sim.bytes()),
        ] {
            let ctx = || {
                format!(
                    "live in-process install ({sector}-byte sectors), power cut at op {cut}/{total} ({}), disk {what}",
                    if in_readback(cut) {
                        "a read of the payload read-back"
                    } else if read.is_some() {
                        "a read"
                    } else {
                        "a write/flush/cache drop"
                    }
                )
            };
            let checked = states.visit(live_scenario, disk, |inv| {
                ex.check(disk, &ctx, inv);
                ex.rerun(disk, &ctx(), inv);
            });
            live_disks += usize::from(checked);
            reinstalls += usize::from(checked);
        }
    }
    let o = Outcome {
        trace: stats,
        writes: trace.writes(),
        flushes: trace.flushes(),
        reinstalls,
        live_cuts,
        live_read_cuts,
        live_readback_cuts,
        live_named,
        live_disks,
    };
    (o, mid)
}

#[test]
fn reliability_power_cut_install_inproc() {
    let seed = seed_from_env();
    eprintln!("power_cut_install_inproc: seed {seed} (SLOTCTL_SEED={seed} reproduces)");
    let mut rng = Rng::new(seed);
    let env = Env::new();
    let mut states = CrashStates::new("power_cut_install_inproc");
    for sector in [512u32, 4096] {
        // One scenario per run (its starting disk), the live driver apart.
        let scenario = |run: u64| (u64::from(sector) << 8) | (run << 1);
        let field = env.field_device(sector);
        let (start, before) = (Instant::now(), states.distinct());
        let (o, mid) = run_sector(&env, &field, sector, &mut rng, &mut states, scenario(0));
        let new = states.distinct() - before;
        report(sector, "from a field device", &o, new, start);
        // Power cuts while re-running an install that was itself cut
        // half-way through the payload (with 4096-byte sectors only: with
        // 512 most of its crash states are ones already checked, and the
        // time goes to generating them).
        let mid = mid.expect("a crash state half-way through the root payload");
        if sector != 4096 && !full_mode() {
            continue;
        }
        let (start, before) = (Instant::now(), states.distinct());
        let mid = SimDevice::new(mid, sector, false);
        let (o, _) = run_sector(&env, &mid, sector, &mut rng, &mut states, scenario(1));
        let new = states.distinct() - before;
        report(sector, "re-run after a cut mid-payload", &o, new, start);
    }
    eprintln!("{}", states.summary());
    assert!(
        states.distinct() >= 8_000,
        "too few distinct crash states: {}",
        states.distinct()
    );
}

/// The same drivers on the delta way (docs/delta.md): v1 and v2 packed
/// `chunked`, installed from a source with ranges, so the install reads the
/// booted slot (B, v1) through the simulated device, writes zeros and the
/// reused blocks, fetches the changed ones and runs its final pass; the
/// power is cut at each of those writes, flushes and reads too.
#[test]
fn reliability_power_cut_delta_install_inproc() {
    let seed = seed_from_env();
    eprintln!("power_cut_delta_install_inproc: seed {seed} (SLOTCTL_SEED={seed} reproduces)");
    let mut rng = Rng::new(seed);
    let env = Env::chunked();
    let mut states = CrashStates::new("power_cut_delta_install_inproc");
    // 4096-byte sectors in CI (the delta way's many small writes make
    // many crash states); both with SLOTCTL_RELIABILITY=full.
    let sectors: &[u32] = if full_mode() { &[512, 4096] } else { &[4096] };
    for &sector in sectors {
        let field = env.field_device(sector);
        // It is the delta way: the booted slot's blocks are reused, only
        // the changed ones fetched, and the booted slot is read.
        {
            let mut sim = field.clone();
            let mut cd = CutDevice {
                inner: &mut sim,
                armed: false,
                cut_at: None,
                ops: 0,
                reads: Vec::new(),
            };
            let mut disk = Disk::open(&mut cd, None).unwrap();
            disk.device().armed = true;
            let r = env
                .install_disk(&mut disk, &env.v2, SlotId::A, Some(SlotId::B))
                .unwrap();
            drop(disk);
            assert_eq!(r.method, slotctl::install::counters::Method::Delta, "{r:?}");
            let c = r.counters;
            assert!(
                c.reused_booted > 3 << 20 && c.reused_zero >= 60 << 10,
                "{c:?}"
            );
            // v2's changed ROOT blocks (one in 128); its BOOT is v1's.
            let changed = (0..env.v2.root.len() / 4096)
                .filter(|i| i % 128 == 5)
                .count();
            assert_eq!(c.fetched_blocks as usize, changed, "{c:?}");
            let [_, pb] = slot_places(slice(field.durable()));
            let (ro, rl) = pb.root;
            let booted_reads = cd
                .reads
                .iter()
                .flatten()
                .filter(|&&o| (o as usize) >= ro && (o as usize) < ro + rl)
                .count();
            assert!(booted_reads > 0, "the booted slot's reads reach the device");
        }
        let (start, before) = (Instant::now(), states.distinct());
        let scenario = (u64::from(sector) << 8) | (7 << 1);
        let (o, _) = run_sector(&env, &field, sector, &mut rng, &mut states, scenario);
        let new = states.distinct() - before;
        report(sector, "delta way, from a field device", &o, new, start);
        assert!(
            o.live_read_cuts > 0 && o.live_cuts > o.live_read_cuts,
            "{}",
            o.live_cuts
        );
    }
    eprintln!("{}", states.summary());
    assert!(
        states.distinct() >= 150,
        "too few distinct crash states: {}",
        states.distinct()
    );
}

fn report(sector: u32, what: &str, o: &Outcome, new: usize, start: Instant) {
    eprintln!(
        "power_cut_install_inproc: {sector}-byte sectors, {what}: {} writes, {} flushes; trace: {} variants at {} cut points, {} distinct disks, {} checked here; live: {} cuts ({} at reads, {} of them in the payload read-back; {} errors name the power cut), {} distinct disks; {new} disks not reached by an earlier run of the suite; install re-run on {}; {:.1?}",
        o.writes,
        o.flushes,
        o.trace.generated,
        o.trace.cut_points,
        o.trace.distinct,
        o.trace.checked,
        o.live_cuts,
        o.live_read_cuts,
        o.live_readback_cuts,
        o.live_named,
        o.live_disks,
        o.reinstalls,
        start.elapsed()
    );
    assert!(
        o.live_readback_cuts >= 3,
        "too few power cuts inside the payload read-back: {}",
        o.live_readback_cuts
    );
    assert!(o.reinstalls >= 8, "too few re-runs: {}", o.reinstalls);
}

/// `install_on` refuses, before writing anything, to write the booted slot
/// or an image whose header does not verify (run in the normal pass).
#[test]
fn install_on_refuses_before_writing() {
    let env = Env::new();
    let field = env.field_device(512);

    let mut dev = field.clone();
    dev.start_recording();
    let err = env
        .install(&mut dev, &env.v2, SlotId::B, Some(SlotId::B))
        .expect_err("installing into the booted slot");
    assert!(err.contains("is the booted slot"), "{err}");
    assert!(dev.take_events().is_empty(), "a refusal wrote or flushed");
    assert_eq!(dev.bytes(), field.bytes());

    let mut image = env.v2.image.to_vec();
    image[100] ^= 0x01;
    let tampered = Version {
        name: "tampered",
        image: image.into(),
        boot: env.v2.boot.clone(),
        root: env.v2.root.clone(),
        ranges: false,
    };
    let mut dev = field.clone();
    dev.start_recording();
    let err = env
        .install(&mut dev, &tampered, SlotId::A, Some(SlotId::B))
        .expect_err("installing a tampered image");
    assert!(err.starts_with("tampered.img: "), "{err}");
    assert!(dev.take_events().is_empty(), "a refusal wrote or flushed");
    assert_eq!(dev.bytes(), field.bytes());
}
