//! A simulated block device for power-cut testing ([`SimDevice`]), the
//! enumeration of the disks a power cut can leave behind ([`crash`]), and
//! the suite-wide set of crash states, deduplicated by whole-disk content,
//! with the count of invariant checks made on them ([`states`]).
//!
//! [`SimDevice`] implements boot-flags' [`BlockDevice`]. It keeps what was
//! flushed (`durable`) and the writes issued since the last flush
//! (`pending`); reads see `durable` with `pending` applied in order, as a
//! page cache would. [`BlockDevice::flush`] makes everything pending durable.
//! While recording, every write (with its bytes) and every flush is kept in
//! a [`Trace`].

use std::io;

use boot_flags::BlockDevice;

/// A small deterministic PRNG (SplitMix64): the suites print their seed,
/// and a seed reproduces a run exactly on any machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// A seed: from `SLOTCTL_SEED` when set (to reproduce a printed run), else
/// from the clock.
pub fn seed_from_env() -> u64 {
    if let Some(s) = std::env::var("SLOTCTL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return s;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x0051_07c7)
}

/// True when the long mode was asked for (`SLOTCTL_RELIABILITY=full`).
pub fn full_mode() -> bool {
    std::env::var("SLOTCTL_RELIABILITY").is_ok_and(|v| v == "full")
}

/// One write: its byte offset and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Byte offset on the disk.
    pub off: u64,
    /// The bytes written.
    pub data: Vec<u8>,
}

/// What an operation did to the device, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A write (not yet durable).
    Write(Write),
    /// A durability barrier.
    Flush,
}

/// The device under the code under test.
#[derive(Clone, Debug)]
pub struct SimDevice {
    durable: Vec<u8>,
    cache: Vec<u8>,
    pending: Vec<Write>,
    sector: u32,
    reported_sector: Option<u32>,
    recording: Option<Vec<Event>>,
    fail_writes_after: Option<usize>,
    zero_ranges: usize,
}

impl SimDevice {
    /// A device holding `bytes` (all durable). `sector` is the granularity
    /// of torn writes; the device reports it as its logical sector size
    /// when `report_sector_size`.
    pub fn new(bytes: Vec<u8>, sector: u32, report_sector_size: bool) -> SimDevice {
        SimDevice {
            cache: bytes.clone(),
            durable: bytes,
            pending: Vec::new(),
            sector,
            reported_sector: report_sector_size.then_some(sector),
            recording: None,
            fail_writes_after: None,
            zero_ranges: 0,
        }
    }

    /// What a reader sees (durable + pending).
    pub fn bytes(&self) -> &[u8] {
        &self.cache
    }

    /// What survived the last flush.
    pub fn durable(&self) -> &[u8] {
        &self.durable
    }

    /// Writes issued since the last flush.
    pub fn pending(&self) -> &[Write] {
        &self.pending
    }

    /// How many writes came as `write_zeroes`.
    pub fn zero_ranges(&self) -> usize {
        self.zero_ranges
    }

    /// The tearing granularity.
    pub fn sector(&self) -> u32 {
        self.sector
    }

    /// Start recording writes and flushes. The disk must be fully flushed,
    /// so that the trace starts from a durable state.
    pub fn start_recording(&mut self) {
        assert!(
            self.pending.is_empty(),
            "start recording on a flushed device"
        );
        self.recording = Some(Vec::new());
    }

    /// Stop recording and return the trace, starting from `base` (the
    /// durable bytes when recording started).
    pub fn take_events(&mut self) -> Vec<Event> {
        self.recording.take().unwrap_or_default()
    }

    /// Make the device fail every write after `n` more writes (an I/O
    /// error, not a power cut).
    pub fn fail_writes_after(&mut self, n: Option<usize>) {
        self.fail_writes_after = n;
    }

    /// Lose the pending writes (a power cut that kept none of them).
    pub fn power_cut_clean(&mut self) {
        self.pending.clear();
        self.cache.clone_from(&self.durable);
    }

    fn check_range(&self, off: u64, len: usize) -> io::Result<usize> {
        let start = usize::try_from(off)
            .map_err(|_| io::Error::new(io::ErrorKind::UnexpectedEof, "offset past the end"))?;
        match start.checked_add(len) {
            Some(end) if end <= self.cache.len() => Ok(start),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "access {off}+{len} past the end of a {}-byte device",
                    self.cache.len()
                ),
            )),
        }
    }
}

impl BlockDevice for SimDevice {
    fn len(&mut self) -> io::Result<u64> {
        Ok(self.cache.len() as u64)
    }

    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = self.check_range(off, buf.len())?;
        buf.copy_from_slice(&self.cache[s..s + buf.len()]);
        Ok(())
    }

    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        let s = self.check_range(off, buf.len())?;
        if let Some(n) = self.fail_writes_after.as_mut() {
            if *n == 0 {
                return Err(io::Error::other("simulated write error"));
            }
            *n -= 1;
        }
        self.cache[s..s + buf.len()].copy_from_slice(buf);
        let w = Write {
            off,
            data: buf.to_vec(),
        };
        if let Some(r) = self.recording.as_mut() {
            r.push(Event::Write(w.clone()));
        }
        self.pending.push(w);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        for w in self.pending.drain(..) {
            let s = w.off as usize;
            self.durable[s..s + w.data.len()].copy_from_slice(&w.data);
        }
        if let Some(r) = self.recording.as_mut() {
            r.push(Event::Flush);
        }
        Ok(())
    }

    fn logical_sector_size(&mut self) -> io::Result<Option<u32>> {
        Ok(self.reported_sector)
    }

    /// A device's write-zeroes command: a write of zeros as far as power
    /// cuts go (pending, torn by sector, durable at the next flush), which
    /// is the contract `FileDevice`'s `fallocate(ZERO_RANGE)` has.
    fn write_zeroes(&mut self, off: u64, len: u64) -> io::Result<bool> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "zero range too long"))?;
        self.write_all_at(off, &vec![0; len])?;
        self.zero_ranges += 1;
        Ok(true)
    }

    // drop_cache: the default (no-op). It is deliberately not a barrier: the
    // code under test must flush for durability, not rely on FileDevice's
    // drop_cache happening to fsync.
}

/// A read-only view of disk bytes (a crash state), without copying them.
/// Writes and flushes fail.
#[derive(Debug)]
pub struct SliceDevice<'a> {
    /// The bytes.
    pub bytes: &'a [u8],
    /// What the device reports as its logical sector size.
    pub sector_size: Option<u32>,
}

impl BlockDevice for SliceDevice<'_> {
    fn len(&mut self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = usize::try_from(off).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let src = s
            .checked_add(buf.len())
            .and_then(|e| self.bytes.get(s..e))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_all_at(&mut self, _off: u64, _buf: &[u8]) -> io::Result<()> {
        Err(io::Error::other("read-only crash state"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::other("read-only crash state"))
    }
    fn logical_sector_size(&mut self) -> io::Result<Option<u32>> {
        Ok(self.sector_size)
    }
}

/// A copy-on-write view of disk bytes (a crash state): reads see the bytes
/// with the writes made through it; the bytes themselves are not copied.
/// Writes are kept per sector of `unit` bytes. Flushes succeed (the boot
/// after a crash is not itself cut here).
#[derive(Debug)]
pub struct CowDevice<'a> {
    base: &'a [u8],
    unit: usize,
    over: std::collections::HashMap<usize, Vec<u8>>,
    sector_size: Option<u32>,
}

impl<'a> CowDevice<'a> {
    /// A view of `base`; `sector_size` is what the device reports.
    pub fn new(base: &'a [u8], sector_size: Option<u32>) -> CowDevice<'a> {
        CowDevice {
            base,
            unit: 512,
            over: std::collections::HashMap::new(),
            sector_size,
        }
    }

    /// The bytes as they read now (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = self.base.to_vec();
        for (&i, d) in &self.over {
            v[i * self.unit..(i + 1) * self.unit].copy_from_slice(d);
        }
        v
    }

    /// Byte ranges written through this view (512-byte units, sorted).
    pub fn written(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .over
            .keys()
            .map(|&i| ((i * self.unit) as u64, self.unit as u64))
            .collect();
        v.sort_unstable();
        v
    }

    fn range(&self, off: u64, len: usize) -> io::Result<(usize, usize)> {
        let s = usize::try_from(off).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        match s.checked_add(len) {
            Some(e) if e <= self.base.len() => Ok((s, e)),
            _ => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }
}

impl BlockDevice for CowDevice<'_> {
    fn len(&mut self) -> io::Result<u64> {
        Ok(self.base.len() as u64)
    }
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let (s, e) = self.range(off, buf.len())?;
        buf.copy_from_slice(&self.base[s..e]);
        if self.over.is_empty() {
            return Ok(());
        }
        for sec in s / self.unit..e.div_ceil(self.unit) {
            if let Some(d) = self.over.get(&sec) {
                let (a, b) = ((sec * self.unit).max(s), ((sec + 1) * self.unit).min(e));
                buf[a - s..b - s].copy_from_slice(&d[a - sec * self.unit..b - sec * self.unit]);
            }
        }
        Ok(())
    }
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        let (s, e) = self.range(off, buf.len())?;
        for sec in s / self.unit..e.div_ceil(self.unit) {
            let (lo, hi) = (sec * self.unit, (sec + 1) * self.unit);
            let base = &self.base[lo..hi];
            let d = self.over.entry(sec).or_insert_with(|| base.to_vec());
            let (a, b) = (lo.max(s), hi.min(e));
            d[a - lo..b - lo].copy_from_slice(&buf[a - s..b - s]);
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn logical_sector_size(&mut self) -> io::Result<Option<u32>> {
        Ok(self.sector_size)
    }
}

/// Where a slot's BOOT and ROOT partitions lie: (byte offset, length).
#[derive(Clone, Debug)]
pub struct SlotPlace {
    pub boot: (usize, usize),
    pub root: (usize, usize),
}

/// The places of slots A and B on a disk whose table reads.
pub fn slot_places(dev: impl BlockDevice) -> [SlotPlace; 2] {
    let d = boot_flags::Disk::open(dev, None).expect("the disk's table reads");
    let p = |id: boot_flags::SlotId| {
        let s = d.layout().slot(id);
        let r = |role: &str| {
            let q = s.partition(role).expect("the slot has the role");
            (q.offset as usize, q.size as usize)
        };
        SlotPlace {
            boot: r("BOOT"),
            root: r("ROOT"),
        }
    };
    [p(boot_flags::SlotId::A), p(boot_flags::SlotId::B)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> SimDevice {
        SimDevice::new(vec![0u8; 8 * 512], 512, false)
    }

    #[test]
    fn reads_see_pending_and_flush_makes_durable() {
        let mut d = dev();
        d.write_all_at(512, &[7u8; 512]).unwrap();
        let mut b = [0u8; 4];
        d.read_exact_at(512, &mut b).unwrap();
        assert_eq!(b, [7; 4]);
        assert_eq!(d.durable()[512], 0);
        d.flush().unwrap();
        assert_eq!(d.durable()[512], 7);
        assert!(d.pending().is_empty());
        assert!(d.write_all_at(8 * 512 - 1, &[1, 2]).is_err());
    }

    #[test]
    fn cow_device_reads_its_writes_over_the_base() {
        let base: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let mut c = CowDevice::new(&base, None);
        c.write_all_at(500, &[0xaa; 30]).unwrap();
        let mut buf = vec![0u8; 100];
        c.read_exact_at(480, &mut buf).unwrap();
        let mut want = base[480..580].to_vec();
        want[20..50].fill(0xaa);
        assert_eq!(buf, want);
        let mut all = base.clone();
        all[500..530].fill(0xaa);
        assert_eq!(c.to_vec(), all);
        assert!(c.read_exact_at(4090, &mut buf).is_err());
    }
}

pub mod crash;
pub mod flagdisk;
pub mod states;
pub mod strace;

pub use crash::{CrashOptions, CrashStats, Trace, Variant};
pub use states::{disk_identity, CrashStates, Invariants};
