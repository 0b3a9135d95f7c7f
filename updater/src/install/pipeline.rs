//! The streaming pipeline: source bytes -> decompress -> SHA-256 -> disk.
//!
//! Four stages overlap, joined by bounded channels so memory stays bounded
//! whatever the image size:
//!
//! 1. a reader thread pulls each payload's stored bytes from the source
//!    (a zstd payload of independent frames, what `image pack` writes: one
//!    whole frame per buffer, pipeline/frames/walk.rs);
//! 2. a decode thread decompresses (zstd, or a chunked payload's frames) or
//!    passes through, checks the raw size, and fills `CHUNK`-sized output
//!    buffers; the reader's frames are dispatched from here to two more
//!    threads that decode them, their buffers put back in order and sent
//!    to the writer on their own channel (pipeline/frames.rs);
//! 3. a hash thread computes the raw bytes' SHA-256 and checks it at each
//!    payload's end (decompression and hashing on two cores: the slower of
//!    the two, not their sum, bounds the install);
//! 4. the calling thread writes them with `write_all_at` at the partition's
//!    byte offset on the whole disk (the device is not `Send`, so it stays
//!    on the caller's thread); a megabyte of zeros goes as the device's
//!    own zeroing instead (pipeline/zeroes.rs).
//!
//! Every buffer is an [`AlignedBuf`] of `CHUNK` bytes, so that a
//! [`boot_flags::FileDevice`] writes it with direct I/O (boot-flags'
//! direct.rs): the disk is busy from the first megabyte on, instead of the
//! page cache filling up and one `fsync` at the end writing it all. Buffers
//! travel back through return channels and are reused, so after the first
//! few chunks nothing is allocated. A hash or size mismatch, a source error
//! or a write error stops all stages and is returned; nothing here
//! activates anything, the caller does that only on `Ok`.
//!
//! [`readback`] re-reads what was written, bypassing the page cache (direct
//! reads of aligned buffers; `drop_cache` first for what goes through the
//! cache), and re-hashes it: reading on the caller's thread, hashing on
//! another. With a [`ReadAhead`] (pipeline/ahead.rs), most of that reading
//! happens during the stream, each megabyte read back from the disk once
//! its direct write returned; [`readback_after`] reads only the rest.

use std::io::{self, Read};
use std::sync::mpsc::sync_channel;

use boot_flags::AlignedBuf;
use sha2::{Digest, Sha256};

use super::dev::BlockDevice;
use crate::progress::Progress;

mod ahead;
mod frames;
mod stages;
mod timing;
mod zeroes;
pub use ahead::ReadAhead;
use stages::{decode_stage, hash_stage, reader_stage, take, Msg};
use timing::StageClock;
pub use timing::Timing;

/// Size of one raw-bytes buffer: one write, one read of the read-back.
pub const CHUNK: usize = 1 << 20;
/// Size of one stored-bytes buffer of a compressed payload.
const IN_CHUNK: usize = 256 << 10;
/// Buffers queued per channel: none (rendezvous), so each stage holds at
/// most the buffer it works on and the one it hands over. The slowest
/// stage (the hash, docs/performance.md) always finds the next buffer
/// waiting in its neighbour's hand; a queue would only add memory.
const DEPTH: usize = 0;
/// Read-back: buffers queued for the hash thread.
const READBACK_DEPTH: usize = 2;
/// Room of a return channel: more than can ever be in flight, so a spent
/// buffer is always kept for reuse (no allocation churn, no page faults)
/// while the number of buffers stays bounded by the channels' depth.
const POOL: usize = 3 * DEPTH + frames::IN_FLIGHT + 4;
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
    /// SHA-256 of the stored bytes, from the verified header, for a zstd
    /// payload whose entry carries it: the stream then checks the stored
    /// bytes (about half as many to hash) instead of the raw ones, and the
    /// read-back checks the raw bytes on the disk against `sha256`.
    pub stored_sha256: Option<[u8; 32]>,
    /// Byte offset on the whole disk where the raw bytes go.
    pub dest_offset: u64,
    /// Bytes of the source to discard before this payload's stored bytes
    /// (alignment padding of the image format).
    pub skip_before: u64,
    /// A chunked payload's header entry (compression `chunked`): the
    /// stream decodes its table, then its frames group by group.
    pub chunked: Option<image_format::PayloadInfo>,
    /// Which pass checks the payload against its signed hash.
    pub check: Check,
}

/// Which pass checks a payload against its signed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The stream: it hashes the stored bytes (a signed `stored_sha256`)
    /// or the raw ones, and refuses the payload at its end. The only check
    /// of an install with `--no-readback`.
    Stream,
    /// The read-back alone ([`readback_after`], which the caller must run
    /// before anything relies on the payload): it hashes the raw bytes as
    /// the disk holds them against `sha256`, which checks the image and
    /// the disk in one pass, so the stream hashes nothing. A default
    /// install: a second SHA-256 of every payload in the stream would only
    /// find earlier what the read-back finds anyway, and it was a third of
    /// the install's CPU time (docs/performance.md). A chunked payload's
    /// groups are checked against its signed table as they are decoded,
    /// whatever this says.
    ReadBack,
}

impl Job {
    /// A new hasher for the stored bytes, if the stream checks them
    /// (`stored_sha256` signed, `Check::Stream`).
    fn stored_hasher(&self) -> Option<Sha256> {
        (self.check == Check::Stream && self.stored_sha256.is_some()).then(Sha256::new)
    }

    /// A new hasher for the raw bytes, if the stream checks them (no
    /// signed `stored_sha256`, `Check::Stream`).
    fn raw_hasher(&self) -> Option<Sha256> {
        (self.check == Check::Stream && self.stored_sha256.is_none()).then(Sha256::new)
    }
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

/// Stream every job's payload from `src` onto `dev`. Does not flush.
/// Sets `timing`'s stream fields.
pub fn write_payloads(
    src: &mut (dyn Read + Send),
    jobs: &[Job],
    dev: &mut dyn BlockDevice,
    progress: &Progress,
    timing: &mut Timing,
) -> Result<(), PipelineError> {
    let none = ReadAhead::none();
    write_payloads_reading(src, jobs, dev, progress, timing, &none)
}

/// [`write_payloads`], telling `ahead` of every write that returned, so
/// that it reads it back while the next ones are written (ahead.rs).
pub fn write_payloads_reading(
    src: &mut (dyn Read + Send),
    jobs: &[Job],
    dev: &mut dyn BlockDevice,
    progress: &Progress,
    timing: &mut Timing,
    ahead: &ReadAhead,
) -> Result<(), PipelineError> {
    let start = std::time::Instant::now();
    let (in_tx, in_rx) = sync_channel::<Msg>(DEPTH);
    let (in_back_tx, in_back_rx) = sync_channel::<AlignedBuf>(POOL);
    let (dec_tx, dec_rx) = sync_channel::<Msg>(DEPTH);
    let (out_tx, out_rx) = sync_channel::<Msg>(DEPTH);
    let (out_back_tx, out_back_rx) = sync_channel::<AlignedBuf>(POOL);
    let (frame_back_tx, frame_back_rx) = sync_channel::<AlignedBuf>(frames::FRAME_POOL);

    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut c = StageClock::new();
            let r = reader_stage(src, jobs, in_tx, in_back_rx, frame_back_rx, &mut c);
            (r, c.busy())
        });
        let reader_pool = in_back_tx.clone();
        let decoder = s.spawn(move || {
            let mut c = StageClock::new();
            let r = decode_stage(
                jobs,
                in_rx,
                in_back_tx,
                frame_back_tx,
                dec_tx,
                out_back_rx,
                &mut c,
            );
            (r, c.busy())
        });
        let hasher = s.spawn(move || {
            let mut c = StageClock::new();
            (hash_stage(jobs, dec_rx, out_tx, &mut c), c.busy())
        });
        let mut clock = StageClock::new();

        let mut write_result = Ok(());
        'jobs: for (index, job) in jobs.iter().enumerate() {
            progress.phase("write", &job.role, job.raw_size);
            let mut off = job.dest_offset;
            // A payload of frames comes on its own channel (`Msg::Direct`).
            let mut direct = None;
            loop {
                let msg = match &direct {
                    Some(rx) => clock.recv(rx),
                    None => clock.recv(&out_rx),
                };
                match msg {
                    Ok(Msg::Direct(rx)) => direct = Some(rx),
                    Ok(Msg::Data(buf)) => {
                        match zeroes::write_chunk(dev, off, &buf) {
                            Ok(zeroed) => timing.zeroed += u64::from(zeroed) * buf.len() as u64,
                            Err(err) => {
                                write_result = Err(PipelineError::Write {
                                    role: job.role.clone(),
                                    offset: off,
                                    err,
                                });
                                break 'jobs;
                            }
                        }
                        ahead.written(index, off, buf.len());
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
                    Ok(Msg::End(_)) => break,
                    // An upstream stage stopped early: it has the error.
                    // (Frames stop at the decode stage.)
                    Ok(Msg::Frame(_)) | Err(_) => break 'jobs,
                }
            }
            progress.finish_phase();
        }
        timing.write = clock.busy();
        // Unblock the upstream stages if we stopped early.
        drop(out_rx);
        let (hash_result, hash_busy) = hasher.join().expect("hash thread panicked");
        let (dec_result, dec_busy) = decoder.join().expect("decode thread panicked");
        let (read_result, read_busy) = reader.join().expect("reader thread panicked");
        timing.stream = start.elapsed();
        (timing.read, timing.decode, timing.hash) = (read_busy, dec_busy, hash_busy);
        // Report the root cause: the earliest stage that failed on its own.
        read_result
            .and(dec_result)
            .and(hash_result)
            .and(write_result)
    })
}

/// Re-read each job's `raw_size` bytes from `dev`, from the medium, and check
/// the hash. Sets `timing`'s read-back fields.
pub fn readback(
    jobs: &[Job],
    dev: &mut dyn BlockDevice,
    progress: &Progress,
    timing: &mut Timing,
) -> Result<(), PipelineError> {
    readback_after(jobs, dev, progress, timing, ReadAhead::none())
}

/// [`readback`] of what `ahead` did not read yet: each job's hash goes on
/// from where its read-ahead stopped.
pub fn readback_after(
    jobs: &[Job],
    dev: &mut dyn BlockDevice,
    progress: &Progress,
    timing: &mut Timing,
    ahead: ReadAhead,
) -> Result<(), PipelineError> {
    let start = std::time::Instant::now();
    let done = ahead.finish();
    timing.readahead_read += done.read;
    timing.readahead_hash += done.hash;
    // Each job's hash so far and the bytes it covers: what its read-ahead
    // read, or nothing.
    let starts: Vec<(Sha256, u64)> = jobs
        .iter()
        .map(|job| {
            let p = done
                .partials
                .iter()
                .find(|p| p.dest_offset == job.dest_offset);
            p.filter(|p| p.done <= job.raw_size)
                .map_or((Sha256::new(), 0), |p| (p.hasher.clone(), p.done))
        })
        .collect();
    for (job, (_, from)) in jobs.iter().zip(&starts) {
        // Nothing left to read: no cache to drop (a length of 0 would
        // mean "to the end of the disk").
        if *from == job.raw_size {
            continue;
        }
        dev.drop_cache(job.dest_offset + from, job.raw_size - from)
            .map_err(|err| PipelineError::Read {
                role: job.role.clone(),
                offset: job.dest_offset,
                err,
            })?;
    }
    for (job, (hasher, from)) in jobs.iter().zip(starts) {
        progress.phase("readback", &job.role, job.raw_size);
        // What the read-ahead read counts as done (all of it, for a payload
        // it read whole: the phase still ends at its total).
        progress.update(from);
        let at = job.dest_offset + from;
        let r = hash_region_from(dev, at, job.raw_size - from, hasher, |done| {
            progress.update(from + done)
        })
        .map_err(|(offset, err)| PipelineError::Read {
            role: job.role.clone(),
            offset,
            err,
        })?;
        progress.finish_phase();
        timing.readback_read += r.read;
        timing.readback_hash += r.hash;
        if r.digest != job.sha256 {
            return Err(PipelineError::HashMismatch {
                role: job.role.clone(),
                phase: "on read-back: the bytes on the disk are not the signed ones (a corrupt \
                        or tampered image, or a disk that did not keep what was written)",
            });
        }
    }
    timing.readback = start.elapsed();
    Ok(())
}

/// What [`hash_region`] found, and where its time went.
#[derive(Debug, Clone, Copy)]
pub struct Rehash {
    pub digest: [u8; 32],
    /// Time in the device's reads.
    pub read: std::time::Duration,
    /// Busy time of the hashing thread.
    pub hash: std::time::Duration,
}

/// SHA-256 of `len` bytes of `dev` from `off`: reading here (aligned
/// buffers, so a `FileDevice` reads them directly from the disk), hashing
/// on another thread. On error, the offset that failed.
pub fn hash_region(
    dev: &mut dyn BlockDevice,
    off: u64,
    len: u64,
    on_progress: impl FnMut(u64),
) -> Result<Rehash, (u64, io::Error)> {
    hash_region_from(dev, off, len, Sha256::new(), on_progress)
}

/// [`hash_region`], going on from `h` (the hash of what comes before).
fn hash_region_from(
    dev: &mut dyn BlockDevice,
    off: u64,
    len: u64,
    mut h: Sha256,
    mut on_progress: impl FnMut(u64),
) -> Result<Rehash, (u64, io::Error)> {
    // Reads are synchronous: while one is on the disk, the other thread
    // hashes the one before. At most READBACK_DEPTH + 2 buffers exist.
    let (tx, rx) = sync_channel::<AlignedBuf>(READBACK_DEPTH);
    let (back_tx, back_rx) = sync_channel::<AlignedBuf>(READBACK_DEPTH + 4);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut c = StageClock::new();
            while let Ok(buf) = c.recv(&rx) {
                h.update(&buf[..]);
                let _ = back_tx.try_send(buf);
            }
            let out: [u8; 32] = h.finalize().into();
            (out, c.busy())
        });
        let mut pos = 0u64;
        let mut result = Ok(());
        let mut read = std::time::Duration::ZERO;
        while pos < len {
            let n = (CHUNK as u64).min(len - pos) as usize;
            let mut buf = take(&back_rx);
            buf.set_len(n);
            let t = std::time::Instant::now();
            let r = dev.read_exact_at(off + pos, &mut buf);
            read += t.elapsed();
            if let Err(e) = r {
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
        let (digest, hash) = hasher.join().expect("hash thread panicked");
        result.map(|()| Rehash { digest, read, hash })
    })
}

/// The source must be at its end: one more read returns 0 bytes.
pub(crate) fn check_end(src: &mut dyn std::io::Read, end: u64, name: &str) -> anyhow::Result<()> {
    let mut byte = [0u8; 1];
    loop {
        return match src.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(super::policy::image_error(
                image_format::Error::TrailingData { offset: end },
                name,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading image {name}"))),
        };
    }
}

#[cfg(test)]
mod tests;
