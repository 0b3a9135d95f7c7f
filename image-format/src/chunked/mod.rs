//! Chunked payloads (compression code 2): the raw bytes cut into blocks of
//! `block_size` bytes, each nonzero block its own zstd frame, zero blocks
//! stored as nothing, behind a table (one zstd frame) that the signed header
//! authenticates through its SHA-256. docs/image-format.md is the normative
//! text; this module is its reader and writer:
//!
//! - [`ChunkInfo`]: the header's `chunked` field (0x8006);
//! - [`ChunkTable`]: the checked raw table and its accessors;
//! - [`decode_block`]: one block frame, bounded to the block's raw length;
//! - [`Needed`] and [`BlockFinder`]: which blocks of a new payload are
//!   already held locally (short hashes find candidates, group SHA-256s
//!   authenticate them), and [`fetch_plan`]: what is left to download;
//! - the streaming decoder behind [`crate::PayloadReader`] and
//!   [`crate::payload_decompressor`] (module `stream`), and the packer
//!   (module `pack`).

mod matching;
pub(crate) mod pack;
pub(crate) mod stream;
mod table;

pub use matching::{fetch_plan, BlockFinder, FetchPlan, Needed, MERGE_GAP};
pub use pack::ChunkOptions;
pub use stream::read_table;
pub use table::{decode_block, ChunkTable};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Smallest block size.
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// Largest block size (1 MiB).
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
/// Largest number of blocks per group.
pub const MAX_GROUP_BLOCKS: u32 = 256;
/// Largest number of blocks in a payload.
pub const MAX_BLOCK_COUNT: u32 = 1 << 20;
/// Largest dictionary (1 MiB).
pub const MAX_DICT_LEN: u32 = 1 << 20;
/// Largest raw table (64 MiB).
pub const MAX_TABLE_RAW_LEN: u64 = 64 << 20;
/// Bytes of the header's `chunked` field.
pub const CHUNK_INFO_LEN: usize = 64;
/// Default blocks per group.
pub const DEFAULT_GROUP_BLOCKS: u32 = 16;
/// The automatic block size keeps the block count at or below this.
pub const AUTO_MAX_BLOCKS: u64 = 1 << 18;

/// The header's `chunked` field (0x8006) of a payload with compression
/// `chunked`: how its stored bytes are cut and where its table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    /// B: raw bytes per block (a power of two, 4096..=1 MiB).
    pub block_size: u32,
    /// G: blocks per group (1..=256).
    pub group_blocks: u32,
    /// ceil(raw_size / B), at most 2^20.
    pub block_count: u32,
    /// Bytes of zstd dictionary at the start of the raw table (0: none).
    pub dict_len: u32,
    /// Bytes of the table's zstd frame at the start of the stored payload.
    pub table_stored_len: u64,
    /// Bytes of the raw table.
    pub table_raw_len: u64,
    /// SHA-256 of the raw table.
    pub table_sha256: [u8; 32],
}

impl ChunkInfo {
    /// The field's 64 bytes.
    pub fn encode(&self) -> [u8; CHUNK_INFO_LEN] {
        let mut out = [0u8; CHUNK_INFO_LEN];
        out[0..4].copy_from_slice(&self.block_size.to_le_bytes());
        out[4..8].copy_from_slice(&self.group_blocks.to_le_bytes());
        out[8..12].copy_from_slice(&self.block_count.to_le_bytes());
        out[12..16].copy_from_slice(&self.dict_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.table_stored_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.table_raw_len.to_le_bytes());
        out[32..64].copy_from_slice(&self.table_sha256);
        out
    }

    /// Decode the field's value (its length and ranges are checked here; the
    /// checks against the payload's sizes are [`ChunkInfo::check`]).
    pub(crate) fn decode(v: &[u8], at: u64) -> Result<ChunkInfo> {
        let bad = |reason: String| Error::BadField {
            field: "chunked",
            offset: at,
            reason,
        };
        if v.len() != CHUNK_INFO_LEN {
            return Err(bad(format!("{} bytes, expected {CHUNK_INFO_LEN}", v.len())));
        }
        let u32_at = |o: usize| u32::from_le_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let mut table_sha256 = [0u8; 32];
        table_sha256.copy_from_slice(&v[32..64]);
        let info = ChunkInfo {
            block_size: u32_at(0),
            group_blocks: u32_at(4),
            block_count: u32_at(8),
            dict_len: u32_at(12),
            table_stored_len: u64_at(16),
            table_raw_len: u64_at(24),
            table_sha256,
        };
        if !info.block_size.is_power_of_two()
            || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&info.block_size)
        {
            return Err(bad(format!(
                "block size {} is not a power of two in {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}",
                info.block_size
            )));
        }
        if !(1..=MAX_GROUP_BLOCKS).contains(&info.group_blocks) {
            return Err(bad(format!(
                "group of {} blocks is outside 1..={MAX_GROUP_BLOCKS}",
                info.group_blocks
            )));
        }
        if info.block_count > MAX_BLOCK_COUNT {
            return Err(bad(format!(
                "{} blocks exceed the limit of {MAX_BLOCK_COUNT}",
                info.block_count
            )));
        }
        if info.dict_len > MAX_DICT_LEN {
            return Err(bad(format!(
                "dictionary of {} bytes exceeds the limit of {MAX_DICT_LEN}",
                info.dict_len
            )));
        }
        if info.table_raw_len > MAX_TABLE_RAW_LEN {
            return Err(bad(format!(
                "raw table of {} bytes exceeds the limit of {MAX_TABLE_RAW_LEN}",
                info.table_raw_len
            )));
        }
        if info.table_raw_len < info.dict_len as u64 + 4 * info.block_count as u64 {
            return Err(bad(format!(
                "raw table of {} bytes cannot hold the dictionary and {} block lengths",
                info.table_raw_len, info.block_count
            )));
        }
        let bound = zstd::zstd_safe::compress_bound(info.table_raw_len as usize) as u64;
        if info.table_stored_len == 0 || info.table_stored_len > bound {
            return Err(bad(format!(
                "table frame of {} bytes is outside 1..={bound} (the zstd bound of {} raw bytes)",
                info.table_stored_len, info.table_raw_len
            )));
        }
        Ok(info)
    }

    /// Check the field against the payload's sizes: block_count =
    /// ceil(raw_size / B), and the table frame fits in the stored size.
    pub(crate) fn check(&self, raw_size: u64, stored_size: u64, at: u64) -> Result<()> {
        let bad = |reason: String| Error::BadField {
            field: "chunked",
            offset: at,
            reason,
        };
        let want = raw_size.div_ceil(self.block_size as u64);
        if want != self.block_count as u64 {
            return Err(bad(format!(
                "{} blocks, but a raw size of {raw_size} in blocks of {} makes {want}",
                self.block_count, self.block_size
            )));
        }
        if self.table_stored_len > stored_size {
            return Err(bad(format!(
                "table frame of {} bytes exceeds the stored size {stored_size}",
                self.table_stored_len
            )));
        }
        Ok(())
    }

    /// Number of groups: ceil(block_count / G).
    pub fn group_count(&self) -> u32 {
        self.block_count.div_ceil(self.group_blocks)
    }
}

/// The short hash of a block: the first 4 bytes of its SHA-256. It finds
/// candidates only; a candidate is trusted once its whole group hashed right.
pub fn short_hash(block: &[u8]) -> [u8; 4] {
    let d = Sha256::digest(block);
    [d[0], d[1], d[2], d[3]]
}

/// The automatic block size for a payload of `raw_size` bytes: the smallest
/// power of two >= 4096 that keeps the block count at or below 2^18 (4 KiB
/// up to 1 GiB, 32 KiB for 8 GiB), at most 1 MiB.
pub fn auto_block_size(raw_size: u64) -> u32 {
    let mut b = MIN_BLOCK_SIZE;
    while b < MAX_BLOCK_SIZE && raw_size.div_ceil(b as u64) > AUTO_MAX_BLOCKS {
        b *= 2;
    }
    b
}

#[cfg(test)]
mod tests;
