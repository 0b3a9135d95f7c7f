//! The DDI backend against recorded hawkBit answers (tests/fixtures/hawkbit/,
//! its README cites the hawkBit documentation they come from), played by
//! the project's DDI fixture server (tests/src/ddisrv.rs): what goosebit
//! cannot show. cancelAction before and after activation, a soft
//! (`attempt`) deployment outside and then inside its maintenance window,
//! two chunks, and a sha256 that does not match. Each test asserts the
//! exact feedback the device sent (all but its `time`, whose format is
//! checked). The device is a disk image file whose slot A holds 1.0.0; a
//! reboot is simulated as in the agent tests (`boot-select`, then
//! `--booted B`).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use slotctl_tests::ddisrv::{DdiServer, CONTROLLER};
use slotctl_tests::installfix::{ok, stderr, Fix};

const ACTION: &str = "7";

struct Env {
    fix: Fix,
    srv: DdiServer,
    vars: Vec<(&'static str, Value)>,
    root: std::path::PathBuf,
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `sha1sum`, `sha256sum`, `md5sum` (coreutils) of a file.
fn digest(tool: &str, file: &Path) -> String {
    let out = Command::new(tool).arg(file).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The feedback body less its `time`, which must be hawkBit's
/// `YYYYMMDDThhmmss`.
fn untimed(mut v: Value) -> Value {
    let t = v["time"].as_str().unwrap_or_else(|| panic!("no time: {v}"));
    assert!(
        t.len() == 15
            && t.as_bytes()[8] == b'T'
            && t.bytes()
                .enumerate()
                .all(|(i, b)| i == 8 || b.is_ascii_digit()),
        "{t}"
    );
    v.as_object_mut().unwrap().remove("time");
    v
}

fn closed(finished: &str, details: &str) -> Value {
    json!({"status": {"execution": "closed", "result": {"finished": finished}, "details": [details]}})
}

fn proceeding(cnt: u64, details: &str) -> Value {
    json!({"status": {"execution": "proceeding",
        "result": {"finished": "none", "progress": {"cnt": cnt, "of": 100}},
        "details": [details]}})
}

impl Env {
    fn new() -> Env {
        let fix = Fix::new();
        fix.provision_a("1.0.0", 1);
        let srv = DdiServer::start();
        let mut cfg = std::fs::read_to_string(&fix.config).unwrap();
        cfg.push_str(&format!(
            "\n[ddi]\nserver_url = \"{}\"\ncontroller_id = \"{CONTROLLER}\"\n",
            srv.url()
        ));
        std::fs::write(&fix.config, cfg).unwrap();
        // The release: a signed slotctl image, uploaded as is (hawkBit
        // takes any file), served where hawkBit's links point.
        let (img, root) = fix.image("gw-1.1.0.img", "1.1.0", 1, 300_000, 7);
        let artifact_path = format!(
            "{}/softwaremodules/3/artifacts/gw-1.1.0.img",
            srv.base_path()
        );
        srv.set_file(&artifact_path, std::fs::read(&img).unwrap());
        let vars = vec![
            ("action", json!(ACTION)),
            ("filename", json!("gw-1.1.0.img")),
            ("version", json!("1.1.0")),
            ("size", json!(std::fs::metadata(&img).unwrap().len())),
            ("sha1", json!(digest("sha1sum", &img))),
            ("md5", json!(digest("md5sum", &img))),
            ("sha256", json!(digest("sha256sum", &img))),
            ("artifact_path", json!(artifact_path)),
        ];
        Env {
            fix,
            srv,
            vars,
            root,
        }
    }

    fn size(&self) -> u64 {
        self.vars
            .iter()
            .find(|(k, _)| *k == "size")
            .unwrap()
            .1
            .as_u64()
            .unwrap()
    }

    fn vars_str(&self, name: &str) -> String {
        let v = &self.vars.iter().find(|(k, _)| *k == name).unwrap().1;
        v.as_str().unwrap().to_string()
    }

    fn path(&self, rest: &str) -> String {
        format!("{}{rest}", self.srv.base_path())
    }

    fn deployment_path(&self) -> String {
        self.path(&format!("/deploymentBase/{ACTION}"))
    }

    fn feedback_path(&self) -> String {
        self.path(&format!("/deploymentBase/{ACTION}/feedback"))
    }

    fn cancel_feedback_path(&self) -> String {
        self.path(&format!("/cancelAction/{ACTION}/feedback"))
    }

    /// The server offers `deployment` (a fixture) as action 7.
    fn offer(&self, deployment: &str) {
        self.srv
            .set_base("controller-base-deployment.json", &self.vars);
        self.srv
            .set_fixture(&self.deployment_path(), deployment, &self.vars);
    }

    /// The operator cancels action 7: hawkBit links cancelAction instead.
    fn cancel(&self) {
        self.srv
            .set_base("controller-base-cancel-action.json", &self.vars);
        self.srv.set_fixture(
            &self.path(&format!("/cancelAction/{ACTION}")),
            "cancel-action.json",
            &self.vars,
        );
    }

    fn update(&self, booted: &str) -> Output {
        self.fix.run(&["update", "--booted", booted])
    }

    /// The POSTs and PUTs since the log was cleared, as (method path).
    fn sent_paths(&self) -> Vec<String> {
        self.srv
            .sent()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path()))
            .collect()
    }

    /// The deployment feedback bodies, untimed.
    fn feedback(&self) -> Vec<Value> {
        self.posted_untimed(&self.feedback_path())
    }

    /// The cancel feedback bodies the device posted, without their time.
    fn cancel_feedback(&self) -> Vec<Value> {
        self.posted_untimed(&self.cancel_feedback_path())
    }

    fn posted_untimed(&self, path: &str) -> Vec<Value> {
        self.srv.posted(path).into_iter().map(untimed).collect()
    }

    /// The feedback of a whole download: `cnt` 0, then each tenth as it
    /// came (the percent reached when a new tenth began, ending at 100);
    /// then `end`.
    fn assert_download_feedback(&self, fb: &[Value], end: &Value) {
        assert!(fb.len() >= 3, "{fb:#?}");
        assert_eq!(
            fb[0],
            proceeding(
                0,
                &format!("downloading gw-1.1.0.img ({} bytes)", self.size())
            )
        );
        let mut last = 0;
        for f in &fb[1..fb.len() - 1] {
            let cnt = f["status"]["result"]["progress"]["cnt"].as_u64().unwrap();
            // At most one per tenth: each one in a new tenth.
            assert!(cnt <= 100 && cnt / 10 > last / 10, "{fb:#?}");
            assert_eq!(*f, proceeding(cnt, &format!("Downloaded {cnt}%")));
            last = cnt;
        }
        assert_eq!(last, 100, "{fb:#?}");
        assert_eq!(fb[fb.len() - 1], *end);
    }

    /// [`Env::assert_download_feedback`] of an install that succeeded.
    fn assert_install_feedback(&self, fb: &[Value]) {
        self.assert_download_feedback(
            fb,
            &proceeding(
                100,
                "installed 1.1.0 into slot B; it boots next, success is reported once boot-check commits it",
            ),
        );
    }
}

#[test]
fn cancel_before_activation_is_confirmed_and_leaves_the_slots_as_they_were() {
    let env = Env::new();
    // A soft deployment outside its maintenance window: not taken yet.
    env.offer("deployment-attempt-maintenance-window-unavailable.json");
    let before = env.fix.disk_bytes();
    let status = env.fix.status(Some("A"));
    let out = ok(env.update("A"));
    assert!(
        stdout(&out).contains("the server says not now"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        env.sent_paths(),
        [format!("PUT {}", env.path("/configData"))]
    );
    assert!(env.fix.disk_bytes() == before, "the disk changed");

    // The operator cancels it.
    env.cancel();
    env.srv.clear_log();
    let out = ok(env.update("A"));
    let text = stdout(&out);
    assert!(
        text.contains("action 7 cancelled before activation"),
        "{text}"
    );
    let r: Vec<String> = env
        .srv
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(
        r,
        [
            format!("GET {}", env.srv.base_path()),
            format!("GET {}", env.path("/cancelAction/7")),
            format!("POST {}", env.cancel_feedback_path()),
        ]
    );
    let fb = env.cancel_feedback();
    assert_eq!(
        fb,
        [closed(
            "success",
            "action 7 cancelled before activation: nothing of it boots on this device (slot A runs, as before)"
        )]
    );
    assert!(env.fix.disk_bytes() == before, "the disk changed");
    assert_eq!(env.fix.status(Some("A")), status);
    assert!(!env.fix.path("state/ddi-action.json").exists());

    // hawkBit has closed it: nothing more is said or written.
    env.srv
        .set_base("controller-base-no-action.json", &env.vars);
    env.srv.clear_log();
    let out = ok(env.update("A"));
    assert!(
        stdout(&out).contains("no deployment offered"),
        "{}",
        stdout(&out)
    );
    assert!(env.srv.sent().is_empty());
    assert!(env.fix.disk_bytes() == before, "the disk changed");
}

#[test]
fn cancel_after_activation_is_rejected_and_the_result_still_reported() {
    let env = Env::new();
    env.offer("deployment-forced.json");
    let out = ok(env.update("A"));
    assert!(
        stdout(&out).contains("installed 1.1.0 into slot B"),
        "{}",
        stdout(&out)
    );
    env.fix.assert_partition_holds("B", "ROOT", &env.root);
    assert_eq!(env.fix.flags("B"), (2, 3, false));
    env.assert_install_feedback(&env.feedback());

    // Cancelled while B boots next: too late.
    env.cancel();
    env.srv.clear_log();
    let out = ok(env.update("A"));
    assert!(
        stdout(&out).contains("action 7 cannot be cancelled"),
        "{}",
        stdout(&out)
    );
    let rejected = |now: &str| {
        json!({"status": {"execution": "rejected", "result": {"finished": "none"},
            "details": [format!("action 7 cannot be cancelled: 1.1.0 is already activated in slot B ({now}); its result will be reported")]}})
    };
    let cancel_fb = |env: &Env| env.cancel_feedback();
    assert_eq!(cancel_fb(&env), [rejected("it boots next")]);
    assert_eq!(
        env.sent_paths(),
        [format!("POST {}", env.cancel_feedback_path())]
    );
    assert!(env.fix.path("state/ddi-action.json").exists());
    assert_eq!(env.fix.flags("B"), (2, 3, false));

    // Rebooted into B, on trial: a cancel is refused again.
    ok(env.fix.run(&["boot-select"]));
    env.srv.clear_log();
    let out = ok(env.update("B"));
    assert!(
        stdout(&out).contains("waiting for boot-check"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        cancel_fb(&env),
        [rejected("it runs, on trial until boot-check")]
    );

    // hawkBit runs the action on; boot-check commits B; the next cycle
    // reports success on the deployment's feedback (hawkBit then has
    // nothing more to offer).
    ok(env.fix.run(&["boot-check", "--booted", "B"]));
    env.srv
        .set_base("controller-base-no-action.json", &env.vars);
    env.srv.clear_log();
    let out = ok(env.update("B"));
    assert!(
        stdout(&out).contains("action 7: reported success"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        env.feedback(),
        [closed("success", "1.1.0 committed in slot B by boot-check")]
    );
    assert_eq!(env.sent_paths(), [format!("POST {}", env.feedback_path())]);
    assert!(!env.fix.path("state/ddi-action.json").exists());
}

#[test]
fn attempt_waits_for_the_maintenance_window_then_installs() {
    let env = Env::new();
    env.offer("deployment-attempt-maintenance-window-unavailable.json");
    let before = env.fix.disk_bytes();
    for _ in 0..2 {
        env.srv.clear_log();
        let out = ok(env.update("A"));
        assert!(
            stdout(&out).contains("action 7: the server says not now"),
            "{}",
            stdout(&out)
        );
        // No feedback (hawkBit expects none while the device waits), no
        // download (it would stream into the slot), nothing written.
        assert_eq!(
            env.sent_paths(),
            [format!("PUT {}", env.path("/configData"))]
        );
        assert!(env
            .srv
            .requests()
            .iter()
            .all(|r| !r.target.contains("artifacts")));
        assert!(env.fix.disk_bytes() == before, "the disk changed");
    }
    // The window opens: `attempt` is taken.
    env.offer("deployment-attempt-maintenance-window-available.json");
    env.srv.clear_log();
    let out = ok(env.update("A"));
    assert!(
        stdout(&out).contains("(download attempt, update attempt)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("installed 1.1.0 into slot B"),
        "{}",
        stdout(&out)
    );
    env.fix.assert_partition_holds("B", "ROOT", &env.root);
    assert_eq!(env.fix.flags("B"), (2, 3, false));
    env.assert_install_feedback(&env.feedback());
}

#[test]
fn two_chunks_are_refused_as_failure_naming_why() {
    let env = Env::new();
    env.offer("deployment-sha256-two-chunks.json");
    let before = env.fix.disk_bytes();
    let out = env.update("A");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let why = "the deployment holds 2 artifacts in 2 chunk(s) (os, bApp); slotctl installs exactly one, a slotctl image (or a .swu wrapping one) holding every partition";
    assert!(stderr(&out).contains(why), "{}", stderr(&out));
    assert_eq!(env.feedback(), [closed("failure", why)]);
    assert!(env
        .srv
        .requests()
        .iter()
        .all(|r| !r.target.contains("artifacts")));
    assert!(env.fix.disk_bytes() == before, "the disk changed");
}

#[test]
fn a_wrong_sha256_is_refused_before_activation() {
    let mut env = Env::new();
    // The server's sha1 is right, its sha256 is not (that of `hello world`).
    let wrong = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    for (k, v) in env.vars.iter_mut() {
        if *k == "sha256" {
            *v = json!(wrong);
        }
    }
    env.offer("deployment-forced.json");
    let a_before = env.fix.status(Some("A"))["slots"]["A"].clone();
    let out = env.update("A");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("sha256"), "{}", stderr(&out));
    // Refused before the slot record and the activation: B invalid, A as
    // it was and still booting next.
    assert_eq!(env.fix.flags("B"), (0, 0, false));
    assert_eq!(env.fix.status(Some("A"))["slots"]["A"], a_before);
    assert!(!env.fix.path("state/ddi-action.json").exists());
    let real = digest("sha256sum", &env.fix.path("gw-1.1.0.img"));
    env.assert_download_feedback(
        &env.feedback(),
        &closed(
            "failure",
            &format!(
                "install refused: installing into slot B (left invalid, not activated): reading image gw-1.1.0.img (a plain slotctl image): the artifact's sha256 is {real}, the server says {wrong}"
            ),
        ),
    );
}

#[test]
fn cancel_after_a_failed_download_is_confirmed_nothing_was_written() {
    let env = Env::new();
    // The artifact is gone from the server: the attempt fails, to be
    // retried at the next cycle.
    env.srv.remove("GET", &env.vars_str("artifact_path"));
    env.offer("deployment-forced.json");
    let before = env.fix.disk_bytes();
    let out = env.update("A");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let fb = env.feedback();
    assert_eq!(fb.len(), 2, "{fb:#?}");
    assert_eq!(
        fb[0],
        proceeding(
            0,
            &format!("downloading gw-1.1.0.img ({} bytes)", env.size())
        )
    );
    let retry = fb[1]["status"]["details"][0].as_str().unwrap().to_string();
    assert!(retry.starts_with("attempt failed, will retry: "), "{retry}");
    assert!(retry.contains("HTTP 404"), "{retry}");
    assert_eq!(
        fb[1],
        json!({"status": {"execution": "proceeding", "result": {"finished": "none"}, "details": [retry]}})
    );
    // Cancelled before the retry: confirmed; nothing of it was written.
    env.cancel();
    env.srv.clear_log();
    ok(env.update("A"));
    let fb = env.cancel_feedback();
    assert_eq!(
        fb,
        [closed(
            "success",
            "action 7 cancelled before activation: nothing of it boots on this device (slot A runs, as before)"
        )]
    );
    assert_eq!(
        env.sent_paths(),
        [format!("POST {}", env.cancel_feedback_path())]
    );
    // The source failed before the pipeline's first write.
    assert!(env.fix.disk_bytes() == before, "the disk changed");
    assert!(!env.fix.path("state/ddi-action.json").exists());
}
