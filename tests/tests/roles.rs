//! Issue 11, item 2: bytes left in a slot's partition by a refused install
//! must never be made bootable by a later image that lacks that role.
//!
//! The rule (docs/image-format.md, "Roles: an image covers its slot"): an
//! image carries a payload for every role of its slot, except the roles the
//! config names in `unmanaged_roles`. `install` refuses an image lacking a
//! managed role before writing anything; `activate` and `rollback` refuse a
//! slot whose record does not cover every managed role; `verify-slot` and
//! `status` say which roles are covered.
//!
//! The fixture's slots have BOOT (the flags partition, 1 MiB) and ROOT.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use slotctl_tests::installfix::{assert_refused, ok, stderr, Fix};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Put `roles = [...]` at the top of the fixture's config (the fixture's
/// config ends inside its `[http]` table).
fn set_unmanaged(f: &Fix, roles: &str) {
    let text = std::fs::read_to_string(&f.config).unwrap();
    let text = text
        .lines()
        .filter(|l| !l.starts_with("unmanaged_roles"))
        .collect::<Vec<_>>()
        .join("\n");
    let head = if roles.is_empty() {
        String::new()
    } else {
        format!("unmanaged_roles = [{roles}]\n")
    };
    std::fs::write(&f.config, format!("{head}{text}\n")).unwrap();
}

fn install_booted_a(f: &Fix, img: &Path) -> Output {
    f.run(&[os("install"), os("--booted"), os("A"), img.as_os_str()])
}

/// What an older slotctl (which asked only that an image's roles be a
/// subset of the slot's) left after installing a ROOT-only image into
/// `slot` with `--no-activate`: the ROOT payload on ROOT-`slot`, the image's
/// signed header and signatures as the record in BOOT-`slot`'s last 64 KiB.
/// Returns the image.
fn plant_root_only_record(f: &Fix, slot: &str, version: &str) -> PathBuf {
    let root = f.payload(&format!("root-{slot}"), 40_000, 7);
    let img = f.pack(
        &format!("rootonly-{slot}.img"),
        version,
        1,
        &[("ROOT", &root)],
        "none",
    );
    let bytes = std::fs::read(&img).unwrap();
    let reader = image_format::ImageReader::new(&bytes[..]).unwrap();
    let mut blob = reader.header_bytes().to_vec();
    blob.extend_from_slice(reader.signature_block_bytes());
    let region = slotctl::record::encode(&blob).unwrap();
    let (boot_off, boot_size) = f.partition(slot, "BOOT");
    let (root_off, _) = f.partition(slot, "ROOT");
    let mut disk = f.disk_bytes();
    let rec = (boot_off + boot_size - slotctl::record::RECORD_RESERVED) as usize;
    disk[rec..rec + region.len()].copy_from_slice(&region);
    let payload = std::fs::read(&root).unwrap();
    disk[root_off as usize..root_off as usize + payload.len()].copy_from_slice(&payload);
    std::fs::write(&f.disk, disk).unwrap();
    img
}

/// The attack as the review did it: a tampered image (genuine header and
/// signatures, BOOT bytes replaced) is refused after its BOOT bytes reached
/// BOOT-B; a later genuine image that carries only ROOT must be refused too
/// (before any write, one line, exit 3), else B would boot the attacker's
/// BOOT bytes. On the code before this rule it installed and activated B.
#[test]
fn stale_boot_bytes_are_never_activated_by_a_root_only_image() {
    // Slot A provisioned with a genuine BOOT+ROOT image, good.
    let f = Fix::provisioned("1.0.0", 1);
    // v2, genuine, BOOT+ROOT, uncompressed so its BOOT bytes can be swapped.
    let b2 = f.payload("boot2", 256 << 10, 2);
    let r2 = f.payload("root2", 60_000, 3);
    let v2 = f.pack(
        "v2.img",
        "2.0.0",
        1,
        &[("BOOT", &b2), ("ROOT", &r2)],
        "none",
    );
    let mut img = std::fs::read(&v2).unwrap();
    let boot = {
        let r = image_format::ImageReader::new(&img[..]).unwrap();
        let h = r.into_untrusted().unwrap();
        let p = h.header().payloads()[0].clone();
        assert_eq!(p.role, "BOOT");
        (p.offset as usize, p.stored_size as usize)
    };
    let evil = slotctl_tests::installfix::test_bytes(boot.1, 666);
    img[boot.0..boot.0 + boot.1].copy_from_slice(&evil);
    let tampered = f.path("tampered.img");
    std::fs::write(&tampered, &img).unwrap();

    assert_refused(&install_booted_a(&f, &tampered), 3, "BOOT");
    // The attacker's bytes did reach BOOT-B (the hash mismatch is found at
    // the end of the payload): the state the rest of the attack builds on.
    let (off, _) = f.partition("B", "BOOT");
    let disk = f.disk_bytes();
    let half = evil.len() / 2; // the first half of test_bytes is random
    assert_eq!(
        &disk[off as usize..off as usize + half],
        &evil[..half],
        "the tampered BOOT bytes were expected on BOOT-B after the refusal"
    );
    assert_eq!(
        f.flags("B").0,
        0,
        "B must not be bootable after the refusal"
    );

    // A genuine image carrying only ROOT.
    let r3 = f.payload("root3", 70_000, 4);
    let v3 = f.pack("v3.img", "3.0.0", 1, &[("ROOT", &r3)], "zstd");
    let out = f.assert_refused_unchanged(
        &[os("install"), os("--booted"), os("A"), v3.as_os_str()],
        "image carries no payload for role BOOT of slot B (BOOT-B)",
    );
    assert!(
        stderr(&out).contains("unmanaged_roles"),
        "the refusal says how to fix it: {}",
        stderr(&out)
    );
    assert_eq!(f.flags("B").0, 0);
    assert_eq!(f.status(Some("A"))["next"], "A");
}

/// With BOOT named in `unmanaged_roles`, a ROOT-only image installs and
/// activates; `verify-slot` and `status` say BOOT is not managed. An image
/// that carries the unmanaged role is refused before any write.
#[test]
fn unmanaged_role_is_not_required_and_is_reported() {
    let f = Fix::new();
    set_unmanaged(&f, "\"BOOT\"");
    let r1 = f.payload("root1", 50_000, 1);
    let v1 = f.pack("v1.img", "1.0.0", 1, &[("ROOT", &r1)], "zstd");
    f.factory("A", &v1);
    let r2 = f.payload("root2", 60_000, 2);
    let v2 = f.pack("v2.img", "2.0.0", 1, &[("ROOT", &r2)], "zstd");
    ok(install_booted_a(&f, &v2));
    assert_eq!(f.flags("B"), (2, 3, false));
    f.assert_partition_holds("B", "ROOT", &r2);

    let out = ok(f.run(&["--booted", "A", "verify-slot", "B"]));
    assert_eq!(
        stdout(&out),
        "slot B: 2.0.0 (rollback index 1) verified: ROOT; not managed: BOOT\n"
    );
    let out = ok(f.run(&["--booted", "A", "--json", "verify-slot", "B"]));
    let last: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(
        last["slots"][0]["coverage"],
        serde_json::json!({"covered": ["ROOT"], "not_managed": ["BOOT"], "not_covered": []}),
        "{last}"
    );
    let st = f.status(Some("A"));
    assert_eq!(
        st["slots"]["B"]["coverage"],
        serde_json::json!({"covered": ["ROOT"], "not_managed": ["BOOT"], "not_covered": []}),
        "{st}"
    );
    let human = stdout(&ok(f.run(&["--booted", "A", "status"])));
    assert!(
        human.contains("slot B:    record covers: ROOT; not managed: BOOT\n"),
        "{human}"
    );

    // An image carrying BOOT while the config leaves BOOT to the operator.
    ok(f.run(&["--booted", "B", "mark-good"]));
    let b3 = f.payload("boot3", 4096, 5);
    let v3 = f.pack(
        "v3.img",
        "3.0.0",
        1,
        &[("BOOT", &b3), ("ROOT", &r2)],
        "zstd",
    );
    f.assert_refused_unchanged(
        &[os("install"), os("--booted"), os("B"), v3.as_os_str()],
        "image carries role BOOT, which the config names in unmanaged_roles",
    );
}

/// `activate` of a slot whose record lacks a managed role (left by an older
/// slotctl, or by a config that named BOOT unmanaged then) is refused: one
/// line, exit 3, disk unchanged. `verify-slot` fails it and `status` names
/// the uncovered role. On the code before this rule, activate made B the
/// next boot.
#[test]
fn activate_refuses_a_record_that_lacks_a_managed_role() {
    let f = Fix::provisioned("1.0.0", 1);
    plant_root_only_record(&f, "B", "2.0.0");
    f.assert_refused_unchanged(
        &["--booted", "A", "activate", "B"],
        "activate: slot B's record does not cover role BOOT (BOOT-B)",
    );
    assert_eq!(f.flags("B").0, 0);

    let out = f.run(&["--booted", "A", "verify-slot", "B"]);
    assert_refused(&out, 3, "slot B's record does not cover role BOOT");
    assert_eq!(
        stdout(&out),
        "slot B: 2.0.0 (rollback index 1) verified: ROOT; NOT covered: BOOT\n"
    );
    let st = f.status(Some("A"));
    assert_eq!(
        st["slots"]["B"]["coverage"],
        serde_json::json!({"covered": ["ROOT"], "not_managed": [], "not_covered": ["BOOT"]}),
        "{st}"
    );
    assert_eq!(
        st["slots"]["A"]["coverage"],
        serde_json::json!({"covered": ["BOOT", "ROOT"], "not_managed": [], "not_covered": []}),
        "{st}"
    );
    let human = stdout(&ok(f.run(&["--booted", "A", "status"])));
    assert!(
        human.contains("slot B:    record covers: ROOT; NOT covered: BOOT\n"),
        "{human}"
    );

    // Naming BOOT unmanaged is the documented way to accept such a slot.
    set_unmanaged(&f, "\"BOOT\"");
    ok(f.run(&["--booted", "A", "activate", "B"]));
    assert_eq!(f.flags("B"), (2, 3, false));
}

/// `rollback` to a slot whose record lacks a managed role is refused the
/// same way. On the code before this rule, rollback made B the next boot.
#[test]
fn rollback_refuses_a_record_that_lacks_a_managed_role() {
    let f = Fix::provisioned("1.0.0", 1);
    plant_root_only_record(&f, "B", "0.9.0");
    // B good at a lower priority, as an older slotctl would have left it.
    ok(f.run(&["set-flags", "B", "--priority", "1", "--successful", "1"]));
    f.assert_refused_unchanged(
        &["--booted", "A", "rollback"],
        "rollback: slot B's record does not cover role BOOT (BOOT-B)",
    );
    assert_eq!(f.status(Some("A"))["next"], "A");

    // A slot without any record cannot be rolled back to either.
    let (boot_off, boot_size) = f.partition("B", "BOOT");
    let mut disk = f.disk_bytes();
    let rec = (boot_off + boot_size - slotctl::record::RECORD_RESERVED) as usize;
    disk[rec..(boot_off + boot_size) as usize].fill(0);
    std::fs::write(&f.disk, &disk).unwrap();
    f.assert_refused_unchanged(
        &["--booted", "A", "rollback"],
        "rollback: slot B has no slot record",
    );
}
