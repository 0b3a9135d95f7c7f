//! A zstd payload made of independent frames, decoded on two threads.
//!
//! `slotctl image pack` writes a zstd payload as one frame per MiB of raw
//! bytes, each with its content size in its header
//! (image_format::ZSTD_FRAME_RAW, docs/image-format.md). Single-threaded
//! zstd decompression was the install's slowest stage (docs/performance.md),
//! so here the decode stage's thread only **splits** the stored bytes into
//! frames (`find_frame_compressed_size`, no decoding), [`WORKERS`] threads
//! decode one frame each at a time straight into a `CHUNK` buffer, and an
//! **in-order** thread puts their buffers back in sequence, counts them
//! against the raw size, hashes them if the payload has no signed
//! `stored_sha256`, and hands them to the writer on a channel of this
//! payload's own (`Msg::Direct`, passed on by the hash stage so that the
//! payloads stay in order): what leaves this module is exactly what the
//! streaming decoder would have produced, one hop shorter.
//!
//! A frame the workers cannot take (no content size in its header, or more
//! than `CHUNK` of it: an image made by an older slotctl is one frame of
//! unknown size) ends the split: from that frame on, the splitter decodes
//! the rest of the payload itself with the streaming decoder, its buffers
//! numbered after the frames already handed out. So every valid zstd
//! stream installs, old images at the old speed; corrupt bytes fail in the
//! worker (one-shot decoding into a `CHUNK` buffer: a frame that decodes to
//! more is an error) or in the streaming decoder, with zstd's message.
//!
//! Memory stays bounded by [`IN_FLIGHT`] tokens: the splitter takes one
//! before it hands out a frame (or a streamed buffer) and the in-order
//! thread returns it once the buffer has gone downstream, so at most that
//! many frames exist between the two, whatever order the workers finish in.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use boot_flags::AlignedBuf;
use sha2::{Digest, Sha256};
use zstd::zstd_safe;

use super::stages::{stream_decode, take_shared, ChannelReader, Msg};
use super::timing::StageClock;
use super::{Compression, Job, PipelineError, CHUNK, IN_CHUNK};

/// Threads decoding frames.
pub(super) const WORKERS: usize = 2;
/// Frames between the splitter and the in-order thread: one per worker.
/// One more (a frame waiting for a worker) measured the same install time
/// on the benchmark's loop device and 1.8 MiB more peak RSS
/// (bench/RESULTS.md, "Two decoders and the read-ahead").
pub(super) const IN_FLIGHT: usize = WORKERS;
/// Most bytes of a frame header (magic, descriptor, window, dictionary id,
/// content size): with fewer, the header may not be complete yet.
const FRAME_HEADER_MAX: usize = 18;

/// Whether a payload goes through here: plain zstd (a chunked payload has
/// its own frames and table, decoded by image-format).
pub(super) fn applies(job: &Job) -> bool {
    job.compression == Compression::Zstd && job.chunked.is_none()
}

/// What the in-order thread receives, numbered.
enum Item {
    Data(AlignedBuf),
    Failed(PipelineError),
    End,
}

/// Where the next frame of `acc` (the stored bytes not yet handed out)
/// stands.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// A whole frame of this many stored bytes a worker can decode.
    Frame(usize),
    /// Not enough bytes yet to tell.
    More,
    /// Not a frame for the workers: stream the rest.
    Stream,
}

/// The largest stored frame a worker takes: zstd's bound for `CHUNK`.
fn max_frame_stored() -> usize {
    zstd_safe::compress_bound(CHUNK)
}

fn scan(acc: &[u8], ended: bool) -> Scan {
    if acc.is_empty() {
        return if ended { Scan::Stream } else { Scan::More };
    }
    match zstd_safe::get_frame_content_size(acc) {
        Ok(Some(n)) if n <= CHUNK as u64 => {}
        Ok(_) => return Scan::Stream,
        Err(_) if acc.len() < FRAME_HEADER_MAX && !ended => return Scan::More,
        Err(_) => return Scan::Stream,
    }
    match zstd_safe::find_frame_compressed_size(acc) {
        Ok(n) if n <= acc.len() && n <= max_frame_stored() => Scan::Frame(n),
        Ok(_) => Scan::Stream,
        // The frame is not whole yet, or is corrupt: the streaming decoder
        // will say which once the bound is reached.
        Err(_) if acc.len() <= max_frame_stored() && !ended => Scan::More,
        Err(_) => Scan::Stream,
    }
}

/// Decode one zstd payload's stored bytes from `input` onto `tx`, the
/// writer's own channel for this payload (`Msg::Direct`), through `count`,
/// which checks the raw size. `Ok(None)`: downstream stopped; else the
/// SHA-256 of the raw bytes, computed here when the payload has no signed
/// `stored_sha256` (the caller checks it, or the stored one, and sends the
/// `End`). The decode threads' busy time is added to `clock`.
pub(super) fn decode_framed(
    job: &Job,
    input: &mut ChannelReader<'_>,
    pool: &Mutex<Receiver<AlignedBuf>>,
    tx: &SyncSender<Msg>,
    count: &mut (dyn FnMut(usize) -> Result<(), PipelineError> + Send),
    clock: &mut StageClock,
) -> Result<Option<Option<[u8; 32]>>, PipelineError> {
    let (work_tx, work_rx) = sync_channel::<(u64, Vec<u8>)>(IN_FLIGHT);
    let work_rx = Mutex::new(work_rx);
    // Unbounded, but never holds more than IN_FLIGHT items: the tokens.
    let (done_tx, done_rx) = channel::<(u64, Item)>();
    let (token_tx, token_rx) = sync_channel::<()>(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        token_tx.send(()).expect("room for every token");
    }
    // Spent frames kept for reuse: one. While the writer holds the stream
    // back, both tokens' frames are decoded and a second kept frame would
    // be a MiB of idle memory (bench/RESULTS.md, "Two decoders and the
    // read-ahead").
    let (spent_tx, spent_rx) = sync_channel::<Vec<u8>>(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (work_rx, done_tx, spent_tx) = (&work_rx, done_tx.clone(), spent_tx.clone());
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
                        let _ = spent_tx.try_send(frame);
                        if done_tx.send((seq, item)).is_err() {
                            break;
                        }
                    }
                    busy
                })
            })
            .collect();
        drop(spent_tx);
        let in_order = s.spawn(move || {
            let mut c = StageClock::new();
            (
                in_order(job, done_rx, token_tx, tx, count, &mut c),
                c.busy(),
            )
        });

        let split = split(
            job, input, pool, &work_tx, &done_tx, &token_rx, &spent_rx, clock,
        );
        if let Err(e) = split.result {
            let _ = done_tx.send((split.next, Item::Failed(e)));
        }
        drop((work_tx, done_tx, token_rx));
        let mut busy = Duration::ZERO;
        for w in workers {
            busy += w.join().expect("decode worker panicked");
        }
        let (result, order_busy) = in_order.join().expect("in-order thread panicked");
        clock.add_busy(busy + order_busy);
        result
    })
}

/// What the splitter did: `next` is the first sequence number it did not
/// hand out.
struct Split {
    result: Result<(), PipelineError>,
    next: u64,
}

/// The splitter: hand whole frames to the workers, stream the rest, end
/// with `Item::End`. Stops quietly when the in-order thread has stopped
/// (it has the reason).
#[allow(clippy::too_many_arguments)]
fn split(
    job: &Job,
    input: &mut ChannelReader<'_>,
    pool: &Mutex<Receiver<AlignedBuf>>,
    work_tx: &SyncSender<(u64, Vec<u8>)>,
    done_tx: &std::sync::mpsc::Sender<(u64, Item)>,
    token_rx: &Receiver<()>,
    spent_rx: &Receiver<Vec<u8>>,
    clock: &mut StageClock,
) -> Split {
    let mut next = 0u64;
    // The stored bytes not yet handed out are `acc[..filled]`; `acc` is
    // zeroed once and never grows: `scan` asks for more only while a frame
    // could still fit in `max_frame_stored()`, so there is always room.
    let mut acc = vec![0u8; max_frame_stored() + IN_CHUNK];
    let mut filled = 0;
    let mut ended = false;
    let result = (|| {
        loop {
            match scan(&acc[..filled], ended) {
                Scan::Frame(n) => {
                    if clock.recv(token_rx).is_err() {
                        return Ok(());
                    }
                    let mut frame = spent_rx.try_recv().unwrap_or_default();
                    frame.clear();
                    frame.extend_from_slice(&acc[..n]);
                    acc.copy_within(n..filled, 0);
                    filled -= n;
                    if clock.send(work_tx, (next, frame)).is_err() {
                        return Ok(());
                    }
                    next += 1;
                }
                Scan::More => {
                    let got =
                        input
                            .read(&mut acc[filled..])
                            .map_err(|err| PipelineError::Source {
                                role: job.role.clone(),
                                err,
                            })?;
                    filled += got;
                    ended = got == 0;
                }
                Scan::Stream if filled == 0 && ended => break,
                Scan::Stream => {
                    // Everything from here on through the streaming decoder,
                    // its buffers numbered after the frames.
                    let mut rest = io::Cursor::new(&acc[..filled]).chain(&mut *input);
                    // The token before the buffer: no decoded buffer
                    // waits here for one.
                    let mut take = || {
                        clock.recv(token_rx).ok()?;
                        Some(take_shared(pool))
                    };
                    let mut emit = |buf: AlignedBuf| {
                        let sent = done_tx.send((next, Item::Data(buf))).is_ok();
                        next += 1;
                        Ok(sent)
                    };
                    let go_on = stream_decode(job, &mut rest, &mut take, &mut emit)?;
                    if !go_on {
                        return Ok(());
                    }
                    break;
                }
            }
        }
        let _ = done_tx.send((next, Item::End));
        Ok(())
    })();
    Split { result, next }
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
    let mut hasher = job.stored_sha256.is_none().then(Sha256::new);
    let mut pending: BTreeMap<u64, Item> = BTreeMap::new();
    let mut next = 0u64;
    loop {
        let Ok((seq, item)) = clock.recv(&done_rx) else {
            // The splitter stopped without an end: the reader stopped.
            return Err(PipelineError::Source {
                role: job.role.clone(),
                err: io::Error::other("source stage stopped"),
            });
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
