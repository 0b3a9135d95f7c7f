//! A DDI fixture server on 127.0.0.1: plays recorded hawkBit DDI answers
//! (tests/fixtures/hawkbit/, see its README) by method and path, serves
//! artifacts, and records every request with its body, so that a test can
//! assert the exact feedback a device sent. For what goosebit cannot show
//! (cancelAction, `attempt`, maintenance windows, several chunks, sha256).
//!
//! A route is set per (method, path without the query); a GET without one
//! answers 404, a POST or PUT without one 200 with no body (hawkBit's
//! answer to feedback and configData). Routes can be changed while the
//! device runs (the server's next answer).

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::Value;

/// The tenant and controller id the fixtures' device uses.
pub const TENANT: &str = "DEFAULT";
pub const CONTROLLER: &str = "hawkbit-dev";

/// The directory of the recorded hawkBit answers.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hawkbit")
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path with its query, as sent.
    pub target: String,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method,
                self.target,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

type Routes = Arc<Mutex<HashMap<(String, String), Reply>>>;

pub struct DdiServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    routes: Routes,
    log: Arc<Mutex<Vec<Recorded>>>,
    accept: Option<JoinHandle<()>>,
}

impl DdiServer {
    pub fn start() -> DdiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let routes: Routes = Arc::default();
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let (s, r, l) = (stop.clone(), routes.clone(), log.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &r, &l);
                });
            }
        });
        DdiServer {
            addr,
            stop,
            routes,
            log,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT` (the device's `ddi.server_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The controller resource's path: `/DEFAULT/controller/v1/hawkbit-dev`.
    pub fn base_path(&self) -> String {
        format!("/{TENANT}/controller/v1/{CONTROLLER}")
    }

    pub fn set(&self, method: &str, path: &str, reply: Reply) {
        self.routes
            .lock()
            .unwrap()
            .insert((method.to_string(), path.to_string()), reply);
    }

    pub fn remove(&self, method: &str, path: &str) {
        self.routes
            .lock()
            .unwrap()
            .remove(&(method.to_string(), path.to_string()));
    }

    /// Answer `GET path` with the fixture `name`, its placeholders filled
    /// ([`fixture`]; `base` is this server's controller URL, `server` its
    /// origin).
    pub fn set_fixture(&self, path: &str, name: &str, vars: &[(&str, Value)]) {
        let mut all: Vec<(&str, Value)> = vec![
            (
                "base",
                Value::String(format!("{}{}", self.url(), self.base_path())),
            ),
            ("server", Value::String(self.url())),
        ];
        all.extend(vars.iter().cloned());
        let body = serde_json::to_vec_pretty(&fixture(name, &all)).unwrap();
        self.set(
            "GET",
            path,
            Reply {
                status: 200,
                content_type: "application/hal+json",
                body,
            },
        );
    }

    /// Answer `GET {base}` (the poll) with the fixture `name`.
    pub fn set_base(&self, name: &str, vars: &[(&str, Value)]) {
        self.set_fixture(&self.base_path(), name, vars);
    }

    /// Serve `bytes` for `GET path` (an artifact).
    pub fn set_file(&self, path: &str, bytes: Vec<u8>) {
        self.set(
            "GET",
            path,
            Reply {
                status: 200,
                content_type: "application/octet-stream",
                body: bytes,
            },
        );
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// The JSON bodies POSTed to `path`, in order.
    pub fn posted(&self, path: &str) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path() == path)
            .map(Recorded::json)
            .collect()
    }

    /// Every POST and PUT so far (what the device told the server).
    pub fn sent(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }
}

impl Drop for DdiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// The fixture `name` with its placeholders filled: a string that is
/// exactly `{{var}}` becomes the variable's JSON value (so a size stays a
/// number), and `{{var}}` inside a longer string the variable's text.
/// Panics on a placeholder left unfilled.
pub fn fixture(name: &str, vars: &[(&str, Value)]) -> Value {
    let p = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let filled = fill(v, vars);
    let s = filled.to_string();
    assert!(!s.contains("{{"), "{name}: a placeholder is left: {s}");
    filled
}

fn fill(v: Value, vars: &[(&str, Value)]) -> Value {
    match v {
        Value::String(s) => {
            for (k, val) in vars {
                if s == format!("{{{{{k}}}}}") {
                    return val.clone();
                }
            }
            let mut s = s;
            for (k, val) in vars {
                let text = match val {
                    Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                s = s.replace(&format!("{{{{{k}}}}}"), &text);
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|x| fill(x, vars)).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, x)| (k, fill(x, vars))).collect()),
        other => other,
    }
}

fn serve(conn: TcpStream, routes: &Routes, log: &Mutex<Vec<Recorded>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let crate::feedsrv::RequestHead {
        method,
        target,
        content_length: len,
    } = crate::feedsrv::read_head(&conn, &mut reader)?;
    let mut body = vec![0u8; len.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let path = target.split('?').next().unwrap_or("").to_string();
    let reply = routes
        .lock()
        .unwrap()
        .get(&(method.clone(), path))
        .cloned()
        .unwrap_or_else(|| match method.as_str() {
            "POST" | "PUT" => Reply {
                status: 200,
                content_type: "application/json",
                body: Vec::new(),
            },
            _ => Reply {
                status: 404,
                content_type: "text/plain",
                body: b"404\n".to_vec(),
            },
        });
    log.lock().unwrap().push(Recorded {
        method: method.clone(),
        target,
        body,
    });
    let reason = match reply.status {
        200 => "OK",
        404 => "Not Found",
        _ => "Error",
    };
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nContent-Type: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.body.len(),
        reply.content_type
    )?;
    if method != "HEAD" {
        out.write_all(&reply.body)?;
    }
    out.flush()
}
