//! The feed document (docs/feed.md) and its envelope.
//!
//! The envelope is a JSON object `{"signed": STRING, "signatures": [...]}`;
//! `signed` is the feed document as JSON text, and each signature is an
//! ed25519 signature over [`SIGNING_CONTEXT`] followed by the UTF-8 bytes of
//! that string, exactly as they are. Nothing in `signed` is parsed before a
//! trusted signature over it was checked ([`super::verify`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::time::Timestamp;
use super::FeedError;

/// The feed format this code reads and writes.
pub const FORMAT: u32 = 1;

/// What a signature covers: this prefix, then the bytes of `signed`. It
/// keeps a feed signature from ever being taken for another kind of
/// signature made with the same key (an image header, say).
pub const SIGNING_CONTEXT: &[u8] = b"slotctl-feed-v1\0";

/// The most releases a feed may list (and waves a release may have): keeps
/// every loop over a feed small whatever its signer did.
pub const MAX_RELEASES: usize = 1000;
pub const MAX_WAVES: usize = 64;
pub const MAX_SIGNATURES: usize = 16;

/// The signed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedDoc {
    /// Always [`FORMAT`]; a device refuses a format it does not know.
    pub format: u32,
    /// Devices whose `compatible` is this take releases from the feed.
    pub compatible: String,
    /// Grows with every signing round; a device refuses a lower one.
    pub serial: u64,
    /// After this instant devices refuse the feed (a frozen feed).
    pub expires: Timestamp,
    pub releases: Vec<Release>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Semantic version, equal to the image header's.
    pub version: String,
    /// Equal to the image header's rollback index.
    pub rollback_index: u64,
    /// Where the image is: relative to the feed's URL, or absolute.
    pub url: String,
    /// Exact size of the image file in bytes.
    pub size: u64,
    /// SHA-256 of the whole image file, lowercase hex.
    pub sha256: String,
    /// SHA-256 of the image's signed header followed by its signature block
    /// (the image's first bytes, exactly what a slot record stores),
    /// lowercase hex. Required: a device checks it before writing anything,
    /// and the header's payload hashes then bind every byte written to a
    /// partition (the whole-image `sha256` binds the stored bytes).
    pub header_sha256: String,
    /// Waves: when each opens and the share of the fleet (cumulative
    /// percent) it brings in.
    pub rollout: Vec<Wave>,
    /// Set when the release was pulled: devices no longer take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    pub start: Timestamp,
    /// Cumulative share of the fleet, 1..=100, growing from wave to wave.
    pub percent: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub signed: String,
    pub signatures: Vec<SignatureJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureJson {
    /// 16 hex digits: the first 8 bytes of SHA-256 of the key's SPKI DER.
    pub keyid: String,
    /// 128 hex digits: the ed25519 signature.
    pub sig: String,
}

impl FeedDoc {
    /// A new empty feed.
    pub fn new(compatible: &str) -> FeedDoc {
        FeedDoc {
            format: FORMAT,
            compatible: compatible.to_string(),
            serial: 0,
            expires: Timestamp(0),
            releases: Vec::new(),
        }
    }

    /// The JSON text that gets signed (compact, fields in declaration order).
    pub fn to_signed_text(&self) -> String {
        serde_json::to_string(self).expect("a feed document always serializes")
    }

    /// Check everything that does not need the clock or the device.
    pub fn validate(&self) -> Result<(), FeedError> {
        let bad = |what: String| Err(FeedError::Invalid(what));
        if self.format != FORMAT {
            return Err(FeedError::UnknownFormat(self.format));
        }
        if self.compatible.is_empty() || self.compatible.len() > 64 {
            return bad("compatible must be 1 to 64 bytes".into());
        }
        if self.releases.len() > MAX_RELEASES {
            return bad(format!("more than {MAX_RELEASES} releases"));
        }
        let mut seen = BTreeSet::new();
        for r in &self.releases {
            let v = semver::Version::parse(&r.version)
                .map_err(|e| FeedError::Invalid(format!("release version {:?}: {e}", r.version)))?;
            if !seen.insert(v) {
                return bad(format!("release {} is listed twice", r.version));
            }
            r.validate()?;
        }
        Ok(())
    }

    pub fn release(&self, version: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.version == version)
    }
}

impl Release {
    pub fn semver(&self) -> Option<semver::Version> {
        semver::Version::parse(&self.version).ok()
    }

    fn validate(&self) -> Result<(), FeedError> {
        let ctx = |m: &str| Err(FeedError::Invalid(format!("release {}: {m}", self.version)));
        if self.url.is_empty() || self.url.len() > 2048 || self.url.chars().any(char::is_whitespace)
        {
            return ctx("url must be 1 to 2048 bytes without spaces");
        }
        let hex64 = |s: &str| {
            s.len() == 64
                && s.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        };
        if !hex64(&self.sha256) {
            return ctx("sha256 must be 64 lowercase hex digits");
        }
        if !hex64(&self.header_sha256) {
            return ctx("header_sha256 must be 64 lowercase hex digits");
        }
        if self.rollout.is_empty() || self.rollout.len() > MAX_WAVES {
            return ctx("rollout must have 1 to 64 waves");
        }
        let mut prev: Option<Wave> = None;
        for w in &self.rollout {
            if !(1..=100).contains(&w.percent) {
                return ctx("a wave's percent must be 1 to 100");
            }
            if let Some(p) = prev {
                if w.percent <= p.percent || w.start < p.start {
                    return ctx("waves must grow in percent and not go back in time");
                }
            }
            prev = Some(*w);
        }
        Ok(())
    }
}

/// Parse the envelope from bytes that were already bounded in size.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, FeedError> {
    let env: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| FeedError::Malformed(format!("not a feed envelope: {e}")))?;
    if env.signatures.len() > MAX_SIGNATURES {
        return Err(FeedError::Malformed(format!(
            "more than {MAX_SIGNATURES} signatures"
        )));
    }
    Ok(env)
}

/// The bytes of an envelope as written to `feed.json` (pretty, newline).
pub fn envelope_bytes(env: &Envelope) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(env).expect("an envelope always serializes");
    v.push(b'\n');
    v
}

/// Resolve a release URL against the feed's URL: absolute URLs stay, `/x`
/// is taken from the feed's host, anything else from the feed's directory.
pub fn resolve_url(feed_url: &str, rel: &str) -> String {
    if rel.contains("://") {
        return rel.to_string();
    }
    let base = feed_url.split(['?', '#']).next().unwrap_or(feed_url);
    if let Some(path) = rel.strip_prefix('/') {
        let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
        let host_end = base[after_scheme..]
            .find('/')
            .map(|i| after_scheme + i)
            .unwrap_or(base.len());
        return format!("{}/{}", &base[..host_end], path);
    }
    match base.rfind('/') {
        Some(i) if i + 1 > base.find("://").map(|j| j + 3).unwrap_or(0) => {
            format!("{}{}", &base[..=i], rel)
        }
        _ => format!("{base}/{rel}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn release(version: &str) -> Release {
        Release {
            version: version.into(),
            rollback_index: 1,
            url: format!("img-{version}.img"),
            size: 100,
            sha256: "ab".repeat(32),
            header_sha256: "cd".repeat(32),
            rollout: vec![Wave {
                start: Timestamp(1000),
                percent: 100,
            }],
            pulled: None,
        }
    }

    #[test]
    fn validation() {
        let mut d = FeedDoc::new("acme");
        d.releases.push(release("1.0.0"));
        d.validate().unwrap();
        d.releases.push(release("1.0.0"));
        assert!(d.validate().unwrap_err().to_string().contains("twice"));
        d.releases.pop();
        d.releases[0].sha256 = "AB".repeat(32);
        assert!(d.validate().is_err());
        d.releases[0].sha256 = "ab".repeat(32);
        d.releases[0].header_sha256 = "cd".repeat(31);
        assert!(d
            .validate()
            .unwrap_err()
            .to_string()
            .contains("header_sha256"));
        d.releases[0].header_sha256 = "cd".repeat(32);
        d.releases[0].rollout = vec![
            Wave {
                start: Timestamp(10),
                percent: 50,
            },
            Wave {
                start: Timestamp(20),
                percent: 50,
            },
        ];
        assert!(d.validate().is_err());
        d.releases[0].rollout[1].percent = 101;
        assert!(d.validate().is_err());
        d.releases[0].rollout[1].percent = 100;
        d.validate().unwrap();
        d.releases[0].version = "1.0".into();
        assert!(d.validate().is_err());
        d.releases[0].version = "1.0.0".into();
        d.format = 2;
        assert!(matches!(d.validate(), Err(FeedError::UnknownFormat(2))));
    }

    #[test]
    fn signed_text_roundtrip() {
        let mut d = FeedDoc::new("acme");
        d.releases.push(release("1.2.3-rc.1"));
        d.releases[0].pulled = Some(Timestamp(5));
        let t = d.to_signed_text();
        assert!(
            t.starts_with("{\"format\":1,\"compatible\":\"acme\""),
            "{t}"
        );
        let back: FeedDoc = serde_json::from_str(&t).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn urls() {
        let f = "http://h:8080/fleet/feed.json";
        assert_eq!(resolve_url(f, "a.img"), "http://h:8080/fleet/a.img");
        assert_eq!(resolve_url(f, "img/a.img"), "http://h:8080/fleet/img/a.img");
        assert_eq!(resolve_url(f, "/a.img"), "http://h:8080/a.img");
        assert_eq!(resolve_url(f, "https://cdn/x.img"), "https://cdn/x.img");
        assert_eq!(resolve_url("http://h", "a.img"), "http://h/a.img");
        assert_eq!(resolve_url("http://h/", "/a.img"), "http://h/a.img");
    }
}
