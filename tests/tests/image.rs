//! `slotctl keygen` and `slotctl image ...` through the real binary, with
//! openssl and zstd as independent validators.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use slotctl_tests::image::{doc_openssl_script, keygen, ok, pack, refused, sh, write_noise};
use slotctl_tests::{require_tool, run_slotctl, slotctl};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// BOOT (zstd, compressible) and ROOT (none, random) parts in `dir`.
fn parts(dir: &Path) -> Vec<String> {
    std::fs::write(dir.join("boot.img"), b"kernel and initramfs ".repeat(5000)).unwrap();
    write_noise(&dir.join("root.img"), 300_000, 11);
    vec![
        format!("BOOT={}", dir.join("boot.img").display()),
        format!("ROOT:none={}", dir.join("root.img").display()),
    ]
}

fn openssl_key_id(dir: &Path, pubkey: &Path) -> String {
    let out = sh(
        &format!(
            "openssl pkey -pubin -in {} -outform DER | openssl dgst -sha256 -binary | head -c 8 | od -An -tx1 | tr -d ' \\n'",
            pubkey.display()
        ),
        dir,
    );
    ok(out, "openssl key id")
}

#[test]
fn keygen_writes_pkcs8_and_spki_that_openssl_reads() {
    require_tool("openssl");
    let d = tmp();
    let out = ok(
        run_slotctl(["keygen", "--out", d.path().join("rel").to_str().unwrap()]),
        "keygen",
    );
    let (key, public) = (d.path().join("rel.key"), d.path().join("rel.pub"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    // Key material is never printed.
    let body: String = key_text.lines().nth(1).unwrap().to_owned();
    assert!(!out.contains(&body));

    // openssl derives the same public key from our private key...
    let derived = ok(
        sh(
            &format!("openssl pkey -in {} -pubout", key.display()),
            d.path(),
        ),
        "openssl pkey",
    );
    assert_eq!(derived, std::fs::read_to_string(&public).unwrap());
    // ...reads our public key as ed25519...
    let text = ok(
        sh(
            &format!("openssl pkey -pubin -in {} -noout -text", public.display()),
            d.path(),
        ),
        "openssl pkey -pubin",
    );
    assert!(text.starts_with("ED25519 Public-Key:"), "{text}");
    // ...and computes the key id slotctl printed.
    let id = openssl_key_id(d.path(), &public);
    assert_eq!(id.len(), 16);
    assert!(out.contains(&format!("key id {id}")), "{out}");

    // Never overwrites a key.
    let again = run_slotctl(["keygen", "--out", d.path().join("rel").to_str().unwrap()]);
    let line = refused(again, 1);
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), key_text);
}

#[test]
fn openssl_script_from_the_doc_verifies_our_images_and_refuses_tampered_ones() {
    require_tool("openssl");
    require_tool("zstd");
    let d = tmp();
    let dir = d.path();
    let (k1, p1) = keygen(dir, "rel");
    // A key made by openssl signs too.
    ok(
        sh(
            "openssl genpkey -algorithm ed25519 -out ossl.key && openssl pkey -in ossl.key -pubout -out ossl.pub",
            dir,
        ),
        "openssl genpkey",
    );
    let img = dir.join("release.img");
    ok(
        pack(
            &[&k1, &dir.join("ossl.key")],
            &parts(dir),
            &img,
            &["--zstd-level", "5"],
        ),
        "pack",
    );
    std::fs::write(dir.join("verify.sh"), doc_openssl_script()).unwrap();

    for public in [&p1, &dir.join("ossl.pub")] {
        let out = ok(
            sh(
                &format!("sh verify.sh {} {}", img.display(), public.display()),
                dir,
            ),
            "doc script",
        );
        assert!(out.contains("payload BOOT: 105000 bytes"), "{out}");
        assert!(out.contains("payload ROOT: 300000 bytes"), "{out}");
        let id = openssl_key_id(dir, public);
        assert!(out.contains(&format!("image OK: signed by {id}")), "{out}");
        // slotctl agrees.
        ok(
            run_slotctl([
                "image",
                "verify",
                "--pubkey",
                public.to_str().unwrap(),
                img.to_str().unwrap(),
            ]),
            "slotctl verify",
        );
    }
    // An untrusted key: the script finds no signature.
    let (_, other) = keygen(dir, "other");
    let out = sh(
        &format!("sh verify.sh {} {}", img.display(), other.display()),
        dir,
    );
    assert!(!out.status.success());

    // Tampered header byte, payload byte, trailing byte: both refuse.
    let good = std::fs::read(&img).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut h = good.clone();
    h[40] ^= 0x01;
    cases.push(("header", h));
    let mut p = good.clone();
    let last = p.len() - 1000;
    p[last] ^= 0x80;
    cases.push(("payload", p));
    let mut t = good.clone();
    t.push(0);
    cases.push(("trailing", t));
    for (what, bytes) in cases {
        let bad = dir.join(format!("bad-{what}.img"));
        std::fs::write(&bad, bytes).unwrap();
        let out = sh(
            &format!("sh verify.sh {} {}", bad.display(), p1.display()),
            dir,
        );
        assert!(
            !out.status.success(),
            "doc script accepted a {what} tampering"
        );
        let line = refused(
            run_slotctl([
                "image",
                "verify",
                "--pubkey",
                p1.to_str().unwrap(),
                bad.to_str().unwrap(),
            ]),
            3,
        );
        assert!(line.contains(bad.to_str().unwrap()), "{line}");
    }
}

#[test]
fn openssl_verifies_the_header_signature_directly() {
    require_tool("openssl");
    let d = tmp();
    let dir = d.path();
    let (k, p) = keygen(dir, "rel");
    let img = dir.join("a.img");
    ok(pack(&[&k], &parts(dir), &img, &[]), "pack");
    let info = ok(
        run_slotctl(["--json", "image", "info", img.to_str().unwrap()]),
        "info",
    );
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    let h = v["header_len"].as_u64().unwrap();
    // header = first H bytes; signature 0 = 64 bytes at H + 16 + 8.
    let script = format!(
        "head -c {h} a.img > header.bin && tail -c +{} a.img | head -c 64 > sig.bin && \
         openssl pkeyutl -verify -pubin -inkey {} -rawin -in header.bin -sigfile sig.bin",
        h + 16 + 8 + 1,
        p.display()
    );
    let out = ok(sh(&script, dir), "openssl pkeyutl");
    assert!(out.contains("Signature Verified Successfully"), "{out}");
}

#[test]
fn signing_key_from_the_environment_is_never_printed() {
    let d = tmp();
    let dir = d.path();
    let (k, p) = keygen(dir, "ci");
    let pem = std::fs::read_to_string(&k).unwrap();
    std::fs::remove_file(&k).unwrap();
    let img = dir.join("env.img");
    let mut cmd = slotctl();
    cmd.args([
        "image",
        "pack",
        "--version",
        "2.0.0",
        "--compatible",
        "acme-gw",
    ])
    .args(["--rollback-index", "1", "-o", img.to_str().unwrap()])
    .arg("--part")
    .arg(format!("ROOT={}", dir.join("root.img").display()))
    .env("SLOTCTL_SIGNING_KEY", &pem);
    write_noise(&dir.join("root.img"), 10_000, 3);
    let out = cmd.output().unwrap();
    let body = pem.lines().nth(1).unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(body));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(body));
    ok(out, "pack with SLOTCTL_SIGNING_KEY");
    ok(
        run_slotctl([
            "image",
            "verify",
            "--pubkey",
            p.to_str().unwrap(),
            img.to_str().unwrap(),
        ]),
        "verify",
    );

    // A broken key in the environment: one line, no key material echoed.
    let mangled = pem.replace(&body[5..15], "AAAAAAAAAA");
    let out = slotctl()
        .args(["image", "sign", img.to_str().unwrap()])
        .env("SLOTCTL_SIGNING_KEY", &mangled)
        .output()
        .unwrap();
    let line = refused(out, 1);
    assert!(line.contains("SLOTCTL_SIGNING_KEY"), "{line}");
    assert!(
        !line.contains(&mangled.lines().nth(1).unwrap()[..20]),
        "{line}"
    );

    // No key at all.
    let out = slotctl()
        .args(["image", "sign", img.to_str().unwrap()])
        .env_remove("SLOTCTL_SIGNING_KEY")
        .output()
        .unwrap();
    let line = refused(out, 1);
    assert!(line.contains("no signing key"), "{line}");
}

#[test]
fn sign_adds_signatures_in_place_then_by_copy() {
    let d = tmp();
    let dir = d.path();
    let (k1, p1) = keygen(dir, "k1");
    let img = dir.join("s.img");
    ok(
        pack(&[&k1], &parts(dir), &img, &["--signature-room", "1"]),
        "pack",
    );
    let original = std::fs::read(&img).unwrap();
    let info: serde_json::Value = serde_json::from_str(&ok(
        run_slotctl(["--json", "image", "info", img.to_str().unwrap()]),
        "info",
    ))
    .unwrap();
    let h = info["header_len"].as_u64().unwrap() as usize;
    let room = info["signature_room"].as_u64().unwrap() as usize;
    assert!(room >= 1);

    let mut copied = false;
    let mut last_pub = p1.clone();
    for i in 2..=room + 1 {
        let (k, p) = keygen(dir, &format!("k{i}"));
        let out = ok(
            run_slotctl([
                "image",
                "sign",
                "--key",
                k.to_str().unwrap(),
                img.to_str().unwrap(),
            ]),
            "sign",
        );
        let now = std::fs::read(&img).unwrap();
        assert_eq!(&now[..h], &original[..h], "the signed header never changes");
        if i <= room {
            assert!(out.contains("(in place)"), "{out}");
            assert_eq!(now.len(), original.len());
        } else {
            assert!(
                out.contains("copied with a larger signature block"),
                "{out}"
            );
            assert!(now.len() > original.len());
            copied = true;
        }
        last_pub = p;
    }
    assert!(copied);
    for public in [&p1, &last_pub] {
        ok(
            run_slotctl([
                "image",
                "verify",
                "--pubkey",
                public.to_str().unwrap(),
                img.to_str().unwrap(),
            ]),
            "verify after sign",
        );
    }
    // A keyring directory with two signers meets a threshold of 2.
    let ring = dir.join("ring");
    std::fs::create_dir(&ring).unwrap();
    std::fs::copy(&p1, ring.join("a.pub")).unwrap();
    std::fs::copy(&last_pub, ring.join("b.pub")).unwrap();
    ok(
        run_slotctl([
            "image",
            "verify",
            "--keyring",
            ring.to_str().unwrap(),
            "--threshold",
            "2",
            img.to_str().unwrap(),
        ]),
        "threshold 2",
    );
    // Signing twice with one key is refused, and leaves the file as it was.
    let before = std::fs::read(&img).unwrap();
    let line = refused(
        run_slotctl([
            "image",
            "sign",
            "--key",
            k1.to_str().unwrap(),
            img.to_str().unwrap(),
        ]),
        3,
    );
    assert!(line.contains("duplicate signature"), "{line}");
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

#[test]
fn sign_refuses_an_image_whose_payload_does_not_match() {
    let d = tmp();
    let dir = d.path();
    let (k1, _) = keygen(dir, "k1");
    let (k2, _) = keygen(dir, "k2");
    let img = dir.join("x.img");
    ok(pack(&[&k1], &parts(dir), &img, &[]), "pack");
    let mut bytes = std::fs::read(&img).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    std::fs::write(&img, &bytes).unwrap();
    let line = refused(
        run_slotctl([
            "image",
            "sign",
            "--key",
            k2.to_str().unwrap(),
            img.to_str().unwrap(),
        ]),
        3,
    );
    assert!(line.contains("payload ROOT: SHA-256"), "{line}");
    assert_eq!(std::fs::read(&img).unwrap(), bytes);
}

#[test]
fn verify_refusals_are_one_line_with_exit_3() {
    let d = tmp();
    let dir = d.path();
    let (k, p) = keygen(dir, "k");
    let (_, other) = keygen(dir, "other");
    let img = dir.join("v.img");
    ok(pack(&[&k], &parts(dir), &img, &[]), "pack");
    let good = std::fs::read(&img).unwrap();
    let check = |bytes: &[u8], public: &Path, expect: &str| {
        let bad = dir.join("bad.img");
        std::fs::write(&bad, bytes).unwrap();
        let line = refused(
            run_slotctl([
                "image",
                "verify",
                "--pubkey",
                public.to_str().unwrap(),
                bad.to_str().unwrap(),
            ]),
            3,
        );
        assert!(line.contains(expect), "expected {expect:?} in {line}");
    };
    check(&good, &other, "no signature by a trusted key");
    check(
        &good[..good.len() - 4096],
        &p,
        "image truncated: payload ROOT ends early",
    );
    check(&good[..100], &p, "image truncated: header ends early");
    let mut t = good.clone();
    t.extend_from_slice(b"junk");
    check(
        &t,
        &p,
        &format!(
            "trailing data after the last payload (at byte {})",
            good.len()
        ),
    );
    let mut big = good.clone();
    big[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    check(
        &big,
        &p,
        "header length 4294967280 (at byte 8) exceeds the limit",
    );
    check(b"hello world, not an image", &p, "not a slotctl image");

    // Standard input works (a non-seekable stream).
    let out = slotctl()
        .args(["image", "verify", "--pubkey", p.to_str().unwrap(), "-"])
        .stdin(std::fs::File::open(&img).unwrap())
        .output()
        .unwrap();
    let text = ok(out, "verify from stdin");
    assert!(
        text.contains("-: OK: acme-gw 1.4.2 (rollback index 7)"),
        "{text}"
    );
}

#[test]
fn info_shows_every_field_and_signature_status() {
    let d = tmp();
    let dir = d.path();
    let (k, p) = keygen(dir, "k");
    let (k2, _) = keygen(dir, "k2");
    let img = dir.join("i.img");
    ok(
        pack(&[&k, &k2], &parts(dir), &img, &["--created", "1700000000"]),
        "pack",
    );
    let json = ok(
        run_slotctl([
            "--json",
            "image",
            "info",
            "--pubkey",
            p.to_str().unwrap(),
            img.to_str().unwrap(),
        ]),
        "info --json",
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["compatible"], "acme-gw");
    assert_eq!(v["version"], "1.4.2");
    assert_eq!(v["rollback_index"], 7);
    assert_eq!(v["created"], 1_700_000_000);
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["image_len"], std::fs::metadata(&img).unwrap().len());
    let payloads = v["payloads"].as_array().unwrap();
    assert_eq!(payloads.len(), 2);
    assert_eq!(payloads[0]["role"], "BOOT");
    assert_eq!(payloads[0]["compression"], "zstd");
    assert_eq!(payloads[0]["raw_size"], 105_000);
    assert_eq!(payloads[0]["offset"].as_u64().unwrap() % 4096, 0);
    assert_eq!(payloads[1]["role"], "ROOT");
    assert_eq!(payloads[1]["stored_size"], 300_000);
    let root_sha = ok(
        sh("openssl dgst -sha256 -r root.img | cut -d' ' -f1", dir),
        "dgst",
    );
    assert_eq!(payloads[1]["sha256"], root_sha.trim());
    let sigs = v["signatures"].as_array().unwrap();
    assert_eq!(sigs[0]["status"], "valid");
    assert_eq!(sigs[1]["status"], "unknown key");

    let text = ok(
        run_slotctl(["image", "info", img.to_str().unwrap()]),
        "info",
    );
    assert!(
        text.contains("header NOT VERIFIED (no --keyring/--pubkey given)"),
        "{text}"
    );
    assert!(text.contains("signature 0: key "), "{text}");
    assert!(text.contains(": not checked"), "{text}");
    assert!(text.contains("rollback index  7"), "{text}");
}

#[test]
fn extract_writes_only_checked_bytes() {
    require_tool("zstd");
    let d = tmp();
    let dir = d.path();
    let (k, p) = keygen(dir, "k");
    let img = dir.join("e.img");
    ok(pack(&[&k], &parts(dir), &img, &[]), "pack");
    for role in ["BOOT", "ROOT"] {
        let out = dir.join(format!("{role}.out"));
        ok(
            run_slotctl([
                "image",
                "extract",
                role,
                "-o",
                out.to_str().unwrap(),
                "--pubkey",
                p.to_str().unwrap(),
                img.to_str().unwrap(),
            ]),
            "extract",
        );
        let src = dir.join(format!("{}.img", role.to_lowercase()));
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
    }
    // No keys: refused unless explicitly unchecked.
    let out = dir.join("x.out");
    let line = refused(
        run_slotctl([
            "image",
            "extract",
            "ROOT",
            "-o",
            out.to_str().unwrap(),
            img.to_str().unwrap(),
        ]),
        1,
    );
    assert!(line.contains("--no-verify-signature"), "{line}");
    let line = refused(
        run_slotctl([
            "image",
            "extract",
            "HASH",
            "-o",
            out.to_str().unwrap(),
            "--pubkey",
            p.to_str().unwrap(),
            img.to_str().unwrap(),
        ]),
        3,
    );
    assert!(
        line.contains("no payload with role HASH (roles: BOOT, ROOT)"),
        "{line}"
    );
    // A tampered payload: refused, and no output file is left behind.
    let mut bytes = std::fs::read(&img).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&img, &bytes).unwrap();
    let line = refused(
        run_slotctl([
            "image",
            "extract",
            "ROOT",
            "-o",
            out.to_str().unwrap(),
            "--no-verify-signature",
            img.to_str().unwrap(),
        ]),
        3,
    );
    assert!(line.contains("SHA-256"), "{line}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".slotctl-tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn pack_argument_errors_are_one_line() {
    let d = tmp();
    let dir = d.path();
    let (k, _) = keygen(dir, "k");
    let root = format!("ROOT={}", dir.join("root.img").display());
    write_noise(&dir.join("root.img"), 1000, 1);
    let out = dir.join("o.img");
    let cases: Vec<(Vec<String>, Vec<&str>, &str)> = vec![
        (vec!["ROOT-A=x".into()], vec![], "role `ROOT-A`"),
        (
            vec!["ROOT".into()],
            vec![],
            "expected ROLE[:COMPRESSION]=FILE",
        ),
        (
            vec![root.clone(), root.clone()],
            vec![],
            "duplicate payload role ROOT",
        ),
        (
            vec![root.replace("ROOT=", "ROOT:lz4=")],
            vec![],
            "unknown compression `lz4`",
        ),
        (
            vec![root.clone()],
            vec!["--zstd-level", "22"],
            "zstd level 22 is outside 1..=19",
        ),
        (
            vec![format!("ROOT={}", dir.join("missing").display())],
            vec![],
            "opening part",
        ),
    ];
    for (parts, extra, expect) in cases {
        let line = refused(pack(&[&k], &parts, &out, &extra), 1);
        assert!(line.contains(expect), "expected {expect:?} in {line}");
        assert!(!out.exists());
    }
    let mut bad_version = slotctl();
    bad_version
        .args([
            "image",
            "pack",
            "--key",
            k.to_str().unwrap(),
            "--version",
            "1.2",
        ])
        .args([
            "--compatible",
            "x",
            "--rollback-index",
            "0",
            "--part",
            &root,
            "-o",
        ])
        .arg(&out);
    let line = refused(bad_version.output().unwrap(), 1);
    assert!(
        line.contains("--version `1.2` is not a semantic version"),
        "{line}"
    );
}
