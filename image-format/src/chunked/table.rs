//! The raw chunk table: parsed with every check of the format, and the
//! accessors the decoders and the device's delta install use.

use std::ops::Range;

use sha2::{Digest, Sha256};
use zstd::zstd_safe::{self, DCtx, DDict, DParameter};

use super::ChunkInfo;
use crate::error::{Error, Result};
use crate::format::{PayloadInfo, ZSTD_WINDOW_LOG_MAX};

/// A chunked payload's table, checked against the signed header: its SHA-256,
/// its layout, the block count and the stored size. Memory: the raw table
/// (4 bytes per block, 4 per nonzero block, 32 per nonzero group, the
/// dictionary) plus 16 bytes per group of indexes.
pub struct ChunkTable {
    role: String,
    info: ChunkInfo,
    raw_size: u64,
    raw: Vec<u8>,
    lengths_at: usize,
    shorts_at: usize,
    groups_at: usize,
    /// Per group: stored offset of its first frame (from the payload start).
    group_offset: Vec<u64>,
    /// Per group: index among nonzero blocks of its first nonzero block.
    group_first_nonzero: Vec<u32>,
    /// Per group: index among nonzero groups, or u32::MAX for an all-zero group.
    group_rank: Vec<u32>,
    nonzero_blocks: u32,
    nonzero_groups: u32,
    ddict: Option<DDict<'static>>,
}

impl std::fmt::Debug for ChunkTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkTable")
            .field("role", &self.role)
            .field("info", &self.info)
            .field("raw_size", &self.raw_size)
            .field("nonzero_blocks", &self.nonzero_blocks)
            .field("nonzero_groups", &self.nonzero_groups)
            .finish_non_exhaustive()
    }
}

fn bad(role: &str, reason: String) -> Error {
    Error::BadChunkTable {
        role: role.to_owned(),
        reason,
    }
}

/// The `chunked` field of a payload entry, or an error naming the payload.
pub(crate) fn chunk_info(payload: &PayloadInfo) -> Result<ChunkInfo> {
    payload
        .chunked
        .ok_or_else(|| bad(&payload.role, "the payload is not chunked".into()))
}

impl ChunkTable {
    /// Decompress the table frame (exactly `table_stored_len` bytes, one zstd
    /// frame, at most `table_raw_len` raw bytes) and parse it.
    pub fn from_frame(payload: &PayloadInfo, frame: &[u8]) -> Result<ChunkTable> {
        let info = chunk_info(payload)?;
        let role = &payload.role;
        if frame.len() as u64 != info.table_stored_len {
            return Err(bad(
                role,
                format!(
                    "table frame of {} bytes, the header declares {}",
                    frame.len(),
                    info.table_stored_len
                ),
            ));
        }
        let mut raw = Vec::with_capacity(info.table_raw_len as usize);
        one_frame(frame, &mut raw, info.table_raw_len as usize, None)
            .map_err(|detail| bad(role, format!("table frame: {detail}")))?;
        ChunkTable::parse(payload, raw)
    }

    /// Parse a raw table: its length and SHA-256 against the header, the
    /// layout sums, each frame length within zstd's bound for its block, and
    /// the frames' total against the stored size.
    pub fn parse(payload: &PayloadInfo, raw: Vec<u8>) -> Result<ChunkTable> {
        let info = chunk_info(payload)?;
        let role = payload.role.as_str();
        if raw.len() as u64 != info.table_raw_len {
            return Err(bad(
                role,
                format!(
                    "{} raw bytes, the header declares {}",
                    raw.len(),
                    info.table_raw_len
                ),
            ));
        }
        let actual: [u8; 32] = Sha256::digest(&raw).into();
        if actual != info.table_sha256 {
            return Err(bad(
                role,
                format!(
                    "SHA-256 {} does not match the header's {}",
                    crate::hex(&actual),
                    crate::hex(&info.table_sha256)
                ),
            ));
        }
        let want_blocks = payload.raw_size.div_ceil(info.block_size as u64);
        if want_blocks != info.block_count as u64 {
            return Err(bad(
                role,
                format!(
                    "{} blocks for a raw size of {} (expected {want_blocks})",
                    info.block_count, payload.raw_size
                ),
            ));
        }
        let count = info.block_count as usize;
        let lengths_at = info.dict_len as usize;
        let shorts_at = lengths_at + 4 * count;
        if shorts_at > raw.len() {
            return Err(bad(
                role,
                "too short for the dictionary and the lengths".into(),
            ));
        }
        let g = info.group_blocks as usize;
        let groups = info.group_count() as usize;
        let mut group_offset = Vec::with_capacity(groups);
        let mut group_first_nonzero = Vec::with_capacity(groups);
        let mut group_rank = Vec::with_capacity(groups);
        let mut offset = info.table_stored_len;
        let (mut nonzero_blocks, mut nonzero_groups) = (0u32, 0u32);
        for k in 0..groups {
            group_offset.push(offset);
            group_first_nonzero.push(nonzero_blocks);
            let mut any = false;
            for i in k * g..((k + 1) * g).min(count) {
                let len = u32_at(&raw, lengths_at + 4 * i);
                if len == 0 {
                    continue;
                }
                let block_len = block_len_of(&info, payload.raw_size, i as u32);
                let bound = zstd_safe::compress_bound(block_len as usize) as u64;
                if len as u64 > bound {
                    return Err(bad(
                        role,
                        format!(
                            "block {i}: frame of {len} bytes exceeds the zstd bound {bound} of its {block_len} raw bytes"
                        ),
                    ));
                }
                offset += len as u64;
                nonzero_blocks += 1;
                any = true;
            }
            group_rank.push(if any { nonzero_groups } else { u32::MAX });
            if any {
                nonzero_groups += 1;
            }
        }
        let groups_at = shorts_at + 4 * nonzero_blocks as usize;
        let want_len = groups_at as u64 + 32 * nonzero_groups as u64;
        if want_len != raw.len() as u64 {
            return Err(bad(
                role,
                format!(
                    "{} raw bytes, but the layout ({} dictionary, {count} lengths, {nonzero_blocks} short hashes, {nonzero_groups} group hashes) makes {want_len}",
                    raw.len(),
                    info.dict_len
                ),
            ));
        }
        if offset != payload.stored_size {
            return Err(bad(
                role,
                format!(
                    "table frame and block frames make {offset} stored bytes, the header declares {}",
                    payload.stored_size
                ),
            ));
        }
        let ddict = (info.dict_len > 0).then(|| DDict::create(&raw[..info.dict_len as usize]));
        Ok(ChunkTable {
            role: payload.role.clone(),
            info,
            raw_size: payload.raw_size,
            raw,
            lengths_at,
            shorts_at,
            groups_at,
            group_offset,
            group_first_nonzero,
            group_rank,
            nonzero_blocks,
            nonzero_groups,
            ddict,
        })
    }

    /// The payload's role.
    pub fn role(&self) -> &str {
        &self.role
    }
    /// The header's `chunked` field.
    pub fn info(&self) -> &ChunkInfo {
        &self.info
    }
    /// The payload's raw size.
    pub fn raw_size(&self) -> u64 {
        self.raw_size
    }
    /// B: raw bytes per block.
    pub fn block_size(&self) -> u32 {
        self.info.block_size
    }
    /// G: blocks per group.
    pub fn group_blocks(&self) -> u32 {
        self.info.group_blocks
    }
    /// Number of blocks.
    pub fn block_count(&self) -> u32 {
        self.info.block_count
    }
    /// Number of groups.
    pub fn group_count(&self) -> u32 {
        self.info.group_count()
    }
    /// Blocks stored as a frame (not all zero).
    pub fn nonzero_blocks(&self) -> u32 {
        self.nonzero_blocks
    }
    /// Groups holding at least one nonzero block.
    pub fn nonzero_groups(&self) -> u32 {
        self.nonzero_groups
    }
    /// The raw table's bytes.
    pub fn raw_table(&self) -> &[u8] {
        &self.raw
    }
    /// The zstd dictionary (empty: none).
    pub fn dict(&self) -> &[u8] {
        &self.raw[..self.info.dict_len as usize]
    }
    /// Raw offset of block `i` in the payload.
    pub fn block_offset(&self, i: u32) -> u64 {
        i as u64 * self.info.block_size as u64
    }
    /// Raw length of block `i` (B, or less for the last block).
    pub fn block_len(&self, i: u32) -> u32 {
        block_len_of(&self.info, self.raw_size, i)
    }
    /// Bytes of block `i`'s frame (0: a zero block).
    pub fn stored_len(&self, i: u32) -> u32 {
        u32_at(&self.raw, self.lengths_at + 4 * i as usize)
    }
    /// True for a zero block (stored as nothing).
    pub fn is_zero(&self, i: u32) -> bool {
        self.stored_len(i) == 0
    }
    /// Offset of block `i`'s frame from the payload's start (the table
    /// frame included).
    pub fn stored_offset(&self, i: u32) -> u64 {
        let k = i / self.info.group_blocks;
        let first = k * self.info.group_blocks;
        self.group_offset[k as usize] + (first..i).map(|j| self.stored_len(j) as u64).sum::<u64>()
    }
    /// The stored byte range of block `i`'s frame, from the payload's start.
    pub fn stored_range(&self, i: u32) -> Range<u64> {
        let start = self.stored_offset(i);
        start..start + self.stored_len(i) as u64
    }
    /// Index of block `i` among the nonzero blocks, or None for a zero block.
    fn nonzero_rank(&self, i: u32) -> Option<u32> {
        if self.is_zero(i) {
            return None;
        }
        let k = i / self.info.group_blocks;
        let first = k * self.info.group_blocks;
        let before = (first..i).filter(|&j| !self.is_zero(j)).count() as u32;
        Some(self.group_first_nonzero[k as usize] + before)
    }
    /// The short hash of block `i` (None for a zero block).
    pub fn short(&self, i: u32) -> Option<[u8; 4]> {
        let r = self.nonzero_rank(i)? as usize;
        let at = self.shorts_at + 4 * r;
        Some([
            self.raw[at],
            self.raw[at + 1],
            self.raw[at + 2],
            self.raw[at + 3],
        ])
    }
    /// The SHA-256 of group `k`'s raw bytes (None for an all-zero group).
    pub fn group_sha256(&self, k: u32) -> Option<[u8; 32]> {
        let r = *self.group_rank.get(k as usize)?;
        if r == u32::MAX {
            return None;
        }
        let at = self.groups_at + 32 * r as usize;
        let mut h = [0u8; 32];
        h.copy_from_slice(&self.raw[at..at + 32]);
        Some(h)
    }
    /// The blocks of group `k`.
    pub fn group_range(&self, k: u32) -> Range<u32> {
        let g = self.info.group_blocks;
        let start = k.saturating_mul(g).min(self.info.block_count);
        start..start.saturating_add(g).min(self.info.block_count)
    }
    /// The group of block `i`.
    pub fn group_of(&self, i: u32) -> u32 {
        i / self.info.group_blocks
    }
    /// The raw byte range of group `k`.
    pub fn group_raw_range(&self, k: u32) -> Range<u64> {
        let r = self.group_range(k);
        let end = (r.end as u64 * self.info.block_size as u64).min(self.raw_size);
        self.block_offset(r.start)..end
    }
    /// Stored bytes of all block frames (the payload without its table frame).
    pub fn frames_len(&self) -> u64 {
        self.group_offset
            .last()
            .map_or(0, |&o| {
                let last = self.group_range(self.group_count() - 1);
                o + last.map(|j| self.stored_len(j) as u64).sum::<u64>()
            })
            .saturating_sub(self.info.table_stored_len)
    }
    /// True when the SHA-256 of `bytes` is group `k`'s (an all-zero group:
    /// when `bytes` are all zero and of the group's length).
    pub fn group_matches(&self, k: u32, bytes: &[u8]) -> bool {
        let r = self.group_raw_range(k);
        if bytes.len() as u64 != r.end - r.start {
            return false;
        }
        match self.group_sha256(k) {
            Some(h) => <[u8; 32]>::from(Sha256::digest(bytes)) == h,
            None => bytes.iter().all(|&b| b == 0),
        }
    }
    pub(crate) fn ddict(&self) -> Option<&DDict<'static>> {
        self.ddict.as_ref()
    }
}

fn u32_at(raw: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]])
}

fn block_len_of(info: &ChunkInfo, raw_size: u64, i: u32) -> u32 {
    let start = i as u64 * info.block_size as u64;
    raw_size.saturating_sub(start).min(info.block_size as u64) as u32
}

/// Decode exactly one zstd frame that is all of `frame`, into `out`
/// (cleared), to exactly `want` bytes.
pub(super) fn one_frame(
    frame: &[u8],
    out: &mut Vec<u8>,
    want: usize,
    ddict: Option<&DDict<'static>>,
) -> std::result::Result<(), String> {
    let size = zstd_safe::find_frame_compressed_size(frame)
        .map_err(|c| format!("not a zstd frame ({})", zstd_safe::get_error_name(c)))?;
    if size != frame.len() {
        return Err(format!(
            "{} bytes follow its zstd frame of {size} bytes",
            frame.len() - size
        ));
    }
    out.clear();
    out.reserve_exact(want);
    // One decompression context per thread, reused for every frame (a
    // 1 GiB payload has 2^18 of them).
    thread_local! {
        static DCTX: std::cell::RefCell<Option<DCtx<'static>>> = const { std::cell::RefCell::new(None) };
    }
    let n = DCTX.with(|cell| {
        let mut cell = cell.borrow_mut();
        let dctx = match &mut *cell {
            Some(d) => d,
            None => {
                let mut d = DCtx::create();
                d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                    .map_err(|c| zstd_safe::get_error_name(c).to_owned())?;
                cell.insert(d)
            }
        };
        match ddict {
            Some(d) => dctx.decompress_using_ddict(out, frame, d),
            None => dctx.decompress(out, frame),
        }
        .map_err(|c| {
            let name = zstd_safe::get_error_name(c);
            if name.contains("Destination") {
                format!("more than {want} raw bytes ({name})")
            } else {
                format!("corrupt zstd frame ({name})")
            }
        })
    })?;
    if n != want {
        return Err(format!("decodes to {n} bytes, expected {want}"));
    }
    Ok(())
}

/// Decode block `i`'s frame (exactly its stored length, one zstd frame,
/// with the table's dictionary if any) into `out`, which then holds exactly
/// the block's raw length. A zero block decodes to zeros from an empty frame.
/// Nothing is trusted until its group's SHA-256 matched.
pub fn decode_block(table: &ChunkTable, i: u32, frame: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if i >= table.block_count() {
        return Err(bad(
            table.role(),
            format!("block {i} is past the last ({})", table.block_count()),
        ));
    }
    let want = table.block_len(i) as usize;
    let corrupt = |detail: String| Error::CorruptBlock {
        role: table.role().to_owned(),
        block: i,
        offset: table.block_offset(i),
        detail,
    };
    if table.is_zero(i) {
        if !frame.is_empty() {
            return Err(corrupt("a zero block has no frame".into()));
        }
        out.clear();
        out.resize(want, 0);
        return Ok(());
    }
    if frame.len() != table.stored_len(i) as usize {
        return Err(corrupt(format!(
            "frame of {} bytes, the table says {}",
            frame.len(),
            table.stored_len(i)
        )));
    }
    one_frame(frame, out, want, table.ddict()).map_err(corrupt)
}
