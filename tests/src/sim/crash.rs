//! The crash states of one operation: the disks a power cut can leave.
//!
//! A [`Trace`] of one operation, started on a fully flushed disk, yields the
//! crash states ([`Trace::for_each_crash`]): for every cut point (before
//! each write and each flush, and after the last event), with `p1..pk` the
//! writes issued since the last flush and `w` the write in flight (if the
//! cut is before a write):
//!
//! - **clean cut**: durable + `p1..pk` in order (what a device that keeps
//!   order leaves; earlier prefixes are the clean cuts of earlier points);
//! - **torn**: the clean cut plus the first `t` sectors of `w`, for each
//!   sector boundary `0 < t < sectors(w)` (exhaustive up to
//!   [`CrashOptions::max_tears`] boundaries, evenly spread and random
//!   beyond);
//! - **reordered**: durable + any subset of `p1..pk` (applied in order:
//!   the block layer may persist unflushed writes to different sectors in
//!   any order, so any subset can be on the medium), exhaustive when
//!   `k <= CrashOptions::max_exhaustive_pending`, [`CrashOptions::random_subsets`]
//!   random subsets beyond; and each such subset with one of the missing
//!   writes torn at a sector boundary (first, middle and last boundary);
//! - **split**: the clean cut plus any non-prefix set of the requests
//!   ([`CrashOptions::request_bytes`]) the block layer splits `w` into,
//!   since they may reach the medium in any order, each set also with one
//!   missing request torn at a random sector boundary.
//!
//! Each variant is counted and checked through the suite's
//! [`CrashStates`]: by the content of the whole disk, so two variants (of
//! this trace or of any other trace of the suite) that leave the same bytes
//! count once, and are checked once per scenario.

use std::collections::HashSet;

use super::states::{CrashStates, DiskIds, Invariants};
use super::{Event, Rng, SimDevice, Write};

/// How a crash state was made, for messages and reproduction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Every pending write landed, in order.
    Clean,
    /// Every pending write, and the first `sectors` sectors of the write in
    /// flight.
    Torn {
        /// Sectors of the in-flight write that landed.
        sectors: u64,
    },
    /// Only the pending writes whose bit is set in `mask` landed (bit i =
    /// i-th pending write), and optionally one other pending write torn.
    Reordered {
        /// Bit i set: pending write i landed.
        mask: u64,
        /// A pending write not in `mask` that landed partly: (index, sectors).
        torn: Option<(usize, u64)>,
    },
    /// Every pending write, and of the write in flight, split into
    /// requests of [`CrashOptions::request_bytes`], the requests whose bit
    /// is set in `mask` (a set that is not a prefix: those are the torn
    /// variants), and optionally one other request torn.
    Split {
        /// Bit i set: request i of the write in flight landed.
        mask: u64,
        /// A request not in `mask` that landed partly: (index, sectors).
        torn: Option<(usize, u64)>,
    },
}

/// Knobs of the enumeration.
#[derive(Clone, Debug)]
pub struct CrashOptions {
    /// Tear the in-flight write at every sector boundary when it has at
    /// most this many boundaries; beyond, this many boundaries (first,
    /// last, evenly spread and random).
    pub max_tears: usize,
    /// Enumerate all subsets of the pending writes when there are at most
    /// this many.
    pub max_exhaustive_pending: usize,
    /// Random subsets when there are more pending writes.
    pub random_subsets: usize,
    /// Include the reordered variants.
    pub reorder: bool,
    /// The block layer splits a large write into requests of this many
    /// bytes, which may reach the medium in any order: the write in flight
    /// lands as any set of its requests (the [`Variant::Split`] variants;
    /// all sets when it has at most `max_exhaustive_pending` requests,
    /// `random_subsets` random ones beyond), each also with one missing
    /// request torn at a random sector boundary. `None`: writes land in
    /// order (prefixes only).
    pub request_bytes: Option<u64>,
}

impl Default for CrashOptions {
    fn default() -> Self {
        CrashOptions {
            max_tears: 64,
            max_exhaustive_pending: 8,
            random_subsets: 64,
            reorder: true,
            request_bytes: Some(128 << 10),
        }
    }
}

/// Counts from the enumeration of one trace.
#[derive(Clone, Debug, Default)]
pub struct CrashStats {
    /// Cut points (before each event, and after the last).
    pub cut_points: usize,
    /// Variants generated (before removing duplicates).
    pub generated: usize,
    /// Distinct disks among them (by whole-disk content).
    pub distinct: usize,
    /// Of those, the ones checked here (not checked before in the same
    /// scenario).
    pub checked: usize,
}

/// One operation's writes and flushes, from a fully flushed disk.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The disk before the operation.
    pub base: Vec<u8>,
    /// What the operation did.
    pub events: Vec<Event>,
    /// Tearing granularity.
    pub sector: u32,
}

fn apply(disk: &mut [u8], w: &Write) {
    let s = w.off as usize;
    disk[s..s + w.data.len()].copy_from_slice(&w.data);
}

/// Sector boundaries strictly inside a write, as byte counts from its start.
fn boundaries(w: &Write, sector: u64) -> Vec<u64> {
    let end = w.off + w.data.len() as u64;
    let first = (w.off / sector + 1) * sector;
    (0..)
        .map(|i| first + i * sector)
        .take_while(|&b| b < end)
        .map(|b| b - w.off)
        .collect()
}

/// Pick at most `max` of `all` (all of them when few): first, last, evenly
/// spread, and random.
fn pick(all: &[u64], max: usize, rng: &mut Rng) -> Vec<u64> {
    if all.len() <= max {
        return all.to_vec();
    }
    let mut out: Vec<u64> = Vec::with_capacity(max);
    let spread = max / 2;
    for i in 0..spread {
        out.push(all[i * (all.len() - 1) / (spread - 1).max(1)]);
    }
    while out.len() < max {
        out.push(all[rng.below(all.len() as u64) as usize]);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Bytes `a..b` of a write.
fn apply_part(disk: &mut [u8], w: &Write, a: usize, b: usize) {
    let s = w.off as usize;
    disk[s + a..s + b].copy_from_slice(&w.data[a..b]);
}

fn apply_torn(disk: &mut [u8], w: &Write, bytes: u64) {
    let s = w.off as usize;
    let n = bytes as usize;
    disk[s..s + n].copy_from_slice(&w.data[..n]);
}

impl Trace {
    /// Run `op` on `dev` and record what it did. The device must be fully
    /// flushed before.
    pub fn record<T>(dev: &mut SimDevice, op: impl FnOnce(&mut SimDevice) -> T) -> (T, Trace) {
        let base = dev.durable().to_vec();
        dev.start_recording();
        let out = op(dev);
        let events = dev.take_events();
        (
            out,
            Trace {
                base,
                events,
                sector: dev.sector(),
            },
        )
    }

    /// Number of writes.
    pub fn writes(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Write(_)))
            .count()
    }

    /// Number of flushes.
    pub fn flushes(&self) -> usize {
        self.events.len() - self.writes()
    }

    /// The disk after the whole operation, everything durable.
    pub fn final_disk(&self) -> Vec<u8> {
        let mut d = self.base.clone();
        for e in &self.events {
            if let Event::Write(w) = e {
                apply(&mut d, w);
            }
        }
        d
    }

    /// Merged byte ranges of all writes (start, end).
    fn touched(&self) -> Vec<(usize, usize)> {
        let mut r: Vec<(usize, usize)> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Write(w) => Some((w.off as usize, w.off as usize + w.data.len())),
                Event::Flush => None,
            })
            .collect();
        r.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (s, e) in r {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    /// Build every crash state of the trace (see the module docs), count
    /// it in `states` (once per suite, by whole-disk content) and call
    /// `check(cut, variant, disk, invariants)` on it unless `scenario` has
    /// checked that disk already. `scenario` names what the checks expect:
    /// traces whose crash states are checked against the same expectations
    /// share it; a different operation, starting disk or device does not.
    pub fn for_each_crash(
        &self,
        opts: &CrashOptions,
        rng: &mut Rng,
        scenario: u64,
        states: &mut CrashStates,
        mut check: impl FnMut(usize, &Variant, &[u8], &Invariants),
    ) -> CrashStats {
        let touched = self.touched();
        let ids = DiskIds::new(&self.base, &touched);
        let sector = u64::from(self.sector);
        let mut stats = CrashStats::default();
        let mut durable = self.base.clone();
        let mut pending: Vec<&Write> = Vec::new();
        let mut disk = self.base.clone();
        let mut here: HashSet<u64> = HashSet::new();
        let mut run = |variant: Variant,
                       cut: usize,
                       build: &dyn Fn(&mut Vec<u8>),
                       durable: &[u8],
                       stats: &mut CrashStats| {
            // `disk` and `durable` differ only inside the touched ranges.
            for &(s, e) in &touched {
                disk[s..e].copy_from_slice(&durable[s..e]);
            }
            build(&mut disk);
            stats.generated += 1;
            let id = ids.id(&self.base, &disk);
            stats.distinct += usize::from(here.insert(id));
            if states.reach(scenario, id) {
                stats.checked += 1;
                states.check(|inv| check(cut, &variant, &disk, inv));
            }
        };
        for cut in 0..=self.events.len() {
            stats.cut_points += 1;
            let all = |d: &mut Vec<u8>| pending.iter().for_each(|w| apply(d, w));
            run(Variant::Clean, cut, &all, &durable, &mut stats);
            if let Some(Event::Write(w)) = self.events.get(cut) {
                for t in pick(&boundaries(w, sector), opts.max_tears, rng) {
                    let f = |d: &mut Vec<u8>| {
                        all(d);
                        apply_torn(d, w, t);
                    };
                    let v = Variant::Torn {
                        sectors: t / sector,
                    };
                    run(v, cut, &f, &durable, &mut stats);
                }
                let reqs = opts
                    .request_bytes
                    .map_or(1, |r| w.data.len().div_ceil(r as usize));
                if opts.reorder && reqs > 1 {
                    let rb = opts.request_bytes.unwrap_or(0) as usize;
                    let r = reqs.min(63);
                    let full = (1u64 << r) - 1;
                    // Not empty, not all, not a prefix (those are torn cuts).
                    let scattered = |m: &u64| *m != 0 && *m != full && (m & (m + 1)) != 0;
                    let masks: Vec<u64> = if r <= opts.max_exhaustive_pending {
                        (1..full).filter(scattered).collect()
                    } else {
                        (0..opts.random_subsets)
                            .map(|_| rng.next_u64() & full)
                            .filter(scattered)
                            .collect()
                    };
                    for mask in masks {
                        let sub = |d: &mut Vec<u8>| {
                            all(d);
                            for i in (0..r).filter(|i| mask & (1 << i) != 0) {
                                apply_part(d, w, i * rb, ((i + 1) * rb).min(w.data.len()));
                            }
                        };
                        let v = Variant::Split { mask, torn: None };
                        run(v, cut, &sub, &durable, &mut stats);
                        // One missing request, torn at a random boundary.
                        let missing: Vec<usize> = (0..r).filter(|i| mask & (1 << i) == 0).collect();
                        let i = missing[rng.below(missing.len() as u64) as usize];
                        let (a, b) = (i * rb, ((i + 1) * rb).min(w.data.len()));
                        let cuts: Vec<u64> = boundaries(w, sector)
                            .into_iter()
                            .filter(|&t| t > a as u64 && t < b as u64)
                            .collect();
                        if let Some(&t) = cuts.get(rng.below(cuts.len().max(1) as u64) as usize) {
                            let f = |d: &mut Vec<u8>| {
                                sub(d);
                                apply_part(d, w, a, t as usize);
                            };
                            let v = Variant::Split {
                                mask,
                                torn: Some((i, (t - a as u64) / sector)),
                            };
                            run(v, cut, &f, &durable, &mut stats);
                        }
                    }
                }
            }
            if opts.reorder && pending.len() > 1 {
                let k = pending.len().min(63);
                let masks: Vec<u64> = if k <= opts.max_exhaustive_pending {
                    (0..(1u64 << k) - 1).collect()
                } else {
                    (0..opts.random_subsets)
                        .map(|_| rng.next_u64() & ((1u64 << k) - 1))
                        .collect()
                };
                for mask in masks {
                    let sub = |d: &mut Vec<u8>| {
                        for (i, w) in pending.iter().enumerate().take(k) {
                            if mask & (1 << i) != 0 {
                                apply(d, w);
                            }
                        }
                    };
                    run(
                        Variant::Reordered { mask, torn: None },
                        cut,
                        &sub,
                        &durable,
                        &mut stats,
                    );
                    for (i, w) in pending.iter().enumerate().take(k) {
                        if mask & (1 << i) != 0 {
                            continue;
                        }
                        let b = boundaries(w, sector);
                        let mut few: Vec<u64> = [b.first(), b.get(b.len() / 2), b.last()]
                            .into_iter()
                            .flatten()
                            .copied()
                            .collect();
                        few.dedup();
                        for t in few {
                            let f = |d: &mut Vec<u8>| {
                                sub(d);
                                apply_torn(d, w, t);
                            };
                            let v = Variant::Reordered {
                                mask,
                                torn: Some((i, t / sector)),
                            };
                            run(v, cut, &f, &durable, &mut stats);
                        }
                    }
                }
            }
            match self.events.get(cut) {
                Some(Event::Write(w)) => pending.push(w),
                Some(Event::Flush) => {
                    for w in pending.drain(..) {
                        apply(&mut durable, w);
                    }
                }
                None => {}
            }
        }
        stats
    }
}

impl std::ops::AddAssign for CrashStats {
    fn add_assign(&mut self, o: CrashStats) {
        self.cut_points += o.cut_points;
        self.generated += o.generated;
        self.distinct += o.distinct;
        self.checked += o.checked;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boot_flags::BlockDevice;

    fn dev() -> SimDevice {
        SimDevice::new(vec![0u8; 8 * 512], 512, false)
    }

    #[test]
    fn enumeration_covers_prefixes_tears_and_subsets() {
        let mut d = dev();
        let ((), trace) = Trace::record(&mut d, |d| {
            d.write_all_at(0, &[1u8; 1024]).unwrap(); // 2 sectors: 1 boundary
            d.write_all_at(2048, &[2u8; 512]).unwrap();
            d.flush().unwrap();
            d.write_all_at(3072, &[3u8; 512]).unwrap();
        });
        assert_eq!((trace.writes(), trace.flushes()), (3, 1));
        let mut states: Vec<Vec<u8>> = Vec::new();
        let mut suite = CrashStates::new("t");
        let stats = trace.for_each_crash(
            &CrashOptions::default(),
            &mut Rng::new(1),
            0,
            &mut suite,
            |_, _, disk, inv| {
                inv.that(true, String::new);
                states.push(disk.to_vec())
            },
        );
        let s = |a: u8, a2: u8, b: u8, c: u8| {
            let mut v = vec![0u8; 8 * 512];
            v[..512].fill(a);
            v[512..1024].fill(a2);
            v[2048..2560].fill(b);
            v[3072..3584].fill(c);
            v
        };
        let want = [
            s(0, 0, 0, 0), // nothing
            s(1, 0, 0, 0), // first write torn
            s(1, 1, 0, 0), // first write
            s(1, 1, 2, 0), // both (clean cut before the flush)
            s(0, 0, 2, 0), // reordered: only the second
            s(1, 0, 2, 0), // reordered: second, first torn
            s(1, 1, 2, 3), // all
        ];
        for w in &want {
            assert!(states.contains(w), "missing a crash state");
        }
        assert_eq!(stats.distinct, want.len());
        assert_eq!(stats.checked, want.len());
        assert_eq!(states.len(), want.len());
        assert_eq!(stats.cut_points, 5);
        assert_eq!(suite.distinct(), want.len());
        assert_eq!(suite.invariant_checks(), want.len());

        // The same operation from a disk it had left half-way (the first
        // write landed): its crash states are disks already counted, but
        // for the third write's; checked again in another scenario only.
        let mut d = SimDevice::new(want[2].clone(), 512, false);
        let ((), again) = Trace::record(&mut d, |d| {
            d.write_all_at(0, &[1u8; 1024]).unwrap();
            d.write_all_at(2048, &[2u8; 512]).unwrap();
            d.flush().unwrap();
            d.write_all_at(3072, &[3u8; 512]).unwrap();
        });
        let mut n = 0;
        let s2 = again.for_each_crash(
            &CrashOptions::default(),
            &mut Rng::new(1),
            0,
            &mut suite,
            |_, _, _, _| n += 1,
        );
        assert_eq!((s2.checked, n), (0, 0), "same scenario: nothing new");
        assert_eq!(suite.distinct(), want.len());
        let s3 = again.for_each_crash(
            &CrashOptions::default(),
            &mut Rng::new(1),
            1,
            &mut suite,
            |_, _, _, _| n += 1,
        );
        assert_eq!((s3.distinct, s3.checked), (n, n));
        assert!(n >= 3, "another scenario checks them again");
        assert_eq!(suite.distinct(), want.len(), "and they count once");
    }

    #[test]
    fn a_split_write_lands_as_any_set_of_its_requests() {
        let mut d = dev();
        let ((), trace) = Trace::record(&mut d, |d| {
            d.write_all_at(512, &[9u8; 3 * 512]).unwrap();
        });
        let opts = CrashOptions {
            request_bytes: Some(512),
            ..CrashOptions::default()
        };
        let mut got: Vec<[u8; 3]> = Vec::new();
        let mut suite = CrashStates::new("t");
        trace.for_each_crash(&opts, &mut Rng::new(1), 0, &mut suite, |_, _, disk, _| {
            got.push([disk[512], disk[1024], disk[1536]]);
        });
        got.sort_unstable();
        // Prefixes (torn and clean cuts) and every non-prefix set.
        let mut want = vec![
            [0, 0, 0],
            [9, 0, 0],
            [9, 9, 0],
            [9, 9, 9],
            [0, 9, 0],
            [0, 0, 9],
            [9, 0, 9],
            [0, 9, 9],
        ];
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
