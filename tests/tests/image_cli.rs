//! `slotctl image sign/verify/info/extract` and pack argument errors through
//! the real binary: exit codes, one-line errors, files left as they were.

use std::path::Path;

use slotctl_tests::image::{keygen, ok, pack, parts, refused, sh, tmp, write_noise};
use slotctl_tests::{require_tool, run_slotctl, slotctl};

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
                out.contains("(copied, with room for more signatures)"),
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
    // --copy: a new file renamed into place, same header, one more signature.
    let (kc, pc) = keygen(dir, "kc");
    let out = ok(
        run_slotctl([
            "image",
            "sign",
            "--copy",
            "--key",
            kc.to_str().unwrap(),
            img.to_str().unwrap(),
        ]),
        "sign --copy",
    );
    assert!(
        out.contains("(copied, with room for more signatures)"),
        "{out}"
    );
    assert_eq!(&std::fs::read(&img).unwrap()[..h], &original[..h]);
    ok(
        run_slotctl([
            "image",
            "verify",
            "--pubkey",
            pc.to_str().unwrap(),
            img.to_str().unwrap(),
        ]),
        "verify after sign --copy",
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
    // A date for people (`date -u -d @1700000000`), the number kept.
    assert!(
        text.contains("created         2023-11-14T22:13:20Z (1700000000)"),
        "{text}"
    );
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
