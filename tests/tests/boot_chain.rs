//! `slotctl boot-select --keyring`, the verified boot chain, on disk image
//! files (docs/verified-boot.md). On a file nothing can be opened through
//! device-mapper: boot-select verifies the chosen slot's record and prints
//! the verity table it would load, which is checked here against the root
//! hash the real `veritysetup` computes; the QEMU scenarios 8-11 open it for
//! real. Needs `cargo build -p slotctl` first.

use std::path::Path;
use std::process::{Command, Output};

use slotctl_tests::have_tool;
use slotctl_tests::installfix::{ok, stderr, Fix, COMPATIBLE};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A keyring directory holding only `public`.
fn ring_of(f: &Fix, name: &str, public: &Path) -> std::path::PathBuf {
    let dir = f.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(public, dir.join("key.pem")).unwrap();
    dir
}

/// A second signing key, also trusted by the fixture's install keyring.
fn second_key(f: &Fix) -> (std::path::PathBuf, std::path::PathBuf) {
    ok(f.run(&[
        "keygen".as_ref(),
        "--out".as_ref(),
        f.path("k2").as_os_str(),
    ]));
    let public = f.path("k2.pub");
    std::fs::copy(&public, f.keyring.join("k2.pem")).unwrap();
    (f.path("k2.key"), public)
}

/// Pack BOOT and ROOT (`root`) with `--verity ROOT --verity-salt SALT`.
fn pack_verity(
    f: &Fix,
    name: &str,
    version: &str,
    root: &Path,
    salt: &str,
    key: &Path,
) -> std::path::PathBuf {
    f.pack_extra(
        name,
        version,
        1,
        COMPATIBLE,
        &[("BOOT", &f.boot_payload()), ("ROOT", root)],
        "zstd",
        key,
        &["--verity", "ROOT", "--verity-salt", salt],
    )
}

/// The table boot-select builds for slot A's ROOT equals the one made from
/// `veritysetup format` of the same bytes (data zero padded to 4 KiB, the
/// tree right after it) with the same salt.
#[test]
fn boot_select_prints_the_verity_table_veritysetup_agrees_with() {
    assert!(
        have_tool("veritysetup"),
        "veritysetup is missing: install cryptsetup-bin (apt-get install -y cryptsetup-bin)"
    );
    let f = Fix::new();
    let len = 300_000usize;
    let root = f.payload("root", len, 5);
    let salt = "5a17".repeat(16);
    let img = pack_verity(&f, "v1.img", "1.0.0", &root, &salt, &f.key);
    f.factory("A", &img);

    // veritysetup's view of the same data.
    let blocks = len.div_ceil(4096) as u64;
    let padded = f.path("root.padded");
    let mut bytes = std::fs::read(&root).unwrap();
    bytes.resize(blocks as usize * 4096, 0);
    std::fs::write(&padded, &bytes).unwrap();
    let out = Command::new("veritysetup")
        .args(["format", "--no-superblock", "--format=1", "--hash=sha256"])
        .args(["--data-block-size=4096", "--hash-block-size=4096"])
        .arg(format!("--salt={salt}"))
        .arg(&padded)
        .arg(f.path("root.tree"))
        .output()
        .unwrap();
    assert!(out.status.success(), "veritysetup format: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let root_hash = text
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .expect("veritysetup printed a root hash")
        .trim()
        .to_owned();

    let out = f.run(&["boot-select", "--keyring", f.keyring.to_str().unwrap()]);
    let vars = stdout(&ok(out));
    let disk = f.disk.display();
    let want = format!(
        "SLOTCTL_VERITY_ROOT='1 {disk} {disk} 4096 4096 {blocks} {blocks} sha256 {root_hash} {salt} 1 restart_on_corruption'"
    );
    assert!(
        vars.lines().any(|l| l == want),
        "boot-select printed\n{vars}\nexpected the line\n{want}"
    );
    assert!(vars.lines().any(|l| l == "SLOTCTL_SLOT=A"), "{vars}");
}

/// A slot whose record does not verify against the boot keyring is given
/// up (not bootable, the reason in its boot state), and the other slot
/// boots in the same run.
#[test]
fn a_record_the_boot_keyring_does_not_trust_gives_the_slot_up() {
    let f = Fix::new();
    let (k2, k2_pub) = second_key(&f);
    let r0 = f.payload("root0", 70_000, 3);
    let v0 = pack_verity(&f, "v0.img", "0.9.0", &r0, "-", &k2);
    f.factory("B", &v0);
    ok(f.run(&["set-flags", "B", "--priority", "0", "--successful", "0"]));
    f.provision_a("1.0.0", 1); // signed by the fixture's key, priority 2
    ok(f.run(&["set-flags", "B", "--priority", "1", "--successful", "1"]));
    let boot_ring = ring_of(&f, "boot-keys", &k2_pub);

    let out = f.run(&["boot-select", "--keyring", boot_ring.to_str().unwrap()]);
    let vars = stdout(&ok(out.clone()));
    assert!(vars.lines().any(|l| l == "SLOTCTL_SLOT=B"), "{vars}");
    let err = stderr(&out);
    assert!(
        err.contains("gave up slot A") && err.contains("does not verify against the boot keyring"),
        "{err}"
    );
    let s = f.status(None);
    assert_eq!(s["slots"]["A"]["bootable"], false, "{s}");
    let why = s["slots"]["A"]["boot_state"]["given_up"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("boot keyring"), "status gives no reason: {s}");
    assert_eq!(s["next"], "B", "{s}");
}

/// When no slot passes, boot-select boots nothing: one line, exit 3, no
/// SLOTCTL_SLOT for the boot stage to mount.
#[test]
fn with_no_slot_passing_boot_select_boots_nothing() {
    let f = Fix::new();
    f.provision_a("1.0.0", 1);
    let (_, k2_pub) = second_key(&f);
    let stranger = ring_of(&f, "stranger", &k2_pub);
    let out = f.run(&["boot-select", "--keyring", stranger.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "printed {}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("slotctl: error: no slot passes its boot check")),
        "{err}"
    );
}

/// The second stage (`--slot`) checks the slot and writes nothing: no try,
/// no count; `--kexec` wants the running system's disk, not a file.
#[test]
fn the_second_stage_writes_nothing_and_kexec_needs_a_device() {
    let f = Fix::new();
    let root = f.payload("root", 50_000, 2);
    let img = pack_verity(&f, "v1.img", "1.0.0", &root, "-", &f.key);
    f.factory("A", &img);
    let before = std::fs::read(&f.disk).unwrap();
    let ring = f.keyring.to_str().unwrap();
    let vars = stdout(&ok(f.run(&[
        "boot-select",
        "--keyring",
        ring,
        "--slot",
        "A",
    ])));
    assert!(vars.lines().any(|l| l == "SLOTCTL_SLOT=A"), "{vars}");
    assert!(vars.contains("SLOTCTL_VERITY_ROOT='1 "), "{vars}");
    assert!(
        std::fs::read(&f.disk).unwrap() == before,
        "boot-select --slot wrote to the disk"
    );

    // A kernel is loaded only from a verified root: --kexec needs a keyring.
    let out = f.run(&["boot-select", "--kexec"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--keyring"), "{}", stderr(&out));
    let out = f.run(&["boot-select", "--keyring", ring, "--kexec"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("--kexec needs a block device"), "{err}");
    assert!(
        std::fs::read(&f.disk).unwrap() == before,
        "a refused --kexec wrote to the disk"
    );
}
