//! Chunk tables of an image's chunked payloads, for `image info` and
//! `image diff-size`: read from a file by seeking to each table frame, or
//! from a stream (standard input) in one pass.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use image_format::{ChunkTable, Compression, PayloadInfo};
use serde_json::json;

/// Each payload's table (None for an unchunked payload), from a file.
pub fn tables_from_file(
    path: &Path,
    payloads: &[PayloadInfo],
) -> anyhow::Result<Vec<Option<image_format::Result<ChunkTable>>>> {
    let mut f = File::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    let mut out = Vec::with_capacity(payloads.len());
    for p in payloads {
        if p.compression != Compression::Chunked {
            out.push(None);
            continue;
        }
        f.seek(SeekFrom::Start(p.offset))
            .map_err(|e| anyhow::anyhow!("seeking in {}: {e}", path.display()))?;
        out.push(Some(image_format::read_table(p, &mut f)));
    }
    Ok(out)
}

/// Each payload's table from a stream positioned at `pos` (the end of the
/// signature block), reading through to the end; returns the tables and the
/// stream's total length.
pub fn tables_from_stream(
    mut rest: impl Read,
    mut pos: u64,
    payloads: &[PayloadInfo],
) -> anyhow::Result<(Vec<Option<image_format::Result<ChunkTable>>>, u64)> {
    let mut out = Vec::with_capacity(payloads.len());
    for p in payloads {
        if p.compression != Compression::Chunked {
            out.push(None);
            continue;
        }
        let skip = p.offset.saturating_sub(pos);
        pos += std::io::copy(&mut (&mut rest).take(skip), &mut std::io::sink())?;
        let table = p.chunked.map(|c| c.table_stored_len).unwrap_or(0);
        let mut counted = Counted {
            inner: &mut rest,
            n: 0,
        };
        out.push(Some(image_format::read_table(p, &mut counted)));
        pos += counted.n;
        debug_assert!(counted.n <= table);
    }
    pos += std::io::copy(&mut rest, &mut std::io::sink())?;
    Ok((out, pos))
}

struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// The chunk statistics of a payload: from the header when the table is
/// not available, from the table when it is.
pub fn stats_json(p: &PayloadInfo, table: Option<&ChunkTable>) -> serde_json::Value {
    let Some(c) = p.chunked else {
        return serde_json::Value::Null;
    };
    let mut v = json!({
        "block_size": c.block_size,
        "group_blocks": c.group_blocks,
        "blocks": c.block_count,
        "groups": c.group_count(),
        "dict_len": c.dict_len,
        "table_stored_len": c.table_stored_len,
        "table_raw_len": c.table_raw_len,
        "table_sha256": hex(&c.table_sha256),
    });
    if let Some(t) = table {
        let nz = t.nonzero_blocks();
        v["zero_blocks"] = json!(t.block_count() - nz);
        v["nonzero_groups"] = json!(t.nonzero_groups());
        v["frames_len"] = json!(t.frames_len());
        v["mean_stored_per_nonzero_block"] = json!(mean(t.frames_len(), nz));
    }
    v
}

fn mean(total: u64, n: u32) -> f64 {
    if n == 0 {
        0.0
    } else {
        (total as f64 / n as f64 * 10.0).round() / 10.0
    }
}

/// One line of chunk statistics for `image info`.
pub fn stats_line(p: &PayloadInfo, table: Option<&image_format::Result<ChunkTable>>) -> String {
    let Some(c) = p.chunked else {
        return String::new();
    };
    let head = format!(
        "blocks of {} bytes: {} in groups of {}; table {} stored / {} raw bytes; dictionary {} bytes",
        c.block_size,
        c.block_count,
        c.group_blocks,
        c.table_stored_len,
        c.table_raw_len,
        c.dict_len
    );
    match table {
        Some(Ok(t)) => {
            let nz = t.nonzero_blocks();
            format!(
                "{head}; {} zero blocks, {} groups with data; {:.1} stored bytes per nonzero block",
                t.block_count() - nz,
                t.nonzero_groups(),
                mean(t.frames_len(), nz)
            )
        }
        Some(Err(e)) => format!("{head}; table: {e}"),
        None => head,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
