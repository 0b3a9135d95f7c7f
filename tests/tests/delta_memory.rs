//! Bounded memory of the delta way (docs/delta.md): `slotctl install URL`
//! of a chunked 1 GiB payload over a booted slot holding the previous
//! version, from a real HTTP server on 127.0.0.1, stays under 32 MiB peak
//! RSS, measured by `/usr/bin/time -v` around the real binary. Every block
//! is nonzero and distinct, so the table, the needed-block index and the
//! booted slot's scan are at their largest for the block count: 2^18 blocks
//! of 4 KiB, the most the automatic block size allows (an 8 GiB payload
//! gets 32 KiB blocks and the same 2^18 blocks). The install must take the
//! delta way, download little, and leave the slot verified.

use std::io::Write;

use serde_json::Value;
use slotctl_tests::http::{Mode, TestServer};
use slotctl_tests::installfix::{ok, Fix};
use slotctl_tests::run_slotctl_peak_rss;

const LIMIT_KIB: u64 = 32 * 1024;
const SIZE: usize = 1 << 30;
const B: usize = 4096;

/// Block `i`: its index and `seed`, repeated (compressible, distinct).
fn write_payload(path: &std::path::Path, changed_every: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; B];
    for i in 0..SIZE / B {
        let seed = if changed_every > 0 && i % changed_every == 7 {
            0xC0FFEE
        } else {
            1
        };
        for (k, w) in block.chunks_mut(16).enumerate() {
            w[..8].copy_from_slice(&(i as u64).to_le_bytes());
            w[8..].copy_from_slice(&((seed as u64) ^ (k as u64)).to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

#[test]
fn delta_install_of_1_gib_under_32_mib_rss() {
    let f = Fix::new();
    f.replace_disk(SIZE as u64 + (16 << 20));
    let v1_root = f.path("v1.root");
    let v2_root = f.path("v2.root");
    write_payload(&v1_root, 0);
    // One block in 1000 changed.
    write_payload(&v2_root, 1000);
    let boot = f.boot_payload();
    let v1 = f.pack(
        "v1.img",
        "1.0.0",
        1,
        &[("BOOT", &boot), ("ROOT", &v1_root)],
        "chunked",
    );
    f.factory("A", &v1);
    let v2 = f.pack(
        "v2.img",
        "2.0.0",
        1,
        &[("BOOT", &boot), ("ROOT", &v2_root)],
        "chunked",
    );
    let image = std::fs::metadata(&v2).unwrap().len();
    let srv = TestServer::start(&v2, Mode::Normal);
    let url = srv.url("v2.img");
    let (stdout, rss) = run_slotctl_peak_rss(f.args(&["install", "--booted", "A", "--json", &url]));
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("delta install of a 1 GiB payload: {rss} KiB peak RSS; {r}");
    assert_eq!(r["method"], "delta", "{r}");
    // The changed blocks are fetched; a short-hash collision (4 bytes,
    // 2^18 blocks: a few expected) may cost a group fetched twice.
    let changed = (SIZE / B).div_ceil(1000) as u64;
    let fetched = r["fetched_blocks"].as_u64().unwrap();
    let refetched = r["refetched_groups"].as_u64().unwrap();
    assert!(refetched <= 2, "{r}");
    assert!(
        fetched >= changed && fetched <= changed + 16 * refetched,
        "{r}"
    );
    let down = r["downloaded"].as_u64().unwrap();
    assert!(down * 4 < image, "downloaded {down} of {image}");
    ok(f.run(&["verify-slot", "B"]));
    assert!(
        rss < LIMIT_KIB,
        "the delta install peaked at {rss} KiB (limit {LIMIT_KIB} KiB)"
    );
}
