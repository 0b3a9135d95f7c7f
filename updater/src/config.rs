//! The device config file, `/etc/slotctl/slotctl.toml` (or `--config`).
//!
//! Every key is optional; unknown keys are an error naming the key
//! (`deny_unknown_fields`), so a typo never silently falls back to a default.
//! `packaging/slotctl.toml.example` and the man page `slotctl.toml(5)`
//! (`gen-docs/man/slotctl.toml.5`) document each key. Every number has a
//! documented range ([`bounds`]), checked on load: a config that passes
//! loads into values no arithmetic of slotctl can overflow with. The file
//! itself must be a regular file (a symlink to one is fine) of at most
//! [`MAX_CONFIG_BYTES`].

pub mod bounds;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::Globals;

/// Where the config lives when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/slotctl/slotctl.toml";
/// A config file larger than this is refused (the example is 4 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The disk holding the slots; default: the disk of the booted root.
    pub disk: Option<PathBuf>,
    /// The device's `compatible` string; images must carry exactly this.
    pub compatible: Option<String>,
    /// Directory of trusted SPKI PEM public keys.
    pub keyring: PathBuf,
    /// How many distinct trusted signatures an image needs (1 to 256).
    pub signature_threshold: usize,
    /// Tries a newly activated slot gets (1..=15).
    pub tries: u8,
    /// Role whose partition carries a slot's flags; default: the slot's first
    /// partition in table order.
    pub flags_role: Option<String>,
    /// Slot roles images do not carry (e.g. a per-slot DATA partition):
    /// slotctl never writes nor verifies them. Every other role of a slot
    /// must be covered by each image installed into it
    /// (`crate::install::roles`).
    pub unmanaged_roles: Vec<String>,
    /// Where the lock file lives (one updater at a time).
    pub lock_file: PathBuf,
    /// Directory for the agent's small persistent state.
    pub state_dir: PathBuf,
    pub boot_check: BootCheck,
    pub tls: Tls,
    pub http: Http,
    /// The OTA agent: feed, interval, reboot window (`crate::agent`).
    pub agent: crate::agent::config::AgentConfig,
    /// A hawkBit DDI server instead of the feed (`crate::ddi`).
    pub ddi: Option<crate::ddi::config::DdiConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            disk: None,
            compatible: None,
            keyring: PathBuf::from("/etc/slotctl/keys"),
            signature_threshold: 1,
            tries: 3,
            flags_role: None,
            unmanaged_roles: Vec::new(),
            lock_file: PathBuf::from("/run/slotctl.lock"),
            state_dir: PathBuf::from("/var/lib/slotctl"),
            boot_check: BootCheck::default(),
            tls: Tls::default(),
            http: Http::default(),
            agent: Default::default(),
            ddi: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootCheck {
    /// Reboot after marking a failed boot bad.
    pub reboot_on_failure: bool,
    /// Health checks, run in order; all must pass.
    pub checks: Vec<HealthCheck>,
    /// argv of the command that reboots the machine (used by boot-check on
    /// failure and by `install --reboot`). Empty: `sync()` then the
    /// `reboot(2)` system call.
    pub reboot_command: Vec<String>,
}

impl Default for BootCheck {
    fn default() -> Self {
        BootCheck {
            reboot_on_failure: true,
            checks: Vec::new(),
            reboot_command: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// A name for logs.
    pub name: String,
    /// argv: program and its arguments (no shell unless you name one).
    pub command: Vec<String>,
    /// Seconds before the check counts as failed (1 to 86400).
    #[serde(default = "default_check_timeout")]
    pub timeout_secs: u64,
}

fn default_check_timeout() -> u64 {
    60
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// CA certificates (PEM) trusted for https:// sources. When set they
    /// replace the built-in web PKI roots: the device then trusts exactly
    /// its update server's CA.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Seconds to wait for a TCP (and TLS) connection (1 to 3600).
    pub connect_timeout_secs: u64,
    /// Seconds without a single body byte before the connection counts as
    /// stalled and is resumed (1 to 3600).
    pub stall_timeout_secs: u64,
    /// Reconnects allowed over a whole download (each resumes with Range;
    /// 0 to 1000).
    pub retries: u32,
    /// First backoff between attempts, doubled each time up to the max
    /// (each 0 to 3600000).
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Seconds the whole download may take, retries and backoff included
    /// (1..=604800); when they pass, it fails and is not retried.
    pub deadline_secs: u64,
    /// Throughput floor: a connection averaging fewer bytes per second than
    /// this over `min_speed_window_secs` is resumed like a stalled one
    /// (0..=1 GiB/s; 0 turns the floor off).
    pub min_bytes_per_sec: u64,
    /// The window of the floor (1..=3600 s).
    pub min_speed_window_secs: u64,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            connect_timeout_secs: 15,
            stall_timeout_secs: 30,
            retries: 10,
            backoff_initial_ms: 1000,
            backoff_max_ms: 30_000,
            deadline_secs: 6 * 3600,
            min_bytes_per_sec: 1024,
            min_speed_window_secs: 60,
        }
    }
}

impl Config {
    /// Load the config named by `--config`, else the default path if it
    /// exists, else the built-in defaults. A named file that is missing is an
    /// error; so is any unknown key.
    pub fn load(globals: &Globals) -> anyhow::Result<Config> {
        let (path, must_exist) = match &globals.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        if !must_exist && !path.exists() {
            return Ok(Config::default());
        }
        Self::from_file(&path)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        use crate::localfile::{read_bounded_text, FileError, Links};
        let text =
            read_bounded_text(path, Links::Follow, MAX_CONFIG_BYTES).map_err(|e| match e {
                FileError::Io(e) => anyhow::anyhow!("cannot read config {}: {e}", path.display()),
                e => anyhow::anyhow!("config {}: {e}", path.display()),
            })?;
        let cfg: Config = toml::from_str(&text).map_err(|e| {
            // toml's message spans several lines; keep the first and the
            // line it is about (which names the key).
            let msg = e.message().replace('\n', " ");
            match e.span().map(|s| line_at(&text, s.start)) {
                Some((n, line)) => {
                    anyhow::anyhow!("config {}: line {n}: {line}: {msg}", path.display())
                }
                None => anyhow::anyhow!("config {}: {msg}", path.display()),
            }
        })?;
        cfg.validate_bounds()
            .and_then(|()| cfg.agent.validate())
            .and_then(|()| cfg.ddi.as_ref().map_or(Ok(()), |d| d.validate()))
            .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        for c in &cfg.boot_check.checks {
            if c.command.is_empty() || c.command[0].is_empty() {
                anyhow::bail!(
                    "config {}: health check {:?} has an empty command",
                    path.display(),
                    c.name
                );
            }
        }
        for (i, r) in cfg.unmanaged_roles.iter().enumerate() {
            // The image format's role names: 1..32 of [A-Za-z0-9_].
            if r.is_empty()
                || r.len() > 32
                || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                anyhow::bail!(
                    "config {}: unmanaged_roles: {r:?} is not a role name (1 to 32 of A-Z a-z 0-9 _)",
                    path.display()
                );
            }
            if cfg.unmanaged_roles[..i].contains(r) {
                anyhow::bail!(
                    "config {}: unmanaged_roles names {r:?} twice",
                    path.display()
                );
            }
        }
        Ok(cfg)
    }

    /// Every number within its documented range ([`bounds`]).
    pub fn validate_bounds(&self) -> Result<(), String> {
        bounds::check(self)
    }

    /// The disk to operate on: `--disk`, else the config's, else None (the
    /// caller then finds the booted root's disk).
    pub fn disk_path(&self, globals: &Globals) -> Option<PathBuf> {
        globals.disk.clone().or_else(|| self.disk.clone())
    }
}

/// The 1-based number and the text (trimmed, at most 80 characters) of the
/// line holding byte `at` of `text`.
fn line_at(text: &str, at: usize) -> (usize, String) {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let n = text[..start].matches('\n').count() + 1;
    (n, text[start..end].trim().chars().take(80).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "tries = 3\ntriez = 4\n").unwrap();
        let err = Config::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("triez"), "{err}");
    }

    #[test]
    fn defaults_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "compatible = \"acme-gw\"\ntries = 5\n[boot_check]\nreboot_on_failure = false\n[[boot_check.checks]]\nname = \"ok\"\ncommand = [\"true\"]\n",
        )
        .unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.tries, 5);
        assert_eq!(c.compatible.as_deref(), Some("acme-gw"));
        assert!(!c.boot_check.reboot_on_failure);
        assert_eq!(c.boot_check.checks[0].timeout_secs, 60);
        assert_eq!(c.signature_threshold, 1);
    }

    const EXAMPLE: &str = include_str!("../../packaging/slotctl.toml.example");

    /// The example is the Debian package's conffile: as shipped it loads,
    /// and every value it leaves uncommented is the default (the site
    /// values, `compatible`, the health checks, the feed, the reboot
    /// window, are commented out).
    #[test]
    fn example_as_shipped_loads_as_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, EXAMPLE).unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.compatible, None);
        assert!(c.boot_check.checks.is_empty());
        assert_eq!(c.agent.feed_url, None);
        assert_eq!(c.agent.reboot_window, None);
        assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
    }

    /// The site values the example shows commented out are valid once a
    /// site uncomments them.
    #[test]
    fn example_site_values_load_when_uncommented() {
        const SITE: [&str; 8] = [
            "compatible =",
            "[[boot_check.checks]]",
            "name =",
            "command =",
            "timeout_secs =",
            "feed_url =",
            "reboot_window =",
            "ca_file =",
        ];
        // The [ddi] table at the end is all commented out, header
        // included: it is uncommented whole, or not at all.
        let (main, ddi) = EXAMPLE.split_at(EXAMPLE.find("\n# [ddi]\n").expect("[ddi]") + 1);
        let text: String = main
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if SITE.iter().any(|k| rest.starts_with(k)) => rest,
                _ => l,
            })
            .chain(ddi.lines().map(|l| l.strip_prefix("# ").unwrap_or(l)))
            .flat_map(|l| [l, "\n"])
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.compatible.as_deref(), Some("acme-gateway-v2"));
        assert_eq!(c.boot_check.checks.len(), 2);
        assert_eq!(c.boot_check.checks[0].timeout_secs, 20);
        assert_eq!(c.boot_check.checks[1].timeout_secs, 60);
        assert_eq!(
            c.agent.feed_url.as_deref(),
            Some("https://updates.example.com/acme-gw/feed.json")
        );
        assert_eq!(c.agent.reboot_window.as_deref(), Some("02:00-04:00"));
        assert_eq!(
            c.tls.ca_file.as_deref(),
            Some(Path::new("/etc/slotctl/update-ca.pem"))
        );
        assert_eq!(c.http.retries, 10);
        let ddi = c.ddi.expect("[ddi] uncommented");
        assert_eq!(ddi.server_url, "https://hawkbit.example.com");
        assert_eq!(ddi.controller_id.as_deref(), Some("gw-0042"));
        assert_eq!(
            ddi.ca_file.as_deref(),
            Some(Path::new("/etc/slotctl/ddi-ca.pem"))
        );
    }

    #[test]
    fn empty_check_command_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[[boot_check.checks]]\nname = \"x\"\ncommand = []\n").unwrap();
        let e = Config::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("\"x\"") && e.contains("empty"), "{e}");
    }

    #[test]
    fn http_deadline_and_floor_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let d = Config::default();
        assert_eq!(d.http.deadline_secs, 21600);
        assert_eq!(d.http.min_bytes_per_sec, 1024);
        assert_eq!(d.http.min_speed_window_secs, 60);
        for bad in [
            "deadline_secs = 0",
            "deadline_secs = 604801",
            "deadline_secs = 9223372036854775807",
            "min_bytes_per_sec = 1073741825",
            "min_speed_window_secs = 0",
            "min_speed_window_secs = 3601",
        ] {
            std::fs::write(&p, format!("[http]\n{bad}\n")).unwrap();
            let e = Config::from_file(&p).unwrap_err().to_string();
            let key = bad.split(' ').next().unwrap();
            assert!(e.contains(&format!("http.{key} = ")), "{bad}: {e}");
        }
        std::fs::write(
            &p,
            "[http]\ndeadline_secs = 604800\nmin_bytes_per_sec = 0\nmin_speed_window_secs = 3600\n",
        )
        .unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.http.deadline_secs, 604800);
        assert_eq!(c.http.min_bytes_per_sec, 0);
    }

    #[test]
    fn unmanaged_roles_are_role_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "unmanaged_roles = [\"DATA\", \"HASH_2\"]\n").unwrap();
        assert_eq!(
            Config::from_file(&p).unwrap().unmanaged_roles,
            ["DATA", "HASH_2"]
        );
        for bad in ["\"\"", "\"DATA-A\"", "\"DATA\", \"DATA\""] {
            std::fs::write(&p, format!("unmanaged_roles = [{bad}]\n")).unwrap();
            let e = Config::from_file(&p).unwrap_err().to_string();
            assert!(e.contains("unmanaged_roles"), "{bad}: {e}");
        }
        assert!(Config::default().unmanaged_roles.is_empty());
    }

    #[test]
    fn tries_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "tries = 16\n").unwrap();
        assert!(Config::from_file(&p).is_err());
    }
}
