//! The delta plan of one chunked payload: which blocks are zeros, which the
//! booted slot holds, which the target already holds, and which byte
//! ranges of the image must be fetched. Computing it writes nothing of its
//! own: the booted slot's matching blocks go to a `sink` (the install
//! writes them to the target, `check` drops them), so `check --json`'s
//! `download_bytes` and the install run the same code.

use std::io;

use image_format::{fetch_plan, short_hash, BlockFinder, ChunkTable};

use super::BlockDevice;

/// Where block `i` of the new payload comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// A zero block: written as zeros, never downloaded.
    Zero,
    /// Not found locally: its frame is fetched.
    Need,
    /// A candidate from the booted slot (checked with its group).
    Booted,
    /// A candidate already on the target (leftover of an earlier attempt).
    Target,
}

/// Bytes `[offset, offset + len)` of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
}

/// Image bytes `[start, end)` to fetch with one Range request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    pub start: u64,
    pub end: u64,
}

/// Where the booted slot's matches go: `(device, block index, bytes)`.
pub type Sink<'a> = dyn FnMut(&mut dyn BlockDevice, u32, &[u8]) -> io::Result<()> + 'a;

/// Frames at most this many stored bytes apart are fetched in one range
/// (the bytes between them are downloaded and dropped): a request costs a
/// round trip and its headers, a small gap costs less. image-format's, so
/// that `image diff-size` merges the same way.
pub use image_format::MERGE_GAP;
/// Read size of the booted slot's scan and of the final pass.
pub const READ_SIZE: u64 = 4 << 20;

/// The plan of one chunked payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadPlan {
    pub from: Vec<From>,
    pub fetch: Vec<Fetch>,
    pub reused_booted: u64,
    pub reused_target: u64,
    pub reused_zero: u64,
    /// Blocks to fetch.
    pub need_blocks: u64,
}

impl PayloadPlan {
    /// Bytes the planned ranges download (gaps included).
    pub fn fetch_bytes(&self) -> u64 {
        self.fetch.iter().map(|f| f.end - f.start).sum()
    }
}

/// A read size that is a whole number of blocks.
pub fn read_size(block: u64) -> u64 {
    (READ_SIZE / block).max(1) * block
}

/// The initial state: zero blocks known, every other block needed.
pub fn initial(table: &ChunkTable) -> (Vec<From>, u64) {
    let mut zero_bytes = 0;
    let from = (0..table.block_count())
        .map(|i| {
            if table.is_zero(i) {
                zero_bytes += u64::from(table.block_len(i));
                From::Zero
            } else {
                From::Need
            }
        })
        .collect();
    (from, zero_bytes)
}

/// Step 3: read `booted` once, front to back, in large reads; every block
/// (in the new table's block size) whose short hash matches a needed block
/// of the same length is handed to `sink` with that block's index, and the
/// block becomes a [`From::Booted`] candidate: the first match, except that
/// a block at its own place (booted block `i` matching needed block `i`,
/// the common case of an unchanged block) replaces an earlier candidate
/// from elsewhere, which with 2^18 blocks is now and then a 4-byte
/// short-hash collision (measured: 9 groups of a 1 GiB payload fetched
/// twice without this). The matching is image-format's
/// [`BlockFinder::offer_at`], which `image diff-size` runs too. Stops early
/// when every needed block has a candidate. Returns the raw bytes found.
pub fn scan_booted(
    dev: &mut dyn BlockDevice,
    booted: Region,
    table: &ChunkTable,
    from: &mut [From],
    sink: &mut Sink<'_>,
    on_progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let mut finder = BlockFinder::new(table);
    let b = u64::from(table.block_size());
    let step = read_size(b);
    let mut buf = vec![0u8; step.min(booted.len) as usize];
    let mut hits = Vec::new();
    let mut pos = 0u64;
    let mut found = 0u64;
    while pos < booted.len && finder.remaining() > 0 {
        let n = step.min(booted.len - pos) as usize;
        dev.read_exact_at(booted.offset + pos, &mut buf[..n])?;
        for (k, block) in buf[..n].chunks(b as usize).enumerate() {
            let here = u32::try_from(pos / b + k as u64).unwrap_or(u32::MAX);
            finder.offer_at(here, block, &mut hits);
            for &j in &hits {
                let ju = j as usize;
                if from[ju] == From::Need {
                    found += block.len() as u64;
                }
                sink(dev, j, block)?;
                from[ju] = From::Booted;
            }
        }
        pos += n as u64;
        on_progress(pos);
    }
    Ok(found)
}

/// Step 4's first half: the target's own bytes at the blocks still needed
/// (what an earlier attempt left there): a short-hash match makes a
/// [`From::Target`] candidate. Reads each group holding a needed block
/// once. Returns the raw bytes found.
pub fn scan_target(
    dev: &mut dyn BlockDevice,
    dest: u64,
    table: &ChunkTable,
    from: &mut [From],
) -> io::Result<u64> {
    let b = u64::from(table.block_size());
    let mut buf = Vec::new();
    let mut found = 0;
    for k in 0..table.group_count() {
        let blocks = table.group_range(k);
        if !blocks.clone().any(|i| from[i as usize] == From::Need) {
            continue;
        }
        let start = u64::from(blocks.start) * b;
        let end = start
            + blocks
                .clone()
                .map(|i| u64::from(table.block_len(i)))
                .sum::<u64>();
        buf.resize((end - start) as usize, 0);
        dev.read_exact_at(dest + start, &mut buf)?;
        for i in blocks {
            if from[i as usize] != From::Need {
                continue;
            }
            let off = (u64::from(i) * b - start) as usize;
            let block = &buf[off..off + table.block_len(i) as usize];
            debug_assert_eq!(block.len(), table.block_len(i) as usize);
            if Some(short_hash(block)) == table.short(i) {
                from[i as usize] = From::Target;
                found += block.len() as u64;
            }
        }
    }
    Ok(found)
}

/// The ranges to fetch: the frames of the needed blocks, neighbours at
/// most [`MERGE_GAP`] apart merged (image-format's [`fetch_plan`], which
/// `image diff-size` uses too). `payload_offset` is the payload's offset
/// in the image.
pub fn ranges(table: &ChunkTable, from: &[From], payload_offset: u64) -> Vec<Fetch> {
    let found = |i: u32| matches!(from[i as usize], From::Booted | From::Target);
    fetch_plan(table, found, |_| false)
        .ranges(table, MERGE_GAP)
        .into_iter()
        .map(|r| Fetch {
            start: payload_offset + r.start,
            end: payload_offset + r.end,
        })
        .collect()
}

/// Steps 1-4 of the plan, reading only: `booted` (when there is a booted
/// slot with this role) is scanned with `sink` receiving its matches, then
/// the target's leftover at `dest`, then the ranges.
pub fn plan_payload(
    dev: &mut dyn BlockDevice,
    table: &ChunkTable,
    booted: Option<Region>,
    dest: u64,
    payload_offset: u64,
    sink: &mut Sink<'_>,
    on_scan: &mut dyn FnMut(u64),
) -> io::Result<PayloadPlan> {
    let (mut from, reused_zero) = initial(table);
    let reused_booted = match booted {
        Some(r) if r.len > 0 => scan_booted(dev, r, table, &mut from, sink, on_scan)?,
        _ => 0,
    };
    let reused_target = scan_target(dev, dest, table, &mut from)?;
    let fetch = ranges(table, &from, payload_offset);
    let need_blocks = from.iter().filter(|f| **f == From::Need).count() as u64;
    Ok(PayloadPlan {
        from,
        fetch,
        reused_booted,
        reused_target,
        reused_zero,
        need_blocks,
    })
}
