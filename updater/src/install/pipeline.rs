//! The streaming pipeline: source bytes -> (decompress + SHA-256) -> disk.
//!
//! Three stages overlap, joined by bounded channels so memory stays bounded
//! whatever the image size:
//!
//! 1. a reader thread pulls each payload's stored bytes from the source in
//!    `CHUNK`-sized buffers;
//! 2. a decode thread decompresses (zstd) or passes through, hashes the raw
//!    bytes, checks the raw size, and fills `CHUNK`-sized output buffers;
//! 3. the calling thread writes them with `write_all_at` at the partition's
//!    byte offset on the whole disk (the device is not `Send`, so it stays
//!    on the caller's thread).
//!
//! Buffers travel back through return channels and are reused, so after the
//! first few chunks nothing is allocated. A hash or size mismatch, a source
//! error or a write error stops all three stages and is returned; nothing
//! here activates anything, the caller does that only on `Ok`.
//!
//! [`readback`] re-reads what was written, bypassing the page cache
//! (`drop_cache` first), and re-hashes it: reading on the caller's thread,
//! hashing on another.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use sha2::{Digest, Sha256};

use super::dev::BlockDevice;
use crate::progress::Progress;

/// Size of one pipeline buffer.
pub const CHUNK: usize = 1 << 20;
/// Buffers in flight per channel.
const DEPTH: usize = 4;
/// Read size and depth of the read-back (see [`hash_region`]).
const READBACK_CHUNK: usize = 4 << 20;
const READBACK_DEPTH: usize = 2;
/// Room of a return channel: more than can ever be in flight, so a spent
/// buffer is always kept for reuse (no allocation churn, no page faults)
/// while the number of buffers stays bounded by the channels' depth.
const POOL: usize = 2 * DEPTH + 4;
pub use image_format::Compression;

/// One payload to write.
#[derive(Debug, Clone)]
pub struct Job {
    pub role: String,
    pub compression: Compression,
    /// Bytes of the payload in the image (compressed size).
    pub stored_size: u64,
    /// Bytes once decompressed: what lands on the partition.
    pub raw_size: u64,
    /// SHA-256 of the raw bytes, from the verified header.
    pub sha256: [u8; 32],
    /// Byte offset on the whole disk where the raw bytes go.
    pub dest_offset: u64,
    /// Bytes of the source to discard before this payload's stored bytes
    /// (alignment padding of the image format).
    pub skip_before: u64,
    /// A chunked payload's header entry (compression `chunked`): the
    /// stream decodes its table, then its frames group by group.
    pub chunked: Option<image_format::PayloadInfo>,
}

/// Why the pipeline stopped.
#[derive(Debug)]
pub enum PipelineError {
    Source {
        role: String,
        err: io::Error,
    },
    /// The source ended before the payload's signed size: the image is
    /// truncated (a refusal, like `slotctl image verify`'s).
    Truncated {
        role: String,
        missing: u64,
    },
    Decode {
        role: String,
        err: io::Error,
    },
    TooLong {
        role: String,
        raw_size: u64,
    },
    TooShort {
        role: String,
        raw_size: u64,
        got: u64,
    },
    HashMismatch {
        role: String,
        phase: &'static str,
    },
    Write {
        role: String,
        offset: u64,
        err: io::Error,
    },
    Read {
        role: String,
        offset: u64,
        err: io::Error,
    },
}

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineError::Source { role, err } => {
                write!(f, "reading payload {role} from the source: {err}")
            }
            PipelineError::Truncated { role, missing } => write!(
                f,
                "image truncated: payload {role} ends early: the image ends {missing} bytes \
                 before the end of this payload"
            ),
            PipelineError::Decode { role, err } => {
                write!(f, "decompressing payload {role}: {err}")
            }
            PipelineError::TooLong { role, raw_size } => write!(
                f,
                "payload {role} decompresses to more than its declared {raw_size} bytes"
            ),
            PipelineError::TooShort {
                role,
                raw_size,
                got,
            } => write!(
                f,
                "payload {role} decompresses to {got} bytes, {raw_size} declared"
            ),
            PipelineError::HashMismatch { role, phase } => write!(
                f,
                "payload {role}: SHA-256 mismatch {phase}; the slot stays invalid"
            ),
            PipelineError::Write { role, offset, err } => {
                write!(f, "writing payload {role} at disk byte {offset}: {err}")
            }
            PipelineError::Read { role, offset, err } => {
                write!(
                    f,
                    "reading back payload {role} at disk byte {offset}: {err}"
                )
            }
        }
    }
}

impl std::error::Error for PipelineError {}

impl PipelineError {
    /// The image's bytes disagree with its signed header (exit code 3), as
    /// opposed to an I/O failure of the source or the disk.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PipelineError::TooLong { .. }
                | PipelineError::Truncated { .. }
                | PipelineError::TooShort { .. }
                | PipelineError::HashMismatch { .. }
                | PipelineError::Decode { .. }
        )
    }
}

/// Messages from the decode stage to the writer.
enum Out {
    Data(Vec<u8>),
    /// End of one payload, hash checked.
    Done,
}

/// Messages from the reader stage to the decoder.
enum In {
    Data(Vec<u8>),
    End,
}

/// A `Read` over the chunks of one payload arriving on a channel; hands
/// spent buffers back to the reader.
struct ChannelReader<'a> {
    rx: &'a Receiver<In>,
    back: &'a SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            let spent = std::mem::take(&mut self.cur);
            if spent.capacity() > 0 {
                let _ = self.back.try_send(spent);
            }
            self.pos = 0;
            match self.rx.recv() {
                Ok(In::Data(v)) => self.cur = v,
                Ok(In::End) => self.ended = true,
                // The reader stopped: it reports its own error.
                Err(_) => return Err(io::Error::other("source stage stopped")),
            }
        }
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Stage 1: stored bytes of each payload, in order.
fn reader_stage(
    src: &mut (dyn Read + Send),
    jobs: &[Job],
    tx: SyncSender<In>,
    pool: Receiver<Vec<u8>>,
) -> Result<(), PipelineError> {
    let mut scratch = Vec::new();
    for job in jobs {
        let source_err = |err| PipelineError::Source {
            role: job.role.clone(),
            err,
        };
        if job.skip_before > 0 {
            scratch.resize(CHUNK.min(job.skip_before as usize), 0);
            let mut left = job.skip_before;
            while left > 0 {
                let n = (scratch.len() as u64).min(left) as usize;
                let got = read_full(src, &mut scratch[..n]).map_err(source_err)?;
                if got < n {
                    return Err(PipelineError::Truncated {
                        role: job.role.clone(),
                        missing: left - got as u64 + job.stored_size,
                    });
                }
                left -= n as u64;
            }
        }
        let mut left = job.stored_size;
        while left > 0 {
            let mut buf = pool.try_recv().unwrap_or_default();
            let n = (CHUNK as u64).min(left) as usize;
            buf.resize(n, 0);
            let got = read_full(src, &mut buf).map_err(source_err)?;
            if got < n {
                return Err(PipelineError::Truncated {
                    role: job.role.clone(),
                    missing: left - got as u64,
                });
            }
            left -= n as u64;
            if tx.send(In::Data(buf)).is_err() {
                return Ok(()); // downstream stopped and reports why
            }
        }
        if tx.send(In::End).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Stage 2 for an uncompressed payload: hash the source buffers and hand
/// the same buffers to the writer (no copy); the writer returns them to the
/// reader's pool.
fn pass_through(job: &Job, rx: &Receiver<In>, tx: &SyncSender<Out>) -> Result<(), PipelineError> {
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    loop {
        match rx.recv() {
            Ok(In::Data(buf)) => {
                total += buf.len() as u64;
                if total > job.raw_size {
                    return Err(PipelineError::TooLong {
                        role: job.role.clone(),
                        raw_size: job.raw_size,
                    });
                }
                hasher.update(&buf);
                if tx.send(Out::Data(buf)).is_err() {
                    return Ok(());
                }
            }
            Ok(In::End) => break,
            // The reader stopped: it reports its own error.
            Err(_) => {
                return Err(PipelineError::Source {
                    role: job.role.clone(),
                    err: io::Error::other("source stage stopped"),
                })
            }
        }
    }
    check_end(job, total, hasher)?;
    let _ = tx.send(Out::Done);
    Ok(())
}

/// The end of a payload's stream: every raw byte arrived and they hash to
/// the signed SHA-256 (too many bytes are refused as they arrive).
fn check_end(job: &Job, total: u64, hasher: Sha256) -> Result<(), PipelineError> {
    if total < job.raw_size {
        return Err(PipelineError::TooShort {
            role: job.role.clone(),
            raw_size: job.raw_size,
            got: total,
        });
    }
    if hasher.finalize().as_slice() != job.sha256 {
        return Err(PipelineError::HashMismatch {
            role: job.role.clone(),
            phase: "while writing",
        });
    }
    Ok(())
}

/// Stage 2: decompress, hash, check sizes.
fn decode_stage(
    jobs: &[Job],
    rx: Receiver<In>,
    back: SyncSender<Vec<u8>>,
    tx: SyncSender<Out>,
    pool: Receiver<Vec<u8>>,
) -> Result<(), PipelineError> {
    for job in jobs {
        if job.compression == Compression::None {
            pass_through(job, &rx, &tx)?;
            continue;
        }
        let mut input = ChannelReader {
            rx: &rx,
            back: &back,
            cur: Vec::new(),
            pos: 0,
            ended: false,
        };
        // image-format's decoder: zstd with the window bounded
        // (image_format::ZSTD_WINDOW_LOG_MAX), so memory stays bounded; a
        // chunked payload's table and frames, each group checked against
        // the table before its bytes are handed on.
        let dec = match &job.chunked {
            Some(info) => image_format::payload_decompressor(info, &mut input),
            None => image_format::decompressor(job.compression, &mut input),
        };
        let mut dec = dec.map_err(|e| PipelineError::Decode {
            role: job.role.clone(),
            err: e.into(),
        })?;
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        loop {
            let mut buf = pool.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let got = read_full(&mut dec, &mut buf).map_err(|err| PipelineError::Decode {
                role: job.role.clone(),
                err,
            })?;
            if got == 0 {
                break;
            }
            buf.truncate(got);
            total += got as u64;
            if total > job.raw_size {
                return Err(PipelineError::TooLong {
                    role: job.role.clone(),
                    raw_size: job.raw_size,
                });
            }
            hasher.update(&buf);
            if tx.send(Out::Data(buf)).is_err() {
                return Ok(());
            }
        }
        drop(dec);
        // The decoder may stop at the end of the zstd frame; the stored
        // bytes after it must be consumed (and there must be none).
        let mut rest = [0u8; 1];
        if read_full(&mut input, &mut rest).map_err(|err| PipelineError::Source {
            role: job.role.clone(),
            err,
        })? != 0
        {
            return Err(PipelineError::Decode {
                role: job.role.clone(),
                err: io::Error::other("trailing bytes after the compressed stream"),
            });
        }
        check_end(job, total, hasher)?;
        if tx.send(Out::Done).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Stream every job's payload from `src` onto `dev`. Does not flush.
pub fn write_payloads(
    src: &mut (dyn Read + Send),
    jobs: &[Job],
    dev: &mut dyn BlockDevice,
    progress: &Progress,
) -> Result<(), PipelineError> {
    let (in_tx, in_rx) = sync_channel::<In>(DEPTH);
    let (in_back_tx, in_back_rx) = sync_channel::<Vec<u8>>(POOL);
    let (out_tx, out_rx) = sync_channel::<Out>(DEPTH);
    let (out_back_tx, out_back_rx) = sync_channel::<Vec<u8>>(POOL);

    std::thread::scope(|s| {
        let reader = s.spawn(move || reader_stage(src, jobs, in_tx, in_back_rx));
        let reader_pool = in_back_tx.clone();
        let decoder = s.spawn(move || decode_stage(jobs, in_rx, in_back_tx, out_tx, out_back_rx));

        let mut write_result = Ok(());
        'jobs: for job in jobs {
            progress.phase("write", &job.role, job.raw_size);
            let mut off = job.dest_offset;
            loop {
                match out_rx.recv() {
                    Ok(Out::Data(buf)) => {
                        if let Err(err) = dev.write_all_at(off, &buf) {
                            write_result = Err(PipelineError::Write {
                                role: job.role.clone(),
                                offset: off,
                                err,
                            });
                            break 'jobs;
                        }
                        off += buf.len() as u64;
                        progress.update(off - job.dest_offset);
                        // Uncompressed payloads pass the reader's buffers
                        // through: give them back to the reader.
                        let pool = if job.compression == Compression::None {
                            &reader_pool
                        } else {
                            &out_back_tx
                        };
                        let _ = pool.try_send(buf);
                    }
                    Ok(Out::Done) => break,
                    // The decoder stopped early: it has the error.
                    Err(_) => break 'jobs,
                }
            }
            progress.finish_phase();
        }
        // Unblock the upstream stages if we stopped early.
        drop(out_rx);
        let dec_result = decoder.join().expect("decode thread panicked");
        let read_result = reader.join().expect("reader thread panicked");
        // Report the root cause: the earliest stage that failed on its own.
        read_result.and(dec_result).and(write_result)
    })
}

/// Re-read each job's `raw_size` bytes from `dev`, from the medium, and check
/// the hash.
pub fn readback(
    jobs: &[Job],
    dev: &mut dyn BlockDevice,
    progress: &Progress,
) -> Result<(), PipelineError> {
    for job in jobs {
        dev.drop_cache(job.dest_offset, job.raw_size)
            .map_err(|err| PipelineError::Read {
                role: job.role.clone(),
                offset: job.dest_offset,
                err,
            })?;
    }
    for job in jobs {
        progress.phase("readback", &job.role, job.raw_size);
        let ok = hash_region(dev, job.dest_offset, job.raw_size, |done| {
            progress.update(done)
        })
        .map_err(|(offset, err)| PipelineError::Read {
            role: job.role.clone(),
            offset,
            err,
        })?;
        progress.finish_phase();
        if ok != job.sha256 {
            return Err(PipelineError::HashMismatch {
                role: job.role.clone(),
                phase: "on read-back",
            });
        }
    }
    Ok(())
}

/// SHA-256 of `len` bytes of `dev` from `off`: reading here, hashing on
/// another thread. On error, the offset that failed.
pub fn hash_region(
    dev: &mut dyn BlockDevice,
    off: u64,
    len: u64,
    mut on_progress: impl FnMut(u64),
) -> Result<[u8; 32], (u64, io::Error)> {
    // Reads are synchronous here (the device has no read-ahead hint), so
    // they are larger than the write pipeline's: a few big requests keep the
    // disk busy while the other thread hashes. At most READBACK_DEPTH + 2
    // buffers exist.
    let (tx, rx) = sync_channel::<Vec<u8>>(READBACK_DEPTH);
    let (back_tx, back_rx) = sync_channel::<Vec<u8>>(READBACK_DEPTH + 4);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut h = Sha256::new();
            for buf in rx {
                h.update(&buf);
                let _ = back_tx.try_send(buf);
            }
            let out: [u8; 32] = h.finalize().into();
            out
        });
        let mut pos = 0u64;
        let mut result = Ok(());
        while pos < len {
            let n = (READBACK_CHUNK as u64).min(len - pos) as usize;
            let mut buf = back_rx.try_recv().unwrap_or_default();
            buf.resize(n, 0);
            if let Err(e) = dev.read_exact_at(off + pos, &mut buf) {
                result = Err((off + pos, e));
                break;
            }
            pos += n as u64;
            if tx.send(buf).is_err() {
                break;
            }
            on_progress(pos);
        }
        drop(tx);
        let digest = hasher.join().expect("hash thread panicked");
        result.map(|()| digest)
    })
}

#[cfg(test)]
mod tests;
