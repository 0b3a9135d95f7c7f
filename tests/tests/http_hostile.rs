//! A hostile HTTP server against `slotctl install URL` (issue 11, item 7
//! and the redirect findings), on a real disk image, with the real test
//! server on 127.0.0.1 (tests/src/http.rs):
//!
//! - a body trickled at one byte per 1.5 s (below the stall timeout) ends at
//!   `[http] deadline_secs`, or earlier at the throughput floor
//!   (`min_bytes_per_sec` over `min_speed_window_secs`): one error line
//!   naming the cause, exit 1, the target slot left unbootable, the booted
//!   slot untouched, the lock released;
//! - a redirect to `file://` (or any non-HTTP URL) and a redirect loop are
//!   refused at once: one line each, not retried (the server's request log
//!   counts them), the disk byte for byte as before.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use slotctl_tests::http::{Mode, TestServer};
use slotctl_tests::installfix::*;

/// Slot A good (1.0.0, booted), slot B good (0.9.0, the fallback), so a
/// failed install into B visibly changes B; a 2.0.0 update image with a
/// 3.5 MB uncompressed ROOT. `http` replaces the fixture's `[http]` keys.
fn setup(http: &[(&str, &str)]) -> (Fix, PathBuf) {
    let f = Fix::two_good_slots("1.0.0", 1);
    let (update, _) = f.image_with("v2.img", "2.0.0", 1, 3_500_000, 2, "none");
    let mut cfg = std::fs::read_to_string(&f.config).unwrap();
    for (key, value) in http {
        let line = |v: &str| format!("\n{key} = {v}\n");
        let have = cfg
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .map(|l| format!("\n{l}\n"));
        cfg = match have {
            Some(old) => cfg.replace(&old, &line(value)),
            None => cfg.replace("\n[http]\n", &format!("\n[http]{}", line(value))),
        };
    }
    std::fs::write(&f.config, cfg).unwrap();
    (f, update)
}

fn spawn_install(f: &Fix, url: &str) -> Child {
    slotctl_tests::slotctl()
        .args(["install", "--booted", "A", url, "--disk"])
        .arg(&f.disk)
        .arg("--config")
        .arg(&f.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn slotctl")
}

/// Wait for the install to end on its own; after `limit` kill it (by the
/// pid we started) and fail: the download had no end.
fn wait_or_kill(mut child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "slotctl install was still downloading after {limit:?} and was killed: stderr {}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The state a failed install into B leaves: status as before but for B
/// (not bootable, its record erased), A's bytes untouched; and the lock
/// released: the same update from a well-behaved server then installs.
fn assert_failed_then_installable(f: &Fix, update: &Path, before: &Value, a_before: &[Vec<u8>]) {
    let after = f.status(Some("A"));
    assert_status_unchanged_but_target(before, &after, "B");
    assert_eq!(before["slots"]["B"]["bootable"], true, "{before}");
    assert_eq!(after["slots"]["B"]["bootable"], false, "{after}");
    assert_eq!(after["slots"]["B"]["installed"], Value::Null, "{after}");
    assert_eq!(f.flags("A"), (2, 0, true));
    assert!(a_before == slot_bytes(f, "A"), "the booted slot A changed");
    let srv = TestServer::start(update, Mode::Normal);
    ok(f.run(&["install", "--booted", "A", &srv.url("v2.img")]));
    f.assert_partition_holds("B", "ROOT", &f.path("v2.root"));
    assert_eq!(f.flags("B"), (2, 3, false));
}

fn slot_bytes(f: &Fix, slot: &str) -> Vec<Vec<u8>> {
    ["BOOT", "ROOT"]
        .iter()
        .map(|r| f.read_partition(slot, r))
        .collect()
}

/// One byte per 1.5 s after the first 1,000,000 (past the header: the
/// install has invalidated B and is writing when the trickle starts).
const TRICKLE: Mode = Mode::Trickle {
    after: 1_000_000,
    every_ms: 1500,
};

/// Generous: the download must end long before this on its own (the
/// configured limits below end it within seconds); a download without an
/// end is killed here and the test fails.
const HANG_LIMIT: Duration = Duration::from_secs(90);

/// Install from a server trickling the update ([`TRICKLE`]) with the
/// `[http]` keys `http`: the install must end on its own, exit 1, one error
/// line; `check` looks at that line and the server's request log; then the
/// state a failed install leaves, and the lock released.
fn trickled_install_fails(http: &[(&str, &str)], check: impl FnOnce(&str, &TestServer)) {
    let (f, update) = setup(http);
    let srv = TestServer::start(&update, TRICKLE);
    let before = f.status(Some("A"));
    let a_before = slot_bytes(&f, "A");
    let out = wait_or_kill(spawn_install(&f, &srv.url("v2.img")), HANG_LIMIT);
    let err = error_line(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    check(&err, &srv);
    drop(srv);
    assert_failed_then_installable(&f, &update, &before, &a_before);
}

#[test]
fn trickled_body_ends_at_the_download_deadline() {
    // The stall timeout (3 s) never trips at a byte per 1.5 s; the floor
    // is off: only the deadline can end this download.
    let http = [
        ("stall_timeout_secs", "3"),
        ("deadline_secs", "4"),
        ("min_bytes_per_sec", "0"),
    ];
    trickled_install_fails(&http, |err, srv| {
        assert!(
            err.contains("download deadline passed at byte 100000")
                && err.contains("it took longer than [http] deadline_secs = 4"),
            "{err}"
        );
        // A deadline is not retried: the probe and its continuation.
        let asked: Vec<_> = srv.requests().into_iter().map(|q| q.range).collect();
        assert_eq!(
            asked,
            [
                Some("bytes=0-65535".to_string()),
                Some("bytes=65536-".to_string())
            ]
        );
    });
}

#[test]
fn trickled_body_is_cut_by_the_throughput_floor_then_retries_end() {
    // No deadline to speak of (the 6 h default): the floor (100 B/s over
    // 1 s windows) resumes each trickling connection, and the retries (1)
    // run out.
    let http = [
        ("stall_timeout_secs", "3"),
        ("retries", "1"),
        ("min_bytes_per_sec", "100"),
        ("min_speed_window_secs", "1"),
    ];
    trickled_install_fails(&http, |err, srv| {
        assert!(
            err.contains("after 1 retries")
                && err.contains("too slow: ")
                && err.contains("below [http] min_bytes_per_sec = 100"),
            "{err}"
        );
        // The probe, its continuation, the one retry.
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 3, "{reqs:?}");
        let resumed_at: u64 = reqs[2]
            .range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the retry did not resume: {reqs:?}"));
        assert!((1_000_000..1_000_010).contains(&resumed_at), "{reqs:?}");
    });
}

/// A redirect the client must refuse before writing anything: one error
/// line naming `what`, exit 1, exactly `requests` requests (no retry), no
/// retry warning, the disk byte for byte as before.
fn redirect_refused(table: &'static [(&'static str, &'static str)], what: &str, requests: usize) {
    let (f, update) = setup(&[]);
    let srv = TestServer::start(&update, Mode::Redirect(table));
    let before = f.disk_bytes();
    let out = f.run(&["install", "--booted", "A", &srv.url("v2.img")]);
    let err = error_line(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let what = what.replace("BASE", &srv.url(""));
    assert!(err.contains(&what), "{err}\nwanted: {what}");
    assert!(!stderr(&out).contains("retrying"), "{}", stderr(&out));
    let reqs = srv.requests();
    assert_eq!(reqs.len(), requests, "{reqs:?}");
    assert!(f.disk_bytes() == before, "the disk changed");
}

#[test]
fn redirect_to_a_file_url_is_refused_not_retried() {
    redirect_refused(
        &[("/v2.img", "file:///etc/passwd")],
        "BASEv2.img: redirect to a non-HTTP URL file:///etc/passwd refused",
        1,
    );
}

#[test]
fn redirect_to_another_scheme_is_refused_not_retried() {
    redirect_refused(
        &[("/v2.img", "/hop"), ("/hop", "ftp://127.0.0.1/v2.img")],
        "BASEhop: redirect to a non-HTTP URL ftp://127.0.0.1/v2.img refused",
        2,
    );
}

#[test]
fn redirect_loop_is_refused_after_one_round() {
    redirect_refused(
        &[("/v2.img", "/a"), ("/a", "b"), ("/b", "/v2.img")],
        "redirect loop: BASEv2.img -> BASEa -> BASEb -> BASEv2.img",
        3,
    );
}

#[test]
fn redirect_to_itself_is_a_loop() {
    redirect_refused(
        &[("/v2.img", "/v2.img")],
        "redirect loop: BASEv2.img -> BASEv2.img",
        1,
    );
}

#[test]
fn redirect_chain_longer_than_ten_is_refused() {
    const CHAIN: &[(&str, &str)] = &[
        ("/v2.img", "/r1"),
        ("/r1", "/r2"),
        ("/r2", "/r3"),
        ("/r3", "/r4"),
        ("/r4", "/r5"),
        ("/r5", "/r6"),
        ("/r6", "/r7"),
        ("/r7", "/r8"),
        ("/r8", "/r9"),
        ("/r9", "/r10"),
        ("/r10", "/r11"),
    ];
    redirect_refused(CHAIN, "BASEv2.img: more than 10 redirects", 11);
}

/// Redirects that stay on http(s) still work, relative ones included
/// (resolved against the URL that answered, as the server's log shows).
#[test]
fn relative_redirects_are_followed() {
    let (f, update) = setup(&[]);
    // Not a loop: each URL of the chain differs.
    let srv = TestServer::start(
        &update,
        Mode::Redirect(&[
            ("/v2.img", "images/v2.img"),
            ("/images/v2.img", "../real.img"),
        ]),
    );
    ok(f.run(&["install", "--booted", "A", &srv.url("v2.img")]));
    f.assert_partition_holds("B", "ROOT", &f.path("v2.root"));
    let paths: Vec<String> = srv.requests().iter().map(|r| r.path.clone()).collect();
    // The probe's chain, then the continuation's (each request follows
    // the redirects anew).
    assert_eq!(
        paths,
        [
            "/v2.img",
            "/images/v2.img",
            "/real.img",
            "/v2.img",
            "/images/v2.img",
            "/real.img"
        ]
    );
}
