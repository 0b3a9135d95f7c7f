//! `slotctl update` installs exactly the image the feed names, downloading
//! it once (issue 11, item 1; docs/feed.md "slotctl update").
//!
//! The attack: a server (or anyone in the path) that serves the feed's image
//! on one GET and another image signed by the same key on another. The
//! defence: one GET; the signed header (SHA-256 over header and signature
//! block, `header_sha256` in the feed) is checked before any write, and the
//! size and whole-image SHA-256 before the slot record and the activation.
//! Each test below runs the real binary against a real HTTP server on
//! 127.0.0.1 that counts the GETs and the body bytes it sent.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use slotctl_tests::feedenv::{assert_refused, feed_cmd, Env};
use slotctl_tests::http::{Mode as HttpMode, TestServer};
use slotctl_tests::installfix::{assert_status_unchanged_but_target, error_line, ok, BOOT_SIZE};
use slotctl_tests::require_tool;

const IMG: &str = "/images/gw-1.1.0.img";

/// The image's first bytes: its header and signature block (H at byte 8,
/// S at byte H + 8; docs/image-format.md), what a slot record stores.
fn image_record(img: &Path) -> Vec<u8> {
    let b = std::fs::read(img).unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let h = u32_at(8);
    let s = u32_at(h + 8);
    b[..h + s].to_vec()
}

/// The blob of a slot's record (docs/slot-record.md: the last 64 KiB of the
/// slot's BOOT partition, magic `SLOTREC\0`, blob length at byte 12, blob
/// from byte 64), or None when the record is erased.
fn slot_record(env: &Env, slot: &str) -> Option<Vec<u8>> {
    let boot = env.fix.read_partition(slot, "BOOT");
    assert_eq!(boot.len() as u64, BOOT_SIZE);
    let rec = &boot[boot.len() - 64 * 1024..];
    if &rec[..8] != b"SLOTREC\0" {
        return None;
    }
    let len = u32::from_le_bytes(rec[12..16].try_into().unwrap()) as usize;
    Some(rec[64..64 + len].to_vec())
}

/// SHA-256 by the real `openssl dgst`, lowercase hex.
fn openssl_sha256(env: &Env, bytes: &[u8]) -> String {
    let p = env.fix.path("to-hash");
    std::fs::write(&p, bytes).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Slot B holds exactly `img` (its record is the image's header and
/// signature block, its ROOT the raw payload) and boots next; A is the
/// fallback.
fn assert_b_holds(env: &Env, img: &Path, root: &Path) {
    assert!(
        slot_record(env, "B").as_deref() == Some(&image_record(img)[..]),
        "slot B's record is not {}'s header",
        img.display()
    );
    env.fix.assert_partition_holds("B", "ROOT", root);
    assert_eq!(env.fix.flags("B"), (2, 3, false));
    assert_eq!(env.fix.flags("A"), (1, 0, true));
}

/// Another image signed by the same key: `version`, rollback index 1,
/// other ROOT bytes.
fn evil_image(env: &Env, version: &str) -> std::path::PathBuf {
    let r = env.fix.payload("root-evil", 1 << 20, 99);
    env.fix.pack(
        &format!("evil-{version}.img"),
        version,
        1,
        &[("BOOT", &env.fix.boot_payload()), ("ROOT", &r)],
        "zstd",
    )
}

/// The swap attack: the first GET of the image gets the feed's image, any
/// later one `evil`. What is activated must be the feed's image.
fn swap_attack(evil_version: &str) {
    let env = Env::new("");
    let root = env.add("1.1.0", 1, &[]);
    env.sign();
    let good = env.fix.path("gw-1.1.0.img");
    let evil = evil_image(&env, evil_version);
    env.srv.swap_after(IMG, 1, &evil);
    let out = ok(env.run(&["update"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("installed 1.1.0 into slot B"), "{text}");
    assert_b_holds(&env, &good, &root);
    assert_eq!(env.srv.gets(IMG), 1, "{:?}", env.srv.requests());
    assert_eq!(env.state()["pending"]["version"], "1.1.0");
}

#[test]
fn swap_on_a_second_get_same_version_does_not_get_activated() {
    swap_attack("1.1.0");
}

#[test]
fn swap_on_a_second_get_other_version_does_not_get_activated() {
    swap_attack("1.0.5");
}

#[test]
fn update_downloads_the_image_once() {
    let env = Env::new("");
    let (root, img) = env.add_with("1.1.0", 1, &[], "zstd", None);
    env.sign();
    let size = std::fs::metadata(&img).unwrap().len();
    ok(env.run(&["update"]));
    assert_b_holds(&env, &img, &root);
    assert_eq!(env.srv.gets(IMG), 1, "{:?}", env.srv.requests());
    assert_eq!(env.srv.gets("/feed.json"), 1, "{:?}", env.srv.requests());
    let sent = env.srv.bytes_sent(IMG);
    println!("image {size} bytes; server sent {sent} body bytes in 1 GET");
    assert!(sent <= size, "sent {sent} bytes for a {size}-byte image");
    assert_eq!(sent, size);
}

/// The image served by tests/src/http.rs's server (Range support, faults),
/// named in the feed by its absolute URL.
fn resumed_update(mode_of: impl Fn(u64) -> HttpMode, resent: impl Fn(u64) -> u64) {
    let env = Env::new("");
    let img = env.fix.path("gw-1.1.0.img");
    let root = env.fix.payload("root-1.1.0", 1 << 20, 7);
    env.fix.pack(
        "gw-1.1.0.img",
        "1.1.0",
        1,
        &[("BOOT", &env.fix.boot_payload()), ("ROOT", &root)],
        "none",
    );
    let size = std::fs::metadata(&img).unwrap().len();
    let drop_at = size / 3;
    let srv = TestServer::start(&img, mode_of(drop_at));
    let url = srv.url("gw-1.1.0.img");
    ok(feed_cmd(
        &["add", img.to_str().unwrap(), "--url", &url],
        &env.feed(),
    ));
    env.sign();
    ok(env.run(&["update"]));
    assert_b_holds(&env, &img, &root);
    let reqs = srv.requests();
    // The first request is the probe (64 KiB); a server that honours
    // Range answers it with 206 and the stream continues from its end (one
    // more request, not a resume), one that ignores Range sends the whole
    // image; then the one resume.
    let honours = reqs[0].status == 206;
    let want = if honours { 3 } else { 2 };
    assert_eq!(reqs.len(), want, "probe, continuation, resume: {reqs:?}");
    assert_eq!(reqs[0].range.as_deref(), Some("bytes=0-65535"), "{reqs:?}");
    if honours {
        assert_eq!(reqs[1].range.as_deref(), Some("bytes=65536-"), "{reqs:?}");
    }
    assert_eq!(
        reqs[want - 1].range.as_deref(),
        Some(format!("bytes={drop_at}-").as_str())
    );
    let sent = srv.body_bytes_sent();
    println!(
        "image {size} bytes; dropped at {drop_at}; server sent {sent} body bytes over {} requests",
        reqs.len()
    );
    assert!(sent <= size + resent(drop_at), "sent {sent}");
    assert_eq!(sent, size + resent(drop_at));
}

#[test]
fn resumed_download_sends_the_image_once_plus_what_resumes_resend() {
    // A resume with Range: nothing is sent twice.
    resumed_update(HttpMode::DropOnce, |_| 0);
    // A server that ignores Range re-sends the first part; the install
    // still reads (and hashes) each image byte once.
    resumed_update(HttpMode::IgnoreRangeDropOnce, |d| d);
}

#[test]
fn another_image_on_the_only_get_is_refused_before_any_write() {
    let env = Env::new("");
    let (root, good) = env.add_with("1.1.0", 1, &[], "zstd", None);
    env.sign();
    let served = env.www.join("images/gw-1.1.0.img");
    // Same key, version and rollback index, other ROOT bytes: its signed
    // header differs (the payload hash), refused before any write.
    std::fs::copy(evil_image(&env, "1.1.0"), &served).unwrap();
    assert_refused(&env, &["update"], "it is not the image the feed names");
    // The feed's image with one more signature (same header bytes, another
    // signature block): not the bytes the feed names either.
    let resigned = env.fix.path("resigned.img");
    std::fs::copy(&good, &resigned).unwrap();
    ok(slotctl_tests::run_slotctl([
        "keygen",
        "--out",
        env.fix.path("other").to_str().unwrap(),
    ]));
    ok(slotctl_tests::run_slotctl([
        "image",
        "sign",
        "--key",
        env.fix.path("other.key").to_str().unwrap(),
        resigned.to_str().unwrap(),
    ]));
    assert_ne!(image_record(&resigned), image_record(&good));
    std::fs::copy(&resigned, &served).unwrap();
    assert_refused(&env, &["update"], "it is not the image the feed names");
    // Another version at the URL.
    std::fs::copy(evil_image(&env, "1.0.5"), &served).unwrap();
    assert_refused(&env, &["update"], "carries version 1.0.5");
    // Each of them was a single GET; then the feed's own image goes through.
    assert_eq!(env.srv.gets(IMG), 3);
    std::fs::copy(&good, &served).unwrap();
    ok(env.run(&["update"]));
    assert_b_holds(&env, &good, &root);
}

/// Run `update`, expect a refusal naming `what` after slot B was written:
/// exit 3, one error line, B invalidated with its record erased, A (the
/// booted slot) untouched, the next boot still A, nothing pending.
fn assert_refused_b_left_invalid(env: &Env, what: &str) {
    let before = env.fix.status(Some("A"));
    let a_root = env.fix.read_partition("A", "ROOT");
    let a_boot = env.fix.read_partition("A", "BOOT");
    let out = env.run(&["update"]);
    assert_eq!(out.status.code(), Some(3), "{}", error_line(&out));
    let line = error_line(&out);
    println!("refused, slot B left invalid: {line}");
    assert!(line.contains(what), "expected {what:?} in: {line}");
    assert!(line.contains("slot B"), "{line}");
    let after = env.fix.status(Some("A"));
    assert_status_unchanged_but_target(&before, &after, "B");
    assert_eq!(after["next"], before["next"], "{after}");
    assert_eq!(after["next"], "A", "{after}");
    assert_eq!(env.fix.flags("B"), (0, 0, false));
    assert!(slot_record(env, "B").is_none(), "slot B holds a record");
    assert!(env.fix.read_partition("A", "ROOT") == a_root);
    assert!(env.fix.read_partition("A", "BOOT") == a_boot);
    assert!(env.state()["pending"].is_null());
}

#[test]
fn other_payload_bytes_on_the_only_get_are_refused_before_the_record() {
    let env = Env::new("");
    let (root, good) = env.add_with("1.1.0", 1, &[], "none", None);
    env.sign();
    let served = env.www.join("images/gw-1.1.0.img");
    let bytes = std::fs::read(&good).unwrap();
    // Same header, one payload byte changed: the feed's pin of the whole
    // image catches it once the stream has ended, before the read-back
    // (which would refuse it against the payload's signed hash) and before
    // the record.
    let mut bad = bytes.clone();
    let n = bad.len() - 1;
    bad[n] ^= 0xff;
    std::fs::write(&served, &bad).unwrap();
    assert_refused_b_left_invalid(&env, "the feed says");
    // Longer than the feed says: the tee passes no byte past the size.
    let mut long = bytes.clone();
    long.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&served, &long).unwrap();
    assert_refused_b_left_invalid(&env, "longer than the");
    // Shorter.
    std::fs::write(&served, &bytes[..bytes.len() - 100]).unwrap();
    assert_refused_b_left_invalid(&env, "truncated");
    assert_eq!(env.srv.gets(IMG), 3);
    std::fs::write(&served, &bytes).unwrap();
    ok(env.run(&["update"]));
    assert_b_holds(&env, &good, &root);
}

/// Rewrite the feed's signed document with `edit` and sign it again.
fn edit_feed(env: &Env, edit: impl Fn(&mut Value)) {
    let mut envelope: Value = serde_json::from_slice(&std::fs::read(env.feed()).unwrap()).unwrap();
    let mut doc: Value = serde_json::from_str(envelope["signed"].as_str().unwrap()).unwrap();
    edit(&mut doc);
    envelope["signed"] = Value::String(doc.to_string());
    envelope["signatures"] = Value::Array(vec![]);
    std::fs::write(env.feed(), envelope.to_string()).unwrap();
    env.sign();
}

#[test]
fn whole_image_sha256_is_checked_before_the_record() {
    // The header matches the feed, but the feed's whole-image SHA-256 does
    // not match the bytes: the last check, after the payloads, refuses it.
    let env = Env::new("");
    env.add("1.1.0", 1, &[]);
    edit_feed(&env, |d| {
        d["releases"][0]["sha256"] = Value::String("0".repeat(64))
    });
    assert_refused_b_left_invalid(&env, &format!("the feed says {}", "0".repeat(64)));
}

#[test]
fn feed_add_fills_header_sha256_from_the_image() {
    require_tool("openssl");
    let env = Env::new("");
    let (_, img) = env.add_with("1.1.0", 1, &[], "zstd", None);
    let envelope: Value = serde_json::from_slice(&std::fs::read(env.feed()).unwrap()).unwrap();
    let doc: Value = serde_json::from_str(envelope["signed"].as_str().unwrap()).unwrap();
    let r = &doc["releases"][0];
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(r["size"], bytes.len() as u64);
    assert_eq!(r["sha256"], openssl_sha256(&env, &bytes).as_str());
    assert_eq!(
        r["header_sha256"],
        openssl_sha256(&env, &image_record(&img)).as_str()
    );
    env.sign();
    let c = env.check();
    assert_eq!(c["release"]["header_sha256"], r["header_sha256"], "{c}");
    // After the install, the slot record's blob hashes to the same value.
    ok(env.run(&["update"]));
    let rec = slot_record(&env, "B").unwrap();
    assert_eq!(r["header_sha256"], openssl_sha256(&env, &rec).as_str());
}

/// Replace the feed's signed document by `doc`, signed by the real
/// `openssl` with the fixture's key (docs/feed.md: ed25519 over
/// `slotctl-feed-v1\0` and the document's bytes).
fn openssl_sign_feed(env: &Env, doc: &Value) {
    let mut envelope: Value = serde_json::from_slice(&std::fs::read(env.feed()).unwrap()).unwrap();
    let signed = doc.to_string();
    let msg = env.fix.path("msg");
    let mut m = b"slotctl-feed-v1\0".to_vec();
    m.extend_from_slice(signed.as_bytes());
    std::fs::write(&msg, m).unwrap();
    let sig = env.fix.path("sig");
    let out = Command::new("openssl")
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(&env.fix.key)
        .arg("-in")
        .arg(&msg)
        .arg("-out")
        .arg(&sig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let sig: String = std::fs::read(&sig)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    envelope["signed"] = Value::String(signed);
    envelope["signatures"][0]["sig"] = Value::String(sig);
    std::fs::write(env.feed(), envelope.to_string()).unwrap();
}

#[test]
fn feed_without_header_sha256_is_refused() {
    require_tool("openssl");
    let env = Env::new("");
    env.add("1.1.0", 1, &[]);
    env.sign();
    let envelope: Value = serde_json::from_slice(&std::fs::read(env.feed()).unwrap()).unwrap();
    let doc: Value = serde_json::from_str(envelope["signed"].as_str().unwrap()).unwrap();
    // The release without the field (slotctl's own `feed` commands refuse
    // to sign such a document, so openssl signs it).
    let mut without = doc.clone();
    without["releases"][0]
        .as_object_mut()
        .unwrap()
        .remove("header_sha256");
    openssl_sign_feed(&env, &without);
    assert_refused(&env, &["check"], "missing field `header_sha256`");
    assert_refused(&env, &["update"], "missing field `header_sha256`");
    assert_eq!(env.srv.gets(IMG), 0);
    // The document with the field, signed the same way, is accepted: the
    // refusal was the missing field, not the openssl signature.
    let mut with = doc.clone();
    with["serial"] = Value::from(doc["serial"].as_u64().unwrap() + 1);
    openssl_sign_feed(&env, &with);
    assert_eq!(env.check()["update_available"], true);
}
