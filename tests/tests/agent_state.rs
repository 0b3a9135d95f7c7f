//! `slotctl agent-state` (issue 16): the pending update, the versions that
//! failed here, and the last feed check (`state/last-check.json`, written
//! by `check`, `update` and each agent cycle), as text and as JSON.

use serde_json::Value;
use slotctl_tests::feedenv::Env;
use slotctl_tests::installfix::ok;

fn agent_state(env: &Env) -> Value {
    let out = ok(env.run(&["agent-state", "--json"]));
    serde_json::from_slice(&out.stdout).expect("agent-state --json is JSON")
}

fn text(env: &Env) -> String {
    String::from_utf8(ok(env.run(&["agent-state"])).stdout).unwrap()
}

#[test]
fn agent_state_follows_check_update_and_rollback() {
    let env = Env::new("");
    // Nothing yet.
    let s = agent_state(&env);
    assert!(s["pending"].is_null() && s["last_check"].is_null(), "{s}");
    assert_eq!(s["failed_versions"], serde_json::json!([]), "{s}");
    let t = text(&env);
    assert!(
        t.contains("pending: none") && t.contains("last check: never"),
        "{t}"
    );

    // check: up to date, then an update available.
    env.sign();
    env.check();
    let s = agent_state(&env);
    assert_eq!(s["last_check"]["outcome"], "up-to-date", "{s}");
    assert_eq!(
        s["last_check"]["message"], "the feed lists no release",
        "{s}"
    );
    assert!(
        s["last_check"]["at"].as_str().unwrap().ends_with('Z'),
        "{s}"
    );
    env.add("1.1.0", 1, &[]);
    env.sign();
    env.check();
    let s = agent_state(&env);
    assert_eq!(s["last_check"]["outcome"], "update-available", "{s}");
    assert_eq!(s["last_check"]["version"], "1.1.0", "{s}");
    // The state file's schema is untouched: agent.json has no new field.
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(env.fix.path("state/last-check.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk, s["last_check"]);

    // update installs: pending, outcome installed.
    ok(env.run(&["update"]));
    let s = agent_state(&env);
    assert_eq!(s["last_check"]["outcome"], "installed", "{s}");
    assert_eq!(s["last_check"]["version"], "1.1.0", "{s}");
    assert_eq!(s["pending"]["version"], "1.1.0", "{s}");
    assert_eq!(s["pending"]["slot"], "B", "{s}");
    assert!(env.state().get("last_check").is_none());
    let t = text(&env);
    assert!(t.contains("pending: 1.1.0 in slot B"), "{t}");
    assert!(t.contains("installed 1.1.0"), "{t}");

    // Rolled back: failed, no longer pending.
    ok(env.fix.run(&["boot-select"]));
    ok(env.fix.run(&["mark-bad", "--booted", "B"]));
    env.check();
    let s = agent_state(&env);
    assert!(s["pending"].is_null(), "{s}");
    assert_eq!(s["failed_versions"][0]["version"], "1.1.0", "{s}");
    assert!(text(&env).contains("  1.1.0 (at "), "{}", text(&env));

    // A failing check is recorded as an error with its message.
    std::fs::write(env.feed(), b"not a feed").unwrap();
    assert!(!env.run(&["check"]).status.success());
    let s = agent_state(&env);
    assert_eq!(s["last_check"]["outcome"], "error", "{s}");
    assert!(
        !s["last_check"]["message"].as_str().unwrap().is_empty(),
        "{s}"
    );
}

#[test]
fn a_last_check_file_that_is_not_a_regular_file_is_refused_in_one_line() {
    let env = Env::new("");
    let dir = env.fix.path("state");
    std::fs::create_dir_all(&dir).unwrap();
    let lc = dir.join("last-check.json");
    std::os::unix::fs::symlink("/dev/zero", &lc).unwrap();
    let out = env.run(&["agent-state", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = slotctl_tests::installfix::stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("last-check.json") && err.contains("symbolic link"),
        "{err}"
    );
    // A corrupt one: named, with what to do.
    std::fs::remove_file(&lc).unwrap();
    std::fs::write(&lc, b"{\"at\": 5}").unwrap();
    let out = env.run(&["agent-state"]);
    let err = slotctl_tests::installfix::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is corrupt") && err.contains("move it away"),
        "{err}"
    );
}
