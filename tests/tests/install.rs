//! `slotctl install` end to end on disk images: factory provisioning, an
//! update, every refusal (one line, non-zero exit, disk byte-for-byte
//! unchanged), failures mid-stream (status unchanged apart from the target
//! slot, which is unbootable), verify-slot.

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;
use slotctl_tests::installfix::*;
use slotctl_tests::{require_tool, slotctl};

const ROOT_LEN: usize = 3 * 1024 * 1024 + 12345;
const BOOT_LEN: usize = 200 * 1024 + 7;

/// A disk with slot A provisioned (1.0.0, rollback index 5), booted A.
fn provisioned() -> Fix {
    let f = Fix::new();
    let root = f.payload("root1", ROOT_LEN, 1);
    let boot = f.payload("boot1", BOOT_LEN, 2);
    let img = f.pack(
        "v1.img",
        "1.0.0",
        5,
        &[("BOOT", &boot), ("ROOT", &root)],
        "zstd",
    );
    f.factory("A", &img);
    f
}

/// An image for the update (2.0.0, rollback index 5).
fn update_image(f: &Fix, compression: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = f.payload("root2", ROOT_LEN - 999, 3);
    let img = f.pack(
        "v2.img",
        "2.0.0",
        5,
        &[("BOOT", &f.boot_payload()), ("ROOT", &root)],
        compression,
    );
    (img, root)
}

#[test]
fn factory_provisioning_marks_slot_good_and_records_it() {
    require_tool("cgpt");
    let f = provisioned();
    assert_eq!(f.flags("A"), (2, 0, true));
    assert_eq!(f.flags("B"), (0, 0, false));
    f.assert_partition_holds("A", "ROOT", &f.path("root1"));
    f.assert_partition_holds("A", "BOOT", &f.path("boot1"));
    // cgpt agrees with status on the flags partition of slot A.
    let st = f.status(None);
    let idx = st["slots"]["A"]["flags_partition"]
        .as_u64()
        .unwrap()
        .to_string();
    let cg = |flag: &str| {
        let o = std::process::Command::new("cgpt")
            .args(["show", "-i", &idx, flag])
            .arg(&f.disk)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(
        (cg("-P"), cg("-T"), cg("-S")),
        ("2".into(), "0".into(), "1".into())
    );
    let out = ok(f.run(&["verify-slot", "A"]));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("slot A: 1.0.0 (rollback index 5) verified"),
        "{s}"
    );
}

#[test]
fn update_zstd_activates_other_slot_with_tries() {
    let f = provisioned();
    let (img, root) = update_image(&f, "zstd");
    let out = ok(f.run(&[
        "install".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        img.as_os_str(),
    ]));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("installed 2.0.0 into slot B; it boots next (3 tries)"),
        "{s}"
    );
    assert_eq!(f.flags("B"), (2, 3, false));
    assert_eq!(f.flags("A"), (1, 0, true));
    f.assert_partition_holds("B", "ROOT", &root);
    ok(f.run(&["verify-slot", "B"]));
    // Slot A untouched.
    f.assert_partition_holds("A", "ROOT", &f.path("root1"));
}

#[test]
fn update_uncompressed_no_readback_no_activate_json() {
    let f = provisioned();
    let (img, root) = update_image(&f, "none");
    let out = ok(f.run(&[
        "install".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        "--json".as_ref(),
        "--no-readback".as_ref(),
        "--no-activate".as_ref(),
        img.as_os_str(),
    ]));
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(events
        .iter()
        .any(|e| e["event"] == "progress" && e["role"] == "ROOT" && e["phase"] == "write"));
    let last = events.last().unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["ok"], true);
    assert_eq!(last["activated"], false);
    assert_eq!(last["readback"], false);
    assert_eq!(last["version"], "2.0.0");
    // Written and recorded, but not bootable.
    assert_eq!(f.flags("B"), (0, 0, false));
    f.assert_partition_holds("B", "ROOT", &root);
    ok(f.run(&["verify-slot", "B"]));
}

#[test]
fn install_from_standard_input() {
    let f = provisioned();
    let (img, root) = update_image(&f, "zstd");
    let mut child = slotctl()
        .args(["install", "-", "--booted", "A", "--disk"])
        .arg(&f.disk)
        .arg("--config")
        .arg(&f.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&img).unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    ok(child.wait_with_output().unwrap());
    f.assert_partition_holds("B", "ROOT", &root);
    assert_eq!(f.flags("B"), (2, 3, false));
}

#[test]
fn downgrade_needs_allow_downgrade() {
    let f = provisioned();
    let root = f.payload("old", 1000, 9);
    let img = f.pack(
        "old.img",
        "0.9.0",
        5,
        &[("BOOT", &f.boot_payload()), ("ROOT", &root)],
        "zstd",
    );
    let before = f.disk_bytes();
    let out = f.run(&[
        "install".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        img.as_os_str(),
    ]);
    assert_refused(
        &out,
        3,
        "version 0.9.0 is older than the booted slot A's 1.0.0",
    );
    assert!(f.disk_bytes() == before, "a refusal wrote to the disk");
    ok(f.run(&[
        "install".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        "--allow-downgrade".as_ref(),
        img.as_os_str(),
    ]));
    f.assert_partition_holds("B", "ROOT", &root);
}

#[test]
fn same_version_is_a_reinstall() {
    let f = provisioned();
    let root = f.payload("same", 5000, 11);
    let img = f.pack(
        "same.img",
        "1.0.0",
        5,
        &[("BOOT", &f.boot_payload()), ("ROOT", &root)],
        "zstd",
    );
    ok(f.run(&[
        "install".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        img.as_os_str(),
    ]));
    f.assert_partition_holds("B", "ROOT", &root);
}

/// Run an install that must be refused: exit code, one line naming `what`,
/// and the disk byte-for-byte unchanged.
fn refused(f: &Fix, args: &[&std::ffi::OsStr], code: i32, what: &str) {
    let before = f.disk_bytes();
    let out = f.run(args);
    assert_refused(&out, code, what);
    assert!(
        f.disk_bytes() == before,
        "refusal ({what}) wrote to the disk"
    );
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn refuses_bad_signature() {
    let f = provisioned();
    let (img, _) = update_image(&f, "zstd");
    let mut b = std::fs::read(&img).unwrap();
    b[40] ^= 0x01; // inside the signed header
    let bad = f.path("tampered.img");
    std::fs::write(&bad, b).unwrap();
    refused(
        &f,
        &[os("install"), os("--booted"), os("A"), bad.as_os_str()],
        3,
        "tampered.img",
    );
}

#[test]
fn refuses_unknown_key() {
    let f = provisioned();
    ok(slotctl_tests::run_slotctl([
        "keygen".as_ref(),
        "--out".as_ref(),
        f.path("private/other").as_os_str(),
    ]));
    let root = f.payload("r", 1000, 4);
    let img = f.pack_with(
        "other.img",
        "2.0.0",
        5,
        COMPATIBLE,
        &[("BOOT", &f.boot_payload()), ("ROOT", &root)],
        "zstd",
        &f.path("private/other.key"),
    );
    refused(
        &f,
        &[os("install"), os("--booted"), os("A"), img.as_os_str()],
        3,
        "trusted",
    );
}

#[test]
fn refuses_wrong_compatible() {
    let f = provisioned();
    let root = f.payload("r", 1000, 4);
    let img = f.pack_with(
        "x.img",
        "2.0.0",
        5,
        "other-board",
        &[("BOOT", &f.boot_payload()), ("ROOT", &root)],
        "zstd",
        &f.key,
    );
    refused(
        &f,
        &[os("install"), os("--booted"), os("A"), img.as_os_str()],
        3,
        "image is for \"other-board\", this device is \"acme-test-board\"",
    );
}

#[test]
fn refuses_lower_rollback_index_even_with_allow_downgrade() {
    let f = provisioned();
    let root = f.payload("r", 1000, 4);
    let img = f.pack(
        "rb.img",
        "3.0.0",
        4,
        &[("BOOT", &f.boot_payload()), ("ROOT", &root)],
        "zstd",
    );
    refused(
        &f,
        &[
            os("install"),
            os("--booted"),
            os("A"),
            os("--allow-downgrade"),
            img.as_os_str(),
        ],
        3,
        "rollback index 4 is below the booted slot A's 5",
    );
}

#[test]
fn refuses_payload_too_large() {
    let f = provisioned();
    let root = f.payload("big", ROOT_SIZE as usize + 1, 4);
    let img = f.pack(
        "big.img",
        "2.0.0",
        5,
        &[("BOOT", &f.boot_payload()), ("ROOT", &root)],
        "zstd",
    );
    refused(
        &f,
        &[os("install"), os("--booted"), os("A"), img.as_os_str()],
        3,
        "payload ROOT is 4194305 bytes, partition ROOT-B holds 4194304",
    );
}

#[test]
fn refuses_payload_into_the_record_area_of_the_flags_partition() {
    let f = provisioned();
    // BOOT is the flags partition: its last 64 KiB hold the slot record.
    let boot = f.payload("bigboot", BOOT_SIZE as usize - 65536 + 1, 4);
    let img = f.pack("bb.img", "2.0.0", 5, &[("BOOT", &boot)], "none");
    refused(
        &f,
        &[os("install"), os("--booted"), os("A"), img.as_os_str()],
        3,
        "its last 64 KiB hold the slot record",
    );
}

#[test]
fn refuses_role_missing_on_the_disk() {
    let f = provisioned();
    let hash = f.payload("hash", 1000, 4);
    let img = f.pack("h.img", "2.0.0", 5, &[("HASH", &hash)], "zstd");
    refused(
        &f,
        &[os("install"), os("--booted"), os("A"), img.as_os_str()],
        3,
        "role HASH missing on the disk",
    );
}

#[test]
fn refuses_target_is_booted_slot() {
    let f = provisioned();
    let (img, _) = update_image(&f, "zstd");
    refused(
        &f,
        &[
            os("install"),
            os("--booted"),
            os("A"),
            os("--slot"),
            os("A"),
            img.as_os_str(),
        ],
        3,
        "target slot A is the booted slot",
    );
}

#[test]
fn refuses_while_booted_slot_is_on_trial() {
    let f = provisioned();
    let (img, _) = update_image(&f, "zstd");
    ok(f.run(&[os("install"), os("--booted"), os("A"), img.as_os_str()]));
    // Now B boots on trial; installing from it would overwrite A, its only fallback.
    let root = f.payload("r3", 1000, 4);
    let img3 = f.pack(
        "v3.img",
        "3.0.0",
        5,
        &[("BOOT", &f.boot_payload()), ("ROOT", &root)],
        "zstd",
    );
    refused(
        &f,
        &[os("install"), os("--booted"), os("B"), img3.as_os_str()],
        3,
        "on trial",
    );
}

#[test]
fn refuses_without_a_booted_slot_unless_factory() {
    let f = provisioned();
    let (img, _) = update_image(&f, "zstd");
    refused(
        &f,
        &[os("install"), img.as_os_str()],
        3,
        "needs the booted slot",
    );
}

#[test]
fn refuses_when_busy() {
    require_tool("flock");
    let f = provisioned();
    let (img, _) = update_image(&f, "zstd");
    std::fs::write(&f.lock, format!("{}\n", std::process::id())).unwrap();
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&f.lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    // Wait until the holder has the lock.
    let t = std::time::Instant::now();
    loop {
        let probe = std::process::Command::new("flock")
            .args(["-n", "-x"])
            .arg(&f.lock)
            .arg("true")
            .status()
            .unwrap();
        if !probe.success() || t.elapsed().as_secs() > 10 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before = f.disk_bytes();
    let out = f.run(&[os("install"), os("--booted"), os("A"), img.as_os_str()]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_refused(
        &out,
        4,
        &format!(
            "busy: another slotctl (pid {}) holds {}",
            std::process::id(),
            f.lock.display()
        ),
    );
    assert!(f.disk_bytes() == before);
}

#[test]
fn corrupt_payload_fails_and_leaves_target_unbootable() {
    let f = provisioned();
    let (img, _) = update_image(&f, "none");
    // Flip a byte in the payload data (past the header, inside ROOT).
    let mut b = std::fs::read(&img).unwrap();
    let n = b.len();
    b[n - 5000] ^= 0x40;
    let bad = f.path("badpayload.img");
    std::fs::write(&bad, b).unwrap();
    let before = f.status(Some("A"));
    let out = f.run(&[os("install"), os("--booted"), os("A"), bad.as_os_str()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SHA-256 mismatch"),
        "{}",
        stderr(&out)
    );
    let after = f.status(Some("A"));
    assert_status_unchanged_but_target(&before, &after, "B");
    // No record: B cannot be verified (so it cannot be activated).
    let v = f.run(&["verify-slot", "B"]);
    assert_refused(&v, 3, "slot B has no slot record");
    f.assert_partition_holds("A", "ROOT", &f.path("root1"));
}

#[test]
fn truncated_image_fails_and_leaves_target_unbootable() {
    let f = provisioned();
    let (img, _) = update_image(&f, "zstd");
    let b = std::fs::read(&img).unwrap();
    let cut = f.path("cut.img");
    std::fs::write(&cut, &b[..b.len() - 100_000]).unwrap();
    let before = f.status(Some("A"));
    let out = f.run(&[os("install"), os("--booted"), os("A"), cut.as_os_str()]);
    // A refusal (3), as `slotctl image verify` refuses the same image.
    assert_refused(&out, 3, "image truncated: payload ROOT ends early");
    let after = f.status(Some("A"));
    assert_status_unchanged_but_target(&before, &after, "B");
}

#[test]
fn trailing_bytes_after_the_last_payload_fail_before_the_record() {
    // Every payload is intact; 3 bytes follow the last one. The source is
    // read to its end before the slot record is written: refused, B left
    // invalid without a record, A untouched.
    let f = provisioned();
    let (img, _) = update_image(&f, "zstd");
    let mut b = std::fs::read(&img).unwrap();
    let end = b.len();
    b.extend_from_slice(b"xyz");
    let long = f.path("trailing.img");
    std::fs::write(&long, &b).unwrap();
    let before = f.status(Some("A"));
    let out = f.run(&[os("install"), os("--booted"), os("A"), long.as_os_str()]);
    assert_refused(
        &out,
        3,
        &format!("trailing data after the last payload (at byte {end})"),
    );
    let after = f.status(Some("A"));
    assert_status_unchanged_but_target(&before, &after, "B");
    let v = f.run(&["verify-slot", "B"]);
    assert_refused(&v, 3, "slot B has no slot record");
}

#[test]
fn verify_slot_detects_a_changed_partition() {
    let f = provisioned();
    let (off, _) = f.partition("A", "ROOT");
    let mut disk = f.disk_bytes();
    disk[off as usize + 100] ^= 1;
    std::fs::write(&f.disk, disk).unwrap();
    let out = f.run(&["verify-slot", "A"]);
    assert_refused(&out, 3, "partition ROOT-A does not match its record");
}

#[test]
fn unknown_config_key_is_named() {
    let f = Fix::with_config_extra("\n[extra]\n");
    let out = f.run(&["verify-slot", "A"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("extra"), "{}", stderr(&out));
}

#[test]
fn reboot_after_activation_runs_the_reboot_command() {
    let f = provisioned();
    let (img, _) = update_image(&f, "zstd");
    ok(f.run(&[
        os("install"),
        os("--booted"),
        os("A"),
        os("--reboot"),
        img.as_os_str(),
    ]));
    assert!(f.rebooted.exists(), "reboot command not run");
    assert_eq!(f.flags("B"), (2, 3, false));
}

#[test]
fn factory_refuses_booted_and_compatible_needs_factory() {
    let f = provisioned();
    let (img, _) = update_image(&f, "zstd");
    refused(
        &f,
        &[
            os("install"),
            os("--factory"),
            os("--slot"),
            os("B"),
            os("--booted"),
            os("A"),
            img.as_os_str(),
        ],
        3,
        "drop --booted",
    );
    refused(
        &f,
        &[
            os("install"),
            os("--booted"),
            os("A"),
            os("--compatible"),
            os("x"),
            img.as_os_str(),
        ],
        2, // a usage error, like clap's
        "--compatible is only for --factory",
    );
}

#[test]
fn factory_with_compatible_option_and_pubkey_without_config_keys() {
    let f = Fix::new();
    // A config without compatible: --compatible and --pubkey provide them.
    std::fs::write(&f.config, format!("lock_file = \"{}\"\n", f.lock.display())).unwrap();
    let root = f.payload("r", 70_000, 5);
    let img = f.pack(
        "f.img",
        "1.0.0",
        1,
        &[("BOOT", &f.boot_payload()), ("ROOT", &root)],
        "zstd",
    );
    let out = f.run(&[
        os("install"),
        os("--factory"),
        os("--slot"),
        os("B"),
        os("--compatible"),
        os(COMPATIBLE),
        os("--pubkey"),
        f.path("private/dev.pub").as_os_str(),
        img.as_os_str(),
    ]);
    ok(out);
    assert_eq!(f.flags("B"), (2, 0, true));
    f.assert_partition_holds("B", "ROOT", &root);
}

#[test]
fn refuses_a_flags_partition_too_small_for_the_record() {
    let f = Fix::new();
    let small = f.path("small.img");
    ok(slotctl_tests::run_slotctl([
        os("disk"),
        os("init"),
        small.as_os_str(),
        os("--role"),
        os("BOOT=64K"),
        os("--role"),
        os("ROOT=1M"),
    ]));
    let root = f.payload("r", 1000, 4);
    let img = f.pack("s.img", "1.0.0", 1, &[("ROOT", &root)], "zstd");
    let before = std::fs::read(&small).unwrap();
    let out = slotctl_tests::run_slotctl([
        os("install"),
        os("--factory"),
        os("--slot"),
        os("A"),
        img.as_os_str(),
        os("--disk"),
        small.as_os_str(),
        os("--config"),
        f.config.as_os_str(),
    ]);
    assert_refused(&out, 3, "too small to hold a record (BOOT-A)");
    assert!(std::fs::read(&small).unwrap() == before);
}
