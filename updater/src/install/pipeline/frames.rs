//! A zstd payload made of independent frames, decoded on two threads.
//!
//! `slotctl image pack` writes a zstd payload as one frame per MiB of raw
//! bytes, each with its content size in its header
//! (image_format::ZSTD_FRAME_RAW, docs/image-format.md). Single-threaded
//! zstd decompression was the install's slowest stage (docs/performance.md),
//! so the reader reads such a payload one whole frame per buffer
//! (frames/walk.rs) and sends it as `Msg::Frame`; here the decode stage's
//! thread hashes the stored bytes (when their SHA-256 is signed) and
//! **dispatches** the frames, numbered, to [`WORKERS`] threads
//! that decode one frame each at a time straight into a `CHUNK` buffer, and
//! an **in-order** thread puts their buffers back in sequence, counts them
//! against the raw size, hashes them if the payload has no signed
//! `stored_sha256`, and hands them to the writer on a channel of this
//! payload's own (`Msg::Direct`, passed on by the hash stage so that the
//! payloads stay in order): what leaves this module is exactly what the
//! streaming decoder would have produced, one hop shorter. A spent frame
//! goes back to the reader for the next one.
//!
//! Where the reader found something the workers cannot take (no content
//! size, more than `CHUNK` of content: an image made by an older slotctl
//! is one frame of unknown size), it sends those bytes and the rest of the
//! payload as plain `Msg::Data`: from there on the dispatcher decodes them
//! itself with the streaming decoder, its buffers numbered after the frames
//! already handed out. So every valid zstd stream installs, old images at
//! the old speed; corrupt bytes fail in the worker (one-shot decoding into
//! a `CHUNK` buffer: a frame that decodes to more is an error) or in the
//! streaming decoder, with zstd's message.
//!
//! Memory stays bounded by [`IN_FLIGHT`] tokens: the dispatcher takes one
//! before it takes the reader's next frame (or a streamed buffer) and the
//! in-order thread returns it once the buffer has gone downstream, so at
//! most that many frames exist between the two, whatever order the workers
//! finish in.

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use boot_flags::AlignedBuf;
use sha2::Digest;
use zstd::zstd_safe;

use super::stages::{source_stopped, stream_decode, take_shared, ChannelReader, Msg};
use super::timing::StageClock;
use super::{Compression, Job, PipelineError, CHUNK};

mod walk;
pub(super) use walk::{read_frame, Walked};

/// Threads decoding frames.
pub(super) const WORKERS: usize = 2;
/// Frames between the dispatcher and the in-order thread: one per worker.
/// One more (a frame waiting for a worker) measured the same install time
/// on the benchmark's loop device and 1.8 MiB more peak RSS
/// (bench/RESULTS.md, "Two decoders and the read-ahead").
pub(super) const IN_FLIGHT: usize = WORKERS;
/// Spent frames kept for the reader: as many as can be alive besides the
/// one it fills (the tokened ones: the dispatcher takes a token before it
/// takes the next frame), so that it never allocates once the stream runs.
pub(super) const FRAME_POOL: usize = IN_FLIGHT;

/// Whether a payload goes through here: plain zstd (a chunked payload has
/// its own frames and table, decoded by image-format).
pub(super) fn applies(job: &Job) -> bool {
    job.compression == Compression::Zstd && job.chunked.is_none()
}

/// The largest stored frame a worker takes: zstd's bound for `CHUNK`. The
/// reader's frame buffers have this capacity.
pub(super) fn max_frame_stored() -> usize {
    zstd_safe::compress_bound(CHUNK)
}

/// What the in-order thread receives, numbered.
enum Item {
    Data(AlignedBuf),
    Failed(PipelineError),
    End,
}

/// The channels between the reader and the decode stage, for one payload:
/// its messages, the reader's pool of stored-bytes buffers, and its pool of
/// frame buffers.
pub(super) struct FromReader<'a> {
    pub rx: &'a Receiver<Msg>,
    pub back: &'a SyncSender<AlignedBuf>,
    pub frames_back: &'a SyncSender<AlignedBuf>,
}

/// What [`decode_framed`] found, once the payload was whole.
pub(super) struct Decoded {
    /// The raw bytes' SHA-256, when the payload has no signed
    /// `stored_sha256` (hashed here); else `None`.
    pub raw: Option<[u8; 32]>,
    /// The stored bytes' SHA-256, when the payload has a signed
    /// `stored_sha256` (hashed by the dispatcher).
    pub stored: Option<[u8; 32]>,
}

/// Decode one zstd payload from the reader's frames (and plain bytes) onto
/// `tx`, the writer's own channel for this payload (`Msg::Direct`), through
/// `count`, which checks the raw size. `Ok(None)`: downstream stopped. The
/// caller checks the hashes and sends the `End`. The decode threads' busy
/// time is added to `clock`.
pub(super) fn decode_framed(
    job: &Job,
    input: FromReader<'_>,
    pool: &Mutex<Receiver<AlignedBuf>>,
    tx: &SyncSender<Msg>,
    count: &mut (dyn FnMut(usize) -> Result<(), PipelineError> + Send),
    clock: &mut StageClock,
) -> Result<Option<Decoded>, PipelineError> {
    let (work_tx, work_rx) = sync_channel::<(u64, AlignedBuf)>(IN_FLIGHT);
    let work_rx = Mutex::new(work_rx);
    // Unbounded, but never holds more than IN_FLIGHT items: the tokens.
    let (done_tx, done_rx) = channel::<(u64, Item)>();
    let (token_tx, token_rx) = sync_channel::<()>(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        token_tx.send(()).expect("room for every token");
    }
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (work_rx, done_tx) = (&work_rx, done_tx.clone());
                let frames_back = input.frames_back.clone();
                s.spawn(move || {
                    let mut dctx = zstd_safe::DCtx::create();
                    let mut busy = Duration::ZERO;
                    loop {
                        let work = work_rx.lock().map(|rx| rx.recv());
                        let Ok(Ok((seq, frame))) = work else { break };
                        let t = Instant::now();
                        let mut buf = take_shared(pool);
                        buf.set_len(CHUNK);
                        let item = match dctx.decompress(&mut buf[..], &frame) {
                            Ok(n) => {
                                buf.set_len(n);
                                Item::Data(buf)
                            }
                            Err(code) => Item::Failed(PipelineError::Decode {
                                role: job.role.clone(),
                                err: io::Error::other(zstd_safe::get_error_name(code)),
                            }),
                        };
                        busy += t.elapsed();
                        let _ = frames_back.try_send(frame);
                        if done_tx.send((seq, item)).is_err() {
                            break;
                        }
                    }
                    busy
                })
            })
            .collect();
        let in_order = s.spawn(move || {
            let mut c = StageClock::new();
            (
                in_order(job, done_rx, token_tx, tx, count, &mut c),
                c.busy(),
            )
        });

        let d = dispatch(job, &input, pool, &work_tx, &done_tx, &token_rx, clock);
        if let Err(e) = d.result {
            let _ = done_tx.send((d.next, Item::Failed(e)));
        }
        drop((work_tx, done_tx, token_rx));
        let mut busy = Duration::ZERO;
        for w in workers {
            busy += w.join().expect("decode worker panicked");
        }
        let (result, order_busy) = in_order.join().expect("in-order thread panicked");
        clock.add_busy(busy + order_busy);
        Ok(result?.map(|raw| Decoded {
            raw,
            stored: d.stored,
        }))
    })
}

/// What the dispatcher did: `next` is the first sequence number it did not
/// hand out; `stored` its digest of the stored bytes.
struct Dispatched {
    result: Result<(), PipelineError>,
    next: u64,
    stored: Option<[u8; 32]>,
}

/// The dispatcher: hash the stored bytes (when signed), hand the reader's
/// frames to the workers, stream its plain bytes, end with `Item::End`.
/// Stops quietly when the in-order thread has stopped (it has the reason).
fn dispatch(
    job: &Job,
    input: &FromReader<'_>,
    pool: &Mutex<Receiver<AlignedBuf>>,
    work_tx: &SyncSender<(u64, AlignedBuf)>,
    done_tx: &std::sync::mpsc::Sender<(u64, Item)>,
    token_rx: &Receiver<()>,
    clock: &mut StageClock,
) -> Dispatched {
    let mut next = 0u64;
    let mut stored = None;
    // The stored bytes' hash, here rather than on the reader's thread: the
    // reader's reads and SHA-256 were the longest thread of the stream;
    // this one only waits otherwise.
    let mut hasher = job.stored_hasher();
    let result = (|| {
        loop {
            // The token before the reader's next message: the frame it read
            // waits in its hand, not in a third frame buffer here.
            if clock.recv(token_rx).is_err() {
                return Ok(());
            }
            let mut held = true;
            match clock.recv(input.rx) {
                Ok(Msg::Frame(frame)) => {
                    if let Some(h) = &mut hasher {
                        h.update(&frame[..]);
                    }
                    if clock.send(work_tx, (next, frame)).is_err() {
                        return Ok(());
                    }
                    next += 1;
                }
                Ok(Msg::Data(first)) => {
                    // Everything from here on through the streaming decoder,
                    // its buffers numbered after the frames.
                    let mut rest =
                        ChannelReader::starting_with(input.rx, input.back, first, hasher.take());
                    // The token before the buffer (the first one is held
                    // already): no decoded buffer waits here for one.
                    let mut take = || {
                        if !std::mem::take(&mut held) {
                            clock.recv(token_rx).ok()?;
                        }
                        Some(take_shared(pool))
                    };
                    let mut emit = |buf: AlignedBuf| {
                        let sent = done_tx.send((next, Item::Data(buf))).is_ok();
                        next += 1;
                        Ok(sent)
                    };
                    let go_on = stream_decode(job, &mut rest, &mut take, &mut emit);
                    clock.add_wait(rest.waited);
                    if !go_on? {
                        return Ok(());
                    }
                    hasher = rest.hasher.take();
                    break;
                }
                Ok(Msg::End(_)) => break,
                // The reader stopped: it reports its own error.
                Ok(Msg::Direct(_)) | Err(_) => return Err(source_stopped(job)),
            }
        }
        stored = hasher.take().map(|h| h.finalize().into());
        let _ = done_tx.send((next, Item::End));
        Ok(())
    })();
    Dispatched {
        result,
        next,
        stored,
    }
}

/// The in-order thread: the numbered buffers, in sequence, onto `tx`,
/// hashed when the payload has no `stored_sha256`. `Ok(Some(raw digest))`
/// once `Item::End` came in its turn, `Ok(None)` if downstream stopped.
fn in_order(
    job: &Job,
    done_rx: Receiver<(u64, Item)>,
    token_tx: SyncSender<()>,
    tx: &SyncSender<Msg>,
    count: &mut (dyn FnMut(usize) -> Result<(), PipelineError> + Send),
    clock: &mut StageClock,
) -> Result<Option<Option<[u8; 32]>>, PipelineError> {
    let mut hasher = job.raw_hasher();
    let mut pending: BTreeMap<u64, Item> = BTreeMap::new();
    let mut next = 0u64;
    loop {
        let Ok((seq, item)) = clock.recv(&done_rx) else {
            // The dispatcher stopped without an end: the reader stopped.
            return Err(source_stopped(job));
        };
        pending.insert(seq, item);
        while let Some(item) = pending.remove(&next) {
            next += 1;
            match item {
                Item::Data(buf) => {
                    // A frame may decode to nothing (a skippable frame).
                    if !buf.is_empty() {
                        count(buf.len())?;
                        if let Some(h) = &mut hasher {
                            h.update(&buf[..]);
                        }
                        if clock.send(tx, Msg::Data(buf)).is_err() {
                            return Ok(None);
                        }
                    }
                    let _ = token_tx.try_send(());
                }
                Item::Failed(e) => return Err(e),
                Item::End => return Ok(Some(hasher.map(|h| h.finalize().into()))),
            }
        }
    }
}

#[cfg(test)]
mod tests;
