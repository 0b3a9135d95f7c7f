//! `slotctl image diff-size OLD NEW`: the bytes a device running OLD would
//! download to install NEW, computed with the device's own matching code
//! (image_format::BlockFinder and fetch_plan): NEW's header and signature
//! block, each chunked payload's table frame, and the frames of the nonzero
//! blocks not found among OLD's payload of the same role (decoded whatever
//! its compression, scanned in NEW's block size). A candidate whose bytes
//! differ from the block (a short-hash collision) makes its group fetched
//! whole, as on the device. Unchunked payloads count whole. It also shows
//! the bytes with the gaps the device downloads when it merges frames
//! closer than MERGE_GAP into one range.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use image_format::{
    fetch_plan, BlockFinder, ChunkTable, Compression, ImageReader, PayloadInfo, MERGE_GAP,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::image_error;
use crate::cli::Globals;
use crate::term::printable;

#[derive(Args, Debug)]
pub struct DiffSizeArgs {
    /// The image the device runs.
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The image to install.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
    /// Frames closer than this many stored bytes count as one range with
    /// the bytes between (the device's merging; 0: frames only).
    #[arg(long, value_name = "BYTES", default_value_t = MERGE_GAP)]
    pub merge_gap: u64,
}

/// What one of NEW's payloads costs.
struct PayloadCost {
    role: String,
    compression: Compression,
    raw_size: u64,
    download: u64,
    table_bytes: u64,
    frame_bytes: u64,
    fetched_blocks: usize,
    reused_blocks: u32,
    reused_bytes: u64,
    zero_bytes: u64,
    refetched_groups: u32,
    /// Bytes of the ranges the device requests: the frames, neighbours
    /// closer than image_format::MERGE_GAP merged (gaps included).
    ranges_bytes: u64,
    ranges: usize,
    old_found: bool,
}

fn open(path: &Path) -> anyhow::Result<BufReader<File>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(BufReader::with_capacity(1 << 20, f))
}

/// Run `f` on the raw bytes of `path`'s payload `role` (checked against its
/// header's SHA-256 when read to the end); None when there is no such role.
fn with_payload<T>(
    path: &Path,
    role: &str,
    f: impl FnOnce(&mut dyn Read) -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    let mut img = ImageReader::new(open(path)?)
        .and_then(|r| r.into_untrusted())
        .map_err(|e| image_error(path, e))?;
    let roles: Vec<String> = img
        .header()
        .payloads()
        .iter()
        .map(|p| p.role.clone())
        .collect();
    for r in roles {
        if r == role {
            let mut p = img
                .next_payload()
                .map_err(|e| image_error(path, e))?
                .expect("the role is in the header");
            return f(&mut p).map(Some);
        }
        img.skip_payload().map_err(|e| image_error(path, e))?;
    }
    Ok(None)
}

/// SHA-256 of each block of NEW's payload (to tell a right candidate from
/// a short-hash collision), reading it whole, its hash checked.
fn block_hashes(path: &Path, table: &ChunkTable) -> anyhow::Result<Vec<[u8; 32]>> {
    let b = table.block_size() as usize;
    with_payload(path, table.role(), |r| {
        let mut out = Vec::with_capacity(table.block_count() as usize);
        let mut buf = vec![0u8; b];
        loop {
            let n = read_full(r, &mut buf).map_err(|e| image_error(path, e))?;
            if n == 0 {
                break;
            }
            out.push(Sha256::digest(&buf[..n]).into());
        }
        Ok(out)
    })?
    .context("the payload vanished")
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> image_format::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(image_format::Error::from_io(e)),
        }
    }
    Ok(done)
}

fn chunked_cost(
    old: &Path,
    new: &Path,
    p: &PayloadInfo,
    table: &ChunkTable,
    merge_gap: u64,
) -> anyhow::Result<PayloadCost> {
    let hashes = block_hashes(new, table)?;
    let mut finder = BlockFinder::new(table);
    let mut wrong = vec![false; table.block_count() as usize];
    let old_found = with_payload(old, &p.role, |r| {
        finder
            .scan(r, |i, _, bytes| {
                wrong[i as usize] = <[u8; 32]>::from(Sha256::digest(bytes)) != hashes[i as usize];
                Ok(())
            })
            .map_err(|e| image_error(old, image_format::Error::from_io(e)))?;
        Ok(())
    })?
    .is_some();
    let plan = fetch_plan(table, |i| finder.is_found(i), |i| wrong[i as usize]);
    let table_bytes = table.info().table_stored_len;
    let ranges = plan.ranges(table, merge_gap);
    Ok(PayloadCost {
        ranges_bytes: table_bytes + ranges.iter().map(|r| r.end - r.start).sum::<u64>(),
        ranges: ranges.len(),
        role: p.role.clone(),
        compression: p.compression,
        raw_size: p.raw_size,
        download: table_bytes + plan.frame_bytes,
        table_bytes,
        frame_bytes: plan.frame_bytes,
        fetched_blocks: plan.blocks.len(),
        reused_blocks: plan.reused_blocks,
        reused_bytes: plan.reused_bytes,
        zero_bytes: plan.zero_bytes,
        refetched_groups: plan.refetched_groups,
        old_found,
    })
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 10000.0 / whole as f64).round() / 100.0
    }
}

pub fn diff_size(args: &DiffSizeArgs, globals: &Globals) -> anyhow::Result<()> {
    let (old, new) = (&args.old, &args.new);
    let header = ImageReader::new(open(new)?)
        .and_then(|r| r.into_untrusted())
        .map_err(|e| image_error(new, e))?
        .header()
        .clone();
    // OLD must at least be an image.
    ImageReader::new(open(old)?)
        .and_then(|r| r.into_untrusted())
        .map_err(|e| image_error(old, e))?;
    let tables = super::chunks::tables_from_file(new, header.payloads())?;
    let mut costs = Vec::new();
    for (p, t) in header.payloads().iter().zip(tables) {
        let cost = match t {
            Some(t) => chunked_cost(
                old,
                new,
                p,
                &t.map_err(|e| image_error(new, e))?,
                args.merge_gap,
            )?,
            None => PayloadCost {
                role: p.role.clone(),
                compression: p.compression,
                raw_size: p.raw_size,
                download: p.stored_size,
                table_bytes: 0,
                frame_bytes: p.stored_size,
                fetched_blocks: 0,
                reused_blocks: 0,
                reused_bytes: 0,
                zero_bytes: 0,
                refetched_groups: 0,
                ranges_bytes: p.stored_size,
                ranges: 1,
                old_found: false,
            },
        };
        costs.push(cost);
    }
    let head = header.payloads_offset();
    let total = head + costs.iter().map(|c| c.download).sum::<u64>();
    let with_gaps = head + costs.iter().map(|c| c.ranges_bytes).sum::<u64>();
    let raw: u64 = header.payloads().iter().map(|p| p.raw_size).sum();
    let image_len = header.image_len();
    if globals.json {
        let v = json!({
            "old": old.display().to_string(),
            "new": new.display().to_string(),
            "download_bytes": total,
            "header_bytes": head,
            "download_bytes_with_gaps": with_gaps,
            "merge_gap": args.merge_gap,
            "new_raw_size": raw,
            "new_image_len": image_len,
            "percent_of_raw": percent(total, raw),
            "percent_of_image": percent(total, image_len),
            "payloads": costs.iter().map(|c| json!({
                "role": c.role,
                "compression": c.compression.name(),
                "raw_size": c.raw_size,
                "download_bytes": c.download,
                "table_bytes": c.table_bytes,
                "frame_bytes": c.frame_bytes,
                "fetched_blocks": c.fetched_blocks,
                "reused_blocks": c.reused_blocks,
                "reused_bytes": c.reused_bytes,
                "zero_bytes": c.zero_bytes,
                "refetched_groups": c.refetched_groups,
                "ranges": c.ranges,
                "ranges_bytes": c.ranges_bytes,
                "old_has_role": c.old_found,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let line = format!(
        "{} -> {}: download {total} bytes, {}% of the new raw size ({raw}), {}% of the new image ({image_len})",
        old.display(),
        new.display(),
        percent(total, raw),
        percent(total, image_len),
    );
    println!("{}", printable(&line));
    println!(
        "  with the gaps between frames up to {} bytes apart (fetched in one range): {with_gaps} bytes",
        args.merge_gap
    );
    println!("  header and signatures {head} bytes");
    for c in &costs {
        let line = if c.compression == Compression::Chunked {
            format!(
                "  {:<8} chunked: {} bytes (table {}, {} block frames {}, in {} ranges); reused {} blocks ({} bytes){}, zeros {} bytes, {} groups refetched",
                c.role,
                c.download,
                c.table_bytes,
                c.fetched_blocks,
                c.frame_bytes,
                c.ranges,
                c.reused_blocks,
                c.reused_bytes,
                if c.old_found { "" } else { " (OLD has no such role)" },
                c.zero_bytes,
                c.refetched_groups
            )
        } else {
            format!(
                "  {:<8} {}: {} bytes (not chunked: downloaded whole)",
                c.role,
                c.compression.name(),
                c.download
            )
        };
        println!("{}", printable(&line));
    }
    Ok(())
}
