//! Packing a chunked payload: one pass over the input in blocks, nonzero
//! blocks compressed in parallel (each its own zstd frame, in order), the
//! frames spooled to a temporary file while the table is built in memory,
//! then the table frame and the frames written to the output.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use zstd::dict::EncoderDictionary;

use super::{
    auto_block_size, ChunkInfo, DEFAULT_GROUP_BLOCKS, MAX_BLOCK_COUNT, MAX_BLOCK_SIZE,
    MAX_DICT_LEN, MAX_GROUP_BLOCKS, MIN_BLOCK_SIZE,
};
use crate::error::{Error, Result};
use crate::pack::ZstdOptions;
use crate::payload::PayloadHasher;

/// Settings of chunked parts.
#[derive(Clone, Debug)]
pub struct ChunkOptions {
    /// Raw bytes per block (a power of two, 4096..=1 MiB); 0: automatic
    /// (see [`super::auto_block_size`]; needs the part's size hint, else 4096).
    pub block_size: u32,
    /// Blocks per group (1..=256).
    pub group_blocks: u32,
    /// Bytes of zstd dictionary to train on the first blocks (0: none).
    pub dict_size: u32,
    /// Where the block frames are spooled while the table is built (None:
    /// the system's temporary directory). The CLI passes the output's directory.
    pub temp_dir: Option<PathBuf>,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            block_size: 0,
            group_blocks: DEFAULT_GROUP_BLOCKS,
            dict_size: 0,
            temp_dir: None,
        }
    }
}

/// Raw bytes read before training a dictionary: the samples.
const DICT_SAMPLE_BYTES: usize = 16 << 20;
/// Raw bytes of blocks in flight between the reader and the workers (at
/// least two blocks per worker).
const IN_FLIGHT_BYTES: usize = 2 << 20;

/// What packing one chunked part produced.
pub(crate) struct Packed {
    pub raw_size: u64,
    pub stored_size: u64,
    pub sha256: [u8; 32],
    pub info: ChunkInfo,
}

fn invalid(msg: String) -> Error {
    Error::InvalidInput(msg)
}

fn io_err(context: &'static str) -> impl Fn(io::Error) -> Error {
    move |e| Error::io(context, e)
}

fn read_block(src: &mut dyn Read, buf: &mut [u8], role: &str) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match src.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::Io {
                    context: "reading a part",
                    message: format!("{role}: {e}"),
                    kind: e.kind(),
                })
            }
        }
    }
    Ok(done)
}

/// The block size to use for a part.
pub(crate) fn block_size_for(opts: &ChunkOptions, size_hint: Option<u64>) -> Result<u32> {
    let b = if opts.block_size == 0 {
        auto_block_size(size_hint.unwrap_or(0))
    } else {
        opts.block_size
    };
    if !b.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&b) {
        return Err(invalid(format!(
            "chunk block size {b} is not a power of two in {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"
        )));
    }
    if !(1..=MAX_GROUP_BLOCKS).contains(&opts.group_blocks) {
        return Err(invalid(format!(
            "chunk group of {} blocks is outside 1..={MAX_GROUP_BLOCKS}",
            opts.group_blocks
        )));
    }
    if opts.dict_size > MAX_DICT_LEN {
        return Err(invalid(format!(
            "chunk dictionary of {} bytes exceeds the limit of {MAX_DICT_LEN}",
            opts.dict_size
        )));
    }
    Ok(b)
}

/// Train a dictionary on the nonzero blocks of `sample`; None when zstd
/// cannot (too few samples): the part is then packed without one.
fn train(sample: &[u8], b: usize, size: u32) -> Option<Vec<u8>> {
    let blocks: Vec<&[u8]> = sample
        .chunks(b)
        .filter(|c| c.iter().any(|&x| x != 0))
        .collect();
    if blocks.len() < 8 {
        return None;
    }
    zstd::dict::from_samples(&blocks, size as usize)
        .ok()
        .filter(|d| !d.is_empty())
}

struct Compressed {
    short: [u8; 4],
    frame: Vec<u8>,
}

fn compress_block(c: &mut zstd::bulk::Compressor<'_>, block: &[u8]) -> io::Result<Compressed> {
    Ok(Compressed {
        short: super::short_hash(block),
        frame: c.compress(block)?,
    })
}

fn new_compressor<'d>(
    level: i32,
    dict: Option<&'d EncoderDictionary<'static>>,
) -> io::Result<zstd::bulk::Compressor<'d>> {
    let mut c = match dict {
        Some(d) => zstd::bulk::Compressor::with_prepared_dictionary(d)?,
        None => zstd::bulk::Compressor::new(level)?,
    };
    c.include_checksum(false)?;
    c.include_contentsize(true)?;
    Ok(c)
}

/// The table being built, and where the frames go.
struct Builder {
    b: usize,
    g: usize,
    lengths: Vec<u32>,
    shorts: Vec<[u8; 4]>,
    groups: Vec<[u8; 32]>,
    group_sha: Sha256,
    group_nonzero: bool,
    frames: BufWriter<std::fs::File>,
    frames_len: u64,
}

impl Builder {
    /// Take block `i` in order (`None`: a zero block).
    fn push(&mut self, block: Option<Compressed>) -> Result<()> {
        match block {
            None => self.lengths.push(0),
            Some(c) => {
                self.frames
                    .write_all(&c.frame)
                    .map_err(io_err("spooling block frames"))?;
                self.frames_len += c.frame.len() as u64;
                self.lengths.push(c.frame.len() as u32);
                self.shorts.push(c.short);
            }
        }
        Ok(())
    }

    /// Feed the raw bytes of the next block to its group's hash (in order).
    fn hash(&mut self, index: u64, data: &[u8], zero: bool) {
        self.group_sha.update(data);
        self.group_nonzero |= !zero;
        if (index + 1) % self.g as u64 == 0 {
            self.end_group();
        }
    }

    fn end_group(&mut self) {
        let sha = std::mem::take(&mut self.group_sha);
        if self.group_nonzero {
            self.groups.push(sha.finalize().into());
        }
        self.group_nonzero = false;
    }
}

/// Pack one part as a chunked payload into `out`.
pub(crate) fn pack_chunked<W: Write>(
    out: &mut W,
    source: &mut dyn Read,
    size_hint: Option<u64>,
    zstd_opts: &ZstdOptions,
    opts: &ChunkOptions,
    role: &str,
) -> Result<Packed> {
    let b = block_size_for(opts, size_hint)? as usize;
    let g = opts.group_blocks as usize;

    // The dictionary is trained on the first blocks, which are then packed
    // from memory before the rest of the stream.
    let mut sample = Vec::new();
    let dict = if opts.dict_size > 0 {
        sample.resize(DICT_SAMPLE_BYTES / b * b, 0);
        let n = read_block(source, &mut sample, role)?;
        sample.truncate(n);
        train(&sample, b, opts.dict_size)
    } else {
        None
    };
    let mut input = io::Cursor::new(std::mem::take(&mut sample)).chain(source);
    let edict = dict
        .as_deref()
        .map(|d| EncoderDictionary::copy(d, zstd_opts.level));

    let spool = match &opts.temp_dir {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
    .map_err(io_err("creating the temporary file for block frames"))?;
    let mut builder = Builder {
        b,
        g,
        lengths: Vec::new(),
        shorts: Vec::new(),
        groups: Vec::new(),
        group_sha: Sha256::new(),
        group_nonzero: false,
        frames: BufWriter::with_capacity(1 << 20, spool),
        frames_len: 0,
    };
    let mut hasher = PayloadHasher::new();

    let workers = zstd_opts.workers as usize;
    if workers == 0 {
        let mut c = new_compressor(zstd_opts.level, edict.as_ref())
            .map_err(io_err("creating the zstd compressor"))?;
        let mut buf = vec![0u8; b];
        let mut index = 0u64;
        loop {
            let n = read_block(&mut input, &mut buf, role)?;
            if n == 0 {
                break;
            }
            check_count(index, b)?;
            let data = &buf[..n];
            hasher.update(data);
            let zero = data.iter().all(|&x| x == 0);
            builder.hash(index, data, zero);
            let block = if zero {
                None
            } else {
                Some(compress_block(&mut c, data).map_err(io_err("compressing a block"))?)
            };
            builder.push(block)?;
            index += 1;
            if n < b {
                break;
            }
        }
    } else {
        parallel(
            &mut input,
            &mut builder,
            &mut hasher,
            workers,
            zstd_opts.level,
            edict.as_ref(),
            role,
        )?;
    }
    if builder.lengths.len() % g != 0 {
        builder.end_group();
    }
    finish(
        out,
        builder,
        hasher,
        dict.unwrap_or_default(),
        zstd_opts.level,
        role,
    )
}

fn check_count(index: u64, b: usize) -> Result<()> {
    if index >= MAX_BLOCK_COUNT as u64 {
        return Err(invalid(format!(
            "more than {MAX_BLOCK_COUNT} blocks of {b} bytes: choose a larger chunk block size"
        )));
    }
    Ok(())
}

fn parallel(
    input: &mut dyn Read,
    builder: &mut Builder,
    hasher: &mut PayloadHasher,
    workers: usize,
    level: i32,
    edict: Option<&EncoderDictionary<'static>>,
    role: &str,
) -> Result<()> {
    let b = builder.b;
    let max_in_flight = (IN_FLIGHT_BYTES / b).max(2 * workers);
    let (job_tx, job_rx) = sync_channel::<(u64, Vec<u8>)>(max_in_flight);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = channel::<(u64, io::Result<Compressed>, Vec<u8>)>();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let job_rx = &job_rx;
            let done_tx = done_tx.clone();
            s.spawn(move || {
                let mut c = match new_compressor(level, edict) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = done_tx.send((u64::MAX, Err(e), Vec::new()));
                        return;
                    }
                };
                loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((i, data))) = job else { return };
                    let r = compress_block(&mut c, &data);
                    if done_tx.send((i, r, data)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let result = (|| {
            let mut pending: BTreeMap<u64, Option<Compressed>> = BTreeMap::new();
            let mut next_out = 0u64;
            let mut index = 0u64;
            let mut in_flight = 0usize;
            let mut spare: Vec<Vec<u8>> = Vec::new();
            let mut ended = false;
            let receive = |pending: &mut BTreeMap<u64, Option<Compressed>>,
                           spare: &mut Vec<Vec<u8>>|
             -> Result<()> {
                let (i, r, buf) = done_rx
                    .recv()
                    .map_err(|_| invalid("the compression workers stopped".into()))?;
                let c = r.map_err(io_err("compressing a block"))?;
                pending.insert(i, Some(c));
                spare.push(buf);
                Ok(())
            };
            while !ended || in_flight > 0 {
                if !ended && in_flight < max_in_flight {
                    let mut buf = spare.pop().unwrap_or_default();
                    buf.resize(b, 0);
                    let n = read_block(input, &mut buf, role)?;
                    if n == 0 {
                        ended = true;
                    } else {
                        check_count(index, b)?;
                        buf.truncate(n);
                        hasher.update(&buf);
                        let zero = buf.iter().all(|&x| x == 0);
                        builder.hash(index, &buf, zero);
                        if zero {
                            pending.insert(index, None);
                            spare.push(buf);
                        } else {
                            job_tx
                                .send((index, buf))
                                .map_err(|_| invalid("the compression workers stopped".into()))?;
                            in_flight += 1;
                        }
                        index += 1;
                        ended = n < b;
                    }
                } else {
                    receive(&mut pending, &mut spare)?;
                    in_flight -= 1;
                }
                while let Some(block) = pending.remove(&next_out) {
                    builder.push(block)?;
                    next_out += 1;
                }
            }
            Ok(())
        })();
        drop(job_tx);
        result
    })
}

fn finish<W: Write>(
    out: &mut W,
    builder: Builder,
    hasher: PayloadHasher,
    dict: Vec<u8>,
    level: i32,
    role: &str,
) -> Result<Packed> {
    let Builder {
        b,
        g,
        lengths,
        shorts,
        groups,
        frames,
        frames_len,
        ..
    } = builder;
    let mut raw =
        Vec::with_capacity(dict.len() + 4 * lengths.len() + 4 * shorts.len() + 32 * groups.len());
    raw.extend_from_slice(&dict);
    for l in &lengths {
        raw.extend_from_slice(&l.to_le_bytes());
    }
    for s in &shorts {
        raw.extend_from_slice(s);
    }
    for h in &groups {
        raw.extend_from_slice(h);
    }
    let table_frame =
        zstd::bulk::compress(&raw, level).map_err(io_err("compressing the chunk table"))?;
    out.write_all(&table_frame)
        .map_err(io_err("writing the chunk table"))?;
    let mut spool = frames
        .into_inner()
        .map_err(|e| Error::io("spooling block frames", e.into_error()))?;
    spool
        .seek(SeekFrom::Start(0))
        .map_err(io_err("rewinding the spooled frames"))?;
    let copied = io::copy(&mut spool, out).map_err(io_err("writing the block frames"))?;
    if copied != frames_len {
        return Err(Error::io(
            "copying the spooled frames",
            io::Error::other(format!("{role}: {copied} bytes of {frames_len}")),
        ));
    }
    let raw_size = hasher.len();
    let info = ChunkInfo {
        block_size: b as u32,
        group_blocks: g as u32,
        block_count: lengths.len() as u32,
        dict_len: dict.len() as u32,
        table_stored_len: table_frame.len() as u64,
        table_raw_len: raw.len() as u64,
        table_sha256: Sha256::digest(&raw).into(),
    };
    Ok(Packed {
        raw_size,
        stored_size: table_frame.len() as u64 + frames_len,
        sha256: hasher.digest(),
        info,
    })
}
