//! `slotctl install URL` against a real HTTP server on 127.0.0.1 that the
//! tests start (tests/src/http.rs): each case either completes with the
//! right bytes on the partition, or fails with one clear line and `status`
//! exactly as before apart from the target slot being unbootable.

use slotctl_tests::http::{Mode, TestServer};
use slotctl_tests::installfix::*;

use serde_json::Value;
use std::path::{Path, PathBuf};

/// A provisioned disk (slot A good, 1.0.0) and an update image whose ROOT
/// payload is large enough for faults mid-body.
fn setup(compression: &str) -> (Fix, PathBuf, PathBuf) {
    let f = Fix::provisioned("1.0.0", 1);
    let (img, root) = f.image_with("v2.img", "2.0.0", 1, 3_500_000, 2, compression);
    (f, img, root)
}

fn install_url(f: &Fix, url: &str) -> std::process::Output {
    f.run(&["install", "--booted", "A", url])
}

#[test]
fn plain_download_installs() {
    let (f, img, root) = setup("none");
    let srv = TestServer::start(&img, Mode::Normal);
    let out = ok(f.run(&["install", "--booted", "A", "--json", &srv.url("v2.img")]));
    f.assert_partition_holds("B", "ROOT", &root);
    assert_eq!(f.flags("B"), (2, 3, false));
    // An unchunked image over a server that honours Range: the probe
    // (64 KiB), then the rest in one continuation on the same connection;
    // not a failure (no retry, so no warning), every byte sent once.
    let reqs = srv.requests();
    let asked: Vec<_> = reqs.iter().map(|q| q.range.as_deref()).collect();
    assert_eq!(asked, [Some("bytes=0-65535"), Some("bytes=65536-")]);
    assert!(reqs.iter().all(|q| q.status == 206), "{reqs:?}");
    assert_eq!(srv.connections(), 1);
    let len = std::fs::metadata(&img).unwrap().len();
    assert_eq!(srv.body_bytes_sent(), len);
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        !events.iter().any(|e| e["event"] == "warning"),
        "{events:?}"
    );
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let r = events.last().unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["method"], "stream", "{r}");
    assert_eq!(r["downloaded"], len, "{r}");
}

#[test]
fn dropped_connection_resumes_with_range() {
    let (f, img, root) = setup("none");
    let srv = TestServer::start(&img, Mode::DropOnce(1_500_000));
    let out = ok(f.run(&["install", "--booted", "A", "--json", &srv.url("v2.img")]));
    f.assert_partition_holds("B", "ROOT", &root);
    let reqs = srv.requests();
    // The probe, its continuation (dropped at 1.5 MB), the resume.
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[2].range.as_deref(), Some("bytes=1500000-"));
    assert_eq!(reqs[2].status, 206);
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["event"] == "warning"
            && e["message"]
                .as_str()
                .unwrap()
                .contains("retrying from byte 1500000")),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["ok"], true);
}

#[test]
fn dropped_connection_resumes_zstd() {
    let (f, img, root) = setup("zstd");
    let len = std::fs::metadata(&img).unwrap().len();
    let srv = TestServer::start(&img, Mode::DropOnce(len / 2));
    ok(install_url(&f, &srv.url("v2.img")));
    f.assert_partition_holds("B", "ROOT", &root);
    assert_eq!(srv.requests().len(), 3);
}

#[test]
fn drop_inside_the_header_resumes() {
    let (f, img, root) = setup("none");
    let srv = TestServer::start(&img, Mode::DropOnce(100));
    ok(install_url(&f, &srv.url("v2.img")));
    f.assert_partition_holds("B", "ROOT", &root);
}

#[test]
fn stalled_body_resumes_after_the_stall_timeout() {
    let (f, img, root) = setup("none");
    let srv = TestServer::start(&img, Mode::StallOnce(2_000_000));
    ok(install_url(&f, &srv.url("v2.img")));
    f.assert_partition_holds("B", "ROOT", &root);
    assert_eq!(srv.requests()[2].range.as_deref(), Some("bytes=2000000-"));
}

#[test]
fn server_ignoring_range_restarts_and_skips() {
    let (f, img, root) = setup("none");
    let srv = TestServer::start(&img, Mode::IgnoreRangeDropOnce(1_000_000));
    let out = ok(install_url(&f, &srv.url("v2.img")));
    f.assert_partition_holds("B", "ROOT", &root);
    assert!(
        stderr(&out).contains("server ignored Range: re-reading 1000000 bytes from the start"),
        "{}",
        stderr(&out)
    );
    assert_eq!(srv.requests()[1].status, 200);
}

/// A failure before the header is read writes nothing at all.
fn fails_cleanly_before_writing(mode: Mode, what: &str) {
    let (f, img, _) = setup("none");
    let srv = TestServer::start(&img, mode);
    let before = f.disk_bytes();
    let out = install_url(&f, &srv.url("v2.img"));
    assert!(!out.status.success());
    let err = error_line(&out);
    assert!(err.contains(what), "{err}");
    assert!(
        f.disk_bytes() == before,
        "a failed download before the header wrote to the disk"
    );
}

#[test]
fn not_found_fails_without_writing() {
    fails_cleanly_before_writing(Mode::Status(404), "HTTP 404 Not Found");
}

#[test]
fn server_error_fails_after_bounded_retries_without_writing() {
    fails_cleanly_before_writing(Mode::Status(500), "after 3 retries: http://127.0.0.1");
}

#[test]
fn connection_refused_fails_without_writing() {
    let (f, _, _) = setup("none");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let before = f.disk_bytes();
    let out = install_url(&f, &format!("http://127.0.0.1:{port}/v2.img"));
    assert!(!out.status.success());
    let err = error_line(&out);
    assert!(
        err.contains("download failed at byte 0 after 3 retries"),
        "{err}"
    );
    assert!(f.disk_bytes() == before);
}

/// [`setup`], with slot B holding an older signed version (0.9.0, good,
/// the fallback below A): a failed or killed install into B must be
/// seen to have invalidated B (flags, record) and written into it, with A
/// untouched. Returns the fixture, the update image, its ROOT payload, and
/// B's old ROOT payload.
fn setup_with_old_b(compression: &str) -> (Fix, PathBuf, PathBuf, PathBuf) {
    let (f, img, root) = setup(compression);
    let r0 = f.payload("root0", 200_000, 9);
    let v0 = f.pack(
        "v0.img",
        "0.9.0",
        1,
        &[("BOOT", &f.boot_payload()), ("ROOT", &r0)],
        "zstd",
    );
    // `--factory` wants a disk with no good slot: A's flags are cleared for
    // it, then A goes above the priority 2 a factory install gives B.
    ok(f.run(&["set-flags", "A", "--priority", "0", "--successful", "0"]));
    f.factory("B", &v0);
    ok(f.run(&["set-flags", "A", "--priority", "3", "--successful", "1"]));
    let st = f.status(Some("A"));
    assert_eq!(st["slots"]["B"]["installed"]["version"], "0.9.0", "{st}");
    assert_eq!(st["slots"]["A"]["installed"]["version"], "1.0.0", "{st}");
    assert_eq!(f.flags("B"), (2, 0, true));
    assert_eq!(f.flags("A"), (3, 0, true));
    ok(f.run(&["verify-slot", "B"]));
    f.assert_partition_holds("B", "ROOT", &r0);
    (f, img, root, r0)
}

/// After a failed or killed install into B (set up by [`setup_with_old_b`]):
/// status as before apart from B; B unbootable, its 0.9.0 record gone and
/// its ROOT holding the start of the new payload (so the install did write
/// before it failed); A's partitions byte for byte as before.
fn assert_b_invalidated_a_untouched(
    f: &Fix,
    before: &Value,
    a_before: &[Vec<u8>],
    root: &Path,
    written_at_least: usize,
) {
    let after = f.status(Some("A"));
    assert_status_unchanged_but_target(before, &after, "B");
    assert_eq!(before["slots"]["B"]["bootable"], true);
    assert_eq!(after["slots"]["B"]["installed"], Value::Null, "{after}");
    assert_refused(&f.run(&["verify-slot", "B"]), 3, "no slot record");
    let want = std::fs::read(root).unwrap();
    let got = f.read_partition("B", "ROOT");
    assert!(
        got[..written_at_least] == want[..written_at_least],
        "ROOT-B does not start with the first {written_at_least} bytes of the new payload"
    );
    assert!(a_before == &partitions_of(f, "A")[..], "slot A changed");
    f.assert_partition_holds("A", "ROOT", &f.path("root1"));
}

/// The bytes of every partition of a slot.
fn partitions_of(f: &Fix, slot: &str) -> Vec<Vec<u8>> {
    ["BOOT", "ROOT"]
        .iter()
        .map(|r| f.read_partition(slot, r))
        .collect()
}

/// A failure mid-body: status unchanged apart from the target slot, which
/// held an older version and was invalidated and partly written. A failed
/// download is an I/O error: exit 1.
fn fails_mid_body(mode: Mode, what: &[&str], written_at_least: usize) {
    let (f, img, root, _) = setup_with_old_b("none");
    let srv = TestServer::start(&img, mode);
    let before = f.status(Some("A"));
    let a_before = partitions_of(&f, "A");
    let out = install_url(&f, &srv.url("v2.img"));
    let err = error_line(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(what.iter().all(|w| err.contains(w)), "{err}");
    assert_b_invalidated_a_untouched(&f, &before, &a_before, &root, written_at_least);
}

#[test]
fn repeated_drops_exhaust_the_retries() {
    fails_mid_body(
        Mode::DropEvery(500_000),
        // The probe (64 KiB), then four responses of 500,000 bytes.
        &["download failed at byte 2065536 after 3 retries"],
        1 << 20,
    );
}

#[test]
fn repeated_stalls_exhaust_the_retries() {
    fails_mid_body(
        Mode::StallEvery(600_000),
        &[
            "download failed at byte 2465536 after 3 retries",
            "stalled (no data for 1s)",
        ],
        1 << 20,
    );
}

#[test]
fn unsupported_scheme_is_refused() {
    let (f, _, _) = setup("none");
    let out = install_url(&f, "ftp://127.0.0.1/v2.img");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unsupported source"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn https_with_the_configured_ca() {
    let (f0, img, root) = setup("zstd");
    let tls = slotctl_tests::http::make_tls_files(f0.dir.path());
    let srv = TestServer::start_tls(&img, Mode::DropOnce(50_000), &tls);
    // Without the CA: the web PKI roots do not know the test CA.
    let before = f0.disk_bytes();
    let out = install_url(&f0, &srv.url("v2.img"));
    assert!(!out.status.success());
    let err = error_line(&out);
    assert!(
        err.contains("https://127.0.0.1") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(f0.disk_bytes() == before);
    // With `[tls] ca_file`: installs, resuming over TLS too.
    let cfg = std::fs::read_to_string(&f0.config).unwrap()
        + &format!("\n[tls]\nca_file = \"{}\"\n", tls.ca.display());
    std::fs::write(&f0.config, cfg).unwrap();
    let srv = TestServer::start_tls(&img, Mode::DropOnce(50_000), &tls);
    ok(install_url(&f0, &srv.url("v2.img")));
    f0.assert_partition_holds("B", "ROOT", &root);
    // The drop inside the probe resumes the probe (to its end), then the
    // continuation.
    let asked: Vec<_> = srv.requests().into_iter().map(|q| q.range).collect();
    assert_eq!(
        asked,
        [
            Some("bytes=0-65535".to_string()),
            Some("bytes=50000-65535".to_string()),
            Some("bytes=65536-".to_string())
        ]
    );
}

/// Start `slotctl install URL` in the background (stdout/stderr piped).
fn spawn_install(f: &Fix, url: &str) -> std::process::Child {
    slotctl_tests::slotctl()
        .args(["install", "--booted", "A", url, "--disk"])
        .arg(&f.disk)
        .arg("--config")
        .arg(&f.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until the server has seen `n` requests.
fn wait_requests(srv: &TestServer, n: usize) {
    let t = std::time::Instant::now();
    while srv.requests().len() < n {
        assert!(
            t.elapsed().as_secs() < 20,
            "server never saw {n} request(s)"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn second_updater_is_busy_while_the_first_downloads() {
    let (f, img, root) = setup("none");
    // Stall the first download for the stall timeout (1 s) mid-body.
    let srv = TestServer::start(&img, Mode::StallOnce(1_000_000));
    let first = spawn_install(&f, &srv.url("v2.img"));
    wait_requests(&srv, 1);
    let out = install_url(&f, &srv.url("v2.img"));
    assert_refused(
        &out,
        4,
        &format!(
            "busy: another slotctl (pid {}) holds {}",
            first.id(),
            f.lock.display()
        ),
    );
    let first_out = first.wait_with_output().unwrap();
    ok(first_out);
    f.assert_partition_holds("B", "ROOT", &root);
}

#[test]
fn killed_mid_download_leaves_old_slot_and_the_install_can_be_rerun() {
    let (f, img, root, _) = setup_with_old_b("none");
    let before = f.status(Some("A"));
    let a_before = partitions_of(&f, "A");
    let (root_b, _) = f.partition("B", "ROOT");
    // Every response stalls after 600,000 bytes: the install cannot finish
    // (after 4 responses, 2.4 of the image's 3.5 MB, it gives up on its own,
    // which the check of the kill signal below would catch).
    let srv = TestServer::start(&img, Mode::StallEvery(600_000));
    let mut child = spawn_install(&f, &srv.url("v2.img"));
    // Wait until the new payload's first MiB is on ROOT-B in the disk image
    // (the install has invalidated B and is writing), then kill it
    // (SIGKILL, by the pid we started).
    let want = std::fs::read(&root).unwrap();
    let prefix = &want[..1 << 20];
    let t = std::time::Instant::now();
    loop {
        let disk = f.disk_bytes();
        let at = root_b as usize;
        if disk[at..at + prefix.len()] == *prefix {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the install ended before writing the first MiB of ROOT-B"
        );
        assert!(
            t.elapsed().as_secs() < 30,
            "ROOT-B never received the first MiB of the new payload"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the install was not killed mid-write: {status:?}"
    );
    assert_b_invalidated_a_untouched(&f, &before, &a_before, &root, 1 << 20);
    // The same install, run again, completes.
    let srv2 = TestServer::start(&img, Mode::Normal);
    ok(install_url(&f, &srv2.url("v2.img")));
    f.assert_partition_holds("B", "ROOT", &root);
    assert_eq!(f.flags("B"), (2, 3, false));
}
