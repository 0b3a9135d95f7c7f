//! Key files as every command that loads them sees them (issue 11, smaller
//! items): a key of another algorithm is named by the OID found (RSA, EC
//! P-256, X25519, Ed448, made by `openssl genpkey`); keyring entries that
//! hold no key (dangling symlink, directory, FIFO) are skipped with one
//! warning line each and the other keys still load; a signing key its
//! group or others can read is used with a one-line warning; `keygen`
//! makes the private key 0600 whatever the umask.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use slotctl_tests::feedenv::feed_cmd;
use slotctl_tests::image::{keygen, ok, sh};
use slotctl_tests::installfix::{self, Fix};
use slotctl_tests::{require_tool, run_slotctl, slotctl};

/// The one `slotctl: error:` line of a failed command (exit 1: a bad key
/// is bad input, not a verification refusal), besides warning lines.
fn one_error(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("slotctl: warning: "))
        .collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {err:?}");
    assert!(lines[0].starts_with("slotctl: error: "), "{what}: {err}");
    lines[0].to_owned()
}

fn warnings(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("slotctl: warning: "))
        .map(str::to_owned)
        .collect()
}

fn os(s: &str) -> OsString {
    s.into()
}

/// (name, openssl genpkey arguments, what the error must name).
const FOREIGN: [(&str, &str, &[&str]); 4] = [
    (
        "rsa",
        "-algorithm RSA -pkeyopt rsa_keygen_bits:2048",
        &["RSA", "1.2.840.113549.1.1.1"],
    ),
    (
        "ec",
        "-algorithm EC -pkeyopt ec_paramgen_curve:P-256",
        &["EC P-256", "1.2.840.10045.2.1", "1.2.840.10045.3.1.7"],
    ),
    ("x25519", "-algorithm X25519", &["X25519", "1.3.101.110"]),
    ("ed448", "-algorithm ED448", &["Ed448", "1.3.101.113"]),
];

/// Make NAME.key and NAME.pub with openssl.
fn openssl_key(dir: &Path, name: &str, genpkey: &str) -> (PathBuf, PathBuf) {
    let out = sh(
        &format!(
            "openssl genpkey {genpkey} -out {name}.key && openssl pkey -in {name}.key -pubout -out {name}.pub"
        ),
        dir,
    );
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

fn check_named(line: &str, names: &[&str], what: &str) {
    for n in names {
        assert!(line.contains(n), "{what}: {n:?} not named in: {line}");
    }
    // Not the old message, which named Ed25519's own OID as the one found.
    assert!(
        !line.contains("unsupported algorithm OID: 1.3.101.112"),
        "{what}: {line}"
    );
}

#[test]
fn a_key_of_another_algorithm_is_named_in_every_command_that_loads_keys() {
    require_tool("openssl");
    let f = Fix::new();
    let d = f.dir.path();
    let r = f.payload("root", 20_000, 1);
    let good = f.pack(
        "good.img",
        "1.0.0",
        1,
        &[("BOOT", &f.boot_payload()), ("ROOT", &r)],
        "zstd",
    );
    let dev_pub = f.keyring.join("dev.pub");
    let feed = f.path("feed.json");
    ok(
        run_slotctl([
            os("feed"),
            os("init"),
            os("--compatible"),
            os(installfix::COMPATIBLE),
            os("--feed"),
            feed.clone().into(),
        ]),
        "feed init",
    );
    let part = format!("ROOT={}", r.display());
    for (name, genpkey, names) in FOREIGN {
        let (key, public) = openssl_key(d, name, genpkey);
        let ring = d.join(format!("ring-{name}"));
        std::fs::create_dir(&ring).unwrap();
        std::fs::copy(&public, ring.join("k.pub")).unwrap();
        let key_s = key.display().to_string();
        let pub_s = public.display().to_string();
        let ring_s = ring.display().to_string();
        let good_s = good.display().to_string();
        let out_s = f.path("out.img").display().to_string();
        let feed_s = feed.display().to_string();
        let private_cmds: Vec<Vec<&str>> = vec![
            vec![
                "image",
                "pack",
                "--key",
                &key_s,
                "--version",
                "1.0.0",
                "--compatible",
                "x",
                "--rollback-index",
                "1",
                "--part",
                &part,
                "-o",
                &out_s,
            ],
            vec!["image", "sign", "--key", &key_s, &good_s],
            vec!["feed", "sign", "--key", &key_s, "--feed", &feed_s],
        ];
        let public_cmds: Vec<Vec<&str>> = vec![
            vec!["image", "verify", "--pubkey", &pub_s, &good_s],
            vec!["image", "verify", "--keyring", &ring_s, &good_s],
            vec!["image", "info", "--pubkey", &pub_s, &good_s],
            vec![
                "image", "extract", "--pubkey", &pub_s, "ROOT", "-o", &out_s, &good_s,
            ],
            vec!["feed", "show", "--keyring", &pub_s, "--feed", &feed_s],
            vec!["feed", "show", "--keyring", &ring_s, "--feed", &feed_s],
        ];
        for cmd in private_cmds.iter().chain(&public_cmds) {
            let before = std::fs::read(&good).unwrap();
            let line = one_error(&run_slotctl(cmd), &format!("{name}: {cmd:?}"));
            check_named(&line, names, &format!("{name}: {cmd:?}"));
            assert_eq!(
                std::fs::read(&good).unwrap(),
                before,
                "{cmd:?} changed the image"
            );
        }
        // The key as PEM text in the environment.
        let pem = std::fs::read_to_string(&key).unwrap();
        let out = slotctl()
            .args(&private_cmds[0][..2]) // without --key FILE
            .args(&private_cmds[0][4..])
            .env("SLOTCTL_SIGNING_KEY", &pem)
            .output()
            .unwrap();
        let line = one_error(&out, &format!("{name}: SLOTCTL_SIGNING_KEY"));
        check_named(&line, names, "SLOTCTL_SIGNING_KEY");
        // install with --pubkey and with a keyring directory: the disk is
        // left as it was.
        let disk = f.disk_bytes();
        for keys in [["--pubkey", &pub_s], ["--keyring", &ring_s]] {
            let out = f.run(&["install", "--booted", "A", keys[0], keys[1], &good_s]);
            let line = one_error(&out, &format!("{name}: install {}", keys[0]));
            check_named(&line, names, "install");
            assert!(f.disk_bytes() == disk, "install changed the disk");
        }
        // Public and private swapped: said so, not an algorithm.
        let line = one_error(
            &run_slotctl(["image", "verify", "--pubkey", &key_s, &good_s]),
            "private as public",
        );
        assert!(
            line.contains("private key where a public key belongs"),
            "{line}"
        );
    }
    // The control: the fixture's Ed25519 keys load in the same commands.
    ok(
        run_slotctl([
            os("image"),
            os("verify"),
            os("--pubkey"),
            dev_pub.into(),
            good.into(),
        ]),
        "ed25519 control",
    );
}

#[test]
fn keyring_entries_that_hold_no_key_are_skipped_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let f = Fix::new();
    let (img, _) = f.image("v.img", "1.0.0", 1, 20_000, 2);
    let ring = dir.join("ring");
    std::fs::create_dir(&ring).unwrap();
    std::fs::copy(f.keyring.join("dev.pub"), ring.join("dev.pub")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone.pub"), ring.join("dangling.pub")).unwrap();
    std::fs::create_dir(ring.join("dir.pub")).unwrap();
    let fifo = ring.join("fifo.pem");
    let mk = sh(&format!("mkfifo {}", fifo.display()), dir);
    assert!(mk.status.success());
    std::fs::write(ring.join("notes.txt"), "not a key name: ignored quietly").unwrap();
    let expect = [
        ("dangling.pub", "a symlink to"),
        ("dir.pub", "a directory"),
        ("fifo.pem", "a FIFO"),
    ];
    let check = |out: &Output, what: &str| {
        let w = warnings(out);
        assert_eq!(w.len(), expect.len(), "{what}: {w:?}");
        for ((name, why), line) in expect.iter().zip(&w) {
            assert!(
                line.contains(&ring.join(name).display().to_string()) && line.contains(why),
                "{what}: {line}"
            );
        }
    };
    // The keyring still loads its good key: verify passes, with a warning
    // per broken entry (sorted by name). A FIFO is not opened (no hang).
    let out = run_slotctl([
        os("image"),
        os("verify"),
        os("--keyring"),
        ring.clone().into(),
        img.clone().into(),
    ]);
    ok(out.clone(), "verify with a broken keyring entry");
    check(&out, "image verify");
    // The same through install (the keyring directory of --keyring).
    let out = f.run(&[
        os("install"),
        os("--factory"),
        os("--slot"),
        os("A"),
        os("--keyring"),
        ring.clone().into(),
        img.clone().into(),
    ]);
    installfix::ok(out.clone());
    check(&out, "install --factory");
    // And the feed keyring.
    let feed = dir.join("feed.json");
    installfix::ok(feed_cmd(&["init", "--compatible", "x"], &feed));
    installfix::ok(feed_cmd(&["sign", "--key", f.key.to_str().unwrap()], &feed));
    let out = feed_cmd(&["show", "--keyring", ring.to_str().unwrap()], &feed);
    ok(out.clone(), "feed show");
    check(&out, "feed show");
    // Without the good key, nothing loads: an error after the warnings.
    std::fs::remove_file(ring.join("dev.pub")).unwrap();
    let out = run_slotctl([
        os("image"),
        os("verify"),
        os("--keyring"),
        ring.clone().into(),
        img.into(),
    ]);
    let line = one_error(&out, "no key left");
    assert!(line.contains("no *.pub or *.pem public key"), "{line}");
    check(&out, "no key left");
}

#[test]
fn a_signing_key_others_can_read_is_used_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // keygen makes the private key 0600 even under umask 000.
    let out = sh(
        &format!(
            "umask 000 && {} keygen --out {}/k",
            slotctl_tests::slotctl_bin().display(),
            dir.display()
        ),
        dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = dir.join("k.key");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&dir.join("k.pub")), 0o644);
    std::fs::write(dir.join("root.img"), b"root".repeat(1000)).unwrap();
    let pack = |key: &Path| {
        run_slotctl([
            os("image"),
            os("pack"),
            os("--key"),
            key.into(),
            os("--version"),
            os("1.0.0"),
            os("--compatible"),
            os("x"),
            os("--rollback-index"),
            os("1"),
            os("--part"),
            format!("ROOT={}", dir.join("root.img").display()).into(),
            os("-o"),
            dir.join("o.img").into(),
        ])
    };
    let feed = dir.join("feed.json");
    installfix::ok(feed_cmd(&["init", "--compatible", "x"], &feed));
    let feed_sign =
        |key: &Path| feed_cmd(&["sign", "--renew", "--key", key.to_str().unwrap()], &feed);
    // 0600 (and 0400): no warning.
    for m in [0o600, 0o400] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(m)).unwrap();
        for out in [pack(&key), feed_sign(&key)] {
            ok(out.clone(), "pack/feed sign");
            assert!(warnings(&out).is_empty(), "{m:o}: {:?}", warnings(&out));
        }
    }
    // Readable (or writable) by the group or others: used, one warning
    // naming the file and its mode. Through a symlink: the target's mode.
    let link = dir.join("link.key");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    for m in [0o644, 0o640, 0o604, 0o620] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(m)).unwrap();
        for (path, out) in [
            (&key, pack(&key)),
            (&key, feed_sign(&key)),
            (&link, pack(&link)),
        ] {
            ok(out.clone(), "pack/feed sign with a loose mode");
            let w = warnings(&out);
            assert_eq!(w.len(), 1, "{m:o}: {w:?}");
            assert!(
                w[0].contains(&path.display().to_string()) && w[0].contains(&format!("{m:04o}")),
                "{w:?}"
            );
        }
    }
    // `image sign` loads keys the same way.
    let keys: Vec<(PathBuf, PathBuf)> = vec![keygen(dir, "second")];
    std::fs::set_permissions(&keys[0].0, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_slotctl([
        os("image"),
        os("sign"),
        os("--key"),
        keys[0].0.clone().into(),
        dir.join("o.img").into(),
    ]);
    ok(out.clone(), "image sign");
    assert_eq!(warnings(&out).len(), 1, "{:?}", warnings(&out));
}
