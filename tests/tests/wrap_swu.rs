//! `slotctl image wrap-swu` (docs/ddi.md, "Uploading a slotctl image"):
//! the cpio it writes, read back by cpio(1), holds the verified header's
//! version and compatible in `sw-description` and the image byte for byte;
//! bad input is one line, exit non-zero, and no output file.

use std::path::Path;
use std::process::{Command, Output};

use slotctl_tests::installfix::{assert_refused, ok, Fix, COMPATIBLE};
use slotctl_tests::require_tool;

fn wrap(img: &Path, out: &Path, keys: &[&str]) -> Output {
    let mut args: Vec<std::ffi::OsString> = vec![
        "image".into(),
        "wrap-swu".into(),
        img.into(),
        "-o".into(),
        out.into(),
    ];
    args.extend(keys.iter().map(|k| k.into()));
    slotctl_tests::run_slotctl(args)
}

#[test]
fn cpio_reads_back_description_and_image() {
    require_tool("cpio");
    let fix = Fix::new();
    let root = fix.payload("root", 70_000, 3);
    let img = fix.pack(
        "gw.img",
        "2.3.4",
        1,
        &[("BOOT", &fix.boot_payload()), ("ROOT", &root)],
        "zstd",
    );
    let swu = fix.path("gw.swu");
    let pubkey = fix.keyring.join("dev.pub");
    ok(wrap(&img, &swu, &["--pubkey", pubkey.to_str().unwrap()]));
    let bytes = std::fs::read(&swu).unwrap();
    assert_eq!(bytes.len() % 512, 0);
    // cpio(1) lists the members in order and extracts them.
    let list = Command::new("cpio")
        .args(["-it", "--quiet", "-F"])
        .arg(&swu)
        .output()
        .unwrap();
    assert!(list.status.success());
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "sw-description\nslotctl-image\n"
    );
    let out = fix.path("x");
    std::fs::create_dir(&out).unwrap();
    let st = Command::new("cpio")
        .args(["-id", "--quiet", "-F"])
        .arg(&swu)
        .current_dir(&out)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(out.join("slotctl-image")).unwrap() == std::fs::read(&img).unwrap());
    let desc = std::fs::read_to_string(out.join("sw-description")).unwrap();
    assert!(desc.contains("version = \"2.3.4\";"), "{desc}");
    assert!(
        desc.contains(&format!("hardware-compatibility = [ \"{COMPATIBLE}\" ];")),
        "{desc}"
    );
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let fix = Fix::new();
    let root = fix.payload("root", 10_000, 3);
    let img = fix.pack(
        "gw.img",
        "2.3.4",
        1,
        &[("BOOT", &fix.boot_payload()), ("ROOT", &root)],
        "zstd",
    );
    let swu = fix.path("gw.swu");
    // Signed by a key that is not the one given.
    let other = fix.path("other");
    ok(fix.run(&["keygen".as_ref(), "--out".as_ref(), other.as_os_str()]));
    let out = wrap(
        &img,
        &swu,
        &["--pubkey", fix.path("other.pub").to_str().unwrap()],
    );
    assert_refused(&out, 3, "signature");
    assert!(!swu.exists());
    // No keys: the version and compatible would be unverified.
    let out = wrap(&img, &swu, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(slotctl_tests::installfix::stderr(&out).contains("--keyring DIR or --pubkey FILE"));
    assert!(!swu.exists());
    // A payload byte changed: refused, nothing written.
    let mut bytes = std::fs::read(&img).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let bad = fix.path("bad.img");
    std::fs::write(&bad, bytes).unwrap();
    let pubkey = fix.keyring.join("dev.pub");
    let out = wrap(&bad, &swu, &["--pubkey", pubkey.to_str().unwrap()]);
    assert_refused(&out, 3, "bad.img");
    assert!(!swu.exists());
    // Not an image at all.
    let out = wrap(&root, &swu, &["--pubkey", pubkey.to_str().unwrap()]);
    assert_refused(&out, 3, "not a slotctl image");
    assert!(!swu.exists());
}
