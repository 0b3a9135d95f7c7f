//! Issue 11 item 8: every duration, size and count of the config has a
//! documented range. A value outside it (here 9223372036854775807, the
//! largest TOML integer) is refused when the config is loaded: exit 1, one
//! line `slotctl: error: config PATH: ... KEY = VALUE: ...` naming the key,
//! never a panic (exit 101), never a hang, and the disk as it was. Each key
//! is set alone and given to a command that uses it.

use std::ffi::OsStr;
use std::time::Duration;

use slotctl_tests::feedenv::feed_cmd;
use slotctl_tests::feedsrv::{FeedServer, Mode};
use slotctl_tests::installfix::{ok, stderr, Fix, COMPATIBLE};
use slotctl_tests::limited::run_slotctl_limited;

const HUGE: &str = "9223372036854775807";
/// Generous: a refusal is immediate; today's agent sleeps a minute on
/// some of these (and is killed: the test fails).
const LIMIT: Duration = Duration::from_secs(30);
const CLOSED: &str = "http://127.0.0.1:9/feed.json";

/// Where a key goes in the config file.
#[derive(Clone, Copy)]
enum At {
    /// Replace the fixture's line `KEY = ...`.
    Replace,
    /// Top level: before the first table.
    Top,
    /// Appended to the `[agent]` table (the file's last).
    Agent,
    /// A health check with this `timeout_secs`.
    Check,
}

struct Case {
    key: &'static str,
    at: At,
    /// The command that uses the key.
    cmd: &'static [&'static str],
    /// Point the agent at a closed port (so its cycle fails and it backs off).
    closed_feed: bool,
}

const AGENT: &[&str] = &["agent", "--booted", "A"];
const INSTALL_URL: &[&str] = &["install", "--booted", "A", "http://127.0.0.1:9/gw.img"];
const INSTALL: &[&str] = &["install", "--booted", "A"];
const BOOT_CHECK: &[&str] = &["boot-check", "--booted", "B"];

fn cases() -> Vec<Case> {
    let c = |key, at, cmd, closed_feed| Case {
        key,
        at,
        cmd,
        closed_feed,
    };
    vec![
        // The three the review found (today: exit 101, or a hang).
        c("interval_secs", At::Agent, AGENT, false),
        c("backoff_initial_secs", At::Agent, AGENT, true),
        c("backoff_max_secs", At::Agent, AGENT, true),
        // Every other number.
        c("jitter_secs", At::Agent, AGENT, false),
        c("max_feed_bytes", At::Agent, AGENT, false),
        c("feed_signature_threshold", At::Agent, AGENT, false),
        c("connect_timeout_secs", At::Replace, INSTALL_URL, false),
        c("stall_timeout_secs", At::Replace, INSTALL_URL, false),
        c("retries", At::Replace, INSTALL_URL, false),
        c("backoff_initial_ms", At::Replace, INSTALL_URL, false),
        c("backoff_max_ms", At::Replace, INSTALL_URL, false),
        c("tries", At::Replace, INSTALL, false),
        c("signature_threshold", At::Top, INSTALL, false),
        c("timeout_secs", At::Check, BOOT_CHECK, false),
    ]
}

fn set(base: &str, case: &Case) -> String {
    let line = format!("{} = {HUGE}", case.key);
    let mut text = match case.at {
        At::Replace => {
            let prefix = format!("{} = ", case.key);
            let mut found = false;
            let t: Vec<String> = base
                .lines()
                .map(|l| {
                    if !found && l.starts_with(&prefix) {
                        found = true;
                        line.clone()
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            assert!(found, "no {} in the fixture's config", case.key);
            t.join("\n") + "\n"
        }
        At::Top => format!("{line}\n{base}"),
        At::Agent => format!("{base}\n{line}\n"),
        At::Check => {
            format!("{base}\n[[boot_check.checks]]\nname = \"ok\"\ncommand = [\"true\"]\n{line}\n")
        }
    };
    if case.closed_feed {
        let open = base
            .lines()
            .find(|l| l.starts_with("feed_url = "))
            .expect("feed_url");
        text = text.replace(open, &format!("feed_url = \"{CLOSED}\""));
    }
    text
}

#[test]
fn huge_config_values_are_refused_in_one_line_naming_the_key() {
    // Slot A good, 2.0.0 on trial in B, a signed empty feed on 127.0.0.1.
    let fix = Fix::updated("");
    let www = fix.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let srv = FeedServer::start(&www, Mode::Normal);
    let feed = www.join("feed.json");
    ok(feed_cmd(&["init", "--compatible", COMPATIBLE], &feed));
    ok(feed_cmd(
        &["sign", "--key", fix.key.to_str().unwrap()],
        &feed,
    ));
    let mut base = std::fs::read_to_string(&fix.config).unwrap();
    base.push_str(&format!(
        "\n[agent]\nfeed_url = \"{}\"\nreboot = false\n",
        srv.url("feed.json")
    ));
    std::fs::write(&fix.config, &base).unwrap();
    let (v3, _) = fix.image("v3.img", "3.0.0", 1, 50_000, 3);
    // The base config works: the agent's one cycle passes.
    let mut once: Vec<&str> = AGENT.to_vec();
    once.push("--once");
    ok(fix.run(&once));

    let before = fix.disk_bytes();
    let mut failures = Vec::new();
    for case in cases() {
        std::fs::write(&fix.config, set(&base, &case)).unwrap();
        let mut args: Vec<&OsStr> = case.cmd.iter().map(OsStr::new).collect();
        if case.cmd == INSTALL {
            args.push(v3.as_os_str());
        }
        let run = run_slotctl_limited(&fix.args(&args), LIMIT);
        let err = stderr(&run.output);
        let lines: Vec<&str> = err.lines().collect();
        let want = format!("{} = {HUGE}", case.key);
        let prefix = format!("slotctl: error: config {}: ", fix.config.display());
        let good = !run.killed
            && run.output.status.code() == Some(1)
            && lines.len() == 1
            && lines[0].starts_with(&prefix)
            && lines[0].contains(&want);
        if !good {
            failures.push(format!(
                "{}: killed={} exit={:?} stderr={err:?}",
                case.key,
                run.killed,
                run.output.status.code()
            ));
        }
        if fix.disk_bytes() != before {
            failures.push(format!("{}: the disk changed", case.key));
        }
    }
    // The review's own config: the three agent keys huge at once (today
    // they pass validation together and the agent panics, exit 101).
    std::fs::write(
        &fix.config,
        format!(
            "{base}interval_secs = {HUGE}\nbackoff_initial_secs = {HUGE}\nbackoff_max_secs = {HUGE}\n"
        ),
    )
    .unwrap();
    let run = run_slotctl_limited(&fix.args(AGENT), LIMIT);
    let err = stderr(&run.output);
    if run.killed || run.output.status.code() != Some(1) || err.lines().count() != 1 {
        failures.push(format!(
            "all three: killed={} exit={:?} stderr={err:?}",
            run.killed,
            run.output.status.code()
        ));
    } else if !err.contains(&format!(
        "agent.interval_secs = {HUGE}: must be 1 to 2592000"
    )) {
        failures.push(format!("all three: {err:?}"));
    }
    if fix.disk_bytes() != before {
        failures.push("all three: the disk changed".into());
    }
    std::fs::write(&fix.config, &base).unwrap();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_value_at_its_bound_is_accepted_and_one_past_is_refused() {
    let fix = Fix::new();
    let base = std::fs::read_to_string(&fix.config).unwrap();
    for (extra, ok_expected, key) in [
        ("[agent]\ninterval_secs = 2592000\n", true, "interval_secs"),
        ("[agent]\ninterval_secs = 2592001\n", false, "interval_secs"),
        ("[agent]\njitter_secs = 0\n", true, "jitter_secs"),
        (
            "[agent]\nbackoff_initial_secs = 100\nbackoff_max_secs = 99\n",
            false,
            "backoff_max_secs",
        ),
        (
            "[[boot_check.checks]]\nname = \"n\"\ncommand = [\"true\"]\ntimeout_secs = 86401\n",
            false,
            "timeout_secs",
        ),
    ] {
        std::fs::write(&fix.config, format!("{base}\n{extra}")).unwrap();
        let out = fix.run(&["status"]);
        if ok_expected {
            assert!(out.status.success(), "{extra}: {}", stderr(&out));
        } else {
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{extra}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(key) && err.contains("must"), "{err}");
        }
    }
}
