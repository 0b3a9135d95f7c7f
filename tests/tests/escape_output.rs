//! Strings from outside never reach the terminal raw (issue 11, item 9): a
//! feed's signature key id, a feed's release URL, an image header's version
//! field, carrying an escape sequence (`ESC [31m`, an OSC title), a C1
//! control or a bidi override, are printed escaped (`\u{1b}`) in human
//! output, on stdout and stderr alike. The feed is served by the real test
//! server on 127.0.0.1 (tests/src/feedsrv.rs); the commands run the real
//! binary on a real disk image.
//!
//! The oracle, [`assert_no_raw_controls`], looks at the bytes and is
//! independent of the code under test.

use std::path::PathBuf;
use std::process::Output;

use slotctl_tests::feedenv::{feed_cmd, Env};
use slotctl_tests::installfix::{ok, stderr, Fix};

/// Panic if `bytes` (one stream of a command's output) hold a control
/// character other than the newline ending a line: C0, DEL, C1 (U+0080 to
/// U+009F), or a bidi control (U+061C, U+200E, U+200F, U+202A to U+202E,
/// U+2066 to U+2069).
fn assert_no_raw_controls(what: &str, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        assert!(
            !(b < 0x20 && b != b'\n' || b == 0x7f),
            "{what}: raw control byte {b:#04x} at {i}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let text = String::from_utf8_lossy(bytes);
    for c in text.chars() {
        let bad = ('\u{80}'..='\u{9f}').contains(&c)
            || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}')
            || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c);
        assert!(!bad, "{what}: raw {c:?} in {text:?}");
    }
}

fn assert_clean(out: &Output) {
    assert_no_raw_controls("stdout", &out.stdout);
    assert_no_raw_controls("stderr", &out.stderr);
}

/// Slot A good with 1.0.0; a feed directory served on 127.0.0.1 holding a
/// signed feed that offers 1.1.0 at `url` (the image is in the directory as
/// `images/gw.img`); the config pointing the agent at it.
fn env(url: &str) -> Env {
    let e = Env::new("");
    let (_, v2) = e.add_with("1.1.0", 1, &[], "zstd", Some(url));
    std::fs::copy(&v2, e.www.join("images/gw.img")).unwrap();
    e.sign();
    e
}

const HOSTILE_KEYID: &str = "\u{1b}[31mevil\u{202e}";
const HOSTILE_KEYID_SHOWN: &str = "\\u{1b}[31mevil\\u{202e}";

#[test]
fn feed_key_id_with_an_escape_sequence_is_printed_escaped() {
    let e = env("images/gw.img");
    // The server's feed: its one signature now claims a hostile key id.
    let mut envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.feed()).unwrap()).unwrap();
    envelope["signatures"][0]["keyid"] = HOSTILE_KEYID.into();
    std::fs::write(e.feed(), serde_json::to_vec(&envelope).unwrap()).unwrap();
    assert!(std::fs::read(e.feed())
        .unwrap()
        .windows(2)
        .all(|w| w != b"\x1b["));

    for cmd in ["check", "update"] {
        let before = e.fix.disk_bytes();
        let out = e.run(&[cmd]);
        assert_clean(&out);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{cmd}: {err}");
        assert_eq!(err.lines().count(), 1, "{cmd}: {err}");
        assert!(
            err.starts_with("slotctl: error: ")
                && err.contains(&format!("untrusted keys: {HOSTILE_KEYID_SHOWN}")),
            "{cmd}: {err}"
        );
        assert!(e.fix.disk_bytes() == before, "{cmd} changed the disk");
    }
    // The feed file itself, shown.
    let out = ok(feed_cmd(&["show"], &e.feed()));
    assert_clean(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("  signed by {HOSTILE_KEYID_SHOWN}\n")),
        "{text}"
    );
    // JSON output is serde's: the same string, escaped the JSON way (C0
    // controls as \u001b; JSON leaves DEL, C1 and bidi characters as they
    // are, and so does slotctl: JSON is for programs).
    let out = ok(feed_cmd(&["show", "--json"], &e.feed()));
    assert!(
        !out.stdout.iter().any(|&b| b < 0x20 && b != b'\n'),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signatures"][0]["keyid"], HOSTILE_KEYID);
}

#[test]
fn feed_release_url_with_control_characters_is_printed_escaped() {
    // A signed feed (the key is trusted) whose release URL sets the
    // terminal's title (OSC 0 ... BEL) and carries a C1 CSI.
    let url = "images/gw.img?\u{1b}]0;pwned\u{7}\u{9b}31m";
    let e = env(url);
    let out = ok(feed_cmd(&["show"], &e.feed()));
    assert_clean(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gw.img?\\u{1b}]0;pwned\\u{7}\\u{9b}31m"),
        "{text}"
    );
    for cmd in ["check", "update"] {
        let before = e.fix.disk_bytes();
        let out = e.run(&[cmd]);
        assert_clean(&out);
        if cmd == "update" {
            assert!(!out.status.success(), "{}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains("\\u{1b}]0;pwned"), "{err}");
        }
        assert!(e.fix.disk_bytes() == before, "{cmd} changed the disk");
    }
}

/// An image whose header's version field (5 bytes of it) is replaced by
/// `bad`: the signature no longer verifies and the field is not a semantic
/// version, so every command refuses it, and the refusal quotes the field.
fn hostile_version_image(f: &Fix, bad: &str) -> PathBuf {
    assert_eq!(bad.len(), 5);
    let r = f.payload("root-hv", 100_000, 3);
    let img = f.pack(
        "hv.img",
        "2.0.0-abcde",
        1,
        &[("BOOT", &f.boot_payload()), ("ROOT", &r)],
        "none",
    );
    let mut bytes = std::fs::read(&img).unwrap();
    let at = bytes
        .windows(11)
        .position(|w| w == b"2.0.0-abcde")
        .expect("the version field in the header");
    bytes[at + 6..at + 11].copy_from_slice(bad.as_bytes());
    let out = f.path("hostile.img");
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn image_header_strings_with_control_characters_are_printed_escaped() {
    let f = Fix::provisioned("1.0.0", 1);
    let pubkey = f.keyring.join("dev.pub");
    for (bad, shown) in [
        ("\u{1b}[31m", "\\u{1b}[31m"),
        ("\u{202e}ab", "\\u{202e}ab"),
        ("\u{9b}31m", "\\u{9b}31m"),
        ("a\rb\x7fc", "a\\u{d}b\\u{7f}c"),
    ] {
        let img = hostile_version_image(&f, bad);
        let img = img.to_str().unwrap();
        let runs: [(&str, Vec<&str>); 4] = [
            ("image info", vec!["image", "info", img]),
            (
                "image info --pubkey",
                vec!["image", "info", "--pubkey", pubkey.to_str().unwrap(), img],
            ),
            (
                "image verify",
                vec!["image", "verify", "--pubkey", pubkey.to_str().unwrap(), img],
            ),
            ("install", vec!["install", "--booted", "A", img]),
        ];
        for (what, args) in runs {
            let before = f.disk_bytes();
            let out = f.run(&args);
            assert_clean(&out);
            let err = stderr(&out);
            assert!(!out.status.success(), "{what} {bad:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{what} {bad:?}: {err}");
            assert!(err.starts_with("slotctl: error: "), "{what} {bad:?}: {err}");
            if what.starts_with("image info") {
                // info parses the header untrusted: the refusal quotes
                // the field, escaped.
                assert!(
                    err.contains(&format!("2.0.0-{shown}")),
                    "{what} {bad:?}: {err}"
                );
            }
            assert!(f.disk_bytes() == before, "{what} changed the disk");
        }
    }
}
