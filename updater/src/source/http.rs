//! The HTTP source: [`Conn`], the connection and retry core (one agent,
//! redirects, status handling, retry budget, backoff, deadline, stall
//! timeout, throughput floor, byte count), shared by the stream
//! ([`HttpReader`]) and the ranges ([`super::ranges::HttpRanges`]).

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::ranges::HttpRanges;
use super::redirect::redirect_target;
use super::{HttpOptions, Warn};

/// Why one attempt failed.
pub(super) enum Failure {
    /// Worth retrying (I/O, timeouts, 5xx, premature end).
    Transient(String),
    /// Retrying cannot help (4xx, a wrong Content-Range, a changed length).
    Fatal(String),
}

/// Redirects followed for one request before giving up.
pub const MAX_REDIRECTS: usize = 10;

/// Bytes the first request asks for (`Range: bytes=0-65535`): enough for
/// any header and signature block (at most 48 KiB, docs/image-format.md),
/// so the delta way reads its header from the probe and the server never
/// sends more than that before the client decides (docs/delta.md, "The
/// probe"). An image that streams continues with `Range: bytes=65536-`.
pub const PROBE_LEN: u64 = 64 * 1024;

/// What an answer's head said, for the reader that asked to judge.
pub(super) struct Head {
    pub status: u16,
    pub content_range: Option<String>,
    pub content_length: Option<u64>,
}

/// The connection and retry core of one download: every request of the
/// stream and of the ranges goes through the same agent (so a connection
/// whose body was read to its end is kept alive and reused), and spends the
/// same retry budget before the same deadline.
pub(super) struct Conn {
    agent: ureq::Agent,
    pub url: String,
    opts: HttpOptions,
    retries_used: u32,
    backoff: Duration,
    warn: Warn,
    /// When the whole download must have ended (`deadline`).
    deadline_at: Instant,
    /// The throughput window of the current connection: when it began and
    /// the body bytes received since.
    window_start: Instant,
    window_bytes: u64,
    /// Body bytes received over every request.
    pub received: u64,
    /// The strong ETag of the first answer that carried one: sent as
    /// `If-Range` with every later request, and compared with every later
    /// answer's, so that a file replaced on the server between a dropped
    /// connection and its resume is refused at once instead of spliced
    /// (the image's hashes would refuse it too, but only after the whole
    /// download).
    validator: Option<String>,
}

/// `bytes A-B/T` (T may be `*`: None).
pub(super) fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let (span, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total))
}

impl Conn {
    pub fn new(url: &str, opts: HttpOptions, warn: Warn) -> anyhow::Result<Conn> {
        // Redirects are followed by `get_following`, which refuses
        // non-HTTP targets and loops without retrying.
        let agent = super::agent(&opts)?;
        let now = Instant::now();
        Ok(Conn {
            agent,
            url: url.to_string(),
            backoff: opts.backoff_initial,
            deadline_at: now + opts.deadline,
            opts,
            retries_used: 0,
            warn,
            window_start: now,
            window_bytes: 0,
            received: 0,
            validator: None,
        })
    }

    /// One GET of `url` with `Range: range` (no redirects followed).
    fn get_once(
        &self,
        url: &str,
        range: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut req = self.agent.get(url).header("Range", range);
        if let Some(v) = &self.validator {
            req = req.header("If-Range", v);
        }
        // A credential (a DDI target token) goes to the first URL's origin
        // only, never to a host a redirect names.
        if let Some(auth) = &self.opts.auth {
            if super::same_origin(url, &self.url) {
                req = req.header("Authorization", auth);
            }
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

    /// GET `self.url` with `Range: range`, following redirects: a target
    /// that is not http(s), a loop or more than [`MAX_REDIRECTS`] hops are
    /// fatal (a server that answers so will answer so again).
    fn get_following(&self, range: &str) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut chain = vec![self.url.clone()];
        loop {
            let url = chain.last().expect("not empty");
            let resp = self.get_once(url, range)?;
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

    /// One request with `Range: range`; a 200 or 206 head is handed to
    /// `judge` (which may refuse it), 4xx are fatal, 5xx transient.
    fn open_once(
        &mut self,
        range: &str,
        judge: &mut dyn FnMut(&Head) -> Result<(), Failure>,
    ) -> Result<ureq::BodyReader<'static>, Failure> {
        let resp = self.get_following(range)?;
        let status = resp.status().as_u16();
        let content_range = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if matches!(status, 200 | 206) {
            self.check_validator(etag)?;
        }
        let body = resp.into_body();
        let head = Head {
            status,
            content_range,
            content_length: body.content_length(),
        };
        match status {
            200 | 206 => judge(&head)?,
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
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(body.into_reader())
    }

    /// Keep the first strong ETag; refuse an answer whose strong ETag
    /// differs from it (the file changed on the server). An answer without
    /// one, or with a weak one (`W/`, which cannot guard a range), is not
    /// compared: the image's signed hashes still check every byte.
    fn check_validator(&mut self, etag: Option<String>) -> Result<(), Failure> {
        let Some(new) = etag.filter(|e| !e.starts_with("W/")) else {
            return Ok(());
        };
        match &self.validator {
            None => self.validator = Some(new),
            Some(old) if *old != new => {
                return Err(Failure::Fatal(format!(
                    "{}: the file changed on the server during the download (ETag {old}, now \
                     {new}): start the download again",
                    self.url
                )))
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// [`Conn::open_once`] with retries, backoff and the deadline; `pos`
    /// (and `total`) say where the download stands, for the messages.
    pub fn open(
        &mut self,
        range: &str,
        pos: u64,
        total: Option<u64>,
        mut judge: impl FnMut(&Head) -> Result<(), Failure>,
    ) -> Result<ureq::BodyReader<'static>, String> {
        loop {
            self.check_deadline(pos, total, false)?;
            match self.open_once(range, &mut judge) {
                Ok(body) => return Ok(body),
                Err(Failure::Fatal(m)) => return Err(m),
                Err(Failure::Transient(m)) => self.backoff_or_fail(pos, total, m)?,
            }
        }
    }

    /// Fatal once the overall deadline has passed (unless `done`).
    pub fn check_deadline(&self, pos: u64, total: Option<u64>, done: bool) -> Result<(), String> {
        if done || Instant::now() < self.deadline_at {
            return Ok(());
        }
        let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
        Err(format!(
            "{}: download deadline passed at byte {pos}{of}: it took longer than [http] deadline_secs = {}",
            self.url,
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

    /// Sleep before the next attempt, or give up when retries are spent.
    pub fn backoff_or_fail(
        &mut self,
        pos: u64,
        total: Option<u64>,
        why: String,
    ) -> Result<(), String> {
        if self.retries_used >= self.opts.retries {
            return Err(format!(
                "download failed at byte {pos} after {} retries: {why}",
                self.retries_used
            ));
        }
        self.check_deadline(pos, total, false)?;
        let retry_at = Instant::now().checked_add(self.backoff);
        if retry_at.is_none_or(|t| t >= self.deadline_at) {
            return Err(format!(
                "download failed at byte {pos}: {why}; no time left to retry before [http] deadline_secs = {}",
                self.opts.deadline.as_secs()
            ));
        }
        self.retries_used += 1;
        (self.warn)(&format!(
            "{why}; retrying from byte {pos} in {:?} ({}/{})",
            self.backoff, self.retries_used, self.opts.retries
        ));
        std::thread::sleep(self.backoff);
        self.backoff = self.backoff.saturating_mul(2).min(self.opts.backoff_max);
        Ok(())
    }

    /// One read of `body` (counted); the deadline and the throughput floor
    /// are checked before it, a stall is transient.
    pub fn read(
        &mut self,
        body: &mut ureq::BodyReader<'static>,
        buf: &mut [u8],
        pos: u64,
        total: Option<u64>,
        done: bool,
    ) -> Result<usize, Failure> {
        loop {
            self.check_deadline(pos, total, done)
                .map_err(Failure::Fatal)?;
            self.check_floor().map_err(Failure::Transient)?;
            let got = match body.read(buf) {
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
            self.received = self.received.saturating_add(got as u64);
            return Ok(got);
        }
    }
}

/// A `Read` over an HTTP body that resumes across dropped connections.
pub struct HttpReader {
    conn: Conn,
    body: Option<ureq::BodyReader<'static>>,
    /// Logical position: bytes already handed to the caller.
    pos: u64,
    /// Bytes of the current (200-after-Range) body still to discard.
    skip: u64,
    total: Option<u64>,
    /// The first answer was a 206 to the probe (`Range: bytes=0-65535`)
    /// with `Content-Range: bytes 0-END/TOTAL`.
    ranges: bool,
    /// Where the current body ends (exclusive), when it is a 206: reading
    /// to there is not the end of the image but of the range asked for.
    body_end: Option<u64>,
}

impl HttpReader {
    /// Connect (with retries) and read the response head. The request is
    /// the probe, `Range: bytes=0-65535` ([`PROBE_LEN`]): the answer says
    /// whether the server honours ranges ([`HttpReader::ranges_supported`]).
    pub fn open(url: &str, opts: HttpOptions, warn: Warn) -> anyhow::Result<HttpReader> {
        let mut r = HttpReader {
            conn: Conn::new(url, opts, warn)?,
            body: None,
            pos: 0,
            skip: 0,
            total: None,
            ranges: false,
            body_end: None,
        };
        r.connect().map_err(anyhow::Error::msg)?;
        Ok(r)
    }

    /// Whether the server honoured the probe's `Range: bytes=0-65535`.
    pub fn ranges_supported(&self) -> bool {
        self.ranges
    }

    /// The image's length, when the server said it.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// HTTP body bytes received so far (skipped ones included).
    pub fn received(&self) -> u64 {
        self.conn.received
    }

    /// Random access to the same image over the same agent, options,
    /// retry budget and deadline; `None` when the server does not honour
    /// Range. The rest of the current body (at most the probe's
    /// [`PROBE_LEN`] bytes, already on their way) is read and counted, so
    /// its connection is kept alive for the ranges and every byte the
    /// server sent is in [`RangeSource::received`](super::RangeSource).
    pub fn into_ranges(mut self) -> Option<HttpRanges> {
        let total = match (self.ranges, self.total) {
            (true, Some(total)) => total,
            _ => return None,
        };
        if let (Some(end), Some(mut body)) = (self.body_end, self.body.take()) {
            if end.saturating_sub(self.pos) <= PROBE_LEN {
                let mut buf = [0u8; 16 * 1024];
                let mut pos = self.pos;
                // A failure here only loses the connection: the ranges
                // open another.
                while let Ok(n @ 1..) = self.conn.read(&mut body, &mut buf, pos, self.total, true) {
                    pos += n as u64;
                }
            }
        }
        Some(HttpRanges::new(self.conn, total))
    }

    /// A request from `self.pos` on, with retries: the probe while `pos`
    /// is inside it, else the rest of the image.
    fn connect(&mut self) -> Result<(), String> {
        let pos = self.pos;
        let url = self.conn.url.clone();
        let (total, skip, ranges) = (&mut self.total, &mut self.skip, &mut self.ranges);
        let body_end = &mut self.body_end;
        let warn_ignored = pos > 0;
        let mut ignored = false;
        // Inside the probe (a resume of it included) unless the server
        // already sent the whole image (a 200: no ranges, total known).
        let range = if pos < PROBE_LEN && (*ranges || total.is_none()) {
            format!("bytes={pos}-{}", PROBE_LEN - 1)
        } else {
            format!("bytes={pos}-")
        };
        let body = self.conn.open(&range, pos, *total, |h| {
            judge_stream(h, &url, pos, total, skip, ranges, &mut ignored, body_end)
        })?;
        if ignored && warn_ignored {
            (self.conn.warn)(&format!(
                "server ignored Range: re-reading {pos} bytes from the start"
            ));
        }
        self.body = Some(body);
        Ok(())
    }

    /// Read from the current body, discarding `skip` bytes first.
    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        loop {
            let want = if self.skip > 0 {
                (buf.len() as u64).min(self.skip) as usize
            } else {
                buf.len()
            };
            let body = self.body.as_mut().expect("connected");
            let done = self.total.is_some_and(|t| self.pos >= t);
            let got = self
                .conn
                .read(body, &mut buf[..want], self.pos, self.total, done)?;
            if self.skip == 0 {
                return Ok(got);
            }
            if got == 0 {
                return Err(Failure::Transient(format!(
                    "{}: connection closed while skipping",
                    self.conn.url
                )));
            }
            self.skip -= got as u64;
        }
    }
}

/// Judge the stream's answer to `Range: bytes=pos-` (or the probe's
/// `bytes=0-65535`): a 200 is the whole body (`skip` the first `pos`
/// bytes); a 206 must start at `pos` and ends at `body_end`; the first 206
/// with `bytes 0-END/TOTAL` (END < TOTAL) means ranges work.
#[allow(clippy::too_many_arguments)]
fn judge_stream(
    h: &Head,
    url: &str,
    pos: u64,
    total: &mut Option<u64>,
    skip: &mut u64,
    ranges: &mut bool,
    ignored: &mut bool,
    body_end: &mut Option<u64>,
) -> Result<(), Failure> {
    let changed = |t: u64, l: u64| {
        Failure::Fatal(format!(
            "{url}: the resource changed length during download ({t} -> {l} bytes)"
        ))
    };
    let cr = h.content_range.as_deref().and_then(parse_content_range);
    *body_end = None;
    if h.status == 200 || (pos == 0 && h.content_range.is_none()) {
        // The whole body (a 206 to the probe without a Content-Range is
        // read as one).
        if let (Some(t), Some(l)) = (*total, h.content_length) {
            if t != l {
                return Err(changed(t, l));
            }
        }
        if total.is_none() {
            *total = h.content_length;
        }
        *ignored = h.status == 200;
        *skip = pos;
        return Ok(());
    }
    if cr.map(|(a, _, _)| a) != Some(pos) {
        let sent = match &h.content_range {
            Some(v) => format!("Content-Range {v}"),
            None => "no Content-Range".into(),
        };
        let what = if pos == 0 {
            "asked for the whole image".to_string()
        } else {
            format!("asked to resume at byte {pos}")
        };
        return Err(Failure::Fatal(format!(
            "{url}: {what} but the server sent {sent}"
        )));
    }
    let (_, end, len) = cr.expect("checked");
    if let (Some(t), Some(l)) = (*total, len) {
        if t != l {
            return Err(changed(t, l));
        }
    }
    if pos == 0 {
        *ranges = len.is_some_and(|l| end < l);
        // Not the Content-Length: that is the probe's, not the image's.
        if total.is_none() {
            *total = len;
        }
    }
    *body_end = Some(end.saturating_add(1));
    *skip = 0;
    Ok(())
}

pub(super) fn reason(status: u16) -> &'static str {
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
                self.connect().map_err(io::Error::other)?;
            }
            let why = match self.read_body(buf) {
                // The end of a range (the probe's), not of the image: the
                // rest is asked for at once, on the same agent (the body
                // was read to its end, so its connection is reused). Not a
                // failure: no retry counted, no backoff, no warning.
                Ok(0)
                    if self.body_end == Some(self.pos)
                        && self.total.is_none_or(|t| self.pos < t) =>
                {
                    self.body = None;
                    continue;
                }
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
            self.conn
                .backoff_or_fail(self.pos, self.total, why)
                .map_err(io::Error::other)?;
        }
    }
}
