//! The DDI backend against a real DDI server: goosebit, started on
//! 127.0.0.1 by each test (tests/src/goosebit.rs). The device is a disk
//! image file whose slot A holds 1.0.0; a reboot is simulated as in the
//! agent tests (`boot-select`, then commands with `--booted B`).

use std::path::PathBuf;

use serde_json::Value;
use slotctl_tests::goosebit::Goosebit;
use slotctl_tests::installfix::{ok, stderr, Fix};

const DEV: &str = "slotctl-dev-1";

struct Env {
    fix: Fix,
    gb: Goosebit,
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

impl Env {
    fn new() -> Env {
        Env::with("")
    }

    /// [`Env::new`] with `extra` TOML in the device's config.
    fn with(extra: &str) -> Env {
        Env::build(extra, &[], "")
    }

    /// The device's config gets `extra` at the top level and `ddi_extra`
    /// (`{dir}`: the fixture's directory) in its `[ddi]` table; goosebit
    /// starts with `gb_env`.
    fn build(extra: &str, gb_env: &[(&str, &str)], ddi_extra: &str) -> Env {
        let fix = Fix::with_config_extra(extra);
        fix.provision_a("1.0.0", 1);
        let gb = Goosebit::start_with(gb_env);
        let ddi_extra = ddi_extra.replace("{dir}", &fix.dir.path().display().to_string());
        let mut cfg = std::fs::read_to_string(&fix.config).unwrap();
        cfg.push_str(&format!(
            "\n[ddi]\nserver_url = \"{}\"\ncontroller_id = \"{DEV}\"\n{ddi_extra}\n",
            gb.url
        ));
        std::fs::write(&fix.config, cfg).unwrap();
        Env { fix, gb }
    }

    /// A release, packed with `key` and wrapped as .swu (its signatures
    /// checked by wrap-swu against `pubkey`).
    fn release(
        &self,
        version: &str,
        key: &std::path::Path,
        pubkey: &std::path::Path,
    ) -> (PathBuf, PathBuf) {
        let root = self.fix.payload(&format!("root-{version}"), 300_000, 7);
        let img = self.fix.pack_with(
            &format!("gw-{version}.img"),
            version,
            1,
            slotctl_tests::installfix::COMPATIBLE,
            &[("BOOT", &self.fix.boot_payload()), ("ROOT", &root)],
            "zstd",
            key,
        );
        let swu = self.fix.path(&format!("gw-{version}.swu"));
        let out = ok(self.fix.run(&[
            "image".as_ref(),
            "wrap-swu".as_ref(),
            img.as_os_str(),
            "-o".as_ref(),
            swu.as_os_str(),
            "--pubkey".as_ref(),
            pubkey.as_os_str(),
        ]));
        assert!(stdout(&out).contains("wrapped as"), "{}", stdout(&out));
        (root, swu)
    }

    fn device(&self) -> Value {
        self.gb.device(DEV)
    }

    fn log(&self) -> String {
        self.gb.device_log(DEV)["log"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The device registers: the first poll asks for configData.
    fn register(&self) {
        let out = ok(self.fix.run(&["update", "--booted", "A"]));
        assert!(stdout(&out).contains("sent configData"), "{}", stdout(&out));
        let d = self.device();
        assert_eq!(d["last_state"], "Registered", "{d}");
        assert_eq!(d["sw_version"], "1.0.0", "{d}");
        assert_eq!(
            d["hardware"]["revision"],
            slotctl_tests::installfix::COMPATIBLE,
            "{d}"
        );
    }
}

#[test]
fn registers_installs_and_reports_success_only_after_boot_check_commits() {
    let env = Env::new();
    env.register();
    // Nothing assigned: nothing offered, nothing written.
    let before = env.fix.disk_bytes();
    let out = ok(env.fix.run(&["update", "--booted", "A"]));
    assert!(
        stdout(&out).contains("no deployment offered"),
        "{}",
        stdout(&out)
    );
    assert!(env.fix.disk_bytes() == before);

    let pubkey = env.fix.keyring.join("dev.pub");
    let (root, swu) = env.release("1.1.0", &env.fix.key, &pubkey);
    // goosebit takes no plain slotctl image (why wrap-swu exists).
    let (status, text) = env.gb.upload_status(&env.fix.path("gw-1.1.0.img"));
    assert_eq!(status, 422, "{text}");
    let id = env.gb.upload(&swu);
    env.gb.assign(DEV, id);
    // `check` sees the deployment and changes nothing.
    let out = ok(env.fix.run(&["check", "--booted", "A"]));
    assert!(
        stdout(&out).contains(&format!("action {id}: gw-1.1.0.swu 1.1.0 offered")),
        "{}",
        stdout(&out)
    );
    assert!(env.fix.disk_bytes() == before, "check wrote to the disk");

    let out = ok(env.fix.run(&["update", "--booted", "A"]));
    let text = stdout(&out);
    assert!(text.contains("installed 1.1.0 into slot B"), "{text}");
    env.fix.assert_partition_holds("B", "ROOT", &root);
    assert_eq!(env.fix.flags("B"), (2, 3, false));
    // Progress feedback arrived; no success yet.
    let log = env.log();
    assert!(log.contains("Downloaded 100%"), "{log}");
    assert!(log.contains("installed 1.1.0 into slot B"), "{log}");
    let d = env.device();
    assert_eq!(d["last_state"], "Running", "{d}");
    assert_eq!(d["sw_version"], "1.0.0", "{d}");
    assert!(env.fix.path("state/ddi-action.json").exists());

    // Before the reboot, and on trial after it: still no success.
    let out = ok(env.fix.run(&["update", "--booted", "A"]));
    assert!(
        stdout(&out).contains("waiting for a reboot"),
        "{}",
        stdout(&out)
    );
    ok(env.fix.run(&["boot-select"]));
    let out = ok(env.fix.run(&["update", "--booted", "B"]));
    assert!(
        stdout(&out).contains("waiting for boot-check"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.device()["last_state"], "Running");

    // boot-check commits B; the next cycle reports success.
    ok(env.fix.run(&["boot-check", "--booted", "B"]));
    assert!(env.fix.flags("B").2, "boot-check did not commit B");
    let out = ok(env.fix.run(&["update", "--booted", "B"]));
    assert!(
        stdout(&out).contains(&format!("action {id}: reported success")),
        "{}",
        stdout(&out)
    );
    let d = env.device();
    assert_eq!(d["last_state"], "Finished", "{d}");
    assert_eq!(d["sw_version"], "1.1.0", "{d}");
    assert!(!env.fix.path("state/ddi-action.json").exists());
    // Nothing more is offered or written.
    let before = env.fix.disk_bytes();
    let out = ok(env.fix.run(&["update", "--booted", "B"]));
    assert!(
        stdout(&out).contains("no deployment offered"),
        "{}",
        stdout(&out)
    );
    assert!(env.fix.disk_bytes() == before);
}

#[test]
fn install_refused_by_the_signature_is_reported_as_failure_slots_untouched() {
    let env = Env::new();
    env.register();
    // A release signed by a key the device does not trust.
    let other = env.fix.path("other");
    ok(env
        .fix
        .run(&["keygen".as_ref(), "--out".as_ref(), other.as_os_str()]));
    let (_, swu) = env.release(
        "1.1.0",
        &env.fix.path("other.key"),
        &env.fix.path("other.pub"),
    );
    let id = env.gb.upload(&swu);
    env.gb.assign(DEV, id);
    let before = env.fix.disk_bytes();
    let out = env.fix.run(&["update", "--booted", "A"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("signature"), "{err}");
    assert!(
        env.fix.disk_bytes() == before,
        "a refused install changed the disk"
    );
    let d = env.device();
    assert_eq!(d["last_state"], "Error", "{d}");
    let log = env.log();
    assert!(
        log.contains("install refused") && log.contains("signature"),
        "{log}"
    );
    assert!(!env.fix.path("state/ddi-action.json").exists());
    // goosebit offers nothing after a failure: the next cycle is idle.
    let out = ok(env.fix.run(&["update", "--booted", "A"]));
    assert!(
        stdout(&out).contains("no deployment offered"),
        "{}",
        stdout(&out)
    );
    assert!(env.fix.disk_bytes() == before);
}

#[test]
fn boot_that_falls_back_is_reported_as_failure_and_not_retried() {
    // The agent reboots into what it installed; the new slot's health
    // check fails, boot-check marks it bad and the device is back on A.
    let env = Env::with(
        "[agent]\nreboot = true\n[[boot_check.checks]]\nname = \"app\"\ncommand = [\"false\"]\n",
    );
    env.register();
    let pubkey = env.fix.keyring.join("dev.pub");
    let (root, swu) = env.release("1.1.0", &env.fix.key, &pubkey);
    let id = env.gb.upload(&swu);
    env.gb.assign(DEV, id);
    let out = ok(env.fix.run(&["agent", "--once", "--booted", "A"]));
    let text = stdout(&out);
    assert!(text.contains("slotctl agent: installed 1.1.0"), "{text}");
    assert!(text.contains("rebooting into the new slot"), "{text}");
    assert!(env.fix.rebooted.exists());
    env.fix.assert_partition_holds("B", "ROOT", &root);
    std::fs::remove_file(&env.fix.rebooted).unwrap();
    ok(env.fix.run(&["boot-select"]));
    let out = env.fix.run(&["boot-check", "--booted", "B"]);
    assert!(!out.status.success(), "the failing check passed");
    assert_eq!(env.fix.flags("B").0, 0, "B was not marked bad");
    assert_eq!(env.device()["last_state"], "Running");
    // Back on A: the next cycle reports the failure with the reason.
    let out = ok(env.fix.run(&["agent", "--once", "--booted", "A"]));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("action {id}: reported failure")),
        "{text}"
    );
    let d = env.device();
    assert_eq!(d["last_state"], "Error", "{d}");
    assert_eq!(d["sw_version"], "1.0.0", "{d}");
    let log = env.log();
    assert!(
        log.contains("did not commit") && log.contains("fell back to slot A"),
        "{log}"
    );
    let st: Value =
        serde_json::from_slice(&std::fs::read(env.fix.path("state/agent.json")).unwrap()).unwrap();
    assert_eq!(st["failed"][0]["version"], "1.1.0", "{st}");
    assert!(!env.fix.path("state/ddi-action.json").exists());
    // Forced again by the operator: the device still refuses the version
    // that rolled back here, and says so to the server.
    env.gb.force(DEV);
    let before = env.fix.disk_bytes();
    let out = env.fix.run(&["update", "--booted", "A"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("was rolled back on this device"),
        "{}",
        stderr(&out)
    );
    assert!(
        env.fix.disk_bytes() == before,
        "a failed version was written again"
    );
    assert!(
        env.log().contains("not installing it again"),
        "{}",
        env.log()
    );
}

#[test]
fn artifact_not_matching_the_servers_sha1_is_refused_before_activation() {
    let env = Env::new();
    env.register();
    let pubkey = env.fix.keyring.join("dev.pub");
    let (_, swu) = env.release("1.1.0", &env.fix.key, &pubkey);
    let id = env.gb.upload(&swu);
    env.gb.assign(DEV, id);
    // Change one byte of the stored artifact's sw-description, which the
    // device skips unread: only the server's sha1 can notice.
    let stored = env.gb.stored_artifacts();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let mut bytes = std::fs::read(&stored[0]).unwrap();
    assert_eq!(&bytes[128..136], b"software");
    bytes[128] = b'S';
    std::fs::write(&stored[0], bytes).unwrap();
    let a_before = env.fix.read_partition("A", "ROOT");
    let out = env.fix.run(&["update", "--booted", "A"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("sha1"), "{}", stderr(&out));
    // Written but never recorded nor activated: B invalid, A as it was.
    assert_eq!(env.fix.flags("B"), (0, 0, false));
    assert_eq!(env.fix.flags("A"), (2, 0, true));
    assert!(env.fix.read_partition("A", "ROOT") == a_before);
    let d = env.device();
    assert_eq!(d["last_state"], "Error", "{d}");
    let log = env.log();
    assert!(
        log.contains("install refused") && log.contains("sha1"),
        "{log}"
    );
}

#[test]
fn strict_device_tokens_wrong_token_refused_right_token_installs() {
    let env = Env::build(
        "",
        &[
            ("GOOSEBIT_DEVICE_AUTH__ENABLE", "true"),
            ("GOOSEBIT_DEVICE_AUTH__MODE", "strict"),
        ],
        "target_token_file = \"{dir}/token\"",
    );
    let token = env.fix.path("token");
    env.gb.put_device(DEV, "right-token-7c1e");
    let run = |args: &[&str]| env.fix.run(args);
    // No token file yet: one line naming it, nothing sent.
    let out = run(&["update", "--booted", "A"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("target token file"),
        "{}",
        stderr(&out)
    );
    // A wrong token: the server refuses it (401), one line, disk unchanged.
    std::fs::write(&token, "wrong-token\n").unwrap();
    let before = env.fix.disk_bytes();
    let out = run(&["update", "--booted", "A"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("HTTP 401") && err.contains("ddi.target_token_file"),
        "{err}"
    );
    assert!(env.fix.disk_bytes() == before);
    assert_eq!(env.device()["last_state"], "Unknown");
    // The right token: registration, then an install whose download (on
    // the server's own origin) carries the token too.
    std::fs::write(&token, "right-token-7c1e\n").unwrap();
    let out = ok(run(&["update", "--booted", "A"]));
    assert!(stdout(&out).contains("sent configData"), "{}", stdout(&out));
    assert_eq!(env.device()["last_state"], "Registered");
    let pubkey = env.fix.keyring.join("dev.pub");
    let (root, swu) = env.release("1.1.0", &env.fix.key, &pubkey);
    let id = env.gb.upload(&swu);
    env.gb.assign(DEV, id);
    let out = ok(run(&["update", "--booted", "A"]));
    assert!(
        stdout(&out).contains("installed 1.1.0 into slot B"),
        "{}",
        stdout(&out)
    );
    env.fix.assert_partition_holds("B", "ROOT", &root);
}

#[test]
fn download_dropped_mid_body_is_resumed_and_installed() {
    // The artifact lives on another web server (goosebit links devices to
    // it directly); that server drops the device's first ranged answer
    // after 30,000 bytes. The device resumes with Range and installs.
    let env = Env::new();
    env.register();
    let pubkey = env.fix.keyring.join("dev.pub");
    let (root, swu) = env.release("1.1.0", &env.fix.key, &pubkey);
    let web = slotctl_tests::http::TestServer::start(
        &swu,
        slotctl_tests::http::Mode::DropRangeOnce(30_000),
    );
    let url = web.url("gw-1.1.0.swu");
    let id = env.gb.upload_url(&url);
    env.gb.assign(DEV, id);
    let out = ok(env.fix.run(&["update", "--booted", "A"]));
    assert!(
        stdout(&out).contains("installed 1.1.0 into slot B"),
        "{}",
        stdout(&out)
    );
    env.fix.assert_partition_holds("B", "ROOT", &root);
    let reqs = web.requests();
    assert!(
        reqs.iter().any(|r| r
            .range
            .as_deref()
            .is_some_and(|g| g.starts_with("bytes=30000-"))),
        "no resume from byte 30000: {reqs:?}"
    );
    assert!(env.log().contains("Downloaded 100%"), "{}", env.log());
}
