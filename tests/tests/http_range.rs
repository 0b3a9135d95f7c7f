//! Random access to an image over HTTP (`slotctl::source::HttpRanges`,
//! issue 12) against the real test server on 127.0.0.1
//! (tests/src/http.rs): the probe on the first request, exact bytes, one
//! kept-alive connection, resumes that do not re-send finished bytes, the
//! fallback for a server that ignores Range, refusals of wrong answers, and
//! the retry budget and deadline bounding a range.

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slotctl::source::{self, HttpOptions, HttpReader, RangeSource};
use slotctl_tests::http::{Mode, TestServer};

const LEN: usize = 3_000_000;

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

/// A 3 MB file of pseudo-random bytes (no period a wrong offset could
/// hide in).
fn fixture() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&p, &data).unwrap();
    (dir, p, data)
}

type Warnings = Arc<Mutex<Vec<String>>>;

fn open(url: &str, o: HttpOptions) -> (HttpReader, Warnings) {
    let w: Warnings = Arc::default();
    let w2 = w.clone();
    let r = HttpReader::open(
        url,
        o,
        Box::new(move |m| w2.lock().unwrap().push(m.to_string())),
    )
    .unwrap();
    (r, w)
}

fn read_range(r: &mut dyn RangeSource, a: u64, b: u64) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.range(a, b)?.read_to_end(&mut v)?;
    Ok(v)
}

fn ranges_asked(srv: &TestServer) -> Vec<String> {
    srv.requests()
        .iter()
        .map(|q| q.range.clone().unwrap_or_default())
        .collect()
}

/// The spans the tests ask for: the start, the middle, one byte, the very
/// end, and an empty one (no request).
const SPANS: [(u64, u64); 5] = [
    (0, 4096),
    (1_234_567, 1_834_567),
    (2_000_000, 2_000_001),
    (LEN as u64 - 70_000, LEN as u64),
    (5, 5),
];

#[test]
fn the_probe_finds_ranges_and_ranges_return_exactly_the_bytes_over_one_connection() {
    let (_d, p, data) = fixture();
    let srv = TestServer::start(&p, Mode::Normal);
    let (mut r, w) = open(&srv.url("img"), opts());
    assert!(r.ranges_supported());
    assert_eq!(r.total(), Some(LEN as u64));
    // The whole stream first: its body read to the end, its connection is
    // kept alive and every range goes over it.
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    assert_eq!(all, data);
    let mut ranges = r.into_ranges().expect("ranges");
    assert_eq!(ranges.len(), LEN as u64);
    let mut want_sent = LEN as u64;
    for (a, b) in SPANS {
        let got = read_range(&mut ranges, a, b).unwrap();
        assert!(got == data[a as usize..b as usize], "range {a}..{b}");
        want_sent += b - a;
    }
    assert_eq!(srv.connections(), 1, "{:?}", srv.requests());
    assert_eq!(
        ranges_asked(&srv),
        [
            "bytes=0-65535",
            "bytes=65536-",
            "bytes=0-4095",
            "bytes=1234567-1834566",
            "bytes=2000000-2000000",
            "bytes=2930000-2999999"
        ]
    );
    assert!(srv.requests().iter().all(|q| q.status == 206));
    assert_eq!(ranges.received(), want_sent);
    assert_eq!(srv.body_bytes_sent(), want_sent);
    assert!(w.lock().unwrap().is_empty(), "{w:?}");
}

#[test]
fn after_the_header_the_source_hands_the_stream_back_as_ranges() {
    // The install's way: source::open, read the header through the pin's
    // tee, give the stream up for ranges: the rest of the probe's body
    // (64 KiB in all) is read and counted, so its connection is kept alive
    // for the ranges and the server sent exactly what the client received.
    let (_d, p, data) = fixture();
    let srv = TestServer::start(&p, Mode::Normal);
    let src = source::open(&srv.url("img"), &opts(), Box::new(|_| {})).unwrap();
    let mut tee = slotctl::install::pin::Tee::new(src.reader, None);
    let mut head = vec![0u8; 10_000];
    tee.read_exact(&mut head).unwrap();
    assert!(head == data[..10_000]);
    let mut ranges = tee.into_inner().into_ranges().expect("ranges");
    let received_before = ranges.received();
    assert_eq!(received_before, 65_536);
    for (a, b) in SPANS {
        let got = read_range(ranges.as_mut(), a, b).unwrap();
        assert!(got == data[a as usize..b as usize], "range {a}..{b}");
    }
    let spans: u64 = SPANS.iter().map(|(a, b)| b - a).sum();
    assert_eq!(ranges.received(), received_before + spans);
    assert_eq!(srv.body_bytes_sent(), ranges.received());
    assert_eq!(srv.connections(), 1, "{:?}", srv.requests());
    assert_eq!(srv.requests().len(), 5);
}

#[test]
fn a_dropped_range_resumes_from_where_it_broke() {
    let (_d, p, data) = fixture();
    let srv = TestServer::start(&p, Mode::DropRangeOnce(100_000));
    let (mut r, w) = open(&srv.url("img"), opts());
    r.read_to_end(&mut Vec::new()).unwrap();
    let mut ranges = r.into_ranges().unwrap();
    let got = read_range(&mut ranges, 500_000, 1_500_000).unwrap();
    assert!(got == data[500_000..1_500_000]);
    let got = read_range(&mut ranges, 2_000_000, 2_100_000).unwrap();
    assert!(got == data[2_000_000..2_100_000]);
    assert_eq!(
        ranges_asked(&srv),
        [
            "bytes=0-65535",
            "bytes=65536-",
            "bytes=500000-1499999",
            "bytes=600000-1499999",
            "bytes=2000000-2099999"
        ]
    );
    // No finished byte was sent twice: the stream, then 1 MB and 100 kB.
    let want = LEN as u64 + 1_000_000 + 100_000;
    assert_eq!(srv.body_bytes_sent(), want);
    assert_eq!(ranges.received(), want);
    // The drop closed the first connection; the rest shared the second.
    assert_eq!(srv.connections(), 2);
    let w = w.lock().unwrap();
    assert!(
        w.len() == 1 && w[0].contains("retrying from byte 600000 in"),
        "{w:?}"
    );
}

#[test]
fn a_server_that_ignores_range_streams_the_whole_image() {
    let (_d, p, data) = fixture();
    let srv = TestServer::start(&p, Mode::IgnoreRangeDropOnce(u64::MAX));
    let (mut r, w) = open(&srv.url("img"), opts());
    assert!(!r.ranges_supported());
    assert_eq!(r.total(), Some(LEN as u64));
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    assert!(all == data);
    assert_eq!(r.received(), LEN as u64);
    assert!(r.into_ranges().is_none());
    assert!(w.lock().unwrap().is_empty(), "{w:?}");
    assert_eq!(ranges_asked(&srv), ["bytes=0-65535"]);
    assert_eq!(srv.requests()[0].status, 200);

    // Through source::open, the stream gives no ranges either.
    let src = source::open(&srv.url("img"), &opts(), Box::new(|_| {})).unwrap();
    assert!(src.reader.into_ranges().is_none());
}

fn refused(mode: Mode, a: u64, b: u64) -> (String, Vec<String>) {
    let (_d, p, _) = fixture();
    let srv = TestServer::start(&p, mode);
    let (r, _) = open(&srv.url("img"), opts());
    let mut ranges = r.into_ranges().expect("the probe found ranges");
    let e = match read_range(&mut ranges, a, b) {
        Ok(v) => panic!("range {a}..{b} taken: {} bytes", v.len()),
        Err(e) => e.to_string(),
    };
    (e, ranges_asked(&srv))
}

#[test]
fn a_wrong_content_range_is_refused_without_retrying() {
    let (e, asked) = refused(
        Mode::WrongRangeStart {
            drop_at: u64::MAX,
            back: 1000,
        },
        500_000,
        600_000,
    );
    assert!(
        e.ends_with(
            "asked for bytes 500000-599999/3000000 but the server sent Content-Range bytes 499000-599999/3000000, Content-Length 101000"
        ),
        "{e}"
    );
    assert_eq!(asked, ["bytes=0-65535", "bytes=500000-599999"]);

    let (e, asked) = refused(Mode::NoContentRange(u64::MAX), 10, 20);
    assert!(
        e.ends_with("asked for bytes 10-19/3000000 but the server sent no Content-Range"),
        "{e}"
    );
    assert_eq!(asked.len(), 2);

    let (e, asked) = refused(Mode::IgnoreRangeAfter(1), 10, 20);
    assert!(
        e.ends_with("server stopped honouring Range (HTTP 200 to Range: bytes=10-19)"),
        "{e}"
    );
    assert_eq!(asked.len(), 2);
}

#[test]
fn a_range_outside_the_image_is_refused_without_a_request() {
    let (_d, p, _) = fixture();
    let srv = TestServer::start(&p, Mode::Normal);
    let (r, _) = open(&srv.url("img"), opts());
    let mut ranges = r.into_ranges().unwrap();
    for (a, b) in [(0, LEN as u64 + 1), (10, 9)] {
        let e = read_range(&mut ranges, a, b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    }
    assert_eq!(srv.requests().len(), 1);
}

#[test]
fn retries_bound_a_range_download() {
    let (_d, p, _) = fixture();
    // Every response drops after 100 kB: the probe (of which 1000 bytes
    // are read), then the range and its 3 retries.
    let srv = TestServer::start(&p, Mode::DropEvery(100_000));
    let (mut r, w) = open(&srv.url("img"), opts());
    r.read_exact(&mut [0u8; 1000]).unwrap();
    let mut ranges = r.into_ranges().unwrap();
    let e = read_range(&mut ranges, 1_000_000, 2_000_000)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("download failed at byte 1400000 after 3 retries: "),
        "{e}"
    );
    assert_eq!(
        ranges_asked(&srv),
        [
            "bytes=0-65535",
            "bytes=1000000-1999999",
            "bytes=1100000-1999999",
            "bytes=1200000-1999999",
            "bytes=1300000-1999999"
        ]
    );
    assert_eq!(w.lock().unwrap().len(), 3);
}

#[test]
fn the_deadline_bounds_a_range_download() {
    let (_d, p, _) = fixture();
    // Every response stalls after 100 kB; the stall timeout (1 s) would
    // allow 100 retries, the deadline (3 s) does not.
    let srv = TestServer::start(&p, Mode::StallEvery(100_000));
    let mut o = opts();
    o.retries = 100;
    o.backoff_initial = Duration::from_millis(100);
    o.backoff_max = Duration::from_millis(100);
    o.deadline = Duration::from_secs(3);
    let (mut r, _) = open(&srv.url("img"), o);
    r.read_exact(&mut [0u8; 1000]).unwrap();
    let mut ranges = r.into_ranges().unwrap();
    let e = read_range(&mut ranges, 1_000_000, 2_000_000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("deadline_secs = 3"), "{e}");
    // Each attempt costs a stall timeout: 3 s hold at most 3 of them.
    let n = srv.requests().len();
    assert!((2..=4).contains(&n), "{n} requests: {:?}", srv.requests());
}

#[test]
fn ranges_follow_the_redirect_the_stream_followed() {
    let (_d, p, data) = fixture();
    let srv = TestServer::start(&p, Mode::Redirect(&[("/a", "/img")]));
    let (r, _) = open(&srv.url("a"), opts());
    assert!(r.ranges_supported());
    let mut ranges = r.into_ranges().unwrap();
    let got = read_range(&mut ranges, 1000, 5000).unwrap();
    assert!(got == data[1000..5000]);
    let paths: Vec<String> = srv.requests().iter().map(|q| q.path.clone()).collect();
    assert_eq!(paths, ["/a", "/img", "/a", "/img"]);
    assert_eq!(ranges_asked(&srv)[3], "bytes=1000-4999");
}
