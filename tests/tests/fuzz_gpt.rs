//! Fuzzing the GPT reader beyond the header: valid tables (512- and
//! 4096-byte sectors) mutated in their header fields, entries and raw bytes,
//! with the CRCs recomputed so that they "match garbage", fed to
//! `Gpt::read`, slot discovery and boot-select on an in-memory disk.
//!
//! Must hold for every case: no panic; no allocation above a cap (a
//! counting global allocator measures the largest request while the reader
//! runs); when a table is accepted, every write attempt boot-select's
//! repair and commit make (recorded before the device sees it, so one the
//! device refuses counts too) lies wholly inside a GPT area of the table
//! as it was before the mutation (its two header sectors and two entry
//! arrays): never the protective MBR, never partition data or free space,
//! never past the disk. Runs for a bounded time (`SLOTCTL_FUZZ_SECS`,
//! default 15 s; `SLOTCTL_RELIABILITY=full`: 300 s) and prints
//! `fuzz_gpt: N cases`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use boot_flags::{Disk, Gpt, Guid, MemDevice, NewPartition, SlotLayout};
use slotctl_tests::sim::{full_mode, seed_from_env, CowDevice, Rng};

/// The write oracle: where the original table's GPT areas are, the check
/// of one write attempt, and the recording device.
#[path = "fuzz_gpt/oracle.rs"]
mod oracle;
use oracle::{check_write, GptAreas, Recording};

/// Counts the largest single allocation while armed.
struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// Where the last caught panic happened (set by the fuzz loop's hook).
static PANIC_AT: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
static IN_CASE: AtomicBool = AtomicBool::new(false);
/// Write attempts the loop's cases checked against the original GPT areas.
static WRITES_CHECKED: AtomicUsize = AtomicUsize::new(0);
/// The tests of this binary run one at a time: the allocation counter is global.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// The one unsafe block of the test suite: a global allocator has to
// implement an unsafe trait. It only forwards to the system allocator and
// records the size asked for.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Failures the loop has found that are pinned by a regression test (which
/// is `#[ignore]`d while the bug is open): reported, not failed on. Remove
/// an entry when its bug is fixed; the loop then fails if it comes back.
const KNOWN_BUGS: &[(&str, &str)] = &[];

/// The reader may allocate its capped entry array (1 MiB) and a sector.
const ALLOC_CAP: usize = (1 << 20) + 64 * 1024;

const DISK_LEN: usize = 2 << 20;

// Header field offsets (UEFI).
const H_SIZE: usize = 12;
const H_CRC: usize = 16;
const H_MY: usize = 24;
const H_ALT: usize = 32;
const H_FIRST: usize = 40;
const H_LAST: usize = 48;
const H_ENTRIES_LBA: usize = 72;
const H_NUM: usize = 80;
const H_ESIZE: usize = 84;
const H_ECRC: usize = 88;

fn valid_disk(ss: u32) -> MemDevice {
    let mut dev = MemDevice::new(DISK_LEN);
    let s = u64::from(ss);
    let unit = (256 << 10) / s;
    let names = ["BOOT-A", "ROOT-A", "BOOT-B", "ROOT-B", "DATA"];
    let parts: Vec<NewPartition> = names
        .iter()
        .enumerate()
        .map(|(i, n)| NewPartition {
            name: (*n).into(),
            type_guid: Guid::LINUX_DATA,
            unique_guid: Guid::from_random_bytes([i as u8 + 1; 16]),
            first_lba: unit * (i as u64 + 1),
            last_lba: unit * (i as u64 + 2) - 1,
            attributes: 1 | (2 << 48) | (1 << 56),
        })
        .collect();
    Gpt::create(&mut dev, ss, Guid::from_random_bytes([7; 16]), &parts).expect("create");
    dev
}

fn get32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn get64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recompute a header's entry-array CRC (over what it now describes, when
/// that lies on the disk and is not absurdly large) and its header CRC.
fn fix_crcs(disk: &mut [u8], hdr_off: usize, ss: usize) {
    let h = &disk[hdr_off..hdr_off + ss];
    let (lba, n, size) = (get64(h, H_ENTRIES_LBA), get32(h, H_NUM), get32(h, H_ESIZE));
    let bytes = u64::from(n) * u64::from(size);
    if let Some(start) = lba.checked_mul(ss as u64) {
        if bytes <= 4 << 20 && start.saturating_add(bytes) <= disk.len() as u64 {
            let crc = crc32fast::hash(&disk[start as usize..(start + bytes) as usize]);
            put32(&mut disk[hdr_off..], H_ECRC, crc);
        }
    }
    let hsize = (get32(&disk[hdr_off..], H_SIZE) as usize).min(ss);
    put32(&mut disk[hdr_off..], H_CRC, 0);
    let crc = crc32fast::hash(&disk[hdr_off..hdr_off + hsize.max(92)]);
    put32(&mut disk[hdr_off..], H_CRC, crc);
}

fn interesting_u64(rng: &mut Rng, sectors: u64) -> u64 {
    let picks = [
        0,
        1,
        2,
        33,
        34,
        sectors / 2,
        sectors - 34,
        sectors - 33,
        sectors - 2,
        sectors - 1,
        sectors,
        sectors + 1,
        u64::MAX / 512,
        u64::MAX / 4096 + 1,
        u64::MAX - 1,
        u64::MAX,
        1 << 32,
    ];
    if rng.one_in(4) {
        rng.next_u64() % (sectors * 2)
    } else {
        picks[rng.below(picks.len() as u64) as usize]
    }
}

fn interesting_u32(rng: &mut Rng) -> u32 {
    let picks = [
        0,
        1,
        8,
        91,
        92,
        127,
        128,
        129,
        136,
        256,
        512,
        4096,
        8192,
        65535,
        65536,
        1 << 24,
        u32::MAX / 128,
        u32::MAX - 7,
        u32::MAX,
    ];
    if rng.one_in(4) {
        rng.next_u64() as u32
    } else {
        picks[rng.below(picks.len() as u64) as usize]
    }
}

/// Mutate one copy (header at `hdr_off`). Returns a label for messages.
fn mutate(disk: &mut [u8], hdr_off: usize, ss: usize, rng: &mut Rng) -> &'static str {
    let sectors = (disk.len() / ss) as u64;
    // Where this copy's entry array is in the valid table (128 entries of
    // 128 bytes: after the primary header, before the backup header).
    let entries_off = if hdr_off == ss {
        2 * ss
    } else {
        hdr_off - 128 * 128
    };
    let esize = 128usize;
    let label = match rng.below(9) {
        0 => {
            let f = [H_MY, H_ALT, H_FIRST, H_LAST, H_ENTRIES_LBA][rng.below(5) as usize];
            put64(&mut disk[hdr_off..], f, interesting_u64(rng, sectors));
            "header LBA field"
        }
        1 => {
            put32(&mut disk[hdr_off..], H_NUM, interesting_u32(rng));
            "entry count"
        }
        2 => {
            put32(&mut disk[hdr_off..], H_ESIZE, interesting_u32(rng));
            "entry size"
        }
        3 => {
            put32(&mut disk[hdr_off..], H_SIZE, interesting_u32(rng));
            "header size"
        }
        4 => {
            // Overlapping or out-of-range partitions.
            let i = rng.below(5) as usize;
            let j = rng.below(5) as usize;
            let e = entries_off + i * esize;
            let other_first = get64(&disk[entries_off + j * esize..], 32);
            let v = match rng.below(4) {
                0 => other_first.wrapping_add(rng.below(8)),
                1 => interesting_u64(rng, sectors),
                2 => get64(&disk[e..], 40).wrapping_add(1 + rng.below(4)),
                _ => 0,
            };
            let field = if rng.one_in(2) { 32 } else { 40 };
            put64(&mut disk[e..], field, v);
            "partition LBAs"
        }
        5 => {
            // Names: no terminator, odd units, renamed to collide.
            let i = rng.below(5) as usize;
            let e = entries_off + i * esize;
            match rng.below(3) {
                0 => disk[e + 56..e + 128].fill(0x41),
                1 => {
                    let j = rng.below(5) as usize;
                    let src =
                        disk[entries_off + j * esize + 56..entries_off + j * esize + 128].to_vec();
                    disk[e + 56..e + 128].copy_from_slice(&src);
                }
                _ => {
                    let k = 56 + rng.below(72) as usize;
                    disk[e + k] = rng.next_u64() as u8;
                }
            }
            "partition names"
        }
        6 => {
            // Random bytes in the header.
            for _ in 0..1 + rng.below(8) {
                let k = rng.below(ss as u64) as usize;
                disk[hdr_off + k] = rng.next_u64() as u8;
            }
            "random header bytes"
        }
        7 => {
            // Random bytes in the entry array.
            for _ in 0..1 + rng.below(16) {
                let k = rng.below((128 * esize) as u64) as usize;
                if let Some(b) = disk.get_mut(entries_off + k) {
                    *b = rng.next_u64() as u8;
                }
            }
            "random entry bytes"
        }
        _ => {
            // A whole sector of garbage.
            for b in &mut disk[hdr_off..hdr_off + ss] {
                *b = rng.next_u64() as u8;
            }
            "garbage sector"
        }
    };
    // Usually the CRCs are recomputed so that they match the garbage.
    if !rng.one_in(8) {
        fix_crcs(disk, hdr_off, ss);
    }
    label
}

/// Run the reader and what a device does with an accepted table. Returns
/// Err with a description on a violated property.
fn exercise(disk: &[u8], original: &GptAreas, ss: u32, report: bool) -> Result<bool, String> {
    let sector_size = report.then_some(ss);
    LARGEST.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let read = Gpt::read(&mut CowDevice::new(disk, sector_size));
    ARMED.store(false, Ordering::Relaxed);
    let largest = LARGEST.load(Ordering::Relaxed);
    if largest > ALLOC_CAP {
        return Err(format!("Gpt::read allocated {largest} bytes at once"));
    }
    let Ok(gpt) = read else { return Ok(false) };
    // Everything a caller reads from an accepted table.
    // (`Gpt::byte_range` on arbitrary entries is pinned by
    // `regression_byte_range_overflows_on_huge_partition_lba`; slotctl only
    // calls it on partitions discovery checked.)
    let parts = gpt.partitions();
    if let Ok(layout) = SlotLayout::discover(&gpt, None) {
        for p in layout
            .shared
            .iter()
            .chain(parts.iter().filter(|p| p.index == 1))
        {
            let _ = gpt.byte_range(p);
        }
    }
    // What the boot stage does: repair and commit. Every write attempt is
    // recorded before the device sees it (so one the device refuses, e.g.
    // past the end, is caught even though boot-select's result is not
    // looked at) and must lie wholly inside a GPT area of the table as it
    // was before the mutation: never the protective MBR, never a
    // partition's or the free space's bytes, never past the disk.
    // The one exception: a slot partition's boot state (its last 8 KiB),
    // as the table before or after the mutation names it (oracle.rs; the
    // boot counter, docs/state-machine.md).
    let mut dev = Recording::new(CowDevice::new(disk, sector_size));
    if let Ok(mut d) = Disk::open(&mut dev, None) {
        let _ = d.boot_select(false);
    }
    let allowed = original.with_boot_states_of(disk, ss as usize);
    for &(off, len) in &dev.writes {
        WRITES_CHECKED.fetch_add(1, Ordering::Relaxed);
        check_write(&allowed, off, len)?;
    }
    Ok(true)
}

#[test]
fn reliability_fuzz_gpt_reader_with_corrupted_tables() {
    let _serial = serial();
    let seed = seed_from_env();
    let mut rng = Rng::new(seed);
    let secs: u64 = std::env::var("SLOTCTL_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full_mode() { 300 } else { 15 });
    eprintln!("fuzz_gpt: seed {seed} (SLOTCTL_SEED={seed} reproduces), {secs} s");
    let bases: Vec<(u32, bool, Vec<u8>, GptAreas)> = [(512u32, false), (4096, true), (4096, false)]
        .into_iter()
        .map(|(ss, rep)| {
            let d = valid_disk(ss).data;
            let areas = GptAreas::of(&d, ss as usize);
            (ss, rep, d, areas)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut failures: std::collections::BTreeMap<String, String> = Default::default();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let mut g = PANIC_AT.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() && !IN_CASE.load(Ordering::Relaxed) {
            eprintln!("panic outside a fuzz case at {at}: {msg}");
        }
        *g = Some(format!("{at}: {msg}"));
    }));
    let (mut cases, mut accepted) = (0u64, 0u64);
    let mut work = vec![0u8; DISK_LEN];
    while Instant::now() < deadline {
        for _ in 0..64 {
            let (ss, report, base, areas) = &bases[rng.below(bases.len() as u64) as usize];
            let ss_us = *ss as usize;
            work.copy_from_slice(base);
            let copies: &[usize] = match rng.below(3) {
                0 => &[ss_us],
                1 => &[DISK_LEN - ss_us],
                _ => &[ss_us, DISK_LEN - ss_us],
            };
            let mut labels = Vec::new();
            for &h in copies {
                for _ in 0..1 + rng.below(3) {
                    labels.push(mutate(&mut work, h, ss_us, &mut rng));
                }
            }
            IN_CASE.store(true, Ordering::Relaxed);
            let r =
                std::panic::catch_unwind(AssertUnwindSafe(|| exercise(&work, areas, *ss, *report)));
            IN_CASE.store(false, Ordering::Relaxed);
            ARMED.store(false, Ordering::Relaxed);
            let failure = match r {
                Ok(Ok(acc)) => {
                    accepted += u64::from(acc);
                    None
                }
                Ok(Err(why)) => Some(why),
                Err(_) => Some(format!(
                    "panicked at {}",
                    PANIC_AT
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                        .unwrap_or_default()
                )),
            };
            if let Some(why) = failure {
                // Keep going, to report every distinct failure with one example.
                failures
                    .entry(why)
                    .or_insert_with(|| format!("case {cases}, {ss}-byte sectors, {labels:?}"));
            }
            cases += 1;
        }
    }
    std::panic::set_hook(default_hook);
    let writes = WRITES_CHECKED.load(Ordering::Relaxed);
    eprintln!(
        "fuzz_gpt: {cases} cases ({accepted} tables accepted after mutation, \
         {writes} boot-select write attempts checked against the original GPT areas)"
    );
    for (why, example) in &failures {
        eprintln!("fuzz_gpt: FAILURE {why} (first seen: {example}; seed {seed})");
    }
    let unknown: Vec<&String> = failures
        .keys()
        .filter(|why| !KNOWN_BUGS.iter().any(|(sig, _)| why.contains(sig)))
        .collect();
    for (sig, test) in KNOWN_BUGS {
        if failures.keys().any(|why| why.contains(sig)) {
            eprintln!("fuzz_gpt: known bug still present: {sig} (pinned by {test})");
        }
    }
    assert!(
        unknown.is_empty(),
        "{} new distinct failures (listed above)",
        unknown.len()
    );
    assert!(cases >= 5_000, "too few fuzz cases in {secs} s: {cases}");
    assert!(writes > 0, "no accepted table made boot-select write");
    assert!(
        accepted > 0 && accepted < cases,
        "the mutations must both pass and fail the checks"
    );
}

/// Huge counts and sizes with matching CRCs are refused at once, without
/// allocating what they claim.
#[test]
fn huge_entry_arrays_are_refused_before_allocating() {
    let _serial = serial();
    for ss in [512u32, 4096] {
        let base = valid_disk(ss).data;
        let s = ss as usize;
        for (n, size) in [
            (u32::MAX, u32::MAX),
            (u32::MAX, 128),
            (1 << 20, 128),
            (128, 1 << 24),
            (8193, 128),
        ] {
            let mut d = base.clone();
            for h in [s, DISK_LEN - s] {
                put32(&mut d[h..], H_NUM, n);
                put32(&mut d[h..], H_ESIZE, size);
                fix_crcs(&mut d, h, s);
            }
            let start = Instant::now();
            LARGEST.store(0, Ordering::Relaxed);
            ARMED.store(true, Ordering::Relaxed);
            let r = Gpt::read(&mut CowDevice::new(&d, None));
            ARMED.store(false, Ordering::Relaxed);
            assert!(r.is_err(), "{n} entries of {size} bytes accepted");
            assert!(LARGEST.load(Ordering::Relaxed) <= ALLOC_CAP);
            assert!(start.elapsed() < Duration::from_secs(1));
        }
    }
}

/// A slot partition overlapping another partition: an install into one
/// would overwrite the other (possibly the booted slot). The table must not
/// be usable for slot operations.
#[test]
fn regression_overlapping_slot_partitions_accepted() {
    let _serial = serial();
    for ss in [512u32, 4096] {
        let mut d = valid_disk(ss).data;
        let s = ss as usize;
        let gpt = Gpt::read(&mut CowDevice::new(&d, None)).unwrap();
        let root_a = gpt
            .partitions()
            .into_iter()
            .find(|p| p.name == "ROOT-A")
            .unwrap();
        let root_b = gpt
            .partitions()
            .into_iter()
            .find(|p| p.name == "ROOT-B")
            .unwrap();
        // ROOT-B starts inside ROOT-A.
        for h in [s, DISK_LEN - s] {
            let e = get64(&d[h..], H_ENTRIES_LBA) as usize * s + (root_b.index as usize - 1) * 128;
            put64(&mut d[e..], 32, root_a.first_lba + 1);
        }
        for h in [s, DISK_LEN - s] {
            fix_crcs(&mut d, h, s);
        }
        let mut dev = CowDevice::new(&d, None);
        let r = Disk::open(&mut dev, None);
        assert!(
            r.is_err(),
            "{ss}: a table whose ROOT-B overlaps ROOT-A is accepted for slot operations"
        );
    }
}

/// `Gpt::byte_range` multiplies an entry's LBAs by the sector size
/// unchecked: a valid-CRC entry with a huge first LBA panics (debug) or
/// wraps (release) instead of failing.
#[test]
fn regression_byte_range_overflows_on_huge_partition_lba() {
    let _serial = serial();
    let ss = 512u32;
    let mut d = valid_disk(ss).data;
    let s = ss as usize;
    for h in [s, DISK_LEN - s] {
        let e = get64(&d[h..], H_ENTRIES_LBA) as usize * s + 4 * 128; // DATA
        put64(&mut d[e..], 32, u64::MAX / 256);
        put64(&mut d[e..], 40, u64::MAX / 256 + 10);
        fix_crcs(&mut d, h, s);
    }
    let gpt = Gpt::read(&mut CowDevice::new(&d, None)).expect("the table itself reads");
    let data = gpt
        .partitions()
        .into_iter()
        .find(|p| p.name == "DATA")
        .unwrap();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| gpt.byte_range(&data)));
    match r {
        Err(_) => panic!(
            "Gpt::byte_range panicked on an entry with first LBA {}",
            data.first_lba
        ),
        // Correct, or saturated where the true value does not fit: never
        // wrapped to a small (wrong) offset.
        Ok((off, len)) => {
            let sectors = data
                .last_lba
                .saturating_sub(data.first_lba)
                .saturating_add(1);
            assert_eq!(off, data.first_lba.saturating_mul(512), "offset wrapped");
            assert_eq!(len, sectors.saturating_mul(512), "length wrapped");
        }
    }
}

/// Found by the fuzz loop: a primary header (valid CRC) whose alternate
/// LBA is `u64::MAX` makes `Header::check_geometry` compute
/// `needed.max(last_usable_lba) + 1` for its error message and overflow:
/// `Gpt::read` (so `slotctl status`, `boot-select`) panics instead of
/// reporting a bad copy and using the backup.
#[test]
fn regression_gpt_read_overflows_on_alternate_lba_u64_max() {
    let _serial = serial();
    for ss in [512u32, 4096] {
        let mut d = valid_disk(ss).data;
        let s = ss as usize;
        put64(&mut d[s..], H_ALT, u64::MAX);
        fix_crcs(&mut d, s, s);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            Gpt::read(&mut CowDevice::new(&d, None)).map(|g| g.is_healthy())
        }));
        match r {
            Err(_) => {
                panic!("{ss}: Gpt::read panicked on a primary header with alternate LBA u64::MAX")
            }
            // The backup is intact: the table must read, the primary reported bad.
            Ok(res) => assert_eq!(
                res.ok(),
                Some(false),
                "{ss}: expected the backup in use and the primary bad"
            ),
        }
    }
}
