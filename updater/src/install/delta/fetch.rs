//! Step 4 of a delta install: fetch the planned ranges, assemble each group
//! that has fetched blocks from its candidates (read back from the target)
//! and the decoded frames, check the group's SHA-256 against the signed
//! table, and only then write the fetched blocks. A group that does not
//! match is fetched whole afterwards ([`refetch_group`]); if that does not
//! match either, the install is refused and nothing of it is written.

use std::io::{self, Read};

use image_format::decode_block;
use sha2::{Digest, Sha256};

use super::plan::{Fetch, From, PayloadPlan};
use super::{BlockDevice, DeltaError, Target};
use crate::install::counters::Counters;
use crate::source::RangeSource;

/// The largest frame accepted for a block of `block` raw bytes: zstd's
/// worst case for incompressible input is far below this.
fn max_frame(block: u64) -> u64 {
    block + block / 8 + 4096
}

/// A group being assembled: its raw bytes (read from the target, then
/// overlaid with decoded frames) and which of its blocks were fetched.
struct Group {
    k: u32,
    start: u64,
    bytes: Vec<u8>,
    fetched: Vec<u32>,
    broken: bool,
}

/// The state of step 4 for one payload.
pub struct Assemble<'a> {
    pub t: &'a Target<'a>,
    pub counters: &'a mut Counters,
    /// Groups whose check failed: fetched whole after the planned ranges.
    pub bad: Vec<u32>,
    frame: Vec<u8>,
    block: Vec<u8>,
}

impl<'a> Assemble<'a> {
    pub fn new(t: &'a Target<'a>, counters: &'a mut Counters) -> Assemble<'a> {
        Assemble {
            t,
            counters,
            bad: Vec::new(),
            frame: Vec::new(),
            block: Vec::new(),
        }
    }

    /// Fetch every planned range in order and assemble the groups.
    pub fn run(
        &mut self,
        src: &mut dyn RangeSource,
        dev: &mut dyn BlockDevice,
        plan: &PayloadPlan,
        mut on_progress: impl FnMut(u64),
    ) -> Result<(), DeltaError> {
        let table = self.t.table;
        let mut need = plan
            .from
            .iter()
            .enumerate()
            .filter(|(_, f)| **f == From::Need)
            .map(|(i, _)| i as u32)
            .peekable();
        let mut cur: Option<Group> = None;
        let mut done = 0u64;
        for &Fetch { start, end } in &plan.fetch {
            let mut rd = src
                .range(start, end)
                .map_err(|e| DeltaError::Source(self.t.role.clone(), e))?;
            let mut pos = start;
            while let Some(&i) = need.peek() {
                let fstart = self.t.payload_offset + table.stored_offset(i);
                if fstart >= end {
                    break;
                }
                need.next();
                let k = i / table.group_blocks();
                if cur.as_ref().is_none_or(|g| g.k != k) {
                    if let Some(g) = cur.take() {
                        self.finish(dev, g)?;
                    }
                    cur = Some(self.start_group(dev, k)?);
                }
                let g = cur.as_mut().expect("a group is open");
                skip(&mut rd, fstart - pos).map_err(|e| self.src_err(e))?;
                let len = u64::from(table.stored_len(i));
                if len > max_frame(u64::from(table.block_size())) {
                    return Err(self
                        .t
                        .mismatch(u64::from(i) * u64::from(table.block_size())));
                }
                self.frame.resize(len as usize, 0);
                rd.read_exact(&mut self.frame)
                    .map_err(|e| self.src_err(e))?;
                pos = fstart + len;
                done += len;
                on_progress(done);
                self.counters.fetched_blocks += 1;
                if decode_block(table, i, &self.frame, &mut self.block).is_err() {
                    g.broken = true;
                    continue;
                }
                let off = (u64::from(i) * u64::from(table.block_size()) - g.start) as usize;
                g.bytes[off..off + self.block.len()].copy_from_slice(&self.block);
                g.fetched.push(i);
            }
            // Read the range to its end, so the connection can be reused.
            skip(&mut rd, end - pos).map_err(|e| self.src_err(e))?;
        }
        if let Some(g) = cur.take() {
            self.finish(dev, g)?;
        }
        Ok(())
    }

    fn src_err(&self, e: io::Error) -> DeltaError {
        DeltaError::Source(self.t.role.clone(), e)
    }

    /// A group's bytes as the target holds them now (zeros, candidates).
    fn start_group(&self, dev: &mut dyn BlockDevice, k: u32) -> Result<Group, DeltaError> {
        let (start, len) = self.t.group_span(k);
        let mut bytes = vec![0u8; len as usize];
        dev.read_exact_at(self.t.dest + start, &mut bytes)
            .map_err(|e| self.t.read_err(start, e))?;
        Ok(Group {
            k,
            start,
            bytes,
            fetched: Vec::new(),
            broken: false,
        })
    }

    /// Check the assembled group; write its fetched blocks when it matches.
    fn finish(&mut self, dev: &mut dyn BlockDevice, g: Group) -> Result<(), DeltaError> {
        let table = self.t.table;
        let ok = !g.broken
            && table
                .group_sha256(g.k)
                .is_some_and(|want| Sha256::digest(&g.bytes)[..] == want);
        if !ok {
            self.bad.push(g.k);
            return Ok(());
        }
        // Runs of consecutive fetched blocks, one write each.
        let b = u64::from(table.block_size());
        let mut i = 0;
        while i < g.fetched.len() {
            let mut j = i + 1;
            while j < g.fetched.len() && g.fetched[j] == g.fetched[j - 1] + 1 {
                j += 1;
            }
            let first = u64::from(g.fetched[i]) * b - g.start;
            let last = g.fetched[j - 1];
            let end = u64::from(last) * b + u64::from(table.block_len(last)) - g.start;
            let bytes = &g.bytes[first as usize..end as usize];
            self.t.write(dev, g.start + first, bytes)?;
            self.counters.written += bytes.len() as u64;
            i = j;
        }
        Ok(())
    }
}

/// Fetch group `k`'s frames whole, decode them (zero blocks are zeros),
/// check the group's SHA-256, and write the whole group. A mismatch is a
/// refusal: the image's bytes do not match its signed table.
pub fn refetch_group(
    t: &Target<'_>,
    src: &mut dyn RangeSource,
    dev: &mut dyn BlockDevice,
    k: u32,
    counters: &mut Counters,
) -> Result<(), DeltaError> {
    let table = t.table;
    let b = u64::from(table.block_size());
    let (start, len) = t.group_span(k);
    let mut bytes = vec![0u8; len as usize];
    let blocks: Vec<u32> = table
        .group_range(k)
        .filter(|&i| !table.is_zero(i))
        .collect();
    if let (Some(&first), Some(&last)) = (blocks.first(), blocks.last()) {
        let s = t.payload_offset + table.stored_offset(first);
        let e = t.payload_offset + table.stored_range(last).end;
        let src_err = |e| DeltaError::Source(t.role.clone(), e);
        let mut rd = src.range(s, e).map_err(src_err)?;
        let mut frame = Vec::new();
        let mut out = Vec::new();
        for &i in &blocks {
            let len = u64::from(table.stored_len(i));
            if len > max_frame(b) {
                return Err(t.mismatch(start));
            }
            frame.resize(len as usize, 0);
            rd.read_exact(&mut frame).map_err(src_err)?;
            counters.fetched_blocks += 1;
            decode_block(table, i, &frame, &mut out).map_err(|_| t.mismatch(start))?;
            let off = (u64::from(i) * b - start) as usize;
            bytes[off..off + out.len()].copy_from_slice(&out);
        }
    }
    match table.group_sha256(k) {
        Some(want) if Sha256::digest(&bytes)[..] == want => {}
        // A group without a hash holds only zero blocks: zeros are right.
        None => {}
        Some(_) => return Err(t.mismatch(start)),
    }
    t.write(dev, start, &bytes)?;
    counters.written += len;
    counters.refetched_groups += 1;
    Ok(())
}

/// Read and drop `n` bytes.
fn skip(rd: &mut dyn Read, n: u64) -> io::Result<()> {
    let got = io::copy(&mut rd.take(n), &mut io::sink())?;
    if got < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the range ended early",
        ));
    }
    Ok(())
}
