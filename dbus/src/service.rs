//! The `org.slotctl.Updater1` interface. Its only state is the running
//! operation (an install's child process and the progress it reported);
//! everything else is the CLI's, asked for at each call.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use zbus::zvariant::{OwnedValue, Value as ZValue};
use zbus::{blocking, interface, object_server::SignalEmitter};

use crate::error::{Error, BUSY, FAILED, NOT_RUNNING};
use crate::runner::{self, Runner};

pub const NAME: &str = "org.slotctl.Updater1";
pub const PATH: &str = "/org/slotctl/Updater1";

/// What the properties show.
#[derive(Debug, Default, Clone)]
struct Progress {
    operation: String,
    phase: String,
    role: String,
    bytes_done: u64,
    bytes_total: u64,
    percent: u32,
    last_error: String,
    /// The running install's process id (for `Cancel`).
    pid: Option<i32>,
    /// Between clearing `Operation` and sending `Completed`: a new install
    /// waits, so that `Completed` is the last signal of its install.
    finishing: bool,
}

pub struct Updater {
    runner: Runner,
    state: Arc<Mutex<Progress>>,
}

impl Updater {
    pub fn new(runner: Runner) -> Updater {
        Updater {
            runner,
            state: Arc::new(Mutex::new(Progress::default())),
        }
    }
}

#[interface(name = "org.slotctl.Updater1")]
impl Updater {
    /// Start `slotctl install --json` of `source` with `options`; returns
    /// once it runs. Progress: the properties; the end: `Completed`.
    fn install(
        &self,
        source: &str,
        options: HashMap<String, OwnedValue>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), Error> {
        runner::check_source(source)?;
        let flags = runner::install_flags(&options)?;
        let mut st = self.state.lock().unwrap();
        if !st.operation.is_empty() || st.finishing {
            return Err(Error::new(BUSY, "an install is already running"));
        }
        let mut args: Vec<std::ffi::OsString> = vec!["install".into(), "--json".into()];
        args.extend(flags);
        args.push("--".into());
        args.push(source.into());
        let child = self
            .runner
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::new(
                    FAILED,
                    format!("running {}: {e}", self.runner.slotctl.display()),
                )
            })?;
        *st = Progress {
            operation: "install".into(),
            pid: Some(child.id() as i32),
            ..Progress::default()
        };
        let snapshot = st.clone();
        drop(st);
        let conn = blocking::Connection::from(conn.clone());
        emit_changed(&conn, &snapshot, ALL);
        let state = self.state.clone();
        let runner = self.runner.clone();
        std::thread::spawn(move || monitor(child, &state, &runner, &conn));
        Ok(())
    }

    /// Cancel the running install before its activation (SIGTERM to
    /// `slotctl install`, which then ends with exit code 6).
    fn cancel(&self) -> Result<(), Error> {
        let st = self.state.lock().unwrap();
        let Some(pid) = st.pid else {
            return Err(Error::new(NOT_RUNNING, "no install is running"));
        };
        // The pid is ours and not yet reaped (the monitor clears it under
        // this lock before it waits for the child).
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .map_err(|e| Error::new(FAILED, format!("signalling slotctl install: {e}")))
    }

    /// `slotctl status --json`, unchanged.
    fn get_status(&self) -> Result<String, Error> {
        self.runner.run(&["status", "--json"])
    }

    /// `slotctl mark-good`.
    fn mark_good(&self) -> Result<(), Error> {
        self.runner.run(&["mark-good"]).map(drop)
    }

    /// `slotctl mark-bad [SLOT] [--force]` ("" = the booted slot).
    fn mark_bad(&self, slot: &str, force: bool) -> Result<(), Error> {
        let mut args = vec!["mark-bad"];
        match slot {
            "" => {}
            "A" | "B" | "a" | "b" => args.push(slot),
            _ => {
                return Err(Error::invalid(format!(
                    "slot '{slot}': give A, B or \"\" (the booted slot)"
                )))
            }
        }
        if force {
            args.push("--force");
        }
        self.runner.run(&args).map(drop)
    }

    /// `slotctl rollback`.
    fn rollback(&self) -> Result<(), Error> {
        self.runner.run(&["rollback"]).map(drop)
    }

    /// `slotctl agent-state --json`: pending, failed versions, last check.
    fn get_agent_state(&self) -> Result<String, Error> {
        self.runner.run(&["agent-state", "--json"])
    }

    /// The install ended: success, its message, and its `result` line with
    /// `status` (`slotctl status --json` right after it).
    #[zbus(signal)]
    async fn completed(
        emitter: &SignalEmitter<'_>,
        success: bool,
        message: &str,
        result: &str,
    ) -> zbus::Result<()>;

    /// "" or "install".
    #[zbus(property)]
    fn operation(&self) -> String {
        self.state.lock().unwrap().operation.clone()
    }
    #[zbus(property)]
    fn phase(&self) -> String {
        self.state.lock().unwrap().phase.clone()
    }
    #[zbus(property)]
    fn role(&self) -> String {
        self.state.lock().unwrap().role.clone()
    }
    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        self.state.lock().unwrap().bytes_done
    }
    #[zbus(property)]
    fn bytes_total(&self) -> u64 {
        self.state.lock().unwrap().bytes_total
    }
    #[zbus(property)]
    fn percent(&self) -> u32 {
        self.state.lock().unwrap().percent
    }
    #[zbus(property)]
    fn last_error(&self) -> String {
        self.state.lock().unwrap().last_error.clone()
    }
}

const ALL: &[&str] = &[
    "Operation",
    "Phase",
    "Role",
    "BytesDone",
    "BytesTotal",
    "Percent",
    "LastError",
];
const PROGRESS: &[&str] = &["BytesDone", "BytesTotal", "Percent"];

/// One `PropertiesChanged` signal with `names`' values.
fn emit_changed(conn: &blocking::Connection, p: &Progress, names: &[&str]) {
    let changed: HashMap<&str, ZValue<'_>> = names
        .iter()
        .map(|&n| {
            let v = match n {
                "Operation" => ZValue::from(p.operation.as_str()),
                "Phase" => ZValue::from(p.phase.as_str()),
                "Role" => ZValue::from(p.role.as_str()),
                "BytesDone" => ZValue::from(p.bytes_done),
                "BytesTotal" => ZValue::from(p.bytes_total),
                "Percent" => ZValue::from(p.percent),
                _ => ZValue::from(p.last_error.as_str()),
            };
            (n, v)
        })
        .collect();
    let body = (NAME, changed, Vec::<&str>::new());
    if let Err(e) = conn.emit_signal(
        None::<()>,
        PATH,
        "org.freedesktop.DBus.Properties",
        "PropertiesChanged",
        &body,
    ) {
        eprintln!("slotctl-dbus: warning: emitting PropertiesChanged: {e}");
    }
}

fn percent(done: u64, total: u64) -> u32 {
    let p = done.min(total).saturating_mul(100).checked_div(total);
    p.unwrap_or(0) as u32
}

/// Follow the install's JSON lines to its end, then report `Completed`.
fn monitor(
    mut child: Child,
    state: &Mutex<Progress>,
    runner: &Runner,
    conn: &blocking::Connection,
) {
    let mut err = child.stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let mut result: Option<Value> = None;
    let out = BufReader::new(child.stdout.take().expect("piped stdout"));
    for line in out.lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        // Only this thread changes the progress: emitting outside the lock
        // keeps the signals in order and the getters free.
        let mut st = state.lock().unwrap();
        let changed: &[&str] = match v["event"].as_str() {
            Some("phase") => {
                st.phase = text("phase");
                st.role = text("role");
                st.bytes_total = v["total"].as_u64().unwrap_or(0);
                st.bytes_done = 0;
                st.percent = 0;
                &["Phase", "Role", "BytesDone", "BytesTotal", "Percent"]
            }
            Some("progress") => {
                st.bytes_done = v["done"].as_u64().unwrap_or(0);
                st.bytes_total = v["total"].as_u64().unwrap_or(st.bytes_total);
                st.percent = percent(st.bytes_done, st.bytes_total);
                PROGRESS
            }
            Some("result") => {
                result = Some(v.clone());
                &[]
            }
            _ => &[],
        };
        let snapshot = st.clone();
        drop(st);
        if !changed.is_empty() {
            emit_changed(conn, &snapshot, changed);
        }
    }
    // Stdout closed: the install is ending. No more Cancel from here on
    // (the pid is about to be reaped).
    state.lock().unwrap().pid = None;
    let status = child.wait();
    let stderr = stderr.join().unwrap_or_default();
    let ok = matches!(&status, Ok(s) if s.success());
    let mut result = result.unwrap_or_else(|| json!({"event": "result", "ok": false}));
    let message = if ok {
        result["message"]
            .as_str()
            .unwrap_or("installed")
            .to_string()
    } else {
        let line = match &status {
            Ok(_) => runner::error_line(&stderr),
            Err(e) => format!("waiting for slotctl install: {e}"),
        };
        if result.get("error").is_none() {
            result["error"] = Value::from(line.clone());
        }
        line
    };
    let status_json = runner::Runner::run(runner, &["status", "--json"])
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .unwrap_or(Value::Null);
    result["status"] = status_json;
    let snapshot = {
        let mut st = state.lock().unwrap();
        st.operation.clear();
        st.finishing = true;
        st.last_error = if ok { String::new() } else { message.clone() };
        st.clone()
    };
    emit_changed(conn, &snapshot, &["Operation", "LastError"]);
    let body = (ok, message.as_str(), result.to_string());
    if let Err(e) = conn.emit_signal(None::<()>, PATH, NAME, "Completed", &body) {
        eprintln!("slotctl-dbus: warning: emitting Completed: {e}");
    }
    state.lock().unwrap().finishing = false;
}
