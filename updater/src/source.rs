//! Where an image comes from: a file, standard input (`-`), or an
//! `http://` / `https://` URL, always as a stream (a URL is never stored
//! whole).
//!
//! HTTP behaviour (docs: README "Installing from a URL"):
//! - connect timeout and a stall timeout (no body byte for that long) from
//!   the config's `[http]` table;
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
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::Config;

mod ranges;
mod redirect;
pub use ranges::{MemRanges, RangeSource};
use redirect::redirect_target;

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
    /// nothing (a file, standard input, a server that ignores Range).
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
/// [`Stream::into_ranges`]: only an HTTP server that honoured the first
/// request's `Range: bytes=0-` gives it (the stream is then given up).
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
impl Stream for io::Cursor<Vec<u8>> {}
impl Stream for HttpReader {
    fn can_range(&self) -> bool {
        self.ranges
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
        let r: Box<dyn RangeSource> = Box::new(MemRanges::from_bytes(self.data.into_inner()));
        Some(r)
    }
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

/// Why one attempt failed.
enum Failure {
    /// Worth retrying (I/O, timeouts, 5xx, premature end).
    Transient(String),
    /// Retrying cannot help (4xx, a wrong Content-Range, a changed length).
    Fatal(String),
}

/// A `Read` over an HTTP body that resumes across dropped connections.
pub struct HttpReader {
    agent: ureq::Agent,
    url: String,
    opts: HttpOptions,
    body: Option<ureq::BodyReader<'static>>,
    /// Logical position: bytes already handed to the caller.
    pos: u64,
    /// Bytes of the current (200-after-Range) body still to discard.
    skip: u64,
    total: Option<u64>,
    /// The first answer was a 206 to `Range: bytes=0-` with a whole
    /// `Content-Range: bytes 0-END/TOTAL`.
    ranges: bool,
    retries_used: u32,
    backoff: Duration,
    warn: Warn,
    /// When the whole download must have ended (`deadline`).
    deadline_at: Instant,
    /// The throughput window of the current connection: when it began and
    /// the body bytes received since.
    window_start: Instant,
    window_bytes: u64,
}

/// Redirects followed for one request before giving up.
pub const MAX_REDIRECTS: usize = 10;

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

impl HttpReader {
    /// Connect (with retries) and read the response head.
    pub fn open(url: &str, opts: HttpOptions, warn: Warn) -> anyhow::Result<HttpReader> {
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
            // Redirects are followed by `connect_once`, which refuses
            // non-HTTP targets and loops without retrying.
            .max_redirects(0)
            .build();
        let agent: ureq::Agent = config.into();
        let now = Instant::now();
        let mut r = HttpReader {
            deadline_at: now + opts.deadline,
            window_start: now,
            window_bytes: 0,
            agent,
            url: url.to_string(),
            backoff: opts.backoff_initial,
            opts,
            body: None,
            pos: 0,
            skip: 0,
            total: None,
            ranges: false,
            retries_used: 0,
            warn,
        };
        r.connect_with_retries().map_err(anyhow::Error::msg)?;
        Ok(r)
    }

    /// Whether the server honoured the first request's `Range: bytes=0-`.
    pub fn ranges_supported(&self) -> bool {
        self.ranges
    }

    /// The image's length, when the server said it.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Random access to the same image over the same agent, options,
    /// retry budget and deadline; `None` when the server does not honour
    /// Range. The stream's current body is dropped.
    pub fn into_ranges(self) -> Option<HttpRanges> {
        if !self.ranges {
            return None;
        }
        Some(HttpRanges { reader: self })
    }

    /// One GET of `url` from `self.pos` on (no redirects followed).
    fn get_once(&self, url: &str) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut req = self.agent.get(url);
        if self.pos > 0 {
            req = req.header("Range", format!("bytes={}-", self.pos));
        }
        req.call().map_err(|e| match e {
            // Retrying cannot fix a bad URL or a certificate the device
            // does not trust.
            ureq::Error::BadUri(_)
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::Pem(_) => Failure::Fatal(format!("{url}: {e}")),
            e => Failure::Transient(format!("{url}: {e}")),
        })
    }

    /// GET `self.url` from `self.pos` on, following redirects: a target
    /// that is not http(s), a loop or more than [`MAX_REDIRECTS`] hops are
    /// fatal (a server that answers so will answer so again).
    fn get_following(&self) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut chain = vec![self.url.clone()];
        loop {
            let url = chain.last().expect("not empty");
            let resp = self.get_once(url)?;
            let status = resp.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let Some(location) = resp.headers().get("location").and_then(|v| v.to_str().ok())
            else {
                return Err(Failure::Fatal(format!(
                    "{url}: HTTP {status} redirect without a Location"
                )));
            };
            let next = redirect_target(url, location).map_err(Failure::Fatal)?;
            if chain.contains(&next) {
                chain.push(next);
                return Err(Failure::Fatal(format!(
                    "redirect loop: {}",
                    chain.join(" -> ")
                )));
            }
            if chain.len() > MAX_REDIRECTS {
                return Err(Failure::Fatal(format!(
                    "{}: more than {MAX_REDIRECTS} redirects (last to {next})",
                    self.url
                )));
            }
            chain.push(next);
        }
    }

    /// One request from `self.pos` on.
    fn connect_once(&mut self) -> Result<(), Failure> {
        let resp = self.get_following()?;
        let status = resp.status().as_u16();
        let content_range = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.into_body();
        let len = body.content_length();
        match status {
            200 => {
                if let (Some(t), Some(l)) = (self.total, len) {
                    if t != l {
                        return Err(Failure::Fatal(format!(
                            "{}: the resource changed length during download ({t} -> {l} bytes)",
                            self.url
                        )));
                    }
                }
                if self.total.is_none() {
                    self.total = len;
                }
                if self.pos > 0 {
                    (self.warn)(&format!(
                        "server ignored Range: re-reading {} bytes from the start",
                        self.pos
                    ));
                }
                self.skip = self.pos;
            }
            206 if self.pos > 0 => {
                let start = content_range
                    .as_deref()
                    .and_then(|v| v.trim().strip_prefix("bytes "))
                    .and_then(|v| v.split_once('-'))
                    .and_then(|(a, _)| a.trim().parse::<u64>().ok());
                if start != Some(self.pos) {
                    let sent = match &content_range {
                        Some(v) => format!("Content-Range {v}"),
                        None => "no Content-Range".into(),
                    };
                    return Err(Failure::Fatal(format!(
                        "{}: asked to resume at byte {} but the server sent {sent}",
                        self.url, self.pos
                    )));
                }
                self.skip = 0;
            }
            400..=499 => {
                return Err(Failure::Fatal(format!(
                    "{}: HTTP {status}{}",
                    self.url,
                    reason(status)
                )))
            }
            500..=599 => {
                return Err(Failure::Transient(format!(
                    "{}: HTTP {status}{}",
                    self.url,
                    reason(status)
                )))
            }
            _ => {
                return Err(Failure::Fatal(format!(
                    "{}: unexpected HTTP status {status}",
                    self.url
                )))
            }
        }
        self.body = Some(body.into_reader());
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }

    /// Fatal once the overall deadline has passed.
    fn check_deadline(&self) -> Result<(), String> {
        let done = self.total.is_some_and(|t| self.pos >= t);
        if done || Instant::now() < self.deadline_at {
            return Ok(());
        }
        let of = self.total.map(|t| format!(" of {t}")).unwrap_or_default();
        Err(format!(
            "{}: download deadline passed at byte {}{of}: it took longer than [http] deadline_secs = {}",
            self.url,
            self.pos,
            self.opts.deadline.as_secs()
        ))
    }

    /// When a whole throughput window has passed on this connection, say
    /// whether it met the floor (Err: too slow); then start the next one.
    fn check_floor(&mut self) -> Result<(), String> {
        let min = self.opts.min_bytes_per_sec;
        let elapsed = self.window_start.elapsed();
        if min == 0 || elapsed < self.opts.min_speed_window {
            return Ok(());
        }
        // bytes / seconds < min, without dividing.
        let needed = u128::from(min) * elapsed.as_millis() / 1000;
        if u128::from(self.window_bytes) < needed {
            return Err(format!(
                "{}: too slow: {} bytes in the last {} s, below [http] min_bytes_per_sec = {min}",
                self.url,
                self.window_bytes,
                elapsed.as_secs()
            ));
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }

    fn connect_with_retries(&mut self) -> Result<(), String> {
        loop {
            self.check_deadline()?;
            match self.connect_once() {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(m)) => return Err(m),
                Err(Failure::Transient(m)) => self.backoff_or_fail(m)?,
            }
        }
    }

    /// Sleep before the next attempt, or give up when retries are spent.
    fn backoff_or_fail(&mut self, why: String) -> Result<(), String> {
        if self.retries_used >= self.opts.retries {
            return Err(format!(
                "download failed at byte {} after {} retries: {why}",
                self.pos, self.retries_used
            ));
        }
        self.check_deadline()?;
        let retry_at = Instant::now().checked_add(self.backoff);
        if retry_at.is_none_or(|t| t >= self.deadline_at) {
            return Err(format!(
                "download failed at byte {}: {why}; no time left to retry before [http] deadline_secs = {}",
                self.pos,
                self.opts.deadline.as_secs()
            ));
        }
        self.retries_used += 1;
        (self.warn)(&format!(
            "{why}; retrying from byte {} in {:?} ({}/{})",
            self.pos, self.backoff, self.retries_used, self.opts.retries
        ));
        std::thread::sleep(self.backoff);
        self.backoff = self.backoff.saturating_mul(2).min(self.opts.backoff_max);
        Ok(())
    }

    /// Read from the current body, discarding `skip` bytes first; the
    /// deadline and the throughput floor are checked before every read.
    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        loop {
            self.check_deadline().map_err(Failure::Fatal)?;
            self.check_floor().map_err(Failure::Transient)?;
            let want = if self.skip > 0 {
                (buf.len() as u64).min(self.skip) as usize
            } else {
                buf.len()
            };
            let body = self.body.as_mut().expect("connected");
            let got = match body.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut || e.to_string().contains("timeout") =>
                {
                    return Err(Failure::Transient(format!(
                        "{}: stalled (no data for {:?})",
                        self.url, self.opts.stall_timeout
                    )))
                }
                Err(e) => return Err(Failure::Transient(format!("{}: {e}", self.url))),
            };
            self.window_bytes = self.window_bytes.saturating_add(got as u64);
            if self.skip == 0 {
                return Ok(got);
            }
            if got == 0 {
                return Err(Failure::Transient(format!(
                    "{}: connection closed while skipping",
                    self.url
                )));
            }
            self.skip -= got as u64;
        }
    }
}

/// [`RangeSource`] over HTTP: see [`HttpReader::into_ranges`].
pub struct HttpRanges {
    reader: HttpReader,
}

impl RangeSource for HttpRanges {
    fn len(&self) -> u64 {
        self.reader.total.unwrap_or(0)
    }

    fn range(&mut self, _start: u64, _end: u64) -> io::Result<Box<dyn Read + '_>> {
        // The API first (for the delta helper); the requests follow.
        Err(io::Error::other("HTTP ranges: not yet implemented"))
    }

    fn received(&self) -> u64 {
        0
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => " Bad Request",
        401 => " Unauthorized",
        403 => " Forbidden",
        404 => " Not Found",
        410 => " Gone",
        416 => " Range Not Satisfiable",
        500 => " Internal Server Error",
        502 => " Bad Gateway",
        503 => " Service Unavailable",
        504 => " Gateway Timeout",
        _ => "",
    }
}

impl Read for HttpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.body.is_none() {
                self.connect_with_retries().map_err(io::Error::other)?;
            }
            let why = match self.read_body(buf) {
                Ok(0) => match self.total {
                    Some(t) if self.pos < t => {
                        format!("connection closed at byte {} of {t}", self.pos)
                    }
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(Failure::Fatal(m)) => {
                    self.body = None;
                    return Err(io::Error::other(m));
                }
                Err(Failure::Transient(m)) => m,
            };
            self.body = None;
            self.backoff_or_fail(why).map_err(io::Error::other)?;
        }
    }
}

#[cfg(test)]
mod tests;
