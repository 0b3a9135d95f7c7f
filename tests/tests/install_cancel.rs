//! Cancelling `slotctl install` (issue 16): SIGTERM or SIGINT before the
//! activation ends the install with exit code 6, a last JSON `result` line
//! saying `cancelled`, one error line; the target slot is left unbootable,
//! the booted slot untouched, the lock released (the same install then
//! succeeds). The image comes from the test HTTP server trickling it, so the
//! signal surely lands while the payload is being written.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use slotctl_tests::http::{Mode, TestServer};
use slotctl_tests::installfix::*;

/// The first 1,000,000 bytes at once (past the header: B is invalidated
/// and being written), then one byte per 20 ms: minutes for the rest.
const TRICKLE: Mode = Mode::Trickle {
    after: 1_000_000,
    every_ms: 20,
};

fn cancel_with(signal: &str) {
    let f = Fix::two_good_slots("1.0.0", 1);
    let (update, _) = f.image_with("v2.img", "2.0.0", 1, 3_500_000, 2, "none");
    let srv = TestServer::start(&update, TRICKLE);
    let before = f.status(Some("A"));
    let a_before = (f.read_partition("A", "BOOT"), f.read_partition("A", "ROOT"));
    let mut child = slotctl_tests::slotctl()
        .args(f.args(&["install", "--json", "--booted", "A", &srv.url("v2.img")]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn slotctl");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait for the write phase to be under way.
    let t = Instant::now();
    loop {
        let line = lines.next().expect("install ended before writing").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "progress" && v["phase"] == "write" && v["done"].as_u64() > Some(0) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no write progress");
    }
    let kill = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "stderr: {err}");
    let last: Value = serde_json::from_str(rest.last().expect("a result line")).unwrap();
    assert_eq!(last["event"], "result", "{last}");
    assert_eq!(last["ok"], false, "{last}");
    assert_eq!(last["cancelled"], true, "{last}");
    let msg = format!("install cancelled by SIG{signal} before activation");
    assert!(last["error"].as_str().unwrap().starts_with(&msg), "{last}");
    let err_lines: Vec<&str> = err.lines().collect();
    assert_eq!(err_lines.len(), 1, "one error line: {err}");
    assert!(
        err_lines[0].starts_with(&format!("slotctl: error: {msg}")),
        "{err}"
    );
    // B left unbootable (its record erased), A as it was.
    let after = f.status(Some("A"));
    assert_status_unchanged_but_target(&before, &after, "B");
    assert_eq!(after["slots"]["B"]["bootable"], false, "{after}");
    assert_eq!(after["slots"]["B"]["installed"], Value::Null, "{after}");
    assert_eq!(f.flags("A"), (2, 0, true));
    let a_after = (f.read_partition("A", "BOOT"), f.read_partition("A", "ROOT"));
    assert!(a_before == a_after, "the booted slot A changed");
    // The lock went with the process: the same image installs now.
    drop(srv);
    ok(f.run(&["install", "--booted", "A", update.to_str().unwrap()]));
    assert_eq!(f.flags("B"), (2, 3, false));
}

#[test]
fn sigterm_during_the_write_cancels_with_exit_6() {
    cancel_with("TERM");
}

#[test]
fn sigint_during_the_write_cancels_with_exit_6() {
    cancel_with("INT");
}
