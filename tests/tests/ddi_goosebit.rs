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
        let fix = Fix::new();
        fix.provision_a("1.0.0", 1);
        let gb = Goosebit::start();
        let mut cfg = std::fs::read_to_string(&fix.config).unwrap();
        cfg.push_str(&format!(
            "\n[ddi]\nserver_url = \"{}\"\ncontroller_id = \"{DEV}\"\n",
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
