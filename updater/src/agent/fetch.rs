//! Network side of the agent: the feed, fetched with a hard size bound, and
//! the image, streamed once through SHA-256 and the image verifier before
//! anything is written to the disk.

use std::io::{self, Read};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::exit::refused;
use crate::feed::doc::Release;
use crate::feed::sign::hex;
use crate::feed::FeedError;
use crate::source::{self, HttpOptions};

/// Fetch the feed, refusing one larger than `limit` bytes as soon as
/// `limit + 1` bytes arrived (never reading more). Transient failures are retried with backoff (`[http]`).
pub fn fetch_feed(url: &str, cfg: &Config, warn: source::Warn) -> anyhow::Result<Vec<u8>> {
    let limit = cfg.agent.max_feed_bytes;
    let src = source::open(url, &HttpOptions::from_config(cfg), warn)
        .with_context(|| "cannot fetch the feed".to_string())?;
    let mut buf = Vec::new();
    src.reader
        .take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot fetch the feed {url}"))?;
    if buf.len() as u64 > limit {
        return Err(refused(format!("{url}: {}", FeedError::TooLarge { limit })));
    }
    Ok(buf)
}

/// Counts and hashes what passes through; refuses to pass more than `max`.
struct Tee<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    max: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.max {
            return Err(io::Error::other(format!(
                "image is larger than the {} bytes the feed says",
                self.max
            )));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Stream the whole image once, writing nothing: its size and SHA-256 must
/// equal the feed's, its signatures must meet the image keyring's threshold,
/// and its header must name the release's version, rollback index and the
/// device's compatible. Only then may it be installed.
pub fn preverify_image(
    url: &str,
    rel: &Release,
    cfg: &Config,
    keyring: &image_format::Keyring,
    warn: source::Warn,
) -> anyhow::Result<()> {
    let src = source::open(url, &HttpOptions::from_config(cfg), warn)?;
    let mut tee = Tee {
        inner: src.reader,
        hasher: Sha256::new(),
        count: 0,
        max: rel.size,
    };
    let verified = image_format::ImageReader::new(&mut tee)
        .and_then(|r| r.verify(keyring, cfg.signature_threshold))
        .map_err(|e| crate::install::policy::image_error(e, url))?;
    let h = verified.header();
    let mismatch = if h.version().to_string() != rel.version {
        Some(format!("version {}", h.version()))
    } else if h.rollback_index() != rel.rollback_index {
        Some(format!("rollback index {}", h.rollback_index()))
    } else if cfg.compatible.as_deref() != Some(h.compatible()) {
        Some(format!("compatible {:?}", h.compatible()))
    } else {
        None
    };
    if let Some(m) = mismatch {
        return Err(refused(format!(
            "image {url} carries {m}, not what the feed's release {} says: refusing it",
            rel.version
        )));
    }
    drop(verified);
    io::copy(&mut tee, &mut io::sink()).map_err(|e| {
        if e.to_string().contains("larger than") {
            refused(format!("image {url}: {e}: refusing it"))
        } else {
            anyhow::Error::new(e).context(format!("cannot download image {url}"))
        }
    })?;
    if tee.count != rel.size {
        return Err(refused(format!(
            "image {url} is {} bytes, the feed says {}: refusing it",
            tee.count, rel.size
        )));
    }
    let got = hex(&tee.hasher.finalize());
    if got != rel.sha256 {
        return Err(refused(format!(
            "image {url} has SHA-256 {got}, the feed says {}: refusing it",
            rel.sha256
        )));
    }
    Ok(())
}
