//! Progress output of long operations (install, verify-slot).
//!
//! - stderr is a terminal: a progress bar with bytes, speed and time left;
//! - `--json`: JSON lines on stdout, one object per event:
//!   `{"event":"phase","phase":"write","role":"ROOT","total":N}`,
//!   `{"event":"progress","phase":"write","role":"ROOT","done":N,"total":M}`
//!   (at most every 200 ms per phase, and always at the end),
//!   `{"event":"warning","message":"..."}`, and last
//!   `{"event":"result","ok":true,...}`;
//! - otherwise quiet (warnings still go to stderr).
//!
//! Cloneable and thread-safe: the pipeline's writer thread reports from its
//! own thread.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Json,
    Quiet,
}

struct Inner {
    mode: Mode,
    bar: Option<ProgressBar>,
    phase: String,
    role: String,
    total: u64,
    last_emit: Option<Instant>,
}

#[derive(Clone)]
pub struct Progress(Arc<Mutex<Inner>>);

const JSON_INTERVAL: Duration = Duration::from_millis(200);

fn emit_json(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

impl Progress {
    /// JSON when asked, a bar when stderr is a terminal, else quiet.
    pub fn new(json: bool) -> Progress {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Quiet
        };
        Progress::with_mode(mode)
    }

    pub fn with_mode(mode: Mode) -> Progress {
        Progress(Arc::new(Mutex::new(Inner {
            mode,
            bar: None,
            phase: String::new(),
            role: String::new(),
            total: 0,
            last_emit: None,
        })))
    }

    #[allow(dead_code)]
    pub fn mode(&self) -> Mode {
        self.0.lock().unwrap().mode
    }

    /// Start a phase ("download", "write", "readback", "verify"; on the
    /// delta way "scan" of the booted slot, "fetch", "verify") over
    /// `total` bytes of one role.
    pub fn phase(&self, phase: &str, role: &str, total: u64) {
        let mut g = self.0.lock().unwrap();
        if let Some(b) = g.bar.take() {
            b.finish_and_clear();
        }
        g.phase = phase.to_string();
        g.role = role.to_string();
        g.total = total;
        g.last_emit = None;
        match g.mode {
            Mode::Json => emit_json(json!({
                "event": "phase", "phase": phase, "role": role, "total": total
            })),
            Mode::Bar => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{msg:16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                let msg = format!("{phase} {role}");
                bar.set_message(crate::term::printable(&msg).into_owned());
                g.bar = Some(bar);
            }
            Mode::Quiet => {}
        }
    }

    /// Bytes done so far in the current phase.
    pub fn update(&self, done: u64) {
        let mut g = self.0.lock().unwrap();
        match g.mode {
            Mode::Bar => {
                if let Some(b) = &g.bar {
                    b.set_position(done);
                }
            }
            Mode::Json => {
                let now = Instant::now();
                let due = g
                    .last_emit
                    .is_none_or(|t| now.duration_since(t) >= JSON_INTERVAL);
                if due || done == g.total {
                    g.last_emit = Some(now);
                    emit_json(json!({
                        "event": "progress", "phase": g.phase, "role": g.role,
                        "done": done, "total": g.total
                    }));
                }
            }
            Mode::Quiet => {}
        }
    }

    /// End the current phase (the bar disappears).
    pub fn finish_phase(&self) {
        let mut g = self.0.lock().unwrap();
        if let Some(b) = g.bar.take() {
            b.finish_and_clear();
        }
    }

    /// What an install moved so far: bytes downloaded (`downloaded`, HTTP
    /// body bytes) and reused locally. JSON: one
    /// `{"event":"counters",...}` line; the bar: the current phase's
    /// message shows both.
    pub fn counters(&self, c: &crate::install::counters::Counters, downloaded: u64) {
        let g = self.0.lock().unwrap();
        match g.mode {
            Mode::Json => emit_json(json!({
                "event": "counters",
                "downloaded": downloaded,
                "reused": {
                    "booted": c.reused_booted,
                    "target": c.reused_target,
                    "zero": c.reused_zero,
                },
                "written": c.written,
            })),
            Mode::Bar => {
                if let Some(b) = &g.bar {
                    b.set_message(format!(
                        "{} {} (downloaded {}, reused {})",
                        crate::term::printable(&g.phase),
                        crate::term::printable(&g.role),
                        crate::install::counters::human(downloaded),
                        crate::install::counters::human(c.reused())
                    ));
                }
            }
            Mode::Quiet => {}
        }
    }

    /// What a delta install will download, said once every chunked
    /// payload's plan is known and before the first frame is fetched.
    /// JSON: `{"event":"plan","download_bytes":N,"received":A,
    /// "image_bytes":M,"reused":{...}}`; otherwise one stderr line
    /// `slotctl: downloading N of the M image (delta; R reused from the
    /// booted slot)`.
    pub fn plan(&self, p: &PlanEvent) {
        let g = self.0.lock().unwrap();
        let human = crate::install::counters::human;
        match g.mode {
            Mode::Json => emit_json(json!({
                "event": "plan",
                "download_bytes": p.download_bytes,
                "received": p.received,
                "image_bytes": p.image_bytes,
                "reused": {
                    "booted": p.reused_booted,
                    "target": p.reused_target,
                    "zero": p.reused_zero,
                },
            })),
            Mode::Bar | Mode::Quiet => {
                let line = format!(
                    "slotctl: downloading {} of the {} image (delta; {} reused from the booted slot)",
                    human(p.download_bytes),
                    human(p.image_bytes),
                    human(p.reused_booted)
                );
                match &g.bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
    }

    /// A warning that does not stop the operation.
    pub fn warn(&self, msg: &str) {
        let g = self.0.lock().unwrap();
        let text = crate::term::printable(msg);
        match g.mode {
            Mode::Json => emit_json(json!({"event": "warning", "message": msg})),
            Mode::Bar => match &g.bar {
                Some(b) => b.println(format!("slotctl: warning: {text}")),
                None => eprintln!("slotctl: warning: {text}"),
            },
            Mode::Quiet => eprintln!("slotctl: warning: {text}"),
        }
    }

    /// The final event (JSON mode only; `fields` is merged into it).
    pub fn result(&self, ok: bool, fields: Value) {
        self.finish_phase();
        let g = self.0.lock().unwrap();
        if g.mode == Mode::Json {
            let mut v = json!({"event": "result", "ok": ok});
            if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), fields) {
                o.extend(extra);
            }
            emit_json(v);
        }
    }
}

/// The figures of [`Progress::plan`].
#[derive(Debug, Clone, Copy)]
pub struct PlanEvent {
    /// The whole download of the install ([`crate::install::delta::download_total`]):
    /// what `received` counts plus the planned ranges and unchunked payloads.
    pub download_bytes: u64,
    /// Already received when the plan is known: the probe (the header) and
    /// the table frames.
    pub received: u64,
    /// The image's length.
    pub image_bytes: u64,
    pub reused_booted: u64,
    pub reused_target: u64,
    pub reused_zero: u64,
}
