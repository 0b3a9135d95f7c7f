//! Property-based fuzz of the header and signature parser, bounded in time.
//!
//! Its own `main` (harness = false), so the execution count reaches the log
//! without `--nocapture`. Each execution mutates a valid image (bit flips,
//! byte and length overwrites, insertions, deletions, truncation, splices,
//! or pure noise) and runs it through every entry point:
//! `ImageReader::new`, `verify` (plus the payload stream to its end),
//! `into_untrusted` (the field parser without a signature), and
//! `VerifiedHeader::from_record_bytes`. Half of the mutants of the header
//! are re-signed with the trusted key, so the field parser is also fuzzed
//! behind a valid signature.
//!
//! Properties: nothing panics; an image that verifies without being
//! re-signed has exactly the original header bytes and payloads. Two seeds
//! are chunked images (compression 2: the 0x8006 field, a table frame and
//! block frames), so the table and frame checks are fuzzed too.
//!
//! Environment: SLOTCTL_FUZZ_SECS (default 20), SLOTCTL_FUZZ_SEED (default:
//! from the clock, printed), SLOTCTL_FUZZ_MIN (floor on executions, default 5000).

use std::io::{Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use image_format::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

struct Seed {
    image: Vec<u8>,
    header_len: usize,
    payloads: Vec<Vec<u8>>,
}

/// (role, compression, raw bytes)
type Part = (&'static str, Compression, Vec<u8>);

fn seed_images(key: &SigningKey, other: &SigningKey) -> Vec<Seed> {
    let mut seeds = Vec::new();
    let shapes: Vec<(Vec<Part>, Vec<&SigningKey>)> = vec![
        (
            vec![("ROOT", Compression::None, b"root bytes".repeat(20))],
            vec![key],
        ),
        (
            vec![
                ("BOOT", Compression::Zstd, b"kernel ".repeat(200)),
                (
                    "ROOT",
                    Compression::None,
                    (0..=255u8).cycle().take(700).collect(),
                ),
                ("HASH", Compression::Zstd, Vec::new()),
            ],
            vec![other, key],
        ),
        (
            // Chunked: zero blocks, repeated text, noise, a short last block;
            // the table frame and the block frames follow the signature block.
            vec![
                ("ROOT", Compression::Chunked, chunked_sample()),
                ("BOOT", Compression::Zstd, b"kernel ".repeat(50)),
            ],
            vec![key],
        ),
        (
            vec![("ZERO", Compression::Chunked, vec![0u8; 2 * 4096 + 9])],
            vec![key],
        ),
        // A dm-verity tree behind the data (role VROOT: the critical field
        // 0x8008; raw bytes = data, padding, tree).
        (
            vec![
                ("VROOT", Compression::None, b"verity ".repeat(1300)),
                ("BOOT", Compression::Zstd, b"kernel ".repeat(50)),
            ],
            vec![key],
        ),
    ];
    for (parts, signers) in shapes {
        let salt = |role: &str| (role == "VROOT").then(|| b"fuzz salt".to_vec());
        let payloads: Vec<Vec<u8>> = parts
            .iter()
            .map(|(role, _, data)| match salt(role) {
                Some(s) => {
                    let mut raw = Vec::new();
                    VerityReader::new(&data[..], &s)
                        .unwrap()
                        .read_to_end(&mut raw)
                        .unwrap();
                    raw
                }
                None => data.clone(),
            })
            .collect();
        let pack_parts = parts
            .into_iter()
            .map(|(role, compression, data)| PackPart {
                role: role.into(),
                compression,
                source: Box::new(Cursor::new(data)),
                size_hint: None,
                verity: salt(role),
            })
            .collect();
        let mut spec = PackSpec::new("acme-gw", semver::Version::new(3, 1, 4), 9, 1);
        spec.signature_room = 2;
        spec.zstd.workers = 0;
        spec.chunk.block_size = 4096;
        spec.chunk.group_blocks = 2;
        let mut out = Cursor::new(Vec::new());
        pack(&mut out, &spec, pack_parts, &signers).unwrap();
        let image = out.into_inner();
        let header_len = ImageReader::new(&image[..]).unwrap().header_bytes().len();
        seeds.push(Seed {
            image,
            header_len,
            payloads,
        });
    }
    seeds
}

/// A small payload for chunked seeds: 5 blocks of 4 KiB and a short one.
fn chunked_sample() -> Vec<u8> {
    let mut v = vec![0u8; 4096];
    v.extend(b"etc/passwd root:x:0:0 ".iter().cycle().take(4096));
    v.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    v.extend(vec![0u8; 4096]);
    v.extend(b"etc/passwd root:x:0:0 ".iter().cycle().take(4096));
    v.extend(b"tail");
    v
}

/// Mutate in place, mostly in the header and signature block.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, header_len: usize) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = data.len().max(1);
        // Bias towards the header and signature block, where the parser is.
        let hot = (header_len + 200).min(len);
        let at = if rng.below(4) > 0 {
            rng.below(hot)
        } else {
            rng.below(len)
        };
        match rng.below(9) {
            0 | 1 => {
                if let Some(b) = data.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            2 => {
                if let Some(b) = data.get_mut(at) {
                    *b = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
                }
            }
            3 => {
                // An interesting little-endian u32 or u16 (lengths, counts, tags).
                let v: u32 = [
                    0,
                    1,
                    6,
                    15,
                    16,
                    72,
                    0x7fff_ffff,
                    0xffff_fff0,
                    u32::MAX,
                    0x8005,
                    0x0005,
                ][rng.below(11)];
                let width = if rng.below(2) == 0 { 4 } else { 2 };
                for (i, b) in v.to_le_bytes()[..width].iter().enumerate() {
                    if let Some(d) = data.get_mut(at + i) {
                        *d = *b;
                    }
                }
            }
            4 => {
                let n = 1 + rng.below(16);
                let ins = rng.bytes(n);
                let at = at.min(data.len());
                data.splice(at..at, ins);
            }
            5 => {
                let n = 1 + rng.below(16);
                let end = (at + n).min(data.len());
                if at < end {
                    data.drain(at..end);
                }
            }
            6 => data.truncate(at),
            7 => {
                // Duplicate a slice of the header somewhere else in it (records).
                let n = 1 + rng.below(40);
                let from = rng.below(hot);
                let end = (from + n).min(data.len());
                let chunk = data[from.min(end)..end].to_vec();
                let at = at.min(data.len());
                data.splice(at..at, chunk);
            }
            _ => {
                let n = rng.below(64);
                let tail = rng.bytes(n);
                data.extend_from_slice(&tail);
            }
        }
    }
}

/// Re-sign the (mutated) header region with `key`: fix the length field to
/// the region, and write a fresh one-signature block.
fn resign(data: &[u8], header_len: usize, key: &SigningKey) -> Vec<u8> {
    let (header, rest) = data.split_at(header_len.min(data.len()));
    let mut header = header.to_vec();
    if header.len() >= 12 {
        let len = header.len() as u32;
        header[8..12].copy_from_slice(&len.to_le_bytes());
    }
    // Skip the old signature block if it is still recognisable.
    let mut payload_start = 0;
    if rest.len() >= 16 && rest[..8] == SIGNATURE_MAGIC {
        payload_start = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
    }
    let payloads = rest.get(payload_start..).unwrap_or(&[]);
    let block_len = signature_block_len(header.len() as u64, 1);
    let mut block = Vec::new();
    block.extend_from_slice(&SIGNATURE_MAGIC);
    block.extend_from_slice(&block_len.to_le_bytes());
    block.extend_from_slice(&1u16.to_le_bytes());
    block.extend_from_slice(&0u16.to_le_bytes());
    block.extend_from_slice(&key.key_id().0);
    block.extend_from_slice(&key.sign(&header));
    block.resize(block_len as usize, 0);
    [header, block, payloads.to_vec()].concat()
}

/// Every entry point; returns (header bytes, payloads) when it verified.
fn exercise(data: &[u8], ring: &Keyring) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    // The field parser without a signature, and the payload stream behind it.
    if let Ok(r) = ImageReader::new(data) {
        let _ = r.signature_status(ring);
        if let Ok(mut u) = r.into_untrusted() {
            let _ = u.header().payloads().len();
            while let Ok(Some(mut p)) = u.next_payload() {
                if p.read_to_end(&mut Vec::new()).is_err() {
                    break;
                }
            }
            let _ = u.finish();
        }
    }
    let _ = VerifiedHeader::from_record_bytes(ring, 1, data);
    let mut v = ImageReader::new(data).ok()?.verify(ring, 1).ok()?;
    let header = v.header().header_bytes().to_vec();
    let mut payloads = Vec::new();
    while let Some(mut p) = v.next_payload().ok()? {
        let mut raw = Vec::new();
        p.read_to_end(&mut raw).ok()?;
        payloads.push(raw);
    }
    v.finish().ok()?;
    Some((header, payloads))
}

fn main() {
    let secs = env_u64("SLOTCTL_FUZZ_SECS", 20);
    let floor = env_u64("SLOTCTL_FUZZ_MIN", 5000);
    let seed = env_u64(
        "SLOTCTL_FUZZ_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    ) | 1;
    let key = SigningKey::from_pkcs8_pem(include_str!("fuzz_key.pem")).unwrap();
    let other = SigningKey::generate().unwrap();
    let mut ring = Keyring::new();
    ring.add(key.public_key().clone());
    let seeds = seed_images(&key, &other);
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut execs, mut accepted, mut resigned_ok) = (0u64, 0u64, 0u64);
    println!("fuzz: header/signature parser, seed {seed}, {secs} s");
    while Instant::now() < deadline {
        for _ in 0..64 {
            let s = &seeds[rng.below(seeds.len())];
            let mode = rng.below(10);
            let mut data = if mode == 0 {
                {
                    let n = rng.below(600);
                    rng.bytes(n)
                }
            } else {
                s.image.clone()
            };
            mutate(&mut rng, &mut data, s.header_len);
            let resigned = mode >= 6;
            if resigned {
                data = resign(&data, s.header_len, &key);
            }
            let result = catch_unwind(AssertUnwindSafe(|| exercise(&data, &ring)));
            execs += 1;
            match result {
                Err(_) => {
                    let path = std::env::temp_dir().join(format!("slotctl-fuzz-crash-{seed}.bin"));
                    std::fs::write(&path, &data).unwrap();
                    panic!(
                        "fuzz: panic on input saved to {} (seed {seed})",
                        path.display()
                    );
                }
                Ok(Some((header, payloads))) if !resigned => {
                    accepted += 1;
                    assert_eq!(
                        header,
                        &s.image[..s.header_len],
                        "accepted a changed header (seed {seed})"
                    );
                    assert_eq!(
                        payloads, s.payloads,
                        "accepted changed payloads (seed {seed})"
                    );
                }
                Ok(Some(_)) => resigned_ok += 1,
                Ok(None) => {}
            }
        }
    }
    println!(
        "fuzz: {execs} executions in {secs} s ({accepted} unsigned mutants accepted unchanged, {resigned_ok} re-signed mutants valid)"
    );
    assert!(
        execs >= floor,
        "fuzz: only {execs} executions, floor {floor}"
    );
}
