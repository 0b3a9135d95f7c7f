//! The signed feed and its images served by a real web server from Debian
//! (nginx 1.22, tests/src/nginx.rs), as a device meets them behind a CDN
//! (issue 15): `slotctl update` over Range requests, with the image's ETag
//! sent back as If-Range, on one kept-alive connection; a transfer dropped
//! in the middle of the body resumed from where it stopped; and an image
//! replaced on the server between the drop and the resume refused at once
//! (the ETag changed) with the booted slot untouched.

use slotctl_tests::feedenv::Env;
use slotctl_tests::installfix::{ok, stderr};
use slotctl_tests::nginx::{CutProxy, LogLine, Nginx};

/// An agent environment (slot A holds 1.0.0) whose feed, with 1.1.0 in it,
/// nginx serves, through `via` when given.
fn env_behind_nginx(via_proxy: bool) -> (Env, Nginx, Option<CutProxy>, std::path::PathBuf) {
    let env = Env::new("");
    let root = env.add("1.1.0", 1, &[]);
    env.sign();
    let ngx = Nginx::start(&env.www, &env.fix.path("nginx"));
    let proxy = via_proxy.then(|| CutProxy::start(ngx.addr));
    let feed_url = match &proxy {
        Some(p) => p.url("feed.json"),
        None => ngx.url("feed.json"),
    };
    let cfg = std::fs::read_to_string(&env.fix.config).unwrap();
    let cfg = cfg.replace(&env.srv.url("feed.json"), &feed_url);
    assert!(cfg.contains(&feed_url));
    std::fs::write(&env.fix.config, cfg).unwrap();
    (env, ngx, proxy, root)
}

fn image_requests(ngx: &Nginx) -> Vec<LogLine> {
    ngx.log()
        .into_iter()
        .filter(|l| l.path == "/images/gw-1.1.0.img")
        .collect()
}

#[test]
fn update_from_nginx_uses_ranges_if_range_and_one_connection() {
    let (env, ngx, _, root) = env_behind_nginx(false);
    let out = ok(env.run(&["update"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("updating from 1.0.0 to 1.1.0"), "{text}");
    env.fix.assert_partition_holds("B", "ROOT", &root);
    assert_eq!(env.fix.flags("B"), (2, 3, false));
    assert_eq!(env.fix.flags("A"), (1, 0, true));

    let feed: Vec<LogLine> = ngx
        .log()
        .into_iter()
        .filter(|l| l.path == "/feed.json")
        .collect();
    assert!(!feed.is_empty() && feed.iter().all(|l| l.status == 200 || l.status == 206));
    let img = image_requests(&ngx);
    let size = std::fs::metadata(env.www.join("images/gw-1.1.0.img"))
        .unwrap()
        .len();
    // The probe, then the rest: two Range requests answered 206, on one
    // kept-alive connection (the second is its second request), the
    // second guarded by the first answer's ETag.
    assert_eq!(img.len(), 2, "{img:#?}");
    assert_eq!(img[0].range, "bytes=0-65535");
    assert_eq!(img[1].range, "bytes=65536-");
    assert!(img.iter().all(|l| l.status == 206), "{img:#?}");
    assert!(
        img[0].etag.starts_with('"') && img[0].etag.len() > 2,
        "{img:#?}"
    );
    assert_eq!(
        img[0].if_range, "-",
        "the first request has no validator yet"
    );
    assert_eq!(img[1].if_range, img[0].etag);
    assert_eq!(
        img[1].connection, img[0].connection,
        "one connection: {img:#?}"
    );
    assert_eq!(img[1].nth, img[0].nth + 1);
    // Every byte of the image was sent once.
    assert_eq!(img[0].bytes + img[1].bytes, size);
}

#[test]
fn a_transfer_dropped_mid_body_resumes_where_it_stopped() {
    let (env, ngx, proxy, root) = env_behind_nginx(true);
    let proxy = proxy.unwrap();
    // The image is about 530 kB (half its ROOT is noise): drop its
    // connection 300,000 bytes in.
    proxy.cut_once_after(300_000, Box::new(|| {}));
    let out = ok(env.run(&["update"]));
    assert_eq!(*proxy.cuts.lock().unwrap(), 1, "the connection was dropped");
    let err = stderr(&out);
    assert!(err.contains("retrying from byte"), "{err}");
    env.fix.assert_partition_holds("B", "ROOT", &root);
    assert_eq!(env.fix.flags("B"), (2, 3, false));

    let img = image_requests(&ngx);
    let size = std::fs::metadata(env.www.join("images/gw-1.1.0.img"))
        .unwrap()
        .len();
    assert_eq!(img.len(), 3, "probe, dropped body, resume: {img:#?}");
    let resume = &img[2];
    let from: u64 = resume
        .range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("resume range {:?}", resume.range));
    // It resumed past what the dropped connection delivered, not from 0 or
    // 65536, with the ETag as If-Range, and nginx answered 206 for the rest.
    assert!(from > 200_000 && from < size, "resumed from {from}");
    assert_eq!(resume.status, 206);
    assert_eq!(resume.if_range, img[0].etag);
    assert_eq!(resume.bytes, size - from);
}

#[test]
fn an_image_replaced_between_the_drop_and_the_resume_is_refused_at_once() {
    let (env, ngx, proxy, _) = env_behind_nginx(true);
    let proxy = proxy.unwrap();
    // At the drop, the server's file becomes another (longer) image: a
    // new ETag. nginx answers the If-Range resume with 200 and the whole
    // new file, which slotctl refuses before reading on.
    let served = env.www.join("images/gw-1.1.0.img");
    let other = env.fix.path("other.img");
    let mut bytes = std::fs::read(&served).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&other, bytes).unwrap();
    let s = served.clone();
    proxy.cut_once_after(
        300_000,
        Box::new(move || std::fs::rename(&other, &s).unwrap()),
    );
    let a_before = env.fix.read_partition("A", "ROOT");
    let out = env.run(&["update"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("the file changed on the server during the download"),
        "{err}"
    );
    // Nothing more was read than the 200's head: one request after the drop.
    let img = image_requests(&ngx);
    assert_eq!(img.len(), 3, "{img:#?}");
    assert_eq!(img[2].status, 200);
    assert_ne!(img[2].etag, img[0].etag);
    // The booted slot is untouched and boots next; B is not bootable.
    assert_eq!(env.fix.read_partition("A", "ROOT"), a_before);
    assert_eq!(env.fix.flags("A"), (2, 0, true));
    let (p, _, s) = env.fix.flags("B");
    assert!(p == 0 && !s, "slot B must not be bootable");
}
