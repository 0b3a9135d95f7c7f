//! The install's plan: which bytes of the image go where on the target
//! slot, from the verified header (one pipeline job per payload), and what
//! is recorded once they are written.

use boot_flags::{BlockDevice, Disk, SlotId};

use super::pipeline::{Check, Job};
use crate::exit::refused;

/// Everything the write phase needs from the verified header.
pub(crate) struct Plan {
    pub(crate) jobs: Vec<Job>,
    /// The image byte just past the last payload: nothing may follow it.
    pub(super) end: u64,
    pub(super) record: Vec<u8>,
    pub(super) version: String,
    pub(super) rollback_index: u64,
}

/// The pipeline jobs for the verified header's payloads.
pub(crate) fn plan<D: BlockDevice>(
    disk: &Disk<D>,
    target: SlotId,
    header: &image_format::VerifiedHeader,
) -> anyhow::Result<Plan> {
    let slot = disk.layout().slot(target);
    let position = header.record_bytes().len() as u64;
    let mut pos = position;
    let mut jobs = Vec::new();
    for p in header.payloads() {
        let part = slot
            .partition(&p.role)
            .ok_or_else(|| refused(format!("role {} missing on slot {target}", p.role)))?;
        if p.offset < pos {
            return Err(refused(format!(
                "payload {} starts at byte {} of the image, before the end of what precedes it ({pos})",
                p.role, p.offset
            )));
        }
        jobs.push(Job {
            role: p.role.clone(),
            compression: p.compression,
            stored_size: p.stored_size,
            raw_size: p.raw_size,
            sha256: p.sha256,
            stored_sha256: p
                .stored_sha256
                .filter(|_| p.compression == image_format::Compression::Zstd),
            dest_offset: part.offset,
            skip_before: p.offset - pos,
            chunked: p.chunked.is_some().then(|| p.clone()),
            check: Check::Stream,
        });
        pos = p
            .offset
            .checked_add(p.stored_size)
            .ok_or_else(|| refused(format!("payload {}: offset + stored size overflow", p.role)))?;
    }
    Ok(Plan {
        jobs,
        end: pos,
        record: header.record_bytes().to_vec(),
        version: header.version().to_string(),
        rollback_index: header.rollback_index(),
    })
}
