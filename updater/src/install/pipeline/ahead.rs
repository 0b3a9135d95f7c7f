//! The read-back, started while the payloads are still being written.
//!
//! On a device written with direct I/O (boot-flags' direct.rs), each
//! buffer is on the device once its write has returned. A [`ReadAhead`]
//! reads it back from there at once, on its own thread, through a second
//! `O_DIRECT` descriptor ([`boot_flags::DirectReader`], so never from the
//! page cache), and a second thread hashes what it read: the disk reads
//! the previous megabyte while it writes the next, instead of reading the
//! whole slot again after the flush. Only what it could not read (an
//! unaligned tail, or everything after a failed read) is read by
//! [`super::readback`] after the flush, continuing the same SHA-256; the
//! check against the signed hash is the same and happens at the same
//! point, before the slot record is written.
//!
//! Where the device has no direct reader (memory, the simulated devices of
//! the reliability suites, file systems without direct I/O) there is no
//! read-ahead and the read-back is entirely after the flush, as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boot_flags::{AlignedBuf, DirectReader};
use sha2::{Digest, Sha256};

use super::timing::StageClock;
use super::BlockDevice;
use super::Job;

/// Bytes of one read of the read-ahead. Once the stream stopped hashing
/// (`Check::ReadBack`), the device's reads bounded the install: 512 KiB
/// reads made it 9 % faster than 256 KiB ones on the benchmark's loop
/// device, 1 MiB reads 18 %, but those cost 1.5 MiB more peak RSS, which
/// the CI's 16 MiB bound (tests/tests/install_memory.rs, a debug build)
/// had no room for; 512 KiB costs 0.6 MiB (bench/RESULTS.md, "One hash,
/// read back in bigger pieces").
const PIECE: usize = 512 << 10;

/// One write that returned: `len` bytes of job `job` at disk byte `off`.
struct Written {
    job: usize,
    off: u64,
    len: usize,
}

/// How far the read-ahead got with one payload.
pub(super) struct Partial {
    /// The payload's disk offset (its key).
    pub dest_offset: u64,
    /// SHA-256 of its first `done` bytes, as read from the disk.
    pub hasher: Sha256,
    pub done: u64,
}

/// What the read-ahead thread hands back: each payload's progress, and
/// its reading and hashing time.
#[derive(Default)]
pub(super) struct AheadResult {
    pub partials: Vec<Partial>,
    pub read: Duration,
    pub hash: Duration,
}

/// The read-ahead of one install; [`ReadAhead::none`] when there is none.
pub struct ReadAhead {
    tx: Option<Sender<Written>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<AheadResult>>,
}

impl ReadAhead {
    /// No read-ahead: the read-back reads everything after the flush.
    pub fn none() -> ReadAhead {
        ReadAhead {
            tx: None,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    /// A read-ahead for `jobs` on `dev`, if `dev` has a direct reader.
    pub fn start(dev: &mut dyn BlockDevice, jobs: &[Job]) -> ReadAhead {
        let Some(reader) = dev.direct_reader() else {
            return ReadAhead::none();
        };
        let dests: Vec<u64> = jobs.iter().map(|j| j.dest_offset).collect();
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || read_ahead(&reader, &dests, &rx, &stop2));
        ReadAhead {
            tx: Some(tx),
            stop,
            thread: Some(thread),
        }
    }

    /// The writer wrote `len` bytes of job `job` at `off`, and the write
    /// returned.
    pub(super) fn written(&self, job: usize, off: u64, len: usize) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Written { job, off, len });
        }
    }

    /// Every write is in: wait for the reads queued so far.
    pub(super) fn finish(mut self) -> AheadResult {
        self.tx = None;
        let thread = self.thread.take();
        thread.and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for ReadAhead {
    /// An install that stops early does not wait for its read-ahead: the
    /// thread drops what is queued and ends.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Per payload: bytes read and handed to the hasher so far, and whether
/// the read-ahead still follows it (false after a gap, an unaligned start
/// or a failed read: the read-back after the flush takes over from `done`).
#[derive(Clone, Copy)]
struct Track {
    done: u64,
    on: bool,
}

fn read_ahead(
    reader: &DirectReader,
    dests: &[u64],
    rx: &Receiver<Written>,
    stop: &AtomicBool,
) -> AheadResult {
    let align = reader.align();
    let mut track = vec![Track { done: 0, on: true }; dests.len()];
    // A rendezvous: one buffer being read, one being hashed, and no other.
    // A queue of two more measured the same install time and 2 MiB more
    // peak RSS (bench/RESULTS.md, "Two decoders and the read-ahead").
    let (tx, hash_rx) = sync_channel::<(usize, AlignedBuf)>(0);
    let (back_tx, back_rx) = sync_channel::<AlignedBuf>(2);
    let mut read = Duration::ZERO;
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut c = StageClock::new();
            let mut hashers: Vec<Sha256> = vec![Sha256::new(); dests.len()];
            while let Ok((job, buf)) = c.recv(&hash_rx) {
                hashers[job].update(&buf[..]);
                let _ = back_tx.try_send(buf);
            }
            (hashers, c.busy())
        });
        while let Ok(w) = rx.recv() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let t = &mut track[w.job];
            // Contiguous from the payload's start, aligned, a whole number
            // of alignment units: anything else ends the read-ahead of this
            // payload (an unaligned tail is the last write of a payload).
            let whole = w.len / align * align;
            if !t.on || w.off != dests[w.job] + t.done || w.off % align as u64 != 0 || whole == 0 {
                t.on = false;
                continue;
            }
            // In pieces of at most `PIECE` (half a full write).
            let mut at = 0;
            while at < whole {
                let n = PIECE.min(whole - at);
                // Never a third buffer: the hash thread gives its buffer
                // back before it takes the next one from this thread, so
                // one is waiting here by then. A new one replaces only a
                // buffer a failed read dropped.
                let mut buf = back_rx
                    .try_recv()
                    .unwrap_or_else(|_| AlignedBuf::new(PIECE));
                buf.set_len(n);
                let start = Instant::now();
                let r = reader.read_exact_at(w.off + at as u64, &mut buf);
                read += start.elapsed();
                if r.is_err() {
                    // The read-back after the flush reads it again and
                    // reports an error of the device.
                    break;
                }
                if tx.send((w.job, buf)).is_err() {
                    break;
                }
                at += n;
                t.done += n as u64;
            }
            t.on = at == w.len;
        }
        drop(tx);
        let (hashers, hash) = hasher.join().expect("read-ahead hash thread panicked");
        let partials = dests
            .iter()
            .zip(hashers)
            .zip(&track)
            .map(|((&dest_offset, hasher), t)| Partial {
                dest_offset,
                hasher,
                done: t.done,
            })
            .collect();
        AheadResult {
            partials,
            read,
            hash,
        }
    })
}
