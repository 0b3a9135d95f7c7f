//! The last feed check (`state_dir/last-check.json`): when `check`,
//! `update` or an agent cycle last asked the feed, and what came of it.
//!
//! Its own file, not a field of the agent state (`agent.json`,
//! [`super::state`]): that file's schema refuses unknown fields, and an
//! older slotctl in the other slot would then refuse the shared state after
//! a rollback. Written as the state is (temp file, fsync, rename, fsync of
//! the directory); read bounded, refusing anything but a regular file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::StateError;
use crate::feed::time::Timestamp;
use crate::localfile::{read_bounded, FileError, Links};

/// The file's name inside the state directory.
pub const LAST_CHECK_FILE: &str = "last-check.json";
const MAX_BYTES: u64 = 64 * 1024;

/// What the last check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Nothing to install now.
    UpToDate,
    /// A release to install (and not installed by this run).
    UpdateAvailable,
    /// A release was installed.
    Installed,
    /// The check or the update failed.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCheck {
    pub at: Timestamp,
    pub outcome: Outcome,
    /// The release found or installed.
    pub version: Option<String>,
    /// Why (check's reason) or the error.
    pub message: String,
}

impl LastCheck {
    pub fn now(outcome: Outcome, version: Option<String>, message: impl Into<String>) -> Self {
        LastCheck {
            at: Timestamp::now(),
            outcome,
            version,
            message: message.into(),
        }
    }

    pub fn error(e: &anyhow::Error) -> Self {
        LastCheck::now(Outcome::Error, None, format!("{e:#}").replace('\n', " "))
    }
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(LAST_CHECK_FILE)
}

/// The last check, if one was recorded.
pub fn read(state_dir: &Path) -> Result<Option<LastCheck>, StateError> {
    let path = path(state_dir);
    let bytes = match read_bounded(&path, Links::Refuse, MAX_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(FileError::Io(err)) => return Err(StateError::Io { path, err }),
        Err(err) => return Err(StateError::Refused { path, err }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            path,
            detail: e.to_string(),
        })
}

/// Save atomically, creating the directory if needed.
pub fn save(state_dir: &Path, lc: &LastCheck) -> Result<(), StateError> {
    let path = path(state_dir);
    let io = |err| StateError::Io {
        path: path.clone(),
        err,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let mut bytes = serde_json::to_vec_pretty(lc).expect("always serializes");
    bytes.push(b'\n');
    crate::localfile::write_atomic(&path, &bytes, 0o644).map_err(io)
}

/// Record `lc`; a failure to write it is a warning (the check's own result
/// stands).
pub fn record(state_dir: &Path, lc: &LastCheck) {
    if let Err(e) = save(state_dir, lc) {
        let line = format!("recording the last check: {e}");
        eprintln!("slotctl: warning: {}", crate::term::printable(&line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("sub");
        assert_eq!(read(&sub).unwrap(), None);
        let lc = LastCheck::now(Outcome::UpdateAvailable, Some("1.2.0".into()), "why");
        save(&sub, &lc).unwrap();
        assert_eq!(read(&sub).unwrap(), Some(lc));
        let text = std::fs::read_to_string(sub.join(LAST_CHECK_FILE)).unwrap();
        assert!(text.contains("\"outcome\": \"update-available\""), "{text}");
        std::fs::write(sub.join(LAST_CHECK_FILE), b"{\"at\": 5}").unwrap();
        assert!(matches!(read(&sub), Err(StateError::Corrupt { .. })));
    }
}
