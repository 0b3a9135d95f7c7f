//! The delta way (docs/delta.md): `slotctl install URL` of a chunked image
//! from a real HTTP server on 127.0.0.1 (tests/src/http.rs) over a booted
//! slot that holds the previous version. The v1/v2 pair is a small
//! "filesystem image": 8 MiB of 4 KiB blocks, text-like and noise blocks,
//! zero runs; v2 changes, moves, zeroes and fills some blocks.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use serde_json::Value;
use slotctl_tests::http::{Mode, TestServer};
use slotctl_tests::installfix::*;
use slotctl_tests::{run_slotctl, slotctl};

const B: usize = 4096;
const ROOT_LEN: usize = 8 << 20;
/// The disk of these tests: a 12 MiB ROOT per slot.
const ROOT_PART: u64 = 12 << 20;

/// Deterministic noise.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Block `i` of v1: zeros (every 5th), noise (every 7th), else text.
fn v1_block(i: usize) -> Vec<u8> {
    if i % 5 == 0 {
        return vec![0; B];
    }
    if i % 7 == 0 {
        return noise(B, i as u64);
    }
    let mut t = Vec::with_capacity(B);
    let mut n = 0;
    while t.len() < B {
        t.extend_from_slice(format!("/usr/lib/file-{i}-{n}: line {n} of block {i}\n").as_bytes());
        n += 1;
    }
    t.truncate(B);
    t
}

/// Blocks of v2 that are neither in v1 nor zero.
const CHANGED: [usize; 12] = [3, 9, 100, 101, 102, 103, 640, 641, 1200, 1500, 1800, 2001];

fn versions() -> (Vec<u8>, Vec<u8>) {
    let v1: Vec<u8> = (0..ROOT_LEN / B).flat_map(v1_block).collect();
    let mut v2 = v1.clone();
    for &i in &CHANGED {
        v2[i * B..(i + 1) * B].copy_from_slice(&noise(B, 10_000 + i as u64));
    }
    // Moved: v2's block 50 is v1's block 51; zeroed: 52.
    v2.copy_within(51 * B..52 * B, 50 * B);
    v2[52 * B..53 * B].fill(0);
    (v1, v2)
}

struct Delta {
    f: Fix,
    v2_root: PathBuf,
    v2_img: PathBuf,
}

/// Slot A factory-provisioned with v1 (chunked, from a file: the stream
/// way), booted; v2 packed chunked. The disk has a 12 MiB ROOT per slot.
fn setup() -> Delta {
    let f = Fix::new();
    f.replace_disk(ROOT_PART);
    let (v1, v2) = versions();
    let v1_root = f.path("v1.root");
    let v2_root = f.path("v2.root");
    std::fs::write(&v1_root, v1).unwrap();
    std::fs::write(&v2_root, v2).unwrap();
    let boot = f.boot_payload();
    let v1_img = f.pack(
        "v1.img",
        "1.0.0",
        1,
        &[("BOOT", &boot), ("ROOT", &v1_root)],
        "chunked",
    );
    let v2_img = f.pack(
        "v2.img",
        "2.0.0",
        1,
        &[("BOOT", &boot), ("ROOT", &v2_root)],
        "chunked",
    );
    f.factory("A", &v1_img);
    Delta { f, v2_root, v2_img }
}

impl Delta {
    fn install(&self, src: &str) -> Output {
        self.f.run(&["install", "--booted", "A", "--json", src])
    }

    fn image_len(&self) -> u64 {
        std::fs::metadata(&self.v2_img).unwrap().len()
    }

    /// B holds v2 and verify-slot agrees.
    fn assert_v2_in_b(&self) {
        self.f.assert_partition_holds("B", "ROOT", &self.v2_root);
        self.f
            .assert_partition_holds("B", "BOOT", &self.f.boot_payload());
        ok(self.f.run(&["verify-slot", "B"]));
        assert_eq!(self.f.flags("B"), (2, 3, false));
    }

    /// Disk byte offset of ROOT block `i` in `slot`.
    fn root_block(&self, slot: &str, i: usize) -> u64 {
        self.f.partition(slot, "ROOT").0 + (i * B) as u64
    }

    /// Image byte range of v2's ROOT block `i`'s frame (read with
    /// image-format from the image file).
    fn frame(&self, i: u32) -> std::ops::Range<u64> {
        let file = std::fs::File::open(&self.v2_img).unwrap();
        let img = image_format::ImageReader::new(file)
            .unwrap()
            .into_untrusted()
            .unwrap();
        let p = img.header().payload("ROOT").unwrap().clone();
        let mut file = std::fs::File::open(&self.v2_img).unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(p.offset)).unwrap();
        let t = image_format::read_table(&p, file).unwrap();
        let r = t.stored_range(i);
        p.offset + r.start..p.offset + r.end
    }
}

/// The last line of `install --json`: its result.
fn result(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().expect("a result line");
    let v: Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(v["event"], "result", "{text}");
    v
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn delta_update_over_booted_v1_downloads_little_and_ends_as_a_full_install() {
    let d = setup();
    let srv = TestServer::start(&d.v2_img, Mode::Normal);
    let out = ok(d.install(&srv.url("v2.img")));
    let r = result(&out);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["method"], "delta", "{r}");
    d.assert_v2_in_b();
    // The counters: 12 changed blocks (and the BOOT payload, unchanged)
    // fetched; the moved block found in the booted slot; zeros never.
    assert_eq!(u(&r["fetched_blocks"]), CHANGED.len() as u64, "{r}");
    assert_eq!(u(&r["refetched_groups"]), 0, "{r}");
    let zero_blocks = |p: &std::path::Path| {
        std::fs::read(p)
            .unwrap()
            .chunks(B)
            .filter(|b| b.iter().all(|&x| x == 0))
            .count() as u64
            * B as u64
    };
    let zeros = zero_blocks(&d.v2_root) + zero_blocks(&d.f.boot_payload());
    assert_eq!(u(&r["reused"]["zero"]), zeros, "{r}");
    let boot_len = std::fs::metadata(d.f.boot_payload()).unwrap().len();
    assert_eq!(
        u(&r["reused"]["booted"]),
        ROOT_LEN as u64 + boot_len - zeros - (CHANGED.len() * B) as u64,
        "{r}"
    );
    // Every payload byte written once, none twice.
    assert_eq!(u(&r["written"]), ROOT_LEN as u64 + boot_len, "{r}");
    // What the client downloaded (HTTP body bytes it received): far below
    // the image.
    let down = u(&r["downloaded"]);
    // (The 64 KiB probe is read whole, a twentieth of this small image.)
    let image = d.image_len();
    assert!(down * 5 < image, "downloaded {down} of {image}");
    // What the server sent: the probe (`Range: bytes=0-65535`, 64 KiB:
    // the client reads the rest of it after the header, so its connection
    // stays alive) and the ranges, each read to its end: exactly what the
    // client counted, no slack (docs/delta.md, "The probe"; with the old
    // unbounded probe it was 1,437,035 bytes for 130,411 downloaded).
    let sent = srv.body_bytes_sent();
    assert_eq!(sent, down, "server sent {sent}, client got {down}");
    let asked = srv.requests();
    assert_eq!(asked[0].range.as_deref(), Some("bytes=0-65535"));
    // One connection for the probe and the ranges (kept alive).
    assert_eq!(srv.connections(), 1, "{asked:?}");

    // The same image installed whole from the file: the same slot.
    let full = setup();
    let out = ok(full.install(full.v2_img.to_str().unwrap()));
    assert_eq!(result(&out)["method"], "stream");
    let (off, _) = d.f.partition("B", "ROOT");
    let a = d.f.disk_bytes();
    let b = full.f.disk_bytes();
    let root = off as usize..off as usize + ROOT_LEN;
    assert!(a[root.clone()] == b[root], "delta and full install differ");
    assert_eq!(
        d.f.status(None)["slots"]["B"],
        full.f.status(None)["slots"]["B"]
    );
}

#[test]
fn human_summary_line_names_the_counters() {
    let d = setup();
    let srv = TestServer::start(&d.v2_img, Mode::Normal);
    let out = ok(d.f.run(&["install", "--booted", "A", &srv.url("v2.img")]));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("installed 2.0.0 into slot B"), "{text}");
    assert!(
        lines[1].starts_with("downloaded ")
            && lines[1].contains("image (delta); reused ")
            && lines[1].contains("from the booted slot")
            && lines[1].contains("of zeros; wrote 8.0 MiB"),
        "{text}"
    );
}

#[test]
fn a_tampered_frame_on_the_server_is_refused_before_it_is_written() {
    let d = setup();
    let booted_before = d.f.read_partition("A", "ROOT");
    let status_before = d.f.status(Some("A"));
    // Block 640 is new in v2: its frame is fetched. A byte in its middle.
    let fr = d.frame(640);
    let srv = TestServer::start(&d.v2_img, Mode::Tamper((fr.start + fr.end) / 2));
    let out = d.f.run(&["install", "--booted", "A", &srv.url("v2.img")]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("payload ROOT")
            && line.contains(&format!("raw offset {}", 640 * B))
            && line.contains("does not match the signed table"),
        "{line}"
    );
    assert_status_unchanged_but_target(&status_before, &d.f.status(Some("A")), "B");
    assert!(
        d.f.read_partition("A", "ROOT") == booted_before,
        "booted slot changed"
    );
    // Nothing of the tampered group's fetched blocks reached the target.
    let disk = d.f.disk_bytes();
    let at = d.root_block("B", 640) as usize;
    assert!(
        disk[at..at + 2 * B].iter().all(|&x| x == 0),
        "block 640 written"
    );
}

#[test]
fn a_flipped_byte_in_a_reused_booted_block_is_fetched_instead() {
    let d = setup();
    // Block 701 is text, the same in v1 and v2: reused from the booted
    // slot, unless the booted slot changed since its install.
    let at = d.root_block("A", 701) as usize + 17;
    let mut disk = d.f.disk_bytes();
    disk[at] ^= 0x20;
    std::fs::write(&d.f.disk, &disk).unwrap();
    let srv = TestServer::start(&d.v2_img, Mode::Normal);
    let out = ok(d.install(&srv.url("v2.img")));
    let r = result(&out);
    assert_eq!(r["method"], "delta");
    assert_eq!(u(&r["fetched_blocks"]), CHANGED.len() as u64 + 1, "{r}");
    d.assert_v2_in_b();
}

#[test]
fn a_dropped_range_resumes_without_downloading_anything_twice() {
    let base = setup();
    let srv = TestServer::start(&base.v2_img, Mode::Normal);
    let want = u(&result(&ok(base.install(&srv.url("v2.img"))))["downloaded"]);

    let d = setup();
    // The first bounded range after the probe (the BOOT payload's table)
    // is cut after 20 bytes; the client resumes it from byte 20.
    let srv = TestServer::start(&d.v2_img, Mode::DropRangeOnce(20));
    let out = ok(d.install(&srv.url("v2.img")));
    let r = result(&out);
    assert_eq!(r["method"], "delta");
    d.assert_v2_in_b();
    assert_eq!(u(&r["downloaded"]), want, "{r}");
    // The first bounded range `bytes=A-B` was cut after 20 bytes and asked
    // again from A+20, to the same end.
    let ranged: Vec<(u64, u64)> = srv
        .requests()
        .into_iter()
        .filter_map(|q| q.range)
        .filter_map(|r| {
            let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    assert!(ranged.len() >= 3, "{ranged:?}");
    assert_eq!(ranged[0], (0, 65535), "the probe: {ranged:?}");
    assert_eq!(ranged[2], (ranged[1].0 + 20, ranged[1].1), "{ranged:?}");
}

#[test]
fn a_server_that_ignores_range_installs_through_the_whole_stream() {
    let d = setup();
    let srv = TestServer::start(&d.v2_img, Mode::IgnoreRangeDropOnce(u64::MAX));
    let out = ok(d.install(&srv.url("v2.img")));
    let r = result(&out);
    assert_eq!(r["method"], "stream", "{r}");
    assert_eq!(u(&r["downloaded"]), d.image_len(), "{r}");
    assert_eq!(u(&r["reused"]["booted"]), 0, "{r}");
    d.assert_v2_in_b();
}

#[test]
fn file_and_stdin_install_a_chunked_image() {
    let d = setup();
    let out = ok(d.install(d.v2_img.to_str().unwrap()));
    let r = result(&out);
    assert_eq!(r["method"], "stream");
    assert_eq!(u(&r["downloaded"]), d.image_len());
    d.assert_v2_in_b();

    let d = setup();
    let mut child = slotctl()
        .args(d.f.args(&["install", "--booted", "A", "--json", "-"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut img = Vec::new();
    std::fs::File::open(&d.v2_img)
        .unwrap()
        .read_to_end(&mut img)
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &img).unwrap();
    let out = ok(child.wait_with_output().unwrap());
    assert_eq!(result(&out)["method"], "stream");
    d.assert_v2_in_b();
}

/// A feed (served on 127.0.0.1) whose one release is v2 at `url`, and the
/// config's `[agent]` pointing at it. Returns the feed server.
fn publish(d: &Delta, url: &str) -> slotctl_tests::feedsrv::FeedServer {
    let www = d.f.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let feed = www.join("feed.json");
    let fsrv =
        slotctl_tests::feedsrv::FeedServer::start(&www, slotctl_tests::feedsrv::Mode::Normal);
    let mut cfg = std::fs::read_to_string(&d.f.config).unwrap();
    cfg.push_str(&format!(
        "\n[agent]\nfeed_url = \"{}\"\nmax_feed_bytes = 65536\n",
        fsrv.url("feed.json")
    ));
    std::fs::write(&d.f.config, cfg).unwrap();
    let feed_cmd = |args: &[&str]| {
        let mut v: Vec<std::ffi::OsString> = vec!["feed".into()];
        v.extend(args.iter().map(|a| a.into()));
        v.push("--feed".into());
        v.push(feed.clone().into());
        ok(run_slotctl(v))
    };
    feed_cmd(&["init", "--compatible", COMPATIBLE]);
    feed_cmd(&["add", d.v2_img.to_str().unwrap(), "--url", url]);
    feed_cmd(&["sign", "--key", d.f.key.to_str().unwrap()]);
    fsrv
}

/// Without Range support on the image's server, `check --json` reports the
/// whole image, and `update` downloads it (the stream way).
#[test]
fn check_reports_the_whole_image_when_the_server_ignores_range() {
    let d = setup();
    let srv = TestServer::start(&d.v2_img, Mode::IgnoreRangeDropOnce(u64::MAX));
    let _fsrv = publish(&d, &srv.url("v2.img"));
    let out = ok(d.f.run(&["check", "--json", "--booted", "A"]));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u(&c["release"]["download_bytes"]), d.image_len(), "{c}");
    let out = ok(d.f.run(&["update", "--json", "--booted", "A"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(r["method"], "stream", "{text}");
    assert_eq!(u(&r["downloaded"]), d.image_len(), "{text}");
    d.assert_v2_in_b();
}

/// `check --json` reports the delta plan's bytes; `update` then downloads
/// that much (the agent environment: a feed naming the image by its URL on
/// a Range-honouring server).
#[test]
fn check_reports_download_bytes_and_update_downloads_them() {
    let d = setup();
    let srv = TestServer::start(&d.v2_img, Mode::Normal);
    let _fsrv = publish(&d, &srv.url("v2.img"));

    let out = ok(d.f.run(&["check", "--json", "--booted", "A"]));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    let planned = u(&c["release"]["download_bytes"]);
    // (The 64 KiB probe counts whole, a twentieth of this small image.)
    assert!(planned * 5 < d.image_len(), "{c}");

    let sent_before = srv.body_bytes_sent();
    let out = ok(d.f.run(&["update", "--json", "--booted", "A"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(r["method"], "delta", "{text}");
    let got = u(&r["downloaded"]);
    // The install reads exactly the header the plan counts, the tables and
    // the planned ranges.
    assert_eq!(
        got, planned,
        "check said {planned}, update downloaded {got}"
    );
    assert!(srv.body_bytes_sent() > sent_before);
    d.assert_v2_in_b();
}

/// On the delta way the image is never read to its end: what the stream
/// way finds there (bytes after the last payload) is found before any
/// write, from the server's total length, and refused with the disk as it
/// was.
#[test]
fn trailing_bytes_are_refused_before_any_write() {
    let d = setup();
    let longer = d.f.path("longer.img");
    let mut bytes = std::fs::read(&d.v2_img).unwrap();
    bytes.extend_from_slice(b"trailing");
    std::fs::write(&longer, bytes).unwrap();
    let srv = TestServer::start(&longer, Mode::Normal);
    d.f.assert_refused_unchanged(
        &["install", "--booted", "A", &srv.url("v2.img")],
        "trailing",
    );
}

/// `update` of a release whose image on the server is longer than the
/// feed's `size`: refused on the delta way before any write (the length
/// the server states is checked against the pin).
#[test]
fn update_refuses_a_server_length_other_than_the_pin_before_any_write() {
    let d = setup();
    let longer = d.f.path("longer.img");
    let mut bytes = std::fs::read(&d.v2_img).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&longer, bytes).unwrap();
    let srv = TestServer::start(&longer, Mode::Normal);
    // The feed names the real image (its size), the server serves more.
    let _fsrv = publish(&d, &srv.url("v2.img"));
    d.f.assert_refused_unchanged(&["update", "--booted", "A"], "the feed says");
}

/// The `--json` events of an install's stdout.
fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The install says what it will download once the plan is known, before
/// the first frame is fetched: the whole download (`download_bytes`, what
/// the result's `downloaded` then says), of which `received` (the 64 KiB
/// probe, holding the header, and the table frames) is already in.
#[test]
fn the_plan_event_says_the_download_before_the_fetch() {
    let d = setup();
    let srv = TestServer::start(&d.v2_img, Mode::Normal);
    let out = ok(d.install(&srv.url("v2.img")));
    let ev = events(&out);
    let plans: Vec<usize> = (0..ev.len())
        .filter(|&i| ev[i]["event"] == "plan")
        .collect();
    assert_eq!(plans.len(), 1, "{ev:?}");
    let at = plans[0];
    let plan = &ev[at];
    // After every booted-slot scan, before any fetch.
    let phase_at = |name: &str| {
        (0..ev.len())
            .filter(|&i| ev[i]["event"] == "phase" && ev[i]["phase"] == name)
            .collect::<Vec<_>>()
    };
    let scans = phase_at("scan");
    let fetches = phase_at("fetch");
    assert_eq!(scans.len(), 2, "BOOT and ROOT: {ev:?}");
    assert!(scans.iter().all(|&i| i < at), "{ev:?}");
    assert!(
        !fetches.is_empty() && fetches.iter().all(|&i| i > at),
        "{ev:?}"
    );

    let r = ev.last().unwrap();
    assert_eq!(r["method"], "delta", "{r}");
    // What it counts: the whole download, equal to what the install then
    // downloaded (nothing dropped or refetched here)...
    assert_eq!(plan["download_bytes"], r["downloaded"], "{plan} {r}");
    // ...of which, already in: the probe and the two table frames.
    let img = image_format::ImageReader::new(std::fs::File::open(&d.v2_img).unwrap())
        .unwrap()
        .into_untrusted()
        .unwrap();
    let tables: u64 = img
        .header()
        .payloads()
        .iter()
        .map(|p| p.chunked.as_ref().unwrap().table_stored_len)
        .sum();
    let probe = d.image_len().min(65_536);
    assert_eq!(u(&plan["received"]), probe + tables, "{plan}");
    // The frames still to come are what the fetch phases then moved.
    let fetch_total: u64 = fetches.iter().map(|&i| u(&ev[i]["total"])).sum();
    assert_eq!(
        u(&plan["download_bytes"]) - u(&plan["received"]),
        fetch_total,
        "{plan}"
    );
    assert_eq!(u(&plan["image_bytes"]), d.image_len());
    assert_eq!(plan["reused"], r["reused"], "{plan} {r}");
    d.assert_v2_in_b();

    // Human mode: one stderr line, before the result.
    let d = setup();
    let srv = TestServer::start(&d.v2_img, Mode::Normal);
    let out = ok(d.f.run(&["install", "--booted", "A", &srv.url("v2.img")]));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    let human = |n: &Value| slotctl::install::counters::human(u(n));
    assert_eq!(
        lines[0],
        format!(
            "slotctl: downloading {} of the {} image (delta; {} reused from the booted slot)",
            human(&plan["download_bytes"]),
            human(&plan["image_bytes"]),
            human(&plan["reused"]["booted"])
        )
    );
}

/// `check --json`'s `download_bytes` and the update's `plan` event count
/// the same thing, by the same code (`delta::download_total`).
#[test]
fn check_and_the_plan_event_agree() {
    let d = setup();
    let srv = TestServer::start(&d.v2_img, Mode::Normal);
    let _fsrv = publish(&d, &srv.url("v2.img"));
    let out = ok(d.f.run(&["check", "--json", "--booted", "A"]));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = ok(d.f.run(&["update", "--json", "--booted", "A"]));
    let ev = events(&out);
    let plan = ev
        .iter()
        .find(|e| e["event"] == "plan")
        .expect("a plan event");
    assert_eq!(
        plan["download_bytes"], c["release"]["download_bytes"],
        "{plan} {c}"
    );
    assert_eq!(plan["download_bytes"], ev.last().unwrap()["downloaded"]);
    d.assert_v2_in_b();
}
