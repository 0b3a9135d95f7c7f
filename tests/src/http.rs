//! A real HTTP/1.1 server on 127.0.0.1 for the network tests, with fault
//! modes: drop the connection mid-body (once or on every response, or the
//! first response to a bounded range), stall, trickle one byte at a time,
//! answer 404 or 500, redirect, ignore `Range`, answer a resume with a
//! `206` whose `Content-Range` starts elsewhere than asked or is missing,
//! or serve one byte of the file changed (a tampered image).
//!
//! It is deliberately small: one thread accepts, one thread per connection
//! answers its requests. Connections are persistent (HTTP/1.1 keep-alive):
//! a connection answers request after request until the client closes it or
//! sends `Connection: close`, or a fault mode closes it (a dropped, stalled
//! or trickled body, a `Status` or redirect answer: those say
//! `Connection: close`). It counts the connections it accepted and the body
//! bytes it sent, and logs each request so a test can check, for example,
//! that a resume used `Range`. Dropping the [`TestServer`] stops it and
//! joins its threads.
//!
//! `Range: bytes=A-B` and `bytes=A-` are answered `206` with
//! `Content-Range: bytes A-B/LEN` (`B` capped at the last byte).
//!
//! [`TestServer::start_tls`] serves https with a certificate made by the
//! real `openssl` ([`make_tls_files`]): a test CA and a leaf for 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod tls;
pub use tls::{make_tls_files, TlsFiles};

/// How the server misbehaves. The "first response" of the `...Once` modes
/// and `NoContentRange` is the first whose body holds the file offset they
/// name (the byte it drops or stalls at): the client's 64 KiB probe for an
/// offset inside it, else the stream's continuation (`bytes=65536-`), so a
/// drop lands on the same byte of the image either way. "Later" answers are
/// those after it (after the first request when the offset is `u64::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve the file, honouring `Range: bytes=N-` / `bytes=N-M` with 206.
    Normal,
    /// The first response sends this many body bytes, then closes the
    /// connection; later responses are normal.
    DropOnce(u64),
    /// Every response sends at most this many body bytes, then closes.
    DropEvery(u64),
    /// The first response sends this many body bytes, then sends nothing more
    /// (holding the connection open) until the server stops; later responses
    /// are normal.
    StallOnce(u64),
    /// Every response stalls after this many body bytes.
    StallEvery(u64),
    /// Answer every request with this status and a short text body.
    Status(u16),
    /// Always answer 200 with the whole file, whatever `Range` says; the
    /// first response drops after this many bytes (so that a client must
    /// resume somehow). `u64::MAX`: never drop.
    IgnoreRangeDropOnce(u64),
    /// The first response drops after `drop_at` body bytes; every later
    /// `Range: bytes=N-` is answered `206` from byte `N - back` (at least 0),
    /// with a `Content-Range` that says so (a truthful answer to a question
    /// that was not asked: the client must refuse it).
    WrongRangeStart { drop_at: u64, back: u64 },
    /// The first response drops after this many body bytes; later ranged
    /// answers are `206` with the right bytes but no `Content-Range`.
    NoContentRange(u64),
    /// Every response sends the file's bytes before offset `after` at once
    /// (none when it starts past it), then one byte every `every_ms`
    /// milliseconds (a trickle that never stalls
    /// long enough to trip a stall timeout longer than `every_ms`).
    Trickle { after: u64, every_ms: u64 },
    /// The first response to a bounded range (`Range: bytes=A-B`) other
    /// than the client's first request (its probe) sends
    /// this many body bytes, then closes the connection; every other
    /// response is normal.
    DropRangeOnce(u64),
    /// The first this many requests are served normally; later ones are
    /// answered `200` with the whole file whatever `Range` says (a server
    /// that stopped honouring Range).
    IgnoreRangeAfter(usize),
    /// Every response serves the file with the byte at this offset XORed
    /// with 0xff (a tampered image, or a tampered chunk).
    Tamper(u64),
    /// A request for a path listed as `(from, to)` is answered
    /// `302 Found` with `Location: to` (sent as is: relative, absolute,
    /// any scheme); other paths are served normally.
    Redirect(&'static [(&'static str, &'static str)]),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The `Range` header's value, if any.
    pub range: Option<String>,
    /// The status the server answered.
    pub status: u16,
    /// When the request's head had been read.
    pub at: Instant,
}

pub struct TestServer {
    addr: SocketAddr,
    tls: bool,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    /// Body bytes handed to the socket over all responses.
    sent: Arc<AtomicU64>,
    /// Connections accepted.
    conns: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

struct Shared {
    file: PathBuf,
    mode: Mode,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    served: AtomicUsize,
    /// Bounded ranges answered so far (for `DropRangeOnce`).
    bounded: AtomicUsize,
    /// The "once" misbehaviour (`DropOnce`, `StallOnce`, ...) happened.
    once_done: AtomicBool,
    sent: Arc<AtomicU64>,
}

impl TestServer {
    /// Serve `file` (at any path) on 127.0.0.1 with an ephemeral port.
    pub fn start(file: &Path, mode: Mode) -> TestServer {
        TestServer::start_inner(file, mode, None)
    }

    /// Like [`TestServer::start`], over TLS with `tls`'s leaf certificate.
    pub fn start_tls(file: &Path, mode: Mode, tls: &TlsFiles) -> TestServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
            .expect("read cert")
            .collect::<Result<_, _>>()
            .expect("parse cert");
        let key = PrivateKeyDer::from_pem_file(&tls.key).expect("read key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server cert");
        TestServer::start_inner(file, mode, Some(Arc::new(cfg)))
    }

    fn start_inner(file: &Path, mode: Mode, tls: Option<Arc<rustls::ServerConfig>>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let workers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            file: file.to_path_buf(),
            mode,
            tls,
            stop: stop.clone(),
            log: log.clone(),
            served: AtomicUsize::new(0),
            bounded: AtomicUsize::new(0),
            once_done: AtomicBool::new(false),
            sent: Arc::new(AtomicU64::new(0)),
        });
        let sent = shared.sent.clone();
        let conns = Arc::new(AtomicUsize::new(0));
        let accepted = conns.clone();
        let is_tls = shared.tls.is_some();
        let w = workers.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let s = shared.clone();
                let h = std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
                w.lock().unwrap().push(h);
            }
        });
        TestServer {
            addr,
            tls: is_tls,
            stop,
            log,
            sent,
            conns,
            accept: Some(accept),
            workers,
        }
    }

    /// `http://127.0.0.1:PORT/NAME` (`https://` for a TLS server).
    pub fn url(&self, name: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/{}", self.addr, name.trim_start_matches('/'))
    }

    /// The requests served so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Bytes of the served file handed to the socket over all responses so
    /// far (counted before each write: an upper bound of what the client
    /// received).
    pub fn body_bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let hs: Vec<_> = self.workers.lock().unwrap().drain(..).collect();
        for h in hs {
            let _ = h.join();
        }
    }
}

/// Parse `bytes=N-` or `bytes=N-M` into (start, inclusive end).
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() {
        len.checked_sub(1)?
    } else {
        b.trim().parse::<u64>().ok()?.min(len.checked_sub(1)?)
    };
    (start <= end).then_some((start, end))
}

/// How long a connection may sit idle (or a request head take) before the
/// server closes it.
const IDLE: Duration = Duration::from_secs(10);

fn serve(conn: TcpStream, s: &Shared) -> std::io::Result<()> {
    // Short read timeouts, polled by `read_line`, so a kept-alive idle
    // connection notices the server stopping.
    conn.set_read_timeout(Some(Duration::from_millis(100)))?;
    match &s.tls {
        None => serve_stream(conn, s),
        Some(cfg) => {
            let tls = rustls::ServerConnection::new(cfg.clone()).map_err(std::io::Error::other)?;
            serve_stream(rustls::StreamOwned::new(tls, conn), s)
        }
    }
}

/// `read_line` over a socket with a short read timeout: waits up to
/// [`IDLE`] in all, and gives up (0: as if closed) when the server stops.
fn read_line<R: BufRead>(r: &mut R, line: &mut String, s: &Shared) -> std::io::Result<usize> {
    let since = Instant::now();
    loop {
        match r.read_line(line) {
            Ok(_) => return Ok(line.len()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // What was read so far stays in `line`.
                if s.stop.load(Ordering::SeqCst) || since.elapsed() > IDLE {
                    return Ok(0);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Answer requests on one connection until it is to be closed.
fn serve_stream<S: Read + Write>(conn: S, s: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn);
    while serve_one(&mut reader, s)? {}
    Ok(())
}

/// One request: Ok(true) when the connection stays open for the next.
fn serve_one<S: Read + Write>(reader: &mut BufReader<S>, s: &Shared) -> std::io::Result<bool> {
    let mut line = String::new();
    read_line(reader, &mut line, s)?;
    if s.stop.load(Ordering::SeqCst) || line.trim().is_empty() {
        return Ok(false);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut keep = parts.next() == Some("HTTP/1.1");
    let mut range = None;
    loop {
        let mut h = String::new();
        if read_line(reader, &mut h, s)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
            if k.trim().eq_ignore_ascii_case("connection") {
                keep = !v.trim().eq_ignore_ascii_case("close");
            }
        }
    }
    let at = Instant::now();
    let nth = s.served.fetch_add(1, Ordering::SeqCst);
    let out = reader.get_mut();
    let record = |status: u16| {
        s.log.lock().unwrap().push(Request {
            method: method.clone(),
            path: path.clone(),
            range: range.clone(),
            status,
            at,
        });
    };

    if let Mode::Redirect(table) = s.mode {
        if let Some((_, to)) = table.iter().find(|(from, _)| *from == path) {
            record(302);
            write!(
                out,
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            out.flush()?;
            return Ok(false);
        }
    }

    if let Mode::Status(code) = s.mode {
        record(code);
        let reason = match code {
            404 => "Not Found",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let body = format!("{code} {reason}\n");
        write!(
            out,
            "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        out.flush()?;
        return Ok(false);
    }

    let mut file = std::fs::File::open(&s.file)?;
    let len = file.metadata()?.len();
    let ignore_range = match s.mode {
        Mode::IgnoreRangeDropOnce(_) => true,
        Mode::IgnoreRangeAfter(n) => nth >= n,
        _ => false,
    };
    let bounded = range
        .as_deref()
        .is_some_and(|r| r.split_once('-').is_some_and(|(_, b)| !b.trim().is_empty()));
    // The "once" modes misbehave on the first response whose body holds
    // the file offset they name (the client's probe, `bytes=0-65535`, or
    // the stream's continuation after it: the drop lands at the same byte
    // of the image either way); their "later" answers are those after it
    // (after the first response when the offset is `u64::MAX`, never).
    let once_before = s.once_done.load(Ordering::SeqCst);
    let later = |at: u64| if at == u64::MAX { nth > 0 } else { once_before };
    let (status, start, end) = match (&range, ignore_range) {
        (Some(r), false) => match parse_range(r, len) {
            Some((a, b)) => match s.mode {
                Mode::WrongRangeStart { drop_at, back } if later(drop_at) => {
                    (206u16, a.saturating_sub(back), b)
                }
                _ => (206u16, a, b),
            },
            None => {
                record(416);
                write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
                )?;
                out.flush()?;
                return Ok(keep);
            }
        },
        _ => (200u16, 0, len.saturating_sub(1)),
    };
    let body_len = if len == 0 { 0 } else { end - start + 1 };
    record(status);
    // The body bytes before file offset `at`, when this response is the
    // first whose body holds it.
    let once = |at: u64| {
        let inside = at >= start && at - start < body_len;
        (inside && !s.once_done.swap(true, Ordering::SeqCst)).then(|| at - start)
    };
    // How many body bytes this response sends before misbehaving.
    let (limit, stall) = match s.mode {
        Mode::DropOnce(n)
        | Mode::IgnoreRangeDropOnce(n)
        | Mode::WrongRangeStart { drop_at: n, .. }
        | Mode::NoContentRange(n) => (once(n).unwrap_or(u64::MAX), false),
        Mode::StallOnce(n) => (once(n).unwrap_or(u64::MAX), true),
        Mode::DropEvery(n) => (n, false),
        Mode::StallEvery(n) => (n, true),
        Mode::Trickle { after, .. } => (after.saturating_sub(start), false),
        // Not the client's first request (the probe, itself bounded).
        Mode::DropRangeOnce(n)
            if bounded && nth > 0 && s.bounded.fetch_add(1, Ordering::SeqCst) == 0 =>
        {
            (n, false)
        }
        _ => (u64::MAX, false),
    };
    let trickle = matches!(s.mode, Mode::Trickle { .. });
    // A response that will misbehave says it closes.
    let keep = keep && limit >= body_len && !trickle;
    // `NoContentRange`: the later ranged answers (the first one, to the
    // client's first request, is whole).
    let no_cr = matches!(s.mode, Mode::NoContentRange(n) if later(n));
    let mut head = if status == 206 && no_cr {
        "HTTP/1.1 206 Partial Content\r\n".to_string()
    } else if status == 206 {
        format!("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{len}\r\n")
    } else {
        "HTTP/1.1 200 OK\r\n".to_string()
    };
    if !ignore_range {
        head.push_str("Accept-Ranges: bytes\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {body_len}\r\nContent-Type: application/octet-stream\r\n"
    ));
    if !keep {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if method == "HEAD" {
        out.flush()?;
        return Ok(keep);
    }

    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(start))?;
    let tamper = match s.mode {
        Mode::Tamper(at) => Some(at),
        _ => None,
    };
    let mut off = start;
    let mut left = body_len.min(limit);
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        if s.stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let n = (buf.len() as u64).min(left) as usize;
        file.read_exact(&mut buf[..n])?;
        if let Some(t) = tamper.filter(|t| (off..off + n as u64).contains(t)) {
            buf[(t - off) as usize] ^= 0xff;
        }
        s.sent.fetch_add(n as u64, Ordering::SeqCst);
        out.write_all(&buf[..n])?;
        left -= n as u64;
        off += n as u64;
    }
    out.flush()?;
    if let Mode::Trickle { every_ms, .. } = s.mode {
        // The rest, one byte at a time; a write error (the client gave up)
        // or the server stopping ends it.
        for _ in limit..body_len {
            let until = Instant::now() + Duration::from_millis(every_ms);
            while Instant::now() < until {
                if s.stop.load(Ordering::SeqCst) {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            file.read_exact(&mut buf[..1])?;
            out.write_all(&buf[..1])?;
            out.flush()?;
        }
        return Ok(false);
    }
    if stall && limit < body_len {
        while !s.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Not keeping it: returning drops the socket (a close mid-body when
    // limit < body_len).
    Ok(keep)
}

#[cfg(test)]
mod tests;
