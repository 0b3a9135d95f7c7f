//! The agent tests' environment: a disk whose slot A holds 1.0.0, a feed
//! directory served on 127.0.0.1 by [`FeedServer`], and a config pointing
//! the agent at it (tests/tests/agent.rs, tests/tests/feed_pin.rs).

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::feedsrv::{FeedServer, Mode};
use crate::installfix::{ok, stderr, Fix, COMPATIBLE};
use crate::run_slotctl;

pub struct Env {
    pub fix: Fix,
    pub www: PathBuf,
    pub srv: FeedServer,
}

/// `slotctl feed ARGS --feed FEED`.
pub fn feed_cmd(args: &[&str], feed: &Path) -> Output {
    let mut v: Vec<std::ffi::OsString> = vec!["feed".into()];
    v.extend(args.iter().map(|a| a.into()));
    v.push("--feed".into());
    v.push(feed.into());
    run_slotctl(v)
}

impl Env {
    /// A disk whose slot A holds 1.0.0 (factory), a feed directory served
    /// on 127.0.0.1, and a config pointing the agent at it.
    pub fn new(agent_extra: &str) -> Env {
        let fix = Fix::new();
        let root = fix.payload("root-1.0.0", 1 << 20, 1);
        let img = fix.pack(
            "base.img",
            "1.0.0",
            1,
            &[("BOOT", &fix.boot_payload()), ("ROOT", &root)],
            "zstd",
        );
        fix.factory("A", &img);
        let www = fix.path("www");
        std::fs::create_dir_all(www.join("images")).unwrap();
        let srv = FeedServer::start(&www, Mode::Normal);
        let mut cfg = std::fs::read_to_string(&fix.config).unwrap();
        cfg.push_str(&format!(
            "\n[agent]\nfeed_url = \"{}\"\nmax_feed_bytes = 65536\n{agent_extra}\n",
            srv.url("feed.json")
        ));
        std::fs::write(&fix.config, cfg).unwrap();
        let env = Env { fix, www, srv };
        ok(feed_cmd(&["init", "--compatible", COMPATIBLE], &env.feed()));
        env
    }

    pub fn feed(&self) -> PathBuf {
        self.www.join("feed.json")
    }

    /// Pack `version`, put it in the feed directory and add it to the feed.
    /// Returns the ROOT payload's raw bytes file.
    pub fn add(&self, version: &str, rollback: u64, waves: &[&str]) -> PathBuf {
        self.add_with(version, rollback, waves, "zstd", None).0
    }

    /// [`Env::add`] with the payload's compression and the URL the feed
    /// names (default: `images/gw-VERSION.img` of the feed directory, where
    /// the image is copied). Returns (ROOT payload file, image file).
    pub fn add_with(
        &self,
        version: &str,
        rollback: u64,
        waves: &[&str],
        compression: &str,
        url: Option<&str>,
    ) -> (PathBuf, PathBuf) {
        let seed = version.bytes().map(u64::from).sum::<u64>();
        let root = self.fix.payload(&format!("root-{version}"), 1 << 20, seed);
        let name = format!("images/gw-{version}.img");
        let img = self.fix.pack(
            &format!("gw-{version}.img"),
            version,
            rollback,
            &[("BOOT", &self.fix.boot_payload()), ("ROOT", &root)],
            compression,
        );
        let url = match url {
            Some(u) => u.to_string(),
            None => {
                std::fs::copy(&img, self.www.join(&name)).unwrap();
                name
            }
        };
        let mut args = vec!["add", img.to_str().unwrap(), "--url", &url];
        for w in waves {
            args.push("--wave");
            args.push(w);
        }
        ok(feed_cmd(&args, &self.feed()));
        (root, img)
    }

    pub fn sign(&self) {
        ok(feed_cmd(
            &["sign", "--key", self.fix.key.to_str().unwrap()],
            &self.feed(),
        ));
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut v = args.to_vec();
        v.extend(["--booted", "A"]);
        self.fix.run(&v)
    }

    pub fn check(&self) -> Value {
        let out = ok(self.run(&["check", "--json"]));
        serde_json::from_slice(&out.stdout).expect("check --json is JSON")
    }

    pub fn state(&self) -> Value {
        let p = self.fix.path("state/agent.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    /// Set this device's rollout seed.
    pub fn set_seed(&self, seed: u32) {
        let dir = self.fix.path("state");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("agent.json"), format!("{{\"seed\": {seed}}}")).unwrap();
    }
}

/// One line on stderr, naming `what`, exit 3 (a refusal), disk unchanged.
pub fn assert_refused(env: &Env, args: &[&str], what: &str) {
    let before = env.fix.disk_bytes();
    let out = env.run(args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "expected a refusal (exit 3): {err}"
    );
    let lines: Vec<_> = err.lines().filter(|l| !l.contains("warning:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(lines[0].starts_with("slotctl: error: "), "{err}");
    assert!(lines[0].contains(what), "expected {what:?} in: {err}");
    assert!(env.fix.disk_bytes() == before, "the disk changed");
}
