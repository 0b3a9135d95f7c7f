//! A static-file HTTP/1.1 server on 127.0.0.1 serving a directory, as a
//! CDN serves a feed and its images, with fault modes for the agent tests:
//! answer every request with a status, or hold each answer back for a while.
//! (tests/src/http.rs serves one file; this one serves a tree.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve the files (404 for missing ones).
    Normal,
    /// Answer every request with this status.
    Status(u16),
    /// Wait this long before answering (a slow server).
    Delay(Duration),
}

/// After `after` requests for `path`, serve `file` for it instead.
#[derive(Debug, Clone)]
struct Swap {
    path: String,
    after: usize,
    file: PathBuf,
    seen: usize,
}

pub struct FeedServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    mode: Arc<Mutex<Mode>>,
    swap: Arc<Mutex<Option<Swap>>>,
    log: Arc<Mutex<Vec<(String, u16)>>>,
    /// Body bytes handed to the socket, per URL path.
    sent: Arc<Mutex<HashMap<String, u64>>>,
    accept: Option<JoinHandle<()>>,
}

impl FeedServer {
    /// Serve `root` on an ephemeral port of 127.0.0.1.
    pub fn start(root: &Path, mode: Mode) -> FeedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let mode = Arc::new(Mutex::new(mode));
        let log = Arc::new(Mutex::new(Vec::new()));
        let swap: Arc<Mutex<Option<Swap>>> = Arc::new(Mutex::new(None));
        let sent = Arc::new(Mutex::new(HashMap::new()));
        let (s, m, l, root) = (stop.clone(), mode.clone(), log.clone(), root.to_path_buf());
        let (sw, se) = (swap.clone(), sent.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (m, l, root, s, sw, se) = (
                    m.clone(),
                    l.clone(),
                    root.clone(),
                    s.clone(),
                    sw.clone(),
                    se.clone(),
                );
                std::thread::spawn(move || {
                    let mode = *m.lock().unwrap();
                    let _ = serve(conn, &root, mode, &l, &s, &sw, &se);
                });
            }
        });
        FeedServer {
            addr,
            stop,
            mode,
            swap,
            log,
            sent,
            accept: Some(accept),
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name.trim_start_matches('/'))
    }

    /// Serve `file` for URL path `path` once it was requested `after`
    /// times (a server whose content changes between two downloads).
    pub fn swap_after(&self, path: &str, after: usize, file: &Path) {
        *self.swap.lock().unwrap() = Some(Swap {
            path: path.to_string(),
            after,
            file: file.to_path_buf(),
            seen: 0,
        });
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// (path, status) of each request so far.
    pub fn requests(&self) -> Vec<(String, u16)> {
        self.log.lock().unwrap().clone()
    }

    /// GET requests for URL path `path` so far.
    pub fn gets(&self, path: &str) -> usize {
        self.requests().iter().filter(|(p, _)| p == path).count()
    }

    /// Body bytes the server handed to the socket for URL path `path`, over
    /// all requests (counted before each write: an upper bound of what the
    /// client received).
    pub fn bytes_sent(&self, path: &str) -> u64 {
        self.sent.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// A URL path mapped under `root`, refusing `..` and absolute parts.
fn local_path(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = Path::new(url_path.split('?').next()?.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

/// A request's line and the one header these test servers act on.
pub(crate) struct RequestHead {
    pub method: String,
    pub target: String,
    /// `Content-Length` (0 when absent or unreadable).
    pub content_length: usize,
}

/// Read a request's line and headers from `reader` (over `conn`, whose
/// read timeout is set to 10 s so that a silent client cannot hold the
/// thread), up to the blank line.
pub(crate) fn read_head(
    conn: &TcpStream,
    reader: &mut impl BufRead,
) -> std::io::Result<RequestHead> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    Ok(RequestHead {
        method,
        target,
        content_length,
    })
}

fn serve(
    conn: TcpStream,
    root: &Path,
    mode: Mode,
    log: &Mutex<Vec<(String, u16)>>,
    stop: &AtomicBool,
    swap: &Mutex<Option<Swap>>,
    sent: &Mutex<HashMap<String, u64>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let RequestHead {
        method,
        target: path,
        ..
    } = read_head(&conn, &mut reader)?;
    let mut out = conn;
    if let Mode::Delay(d) = mode {
        let end = std::time::Instant::now() + d;
        while std::time::Instant::now() < end && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let swapped = match swap.lock().unwrap().as_mut() {
        Some(sw) if sw.path == path => {
            sw.seen += 1;
            (sw.seen > sw.after).then(|| sw.file.clone())
        }
        _ => None,
    };
    let file = match mode {
        Mode::Status(_) => None,
        _ => swapped
            .or_else(|| local_path(root, &path))
            .and_then(|p| std::fs::File::open(p).ok()),
    };
    let (status, body): (u16, Box<dyn Read>) = match (mode, file) {
        (Mode::Status(code), _) => (code, Box::new(std::io::Cursor::new(format!("{code}\n")))),
        (_, Some(f)) if f.metadata().map(|m| m.is_file()).unwrap_or(false) => (200, Box::new(f)),
        _ => (404, Box::new(std::io::Cursor::new(b"404\n".to_vec()))),
    };
    log.lock().unwrap().push((path.clone(), status));
    let mut body_bytes = Vec::new();
    let mut body = body;
    body.read_to_end(&mut body_bytes)?;
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Error",
    };
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body_bytes.len()
    )?;
    if method != "HEAD" {
        *sent.lock().unwrap().entry(path).or_insert(0) += body_bytes.len() as u64;
        out.write_all(&body_bytes)?;
    }
    out.flush()
}
