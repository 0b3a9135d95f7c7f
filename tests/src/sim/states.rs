//! The crash states of one suite, counted once across all its runs, and
//! the invariant checks made on them.
//!
//! A crash state is identified by the content of the **whole disk**
//! ([`disk_identity`]): the sum, modulo 2^64, of a SipHash of each 4 KiB
//! chunk together with its index (and a term for the disk's length). Two
//! disks with the same bytes have the same identity wherever they came
//! from (two traces from different starting disks, a trace and the live
//! driver, two scenarios); two different disks collide with probability
//! about 2^-64 per pair. Being a sum over chunks, the identity of a crash
//! state is computed from its trace's base by replacing the terms of the
//! chunks that differ from the base ([`DiskIds`]), so a crash state costs
//! a comparison of the bytes its trace touched, not a hash of the disk.
//!
//! [`CrashStates`] keeps two sets. `disks` counts each distinct disk once
//! in the whole suite: that is the number the suite reports and its floor
//! is on. `checked` holds (scenario, disk) pairs: a disk reached by two
//! scenarios whose invariants differ (another operation, another starting
//! disk, another device) is checked against each, and counted once.
//!
//! [`Invariants`] counts the invariant checks as they are made (each
//! [`Invariants::that`] or [`Invariants::ok`] is one check, made whether it
//! holds or not), so the suites print how many invariants each state was
//! checked against and how many checks were made in all, from the checks
//! themselves rather than from a figure written next to them.

use std::cell::Cell;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

/// The unit of the whole-disk identity.
pub const CHUNK: usize = 4096;

fn chunk_hash(index: usize, bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    index.hash(&mut h);
    bytes.hash(&mut h);
    h.finish()
}

fn len_term(len: usize) -> u64 {
    chunk_hash(usize::MAX, &(len as u64).to_le_bytes())
}

/// The identity of a whole disk's content (see the module docs).
pub fn disk_identity(bytes: &[u8]) -> u64 {
    bytes
        .chunks(CHUNK)
        .enumerate()
        .fold(len_term(bytes.len()), |id, (i, c)| {
            id.wrapping_add(chunk_hash(i, c))
        })
}

/// Identities of the disks that differ from `base` only inside some byte
/// ranges (the crash states of one trace).
#[derive(Clone, Debug)]
pub struct DiskIds {
    base_id: u64,
    /// Every chunk that meets a range: (index, hash of the base's chunk).
    chunks: Vec<(usize, u64)>,
}

impl DiskIds {
    /// For disks that equal `base` outside `ranges` (byte start, end).
    pub fn new(base: &[u8], ranges: &[(usize, usize)]) -> DiskIds {
        let mut idx: Vec<usize> = ranges
            .iter()
            .filter(|(s, e)| e > s)
            .flat_map(|&(s, e)| s / CHUNK..e.div_ceil(CHUNK))
            .collect();
        idx.sort_unstable();
        idx.dedup();
        let chunks = idx
            .into_iter()
            .map(|i| (i, chunk_hash(i, chunk(base, i))))
            .collect();
        DiskIds {
            base_id: disk_identity(base),
            chunks,
        }
    }

    /// The identity of `disk` (equal to `base` outside the ranges): the
    /// same as `disk_identity(disk)`.
    pub fn id(&self, base: &[u8], disk: &[u8]) -> u64 {
        let mut id = self.base_id;
        for &(i, h) in &self.chunks {
            let c = chunk(disk, i);
            if c != chunk(base, i) {
                id = id.wrapping_sub(h).wrapping_add(chunk_hash(i, c));
            }
        }
        id
    }
}

fn chunk(bytes: &[u8], i: usize) -> &[u8] {
    &bytes[i * CHUNK..((i + 1) * CHUNK).min(bytes.len())]
}

/// Counts invariant checks as they are made.
#[derive(Debug, Default)]
pub struct Invariants(Cell<usize>);

impl Invariants {
    /// One invariant check: panics with `what()` unless `holds`.
    #[track_caller]
    pub fn that(&self, holds: bool, what: impl FnOnce() -> String) {
        self.0.set(self.0.get() + 1);
        if !holds {
            panic!("{}", what());
        }
    }

    /// One invariant check that `r` is `Ok`: its value, else a panic with
    /// `what(error)`.
    #[track_caller]
    pub fn ok<T, E>(&self, r: Result<T, E>, what: impl FnOnce(E) -> String) -> T {
        self.0.set(self.0.get() + 1);
        r.unwrap_or_else(|e| panic!("{}", what(e)))
    }

    /// Checks made so far.
    pub fn count(&self) -> usize {
        self.0.get()
    }
}

/// The crash states of one suite (see the module docs).
#[derive(Debug)]
pub struct CrashStates {
    suite: &'static str,
    disks: HashSet<u64>,
    phase_disks: HashSet<u64>,
    checked: HashSet<(u64, u64)>,
    inv: Invariants,
    state_checks: usize,
    per_state: Option<(usize, usize)>,
}

impl CrashStates {
    /// An empty set for the suite named `suite` (used in its log lines).
    pub fn new(suite: &'static str) -> CrashStates {
        CrashStates {
            suite,
            disks: HashSet::new(),
            phase_disks: HashSet::new(),
            checked: HashSet::new(),
            inv: Invariants::default(),
            state_checks: 0,
            per_state: None,
        }
    }

    /// Distinct disks in the whole suite so far.
    pub fn distinct(&self) -> usize {
        self.disks.len()
    }

    /// Distinct disks since the last [`CrashStates::new_phase`].
    pub fn phase_distinct(&self) -> usize {
        self.phase_disks.len()
    }

    /// Start counting a phase's own distinct disks afresh.
    pub fn new_phase(&mut self) {
        self.phase_disks.clear();
    }

    /// (scenario, disk) checks made so far.
    pub fn state_checks(&self) -> usize {
        self.state_checks
    }

    /// Invariant checks made so far.
    pub fn invariant_checks(&self) -> usize {
        self.inv.count()
    }

    /// Whether the disk with identity `id` was checked in `scenario`.
    pub fn was_checked(&self, scenario: u64, id: u64) -> bool {
        self.checked.contains(&(scenario, id))
    }

    /// Count the disk `id` (once in the suite); true when `scenario` has
    /// not checked it yet (and it is now marked as checked there).
    pub fn reach(&mut self, scenario: u64, id: u64) -> bool {
        self.disks.insert(id);
        self.phase_disks.insert(id);
        self.checked.insert((scenario, id))
    }

    /// Run one state's checks, counting the invariants it checks.
    pub fn check<T>(&mut self, f: impl FnOnce(&Invariants) -> T) -> T {
        let before = self.inv.count();
        let out = f(&self.inv);
        let n = self.inv.count() - before;
        self.state_checks += 1;
        self.per_state = Some(match self.per_state {
            None => (n, n),
            Some((lo, hi)) => (lo.min(n), hi.max(n)),
        });
        out
    }

    /// [`CrashStates::reach`] a whole disk, and when it is new to
    /// `scenario`, check it with `f`. Returns whether it was checked.
    pub fn visit(&mut self, scenario: u64, disk: &[u8], f: impl FnOnce(&Invariants)) -> bool {
        let new = self.reach(scenario, disk_identity(disk));
        if new {
            self.check(f);
        }
        new
    }

    /// The line the suites print: distinct states, checks, invariants.
    pub fn summary(&self) -> String {
        let (lo, hi) = self.per_state.unwrap_or((0, 0));
        let each = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo} to {hi}")
        };
        format!(
            "{}: {} distinct crash states (by whole-disk content, each counted once in the suite); {} state checks (a disk reached in two scenarios is checked in each), {each} invariants each, {} invariant checks in all",
            self.suite,
            self.distinct(),
            self.state_checks,
            self.inv.count()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_of_the_whole_content() {
        let base: Vec<u8> = (0..5 * CHUNK + 100).map(|i| (i % 251) as u8).collect();
        let ids = DiskIds::new(&base, &[(100, 200), (3 * CHUNK + 7, 3 * CHUNK + 9)]);
        assert_eq!(ids.id(&base, &base), disk_identity(&base));
        let mut d = base.clone();
        d[150] ^= 1;
        d[3 * CHUNK + 8] ^= 0x80;
        assert_eq!(ids.id(&base, &d), disk_identity(&d));
        assert_ne!(disk_identity(&d), disk_identity(&base));
        // The same content reached from another base has the same identity.
        let mut other = base.clone();
        other[4 * CHUNK] ^= 3; // outside the ranges of `ids`
        let ids2 = DiskIds::new(&other, &[(4 * CHUNK, 4 * CHUNK + 1), (100, 200)]);
        let mut d2 = other.clone();
        d2[4 * CHUNK] ^= 3;
        assert_eq!(ids2.id(&other, &d2), disk_identity(&base));
        // Swapping two chunks changes the identity (chunk indices count).
        let mut s = base.clone();
        s.copy_within(0..CHUNK, CHUNK);
        s[..CHUNK].copy_from_slice(&base[CHUNK..2 * CHUNK]);
        assert_ne!(disk_identity(&s), disk_identity(&base));
        // So does the length.
        assert_ne!(disk_identity(&base[..base.len() - 1]), disk_identity(&base));
    }

    #[test]
    fn states_count_disks_once_and_check_per_scenario() {
        let mut st = CrashStates::new("t");
        let (a, b) = (vec![1u8; 10], vec![2u8; 10]);
        assert!(st.visit(1, &a, |inv| inv.that(true, String::new)));
        assert!(!st.visit(1, &a, |_| unreachable!()));
        assert!(st.visit(2, &a, |inv| {
            inv.that(true, String::new);
            inv.that(true, String::new);
        }));
        assert!(st.visit(2, &b, |inv| inv.that(true, String::new)));
        assert_eq!((st.distinct(), st.state_checks()), (2, 3));
        assert_eq!(st.invariant_checks(), 4);
        assert!(st.summary().contains("1 to 2 invariants each"));
        let r = std::panic::catch_unwind(|| {
            Invariants::default().that(false, || "(expected) a failed invariant panics".into())
        });
        assert!(r.is_err());
    }
}
