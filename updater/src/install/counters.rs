//! What an install moved: bytes downloaded, reused from each local source,
//! written (install `--json`'s `result`, the human summary line, the
//! progress bar; docs/delta.md).

use serde_json::{json, Value};

/// How the payloads reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// The whole image read as one stream (a file, standard input, a server
    /// without Range support, or an image without chunked payloads).
    #[default]
    Stream,
    /// Chunked payloads assembled from the booted slot, the target's
    /// leftover, zeros and HTTP Range requests ([`super::delta`]).
    Delta,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Stream => "stream",
            Method::Delta => "delta",
        }
    }
}

/// The counters of one install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Bytes received from the source: HTTP body bytes of every request
    /// (resumes and the header probe included), or the bytes read from a
    /// file or standard input.
    pub downloaded: u64,
    /// Raw bytes copied from the booted slot's partition of the same role.
    pub reused_booted: u64,
    /// Raw bytes found already in place on the target (an earlier attempt).
    pub reused_target: u64,
    /// Raw bytes of zero blocks (never downloaded).
    pub reused_zero: u64,
    /// Bytes written to the target's partitions (payloads only).
    pub written: u64,
    /// Blocks whose frames were downloaded.
    pub fetched_blocks: u64,
    /// Groups downloaded whole because a reused block in them was wrong.
    pub refetched_groups: u64,
}

impl Counters {
    pub fn reused(&self) -> u64 {
        self.reused_booted + self.reused_target + self.reused_zero
    }

    /// The `--json` fields.
    pub fn to_json(&self) -> Value {
        json!({
            "downloaded": self.downloaded,
            "reused": {
                "booted": self.reused_booted,
                "target": self.reused_target,
                "zero": self.reused_zero,
            },
            "written": self.written,
            "fetched_blocks": self.fetched_blocks,
            "refetched_groups": self.refetched_groups,
        })
    }

    /// The human summary line, e.g. `downloaded 1.2 MiB of a 40.0 MiB
    /// image (delta); reused 30.1 MiB from the booted slot, 0 B from the
    /// target, 8.0 MiB of zeros; wrote 39.9 MiB`.
    pub fn summary(&self, method: Method, image_len: u64) -> String {
        let mut s = format!(
            "downloaded {} of a {} image ({})",
            human(self.downloaded),
            human(image_len),
            method.as_str()
        );
        if method == Method::Delta {
            s.push_str(&format!(
                "; reused {} from the booted slot, {} from the target, {} of zeros",
                human(self.reused_booted),
                human(self.reused_target),
                human(self.reused_zero)
            ));
            if self.refetched_groups > 0 {
                s.push_str(&format!(
                    "; {} group(s) fetched again after a reused block failed its check",
                    self.refetched_groups
                ));
            }
        }
        s.push_str(&format!("; wrote {}", human(self.written)));
        s
    }
}

/// Bytes for people: `512 B`, `1.5 KiB`, `12.3 MiB`, `1.0 GiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(human(5 << 30), "5.0 GiB");
    }

    #[test]
    fn summary_names_every_counter() {
        let c = Counters {
            downloaded: 2048,
            reused_booted: 3 << 20,
            reused_target: 4096,
            reused_zero: 1 << 20,
            written: 5 << 20,
            fetched_blocks: 2,
            refetched_groups: 1,
        };
        let s = c.summary(Method::Delta, 8 << 20);
        assert_eq!(
            s,
            "downloaded 2.0 KiB of a 8.0 MiB image (delta); reused 3.0 MiB from the booted \
             slot, 4.0 KiB from the target, 1.0 MiB of zeros; 1 group(s) fetched again after \
             a reused block failed its check; wrote 5.0 MiB"
        );
        let j = c.to_json();
        assert_eq!(j["reused"]["booted"], 3 << 20);
        assert_eq!(j["reused"]["target"], 4096);
        assert_eq!(j["reused"]["zero"], 1 << 20);
        assert_eq!(j["downloaded"], 2048);
        assert_eq!(j["written"], 5 << 20);
        assert_eq!(c.reused(), (3 << 20) + 4096 + (1 << 20));
        let s = c.summary(Method::Stream, 8 << 20);
        assert_eq!(
            s,
            "downloaded 2.0 KiB of a 8.0 MiB image (stream); wrote 5.0 MiB"
        );
    }
}
