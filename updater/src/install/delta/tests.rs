//! The delta way in-process: a memory disk, a chunked image packed by
//! image-format, ranges served from memory ([`MemRanges`], which counts
//! what it serves).

use boot_flags::MemDevice;
use image_format::{
    Compression, ImageReader, Keyring, PackPart, PackSpec, SigningKey, VerifiedHeader,
};
use sha2::{Digest, Sha256};

use super::plan::Region;
use super::*;
use crate::install::pipeline::Check;
use crate::progress::{Mode, Progress};
use crate::source::MemRanges;

const B: usize = 4096;
/// Disk layout of the tests: the booted ROOT at 0, the target's at 4 MiB.
const BOOTED: u64 = 0;
const DEST: u64 = 4 << 20;
const DISK: usize = 8 << 20;
/// Blocks of v2 ([`versions`]) not in v1 nor zero: five changed, one
/// filled, and the short last block.
const FETCHED: u64 = 7;
/// Their raw bytes.
const FETCHED_BYTES: u64 = 6 * B as u64 + 1000;

/// Deterministic noise.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// v1: 256 blocks of noise with zero runs; v2: v1 with blocks changed,
/// moved, zeroed, and a short tail.
fn versions() -> (Vec<u8>, Vec<u8>) {
    let mut v1 = noise(256 * B, 1);
    for i in (40..60).chain(200..210) {
        v1[i * B..(i + 1) * B].fill(0);
    }
    let mut v2 = v1.clone();
    // Changed blocks, in three places (one group each, one spanning two).
    for i in [3usize, 100, 101, 102, 130] {
        v2[i * B..(i + 1) * B].copy_from_slice(&noise(B, 1000 + i as u64));
    }
    // A block moved: v2's block 150 is v1's block 7.
    v2.copy_within(7 * B..8 * B, 150 * B);
    // A zero run filled, another block zeroed.
    v2[45 * B..46 * B].copy_from_slice(&noise(B, 77));
    v2[80 * B..81 * B].fill(0);
    v2.truncate(255 * B + 1000);
    (v1, v2)
}

/// A memory disk whose write of byte `corrupt` flips a bit: once, or
/// every time with `always`.
struct Flaky {
    mem: MemDevice,
    corrupt: Option<u64>,
    always: bool,
}

impl boot_flags::BlockDevice for Flaky {
    fn len(&mut self) -> std::io::Result<u64> {
        self.mem.len()
    }
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.mem.read_exact_at(off, buf)
    }
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> std::io::Result<()> {
        self.mem.write_all_at(off, buf)?;
        if let Some(at) = self.corrupt {
            if (off..off + buf.len() as u64).contains(&at) {
                self.mem.data[at as usize] ^= 0x10;
                if !self.always {
                    self.corrupt = None;
                }
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Setup {
    image: Vec<u8>,
    header: VerifiedHeader,
    dev: Flaky,
    jobs: Vec<Job>,
    booted: Vec<Option<Region>>,
    v2: Vec<u8>,
}

fn setup(v1: &[u8], v2: &[u8]) -> Setup {
    let key = SigningKey::generate().unwrap();
    let mut spec = PackSpec::new("board", "2.0.0".parse().unwrap(), 1, 0);
    spec.chunk.block_size = B as u32;
    spec.chunk.group_blocks = 16;
    let parts = vec![PackPart {
        role: "ROOT".into(),
        compression: Compression::Chunked,
        source: Box::new(v2),
        size_hint: Some(v2.len() as u64),
        verity: None,
    }];
    let mut out = std::io::Cursor::new(Vec::new());
    image_format::pack(&mut out, &spec, parts, &[&key]).unwrap();
    let image = out.into_inner();
    let mut ring = Keyring::new();
    ring.add(key.public_key().clone());
    let header = ImageReader::new(&image[..])
        .unwrap()
        .verify(&ring, 1)
        .unwrap()
        .header()
        .clone();
    let p = &header.payloads()[0];
    let jobs = vec![Job {
        role: p.role.clone(),
        compression: p.compression,
        stored_size: p.stored_size,
        raw_size: p.raw_size,
        sha256: p.sha256,
        dest_offset: DEST,
        skip_before: 0,
        stored_sha256: None,
        chunked: Some(p.clone()),
        check: Check::Stream,
    }];
    let mut mem = MemDevice::new(DISK);
    mem.data[..v1.len()].copy_from_slice(v1);
    // The target holds something else (an older version's leftovers).
    mem.data[DEST as usize..DEST as usize + 300 * B].copy_from_slice(&noise(300 * B, 9));
    let dev = Flaky {
        mem,
        corrupt: None,
        always: false,
    };
    Setup {
        image,
        header,
        dev,
        booted: vec![Some(Region {
            offset: BOOTED,
            len: v1.len() as u64,
        })],
        jobs,
        v2: v2.to_vec(),
    }
}

impl Setup {
    fn install(&mut self, image: &[u8]) -> (Result<(), DeltaError>, Counters, u64) {
        let mut src = MemRanges::from_bytes(image.to_vec());
        let mut c = Counters::default();
        let progress = Progress::with_mode(Mode::Quiet);
        let job = DeltaJob {
            header: &self.header,
            jobs: &self.jobs,
            booted: &self.booted,
            progress: &progress,
        };
        let r = install(&mut self.dev, &mut src, &job, &mut c);
        (r, c, src.received())
    }

    fn estimate(&mut self) -> u64 {
        let mut src = MemRanges::from_bytes(self.image.clone());
        estimate(
            &mut self.dev,
            &mut src,
            &self.header,
            &self.jobs,
            &self.booted,
        )
        .unwrap()
    }

    fn target(&self) -> &[u8] {
        &self.dev.mem.data[DEST as usize..DEST as usize + self.v2.len()]
    }

    /// The image offset of block `i`'s frame.
    fn frame_offset(&self, i: u32) -> u64 {
        let p = &self.header.payloads()[0];
        let mut src = MemRanges::from_bytes(self.image.clone());
        let t = fetch_table(&mut src, p).unwrap();
        p.offset + t.stored_offset(i)
    }
}

#[test]
fn builds_the_new_payload_from_booted_zeros_and_ranges() {
    let (v1, v2) = versions();
    let mut s = setup(&v1, &v2);
    let planned = s.estimate();
    let (r, c, got) = s.install(&s.image.clone());
    r.unwrap();
    assert!(s.target() == &s.v2[..], "target differs from v2");
    // Five changed blocks, one filled zero block and the short tail are
    // fetched; the moved block is found in the booted slot.
    assert_eq!(c.fetched_blocks, FETCHED, "{c:?}");
    assert_eq!(c.refetched_groups, 0);
    let zeros = s.v2.chunks(B).filter(|b| b.iter().all(|&x| x == 0)).count();
    assert_eq!(c.reused_zero as usize, zeros * B);
    assert_eq!(
        c.reused_booted,
        (s.v2.len() - zeros * B) as u64 - FETCHED_BYTES,
        "{c:?}"
    );
    // What the plan said: both sources start with nothing received.
    assert_eq!(planned, got, "estimate vs download");
    assert!(got < s.image.len() as u64 / 5, "{got} of {}", s.image.len());
}

#[test]
fn a_changed_booted_block_is_not_reused_but_fetched() {
    let (mut v1, v2) = versions();
    // Block 20 of the booted slot changed after its install: its short
    // hash no longer matches, so v2's block 20 is fetched.
    v1[20 * B + 5] ^= 0x40;
    let mut s = setup(&v1, &v2);
    let planned = s.estimate();
    let (r, c, got) = s.install(&s.image.clone());
    r.unwrap();
    assert!(s.target() == &s.v2[..]);
    assert_eq!(c.fetched_blocks, FETCHED + 1, "{c:?}");
    assert_eq!(planned, got);
}

/// A candidate whose bytes are wrong once on the target (a short-hash
/// collision, or the booted block changed between its read and its
/// write): the write of disk byte `at` lands with one bit flipped, once.
fn corrupt_once(s: &mut Setup, at: u64) {
    s.dev.corrupt = Some(at);
}

#[test]
fn a_wrong_candidate_in_a_fetched_group_is_caught_before_writing() {
    let (v1, v2) = versions();
    let mut s = setup(&v1, &v2);
    // Group 6 (blocks 96..112) has fetched blocks 100-102; block 97 is a
    // candidate from the booted slot, written wrong.
    corrupt_once(&mut s, DEST + 97 * B as u64 + 11);
    let (r, c, _) = s.install(&s.image.clone());
    r.unwrap();
    assert!(s.target() == &s.v2[..]);
    assert_eq!(c.refetched_groups, 1, "{c:?}");
    // The group's 16 frames again, after its 3 fetched ones.
    assert_eq!(c.fetched_blocks, FETCHED + 16, "{c:?}");
    // The 3 fetched blocks were not written before the group was whole and
    // right: the group was written once, by its refetch.
    assert_eq!(
        c.written,
        c.reused_zero + c.reused_booted + FETCHED_BYTES - 3 * B as u64 + 16 * B as u64,
        "{c:?}"
    );
}

#[test]
fn a_wrong_candidate_in_a_reused_group_is_caught_by_the_final_pass() {
    let (v1, v2) = versions();
    let mut s = setup(&v1, &v2);
    // Group 1 (blocks 16..32) is all candidates: only the final pass
    // checks it.
    corrupt_once(&mut s, DEST + 30 * B as u64 + 9);
    let (r, c, _) = s.install(&s.image.clone());
    r.unwrap();
    assert!(s.target() == &s.v2[..]);
    assert_eq!(c.refetched_groups, 1, "{c:?}");
    assert_eq!(c.fetched_blocks, FETCHED + 16, "{c:?}");
}

#[test]
fn a_group_still_wrong_after_its_refetch_is_refused() {
    let (v1, v2) = versions();
    let mut s = setup(&v1, &v2);
    s.dev.always = true;
    corrupt_once(&mut s, DEST + 30 * B as u64 + 9);
    let (r, _, _) = s.install(&s.image.clone());
    let e = r.unwrap_err();
    assert!(e.is_refusal(), "{e}");
    assert!(
        e.to_string().contains(&format!(
            "raw offset {} does not match the signed table",
            16 * B
        )),
        "{e}"
    );
}

#[test]
fn a_tampered_frame_is_refused_and_not_written() {
    let (v1, v2) = versions();
    let mut s = setup(&v1, &v2);
    let before = s.dev.mem.data.clone();
    // Block 130 is only in v2: its frame is fetched. It is noise, stored
    // as a raw zstd block: a byte flipped in it still decodes, to wrong
    // bytes that only the group's hash tells.
    let at = s.frame_offset(130) as usize + 2000;
    let mut bad = s.image.clone();
    bad[at] ^= 0x01;
    let (r, c, _) = s.install(&bad);
    let e = r.unwrap_err();
    assert!(e.is_refusal(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("ROOT") && msg.contains("does not match the signed table"),
        "{msg}"
    );
    assert!(msg.contains(&format!("raw offset {}", 128 * B)), "{msg}");
    assert_eq!(c.refetched_groups, 0, "{c:?}");
    // Block 130's bytes on the target are what was there before.
    let r130 = DEST as usize + 130 * B..DEST as usize + 131 * B;
    assert!(
        s.dev.mem.data[r130.clone()] == before[r130],
        "the tampered block was written"
    );
    assert!(s.dev.mem.data[..DEST as usize] == before[..DEST as usize]);
}

#[test]
fn target_leftover_is_reused_and_nothing_fetched_twice() {
    let (v1, v2) = versions();
    let mut s = setup(&v1, &v2);
    let (r, first, _) = s.install(&s.image.clone());
    r.unwrap();
    // An install that starts over (the previous one cut after its writes):
    // everything the booted slot lacks is already on the target.
    let (r, c, got) = s.install(&s.image.clone());
    r.unwrap();
    assert!(s.target() == &s.v2[..]);
    assert_eq!(c.fetched_blocks, 0, "{c:?}");
    assert_eq!(first.fetched_blocks, FETCHED);
    assert_eq!(c.reused_target, FETCHED_BYTES, "{c:?}");
    let p = &s.header.payloads()[0];
    assert_eq!(got, p.chunked.unwrap().table_stored_len, "only the table");
}

#[test]
fn without_a_booted_slot_everything_nonzero_is_fetched() {
    let (v1, v2) = versions();
    let mut s = setup(&v1, &v2);
    s.booted = vec![None];
    let (r, c, _) = s.install(&s.image.clone());
    r.unwrap();
    assert!(s.target() == &s.v2[..]);
    assert_eq!(c.reused_booted, 0);
    let nonzero = s.v2.chunks(B).filter(|b| b.iter().any(|&x| x != 0)).count();
    assert_eq!(c.fetched_blocks as usize, nonzero);
    assert_eq!(
        Sha256::digest(s.target())[..],
        s.header.payloads()[0].sha256[..]
    );
}
