//! `slotctl keygen` and `slotctl image ...` through the real binary, with
//! openssl and zstd as independent validators.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use slotctl_tests::image::{
    doc_openssl_script, keygen, ok, pack, parts, refused, sh, tmp, write_noise,
};
use slotctl_tests::{require_tool, run_slotctl, slotctl};

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
