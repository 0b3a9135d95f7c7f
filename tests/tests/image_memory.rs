//! Bounded memory: packing and verifying a large payload (uncompressed, zstd,
//! chunked) stays under 32 MiB peak RSS, measured by `/usr/bin/time -v`
//! around the real binary. CI uses
//! 512 MiB (sparse input with random blocks, so it stays quick);
//! bench/verify-memory.sh records the full 4 GiB figures in bench/RESULTS.md.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use slotctl_tests::image::{keygen, noise, ok};
use slotctl_tests::run_slotctl_peak_rss;

const LIMIT_KIB: u64 = 32 * 1024;
const SIZE: u64 = 512 << 20;

/// Run slotctl under /usr/bin/time -v; return its peak RSS in KiB.
fn peak_rss_kib(args: &[&str]) -> u64 {
    run_slotctl_peak_rss(args).1
}

/// A sparse file of `SIZE` bytes with 1 MiB random blocks every 64 MiB.
fn sparse_payload(path: &Path) {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(SIZE).unwrap();
    for (i, off) in (0..SIZE).step_by(64 << 20).enumerate() {
        f.seek(SeekFrom::Start(off + 4096)).unwrap();
        f.write_all(&noise(1 << 20, i as u64 + 1)).unwrap();
    }
}

fn pack_and_verify(compression: &str) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (key, public) = keygen(dir, "mem");
    let raw = dir.join("root.raw");
    sparse_payload(&raw);
    let img = dir.join("big.img");
    let part = format!("ROOT={}", raw.display());
    let pack_rss = peak_rss_kib(&[
        "image",
        "pack",
        "--key",
        key.to_str().unwrap(),
        "--version",
        "1.0.0",
        "--compatible",
        "mem",
        "--rollback-index",
        "1",
        "--compression",
        compression,
        "--part",
        &part,
        "-o",
        img.to_str().unwrap(),
    ]);
    let verify_rss = peak_rss_kib(&[
        "image",
        "verify",
        "--pubkey",
        public.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    eprintln!(
        "{compression}: pack {pack_rss} KiB, verify {verify_rss} KiB peak RSS for {SIZE} bytes"
    );
    assert!(
        pack_rss < LIMIT_KIB,
        "pack ({compression}) peaked at {pack_rss} KiB"
    );
    assert!(
        verify_rss < LIMIT_KIB,
        "verify ({compression}) peaked at {verify_rss} KiB"
    );
    // It really was the whole payload.
    let info = ok(
        slotctl_tests::run_slotctl(["--json", "image", "info", img.to_str().unwrap()]),
        "info",
    );
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["payloads"][0]["raw_size"], SIZE);
}

#[test]
fn pack_and_verify_512_mib_uncompressed_under_32_mib_rss() {
    pack_and_verify("none");
}

#[test]
fn pack_and_verify_512_mib_zstd_under_32_mib_rss() {
    pack_and_verify("zstd");
}

/// Chunked: 131072 blocks of 4 KiB (the table: about 1 MiB), compressed on
/// the default workers; verify decodes group by group.
#[test]
fn pack_and_verify_512_mib_chunked_under_32_mib_rss() {
    pack_and_verify("chunked");
}
