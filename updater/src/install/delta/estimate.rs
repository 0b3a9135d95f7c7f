//! `check`'s `download_bytes`: the delta plan of an image (steps 1-4 of
//! the install, [`super::plan::plan_payload`]) computed without writing,
//! over the same code the install runs.

use boot_flags::{Disk, SlotId};
use image_format::VerifiedHeader;

use super::plan::{self, PayloadPlan, Region};
use super::{booted_regions, fetch_table, BlockDevice, DeltaError, Job};
use crate::source::RangeSource;

/// `check`'s estimate: the bytes an install of `header` from `src` would
/// download now, with `booted`'s partitions scanned and the target's
/// leftover checked as the install would (reading only), by the same
/// definition as the install's `plan` event ([`super::download_total`]):
/// what `src` has received once the tables are read (over HTTP the probe,
/// `min(64 KiB, image)`, which holds the header and signature block, and
/// each chunked payload's table frame), each chunked payload's planned
/// ranges, each unchunked payload whole.
pub fn estimate(
    dev: &mut dyn BlockDevice,
    src: &mut dyn RangeSource,
    header: &VerifiedHeader,
    jobs: &[Job],
    booted: &[Option<Region>],
) -> Result<u64, DeltaError> {
    let mut plans = Vec::new();
    for ((p, j), r) in header.payloads().iter().zip(jobs).zip(booted) {
        if p.chunked.is_none() {
            plans.push(None);
            continue;
        }
        let table = fetch_table(src, p)?;
        let plan: PayloadPlan = plan::plan_payload(
            dev,
            &table,
            *r,
            j.dest_offset,
            p.offset,
            &mut |_, _, _| Ok(()),
            &mut |_| {},
        )
        .map_err(|e| DeltaError::Read {
            role: p.role.clone(),
            offset: j.dest_offset,
            err: e,
        })?;
        plans.push(Some(plan));
    }
    Ok(super::download_total(src.received(), header, &plans))
}

/// `check`'s `download_bytes` for the image at `spec`, to be installed
/// into the slot that is not `booted` on `disk`: the header is read and
/// verified (`keyring`, `threshold`); an image with a chunked payload from
/// a source that gives random access is planned as the install would plan
/// it ([`estimate`]); anything else downloads the whole image (its length).
pub fn download_bytes<D: BlockDevice>(
    disk: &mut Disk<D>,
    booted: SlotId,
    src: crate::source::Source,
    keyring: &image_format::Keyring,
    threshold: usize,
) -> anyhow::Result<u64> {
    use anyhow::Context;
    let name = src.name.clone();
    let verified = image_format::ImageReader::new(src.reader)
        .and_then(|r| r.verify(keyring, threshold))
        .with_context(|| format!("image {name}"))?;
    let header = verified.header().clone();
    let stream = verified.into_inner();
    let chunked = header.payloads().iter().any(|p| p.chunked.is_some());
    if !chunked || !stream.can_range() {
        return Ok(header.image_len());
    }
    let mut ranges = stream
        .into_ranges()
        .ok_or_else(|| anyhow::anyhow!("image {name}: the source stopped offering ranges"))?;
    // The same jobs as the install's (roles, offsets, chunk tables).
    let jobs = crate::install::plan(disk, booted.other(), &header)?.jobs;
    let regions = booted_regions(disk, Some(booted), &header);
    Ok(estimate(
        disk.device(),
        ranges.as_mut(),
        &header,
        &jobs,
        &regions,
    )?)
}
