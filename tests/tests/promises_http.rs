//! README promises about `slotctl install URL` that had no test (issue 10,
//! item 7), each against the real binary, a real HTTP server on 127.0.0.1
//! (tests/src/http.rs) and a real disk image:
//!
//! - a resumed download whose `206` carries a `Content-Range` that does not
//!   start at the byte asked for is refused (not written on, not retried);
//! - attempts back off exponentially, from `backoff_initial_ms` doubling up
//!   to `backoff_max_ms`, as the server sees them;
//! - `install --json` ends with `{"event":"result","ok":false,"error":...}`
//!   on a failure, and stdout holds nothing but JSON lines.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use slotctl_tests::http::{Mode, TestServer};
use slotctl_tests::installfix::*;

/// A disk whose two slots both hold a good, recorded image: A 1.0.0 (the
/// booted slot in these tests, P=2) and B 0.9.0 (P=1), so that a failed install into B
/// visibly changes it (bootable before, not after); and a 2.0.0 update image
/// (uncompressed, so that byte offsets in the stream are predictable).
struct Setup {
    f: Fix,
    update: PathBuf,
}

fn two_good_slots() -> Setup {
    // The state after 1.0.0 was installed into A and committed (A P=2
    // good, B P=1 good, the fallback).
    let f = Fix::two_good_slots("1.0.0", 1);
    let st = f.status(Some("A"));
    assert_eq!(st["slots"]["B"]["bootable"], true, "{st}");
    assert_eq!(st["slots"]["B"]["installed"]["version"], "0.9.0", "{st}");
    let (update, _) = f.image_with("v2.img", "2.0.0", 1, 3_500_000, 2, "none");
    Setup { f, update }
}

/// Everything about the booted slot A that a failed install must leave as
/// it was: its partitions' bytes.
fn slot_a_bytes(f: &Fix) -> (Vec<u8>, Vec<u8>) {
    (f.read_partition("A", "BOOT"), f.read_partition("A", "ROOT"))
}

/// The disk state every failed install must leave: `status` as before but
/// the target B, which is no longer bootable; A's bytes untouched; B's slot
/// record erased.
fn assert_failed_install_state(f: &Fix, before: &Value, a_before: &(Vec<u8>, Vec<u8>)) {
    let after = f.status(Some("A"));
    assert_status_unchanged_but_target(before, &after, "B");
    assert!(
        slot_a_bytes(f) == *a_before,
        "the booted slot's partitions changed"
    );
    assert_eq!(f.flags("A"), (2, 0, true));
    f.assert_partition_holds("A", "ROOT", &f.path("root1"));
    assert_refused(&f.run(&["verify-slot", "B"]), 3, "no slot record");
}

/// A resume answered from another byte than asked: exit 1 (an I/O error in
/// README's table: the server's answer is wrong, nothing about the image
/// or the device's policy), one error line naming both offsets, exactly two
/// requests (a wrong Content-Range is not retried), and the disk state of
/// a failed install.
fn wrong_content_range_is_refused(back: u64, sent_start: u64) {
    let Setup { f, update } = two_good_slots();
    let total = std::fs::metadata(&update).unwrap().len();
    let srv = TestServer::start(
        &update,
        Mode::WrongRangeStart {
            drop_at: 1_500_000,
            back,
        },
    );
    let before = f.status(Some("A"));
    let a_before = slot_a_bytes(&f);
    let out = f.run(&["install", "--booted", "A", &srv.url("v2.img")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = error_line(&out);
    let want = format!(
        "asked to resume at byte 1500000 but the server sent Content-Range bytes {sent_start}-{}/{total}",
        total - 1
    );
    assert!(err.contains(&want), "{err}\nwanted: {want}");
    // The warning before it is the resume after the drop.
    assert!(
        stderr(&out).contains("retrying from byte 1500000"),
        "{}",
        stderr(&out)
    );
    // The probe, its continuation (dropped), the resume.
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[0].range.as_deref(), Some("bytes=0-65535"));
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=65536-"));
    assert_eq!(reqs[2].range.as_deref(), Some("bytes=1500000-"));
    assert_eq!(reqs[2].status, 206);
    assert_failed_install_state(&f, &before, &a_before);
}

#[test]
fn resume_with_a_content_range_starting_earlier_is_refused() {
    wrong_content_range_is_refused(1000, 1_499_000);
}

#[test]
fn resume_with_a_content_range_starting_at_zero_is_refused() {
    wrong_content_range_is_refused(u64::MAX, 0);
}

/// A `206` without any Content-Range does not say where it starts: refused
/// the same way.
#[test]
fn resume_with_a_206_without_content_range_is_refused() {
    let Setup { f, update } = two_good_slots();
    let srv = TestServer::start(&update, Mode::NoContentRange(1_500_000));
    let before = f.status(Some("A"));
    let a_before = slot_a_bytes(&f);
    let out = f.run(&["install", "--booted", "A", &srv.url("v2.img")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = error_line(&out);
    assert!(
        err.contains("asked to resume at byte 1500000 but the server sent no Content-Range"),
        "{err}"
    );
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[2].status, 206);
    assert_failed_install_state(&f, &before, &a_before);
}

/// The same resume answered correctly installs: the refusals above are
/// about the Content-Range, not about resuming.
#[test]
fn resume_with_the_right_content_range_installs() {
    let Setup { f, update } = two_good_slots();
    let srv = TestServer::start(
        &update,
        Mode::WrongRangeStart {
            drop_at: 1_500_000,
            back: 0,
        },
    );
    ok(f.run(&["install", "--booted", "A", &srv.url("v2.img")]));
    f.assert_partition_holds("B", "ROOT", &f.path("v2.root"));
    assert_eq!(f.flags("B"), (2, 3, false));
    // The probe, its continuation (dropped), the resume.
    assert_eq!(srv.requests().len(), 3);
}

/// Set `[http]` keys of the fixture's config (they are already there).
fn set_http(f: &Fix, retries: u32, initial_ms: u64, max_ms: u64) {
    let cfg = std::fs::read_to_string(&f.config)
        .unwrap()
        .replace("retries = 3", &format!("retries = {retries}"))
        .replace(
            "backoff_initial_ms = 10",
            &format!("backoff_initial_ms = {initial_ms}"),
        )
        .replace("backoff_max_ms = 50", &format!("backoff_max_ms = {max_ms}"));
    std::fs::write(&f.config, cfg).unwrap();
}

/// Backoff as the server sees it: 5 attempts answered 500 with
/// `backoff_initial_ms = 400`, `backoff_max_ms = 1600` must come with gaps
/// of about 400, 800, 1600, 1600 ms. The client sleeps after it has the
/// answer, so each gap is at least its nominal value (lower bounds, exact);
/// the upper bounds leave 1 s for scheduling and still tell the cap (an
/// uncapped fourth gap would be 3200 ms) and the initial value (a first gap
/// at the max would be 1600 ms) apart.
#[test]
fn backoff_doubles_from_initial_to_max_as_the_server_sees_it() {
    let Setup { f, update } = two_good_slots();
    set_http(&f, 4, 400, 1600);
    let srv = TestServer::start(&update, Mode::Status(500));
    let before = f.disk_bytes();
    let out = f.run(&["install", "--booted", "A", &srv.url("v2.img")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = error_line(&out);
    assert!(
        err.contains("download failed at byte 0 after 4 retries")
            && err.contains("HTTP 500 Internal Server Error"),
        "{err}"
    );
    assert!(
        f.disk_bytes() == before,
        "a failed connect wrote to the disk"
    );

    // What the client says it waits...
    let said: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("slotctl: warning: "))
        .map(|l| {
            let (_, rest) = l.split_once("retrying from byte 0 in ").expect(l);
            rest.split_whitespace().next().unwrap().to_string()
        })
        .collect();
    assert_eq!(said, ["400ms", "800ms", "1.6s", "1.6s"], "{}", stderr(&out));

    // ...and what the server sees.
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 5, "{reqs:?}");
    let nominal_ms = [400u64, 800, 1600, 1600];
    let gaps: Vec<Duration> = reqs.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!(
        "backoff: gaps between attempts seen by the server: {gaps:?} (nominal ms {nominal_ms:?})"
    );
    for (i, w) in reqs.windows(2).enumerate() {
        let gap = w[1].at.duration_since(w[0].at);
        let nominal = Duration::from_millis(nominal_ms[i]);
        assert!(
            gap >= nominal,
            "gap {i} is {gap:?}, below the backoff of {nominal:?}"
        );
        assert!(
            gap < nominal + Duration::from_secs(1),
            "gap {i} is {gap:?}, far above the backoff of {nominal:?} (not doubling from the initial value, or not capped)"
        );
    }
}

/// stdout of a `--json` run: every line a JSON object with an `event`.
fn json_events(out: &Output) -> Vec<Value> {
    let text = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    assert!(!text.is_empty(), "no JSON on stdout");
    assert!(
        text.ends_with('\n'),
        "stdout does not end with a line: {text}"
    );
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l:?}"));
            assert!(v["event"].is_string(), "a JSON line without event: {l}");
            v
        })
        .collect()
}

/// The last event is the failed result, whose `error` is the message of
/// the one stderr line; no other result event.
fn assert_failed_result(out: &Output, code: i32, what: &str) -> Vec<Value> {
    let events = json_events(out);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "result", "{events:?}");
    assert_eq!(last["ok"], false, "{last}");
    let error = last["error"].as_str().expect("error is a string");
    assert!(error.contains(what), "{last}");
    assert_eq!(
        events.iter().filter(|e| e["event"] == "result").count(),
        1,
        "{events:?}"
    );
    // stderr: exactly the one error line, with the same message.
    assert_refused(out, code, what);
    assert_eq!(
        stderr(out).trim_end(),
        format!("slotctl: error: {}", error.replace('\n', " "))
    );
    events
}

#[test]
fn json_result_on_a_refusal_before_writing() {
    let Setup { f, .. } = two_good_slots();
    let r = f.payload("rootx", 100_000, 4);
    let img = f.pack_with(
        "other.img",
        "2.0.0",
        1,
        "another-board",
        &[("BOOT", &f.boot_payload()), ("ROOT", &r)],
        "zstd",
        &f.key,
    );
    let before = f.disk_bytes();
    let out = f.run(&[
        "install".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        "--json".as_ref(),
        img.as_os_str(),
    ]);
    let events = assert_failed_result(&out, 3, "another-board");
    assert!(
        events.iter().all(|e| e["event"] != "progress"),
        "a refusal before writing reported progress: {events:?}"
    );
    assert!(
        f.disk_bytes() == before,
        "a refused install wrote to the disk"
    );
}

#[test]
fn json_result_on_a_failure_mid_stream() {
    let Setup { f, update } = two_good_slots();
    let srv = TestServer::start(&update, Mode::DropEvery(500_000));
    let before = f.status(Some("A"));
    let a_before = slot_a_bytes(&f);
    let out = f.run(&["install", "--booted", "A", "--json", &srv.url("v2.img")]);
    // The probe (64 KiB), then four responses of 500,000 bytes.
    let events = assert_failed_result(&out, 1, "download failed at byte 2065536 after 3 retries");
    // It failed mid-stream: bytes had been written to B, the retries were
    // reported as warning events (on stdout, not stderr).
    assert!(
        events.iter().any(|e| e["event"] == "progress"
            && e["phase"] == "write"
            && e["done"].as_u64().unwrap_or(0) > 0),
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| e["event"] == "warning").count(),
        3,
        "{events:?}"
    );
    assert_failed_install_state(&f, &before, &a_before);
}

/// Another updater holds the lock (here `flock(1)` on the configured lock
/// file): exit 4, and the JSON stream still ends with the failed result.
#[test]
fn json_result_when_busy() {
    slotctl_tests::require_tool("flock");
    let Setup { f, update } = two_good_slots();
    let mut holder = std::process::Command::new("flock")
        .arg(&f.lock)
        .args(["sh", "-c", "echo locked; exec sleep 60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run flock");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n");
    let before = f.disk_bytes();
    let out = f.run(&[
        "install".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        "--json".as_ref(),
        update.as_os_str(),
    ]);
    // The holder is ours: end it by its pid.
    let _ = holder.kill();
    let _ = holder.wait();
    assert_failed_result(&out, 4, "busy: another slotctl");
    assert!(f.disk_bytes() == before);
}

/// A config the install cannot even load still ends the JSON stream with
/// the failed result.
#[test]
fn json_result_on_a_bad_config() {
    let Setup { f, update } = two_good_slots();
    let cfg = std::fs::read_to_string(&f.config).unwrap() + "\nno_such_key = 1\n";
    std::fs::write(&f.config, cfg).unwrap();
    let before = f.disk_bytes();
    let out = f.run(&[
        "install".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        "--json".as_ref(),
        update.as_os_str(),
    ]);
    assert_failed_result(&out, 1, "no_such_key");
    assert!(f.disk_bytes() == before);
}
