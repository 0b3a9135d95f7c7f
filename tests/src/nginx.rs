//! Debian's nginx serving a directory on 127.0.0.1, as a CDN or a plain web
//! server serves a feed and its images (tests/tests/nginx.rs), and a TCP
//! proxy in front of it that can drop one connection in the middle of a
//! body, as a flaky network does.
//!
//! nginx is Debian's package, unpacked by scripts/get-nginx.sh into
//! [`NGINX_ROOT`] (not installed: its maintainer scripts would start a
//! server on every interface). Each [`Nginx`] runs in the foreground with
//! its own config, logs and temp paths in a directory of the test's, and
//! is killed by its PID when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where scripts/get-nginx.sh unpacks Debian's nginx package.
pub const NGINX_ROOT: &str = "/var/tmp/slotctl-nginx";

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// A free port of 127.0.0.1 (bound, then released for nginx to take).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

impl Nginx {
    /// Serve `root` on 127.0.0.1; config, logs and temp paths go in `dir`.
    /// Waits until it accepts connections.
    pub fn start(root: &Path, dir: &Path) -> Nginx {
        let bin = Path::new(NGINX_ROOT).join("usr/sbin/nginx");
        assert!(
            bin.exists(),
            "{} not found: run scripts/setup.sh (scripts/get-nginx.sh unpacks Debian's nginx)",
            bin.display()
        );
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let d = dir.display();
        // One process (no master, so no privilege drop to www-data and no
        // second PID); every path is the test's own. The access log names
        // each request's connection and its place on it (keep-alive), the
        // Range and If-Range asked, the status and the body bytes sent.
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    default_type application/octet-stream;
    types {{ application/json json; }}
    log_format t '$connection $connection_requests "$request" $status $body_bytes_sent "$http_range" "$http_if_range" "$sent_http_etag"';
    access_log {d}/access.log t;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 30s;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(&bin)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut n = Nginx {
            child,
            addr,
            dir: dir.to_path_buf(),
        };
        let t0 = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(st)) = n.child.try_wait() {
                panic!(
                    "nginx exited ({st}): {}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name.trim_start_matches('/'))
    }

    /// The access log's lines so far.
    pub fn log(&self) -> Vec<LogLine> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| LogLine::parse(l).unwrap_or_else(|| panic!("access log line {l:?}")))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of the access log of [`Nginx`].
#[derive(Debug, Clone)]
pub struct LogLine {
    /// nginx's connection serial number.
    pub connection: u64,
    /// The request's place on its connection (1 = first).
    pub nth: u64,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
    /// The Range and If-Range headers of the request, the ETag of the
    /// answer ("-" when absent).
    pub range: String,
    pub if_range: String,
    pub etag: String,
}

impl LogLine {
    fn parse(l: &str) -> Option<LogLine> {
        // nginx writes a `"` inside a value as `\x22`, so the line splits
        // on `"` into: head, request, status and bytes, Range, " ",
        // If-Range, " ", ETag.
        let q: Vec<&str> = l.split('"').collect();
        if q.len() != 9 {
            return None;
        }
        let unescape = |v: &str| v.replace("\\x22", "\"");
        let mut h = q[0].split_whitespace();
        let mut m = q[2].split_whitespace();
        Some(LogLine {
            connection: h.next()?.parse().ok()?,
            nth: h.next()?.parse().ok()?,
            path: q[1].split_whitespace().nth(1)?.to_string(),
            status: m.next()?.parse().ok()?,
            bytes: m.next()?.parse().ok()?,
            range: q[3].to_string(),
            if_range: unescape(q[5]),
            etag: unescape(q[7]),
        })
    }
}

/// Run once when a [`CutProxy`] drops its connection.
pub type OnCut = Box<dyn FnOnce() + Send>;

/// A TCP proxy on 127.0.0.1 in front of `upstream` that, once armed with
/// [`CutProxy::cut_once_after`], closes the first connection on which more
/// than that many bytes have come back from the upstream, in the middle of
/// the answer; every other connection passes untouched.
pub struct CutProxy {
    pub addr: SocketAddr,
    cut: Arc<Mutex<Option<(u64, OnCut)>>>,
    pub cuts: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
}

impl CutProxy {
    pub fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let cut: Arc<Mutex<Option<(u64, OnCut)>>> = Arc::default();
        let cuts = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, n, s) = (cut.clone(), cuts.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let (c, n) = (c.clone(), n.clone());
                std::thread::spawn(move || relay(client, upstream, &c, &n));
            }
        });
        CutProxy {
            addr,
            cut,
            cuts,
            stop,
        }
    }

    /// Drop the first connection that carries more than `bytes` bytes back
    /// to the client, after `on_cut` has run (at that instant).
    pub fn cut_once_after(&self, bytes: u64, on_cut: OnCut) {
        *self.cut.lock().unwrap() = Some((bytes, on_cut));
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name.trim_start_matches('/'))
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    cut: &Mutex<Option<(u64, OnCut)>>,
    cuts: &Mutex<u32>,
) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // Requests: client -> server, untouched.
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        while let Ok(n) = c_in.read(&mut buf) {
            if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_out.shutdown(Shutdown::Write);
    });
    // Answers: server -> client, counted, cut when armed.
    let (mut s_in, mut c_out) = (server, client);
    let mut sent = 0u64;
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match s_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut guard = cut.lock().unwrap();
        if let Some((limit, _)) = guard.as_ref() {
            if sent + n as u64 > *limit {
                let keep = (*limit - sent.min(*limit)) as usize;
                let (_, on_cut) = guard.take().unwrap();
                drop(guard);
                let _ = c_out.write_all(&buf[..keep]);
                on_cut();
                *cuts.lock().unwrap() += 1;
                let _ = c_out.shutdown(Shutdown::Both);
                let _ = s_in.shutdown(Shutdown::Both);
                return;
            }
        }
        drop(guard);
        if c_out.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = c_out.shutdown(Shutdown::Both);
}
