//! The device's small persistent state (`state_dir/agent.json`): the last
//! feed serial seen, its rollout seed, the version an update installed and
//! awaits, and the versions that failed here. Every write is atomic: a temp
//! file created exclusively under an unpredictable name in the same
//! directory, fsync, rename over the old file, fsync of the directory — a
//! power cut leaves the old state or the new one, never a mix. Reads refuse
//! a symlink, a FIFO, a device or anything but a regular file, and a file
//! larger than 256 KiB ([`crate::localfile`]): whoever can write the state
//! directory cannot make `check` write elsewhere, hang, or read forever.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::feed::time::Timestamp;
use crate::localfile::{read_bounded, FileError, Links};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "agent.json";
/// The seeds are drawn from 0..SEED_RANGE (Bottlerocket's 2048).
pub const SEED_RANGE: u32 = 2048;
/// A state file larger than this is refused (it holds a few hundred bytes).
const MAX_STATE_BYTES: u64 = 256 * 1024;
/// Failed versions kept (the oldest are forgotten first).
const MAX_FAILED: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("state {path}: {err}; move it away to start afresh")]
    Refused {
        path: PathBuf,
        err: crate::localfile::FileError,
    },
    #[error("state {path} is corrupt ({detail}); move it away to start afresh")]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot draw a random seed: {0}")]
    Random(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// This device's place in rollouts, 0..2048, drawn once.
    pub seed: u32,
    /// The highest feed serial accepted, and the SHA-256 of that feed's
    /// signed text.
    #[serde(default)]
    pub last_serial: Option<u64>,
    #[serde(default)]
    pub last_feed_sha256: Option<String>,
    /// The version `update` installed and has not yet seen committed.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// Versions installed here that were rolled back: never taken again
    /// automatically.
    #[serde(default)]
    pub failed: Vec<FailedVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub version: String,
    /// The slot it went into (A or B).
    pub slot: String,
    pub installed_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedVersion {
    pub version: String,
    /// When this device noticed the rollback.
    pub at: Timestamp,
    pub reason: String,
}

impl State {
    pub fn is_failed(&self, version: &str) -> Option<&FailedVersion> {
        self.failed.iter().find(|f| f.version == version)
    }

    pub fn add_failed(&mut self, version: &str, at: Timestamp, reason: &str) {
        if self.is_failed(version).is_some() {
            return;
        }
        self.failed.push(FailedVersion {
            version: version.to_string(),
            at,
            reason: reason.to_string(),
        });
        if self.failed.len() > MAX_FAILED {
            let drop = self.failed.len() - MAX_FAILED;
            self.failed.drain(..drop);
        }
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |err| StateError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// A random number from the operating system in 0..bound (bound > 0).
pub fn random_below(bound: u32) -> Result<u32, StateError> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| StateError::Random(e.to_string()))?;
    Ok((u64::from_le_bytes(b) % u64::from(bound.max(1))) as u32)
}

impl StateDir {
    pub fn new(dir: &Path) -> StateDir {
        StateDir {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state, if there is one.
    pub fn read(&self) -> Result<Option<State>, StateError> {
        let path = self.path();
        let bytes = match read_bounded(&path, Links::Refuse, MAX_STATE_BYTES) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(FileError::Io(err)) => return Err(StateError::Io { path, err }),
            Err(err) => return Err(StateError::Refused { path, err }),
        };
        let st: State = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if st.seed >= SEED_RANGE {
            return Err(StateError::Corrupt {
                path,
                detail: format!("seed {} out of range", st.seed),
            });
        }
        Ok(Some(st))
    }

    /// The saved state, or a new one with a freshly drawn seed (not yet
    /// saved: the caller saves it with whatever it changes).
    pub fn load_or_new(&self) -> Result<(State, bool), StateError> {
        match self.read()? {
            Some(s) => Ok((s, false)),
            None => Ok((
                State {
                    seed: random_below(SEED_RANGE)?,
                    last_serial: None,
                    last_feed_sha256: None,
                    pending: None,
                    failed: Vec::new(),
                },
                true,
            )),
        }
    }

    /// Save atomically, creating the directory if needed.
    pub fn save(&self, st: &State) -> Result<(), StateError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let mut bytes = serde_json::to_vec_pretty(st).expect("state always serializes");
        bytes.push(b'\n');
        crate::localfile::write_atomic(&self.path(), &bytes, 0o644).map_err(io(&self.path()))
    }
}

/// The versions that failed on this device (for `slotctl status`): empty
/// when there is no state yet.
pub fn failed_versions(state_dir: &Path) -> Result<Vec<FailedVersion>, StateError> {
    Ok(StateDir::new(state_dir)
        .read()?
        .map(|s| s.failed)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_roundtrip_and_no_temp_left() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::new(&d.path().join("sub"));
        assert!(sd.read().unwrap().is_none());
        let (mut st, fresh) = sd.load_or_new().unwrap();
        assert!(fresh && st.seed < SEED_RANGE);
        st.last_serial = Some(4);
        st.add_failed("1.2.0", Timestamp(77), "rolled back");
        st.add_failed("1.2.0", Timestamp(78), "again");
        sd.save(&st).unwrap();
        let back = sd.read().unwrap().unwrap();
        assert_eq!(back, st);
        assert_eq!(back.failed.len(), 1);
        let names: Vec<_> = fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATE_FILE.to_string()]);
        let f = failed_versions(&d.path().join("sub")).unwrap();
        assert_eq!(f[0].at, Timestamp(77));
        assert!(failed_versions(&d.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn corrupt_state_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::new(d.path());
        fs::write(sd.path(), b"{\"seed\": 5, \"last_serial\": ").unwrap();
        assert!(matches!(sd.read(), Err(StateError::Corrupt { .. })));
        fs::write(sd.path(), b"{\"seed\": 4096}").unwrap();
        assert!(matches!(sd.read(), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn failed_list_is_bounded() {
        let mut st = State {
            seed: 1,
            last_serial: None,
            last_feed_sha256: None,
            pending: None,
            failed: vec![],
        };
        for i in 0..(MAX_FAILED + 5) {
            st.add_failed(&format!("1.0.{i}"), Timestamp(i as u64), "x");
        }
        assert_eq!(st.failed.len(), MAX_FAILED);
        assert_eq!(st.failed[0].version, "1.0.5");
    }
}
