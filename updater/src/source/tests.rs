//! Unit tests of the HTTP source against the real test server
//! (tests/src/http.rs) on 127.0.0.1.

use super::redirect::redirect_target;
use super::*;
use slotctl_tests::http::{Mode, TestServer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn opts() -> HttpOptions {
    HttpOptions {
        connect_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_secs(1),
        retries: 3,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ca_file: None,
        deadline: Duration::from_secs(60),
        min_bytes_per_sec: 0,
        min_speed_window: Duration::from_secs(60),
        auth: None,
    }
}

fn fixture() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(&p, &data).unwrap();
    (dir, p, data)
}

fn fetch(url: &str, o: HttpOptions) -> (anyhow::Result<Vec<u8>>, Vec<String>) {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let w = warnings.clone();
    let res = open(
        url,
        &o,
        Box::new(move |m| w.lock().unwrap().push(m.to_string())),
    )
    .and_then(|mut s| {
        let mut v = Vec::new();
        s.reader.read_to_end(&mut v)?;
        Ok(v)
    });
    let w = warnings.lock().unwrap().clone();
    (res, w)
}

#[test]
fn redirect_targets() {
    let from = "http://h:1/a/b/img?x=1";
    let ok = |loc: &str| redirect_target(from, loc).unwrap();
    assert_eq!(ok("https://o/x"), "https://o/x");
    assert_eq!(ok("HTTP://o/x"), "HTTP://o/x");
    assert_eq!(ok("//o:2/x"), "http://o:2/x");
    assert_eq!(ok("/x?y"), "http://h:1/x?y");
    assert_eq!(ok("c"), "http://h:1/a/b/c");
    assert_eq!(ok("../c"), "http://h:1/a/c");
    assert_eq!(ok("./../../../c/."), "http://h:1/c/");
    for bad in ["file:///etc/passwd", "ftp://h/x", "data:,x", "javascript:x"] {
        let e = redirect_target(from, bad).unwrap_err();
        assert_eq!(
            e,
            format!("{from}: redirect to a non-HTTP URL {bad} refused")
        );
    }
}

#[test]
fn plain_download() {
    let (_d, p, data) = fixture();
    let srv = TestServer::start(&p, Mode::Normal);
    let (r, w) = fetch(&srv.url("img"), opts());
    assert_eq!(r.unwrap(), data);
    assert!(w.is_empty(), "{w:?}");
    // The probe, then the rest: one connection, every byte sent once.
    let asked: Vec<_> = srv.requests().into_iter().map(|q| q.range).collect();
    assert_eq!(
        asked,
        [
            Some(format!("bytes=0-{}", PROBE_LEN - 1)),
            Some(format!("bytes={PROBE_LEN}-"))
        ]
    );
    assert_eq!(srv.connections(), 1);
    assert_eq!(srv.body_bytes_sent(), data.len() as u64);
}

#[test]
fn resumes_after_drop_with_range() {
    let (_d, p, data) = fixture();
    let srv = TestServer::start(&p, Mode::DropOnce(1_000_000));
    let (r, w) = fetch(&srv.url("img"), opts());
    assert_eq!(r.unwrap(), data);
    // The probe, its continuation (dropped), the resume.
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[2].range.as_deref(), Some("bytes=1000000-"));
    assert_eq!(reqs[2].status, 206);
    assert!(w[0].contains("retrying from byte 1000000"), "{w:?}");
}

#[test]
fn resumes_after_stall() {
    let (_d, p, data) = fixture();
    let srv = TestServer::start(&p, Mode::StallOnce(500_000));
    let (r, _) = fetch(&srv.url("img"), opts());
    assert_eq!(r.unwrap(), data);
    assert_eq!(srv.requests()[2].range.as_deref(), Some("bytes=500000-"));
}

#[test]
fn ignored_range_restarts_and_skips() {
    let (_d, p, data) = fixture();
    let srv = TestServer::start(&p, Mode::IgnoreRangeDropOnce(700_000));
    let (r, w) = fetch(&srv.url("img"), opts());
    assert_eq!(r.unwrap(), data);
    assert!(
        w.iter().any(|m| m.contains("server ignored Range")),
        "{w:?}"
    );
}

#[test]
fn retries_are_bounded() {
    let (_d, p, _) = fixture();
    let srv = TestServer::start(&p, Mode::DropEvery(100_000));
    let (r, _) = fetch(&srv.url("img"), opts());
    let e = format!("{:#}", r.unwrap_err());
    assert!(
        e.contains("download failed at byte 465536 after 3 retries"),
        "{e}"
    );
    // The probe (64 KiB), then four responses of 100,000 bytes.
    assert_eq!(srv.requests().len(), 5);
}

#[test]
fn not_found_is_not_retried() {
    let (_d, p, _) = fixture();
    let srv = TestServer::start(&p, Mode::Status(404));
    let (r, _) = fetch(&srv.url("img"), opts());
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("HTTP 404 Not Found"), "{e}");
    assert_eq!(srv.requests().len(), 1);
}

#[test]
fn server_error_is_retried_then_fails() {
    let (_d, p, _) = fixture();
    let srv = TestServer::start(&p, Mode::Status(500));
    let (r, _) = fetch(&srv.url("img"), opts());
    let e = format!("{:#}", r.unwrap_err());
    assert!(
        e.contains("after 3 retries") && e.contains("HTTP 500 Internal Server Error"),
        "{e}"
    );
    assert_eq!(srv.requests().len(), 4);
}

#[test]
fn connection_refused_fails_clearly() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut o = opts();
    o.retries = 1;
    let (r, _) = fetch(&format!("http://127.0.0.1:{port}/x"), o);
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("after 1 retries"), "{e}");
}

#[test]
fn the_deadline_ends_retries_whose_backoff_would_pass_it() {
    let (_d, p, _) = fixture();
    let srv = TestServer::start(&p, Mode::Status(500));
    let mut o = opts();
    o.retries = 100;
    o.backoff_initial = Duration::from_millis(500);
    o.backoff_max = Duration::from_secs(30);
    o.deadline = Duration::from_secs(2);
    let (r, w) = fetch(&srv.url("img"), o);
    let e = format!("{:#}", r.unwrap_err());
    assert!(
        e.contains("HTTP 500")
            && e.contains("no time left to retry before [http] deadline_secs = 2"),
        "{e}"
    );
    // Backoffs of 0.5 s and 1 s fit in 2 s, the next (2 s) does not: far
    // fewer attempts than the 100 retries allowed.
    let n = srv.requests().len();
    assert!((1..=3).contains(&n), "{n} requests; warnings {w:?}");
}

#[test]
fn mem_ranges_serve_exact_bytes_and_count_them() {
    let (_d, p, data) = fixture();
    let from_file = MemRanges::open(&p).unwrap();
    let from_bytes = MemRanges::from_bytes(data.clone());
    for mut r in [from_file, from_bytes] {
        assert_eq!(r.len(), data.len() as u64);
        let mut served = 0;
        for (a, b) in [
            (0u64, 10u64),
            (1_000_000, 1_700_001),
            (2_999_999, 3_000_000),
            (7, 7),
        ] {
            let mut v = Vec::new();
            r.range(a, b).unwrap().read_to_end(&mut v).unwrap();
            assert!(v == data[a as usize..b as usize], "{a}..{b}");
            served += b - a;
            assert_eq!(r.received(), served);
        }
        // A range only partly read counts what was read.
        let mut five = [0u8; 5];
        r.range(100, 200).unwrap().read_exact(&mut five).unwrap();
        assert_eq!(r.received(), served + 5);
        assert_eq!(r.requests(), 5);
        for (a, b) in [(0, 3_000_001), (11, 10)] {
            let e = r.range(a, b).err().expect("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        }
    }
}

#[test]
fn memory_sources_stream_and_give_ranges_only_when_told() {
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 13 % 251) as u8).collect();
    for ranges in [true, false] {
        let src = Source::memory("m.img", data.clone(), ranges);
        let mut tee = crate::install::pin::Tee::new(src.reader, None);
        let mut head = vec![0u8; 1000];
        tee.read_exact(&mut head).unwrap();
        assert!(head == data[..1000]);
        match tee.into_inner().into_ranges() {
            Some(mut r) => {
                assert!(ranges);
                let mut v = Vec::new();
                r.range(60_000, 70_000)
                    .unwrap()
                    .read_to_end(&mut v)
                    .unwrap();
                assert!(v == data[60_000..]);
                // The 1000 bytes of the stream, then the range.
                assert_eq!(r.received(), 11_000);
            }
            None => assert!(!ranges),
        }
    }
    // Files and cursors stream only.
    let (_d, p, _) = fixture();
    let f = open(p.to_str().unwrap(), &opts(), Box::new(|_| {})).unwrap();
    assert!(f.reader.into_ranges().is_none());
    let c: Box<dyn Stream> = Box::new(io::Cursor::new(data));
    assert!(c.into_ranges().is_none());
}

#[test]
fn same_origin_compares_scheme_and_authority() {
    use super::same_origin;
    assert!(same_origin("http://h:1/a?x", "HTTP://H:1/b"));
    assert!(same_origin("https://h/a", "https://h"));
    assert!(!same_origin("http://h/a", "https://h/a"));
    assert!(!same_origin("http://h:1/a", "http://h:2/a"));
    assert!(!same_origin("http://h.evil/a", "http://h/a"));
    assert!(!same_origin("http://h@evil/a", "http://h/a"));
    assert!(!same_origin("not a url", "not a url"));
}
