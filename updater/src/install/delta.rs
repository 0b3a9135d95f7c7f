//! The delta way of an install (docs/delta.md): a chunked payload is
//! assembled on the target from zeros, the booted slot, the target's own
//! leftover and HTTP Range requests for the rest, each piece checked
//! against the signed chunk table before it counts.
//!
//! Per chunked payload, in order (issue 12's design, steps 1-5):
//! 1. fetch its table (one Range), check its SHA-256 against the header;
//! 2. write the zero blocks as zeros;
//! 3. read the booted slot's partition of the same role once, front to
//!    back, in large reads; every block whose short hash matches a needed
//!    block is written there on the target (a candidate);
//! 4. check the target's own bytes at the blocks still needed, then fetch
//!    the rest (coalesced ranges, one connection), assemble each group from
//!    candidates and fetched frames, and write the fetched blocks only once
//!    the group's SHA-256 matches; a group that does not is fetched whole
//!    and checked again; still wrong: a refusal, nothing written for it;
//! 5. flush, then the final pass ([`final_pass`]): every group and the
//!    whole payload re-hashed from the medium; failed groups (a candidate
//!    changed since the booted slot's install) are fetched whole and the
//!    pass runs once more.
//!
//! Unchunked payloads of the same image are fetched whole with one Range
//! and decoded as the stream would.
//!
//! The plan (steps 1-4 without writing, [`plan::plan_payload`]) is shared
//! with `check`'s `download_bytes` estimate ([`estimate`]).

mod estimate;
pub mod fetch;
pub mod final_pass;
pub mod plan;

pub use estimate::{download_bytes, estimate};

use std::io::{self, Read};

use boot_flags::{Disk, SlotId};
use image_format::ChunkTable;
use image_format::{PayloadInfo, VerifiedHeader};
use sha2::{Digest, Sha256};

use super::counters::Counters;
pub use super::dev::BlockDevice;
use super::pipeline::Job;
use crate::progress::Progress;
use crate::source::RangeSource;
use plan::Region;

/// Why a delta install stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("reading payload {0} from the source: {1}")]
    Source(String, io::Error),
    #[error("payload {role}: {what}")]
    Table { role: String, what: String },
    #[error(
        "payload {role}: the block group at raw offset {offset} does not match the signed table"
    )]
    Mismatch { role: String, offset: u64 },
    #[error("payload {role}: SHA-256 mismatch on the final pass; the slot stays invalid")]
    Whole { role: String },
    #[error("payload {role}: reading disk byte {offset}: {err}")]
    Read {
        role: String,
        offset: u64,
        err: io::Error,
    },
    #[error("payload {role}: writing disk byte {offset}: {err}")]
    Write {
        role: String,
        offset: u64,
        err: io::Error,
    },
}

impl DeltaError {
    /// The image's bytes disagree with its signed header (exit 3).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            DeltaError::Table { .. } | DeltaError::Mismatch { .. } | DeltaError::Whole { .. }
        )
    }
}

/// One chunked payload and where it goes.
pub struct Target<'a> {
    pub role: String,
    pub table: &'a ChunkTable,
    /// Disk byte offset of the target partition.
    pub dest: u64,
    /// The payload's offset in the image.
    pub payload_offset: u64,
    pub raw_size: u64,
    pub sha256: [u8; 32],
}

impl Target<'_> {
    /// Raw offset and length of group `k`.
    pub fn group_span(&self, k: u32) -> (u64, u64) {
        let blocks = self.table.group_range(k);
        let start = u64::from(blocks.start) * u64::from(self.table.block_size());
        let len = blocks.map(|i| u64::from(self.table.block_len(i))).sum();
        (start, len)
    }

    /// Write raw bytes at raw offset `off` of the payload.
    pub fn write(
        &self,
        dev: &mut dyn BlockDevice,
        off: u64,
        bytes: &[u8],
    ) -> Result<(), DeltaError> {
        dev.write_all_at(self.dest + off, bytes)
            .map_err(|err| DeltaError::Write {
                role: self.role.clone(),
                offset: self.dest + off,
                err,
            })
    }

    /// Write `zeros` (all zero bytes) at raw offset `off`: through the
    /// device's own zeroing when it has one and the run is whole 4 KiB
    /// blocks (pipeline/zeroes.rs says why), else as bytes.
    pub fn write_zeros(
        &self,
        dev: &mut dyn BlockDevice,
        off: u64,
        zeros: &[u8],
    ) -> Result<(), DeltaError> {
        let len = zeros.len() as u64;
        if len % 4096 == 0 {
            match dev.write_zeroes(self.dest + off, len) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(err) => {
                    return Err(DeltaError::Write {
                        role: self.role.clone(),
                        offset: self.dest + off,
                        err,
                    })
                }
            }
        }
        self.write(dev, off, zeros)
    }

    pub fn read_err(&self, off: u64, err: io::Error) -> DeltaError {
        DeltaError::Read {
            role: self.role.clone(),
            offset: self.dest + off,
            err,
        }
    }

    pub fn mismatch(&self, offset: u64) -> DeltaError {
        DeltaError::Mismatch {
            role: self.role.clone(),
            offset,
        }
    }
}

/// Consecutive writes of the booted slot's scan, merged up to 1 MiB.
struct Coalesce {
    dest: u64,
    off: u64,
    buf: Vec<u8>,
    written: u64,
}

const COALESCE_MAX: usize = 1 << 20;

impl Coalesce {
    fn push(&mut self, dev: &mut dyn BlockDevice, off: u64, bytes: &[u8]) -> io::Result<()> {
        if self.off + self.buf.len() as u64 != off || self.buf.len() + bytes.len() > COALESCE_MAX {
            self.flush(dev)?;
            self.off = off;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self, dev: &mut dyn BlockDevice) -> io::Result<()> {
        if !self.buf.is_empty() {
            dev.write_all_at(self.dest + self.off, &self.buf)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Step 1: fetch payload `p`'s table frame and check it against the header.
pub fn fetch_table(src: &mut dyn RangeSource, p: &PayloadInfo) -> Result<ChunkTable, DeltaError> {
    let info = p.chunked.as_ref().ok_or_else(|| DeltaError::Table {
        role: p.role.clone(),
        what: "not a chunked payload".into(),
    })?;
    let len = info.table_stored_len;
    if len > p.stored_size {
        return Err(DeltaError::Table {
            role: p.role.clone(),
            what: format!("table frame of {len} bytes exceeds the payload's stored size"),
        });
    }
    let mut frame = Vec::new();
    src.range(p.offset, p.offset + len)
        .and_then(|mut r| r.read_to_end(&mut frame))
        .map_err(|e| DeltaError::Source(p.role.clone(), e))?;
    ChunkTable::from_frame(p, &frame).map_err(|e| DeltaError::Table {
        role: p.role.clone(),
        what: e.to_string(),
    })
}

/// Step 2: the zero blocks, as zeros (runs merged). Returns bytes written.
fn write_zeros(t: &Target<'_>, dev: &mut dyn BlockDevice) -> Result<u64, DeltaError> {
    let table = t.table;
    let b = u64::from(table.block_size());
    let zeros = vec![0u8; COALESCE_MAX];
    let mut total = 0;
    let mut i = 0;
    while i < table.block_count() {
        if !table.is_zero(i) {
            i += 1;
            continue;
        }
        let start = u64::from(i) * b;
        let mut end = start;
        while i < table.block_count() && table.is_zero(i) && end - start < COALESCE_MAX as u64 {
            end += u64::from(table.block_len(i));
            i += 1;
        }
        t.write_zeros(dev, start, &zeros[..(end - start) as usize])?;
        total += end - start;
    }
    Ok(total)
}

/// The booted slot's region of each payload's role: the booted record's
/// raw size for that role when the record says, else the new payload's
/// raw size; capped at the partition. `None` without a booted slot (a
/// factory install) or without that role on it.
pub fn booted_regions<D: BlockDevice>(
    disk: &mut Disk<D>,
    booted: Option<SlotId>,
    header: &VerifiedHeader,
) -> Vec<Option<Region>> {
    let Some(slot) = booted else {
        return vec![None; header.payloads().len()];
    };
    // Only a length hint: every reused byte is checked against the new
    // table, so an unverified (or missing, or damaged) record costs reuse,
    // never correctness.
    let old: Vec<(String, u64)> = crate::record::read_slot(disk, slot)
        .ok()
        .flatten()
        .and_then(|blob| {
            let img = image_format::ImageReader::new(&blob[..])
                .and_then(|r| r.into_untrusted())
                .ok()?;
            Some(
                img.header()
                    .payloads()
                    .iter()
                    .map(|p| (p.role.clone(), p.raw_size))
                    .collect(),
            )
        })
        .unwrap_or_default();
    let layout = disk.layout().slot(slot);
    header
        .payloads()
        .iter()
        .map(|p| {
            let part = layout.partition(&p.role)?;
            let len = old
                .iter()
                .find(|(r, _)| *r == p.role)
                .map_or(p.raw_size, |(_, n)| *n)
                .min(part.size);
            Some(Region {
                offset: part.offset,
                len,
            })
        })
        .collect()
}

/// Everything a delta install needs besides the disk and the source.
pub struct DeltaJob<'a> {
    pub header: &'a VerifiedHeader,
    pub jobs: &'a [Job],
    pub booted: &'a [Option<Region>],
    pub progress: &'a Progress,
}

/// The whole download of a delta install, as `check` estimates it and the
/// install's `plan` event reports it (docs/delta.md, "What is counted"):
/// what the source has received when the plans are known (over HTTP the
/// 64 KiB probe, which holds the header, and every chunked payload's table
/// frame), plus every chunked payload's planned ranges (gaps included) and
/// every unchunked payload whole.
pub fn download_total(
    received: u64,
    header: &VerifiedHeader,
    plans: &[Option<plan::PayloadPlan>],
) -> u64 {
    header
        .payloads()
        .iter()
        .zip(plans)
        .map(|(p, plan)| plan.as_ref().map_or(p.stored_size, |x| x.fetch_bytes()))
        .fold(received, u64::saturating_add)
}

/// Install every payload of `job.header` the delta way: first every
/// chunked payload's plan (table, zeros, booted-slot scan, target check),
/// then the `plan` progress event (what the install will download), then
/// the fetches and final passes. Does not flush the unchunked payloads'
/// writes (the caller flushes); chunked payloads are flushed and checked by
/// their final pass.
pub fn install(
    dev: &mut dyn BlockDevice,
    src: &mut dyn RangeSource,
    job: &DeltaJob<'_>,
    counters: &mut Counters,
) -> Result<(), DeltaError> {
    let mut tables = Vec::new();
    let mut plans = Vec::new();
    for ((p, j), booted) in job.header.payloads().iter().zip(job.jobs).zip(job.booted) {
        if p.chunked.is_some() {
            let (table, plan) = plan_chunked(dev, src, p, j, *booted, job.progress, counters)?;
            tables.push(Some(table));
            plans.push(Some(plan));
        } else {
            tables.push(None);
            plans.push(None);
        }
    }
    let received = src.received();
    job.progress.plan(&crate::progress::PlanEvent {
        download_bytes: download_total(received, job.header, &plans),
        received,
        image_bytes: src.len(),
        reused_booted: counters.reused_booted,
        reused_target: counters.reused_target,
        reused_zero: counters.reused_zero,
    });
    let payloads = job.header.payloads().iter().zip(job.jobs);
    for ((p, j), (table, plan)) in payloads.zip(tables.iter().zip(plans)) {
        match (table, plan) {
            (Some(table), Some(plan)) => {
                let t = target(p, j, table);
                fetch_chunked(dev, src, &t, &plan, job.progress, counters)?;
            }
            _ => {
                stream_range(dev, src, p, j, job.progress)?;
                counters.written += p.raw_size;
            }
        }
    }
    Ok(())
}

fn target<'a>(p: &PayloadInfo, job: &Job, table: &'a ChunkTable) -> Target<'a> {
    Target {
        role: p.role.clone(),
        table,
        dest: job.dest_offset,
        payload_offset: p.offset,
        raw_size: p.raw_size,
        sha256: p.sha256,
    }
}

/// Steps 1-3 and the target check of step 4 for one chunked payload: its
/// table, its zero blocks written, the booted slot's candidates written,
/// the plan of what is left to fetch.
fn plan_chunked(
    dev: &mut dyn BlockDevice,
    src: &mut dyn RangeSource,
    p: &PayloadInfo,
    job: &Job,
    booted: Option<Region>,
    progress: &Progress,
    counters: &mut Counters,
) -> Result<(ChunkTable, plan::PayloadPlan), DeltaError> {
    let table = fetch_table(src, p)?;
    let t = target(p, job, &table);
    let zeros = write_zeros(&t, dev)?;
    counters.written += zeros;

    let b = u64::from(table.block_size());
    let mut co = Coalesce {
        dest: t.dest,
        off: 0,
        buf: Vec::new(),
        written: 0,
    };
    progress.phase("scan", &p.role, booted.map_or(0, |r| r.len));
    let plan = plan::plan_payload(
        dev,
        &table,
        booted,
        t.dest,
        p.offset,
        &mut |dev, i, bytes| co.push(dev, u64::from(i) * b, bytes),
        &mut |done| progress.update(done),
    )
    .and_then(|plan| co.flush(dev).map(|()| plan))
    .map_err(|e| t.read_err(0, e))?;
    progress.finish_phase();
    counters.written += co.written;
    counters.reused_zero += plan.reused_zero;
    counters.reused_booted += plan.reused_booted;
    counters.reused_target += plan.reused_target;
    Ok((table, plan))
}

/// The rest of step 4 and step 5 for one planned chunked payload.
fn fetch_chunked(
    dev: &mut dyn BlockDevice,
    src: &mut dyn RangeSource,
    t: &Target<'_>,
    plan: &plan::PayloadPlan,
    progress: &Progress,
    counters: &mut Counters,
) -> Result<(), DeltaError> {
    progress.phase("fetch", &t.role, plan.fetch_bytes());
    let mut asm = fetch::Assemble::new(t, counters);
    asm.run(src, dev, plan, |done| progress.update(done))?;
    let bad = std::mem::take(&mut asm.bad);
    for k in bad {
        fetch::refetch_group(t, src, dev, k, counters)?;
    }
    progress.finish_phase();
    progress.counters(counters, src.received());

    // Step 5: flush, then the final pass; failed groups once more.
    for round in 0..2 {
        dev.flush().map_err(|e| t.read_err(0, e))?;
        progress.phase("verify", &t.role, t.raw_size);
        let res = final_pass::final_pass(t, dev, |done| progress.update(done))?;
        progress.finish_phase();
        if res.bad.is_empty() {
            if res.whole_ok {
                return Ok(());
            }
            return Err(DeltaError::Whole {
                role: t.role.clone(),
            });
        }
        if round == 1 {
            let (off, _) = t.group_span(res.bad[0]);
            return Err(t.mismatch(off));
        }
        for k in res.bad {
            fetch::refetch_group(t, src, dev, k, counters)?;
        }
    }
    unreachable!("the loop returns")
}

/// An unchunked payload on the delta way: one Range, decoded, hashed and
/// written as the stream would.
fn stream_range(
    dev: &mut dyn BlockDevice,
    src: &mut dyn RangeSource,
    p: &PayloadInfo,
    job: &Job,
    progress: &Progress,
) -> Result<(), DeltaError> {
    let src_err = |e| DeltaError::Source(p.role.clone(), e);
    let refuse = |what: String| DeltaError::Table {
        role: p.role.clone(),
        what,
    };
    let rd = src
        .range(p.offset, p.offset + p.stored_size)
        .map_err(src_err)?;
    let mut dec = image_format::decompressor(p.compression, rd)
        .map_err(|e| refuse(format!("decompressing: {e}")))?;
    progress.phase("write", &p.role, p.raw_size);
    let mut buf = vec![0u8; super::pipeline::CHUNK];
    let mut h = Sha256::new();
    let mut off = 0u64;
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(refuse(format!("decompressing: {e}"))),
        };
        if off + n as u64 > p.raw_size {
            return Err(refuse(format!(
                "decompresses to more than its declared {} bytes",
                p.raw_size
            )));
        }
        h.update(&buf[..n]);
        dev.write_all_at(job.dest_offset + off, &buf[..n])
            .map_err(|err| DeltaError::Write {
                role: p.role.clone(),
                offset: job.dest_offset + off,
                err,
            })?;
        off += n as u64;
        progress.update(off);
    }
    progress.finish_phase();
    if off != p.raw_size || h.finalize()[..] != p.sha256 {
        return Err(refuse(format!(
            "decompresses to {off} bytes that do not match the signed SHA-256"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
