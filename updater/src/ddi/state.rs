//! The DDI action being reported, `state_dir/ddi-action.json`: kept from
//! the install until the server has been told how it ended (committed by
//! boot-check, or fallen back), across the reboot. Its own file, not a
//! field of `agent.json` (whose `State` refuses unknown fields, and which
//! an older slotctl in the other slot must still read). Written atomically
//! ([`crate::localfile::write_atomic`]); read refusing symlinks and
//! anything but a small regular file.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};

use crate::feed::time::Timestamp;
use crate::localfile::{read_bounded, write_atomic, Links};

pub const ACTION_FILE: &str = "ddi-action.json";
const MAX_ACTION_BYTES: u64 = 64 * 1024;

/// Unknown fields are ignored (unlike `agent.json`'s `State`): a newer
/// slotctl in the other slot may add some, and this one must still report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The server's action id.
    pub id: String,
    /// The feedback URL: the deploymentBase href's path + `/feedback`.
    pub feedback: String,
    /// The version installed for it, and the slot it went into.
    pub version: String,
    pub slot: String,
    pub installed_at: Timestamp,
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(ACTION_FILE)
}

pub fn read(state_dir: &Path) -> anyhow::Result<Option<Action>> {
    let p = path(state_dir);
    let bytes = match read_bounded(&p, Links::Refuse, MAX_ACTION_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(anyhow!("state {}: {e}", p.display())),
    };
    let a = serde_json::from_slice(&bytes).map_err(|e| {
        anyhow!(
            "state {} is corrupt ({e}); move it away to start afresh",
            p.display()
        )
    })?;
    Ok(Some(a))
}

pub fn save(state_dir: &Path, a: &Action) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let mut bytes = serde_json::to_vec_pretty(a)?;
    bytes.push(b'\n');
    let p = path(state_dir);
    write_atomic(&p, &bytes, 0o644).with_context(|| format!("writing {}", p.display()))
}

pub fn clear(state_dir: &Path) -> anyhow::Result<()> {
    let p = path(state_dir);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!("removing {}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_clear() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), None);
        let a = Action {
            id: "4".into(),
            feedback: "http://x/deploymentBase/4/feedback".into(),
            version: "1.1.0".into(),
            slot: "B".into(),
            installed_at: Timestamp::now(),
        };
        save(d.path(), &a).unwrap();
        assert_eq!(read(d.path()).unwrap(), Some(a));
        clear(d.path()).unwrap();
        assert_eq!(read(d.path()).unwrap(), None);
        std::fs::write(path(d.path()), "{").unwrap();
        assert!(read(d.path()).unwrap_err().to_string().contains("corrupt"));
    }
}
