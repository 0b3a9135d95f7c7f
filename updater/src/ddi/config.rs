//! The `[ddi]` table of the config: when present, `check`, `update` and
//! `agent` talk to a hawkBit DDI server instead of reading the feed
//! (docs/ddi.md).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use serde::Deserialize;

use crate::localfile::{read_bounded_text, Links};

/// Where the controller id comes from when the config names none.
pub const MACHINE_ID: &str = "/etc/machine-id";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdiConfig {
    /// The server's base URL, `http(s)://host[:port][/prefix]`.
    pub server_url: String,
    /// The tenant (hawkBit's default: `DEFAULT`).
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// This device's controller id; default: the content of
    /// /etc/machine-id (`machine_id_file`).
    #[serde(default)]
    pub controller_id: Option<String>,
    /// Read the default controller id from here.
    #[serde(default = "default_machine_id")]
    pub machine_id_file: PathBuf,
    /// A file holding the target security token (sent as
    /// `Authorization: TargetToken ...`); none: no token is sent.
    #[serde(default)]
    pub target_token_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for the DDI server and its downloads,
    /// over `tls.ca_file`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_tenant() -> String {
    "DEFAULT".into()
}

fn default_machine_id() -> PathBuf {
    PathBuf::from(MACHINE_ID)
}

/// A controller id or tenant: what hawkBit accepts in a path segment.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && s != "."
        && s != ".."
}

fn read_small(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = read_bounded_text(path, Links::Follow, 4096)
        .map_err(|e| anyhow!("ddi: cannot read the {what} {}: {e}", path.display()))?;
    let t = text.trim().to_string();
    if t.is_empty() {
        bail!("ddi: the {what} {} is empty", path.display());
    }
    Ok(t)
}

impl DdiConfig {
    /// Checked on load: the URL's scheme, the tenant and id's characters.
    pub fn validate(&self) -> Result<(), String> {
        if !crate::source::is_url(&self.server_url) {
            return Err(format!(
                "ddi.server_url {:?} must start with http:// or https://",
                self.server_url
            ));
        }
        if !valid_segment(&self.tenant) {
            return Err(format!(
                "ddi.tenant {:?} must be 1 to 256 of A-Z a-z 0-9 - _ . :",
                self.tenant
            ));
        }
        if let Some(id) = &self.controller_id {
            if !valid_segment(id) {
                return Err(format!(
                    "ddi.controller_id {id:?} must be 1 to 256 of A-Z a-z 0-9 - _ . :"
                ));
            }
        }
        Ok(())
    }

    /// The controller id: the config's, else the machine id file's content.
    pub fn controller_id(&self) -> anyhow::Result<String> {
        if let Some(id) = &self.controller_id {
            return Ok(id.clone());
        }
        let id = read_small(&self.machine_id_file, "machine id file")?;
        if !valid_segment(&id) {
            bail!(
                "ddi: the machine id in {} is not a controller id (A-Z a-z 0-9 - _ . :)",
                self.machine_id_file.display()
            );
        }
        Ok(id)
    }

    /// The target token, when a file is named.
    pub fn target_token(&self) -> anyhow::Result<Option<String>> {
        let Some(p) = &self.target_token_file else {
            return Ok(None);
        };
        let t = read_small(p, "target token file")?;
        if t.bytes().any(|b| !b.is_ascii_graphic()) {
            bail!(
                "ddi: the target token in {} holds spaces or control characters",
                p.display()
            );
        }
        Ok(Some(t))
    }

    /// `{server_url}/{tenant}/controller/v1/{controller_id}`.
    pub fn base_url(&self) -> anyhow::Result<String> {
        Ok(format!(
            "{}/{}/controller/v1/{}",
            self.server_url.trim_end_matches('/'),
            self.tenant,
            self.controller_id()?
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<DdiConfig, String> {
        let c: DdiConfig = toml::from_str(&format!("server_url = \"http://127.0.0.1:1\"\n{extra}"))
            .map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let mid = dir.path().join("machine-id");
        std::fs::write(&mid, "0123abcd\n").unwrap();
        let c = cfg(&format!("machine_id_file = \"{}\"", mid.display())).unwrap();
        assert_eq!(c.tenant, "DEFAULT");
        assert_eq!(
            c.base_url().unwrap(),
            "http://127.0.0.1:1/DEFAULT/controller/v1/0123abcd"
        );
        assert!(cfg("controller_id = \"a/b\"")
            .unwrap_err()
            .contains("controller_id"));
        assert!(cfg("tenant = \"..\"").unwrap_err().contains("tenant"));
        assert!(cfg("bogus = 1").unwrap_err().contains("bogus"));
        let c: DdiConfig = toml::from_str("server_url = \"ftp://x\"").unwrap();
        assert!(c.validate().unwrap_err().contains("http://"));
        let c = cfg("controller_id = \"dev-1\"\ntarget_token_file = \"/nonexistent/t\"").unwrap();
        let e = c.target_token().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/t"), "{e}");
    }
}
