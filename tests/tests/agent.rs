//! The device side of OTA updates against a real HTTP server on 127.0.0.1
//! serving a feed directory: `check`, `update`, `agent`. (The image pinned
//! to the feed, one download per update: feed_pin.rs.)

use std::time::Duration;

use serde_json::Value;
use slotctl_tests::feedenv::{assert_refused, feed_cmd, Env};
use slotctl_tests::feedsrv::Mode;
use slotctl_tests::installfix::{ok, stderr, Fix, COMPATIBLE};
use slotctl_tests::run_slotctl;

#[test]
fn update_found_and_installed() {
    let env = Env::new("");
    let root = env.add("1.1.0", 1, &[]);
    env.sign();
    let c = env.check();
    assert_eq!(c["update_available"], true, "{c}");
    assert_eq!(c["release"]["version"], "1.1.0");
    assert_eq!(c["running_version"], "1.0.0");
    assert_eq!(
        c["release"]["url"],
        env.srv.url("images/gw-1.1.0.img").as_str()
    );
    let out = ok(env.run(&["update"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("updating from 1.0.0 to 1.1.0"), "{text}");
    env.fix.assert_partition_holds("B", "ROOT", &root);
    assert_eq!(env.fix.flags("B"), (2, 3, false));
    assert_eq!(env.fix.flags("A"), (1, 0, true));
    assert_eq!(env.state()["pending"]["version"], "1.1.0");
    assert!(!env.fix.rebooted.exists());
    // Checking again: installed, waiting for the reboot; nothing written.
    let c = env.check();
    assert_eq!(c["update_available"], false);
    assert!(
        c["reason"]
            .as_str()
            .unwrap()
            .contains("waiting for a reboot"),
        "{c}"
    );
    let before = env.fix.disk_bytes();
    ok(env.run(&["update"]));
    assert!(env.fix.disk_bytes() == before);
}

#[test]
fn nothing_to_do() {
    let env = Env::new("");
    env.sign();
    let c = env.check();
    assert_eq!(c["update_available"], false);
    assert_eq!(c["reason"], "the feed lists no release");
    let base = env.fix.path("base.img");
    std::fs::copy(&base, env.www.join("images/base.img")).unwrap();
    ok(feed_cmd(
        &["add", base.to_str().unwrap(), "--url", "images/base.img"],
        &env.feed(),
    ));
    env.sign();
    let c = env.check();
    assert_eq!(c["update_available"], false);
    assert!(c["reason"].as_str().unwrap().contains("not newer"), "{c}");
    let before = env.fix.disk_bytes();
    let out = ok(env.run(&["update"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no update"));
    assert!(env.fix.disk_bytes() == before);
}

#[test]
fn expired_feed_is_refused() {
    let env = Env::new("");
    env.add("1.1.0", 1, &[]);
    ok(feed_cmd(
        &[
            "sign",
            "--key",
            env.fix.key.to_str().unwrap(),
            "--expires-in",
            "1s",
        ],
        &env.feed(),
    ));
    std::thread::sleep(Duration::from_millis(2100));
    assert_refused(&env, &["update"], "expired");
}

#[test]
fn replayed_feed_is_refused() {
    let env = Env::new("");
    env.add("1.1.0", 1, &[]);
    env.sign();
    let old = std::fs::read(env.feed()).unwrap();
    ok(feed_cmd(&["pull", "1.1.0"], &env.feed()));
    env.sign();
    let c = env.check();
    assert_eq!(c["feed"]["serial"], 2);
    assert_eq!(c["update_available"], false);
    // An attacker serves the older feed that still offers 1.1.0.
    std::fs::write(env.feed(), old).unwrap();
    assert_refused(&env, &["update"], "lower than 2 seen before");
}

#[test]
fn unsigned_and_wrongly_signed_feeds_are_refused() {
    let env = Env::new("");
    env.add("1.1.0", 1, &[]);
    assert_refused(&env, &["update"], "feed is not signed");
    // Signed by a key the device does not trust.
    ok(run_slotctl([
        "keygen",
        "--out",
        env.fix.path("other").to_str().unwrap(),
    ]));
    ok(feed_cmd(
        &["sign", "--key", env.fix.path("other.key").to_str().unwrap()],
        &env.feed(),
    ));
    assert_refused(&env, &["update"], "0 trusted signature(s), 1 required");
    // Signed by the right key, then altered.
    ok(feed_cmd(
        &["sign", "--renew", "--key", env.fix.key.to_str().unwrap()],
        &env.feed(),
    ));
    let text = std::fs::read_to_string(env.feed()).unwrap();
    let tampered = text.replace("\\\"rollback_index\\\":1", "\\\"rollback_index\\\":9");
    assert_ne!(text, tampered);
    std::fs::write(env.feed(), tampered).unwrap();
    assert_refused(&env, &["update"], "is invalid (the feed was altered");
}

#[test]
fn oversized_feed_is_refused() {
    let env = Env::new("");
    env.sign();
    // 64 KiB + 1 of JSON whitespace after a valid feed.
    let mut bytes = std::fs::read(env.feed()).unwrap();
    bytes.resize(65_537, b' ');
    std::fs::write(env.feed(), bytes).unwrap();
    assert_refused(&env, &["check"], "larger than the 65536-byte bound");
}

#[test]
fn rolled_back_version_is_not_retried_but_a_newer_one_is() {
    let env = Env::new("");
    env.add("1.1.0", 1, &[]);
    env.sign();
    ok(env.run(&["update"]));
    // The device reboots into B, whose boot check fails: B is marked bad and
    // the device is back on A.
    ok(env.fix.run(&["boot-select"]));
    ok(env.fix.run(&["mark-bad", "--booted", "B"]));
    assert_eq!(env.fix.flags("B").0, 0);
    let c = env.check();
    assert_eq!(c["update_available"], false, "{c}");
    assert!(
        c["notes"][0].as_str().unwrap().contains("was rolled back"),
        "{c}"
    );
    assert_eq!(c["releases"][0]["reason"], "failed-here");
    assert_eq!(c["failed_versions"][0]["version"], "1.1.0");
    let before = env.fix.disk_bytes();
    ok(env.run(&["update"]));
    assert!(env.fix.disk_bytes() == before, "1.1.0 was retried");
    let st = env.state();
    assert_eq!(st["failed"][0]["version"], "1.1.0");
    assert!(st["pending"].is_null());
    // `status` shows it as failed, with when.
    let status = env.fix.status(Some("A"));
    let failed = &status["failed_versions"][0];
    assert_eq!(failed["version"], "1.1.0", "{status}");
    assert!(failed["at"].as_str().unwrap().ends_with('Z'), "{status}");
    let human = String::from_utf8(ok(env.fix.run(&["status", "--booted", "A"])).stdout).unwrap();
    assert!(human.contains("failed:    1.1.0 at "), "{human}");
    // A newer release is taken.
    let root = env.add("1.2.0", 2, &[]);
    env.sign();
    ok(env.run(&["update"]));
    env.fix.assert_partition_holds("B", "ROOT", &root);
}

#[test]
fn waves_honoured_on_both_sides_of_the_boundary() {
    // 10% of the fleet now (seeds 0..204), everyone else in a day.
    for (seed, takes) in [(203u32, true), (204, false)] {
        let env = Env::new("");
        env.set_seed(seed);
        env.add("1.1.0", 1, &["0:10", "1d:100"]);
        env.sign();
        let c = env.check();
        assert_eq!(c["seed"], seed);
        assert_eq!(c["update_available"], takes, "seed {seed}: {c}");
        if !takes {
            assert_eq!(c["releases"][0]["reason"], "wave-not-open");
            assert_eq!(c["releases"][0]["percent"], 100);
        }
    }
}

#[test]
fn pulled_release_stops_being_offered() {
    let env = Env::new("");
    env.add("1.1.0", 1, &[]);
    env.sign();
    assert_eq!(env.check()["update_available"], true);
    ok(feed_cmd(&["pull", "1.1.0"], &env.feed()));
    env.sign();
    let c = env.check();
    assert_eq!(c["update_available"], false);
    assert_eq!(c["releases"][0]["reason"], "pulled");
}

#[test]
fn server_down_slow_or_failing_is_retried_and_slots_untouched() {
    let env = Env::new("");
    env.add("1.1.0", 1, &[]);
    env.sign();
    env.srv.set_mode(Mode::Status(500));
    let before = env.fix.disk_bytes();
    let out = env.run(&["update"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("after 3 retries") && err.contains("HTTP 500"),
        "{err}"
    );
    assert_eq!(err.matches("retrying").count(), 3, "{err}");
    assert_eq!(env.srv.requests().len(), 4);
    env.srv.set_mode(Mode::Delay(Duration::from_secs(3)));
    let out = env.run(&["update"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("after 3 retries"), "{}", stderr(&out));
    assert!(env.fix.disk_bytes() == before);
    // Down: nothing listens on the port any more.
    drop(env.srv);
    let out = env.fix.run(&["update", "--booted", "A"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot fetch the feed"),
        "{}",
        stderr(&out)
    );
    assert!(env.fix.disk_bytes() == before);
}

#[test]
fn agent_once_installs_and_reboots() {
    let env = Env::new("reboot = true");
    let root = env.add("1.1.0", 1, &[]);
    env.sign();
    let out = ok(env.run(&["agent", "--once"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rebooting into the new slot"), "{text}");
    env.fix.assert_partition_holds("B", "ROOT", &root);
    assert!(env.fix.rebooted.exists());
}

#[test]
fn agent_reboot_waits_for_its_window() {
    // A one-minute window 12 hours away from now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = (now + 12 * 3600) % 86_400;
    let (h, m) = (t / 3600, t / 60 % 60);
    let (h2, m2) = ((t + 60) / 3600 % 24, (t + 60) / 60 % 60);
    let env = Env::new(&format!(
        "reboot_window = \"{h:02}:{m:02}-{h2:02}:{m2:02}\""
    ));
    env.add("1.1.0", 1, &[]);
    env.sign();
    let out = ok(env.run(&["agent", "--once"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("deferred to the reboot window"), "{text}");
    assert!(!env.fix.rebooted.exists());
}

#[test]
fn agent_loop_stops_on_sigterm() {
    let env = Env::new("interval_secs = 3600\njitter_secs = 5");
    env.sign();
    let child = slotctl_tests::slotctl()
        .args(["agent", "--booted", "A", "--disk"])
        .arg(&env.fix.disk)
        .arg("--config")
        .arg(&env.fix.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for its first check to be served, then stop it.
    let t0 = std::time::Instant::now();
    while env.srv.requests().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "agent never checked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    nix_kill(child.id());
    let t1 = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t1.elapsed() < Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("slotctl agent: stopped"), "{text}");
    assert!(env.state()["last_serial"] == 1);
}

/// SIGTERM to the child we started, by its pid.
fn nix_kill(pid: u32) {
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn feed_keyring_of_its_own() {
    // The feed is trusted with its own key, not the image keyring.
    let keys = tempfile::tempdir().unwrap();
    let base = keys.path().join("feed");
    ok(run_slotctl(["keygen", "--out", base.to_str().unwrap()]));
    let env = Env::new(&format!(
        "feed_keyring = \"{}\"",
        base.with_extension("pub").display()
    ));
    env.add("1.1.0", 1, &[]);
    // Signed with the image key only: not trusted for the feed.
    env.sign();
    assert_refused(&env, &["check"], "0 trusted signature(s), 1 required");
    let key = base.with_extension("key");
    ok(feed_cmd(
        &["sign", "--renew", "--key", key.to_str().unwrap()],
        &env.feed(),
    ));
    assert_eq!(env.check()["update_available"], true);
}

#[test]
fn agent_without_feed_url_fails_at_once() {
    let fix = Fix::new();
    let out = fix.run(&["agent", "--booted", "A"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("set agent.feed_url"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sigterm_during_a_slow_check_leaves_nothing_half_written() {
    let env = Env::new("interval_secs = 3600");
    env.add("1.1.0", 1, &[]);
    env.sign();
    // Below the fixture's 1 s stall timeout, so the fetch succeeds.
    env.srv.set_mode(Mode::Delay(Duration::from_millis(800)));
    let before = env.fix.disk_bytes();
    let child = slotctl_tests::slotctl()
        .args(["agent", "--booted", "A", "--disk"])
        .arg(&env.fix.disk)
        .arg("--config")
        .arg(&env.fix.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stop it while the server holds back the feed.
    std::thread::sleep(Duration::from_millis(300));
    nix_kill(child.id());
    let out = child.wait_with_output().unwrap();
    // Only the feed was fetched: no image download was started.
    assert_eq!(env.srv.requests().len(), 1, "{:?}", env.srv.requests());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("not starting the update to 1.1.0"),
        "{text}\n{}",
        stderr(&out)
    );
    assert!(text.contains("slotctl agent: stopped"), "{text}");
    assert!(env.fix.disk_bytes() == before, "the disk changed");
    // The state was written whole (the feed's serial), no temp file left.
    assert_eq!(env.state()["last_serial"], 1);
    let mut names: Vec<_> = std::fs::read_dir(env.fix.path("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["agent.json", "last-check.json"]);
    // The cycle recorded its check: an update found, not started.
    let last: Value =
        serde_json::from_slice(&std::fs::read(env.fix.path("state/last-check.json")).unwrap())
            .unwrap();
    assert_eq!(last["outcome"], "update-available", "{last}");
    assert_eq!(last["version"], "1.1.0", "{last}");
    assert!(!env.fix.rebooted.exists());
}

#[test]
fn committed_update_clears_pending_and_is_the_new_baseline() {
    let env = Env::new("");
    env.add("1.1.0", 1, &[]);
    env.sign();
    ok(env.run(&["update"]));
    // Boot B: on trial until boot-check marks it good.
    ok(env.fix.run(&["boot-select"]));
    let out = ok(env.fix.run(&["check", "--json", "--booted", "B"]));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(c["notes"][0].as_str().unwrap().contains("on trial"), "{c}");
    assert_eq!(env.state()["pending"]["version"], "1.1.0");
    ok(env.fix.run(&["mark-good", "--booted", "B"]));
    let out = ok(env.fix.run(&["check", "--json", "--booted", "B"]));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(c["notes"][0].as_str().unwrap().contains("committed"), "{c}");
    assert_eq!(c["running_version"], "1.1.0");
    assert_eq!(c["update_available"], false);
    assert!(env.state()["pending"].is_null());
    assert!(env.state()["failed"].as_array().unwrap().is_empty());
}

#[test]
fn feed_for_another_board_or_reusing_a_serial_is_refused() {
    let env = Env::new("");
    env.sign();
    assert_eq!(env.check()["feed"]["serial"], 1);
    // A second feed started from scratch reaches serial 1 with other content.
    let other = env.fix.path("other-feed.json");
    ok(feed_cmd(&["init", "--compatible", COMPATIBLE], &other));
    let base = env.fix.path("base.img");
    std::fs::copy(&base, env.www.join("images/base.img")).unwrap();
    ok(feed_cmd(
        &["add", base.to_str().unwrap(), "--url", "images/base.img"],
        &other,
    ));
    ok(feed_cmd(
        &["sign", "--key", env.fix.key.to_str().unwrap()],
        &other,
    ));
    std::fs::copy(&other, env.feed()).unwrap();
    assert_refused(
        &env,
        &["check"],
        "serial 1 was seen before with different content",
    );
    // A feed for another compatible, with a higher serial.
    ok(feed_cmd(
        &["init", "--force", "--compatible", "another-board"],
        &env.feed(),
    ));
    ok(feed_cmd(
        &["sign", "--key", env.fix.key.to_str().unwrap()],
        &env.feed(),
    ));
    assert_refused(&env, &["check"], "feed is for compatible \"another-board\"");
}
