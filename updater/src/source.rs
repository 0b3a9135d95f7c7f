//! Where an image comes from: a file, standard input (`-`), or an
//! `http://` / `https://` URL, always as a stream (a URL is never stored
//! whole).
//!
//! HTTP behaviour (docs: README "Installing from a URL"):
//! - connect timeout and a stall timeout (no body byte for that long) from
//!   the config's `[http]` table;
//! - the first request is a bounded probe, `Range: bytes=0-65535`
//!   ([`PROBE_LEN`], enough for any header and signature block): a `206`
//!   with `Content-Range: bytes 0-END/TOTAL` (END = 65535, or TOTAL-1 for
//!   a smaller image) means the server honours ranges
//!   ([`HttpReader::ranges_supported`]; TOTAL is the image's length), a
//!   `200` that it does not (the whole image, streamed as ever, no
//!   warning). A stream read past the probe's end continues with
//!   `Range: bytes=65536-` on the same agent (not a failure: no retry
//!   counted, no backoff, no warning). After the header,
//!   [`Stream::into_ranges`] reads the rest of the probe (so its
//!   connection is kept alive) and turns the stream into a
//!   [`RangeSource`] ([`HttpRanges`], source/ranges.rs) over the same
//!   agent, retry budget and deadline: `Range: bytes=A-B` per range,
//!   only a `206` with exactly that `Content-Range` taken, the connection
//!   kept alive, a broken range resumed from the byte reached;
//! - a dropped or stalled connection is resumed with `Range: bytes=N-`; a
//!   `206` must carry `Content-Range: bytes N-...`, anything else is an error;
//! - a server that ignores `Range` (answers `200` with the whole body) is
//!   handled by reading and discarding the first N bytes of the new body,
//!   with a warning: slower, but correct, and the payload hash over the
//!   logical stream still proves every byte;
//! - retries use exponential backoff and are bounded in number (`retries`,
//!   counted over the whole download), after which the install fails with the
//!   last error and the byte offset reached;
//! - `4xx` answers are not retried; `5xx` answers and I/O errors are;
//! - a throughput floor: a connection that delivers fewer than
//!   `min_bytes_per_sec` on average over `min_speed_window_secs` counts as
//!   stalled and is resumed (a retry), so a body trickled just below the
//!   stall timeout cannot hold the download;
//! - an overall deadline, `deadline_secs`, over the whole download
//!   (connects, retries and backoff included): when it passes, the download
//!   fails at once, not retried. It is checked around every read, and a
//!   read waits at most the stall timeout, so it ends at most that late;
//! - redirects are followed here, not by ureq, up to [`MAX_REDIRECTS`]: a
//!   redirect to anything but `http://`/`https://` is refused, and so is a
//!   loop (a URL seen twice in one chain), at once and without retrying;
//! - TLS through rustls (ring); `tls.ca_file` replaces the built-in web PKI
//!   roots with the given CA certificates (a device usually trusts exactly its
//!   update server's CA).

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::Config;

mod http;
mod ranges;
mod redirect;
pub use http::{HttpReader, MAX_REDIRECTS, PROBE_LEN};
pub use ranges::{HttpRanges, MemRanges, RangeSource};

/// Tunables for an HTTP download.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub connect_timeout: Duration,
    pub stall_timeout: Duration,
    /// Total number of reconnects allowed over the whole download.
    pub retries: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub ca_file: Option<PathBuf>,
    /// The whole download, retries and backoff included.
    pub deadline: Duration,
    /// Throughput floor in bytes per second (0: none), averaged over
    /// `min_speed_window`.
    pub min_bytes_per_sec: u64,
    pub min_speed_window: Duration,
    /// An `Authorization` header value sent with every request to the
    /// first URL's origin (a DDI target token), never after a redirect to
    /// another origin.
    pub auth: Option<String>,
}

impl HttpOptions {
    pub fn from_config(cfg: &Config) -> HttpOptions {
        HttpOptions {
            connect_timeout: Duration::from_secs(cfg.http.connect_timeout_secs),
            stall_timeout: Duration::from_secs(cfg.http.stall_timeout_secs),
            retries: cfg.http.retries,
            backoff_initial: Duration::from_millis(cfg.http.backoff_initial_ms),
            backoff_max: Duration::from_millis(cfg.http.backoff_max_ms),
            ca_file: cfg.tls.ca_file.clone(),
            deadline: Duration::from_secs(cfg.http.deadline_secs),
            min_bytes_per_sec: cfg.http.min_bytes_per_sec,
            min_speed_window: Duration::from_secs(cfg.http.min_speed_window_secs),
            auth: None,
        }
    }
}

/// An opened source: a byte stream and what to call it.
pub struct Source {
    pub reader: Box<dyn Stream>,
    /// What to call it in messages.
    pub name: String,
}

impl Source {
    /// Bytes in memory as a source; with `ranges`, [`Stream::into_ranges`]
    /// gives a [`MemRanges`] over them (a server that honours Range), else
    /// nothing (a file, standard input, a server that ignores Range). Its
    /// `received` starts at the bytes the stream served, as over HTTP.
    pub fn memory(name: &str, data: Vec<u8>, ranges: bool) -> Source {
        Source {
            reader: Box::new(MemStream {
                data: io::Cursor::new(std::sync::Arc::new(data)),
                ranges,
            }),
            name: name.to_string(),
        }
    }
}

/// The stream of an opened source. After the header was read from it, an
/// install asks for random access to the same image with
/// [`Stream::into_ranges`]: only an HTTP server that honoured the probe's
/// `Range: bytes=0-65535` gives it (the stream is then given up).
pub trait Stream: Read + Send {
    fn into_ranges(self: Box<Self>) -> Option<Box<dyn RangeSource>> {
        None
    }
    /// Whether [`Stream::into_ranges`] would give random access (asked
    /// first, since `into_ranges` gives the stream up).
    fn can_range(&self) -> bool {
        false
    }
}

impl Stream for io::Stdin {}
impl Stream for Prefetch {}
impl<T: AsRef<[u8]> + Send> Stream for io::Cursor<T> {}
impl Stream for HttpReader {
    fn can_range(&self) -> bool {
        self.ranges_supported()
    }
    fn into_ranges(self: Box<Self>) -> Option<Box<dyn RangeSource>> {
        let r: Box<dyn RangeSource> = Box::new((*self).into_ranges()?);
        Some(r)
    }
}

/// [`Source::memory`]'s stream.
struct MemStream {
    data: io::Cursor<std::sync::Arc<Vec<u8>>>,
    ranges: bool,
}

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.data.position() as usize;
        let src = &self.data.get_ref()[..];
        let n = buf.len().min(src.len().saturating_sub(pos));
        buf[..n].copy_from_slice(&src[pos..pos + n]);
        self.data.set_position((pos + n) as u64);
        Ok(n)
    }
}

impl Stream for MemStream {
    fn can_range(&self) -> bool {
        self.ranges
    }
    fn into_ranges(self: Box<Self>) -> Option<Box<dyn RangeSource>> {
        if !self.ranges {
            return None;
        }
        // What the stream served counts as received, as an HTTP
        // download counts the first body's bytes.
        let read = self.data.position();
        let mut m = MemRanges::from_bytes(self.data.into_inner());
        m.served = read;
        let r: Box<dyn RangeSource> = Box::new(m);
        Some(r)
    }
}

fn load_ca(path: &std::path::Path) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    // A CA bundle is small; a FIFO or /dev/zero here must not hang or
    // exhaust memory (crate::localfile).
    let pem = crate::localfile::read_bounded(path, crate::localfile::Links::Follow, 4 << 20)
        .map_err(|e| anyhow::anyhow!("cannot read CA file {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.with_context(|| format!("CA file {}", path.display()))? {
            ureq::tls::PemItem::Certificate(c) => certs.push(c),
            _ => continue,
        }
    }
    if certs.is_empty() {
        bail!("CA file {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The HTTP agent of `opts` (timeouts, TLS roots), shared by downloads and
/// the DDI client (`crate::ddi::client`): statuses are not errors and no
/// redirect is followed by ureq.
pub fn agent(opts: &HttpOptions) -> anyhow::Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &opts.ca_file {
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&load_ca(ca)?));
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_recv_response(Some(opts.stall_timeout))
        .timeout_per_read(Some(opts.stall_timeout))
        .tls_config(tls.build())
        .max_redirects(0)
        .build();
    Ok(config.into())
}

/// `scheme://authority` of an http(s) URL.
fn origin(url: &str) -> Option<&str> {
    let rest_at = url.find("://")? + 3;
    let end = url[rest_at..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| rest_at + i);
    Some(&url[..end])
}

/// True when `a` and `b` have the same scheme and authority.
pub fn same_origin(a: &str, b: &str) -> bool {
    matches!((origin(a), origin(b)), (Some(x), Some(y)) if x.eq_ignore_ascii_case(y))
}

/// A warning callback (resumes, ignored ranges), e.g. progress output.
pub type Warn = Box<dyn Fn(&str) + Send>;

pub fn is_url(spec: &str) -> bool {
    spec.starts_with("http://") || spec.starts_with("https://")
}

/// Open `spec`: `-` for standard input, a URL, or a file path.
pub fn open(spec: &str, opts: &HttpOptions, warn: Warn) -> anyhow::Result<Source> {
    if spec == "-" {
        return Ok(Source {
            reader: Box::new(io::stdin()),
            name: "standard input".into(),
        });
    }
    if is_url(spec) {
        let r = HttpReader::open(spec, opts.clone(), warn)?;
        return Ok(Source {
            reader: Box::new(r),
            name: spec.to_string(),
        });
    }
    if spec.contains("://") {
        bail!(
            "unsupported source {spec}: use a file path, - (standard input), http:// or https://"
        );
    }
    let f = File::open(spec).with_context(|| format!("cannot open image {spec}"))?;
    Ok(Source {
        reader: Box::new(Prefetch::new(f)),
        name: spec.to_string(),
    })
}

/// A file read sequentially, asking the kernel to read ahead well beyond
/// the current position (`posix_fadvise(WILLNEED)`), so that the disk sees
/// large queued requests even though the pipeline reads 1 MiB at a time,
/// without holding more of the file in our own memory.
struct Prefetch {
    file: File,
    pos: u64,
    /// Everything below this offset has been asked for.
    advised: u64,
}

/// How far ahead of the reader the kernel is asked to read.
const PREFETCH_AHEAD: u64 = 16 << 20;
/// Asked for in steps of this size.
const PREFETCH_STEP: u64 = 4 << 20;

impl Prefetch {
    fn new(file: File) -> Prefetch {
        use std::os::fd::AsRawFd;
        let _ = nix::fcntl::posix_fadvise(
            file.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
        Prefetch {
            file,
            pos: 0,
            advised: 0,
        }
    }
}

impl Read for Prefetch {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        while self.advised < self.pos + PREFETCH_AHEAD {
            // Advice only: a failure (a pipe, a FIFO) costs nothing.
            let _ = nix::fcntl::posix_fadvise(
                self.file.as_raw_fd(),
                self.advised as i64,
                PREFETCH_STEP as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
            self.advised += PREFETCH_STEP;
        }
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
