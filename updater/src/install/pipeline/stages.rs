//! The pipeline's three upstream stages, each on its own thread: read the
//! stored bytes, decompress them, hash them. The writer (the caller's
//! thread) is in pipeline.rs.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use boot_flags::AlignedBuf;
use sha2::{Digest, Sha256};

use super::frames::{self, FromReader, Walked};
use super::timing::StageClock;
use super::{Check, Compression, Job, PipelineError, CHUNK, IN_CHUNK};

/// Messages between stages.
pub(super) enum Msg {
    Data(AlignedBuf),
    /// End of one payload, with the SHA-256 of its stored bytes when the
    /// reader hashed them (`Job::stored_sha256`); from the hash stage: the
    /// payload's hash checked.
    End(Option<[u8; 32]>),
    /// From the decode stage through the hash stage to the writer: this
    /// payload's buffers come on this channel instead, straight from the
    /// two-thread decoder (frames.rs), which has checked its hash when it
    /// sends their `End`. One hop and one buffer fewer than through the
    /// hash stage.
    Direct(Receiver<Msg>),
    /// From the reader to the decode stage: one whole zstd frame of a
    /// payload of frames (frames/walk.rs), for a decode worker.
    Frame(AlignedBuf),
}

/// A buffer from a pool, or a new one when the pool is empty (only while
/// the pipeline fills up: spent buffers come back).
pub(super) fn take(pool: &Receiver<AlignedBuf>) -> AlignedBuf {
    pool.try_recv().unwrap_or_else(|_| AlignedBuf::new(CHUNK))
}

/// [`take`] from a pool shared by several threads (the decode workers).
pub(super) fn take_shared(pool: &Mutex<Receiver<AlignedBuf>>) -> AlignedBuf {
    let spent = pool.lock().ok().and_then(|p| p.try_recv().ok());
    spent.unwrap_or_else(|| AlignedBuf::new(CHUNK))
}

/// A `Read` over the chunks of one payload arriving on a channel; hands
/// spent buffers back to the reader.
pub(super) struct ChannelReader<'a> {
    rx: &'a Receiver<Msg>,
    back: &'a SyncSender<AlignedBuf>,
    cur: Option<AlignedBuf>,
    pos: usize,
    ended: bool,
    /// Time blocked on `rx`.
    pub(super) waited: Duration,
    /// The stored-bytes digest the reader's `End` carried.
    pub(super) stored_digest: Option<[u8; 32]>,
    /// Hashes every buffer received, when set (the frame dispatcher's hash
    /// of the stored bytes, going on after the frames: frames.rs).
    pub(super) hasher: Option<Sha256>,
}

impl<'a> ChannelReader<'a> {
    pub(super) fn new(rx: &'a Receiver<Msg>, back: &'a SyncSender<AlignedBuf>) -> Self {
        ChannelReader {
            rx,
            back,
            cur: None,
            pos: 0,
            ended: false,
            waited: Duration::ZERO,
            stored_digest: None,
            hasher: None,
        }
    }

    /// A reader whose first bytes are `first`, already received from `rx`;
    /// `hasher`, when set, hashes them and every buffer after them.
    pub(super) fn starting_with(
        rx: &'a Receiver<Msg>,
        back: &'a SyncSender<AlignedBuf>,
        first: AlignedBuf,
        mut hasher: Option<Sha256>,
    ) -> Self {
        if let Some(h) = &mut hasher {
            h.update(&first[..]);
        }
        ChannelReader {
            cur: Some(first),
            hasher,
            ..ChannelReader::new(rx, back)
        }
    }
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(cur) = &self.cur {
                if self.pos < cur.len() {
                    let n = buf.len().min(cur.len() - self.pos);
                    buf[..n].copy_from_slice(&cur[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            if self.ended {
                return Ok(0);
            }
            if let Some(spent) = self.cur.take() {
                let _ = self.back.try_send(spent);
            }
            self.pos = 0;
            let t = Instant::now();
            let msg = self.rx.recv();
            self.waited += t.elapsed();
            match msg {
                Ok(Msg::Data(v)) => {
                    if let Some(h) = &mut self.hasher {
                        h.update(&v[..]);
                    }
                    self.cur = Some(v);
                }
                Ok(Msg::End(d)) => {
                    self.ended = true;
                    self.stored_digest = d;
                }
                // The reader stopped: it reports its own error. (It sends no
                // `Direct`, and no `Frame` once it sent plain bytes.)
                Ok(Msg::Direct(_) | Msg::Frame(_)) | Err(_) => {
                    return Err(io::Error::other("source stage stopped"))
                }
            }
        }
    }
}

pub(super) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// Stage 1: stored bytes of each payload, in order. An uncompressed
/// payload's buffers go on to the writer as they are (full `CHUNK`s, so
/// that they are written directly); a plain zstd payload's are whole
/// frames (`Msg::Frame`, from `frame_pool`'s buffers) as long as they are
/// frames the decode workers take, then `IN_CHUNK`s, as a chunked
/// payload's are.
pub(super) fn reader_stage(
    src: &mut (dyn Read + Send),
    jobs: &[Job],
    tx: SyncSender<Msg>,
    pool: Receiver<AlignedBuf>,
    frame_pool: Receiver<AlignedBuf>,
    clock: &mut StageClock,
) -> Result<(), PipelineError> {
    let mut scratch = Vec::new();
    for job in jobs {
        let source_err = |err| PipelineError::Source {
            role: job.role.clone(),
            err,
        };
        if job.skip_before > 0 {
            scratch.resize(IN_CHUNK.min(job.skip_before as usize), 0);
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
        let size = if job.compression == Compression::None {
            CHUNK
        } else {
            IN_CHUNK
        };
        // The signed stored bytes' hash, here; for a payload of frames, on
        // the frame dispatcher's thread instead (frames.rs), so that this
        // thread only reads.
        let mut stored_hash = job.stored_hasher().filter(|_| !frames::applies(job));
        let mut left = job.stored_size;
        // A zstd payload: whole frames, each in its own buffer, for the
        // decode workers, until something else comes (frames/walk.rs).
        while frames::applies(job) && left > 0 {
            let mut frame = frame_pool
                .try_recv()
                .unwrap_or_else(|_| AlignedBuf::new(frames::max_frame_stored()));
            let walked = frames::read_frame(src, &mut frame, left).map_err(source_err)?;
            left -= frame.len() as u64;
            let (msg, more) = match walked {
                Walked::Frame => (Msg::Frame(frame), true),
                // Those bytes start the rest, for the streaming decoder.
                Walked::Other => (Msg::Data(frame), false),
                Walked::Ended => {
                    return Err(PipelineError::Truncated {
                        role: job.role.clone(),
                        missing: left,
                    })
                }
            };
            if clock.send(&tx, msg).is_err() {
                return Ok(()); // downstream stopped and reports why
            }
            if !more {
                break;
            }
        }
        while left > 0 {
            let mut buf = take(&pool);
            let n = (size as u64).min(left) as usize;
            buf.set_len(n);
            let got = read_full(src, &mut buf).map_err(source_err)?;
            if got < n {
                return Err(PipelineError::Truncated {
                    role: job.role.clone(),
                    missing: left - got as u64,
                });
            }
            left -= n as u64;
            if let Some(h) = &mut stored_hash {
                h.update(&buf[..]);
            }
            if clock.send(&tx, Msg::Data(buf)).is_err() {
                return Ok(()); // downstream stopped and reports why
            }
        }
        let digest = stored_hash.map(|h| h.finalize().into());
        if clock.send(&tx, Msg::End(digest)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Stage 2: decompress and check sizes (an uncompressed payload's buffers
/// pass through). Hashing is the next stage's, so that decompression and
/// SHA-256 run on two cores.
pub(super) fn decode_stage(
    jobs: &[Job],
    rx: Receiver<Msg>,
    back: SyncSender<AlignedBuf>,
    frames_back: SyncSender<AlignedBuf>,
    tx: SyncSender<Msg>,
    pool: Receiver<AlignedBuf>,
    clock: &mut StageClock,
) -> Result<(), PipelineError> {
    let pool = Mutex::new(pool);
    for job in jobs {
        let mut total: u64 = 0;
        let mut count = |n: usize| {
            total += n as u64;
            if total > job.raw_size {
                return Err(PipelineError::TooLong {
                    role: job.role.clone(),
                    raw_size: job.raw_size,
                });
            }
            Ok(())
        };
        let stored_digest;
        if job.compression == Compression::None {
            loop {
                match clock.recv(&rx) {
                    Ok(Msg::Data(buf)) => {
                        count(buf.len())?;
                        if clock.send(&tx, Msg::Data(buf)).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(Msg::End(d)) => {
                        stored_digest = d;
                        break;
                    }
                    // The reader stopped: it reports its own error. (It
                    // sends no `Direct`, and no `Frame` for this payload.)
                    Ok(Msg::Direct(_) | Msg::Frame(_)) | Err(_) => return Err(source_stopped(job)),
                }
            }
        } else {
            if frames::applies(job) {
                let (direct_tx, direct_rx) = sync_channel(0);
                if clock.send(&tx, Msg::Direct(direct_rx)).is_err() {
                    return Ok(());
                }
                let input = FromReader {
                    rx: &rx,
                    back: &back,
                    frames_back: &frames_back,
                };
                let out = frames::decode_framed(job, input, &pool, &direct_tx, &mut count, clock);
                let Some(digests) = out? else {
                    return Ok(()); // downstream stopped and reports why
                };
                check_total(job, total)?;
                check_hash(job, digests.raw, digests.stored)?;
                if clock.send(&direct_tx, Msg::End(None)).is_err() {
                    return Ok(());
                }
                continue;
            }
            let mut input = ChannelReader::new(&rx, &back);
            let outcome = {
                let mut emit = |buf: AlignedBuf| {
                    count(buf.len())?;
                    Ok(clock.send(&tx, Msg::Data(buf)).is_ok())
                };
                stream_decode(job, &mut input, &mut || Some(take_shared(&pool)), &mut emit)
            };
            clock.add_wait(std::mem::take(&mut input.waited));
            if !outcome? {
                return Ok(()); // downstream stopped and reports why
            }
            stored_digest = input.stored_digest;
        }
        check_total(job, total)?;
        if clock.send(&tx, Msg::End(stored_digest)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Decompress one payload's stored bytes from `input` with image-format's
/// streaming decoder (zstd with the window bounded, so memory stays
/// bounded: image_format::ZSTD_WINDOW_LOG_MAX; a chunked payload's table
/// and frames, each group checked against the table before its bytes are
/// handed on), handing each `CHUNK` of raw bytes to `emit` in order.
/// `Ok(false)`: `take_buf` or `emit` said downstream stopped.
pub(super) fn stream_decode(
    job: &Job,
    input: &mut dyn Read,
    take_buf: &mut dyn FnMut() -> Option<AlignedBuf>,
    emit: &mut dyn FnMut(AlignedBuf) -> Result<bool, PipelineError>,
) -> Result<bool, PipelineError> {
    let decode_err = |err| PipelineError::Decode {
        role: job.role.clone(),
        err,
    };
    let dec = match &job.chunked {
        Some(info) => image_format::payload_decompressor(info, &mut *input),
        None => image_format::decompressor(job.compression, &mut *input),
    };
    let mut dec = dec.map_err(|e| decode_err(e.into()))?;
    loop {
        let Some(mut buf) = take_buf() else {
            return Ok(false);
        };
        buf.set_len(CHUNK);
        let got = read_full(&mut dec, &mut buf).map_err(decode_err)?;
        if got == 0 {
            break;
        }
        buf.set_len(got);
        if !emit(buf)? {
            return Ok(false);
        }
    }
    drop(dec);
    // The decoder may stop at the end of the zstd frame; the stored bytes
    // after it must be consumed (and there must be none).
    let mut rest = [0u8; 1];
    let trailing = read_full(input, &mut rest).map_err(|err| PipelineError::Source {
        role: job.role.clone(),
        err,
    })?;
    if trailing != 0 {
        return Err(decode_err(io::Error::other(
            "trailing bytes after the compressed stream",
        )));
    }
    Ok(true)
}

fn check_total(job: &Job, total: u64) -> Result<(), PipelineError> {
    if total < job.raw_size {
        return Err(PipelineError::TooShort {
            role: job.role.clone(),
            raw_size: job.raw_size,
            got: total,
        });
    }
    Ok(())
}

/// The stream's verdict on one payload: the raw bytes' SHA-256 if they
/// were hashed (no signed `stored_sha256`), else the hash of the stored
/// bytes (the reader's, or the frame dispatcher's) against the signed one;
/// none with `Check::ReadBack` (the read-back's).
fn check_hash(
    job: &Job,
    raw_digest: Option<[u8; 32]>,
    stored_digest: Option<[u8; 32]>,
) -> Result<(), PipelineError> {
    if job.check == Check::ReadBack {
        return Ok(());
    }
    let ok = match (raw_digest, job.stored_sha256) {
        (Some(d), _) => d == job.sha256,
        (None, want) => stored_digest.is_some() && stored_digest == want,
    };
    if !ok {
        return Err(PipelineError::HashMismatch {
            role: job.role.clone(),
            phase: "while writing",
        });
    }
    Ok(())
}

/// What a stage reports when the reader stopped (the reader reports why).
pub(super) fn source_stopped(job: &Job) -> PipelineError {
    PipelineError::Source {
        role: job.role.clone(),
        err: io::Error::other("source stage stopped"),
    }
}

/// Stage 3: SHA-256 of the raw bytes, checked against the signed hash at
/// each payload's end before the writer hears that the payload is whole.
/// A payload with a signed `stored_sha256` is checked by the reader's hash
/// of its stored bytes instead (the raw bytes are then not hashed here: the
/// read-back checks them on the disk); with `Check::ReadBack`, nothing is
/// hashed here.
pub(super) fn hash_stage(
    jobs: &[Job],
    rx: Receiver<Msg>,
    tx: SyncSender<Msg>,
    clock: &mut StageClock,
) -> Result<(), PipelineError> {
    'jobs: for job in jobs {
        let mut hasher = job.raw_hasher();
        let stored_digest = loop {
            match clock.recv(&rx) {
                // A payload of frames goes to the writer on its own channel,
                // hashed and checked by the decoder.
                Ok(Msg::Direct(direct)) => {
                    if clock.send(&tx, Msg::Direct(direct)).is_err() {
                        return Ok(());
                    }
                    continue 'jobs;
                }
                Ok(Msg::Data(buf)) => {
                    if let Some(h) = &mut hasher {
                        h.update(&buf[..]);
                    }
                    if clock.send(&tx, Msg::Data(buf)).is_err() {
                        return Ok(());
                    }
                }
                Ok(Msg::End(d)) => break d,
                // The decoder stopped: it reports its own error. (It sends
                // no `Frame`.)
                Ok(Msg::Frame(_)) | Err(_) => return Ok(()),
            }
        };
        check_hash(job, hasher.map(|h| h.finalize().into()), stored_digest)?;
        if clock.send(&tx, Msg::End(None)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}
