//! The test server against a raw client.
use super::*;

fn get(url: &str, range: Option<&str>) -> (String, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut c = TcpStream::connect(host).unwrap();
    let mut req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(r) = range {
        req.push_str(&format!("Range: {r}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    (head, all[split + 4..].to_vec())
}

#[test]
fn serves_ranges_and_faults() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&p, &data).unwrap();

    let srv = TestServer::start(&p, Mode::Normal);
    let (h, b) = get(&srv.url("f"), None);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert_eq!(b, data);
    let (h, b) = get(&srv.url("f"), Some("bytes=1000-"));
    assert!(
        h.contains("206") && h.contains("bytes 1000-99999/100000"),
        "{h}"
    );
    assert_eq!(b, &data[1000..]);
    assert_eq!(srv.requests().len(), 2);
    drop(srv);

    let srv = TestServer::start(&p, Mode::DropOnce(5000));
    let (_, b) = get(&srv.url("f"), None);
    assert_eq!(b, &data[..5000]);
    let (_, b) = get(&srv.url("f"), Some("bytes=5000-"));
    assert_eq!(b, &data[5000..]);
    drop(srv);

    let srv = TestServer::start(&p, Mode::IgnoreRangeDropOnce(u64::MAX));
    let (h, b) = get(&srv.url("f"), Some("bytes=10-"));
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert_eq!(b, data);
    drop(srv);

    let srv = TestServer::start(
        &p,
        Mode::WrongRangeStart {
            drop_at: 3000,
            back: 1000,
        },
    );
    let (_, b) = get(&srv.url("f"), None);
    assert_eq!(b, &data[..3000]);
    let (h, b) = get(&srv.url("f"), Some("bytes=3000-"));
    assert!(
        h.contains("206") && h.contains("bytes 2000-99999/100000"),
        "{h}"
    );
    assert_eq!(b, &data[2000..]);
    let reqs = srv.requests();
    assert!(reqs[1].at >= reqs[0].at);
    drop(srv);

    let srv = TestServer::start(&p, Mode::NoContentRange(3000));
    let (_, b) = get(&srv.url("f"), None);
    assert_eq!(b, &data[..3000]);
    let (h, b) = get(&srv.url("f"), Some("bytes=3000-"));
    assert!(h.contains("206") && !h.contains("Content-Range"), "{h}");
    assert_eq!(b, &data[3000..]);
    drop(srv);

    let srv = TestServer::start(&p, Mode::Status(404));
    let (h, _) = get(&srv.url("f"), None);
    assert!(h.starts_with("HTTP/1.1 404"), "{h}");
    drop(srv);

    let srv = TestServer::start(&p, Mode::Redirect(&[("/a", "file:///etc/passwd")]));
    let (h, b) = get(&srv.url("a"), None);
    assert!(
        h.starts_with("HTTP/1.1 302") && h.contains("\r\nLocation: file:///etc/passwd"),
        "{h}"
    );
    assert!(b.is_empty());
    let (_, b) = get(&srv.url("f"), None);
    assert_eq!(b, data);
    drop(srv);

    // The last 3 bytes one every 100 ms: all of them arrive, the last
    // no sooner than 300 ms after the head (a bound, not a speed).
    let srv = TestServer::start(
        &p,
        Mode::Trickle {
            after: 99_997,
            every_ms: 100,
        },
    );
    let t = Instant::now();
    let (_, b) = get(&srv.url("f"), None);
    assert_eq!(b, data);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

/// One request on an open connection: the head and the body (read by its
/// Content-Length, so the connection stays usable).
fn ask(c: &mut BufReader<TcpStream>, range: &str, close: bool) -> (String, Vec<u8>) {
    let close = if close { "Connection: close\r\n" } else { "" };
    let req = format!("GET /f HTTP/1.1\r\nHost: x\r\nRange: {range}\r\n{close}\r\n");
    c.get_mut().write_all(req.as_bytes()).unwrap();
    let mut head = String::new();
    loop {
        let mut l = String::new();
        c.read_line(&mut l).unwrap();
        if l.trim().is_empty() {
            break;
        }
        head.push_str(&l);
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn keeps_connections_alive_and_serves_bounded_ranges_tampered_bytes_and_range_drops() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&p, &data).unwrap();
    let host = |srv: &TestServer| {
        srv.url("")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    };

    // Three requests over one connection; the last asks to close.
    let srv = TestServer::start(&p, Mode::Normal);
    let mut c = BufReader::new(TcpStream::connect(host(&srv)).unwrap());
    let (h, b) = ask(&mut c, "bytes=10-19", false);
    assert!(h.contains("206") && h.contains("bytes 10-19/100000"), "{h}");
    assert!(!h.contains("Connection: close"), "{h}");
    assert_eq!(b, &data[10..20]);
    let (h, b) = ask(&mut c, "bytes=99990-", false);
    assert!(h.contains("bytes 99990-99999/100000"), "{h}");
    assert_eq!(b, &data[99_990..]);
    let (h, b) = ask(&mut c, "bytes=0-99999999", true);
    assert!(h.contains("Connection: close"), "{h}");
    assert_eq!(b, data);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(srv.connections(), 1);
    assert_eq!(srv.body_bytes_sent(), 10 + 10 + 100_000);
    drop(srv);

    // The byte at 5000 served XOR 0xff, in any range that holds it.
    let srv = TestServer::start(&p, Mode::Tamper(5000));
    let mut c = BufReader::new(TcpStream::connect(host(&srv)).unwrap());
    let (_, b) = ask(&mut c, "bytes=4990-5009", false);
    let mut want = data[4990..5010].to_vec();
    want[10] ^= 0xff;
    assert_eq!(b, want);
    let (_, b) = ask(&mut c, "bytes=6000-6009", true);
    assert_eq!(b, &data[6000..6010]);
    drop(srv);

    // The probe (bytes=N-) is whole; the first bounded range drops after
    // 1000 bytes and closes; the next is whole.
    let srv = TestServer::start(&p, Mode::DropRangeOnce(1000));
    let (h, b) = get(&srv.url("f"), Some("bytes=0-"));
    assert!(h.contains("206"), "{h}");
    assert_eq!(b, data);
    let (h, b) = get(&srv.url("f"), Some("bytes=100-50099"));
    assert!(h.contains("Connection: close"), "{h}");
    assert_eq!(b, &data[100..1100]);
    let (_, b) = get(&srv.url("f"), Some("bytes=100-50099"));
    assert_eq!(b, &data[100..50_100]);
    drop(srv);

    // Honours Range for the first request, then answers 200.
    let srv = TestServer::start(&p, Mode::IgnoreRangeAfter(1));
    let (h, _) = get(&srv.url("f"), Some("bytes=10-19"));
    assert!(h.contains("206"), "{h}");
    let (h, b) = get(&srv.url("f"), Some("bytes=10-19"));
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert_eq!(b, data);
}
