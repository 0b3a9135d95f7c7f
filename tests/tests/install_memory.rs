//! Bounded memory of `slotctl install`: installing a 512 MiB payload
//! (compression none and zstd, with the default read-back) stays under the
//! 16 MiB peak RSS that README.md states, measured by `/usr/bin/time -v`
//! around the real binary. The install must succeed, `verify-slot` must
//! accept the slot and its partition must hold the payload byte for byte, so
//! an install that did nothing cannot pass. The payload is half random, half
//! zeros (as in bench/install.sh), so the zstd image still carries 256 MiB of
//! incompressible data. bench/install.sh records 1 GiB figures in
//! bench/RESULTS.md. The image also carries a small BOOT payload before
//! ROOT (an image covers every role of its slot), which is the shape that
//! once peaked at 34-36 MiB (glibc's moving mmap threshold; see main.rs).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use slotctl_tests::installfix::{ok, Fix};
use slotctl_tests::run_slotctl_peak_rss;

/// The bound README.md states for an install (peak RSS).
const LIMIT_KIB: u64 = 16 * 1024;
const SIZE: u64 = 512 << 20;
const MIB: usize = 1 << 20;

/// Run slotctl on the fixture's disk and config under /usr/bin/time -v;
/// return its stdout and peak RSS in KiB.
fn run_measured(f: &Fix, args: &[&std::ffi::OsStr]) -> (String, u64) {
    let mut all = args.to_vec();
    all.extend(["--disk".as_ref(), f.disk.as_os_str()]);
    all.extend(["--config".as_ref(), f.config.as_os_str()]);
    run_slotctl_peak_rss(all)
}

/// `SIZE` bytes: the first half from /dev/urandom (incompressible: the
/// tests' xorshift noise lets zstd shave off about 12%), the second half
/// zeros (a hole: the bytes read are zeros all the same).
fn payload(path: &Path) {
    let mut f = File::create(path).unwrap();
    let random = File::open("/dev/urandom").unwrap();
    let n = std::io::copy(&mut random.take(SIZE / 2), &mut f).unwrap();
    assert_eq!(n, SIZE / 2);
    f.set_len(SIZE).unwrap();
}

/// Assert that the disk at `offset` holds exactly the bytes of `payload`.
fn assert_disk_holds(disk: &Path, offset: u64, payload: &Path) {
    let mut d = OpenOptions::new().read(true).open(disk).unwrap();
    d.seek(SeekFrom::Start(offset)).unwrap();
    let mut p = File::open(payload).unwrap();
    let (mut a, mut b) = (vec![0u8; 4 * MIB], vec![0u8; 4 * MIB]);
    let mut at = 0u64;
    while at < SIZE {
        p.read_exact(&mut a).unwrap();
        d.read_exact(&mut b).unwrap();
        assert!(
            a == b,
            "slot B's ROOT differs from the payload near byte {at}"
        );
        at += a.len() as u64;
    }
}

fn install_512_mib(compression: &str) {
    let f = Fix::new();
    // The fixture's disk has a 4 MiB ROOT: replace it by one that fits.
    f.replace_disk(SIZE + (16 << 20));
    let tiny = f.payload("tiny", 4096, 7);
    let v1 = f.pack(
        "v1.img",
        "1.0.0",
        1,
        &[("BOOT", &f.boot_payload()), ("ROOT", &tiny)],
        "zstd",
    );
    f.factory("A", &v1);

    let raw = f.path("root.raw");
    payload(&raw);
    let img = f.pack(
        "v2.img",
        "2.0.0",
        1,
        &[("BOOT", &f.boot_payload()), ("ROOT", &raw)],
        compression,
    );
    let img_len = std::fs::metadata(&img).unwrap().len();
    assert!(
        img_len >= SIZE / 2,
        "the random half must not compress away: image is {img_len} bytes"
    );

    let (stdout, rss) = run_measured(
        &f,
        &[
            "install".as_ref(),
            "--booted".as_ref(),
            "A".as_ref(),
            img.as_os_str(),
        ],
    );
    eprintln!(
        "install ({compression}, image {img_len} bytes): {rss} KiB peak RSS for a {SIZE}-byte payload"
    );
    // It did install: reported, activated, recorded, and the bytes are there.
    assert!(
        stdout.contains("installed 2.0.0 into slot B"),
        "install output: {stdout}"
    );
    assert_eq!(f.flags("B"), (2, 3, false));
    ok(f.run(&["verify-slot", "B"]));
    let (offset, size) = f.partition("B", "ROOT");
    assert!(size >= SIZE);
    assert_disk_holds(&f.disk, offset, &raw);

    assert!(
        rss < LIMIT_KIB,
        "install ({compression}) peaked at {rss} KiB (limit {LIMIT_KIB} KiB)"
    );
}

#[test]
fn install_512_mib_uncompressed_under_16_mib_rss() {
    install_512_mib("none");
}

#[test]
fn install_512_mib_zstd_under_16_mib_rss() {
    install_512_mib("zstd");
}
