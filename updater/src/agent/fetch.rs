//! Network side of the agent: the feed, fetched with a hard size bound. (The
//! image is downloaded once, by the install itself, pinned to the feed's
//! release: `crate::install::pin`.)

use std::io::Read;

use anyhow::Context;

use crate::config::Config;
use crate::exit::refused;
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
