//! What `check` decides, as pure functions: which release of a verified
//! feed this device takes now, and why each other release is not taken.
//!
//! Waves follow Bottlerocket's scheme: each device drew a seed in
//! `0..2048` once; a wave with cumulative share `p` percent covers the seeds
//! below `p * 2048 / 100`, and a device's wave is the first one that covers
//! its seed. It takes the release once that wave's start time has passed.

use serde::Serialize;

use super::state::{FailedVersion, SEED_RANGE};
use crate::feed::doc::{Release, Wave};
use crate::feed::time::Timestamp;

/// Seeds below this are covered by a wave of `percent`.
pub fn seed_threshold(percent: u8) -> u32 {
    u32::from(percent.min(100)) * SEED_RANGE / 100
}

/// The wave that covers `seed`, if any.
pub fn wave_for(seed: u32, rollout: &[Wave]) -> Option<&Wave> {
    rollout.iter().find(|w| seed < seed_threshold(w.percent))
}

/// What the device runs now.
#[derive(Debug, Clone)]
pub struct Running {
    /// The booted slot's version (from its slot record); None when the slot
    /// holds no record: then every release counts as newer.
    pub version: Option<semver::Version>,
    pub rollback_index: u64,
}

/// Why a release is or is not taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Verdict {
    /// Eligible now.
    Eligible,
    Pulled {
        at: Timestamp,
    },
    NotNewer {
        running: String,
    },
    RollbackIndexTooLow {
        release: u64,
        running: u64,
    },
    FailedHere {
        at: Timestamp,
    },
    WaveNotOpen {
        opens: Timestamp,
        percent: u8,
    },
    NotInRollout {
        percent: u8,
    },
    BadVersion,
}

impl Verdict {
    pub fn describe(&self) -> String {
        match self {
            Verdict::Eligible => "eligible".into(),
            Verdict::Pulled { at } => format!("pulled at {at}"),
            Verdict::NotNewer { running } => format!("not newer than the running {running}"),
            Verdict::RollbackIndexTooLow { release, running } => {
                format!("rollback index {release} is below the running {running}")
            }
            Verdict::FailedHere { at } => {
                format!("failed on this device (rolled back, noticed {at}); not retried")
            }
            Verdict::WaveNotOpen { opens, percent } => {
                format!("this device's wave ({percent}% of the fleet) opens at {opens}")
            }
            Verdict::NotInRollout { percent } => {
                format!("the rollout reaches {percent}% of the fleet, not this device yet")
            }
            Verdict::BadVersion => "unparsable version".into(),
        }
    }
}

/// One release and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Considered {
    pub version: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The verdict on one release.
pub fn judge(
    r: &Release,
    running: &Running,
    failed: &[FailedVersion],
    seed: u32,
    now: Timestamp,
) -> Verdict {
    let Some(v) = r.semver() else {
        return Verdict::BadVersion;
    };
    if let Some(at) = r.pulled {
        return Verdict::Pulled { at };
    }
    if let Some(f) = failed.iter().find(|f| f.version == r.version) {
        return Verdict::FailedHere { at: f.at };
    }
    if let Some(cur) = &running.version {
        if &v <= cur {
            return Verdict::NotNewer {
                running: cur.to_string(),
            };
        }
    }
    if r.rollback_index < running.rollback_index {
        return Verdict::RollbackIndexTooLow {
            release: r.rollback_index,
            running: running.rollback_index,
        };
    }
    match wave_for(seed, &r.rollout) {
        None => Verdict::NotInRollout {
            percent: r.rollout.last().map(|w| w.percent).unwrap_or(0),
        },
        Some(w) if now < w.start => Verdict::WaveNotOpen {
            opens: w.start,
            percent: w.percent,
        },
        Some(_) => Verdict::Eligible,
    }
}

/// Judge every release (newest first) and pick the newest eligible one.
pub fn choose<'a>(
    releases: &'a [Release],
    running: &Running,
    failed: &[FailedVersion],
    seed: u32,
    now: Timestamp,
) -> (Option<&'a Release>, Vec<Considered>) {
    let mut sorted: Vec<&Release> = releases.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.semver()));
    let mut chosen = None;
    let mut considered = Vec::new();
    for r in sorted {
        let verdict = judge(r, running, failed, seed, now);
        if verdict == Verdict::Eligible && chosen.is_none() {
            chosen = Some(r);
        }
        considered.push(Considered {
            version: r.version.clone(),
            verdict,
        });
    }
    (chosen, considered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(version: &str, waves: &[(u64, u8)]) -> Release {
        Release {
            version: version.into(),
            rollback_index: 2,
            url: "x.img".into(),
            size: 1,
            sha256: "00".repeat(32),
            header_sha256: "11".repeat(32),
            rollout: waves
                .iter()
                .map(|&(start, percent)| Wave {
                    start: Timestamp(start),
                    percent,
                })
                .collect(),
            pulled: None,
        }
    }

    fn running(v: &str) -> Running {
        Running {
            version: Some(semver::Version::parse(v).unwrap()),
            rollback_index: 2,
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!(seed_threshold(100), 2048);
        assert_eq!(seed_threshold(10), 204);
        assert_eq!(seed_threshold(50), 1024);
    }

    #[test]
    fn waves_on_both_sides_of_a_boundary() {
        // 10% at t=100, 50% at t=200, 100% at t=300.
        let r = rel("1.1.0", &[(100, 10), (200, 50), (300, 100)]);
        let run = running("1.0.0");
        // Seed 203 is in the first wave (threshold 204), 204 in the second.
        assert_eq!(judge(&r, &run, &[], 203, Timestamp(150)), Verdict::Eligible);
        assert_eq!(
            judge(&r, &run, &[], 204, Timestamp(150)),
            Verdict::WaveNotOpen {
                opens: Timestamp(200),
                percent: 50
            }
        );
        assert_eq!(judge(&r, &run, &[], 204, Timestamp(200)), Verdict::Eligible);
        assert_eq!(
            judge(&r, &run, &[], 1023, Timestamp(250)),
            Verdict::Eligible
        );
        assert!(matches!(
            judge(&r, &run, &[], 1024, Timestamp(250)),
            Verdict::WaveNotOpen { percent: 100, .. }
        ));
        assert_eq!(
            judge(&r, &run, &[], 2047, Timestamp(300)),
            Verdict::Eligible
        );
        // Nobody before the first wave opens.
        assert!(matches!(
            judge(&r, &run, &[], 0, Timestamp(99)),
            Verdict::WaveNotOpen { .. }
        ));
        // A rollout that stops at 50% never reaches seed 1024.
        let half = rel("1.1.0", &[(100, 50)]);
        assert_eq!(
            judge(&half, &run, &[], 1024, Timestamp(1_000_000)),
            Verdict::NotInRollout { percent: 50 }
        );
        assert_eq!(
            judge(&half, &run, &[], 1023, Timestamp(1_000_000)),
            Verdict::Eligible
        );
    }

    #[test]
    fn picks_newest_eligible_and_explains_the_rest() {
        let mut pulled = rel("1.4.0", &[(0, 100)]);
        pulled.pulled = Some(Timestamp(9));
        let later = rel("1.3.0", &[(1000, 100)]);
        let failed = rel("1.2.5", &[(0, 100)]);
        let ok = rel("1.2.0", &[(0, 100)]);
        let mut low = rel("1.1.0", &[(0, 100)]);
        low.rollback_index = 1;
        let old = rel("0.9.0", &[(0, 100)]);
        let rels = vec![old, ok, pulled, later, failed, low];
        let f = vec![FailedVersion {
            version: "1.2.5".into(),
            at: Timestamp(5),
            reason: "rolled back".into(),
        }];
        let (c, why) = choose(&rels, &running("1.0.0"), &f, 7, Timestamp(500));
        assert_eq!(c.unwrap().version, "1.2.0");
        let v: Vec<_> = why
            .iter()
            .map(|c| (c.version.as_str(), &c.verdict))
            .collect();
        assert_eq!(v[0], ("1.4.0", &Verdict::Pulled { at: Timestamp(9) }));
        assert!(matches!(v[1], ("1.3.0", Verdict::WaveNotOpen { .. })));
        assert_eq!(v[2], ("1.2.5", &Verdict::FailedHere { at: Timestamp(5) }));
        assert_eq!(v[3], ("1.2.0", &Verdict::Eligible));
        assert!(matches!(
            v[4],
            (
                "1.1.0",
                Verdict::RollbackIndexTooLow {
                    release: 1,
                    running: 2
                }
            )
        ));
        assert!(matches!(v[5], ("0.9.0", Verdict::NotNewer { .. })));
        // Nothing newer: nothing chosen.
        let (c, _) = choose(&rels, &running("1.2.0"), &f, 7, Timestamp(500));
        assert!(c.is_none());
        // No record on the booted slot: the newest eligible is taken.
        let none = Running {
            version: None,
            rollback_index: 0,
        };
        let (c, _) = choose(&rels, &none, &[], 7, Timestamp(2000));
        assert_eq!(c.unwrap().version, "1.3.0");
    }
}
