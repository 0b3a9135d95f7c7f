//! A real hawkBit DDI server for the tests: goosebit (PyPI), started on
//! 127.0.0.1 by the test that needs it and killed by PID when it ends.
//!
//! The virtualenv is made once, outside the source tree, in
//! `/var/tmp/slotctl-goosebit-<version>` (or `SLOTCTL_GOOSEBIT_VENV`):
//! `python3 -m venv` (Debian: python3-venv, scripts/setup.sh), then
//! `pip install --no-deps -r tests/goosebit/requirements.txt` (goosebit
//! 0.2.12 and everything it needs, pinned). Per server: a temp dir,
//! `aerich upgrade` (a pyproject.toml whose `[tool.aerich]` names goosebit's
//! `TORTOISE_CONF` and its migrations), `uvicorn goosebit:app --host
//! 127.0.0.1` on a free port (never `python -m goosebit`, which binds
//! 0.0.0.0), up within 20 s; the first admin from a form POST to `/setup`,
//! a bearer token from `/login`; software uploaded with
//! `PUT /api/v1/software` (multipart), assigned with `PATCH
//! /api/v1/devices`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The multipart boundary of the uploads.
const BOUNDARY: &str = "slotctl-test-boundary-7f3a9c";

const REQUIREMENTS: &str = include_str!("../goosebit/requirements.txt");
/// Bump when the requirements change: a new venv is made beside the old.
const VENV_NAME: &str = "slotctl-goosebit-0.2.12-r1";
const ADMIN: &str = "admin@slotctl.test";
const PASSWORD: &str = "slotctl-test-password";
/// Start-up budget on a loaded machine.
const START_BUDGET: Duration = Duration::from_secs(20);

static VENV_LOCK: Mutex<()> = Mutex::new(());
/// One server starts at a time (migrations, imports): parallel tests on a
/// small machine would otherwise share its CPUs during their start-up and
/// could each miss the budget.
static START_LOCK: Mutex<()> = Mutex::new(());

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The virtualenv holding goosebit, made on first use.
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("SLOTCTL_GOOSEBIT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("/var/tmp").join(VENV_NAME));
    let _g = VENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if dir.join(".complete").exists() {
        return dir;
    }
    // Made in place (a venv's scripts name its path, it cannot be moved);
    // `.complete` is written last, so a half-made venv is made again.
    let _ = std::fs::remove_dir_all(&dir);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&dir),
        "python3 -m venv (on Debian: apt-get install python3-venv, scripts/setup.sh)",
    );
    let req = dir.join("requirements.txt");
    std::fs::write(&req, REQUIREMENTS).unwrap();
    run(
        Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "--no-deps", "-r"])
            .arg(&req),
        "pip install goosebit",
    );
    std::fs::write(dir.join(".complete"), "").unwrap();
    dir
}

/// goosebit's package directory in the venv.
fn package_dir(venv: &Path) -> PathBuf {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import goosebit, os; print(os.path.dirname(goosebit.__file__))",
        ])
        .output()
        .expect("venv python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running goosebit; killed (by PID) on drop.
pub struct Goosebit {
    /// `http://127.0.0.1:PORT`: the DDI server URL (tenant `DEFAULT`).
    pub url: String,
    token: String,
    child: Child,
    agent: ureq::Agent,
    pub dir: tempfile::TempDir,
}

impl Drop for Goosebit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Goosebit {
    /// Start a fresh server (empty database) with a 5 s polling time.
    pub fn start() -> Goosebit {
        Goosebit::start_with(&[])
    }

    /// [`Goosebit::start`] with extra environment (e.g. device auth).
    pub fn start_with(env: &[(&str, &str)]) -> Goosebit {
        let venv = venv();
        let pkg = package_dir(&venv);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("artifacts")).unwrap();
        std::fs::write(
            d.join("pyproject.toml"),
            format!(
                "[tool.aerich]\ntortoise_orm = \"goosebit.db.config.TORTOISE_CONF\"\nlocation = \"{}\"\nsrc_folder = \".\"\n",
                pkg.join("db/migrations").display()
            ),
        )
        .unwrap();
        let envs = [
            (
                "GOOSEBIT_DB_URI",
                format!("sqlite:///{}", d.join("db.sqlite3").display()),
            ),
            (
                "GOOSEBIT_ARTIFACTS_DIR",
                d.join("artifacts").display().to_string(),
            ),
            (
                "GOOSEBIT_SECRET_KEY",
                "slotctl-test-secret-key-0123456789".to_string(),
            ),
            ("GOOSEBIT_POLL_TIME", "00:00:05".to_string()),
        ];
        let cmd = |prog: &str| {
            let mut c = Command::new(venv.join("bin").join(prog));
            c.current_dir(d).env_remove("GOOSEBIT_SETTINGS");
            for (k, v) in &envs {
                c.env(k, v);
            }
            for (k, v) in env {
                c.env(k, v);
            }
            c
        };
        let _one_at_a_time = START_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        run(cmd("aerich").arg("upgrade"), "aerich upgrade");
        let port = free_port();
        let log = std::fs::File::create(d.join("goosebit.log")).unwrap();
        let child = cmd("uvicorn")
            .args([
                "goosebit:app",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start uvicorn");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut gb = Goosebit {
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            child,
            agent,
            dir,
        };
        let start = Instant::now();
        loop {
            if gb.agent.get(format!("{}/login", gb.url)).call().is_ok() {
                break;
            }
            if let Ok(Some(st)) = gb.child.try_wait() {
                panic!("goosebit exited ({st}):\n{}", gb.log());
            }
            assert!(
                start.elapsed() < START_BUDGET,
                "goosebit not up within {START_BUDGET:?}:\n{}",
                gb.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        gb.form("/setup");
        gb.token = gb.form("/login")["access_token"]
            .as_str()
            .expect("a token from /login")
            .to_string();
        gb
    }

    /// The server's own log (uvicorn and goosebit).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("goosebit.log")).unwrap_or_default()
    }

    fn form(&self, path: &str) -> Value {
        let body = format!("username={}&password={PASSWORD}", ADMIN.replace('@', "%40"));
        let mut resp = self
            .agent
            .post(format!("{}{path}", self.url))
            .content_type("application/x-www-form-urlencoded")
            .send(body)
            .unwrap();
        self.json_of(&mut resp, path)
    }

    fn json_of(&self, resp: &mut ureq::http::Response<ureq::Body>, what: &str) -> Value {
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        assert!(
            (200..300).contains(&status),
            "{what}: HTTP {status}: {text}\n{}",
            self.log()
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"))
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `GET /api/v1/PATH`.
    pub fn api_get(&self, path: &str) -> Value {
        let mut resp = self
            .agent
            .get(format!("{}/api/v1/{path}", self.url))
            .header("Authorization", self.bearer())
            .call()
            .unwrap();
        self.json_of(&mut resp, path)
    }

    fn api_send(&self, method: &str, path: &str, body: &Value) -> Value {
        let url = format!("{}/api/v1/{path}", self.url);
        let req = match method {
            "PATCH" => self.agent.patch(url),
            "PUT" => self.agent.put(url),
            m => panic!("{m}"),
        };
        let mut resp = req
            .header("Authorization", self.bearer())
            .content_type("application/json")
            .send(body.to_string())
            .unwrap();
        self.json_of(&mut resp, path)
    }

    /// Register software by URL (`PUT /api/v1/software`, form field
    /// `url`): goosebit fetches it once to read it, and gives devices that
    /// URL as the download link. Its software id.
    pub fn upload_url(&self, url: &str) -> u64 {
        let body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\n{url}\r\n--{BOUNDARY}--\r\n"
        );
        let mut resp = self.put_software(body.into_bytes());
        self.json_of(&mut resp, "upload by URL")["id"]
            .as_u64()
            .expect("a software id")
    }

    /// Upload a file (`PUT /api/v1/software`, multipart); its software id.
    pub fn upload(&self, file: &Path) -> u64 {
        let (status, text) = self.upload_status(file);
        assert!(
            (200..300).contains(&status),
            "upload: HTTP {status}: {text}\n{}",
            self.log()
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        v["id"].as_u64().expect("a software id")
    }

    /// The status and text of an upload (`PUT /api/v1/software`).
    pub fn upload_status(&self, file: &Path) -> (u16, String) {
        let name = file.file_name().unwrap().to_str().unwrap();
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend(std::fs::read(file).unwrap());
        body.extend(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let mut resp = self.put_software(body);
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    /// `PUT /api/v1/software` of a multipart body delimited by [`BOUNDARY`].
    fn put_software(&self, body: Vec<u8>) -> ureq::http::Response<ureq::Body> {
        self.agent
            .put(format!("{}/api/v1/software", self.url))
            .header("Authorization", self.bearer())
            .content_type(format!("multipart/form-data; boundary={BOUNDARY}"))
            .send(body)
            .unwrap()
    }

    /// Assign software `id` to device `dev` (`PATCH /api/v1/devices`).
    pub fn assign(&self, dev: &str, id: u64) {
        self.api_send(
            "PATCH",
            "devices",
            &json!({"devices": [dev], "software": id.to_string()}),
        );
    }

    /// Register device `dev` with its token (`PUT /api/v1/devices`), as
    /// strict device authentication needs before its first poll.
    pub fn put_device(&self, dev: &str, token: &str) {
        self.api_send(
            "PUT",
            "devices",
            &json!({"devices": [dev], "auth_token": token}),
        );
    }

    /// Have the device take its assigned software again after a failure
    /// (`force_update`).
    pub fn force(&self, dev: &str) {
        self.api_send(
            "PATCH",
            "devices",
            &json!({"devices": [dev], "force_update": true}),
        );
    }

    /// The files goosebit stores uploads in.
    pub fn stored_artifacts(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let base = self.dir.path().join("artifacts");
        let mut v = Vec::new();
        walk(&base, &mut v);
        // Not its upload area (artifacts/tmp).
        v.retain(|p| !p.starts_with(base.join("tmp")));
        v
    }

    /// One device as `GET /api/v1/devices` lists it.
    pub fn device(&self, dev: &str) -> Value {
        let all = self.api_get("devices");
        all["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|x| x["id"] == dev))
            .cloned()
            .unwrap_or_else(|| panic!("device {dev} not listed: {all}"))
    }

    /// The device's log and progress (`GET /api/v1/devices/DEV/log`).
    pub fn device_log(&self, dev: &str) -> Value {
        self.api_get(&format!("devices/{dev}/log"))
    }
}
