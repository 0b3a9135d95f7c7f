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
//! - TLS through rustls (ring); `tls.ca_file` replaces the built-in web PKI
//!   roots with the given CA certificates (a device usually trusts exactly its
//!   update server's CA).

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::Config;

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
        }
    }
}

/// An opened source: a byte stream and, when known, its length.
pub struct Source {
    pub reader: Box<dyn Read + Send>,
    /// What to call it in messages.
    pub name: String,
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
    retries_used: u32,
    backoff: Duration,
    warn: Warn,
}

fn load_ca(path: &PathBuf) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read CA file {}", path.display()))?;
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
            .build();
        let agent: ureq::Agent = config.into();
        let mut r = HttpReader {
            agent,
            url: url.to_string(),
            backoff: opts.backoff_initial,
            opts,
            body: None,
            pos: 0,
            skip: 0,
            total: None,
            retries_used: 0,
            warn,
        };
        r.connect_with_retries().map_err(anyhow::Error::msg)?;
        Ok(r)
    }

    /// One request from `self.pos` on.
    fn connect_once(&mut self) -> Result<(), Failure> {
        let mut req = self.agent.get(&self.url);
        if self.pos > 0 {
            req = req.header("Range", format!("bytes={}-", self.pos));
        }
        let resp = req.call().map_err(|e| match e {
            // Retrying cannot fix a bad URL or a certificate the device
            // does not trust.
            ureq::Error::BadUri(_)
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::Pem(_) => Failure::Fatal(format!("{}: {e}", self.url)),
            e => Failure::Transient(format!("{}: {e}", self.url)),
        })?;
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
                    return Err(Failure::Fatal(format!(
                        "{}: asked to resume at byte {} but the server sent Content-Range {:?}",
                        self.url, self.pos, content_range
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
        Ok(())
    }

    fn connect_with_retries(&mut self) -> Result<(), String> {
        loop {
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
        self.retries_used += 1;
        (self.warn)(&format!(
            "{why}; retrying from byte {} in {:?} ({}/{})",
            self.pos, self.backoff, self.retries_used, self.opts.retries
        ));
        std::thread::sleep(self.backoff);
        self.backoff = self.backoff.saturating_mul(2).min(self.opts.backoff_max);
        Ok(())
    }

    /// Read from the current body, discarding `skip` bytes first.
    fn read_body(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let body = self.body.as_mut().expect("connected");
        while self.skip > 0 {
            let n = (buf.len() as u64).min(self.skip) as usize;
            let got = body.read(&mut buf[..n])?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed while skipping",
                ));
            }
            self.skip -= got as u64;
        }
        body.read(buf)
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
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut || e.to_string().contains("timeout") =>
                {
                    format!(
                        "{}: stalled (no data for {:?})",
                        self.url, self.opts.stall_timeout
                    )
                }
                Err(e) => format!("{}: {e}", self.url),
            };
            self.body = None;
            self.backoff_or_fail(why).map_err(io::Error::other)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotctl_tests::http::{Mode, TestServer};
    use std::sync::{Arc, Mutex};

    fn opts() -> HttpOptions {
        HttpOptions {
            connect_timeout: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(1),
            retries: 3,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ca_file: None,
        }
    }

    fn fixture() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        (dir, p, data)
    }

    fn fetch(url: &str, o: HttpOptions) -> (anyhow::Result<Vec<u8>>, Vec<String>) {
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let w = warnings.clone();
        let res = open(
            url,
            &o,
            Box::new(move |m| w.lock().unwrap().push(m.to_string())),
        )
        .and_then(|mut s| {
            let mut v = Vec::new();
            s.reader.read_to_end(&mut v)?;
            Ok(v)
        });
        let w = warnings.lock().unwrap().clone();
        (res, w)
    }

    #[test]
    fn plain_download() {
        let (_d, p, data) = fixture();
        let srv = TestServer::start(&p, Mode::Normal);
        let (r, w) = fetch(&srv.url("img"), opts());
        assert_eq!(r.unwrap(), data);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn resumes_after_drop_with_range() {
        let (_d, p, data) = fixture();
        let srv = TestServer::start(&p, Mode::DropOnce(1_000_000));
        let (r, w) = fetch(&srv.url("img"), opts());
        assert_eq!(r.unwrap(), data);
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 2, "{reqs:?}");
        assert_eq!(reqs[1].range.as_deref(), Some("bytes=1000000-"));
        assert_eq!(reqs[1].status, 206);
        assert!(w[0].contains("retrying from byte 1000000"), "{w:?}");
    }

    #[test]
    fn resumes_after_stall() {
        let (_d, p, data) = fixture();
        let srv = TestServer::start(&p, Mode::StallOnce(500_000));
        let (r, _) = fetch(&srv.url("img"), opts());
        assert_eq!(r.unwrap(), data);
        assert_eq!(srv.requests()[1].range.as_deref(), Some("bytes=500000-"));
    }

    #[test]
    fn ignored_range_restarts_and_skips() {
        let (_d, p, data) = fixture();
        let srv = TestServer::start(&p, Mode::IgnoreRangeDropOnce(700_000));
        let (r, w) = fetch(&srv.url("img"), opts());
        assert_eq!(r.unwrap(), data);
        assert!(
            w.iter().any(|m| m.contains("server ignored Range")),
            "{w:?}"
        );
    }

    #[test]
    fn retries_are_bounded() {
        let (_d, p, _) = fixture();
        let srv = TestServer::start(&p, Mode::DropEvery(100_000));
        let (r, _) = fetch(&srv.url("img"), opts());
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("download failed at byte 400000 after 3 retries"),
            "{e}"
        );
        assert_eq!(srv.requests().len(), 4);
    }

    #[test]
    fn not_found_is_not_retried() {
        let (_d, p, _) = fixture();
        let srv = TestServer::start(&p, Mode::Status(404));
        let (r, _) = fetch(&srv.url("img"), opts());
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("HTTP 404 Not Found"), "{e}");
        assert_eq!(srv.requests().len(), 1);
    }

    #[test]
    fn server_error_is_retried_then_fails() {
        let (_d, p, _) = fixture();
        let srv = TestServer::start(&p, Mode::Status(500));
        let (r, _) = fetch(&srv.url("img"), opts());
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("after 3 retries") && e.contains("HTTP 500 Internal Server Error"),
            "{e}"
        );
        assert_eq!(srv.requests().len(), 4);
    }

    #[test]
    fn connection_refused_fails_clearly() {
        // A port nothing listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut o = opts();
        o.retries = 1;
        let (r, _) = fetch(&format!("http://127.0.0.1:{port}/x"), o);
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("after 1 retries"), "{e}");
    }
}
