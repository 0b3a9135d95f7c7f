//! Helpers for the chunked-image tests: a disk-like payload, `image info`
//! as JSON, and the frame lengths of a chunked payload read with the zstd
//! CLI (independently of slotctl's reader).

use std::collections::HashSet;
use std::path::Path;

use crate::image::{noise, ok, sh};
use crate::run_slotctl;

/// The block size the tests pack with.
pub const B: usize = 4096;

/// A disk-like payload of `blocks` 4 KiB blocks plus `tail` bytes: runs of
/// zeros, repeated text (compressible, some identical blocks), noise.
pub fn disk_like(blocks: usize, tail: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..blocks {
        match (i as u64 * 7 + seed) % 6 {
            0 | 1 => out.extend(std::iter::repeat_n(0u8, B)),
            2 | 3 => out.extend(
                format!("file {:03} line of text ", i % 9)
                    .bytes()
                    .cycle()
                    .take(B),
            ),
            _ => out.extend(noise(B, seed * 7919 + i as u64)),
        }
    }
    out.extend(noise(tail, seed + 1));
    out
}

pub fn json(out: String) -> serde_json::Value {
    serde_json::from_str(&out).unwrap()
}

pub fn info(img: &Path) -> serde_json::Value {
    json(ok(
        run_slotctl(["--json", "image", "info", img.to_str().unwrap()]),
        "info",
    ))
}

pub fn verify(public: &Path, img: &Path) -> std::process::Output {
    run_slotctl([
        "image",
        "verify",
        "--pubkey",
        public.to_str().unwrap(),
        img.to_str().unwrap(),
    ])
}

/// The stored frame lengths of a chunked payload, read with the zstd CLI
/// from the image bytes (independently of slotctl's reader).
pub fn frame_lengths(dir: &Path, img: &Path, payload: &serde_json::Value) -> Vec<u32> {
    let c = &payload["chunked"];
    let at = payload["offset"].as_u64().unwrap();
    let ts = c["table_stored_len"].as_u64().unwrap();
    ok(
        sh(
            &format!(
                "tail -c +{} {} | head -c {ts} | zstd -dc > table.raw",
                at + 1,
                img.display()
            ),
            dir,
        ),
        "zstd -d table",
    );
    let raw = std::fs::read(dir.join("table.raw")).unwrap();
    let dict = c["dict_len"].as_u64().unwrap() as usize;
    let n = c["blocks"].as_u64().unwrap() as usize;
    (0..n)
        .map(|i| u32::from_le_bytes(raw[dict + 4 * i..dict + 4 * i + 4].try_into().unwrap()))
        .collect()
}

/// What a device running OLD would download for NEW, computed here
/// independently of slotctl: blocks compared by content, frame lengths read
/// from the table with the zstd CLI.
pub fn expected_download(dir: &Path, new_img: &Path, old_raw: &[u8], new_raw: &[u8]) -> u64 {
    let v = info(new_img);
    let p = &v["payloads"][0];
    let lengths = frame_lengths(dir, new_img, p);
    let have: HashSet<&[u8]> = old_raw.chunks(B).collect();
    let frames: u64 = new_raw
        .chunks(B)
        .zip(&lengths)
        .filter(|(b, &l)| l != 0 && !have.contains(b))
        .map(|(_, &l)| l as u64)
        .sum();
    p["offset"].as_u64().unwrap() + p["chunked"]["table_stored_len"].as_u64().unwrap() + frames
}
