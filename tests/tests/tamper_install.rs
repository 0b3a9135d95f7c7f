//! The tampering matrix at install time: the real `slotctl install` fed
//! images with bit flips sampled across the header, the signature block and
//! the payloads, truncations at every region boundary and at sampled
//! points, a payload that differs only in its last bytes (after the point a
//! naive pipeline would have activated), payloads swapped under a valid
//! header, and an image signed by an untrusted key.
//!
//! Every case must be refused (exit code 3, one `slotctl: error:` line)
//! and leave the slots as they were, apart from the target being
//! unbootable: the booted slot's flags, partitions and record unchanged
//! byte for byte, the target not activated (not bootable, or untouched),
//! everything outside the target slot and the GPT unchanged, and the next
//! boot the booted slot. A case refused before writing leaves the whole
//! disk byte for byte as it was.
//!
//! Sample sizes: `SLOTCTL_RELIABILITY=full` multiplies them by 10; the seed
//! is printed (`SLOTCTL_SEED` reproduces).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use boot_flags::{Disk, FileDevice, SlotId};
use slotctl_tests::installfix::{error_line, ok, Fix};
use slotctl_tests::sim::flagdisk::boot;
use slotctl_tests::sim::{full_mode, seed_from_env, Rng, SliceDevice};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next_u64() as u8).collect()
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

/// Byte ranges of an image: header, signature block, each payload.
struct Regions {
    header: (usize, usize),
    sigs: (usize, usize),
    payloads: Vec<(usize, usize)>,
}

fn regions(fix: &Fix, image: &[u8]) -> Regions {
    let ring = image_format::Keyring::load_dir(&fix.keyring).unwrap();
    let r = image_format::ImageReader::new(image).unwrap();
    let h = r.header_bytes().len();
    let s = r.signature_block_bytes().len();
    let v = r.verify(&ring, 1).unwrap();
    let payloads = v
        .header()
        .payloads()
        .iter()
        .map(|p| (p.offset as usize, (p.offset + p.stored_size) as usize))
        .collect();
    Regions {
        header: (0, h),
        sigs: (h, h + s),
        payloads,
    }
}

struct World {
    fix: Fix,
    base: Vec<u8>,
    v2: Vec<u8>,
    v2_zstd: Vec<u8>,
    untrusted: Vec<u8>,
    v1: Vec<u8>,
    /// Slot A (the target) and B (booted): (offset, size) of BOOT and ROOT.
    parts: [[(usize, usize); 2]; 2],
    gpt_areas: Vec<(usize, usize)>,
}

fn world() -> World {
    let fix = Fix::new();
    let w = |name: &str, len: usize, seed: u64| {
        let p = fix.path(name);
        std::fs::write(&p, noise(len, seed)).unwrap();
        p
    };
    let (b1, r1) = (w("b1", 100 << 10, 1), w("r1", 1 << 20, 2));
    let (b2, r2) = (w("b2", 100 << 10, 3), w("r2", 1 << 20, 4));
    let v1 = fix.pack(
        "v1.img",
        "1.0.0",
        1,
        &[("BOOT", &b1), ("ROOT", &r1)],
        "none",
    );
    let v2 = fix.pack(
        "v2.img",
        "2.0.0",
        1,
        &[("BOOT", &b2), ("ROOT", &r2)],
        "none",
    );
    let v2z = fix.pack(
        "v2z.img",
        "2.0.0",
        1,
        &[("BOOT", &b2), ("ROOT", &r2)],
        "zstd",
    );
    // An image signed by a key the device does not trust.
    ok(slotctl_tests::run_slotctl([
        "keygen".as_ref(),
        "--out".as_ref(),
        fix.path("private/other").as_os_str(),
    ]));
    let other = fix.path("private/other.key");
    let untrusted = fix.pack_with(
        "untrusted.img",
        "2.0.0",
        1,
        slotctl_tests::installfix::COMPATIBLE,
        &[("BOOT", &b2), ("ROOT", &r2)],
        "none",
        &other,
    );
    // The field: A and B hold v1 and are good; B is booted (P=2), A (P=1)
    // is the install target.
    fix.factory("A", &v1);
    ok(install_cmd(&fix, &fix.disk, &v1, "A").output().unwrap());
    ok(fix.run(&["boot-select"]));
    ok(fix.run(&["--booted", "B", "mark-good"]));
    let d = Disk::open(FileDevice::open(&fix.disk, false).unwrap(), None).unwrap();
    let part = |id: SlotId, role: &str| {
        let p = d.layout().slot(id).partition(role).unwrap();
        (p.offset as usize, p.size as usize)
    };
    let parts = [
        [part(SlotId::A, "BOOT"), part(SlotId::A, "ROOT")],
        [part(SlotId::B, "BOOT"), part(SlotId::B, "ROOT")],
    ];
    let gpt_areas = d
        .gpt()
        .written_ranges()
        .into_iter()
        .map(|(o, l)| (o as usize, l as usize))
        .collect();
    drop(d);
    let flags = Disk::open(FileDevice::open(&fix.disk, false).unwrap(), None)
        .unwrap()
        .slot_flags();
    assert!(flags.a.bootable() && flags.b.good() && flags.next_boot() == Some(SlotId::B));
    World {
        base: fix.disk_bytes(),
        v2: std::fs::read(&v2).unwrap(),
        v2_zstd: std::fs::read(&v2z).unwrap(),
        untrusted: std::fs::read(&untrusted).unwrap(),
        v1: std::fs::read(&v1).unwrap(),
        fix,
        parts,
        gpt_areas,
    }
}

/// Run the install of `image` on a copy of the field disk and check the
/// refusal and the disk. Returns whether anything was written.
fn check_refused(w: &World, name: &str, image: &[u8]) -> bool {
    let img = w.fix.path("case.img");
    let disk = w.fix.path("case-disk.img");
    std::fs::write(&img, image).unwrap();
    std::fs::write(&disk, &w.base).unwrap();
    let out = install_cmd(&w.fix, &disk, &img, "B").output().unwrap();
    assert!(
        !out.status.success(),
        "{name}: a tampered image was installed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = error_line(&out);
    // README's exit codes: 3 is a refusal by verification.
    assert_eq!(
        out.status.code(),
        Some(3),
        "{name}: refused with the wrong exit code ({line})"
    );
    let after = std::fs::read(&disk).unwrap();
    if after == w.base {
        return false;
    }
    let flags = |bytes: &[u8]| {
        Disk::open(
            SliceDevice {
                bytes,
                sector_size: None,
            },
            None,
        )
        .unwrap_or_else(|e| panic!("{name}: the table is unreadable after a refusal: {e}"))
        .slot_flags()
    };
    let (f0, f1) = (flags(&w.base), flags(&after));
    assert_eq!(
        f1.b, f0.b,
        "{name}: the booted slot's flags changed ({line})"
    );
    assert!(
        !f1.a.bootable(),
        "{name}: the target is bootable after a refusal: {:?} ({line})",
        f1.a
    );
    // Nothing outside the target slot and the GPT changed; B is intact.
    let allowed: Vec<(usize, usize)> = w.parts[0]
        .iter()
        .copied()
        .chain(w.gpt_areas.iter().copied())
        .collect();
    let mut i = 0;
    while i < after.len() {
        if let Some(&(o, l)) = allowed.iter().find(|&&(o, l)| i >= o && i < o + l) {
            i = o + l;
            continue;
        }
        let end = allowed
            .iter()
            .map(|&(o, _)| o)
            .filter(|&o| o > i)
            .min()
            .unwrap_or(after.len());
        assert!(
            after[i..end] == w.base[i..end],
            "{name}: bytes {i}..{end} outside the target slot changed ({line})"
        );
        i = end;
    }
    let b = boot(&after, 512, false).unwrap_or_else(|e| panic!("{name}: boot failed: {e}"));
    assert_eq!(
        b.choice.slot,
        SlotId::B,
        "{name}: the next boot is not the booted slot"
    );
    true
}

fn flip(image: &[u8], at: usize, bit: u8) -> Vec<u8> {
    let mut v = image.to_vec();
    v[at] ^= 1 << bit;
    v
}

#[test]
fn reliability_tampered_images_are_refused_at_install_time() {
    let seed = seed_from_env();
    eprintln!("tamper_install: seed {seed} (SLOTCTL_SEED={seed} reproduces)");
    let mut rng = Rng::new(seed);
    let scale = if full_mode() { 10 } else { 1 };
    let start = Instant::now();
    let w = world();
    let mut counts: Vec<(&str, usize, usize)> = Vec::new(); // (category, cases, wrote)
    let mut run = |cat: &'static str, name: String, image: &[u8]| {
        let wrote = check_refused(&w, &name, image);
        match counts.iter_mut().find(|c| c.0 == cat) {
            Some(c) => {
                c.1 += 1;
                c.2 += usize::from(wrote);
            }
            None => counts.push((cat, 1, usize::from(wrote))),
        }
        wrote
    };

    for (label, image) in [("none", &w.v2), ("zstd", &w.v2_zstd)] {
        let r = regions(&w.fix, image);
        let sample = |rng: &mut Rng, (s, e): (usize, usize), n: usize| -> Vec<usize> {
            let mut v = vec![s, e - 1];
            v.extend((0..n).map(|_| s + rng.below((e - s) as u64) as usize));
            v
        };
        for at in sample(&mut rng, r.header, 40 * scale) {
            let bit = rng.below(8) as u8;
            let wrote = run(
                "header bit flip",
                format!("{label}: header byte {at} bit {bit}"),
                &flip(image, at, bit),
            );
            assert!(
                !wrote,
                "{label}: a header flip at {at} was refused only after writing"
            );
        }
        for at in sample(&mut rng, r.sigs, 30 * scale) {
            let bit = rng.below(8) as u8;
            let wrote = run(
                "signature bit flip",
                format!("{label}: signature byte {at} bit {bit}"),
                &flip(image, at, bit),
            );
            assert!(
                !wrote,
                "{label}: a signature flip at {at} was refused only after writing"
            );
        }
        for &p in &r.payloads {
            for at in sample(&mut rng, p, 25 * scale) {
                let bit = rng.below(8) as u8;
                run(
                    "payload bit flip",
                    format!("{label}: payload byte {at} bit {bit}"),
                    &flip(image, at, bit),
                );
            }
        }
        // Truncations: at every region boundary (and one byte either
        // side), and sampled.
        let mut cuts = vec![
            0,
            1,
            r.header.1 - 1,
            r.header.1,
            r.sigs.1 - 1,
            r.sigs.1,
            image.len() - 1,
        ];
        for &(s, e) in &r.payloads {
            cuts.extend([s, s + 1, (s + e) / 2, e - 1]);
        }
        cuts.extend((0..6 * scale).map(|_| rng.below(image.len() as u64) as usize));
        cuts.sort_unstable();
        cuts.dedup();
        for at in cuts {
            run(
                "truncation",
                format!("{label}: truncated to {at} bytes"),
                &image[..at],
            );
        }
        // Differs only in the last bytes of the last payload: everything
        // but the end is written before the mismatch shows.
        let last = *r.payloads.last().unwrap();
        for k in [1usize, 2, 64] {
            let mut v = image.to_vec();
            for b in &mut v[last.1 - k..last.1] {
                *b ^= 0x5a;
            }
            let wrote = run(
                "payload tail",
                format!("{label}: last {k} payload bytes changed"),
                &v,
            );
            assert!(wrote, "{label}: a tail change must be found after writing (the stream is hashed as written)");
        }
    }
    // v2's header and signatures over v1's payloads (same sizes).
    {
        let r2 = regions(&w.fix, &w.v2);
        let r1 = regions(&w.fix, &w.v1);
        assert_eq!(r1.payloads, r2.payloads, "same layout");
        let mut v = w.v1.clone();
        v[..r2.sigs.1].copy_from_slice(&w.v2[..r2.sigs.1]);
        run("payload swap", "v2 header over v1 payloads".into(), &v);
    }
    let wrote = run(
        "untrusted key",
        "signed by an untrusted key".into(),
        &w.untrusted,
    );
    assert!(!wrote, "an untrusted image was refused only after writing");

    let total: usize = counts.iter().map(|c| c.1).sum();
    for (cat, n, wrote) in &counts {
        eprintln!("tamper_install: {cat}: {n} cases refused ({wrote} after writing to the target)");
    }
    eprintln!(
        "tamper_install: {total} cases, all refused, in {:.1?}",
        start.elapsed()
    );
    assert!(total >= 100);
}
