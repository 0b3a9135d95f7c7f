//! Where an install's time went, for `install --json`'s `timing` (and the
//! bottleneck analysis in docs/performance.md): each pipeline stage's busy
//! time is its wall time less the time it waited on its neighbours'
//! channels, so the stage whose busy time is close to the stream's wall
//! time is the one that bounds it.

use std::sync::mpsc::{Receiver, RecvError, SendError, SyncSender};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One stage's clock: started when the stage starts, with the time spent
/// blocked on channels set aside.
#[derive(Debug)]
pub struct StageClock {
    start: Instant,
    waited: Duration,
    /// Busy time of helper threads of this stage (the decode workers).
    helpers: Duration,
}

impl Default for StageClock {
    fn default() -> Self {
        StageClock::new()
    }
}

impl StageClock {
    pub fn new() -> StageClock {
        StageClock {
            start: Instant::now(),
            waited: Duration::ZERO,
            helpers: Duration::ZERO,
        }
    }

    /// `rx.recv()`, timed as waiting.
    pub fn recv<T>(&mut self, rx: &Receiver<T>) -> Result<T, RecvError> {
        let t = Instant::now();
        let r = rx.recv();
        self.waited += t.elapsed();
        r
    }

    /// `tx.send(v)`, timed as waiting.
    pub fn send<T>(&mut self, tx: &SyncSender<T>, v: T) -> Result<(), SendError<T>> {
        let t = Instant::now();
        let r = tx.send(v);
        self.waited += t.elapsed();
        r
    }

    /// Count `d` as waiting (measured elsewhere).
    pub fn add_wait(&mut self, d: Duration) {
        self.waited += d;
    }

    /// Count `d` as busy time of this stage, spent on other threads (so
    /// a stage on several threads reports the sum of their busy times).
    pub fn add_busy(&mut self, d: Duration) {
        self.helpers += d;
    }

    /// Wall time since the start, less the waits, plus the helpers' time.
    pub fn busy(&self) -> Duration {
        self.start.elapsed().saturating_sub(self.waited) + self.helpers
    }
}

/// The times of one install, and the bytes its device zeroed itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// Wall time of the payload stream (every payload written).
    pub stream: Duration,
    /// Busy time of the reader (the source's reads).
    pub read: Duration,
    /// Busy time of the decoder (decompression), summed over its threads
    /// (for a zstd payload of frames: the dispatcher, the two frame workers
    /// and the in-order thread, pipeline/frames.rs), so it may exceed the
    /// stream's wall time.
    pub decode: Duration,
    /// Busy time of the hasher (SHA-256).
    pub hash: Duration,
    /// Busy time of the writer (the disk's writes).
    pub write: Duration,
    /// The flush after the payloads.
    pub flush: Duration,
    /// Wall time of the read-back.
    pub readback: Duration,
    /// Of which: in the disk's reads.
    pub readback_read: Duration,
    /// Busy time of the read-back's hasher.
    pub readback_hash: Duration,
    /// The read-ahead (pipeline/ahead.rs, during the stream and the
    /// flush): time in the disk's reads.
    pub readahead_read: Duration,
    /// Busy time of the read-ahead's hasher.
    pub readahead_hash: Duration,
    /// Bytes of the stream the device zeroed itself instead of being
    /// sent zeros (pipeline/zeroes.rs).
    pub zeroed: u64,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

impl Timing {
    /// The `--json` `timing` object, in seconds.
    pub fn to_json(&self) -> Value {
        json!({
            "stream_s": secs(self.stream),
            "busy_s": {
                "read": secs(self.read),
                "decode": secs(self.decode),
                "hash": secs(self.hash),
                "write": secs(self.write),
            },
            "flush_s": secs(self.flush),
            "readback_s": secs(self.readback),
            "readback_busy_s": {
                "read": secs(self.readback_read),
                "hash": secs(self.readback_hash),
            },
            "readahead_busy_s": {
                "read": secs(self.readahead_read),
                "hash": secs(self.readahead_hash),
            },
            "zeroed_bytes": self.zeroed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn waits_are_not_busy_time() {
        let (tx, rx) = sync_channel::<u8>(0);
        let mut c = StageClock::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                tx.send(1).unwrap();
            });
            assert_eq!(c.recv(&rx), Ok(1));
        });
        // The 100 ms the sender slept are waiting, not busy time.
        assert!(c.waited >= Duration::from_millis(100), "{:?}", c.waited);
        let busy = c.busy();
        let wall = c.start.elapsed();
        assert!(busy + Duration::from_millis(100) <= wall, "{c:?}");
    }

    #[test]
    fn json_in_seconds() {
        let t = Timing {
            stream: Duration::from_millis(1500),
            hash: Duration::from_micros(1234),
            ..Timing::default()
        };
        let j = t.to_json();
        assert_eq!(j["stream_s"], 1.5);
        assert_eq!(j["busy_s"]["hash"], 0.001);
    }
}
