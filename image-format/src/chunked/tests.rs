//! Unit tests of chunked payloads: round trips through pack and the reader,
//! every check of the header field and of the table, decoding refusals, and
//! the block matching.

mod checks;
mod matching;
mod roundtrip;

use std::io::Cursor;

use super::pack::{pack_chunked, ChunkOptions};
use super::{ChunkInfo, ChunkTable};
use crate::format::{Compression, PayloadInfo};
use crate::pack::ZstdOptions;

/// A chunked payload packed in memory: its header entry and stored bytes.
pub(crate) struct Built {
    pub info: PayloadInfo,
    pub stored: Vec<u8>,
}

pub(crate) fn build(raw: &[u8], block_size: u32, group_blocks: u32, workers: u32) -> Built {
    build_opts(
        raw,
        &ChunkOptions {
            block_size,
            group_blocks,
            dict_size: 0,
            temp_dir: None,
        },
        workers,
    )
}

pub(crate) fn build_opts(raw: &[u8], opts: &ChunkOptions, workers: u32) -> Built {
    let mut stored = Vec::new();
    let zstd = ZstdOptions {
        level: 3,
        workers,
        job_size: 0,
    };
    let packed = pack_chunked(
        &mut stored,
        &mut Cursor::new(raw),
        Some(raw.len() as u64),
        &zstd,
        opts,
        "ROOT",
    )
    .unwrap();
    assert_eq!(packed.stored_size, stored.len() as u64);
    Built {
        info: PayloadInfo {
            role: "ROOT".into(),
            compression: Compression::Chunked,
            raw_size: packed.raw_size,
            stored_size: packed.stored_size,
            sha256: packed.sha256,
            offset: 0,
            chunked: Some(packed.info),
            stored_sha256: None,
            verity: None,
        },
        stored,
    }
}

impl Built {
    pub fn chunk(&self) -> ChunkInfo {
        self.info.chunked.unwrap()
    }
    pub fn table(&self) -> ChunkTable {
        let n = self.chunk().table_stored_len as usize;
        ChunkTable::from_frame(&self.info, &self.stored[..n]).unwrap()
    }
    /// Decode the whole payload through the streaming decoder and check the
    /// payload hash, as a PayloadReader does.
    pub fn decode(&self) -> crate::Result<Vec<u8>> {
        decode_with(&self.info, &self.stored)
    }
}

pub(crate) fn decode_with(info: &PayloadInfo, stored: &[u8]) -> crate::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut d = crate::payload_decompressor(info, stored)?;
    std::io::Read::read_to_end(&mut d, &mut out).map_err(crate::Error::from_io)?;
    let mut h = crate::PayloadHasher::new();
    h.update(&out);
    h.finish(info)?;
    Ok(out)
}

/// A disk-like test payload: runs of zeros, repeated text blocks, noise.
pub(crate) fn disk_like(blocks: usize, b: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks * b);
    for i in 0..blocks {
        match (i as u64 * 7 + seed) % 5 {
            0 | 1 => out.extend(std::iter::repeat_n(0u8, b)),
            2 => out.extend(format!("file {:04} line ", i % 13).bytes().cycle().take(b)),
            _ => out.extend(crate::tests::noise(b, seed * 1000 + i as u64)),
        }
    }
    out
}
