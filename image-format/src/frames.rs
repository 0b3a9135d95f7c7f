//! The zstd payload encoder: independent frames of [`ZSTD_FRAME_RAW`] raw
//! bytes each.
//!
//! Each frame is compressed alone (no shared window, no dictionary) with its
//! content size in its header and no checksum, so an installer can find the
//! boundaries with `ZSTD_findFrameCompressedSize` and decode frames on
//! several threads, each into one buffer of [`ZSTD_FRAME_RAW`] bytes. The
//! frames concatenated are still one valid zstd stream for any streaming
//! decoder (`zstd -d`, [`crate::decompressor`]).
//!
//! With more than one worker the frames are compressed on worker threads
//! (started at the first full frame), at most two frames per worker in
//! flight, and written out in order: memory stays bounded by those frames
//! and one compression context per worker. A frame's bytes depend only on
//! its raw bytes and the level, so the output is the same whatever the
//! number of workers.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use zstd::bulk::Compressor;
use zstd::zstd_safe::CParameter;

use crate::ZSTD_FRAME_RAW;

/// More workers than zstdmt's own limit make no sense; the count is clamped
/// to this, as zstd clamps its `nbWorkers`.
const MAX_WORKERS: u32 = 256;

/// Frames in flight per worker: one being compressed, one waiting.
const IN_FLIGHT_PER_WORKER: usize = 2;

/// A compressor for one frame: the level, the content size in the header,
/// no checksum (the header's SHA-256 sums cover the bytes).
fn new_compressor(level: i32) -> io::Result<Compressor<'static>> {
    let mut c = Compressor::new(level)?;
    c.set_parameter(CParameter::ChecksumFlag(false))?;
    c.set_parameter(CParameter::ContentSizeFlag(true))?;
    Ok(c)
}

/// A frame's index, its compressed bytes (or the error), and the raw buffer
/// handed back for reuse.
type Done = (u64, io::Result<Vec<u8>>, Vec<u8>);

/// The worker threads and their channels, started at the first full frame.
struct Pool {
    jobs: Option<Sender<(u64, Vec<u8>)>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(compressors: Vec<Compressor<'static>>) -> io::Result<Pool> {
        let (job_tx, job_rx) = channel::<(u64, Vec<u8>)>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = channel::<Done>();
        let mut pool = Pool {
            jobs: Some(job_tx),
            done: done_rx,
            threads: Vec::new(),
        };
        for mut c in compressors {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let t = std::thread::Builder::new()
                .name("zstd-frames".into())
                .spawn(move || loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((i, data))) = job else { return };
                    // A panic becomes this frame's error: the encoder
                    // would otherwise wait for the frame for ever.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        c.compress(&data)
                    }))
                    .unwrap_or_else(|_| Err(io::Error::other("a zstd frame worker panicked")));
                    if done_tx.send((i, r, data)).is_err() {
                        return;
                    }
                })?;
            pool.threads.push(t);
        }
        Ok(pool)
    }

    fn stop(&mut self) {
        // Closing the job channel ends every worker's loop.
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

fn workers_stopped() -> io::Error {
    io::Error::other("the zstd frame workers stopped")
}

/// A `Write` adapter that compresses what is written to it as independent
/// zstd frames of [`ZSTD_FRAME_RAW`] raw bytes each (the last one may be
/// shorter) and writes them in order to the inner writer. [`finish`]
/// compresses the last, partial frame (or one empty frame when nothing was
/// written) and returns the inner writer; dropping the encoder without it
/// loses the buffered bytes.
///
/// [`finish`]: FramedEncoder::finish
pub(crate) struct FramedEncoder<W: Write> {
    out: W,
    /// The raw bytes of the frame being filled.
    buf: Vec<u8>,
    /// Frames handed to the workers so far (the next frame's index).
    sent: u64,
    /// Frames written to `out` so far.
    written: u64,
    /// Compressors: the calling thread's one, or the workers' until they start.
    compressors: Vec<Compressor<'static>>,
    workers: usize,
    pool: Option<Pool>,
    /// Frames compressed ahead of the one `out` waits for.
    ready: BTreeMap<u64, Vec<u8>>,
    /// Raw buffers back from the workers, for reuse.
    spare: Vec<Vec<u8>>,
}

impl<W: Write> FramedEncoder<W> {
    /// An encoder at zstd `level` with `workers` threads (0 or 1: on the
    /// calling thread, in `write`).
    pub(crate) fn new(out: W, level: i32, workers: u32) -> io::Result<Self> {
        let workers = workers.clamp(1, MAX_WORKERS) as usize;
        let compressors = (0..workers)
            .map(|_| new_compressor(level))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(FramedEncoder {
            out,
            buf: Vec::with_capacity(ZSTD_FRAME_RAW),
            sent: 0,
            written: 0,
            compressors,
            workers,
            pool: None,
            ready: BTreeMap::new(),
            spare: Vec::new(),
        })
    }

    /// Compress the frame in `buf` (on this thread, or hand it to a worker).
    fn emit(&mut self) -> io::Result<()> {
        let next = self.spare.pop().unwrap_or_default();
        let data = std::mem::replace(&mut self.buf, next);
        self.buf.clear();
        self.buf.reserve(ZSTD_FRAME_RAW);
        if self.workers == 1 {
            let frame = self.compressors[0].compress(&data)?;
            self.out.write_all(&frame)?;
            self.spare.push(data);
            self.sent += 1;
            self.written += 1;
            return Ok(());
        }
        if self.pool.is_none() {
            self.pool = Some(Pool::start(std::mem::take(&mut self.compressors))?);
        }
        let max_in_flight = (IN_FLIGHT_PER_WORKER * self.workers) as u64;
        while self.sent - self.written >= max_in_flight {
            self.receive()?;
        }
        let pool = self.pool.as_ref().ok_or_else(workers_stopped)?;
        let jobs = pool.jobs.as_ref().ok_or_else(workers_stopped)?;
        jobs.send((self.sent, data))
            .map_err(|_| workers_stopped())?;
        self.sent += 1;
        Ok(())
    }

    /// Wait for one compressed frame, then write out every frame that is
    /// next in order.
    fn receive(&mut self) -> io::Result<()> {
        let pool = self.pool.as_ref().ok_or_else(workers_stopped)?;
        let (i, r, data) = pool.done.recv().map_err(|_| workers_stopped())?;
        self.ready.insert(i, r?);
        self.spare.push(data);
        while let Some(frame) = self.ready.remove(&self.written) {
            self.out.write_all(&frame)?;
            self.written += 1;
        }
        Ok(())
    }

    /// Compress and write what is left, wait for the workers, and return
    /// the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || self.sent == 0 {
            self.emit()?;
        }
        while self.written < self.sent {
            self.receive()?;
        }
        if let Some(mut pool) = self.pool.take() {
            pool.stop();
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for FramedEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(ZSTD_FRAME_RAW - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == ZSTD_FRAME_RAW {
            self.emit()?;
        }
        Ok(n)
    }

    /// Flushes the inner writer only: a partial frame stays buffered
    /// (compressing it now would cut a frame short), and so do frames still
    /// with the workers.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests;
