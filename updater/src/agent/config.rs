//! The `[agent]` table of the config file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::feed::time::Timestamp;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// URL of the signed feed (`http://`, `https://`).
    pub feed_url: Option<String>,
    /// Public key file or directory trusted for the feed. Default: the
    /// image keyring (`keyring`).
    pub feed_keyring: Option<PathBuf>,
    /// Distinct trusted signatures a feed needs (1 to 256).
    pub feed_signature_threshold: usize,
    /// A feed larger than this is refused before it is read whole (1 KiB
    /// to 64 MiB).
    pub max_feed_bytes: u64,
    /// Seconds between checks of the agent loop (1 to 30 days).
    pub interval_secs: u64,
    /// Up to this many seconds are added at random to each interval, so a
    /// fleet does not hit the server in step (0 to 30 days).
    pub jitter_secs: u64,
    /// After an error the agent retries after this, doubling up to the max
    /// (1 to 30 days each, max not below initial).
    pub backoff_initial_secs: u64,
    pub backoff_max_secs: u64,
    /// Reboot into the new slot after the agent installed it.
    pub reboot: bool,
    /// When the agent may reboot: "HH:MM-HH:MM" in UTC (may wrap past
    /// midnight). Unset: any time.
    pub reboot_window: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            feed_url: None,
            feed_keyring: None,
            feed_signature_threshold: 1,
            max_feed_bytes: 1 << 20,
            interval_secs: 3600,
            jitter_secs: 600,
            backoff_initial_secs: 60,
            backoff_max_secs: 3600,
            reboot: true,
            reboot_window: None,
        }
    }
}

/// A daily window in UTC, in seconds after midnight: [start, end), wrapping
/// past midnight when end <= start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

impl Window {
    pub fn parse(s: &str) -> Option<Window> {
        let (a, b) = s.trim().split_once('-')?;
        let hm = |t: &str| -> Option<u64> {
            let (h, m) = t.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 3600 + m * 60)
        };
        let w = Window {
            start: hm(a)?,
            end: hm(b)?,
        };
        (w.start != w.end).then_some(w)
    }

    pub fn contains(&self, t: Timestamp) -> bool {
        let s = t.seconds_of_day();
        if self.start < self.end {
            (self.start..self.end).contains(&s)
        } else {
            s >= self.start || s < self.end
        }
    }

    /// Seconds from `t` until the window next opens (0 when inside).
    pub fn wait(&self, t: Timestamp) -> u64 {
        if self.contains(t) {
            return 0;
        }
        let s = t.seconds_of_day();
        (self.start + 86_400 - s) % 86_400
    }
}

impl AgentConfig {
    /// Checks serde cannot express, besides the numbers' ranges (those are
    /// `crate::config::bounds`, checked with them on load).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(u) = &self.feed_url {
            if !crate::source::is_url(u) {
                return Err(format!(
                    "agent.feed_url {u:?} must be an http:// or https:// URL"
                ));
            }
        }
        if let Some(w) = &self.reboot_window {
            if Window::parse(w).is_none() {
                return Err(format!(
                    "agent.reboot_window {w:?}: expected HH:MM-HH:MM (UTC), e.g. 02:00-04:00"
                ));
            }
        }
        Ok(())
    }

    pub fn window(&self) -> Option<Window> {
        self.reboot_window.as_deref().and_then(Window::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        let w = Window::parse("02:00-04:30").unwrap();
        assert!(w.contains(Timestamp(2 * 3600)));
        assert!(w.contains(Timestamp(86_400 + 4 * 3600 + 1799)));
        assert!(!w.contains(Timestamp(4 * 3600 + 1800)));
        assert_eq!(w.wait(Timestamp(3600)), 3600);
        assert_eq!(w.wait(Timestamp(5 * 3600)), 21 * 3600);
        let wrap = Window::parse("22:00-01:00").unwrap();
        assert!(wrap.contains(Timestamp(23 * 3600)));
        assert!(wrap.contains(Timestamp(0)));
        assert!(!wrap.contains(Timestamp(3600)));
        assert_eq!(wrap.wait(Timestamp(21 * 3600)), 3600);
        for bad in [
            "",
            "2:00-04:00",
            "02:00",
            "25:00-01:00",
            "01:00-01:00",
            "01:60-02:00",
        ] {
            assert!(Window::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn validation() {
        let mut c = AgentConfig::default();
        c.validate().unwrap();
        c.feed_url = Some("ftp://x/feed.json".into());
        assert!(c.validate().is_err());
        c.feed_url = Some("http://x/feed.json".into());
        c.reboot_window = Some("nightly".into());
        assert!(c.validate().unwrap_err().contains("reboot_window"));
    }
}
