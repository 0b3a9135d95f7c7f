//! The CI side of the feed: `slotctl feed init | add | pull | sign | show`,
//! with openssl as an independent verifier of the signatures.

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use slotctl_tests::installfix::{ok, stderr, Fix, COMPATIBLE};
use slotctl_tests::{require_tool, run_slotctl};

fn feed(args: &[&str], file: &Path) -> Output {
    let mut v: Vec<std::ffi::OsString> = vec!["feed".into()];
    v.extend(args.iter().map(|a| a.into()));
    v.push("--feed".into());
    v.push(file.into());
    run_slotctl(v)
}

fn envelope(file: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

fn doc(file: &Path) -> Value {
    serde_json::from_str(envelope(file)["signed"].as_str().unwrap()).unwrap()
}

fn refused(out: Output, what: &str) {
    let err = stderr(&out);
    assert!(!out.status.success(), "expected a refusal: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(what), "expected {what:?} in: {err}");
}

/// openssl verifies signature `i` of the feed with public key `pubkey`.
fn openssl_verifies(file: &Path, i: usize, pubkey: &Path, dir: &Path) -> bool {
    let env = envelope(file);
    let mut msg = b"slotctl-feed-v1\0".to_vec();
    msg.extend_from_slice(env["signed"].as_str().unwrap().as_bytes());
    let hex = env["signatures"][i]["sig"].as_str().unwrap();
    let sig: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|j| u8::from_str_radix(&hex[j..j + 2], 16).unwrap())
        .collect();
    std::fs::write(dir.join("msg"), msg).unwrap();
    std::fs::write(dir.join("sig"), sig).unwrap();
    std::process::Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
        .arg(pubkey)
        .arg("-in")
        .arg(dir.join("msg"))
        .arg("-sigfile")
        .arg(dir.join("sig"))
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn feed_lifecycle_signed_as_openssl_sees_it() {
    require_tool("openssl");
    let fix = Fix::new();
    let f = fix.path("feed.json");
    let root = fix.payload("root", 1 << 20, 3);
    let img = fix.pack(
        "gw.img",
        "2.0.0",
        4,
        &[("BOOT", &fix.boot_payload()), ("ROOT", &root)],
        "none",
    );
    ok(feed(&["init", "--compatible", COMPATIBLE], &f));
    ok(feed(
        &[
            "add",
            img.to_str().unwrap(),
            "--url",
            "images/gw.img",
            "--start",
            "2030-01-01T00:00:00Z",
            "--wave",
            "0:5",
            "--wave",
            "6h:25",
            "--wave",
            "2d:100",
        ],
        &f,
    ));
    let d = doc(&f);
    let r = &d["releases"][0];
    assert_eq!(r["version"], "2.0.0");
    assert_eq!(r["rollback_index"], 4);
    assert_eq!(r["size"], std::fs::metadata(&img).unwrap().len());
    assert_eq!(r["rollout"][1]["start"], "2030-01-01T06:00:00Z");
    assert_eq!(r["rollout"][2]["start"], "2030-01-03T00:00:00Z");
    assert_eq!(r["rollout"][2]["percent"], 100);
    let sha = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .arg(&img)
        .output()
        .unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(
        r["sha256"].as_str().unwrap(),
        sha.split(' ').next().unwrap()
    );
    assert_eq!(envelope(&f)["signatures"].as_array().unwrap().len(), 0);

    ok(feed(&["sign", "--key", fix.key.to_str().unwrap()], &f));
    assert_eq!(doc(&f)["serial"], 1);
    assert!(openssl_verifies(
        &f,
        0,
        &fix.path("private/dev.pub"),
        fix.dir.path()
    ));
    // A second key adds its signature to the same round.
    ok(run_slotctl([
        "keygen",
        "--out",
        fix.path("k2").to_str().unwrap(),
    ]));
    let pem = std::fs::read_to_string(fix.path("k2.key")).unwrap();
    let out = slotctl_tests::slotctl()
        .args(["feed", "sign", "--feed"])
        .arg(&f)
        .env("SLOTCTL_SIGNING_KEY", pem)
        .output()
        .unwrap();
    ok(out);
    assert_eq!(doc(&f)["serial"], 1);
    assert!(openssl_verifies(
        &f,
        0,
        &fix.path("private/dev.pub"),
        fix.dir.path()
    ));
    assert!(openssl_verifies(&f, 1, &fix.path("k2.pub"), fix.dir.path()));
    // openssl refuses the signature under the wrong key.
    assert!(!openssl_verifies(
        &f,
        1,
        &fix.path("private/dev.pub"),
        fix.dir.path()
    ));
    let show = ok(run_slotctl([
        "feed",
        "show",
        "--json",
        "--feed",
        f.to_str().unwrap(),
        "--keyring",
        fix.keyring.to_str().unwrap(),
    ]));
    let show: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(show["verified_by"].as_array().unwrap().len(), 1);
    assert_eq!(show["signatures"].as_array().unwrap().len(), 2);
    // Renewing starts a new round: new serial, one signature.
    ok(feed(
        &["sign", "--renew", "--key", fix.key.to_str().unwrap()],
        &f,
    ));
    assert_eq!(doc(&f)["serial"], 2);
    assert_eq!(envelope(&f)["signatures"].as_array().unwrap().len(), 1);
    // Pulling drops the signatures until the next signing round.
    ok(feed(&["pull", "2.0.0"], &f));
    assert!(doc(&f)["releases"][0]["pulled"].is_string());
    assert_eq!(envelope(&f)["signatures"].as_array().unwrap().len(), 0);
    ok(feed(&["sign", "--key", fix.key.to_str().unwrap()], &f));
    assert_eq!(doc(&f)["serial"], 3);
}

#[test]
fn feed_commands_refuse_bad_input() {
    let fix = Fix::new();
    let f = fix.path("feed.json");
    let root = fix.payload("root", 4096, 3);
    let img = fix.pack(
        "gw.img",
        "2.0.0",
        4,
        &[("BOOT", &fix.boot_payload()), ("ROOT", &root)],
        "none",
    );
    let other = fix.pack_with(
        "other.img",
        "2.1.0",
        4,
        "another-board",
        &[("BOOT", &fix.boot_payload()), ("ROOT", &root)],
        "none",
        &fix.key,
    );
    refused(
        feed(&["sign", "--key", fix.key.to_str().unwrap()], &f),
        "cannot read feed",
    );
    ok(feed(&["init", "--compatible", COMPATIBLE], &f));
    refused(feed(&["init", "--compatible", COMPATIBLE], &f), "exists");
    // A refusal by policy (compatible): exit 3, as README's table says.
    let out = feed(&["add", other.to_str().unwrap(), "--url", "o.img"], &f);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    refused(out, "is for compatible \"another-board\"");
    for (wave, what) in [
        ("10", "expected OFFSET:PERCENT"),
        ("1w:10", "bad offset"),
        ("0:0", "percent must be 1 to 100"),
        ("0:101", "percent must be 1 to 100"),
    ] {
        refused(
            feed(
                &[
                    "add",
                    img.to_str().unwrap(),
                    "--url",
                    "g.img",
                    "--wave",
                    wave,
                ],
                &f,
            ),
            what,
        );
    }
    refused(
        feed(
            &[
                "add",
                img.to_str().unwrap(),
                "--url",
                "g.img",
                "--wave",
                "0:50",
                "--wave",
                "1h:50",
            ],
            &f,
        ),
        "waves must grow",
    );
    refused(
        feed(
            &[
                "add",
                img.to_str().unwrap(),
                "--url",
                "g.img",
                "--start",
                "tomorrow",
            ],
            &f,
        ),
        "--start",
    );
    ok(feed(&["add", img.to_str().unwrap(), "--url", "g.img"], &f));
    refused(
        feed(&["add", img.to_str().unwrap(), "--url", "g.img"], &f),
        "already lists version 2.0.0",
    );
    refused(feed(&["pull", "9.9.9"], &f), "no version 9.9.9");
    ok(feed(&["sign", "--key", fix.key.to_str().unwrap()], &f));
    refused(
        feed(&["sign", "--key", fix.key.to_str().unwrap()], &f),
        "already signed by key",
    );
    let out = slotctl_tests::slotctl()
        .args(["feed", "sign", "--renew", "--feed"])
        .arg(&f)
        .env_remove("SLOTCTL_SIGNING_KEY")
        .output()
        .unwrap();
    refused(out, "no signing key");
    refused(
        feed(&["sign", "--renew", "--key", root.to_str().unwrap()], &f),
        "root",
    );
    refused(
        feed(
            &[
                "sign",
                "--renew",
                "--key",
                fix.key.to_str().unwrap(),
                "--expires-in",
                "0",
            ],
            &f,
        ),
        "--expires-in",
    );
    // A feed that is not JSON is named as such.
    std::fs::write(&f, b"not json").unwrap();
    refused(feed(&["pull", "2.0.0"], &f), "not a feed envelope");
}
