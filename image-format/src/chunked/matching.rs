//! Finding a new payload's blocks among local bytes (a device's booted slot,
//! or an old image on the CI machine), and what is then left to download.
//! The device's install, its `check` estimate and `image diff-size` share
//! this code, so the three agree.

use std::io::{self, Read};
use std::ops::Range;

use super::table::ChunkTable;

/// Frames at most this many stored bytes apart are fetched in one range by
/// the device (the bytes between are downloaded and dropped). A separate
/// range costs its request and response headers (ureq's request is about
/// 117 bytes, a typical server's 206 head about 250), so merging pays only
/// for gaps below about that size; 512 bytes, measured on the benchmark
/// pair (docs/image-format.md, "Statistics and estimates").
pub const MERGE_GAP: u64 = 512;

/// The nonzero blocks still wanted, sorted by short hash: a local block's
/// short hash finds its candidates in O(log n).
#[derive(Clone, Debug, Default)]
pub struct Needed {
    entries: Vec<([u8; 4], u32)>,
}

impl Needed {
    /// Every nonzero block of the table.
    pub fn new(table: &ChunkTable) -> Needed {
        Needed::from_blocks(table, 0..table.block_count())
    }

    /// The nonzero blocks among `blocks`.
    pub fn from_blocks(table: &ChunkTable, blocks: impl IntoIterator<Item = u32>) -> Needed {
        let mut entries: Vec<([u8; 4], u32)> = blocks
            .into_iter()
            .filter_map(|i| table.short(i).map(|s| (s, i)))
            .collect();
        entries.sort_unstable();
        entries.dedup();
        Needed { entries }
    }

    /// The blocks whose short hash is `short`, in block order.
    pub fn lookup(&self, short: [u8; 4]) -> impl Iterator<Item = u32> + '_ {
        let start = self.entries.partition_point(|e| e.0 < short);
        self.entries[start..]
            .iter()
            .take_while(move |e| e.0 == short)
            .map(|e| e.1)
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no block is wanted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Offers local blocks to a table: the first local block whose short hash
/// and length match a wanted block makes it a candidate (found); a
/// candidate is trusted only once its group's SHA-256 matched.
pub struct BlockFinder<'t> {
    table: &'t ChunkTable,
    needed: Needed,
    found: Vec<bool>,
    remaining: usize,
}

impl<'t> BlockFinder<'t> {
    /// Every nonzero block of `table` wanted.
    pub fn new(table: &'t ChunkTable) -> BlockFinder<'t> {
        BlockFinder::with_needed(table, Needed::new(table))
    }

    /// Only the blocks of `needed` wanted.
    pub fn with_needed(table: &'t ChunkTable, needed: Needed) -> BlockFinder<'t> {
        BlockFinder {
            table,
            remaining: needed.len(),
            needed,
            found: vec![false; table.block_count() as usize],
        }
    }

    /// Offer one local block's bytes: the wanted blocks not yet found with
    /// the same short hash and length are marked found and returned (in
    /// block order, appended to `out` after clearing it).
    pub fn offer(&mut self, data: &[u8], out: &mut Vec<u32>) {
        self.offer_inner(None, data, out)
    }

    /// Like [`BlockFinder::offer`] for the local block at index `here` (in
    /// blocks of the table's size from the start of the local bytes), as the
    /// device's scan of its booted slot does: besides the blocks not yet
    /// found, block `here` itself, when it matches, replaces a candidate
    /// found earlier elsewhere (an unchanged block at its own place is the
    /// common case; an earlier match from elsewhere is now and then a 4-byte
    /// short-hash collision). A replaced block is returned again.
    pub fn offer_at(&mut self, here: u32, data: &[u8], out: &mut Vec<u32>) {
        self.offer_inner(Some(here), data, out)
    }

    fn offer_inner(&mut self, here: Option<u32>, data: &[u8], out: &mut Vec<u32>) {
        out.clear();
        if data.is_empty() {
            return;
        }
        let home_wanted = here.is_some_and(|h| self.found.get(h as usize) == Some(&true));
        if self.remaining == 0 && !home_wanted {
            return;
        }
        let short = super::short_hash(data);
        for i in self.needed.lookup(short) {
            if self.table.block_len(i) as usize != data.len() {
                continue;
            }
            if !self.found[i as usize] {
                self.found[i as usize] = true;
                self.remaining -= 1;
                out.push(i);
            } else if Some(i) == here {
                out.push(i);
            }
        }
    }

    /// Read `local` to its end (or until every block is found) in blocks of
    /// the table's block size, offering each with [`BlockFinder::offer_at`];
    /// `on_found(block, local_offset, bytes)` is called for each block found
    /// (again when a block at its own place replaces a candidate). Returns
    /// the bytes read.
    pub fn scan<R: Read>(
        &mut self,
        mut local: R,
        mut on_found: impl FnMut(u32, u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<u64> {
        let b = self.table.block_size() as usize;
        let per_read = (4 << 20) / b.max(1);
        let mut buf = vec![0u8; b * per_read.max(1)];
        let mut hits = Vec::new();
        let mut pos = 0u64;
        while self.remaining > 0 {
            let n = read_full(&mut local, &mut buf)?;
            if n == 0 {
                break;
            }
            for chunk in buf[..n].chunks(b) {
                let here = u32::try_from(pos / b as u64).unwrap_or(u32::MAX);
                self.offer_at(here, chunk, &mut hits);
                for &i in &hits {
                    on_found(i, pos, chunk)?;
                }
                pos += chunk.len() as u64;
            }
            if n < buf.len() {
                break;
            }
        }
        Ok(pos)
    }

    /// True when block `i` was found (a candidate).
    pub fn is_found(&self, i: u32) -> bool {
        self.found.get(i as usize).copied().unwrap_or(false)
    }

    /// Wanted blocks not found yet.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The table.
    pub fn table(&self) -> &'t ChunkTable {
        self.table
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// What a device downloads for one chunked payload, given which blocks it
/// holds as candidates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchPlan {
    /// Nonzero blocks whose frames are downloaded, in block order.
    pub blocks: Vec<u32>,
    /// Stored bytes of those frames.
    pub frame_bytes: u64,
    /// Groups fetched whole because a candidate in them was wrong.
    pub refetched_groups: u32,
    /// Nonzero blocks taken from local bytes.
    pub reused_blocks: u32,
    /// Raw bytes of those blocks.
    pub reused_bytes: u64,
    /// Raw bytes of zero blocks (written as zeros, never downloaded).
    pub zero_bytes: u64,
}

impl FetchPlan {
    /// The stored byte ranges (from the payload's start) of the frames to
    /// download, neighbours closer than `max_gap` bytes merged.
    pub fn ranges(&self, table: &ChunkTable, max_gap: u64) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for &i in &self.blocks {
            let r = table.stored_range(i);
            match out.last_mut() {
                Some(last) if r.start <= last.end.saturating_add(max_gap) => {
                    last.end = last.end.max(r.end)
                }
                _ => out.push(r),
            }
        }
        out
    }
}

/// The download plan of a table: per group with nonzero blocks, the frames
/// of the blocks not `found`; when a found block of the group is `wrong`
/// (its candidate does not hold the block's bytes: the group's SHA-256 would
/// not match), the group is fetched whole, each of its frames once. A
/// device that cannot tell passes `|_| false` for `wrong`.
pub fn fetch_plan(
    table: &ChunkTable,
    found: impl Fn(u32) -> bool,
    wrong: impl Fn(u32) -> bool,
) -> FetchPlan {
    let mut plan = FetchPlan::default();
    for k in 0..table.group_count() {
        let blocks = table.group_range(k);
        let refetch = blocks
            .clone()
            .any(|i| !table.is_zero(i) && found(i) && wrong(i));
        if refetch {
            plan.refetched_groups += 1;
        }
        for i in blocks {
            if table.is_zero(i) {
                plan.zero_bytes += table.block_len(i) as u64;
            } else if found(i) && !refetch {
                plan.reused_blocks += 1;
                plan.reused_bytes += table.block_len(i) as u64;
            } else {
                plan.blocks.push(i);
                plan.frame_bytes += table.stored_len(i) as u64;
            }
        }
    }
    plan
}
