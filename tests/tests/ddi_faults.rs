//! The DDI backend against a server that fails: answering 500, down, or
//! stalled (the project's test server, tests/src/http.rs). A cycle that
//! cannot reach the server fails in one line with the disk untouched; the
//! agent retries with its backoff, doubling up to the max.

use std::process::Stdio;
use std::time::{Duration, Instant};

use slotctl_tests::http::{Mode, TestServer};
use slotctl_tests::installfix::{stderr, Fix};

const DEV: &str = "dev-faults";

fn fix_for(server_url: &str, extra: &str) -> Fix {
    let fix = Fix::with_config_extra(extra);
    fix.provision_a("1.0.0", 1);
    let mut cfg = std::fs::read_to_string(&fix.config).unwrap();
    cfg.push_str(&format!(
        "\n[ddi]\nserver_url = \"{server_url}\"\ncontroller_id = \"{DEV}\"\n"
    ));
    std::fs::write(&fix.config, cfg).unwrap();
    fix
}

fn one_line_failure(fix: &Fix, what: &[&str]) {
    let before = fix.disk_bytes();
    let out = fix.run(&["update", "--booted", "A"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("slotctl: error: "), "{err}");
    for w in what {
        assert!(err.contains(w), "{w:?} not in {err}");
    }
    assert!(fix.disk_bytes() == before, "the disk changed");
}

#[test]
fn server_down_stalled_or_failing_fails_one_cycle_in_one_line() {
    let dummy = tempfile::NamedTempFile::new().unwrap();
    // Down: a port nobody listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fix = fix_for(&format!("http://127.0.0.1:{port}"), "");
    one_line_failure(
        &fix,
        &[&format!("127.0.0.1:{port}/DEFAULT/controller/v1/{DEV}")],
    );
    // Stalled: no answer within the stall timeout (1 s in the fixture).
    let srv = TestServer::start(dummy.path(), Mode::StallEvery(0));
    let fix = fix_for(srv.url("").trim_end_matches('/'), "");
    let t = Instant::now();
    one_line_failure(&fix, &[&format!("/DEFAULT/controller/v1/{DEV}")]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // 500: named with the server's text.
    let srv = TestServer::start(dummy.path(), Mode::Status(500));
    let fix = fix_for(srv.url("").trim_end_matches('/'), "");
    one_line_failure(&fix, &["HTTP 500"]);
    assert_eq!(
        srv.requests()[0].path,
        format!("/DEFAULT/controller/v1/{DEV}")
    );
}

#[test]
fn agent_backs_off_doubling_up_to_the_max_then_stops_on_sigterm() {
    let dummy = tempfile::NamedTempFile::new().unwrap();
    let srv = TestServer::start(dummy.path(), Mode::Status(500));
    let fix = fix_for(
        srv.url("").trim_end_matches('/'),
        "[agent]\nbackoff_initial_secs = 1\nbackoff_max_secs = 2\n",
    );
    let before = fix.disk_bytes();
    let child = slotctl_tests::slotctl()
        .args(fix.args(&["agent", "--booted", "A"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while srv.requests().len() < 4 {
        assert!(t0.elapsed() < Duration::from_secs(30), "too few polls");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let waits: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("HTTP 500"))
        .filter_map(|l| l.rsplit("retrying in ").next())
        .collect();
    assert!(waits.len() >= 3, "{err}");
    assert_eq!(&waits[..3], ["1s", "2s", "2s"], "{err}");
    // The polls were spaced by the backoff: about 1 s, then 2 s.
    let r = srv.requests();
    let gap1 = r[1].at - r[0].at;
    let gap2 = r[2].at - r[1].at;
    assert!(gap1 >= Duration::from_millis(900), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(1900), "{gap2:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("slotctl agent: stopped"));
    assert!(fix.disk_bytes() == before, "the disk changed");
}
