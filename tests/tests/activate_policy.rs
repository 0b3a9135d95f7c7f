//! Issue 11, item 4: every path that makes a slot bootable (install,
//! `activate`, `rollback`; `set-flags` is the escape hatch) applies the same
//! policy: the slot's record verifies, its `compatible` is the device's, its
//! rollback index is not below the booted slot's (verified) floor, and its
//! partitions re-hash to it. `install --factory` refuses a disk with a good
//! or bootable slot before writing anything. Each refusal: one line, exit 3,
//! the disk byte for byte as before.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use slotctl_tests::installfix::{ok, Fix, COMPATIBLE};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn factory_args<'a>(slot: &'a str, image: &'a Path, compatible: Option<&'a str>) -> Vec<&'a OsStr> {
    let mut v = vec![os("install"), os("--factory"), os("--slot"), os(slot)];
    if let Some(c) = compatible {
        v.extend([os("--compatible"), os(c)]);
    }
    v.push(image.as_os_str());
    v
}

/// Set a slot's flags (priority, tries, successful) with the escape hatch.
fn set_flags(f: &Fix, slot: &str, priority: &str, tries: &str, successful: &str) {
    ok(f.run(&[
        "set-flags",
        slot,
        "--priority",
        priority,
        "--tries",
        tries,
        "--successful",
        successful,
    ]));
}

/// A genuine image (signed by the fixture's key, BOOT and ROOT) for
/// another device, "other-device", 9.0.0 at `rollback_index`.
fn other_device_image(f: &Fix, rollback_index: u64) -> PathBuf {
    let r = f.payload("other", 50_000, 7);
    f.pack_with(
        "other.img",
        "9.0.0",
        rollback_index,
        "other-device",
        &[("BOOT", &f.boot_payload()), ("ROOT", &r)],
        "zstd",
        &f.key,
    )
}

/// B provisioned first with `b_image` (made by the test), its flags then
/// cleared; A provisioned with 1.0.0 at rollback index 5, good: the booted
/// slot. B holds a signed record that install would never have written
/// with A booted.
fn a_good_b_recorded(f: &Fix, b_image: &Path, b_compatible: Option<&str>) -> PathBuf {
    ok(f.run(&factory_args("B", b_image, b_compatible)));
    f.clear_flags("B");
    let v1 = f.provision_a("1.0.0", 5);
    assert_eq!(f.flags("B"), (0, 0, false));
    ok(f.run(&["verify-slot", "B"]));
    v1
}

#[test]
fn factory_for_another_compatible_on_a_good_disk_then_activate() {
    let f = Fix::provisioned("1.0.0", 5);
    let other = other_device_image(&f, 0);
    // Refused before any byte is written (it used to write B's payloads
    // and record, then fail at "mark good").
    f.assert_refused_unchanged(
        &factory_args("B", &other, Some("other-device")),
        "--factory is for a fresh disk, and slot A is marked successful",
    );
    // So B holds nothing `activate` could make bootable.
    f.assert_refused_unchanged(&["--booted", "A", "activate", "B"], "activate");
    assert_eq!(f.flags("B"), (0, 0, false));
}

#[test]
fn factory_refuses_a_bootable_slot_and_a_good_target() {
    let f = Fix::new();
    let v1 = f.provision_a("1.0.0", 5);
    // The target itself good: refused.
    f.assert_refused_unchanged(&factory_args("A", &v1, None), "slot A is marked successful");
    // The other slot bootable on trial (not successful): refused.
    set_flags(&f, "A", "1", "2", "0");
    f.assert_refused_unchanged(&factory_args("B", &v1, None), "slot A is bootable");
    // Successful with priority 0 (boot-select's last resort): refused.
    set_flags(&f, "A", "0", "0", "1");
    f.assert_refused_unchanged(&factory_args("B", &v1, None), "slot A is marked successful");
    // Cleared: a fresh disk again, the factory install goes ahead.
    f.clear_flags("A");
    ok(f.run(&factory_args("B", &v1, None)));
    assert_eq!(f.flags("B"), (2, 0, true));
}

#[test]
fn activate_of_a_slot_for_another_compatible_is_refused() {
    let f = Fix::new();
    let other = other_device_image(&f, 5);
    a_good_b_recorded(&f, &other, Some("other-device"));
    f.assert_refused_unchanged(
        &["--booted", "A", "activate", "B"],
        &format!("activate: slot B: image is for \"other-device\", this device is {COMPATIBLE:?}"),
    );
    // rollback too, once B is bootable (set-flags, the escape hatch).
    ok(f.run(&["set-flags", "B", "--priority", "1", "--successful", "1"]));
    f.assert_refused_unchanged(
        &["--booted", "A", "rollback"],
        "rollback: slot B: image is for \"other-device\"",
    );
}

#[test]
fn activate_and_rollback_below_the_floor_are_refused() {
    let f = Fix::new();
    let (old, _) = f.image("old.img", "0.9.0", 1, 50_000, 8);
    a_good_b_recorded(&f, &old, None);
    f.assert_refused_unchanged(
        &["--booted", "A", "activate", "B"],
        "activate: slot B: rollback index 1 is below the booted slot A's 5",
    );
    ok(f.run(&["set-flags", "B", "--priority", "1", "--successful", "1"]));
    f.assert_refused_unchanged(
        &["--booted", "A", "rollback"],
        "rollback: slot B: rollback index 1 is below the booted slot A's 5",
    );
    // set-flags stays the escape hatch: it does what it is told.
    ok(f.run(&["set-flags", "B", "--priority", "3"]));
    assert_eq!(f.flags("B"), (3, 0, true));
}

#[test]
fn rollback_to_an_older_version_with_the_same_index_works() {
    let f = Fix::new();
    let (old, _) = f.image("old.img", "0.9.0", 5, 50_000, 8);
    a_good_b_recorded(&f, &old, None);
    ok(f.run(&["set-flags", "B", "--priority", "1", "--successful", "1"]));
    ok(f.run(&["--booted", "A", "rollback"]));
    assert_eq!(f.flags("B"), (2, 0, true));
    assert_eq!(f.flags("A"), (1, 0, true));
    // And activate of it, from A again.
    f.clear_flags("B");
    ok(f.run(&["set-flags", "A", "--priority", "2"]));
    ok(f.run(&["--booted", "A", "activate", "B"]));
    assert_eq!(f.flags("B"), (2, 3, false));
}

#[test]
fn rollback_needs_a_verified_slot() {
    let f = Fix::new();
    let (same, _) = f.image("same.img", "1.0.0", 5, 50_000, 8);
    a_good_b_recorded(&f, &same, None);
    ok(f.run(&["set-flags", "B", "--priority", "1", "--successful", "1"]));
    // B's ROOT no longer matches its record: refused, as activate.
    let (off, _) = f.partition("B", "ROOT");
    let mut disk = f.disk_bytes();
    disk[off as usize + 10] ^= 0xff;
    std::fs::write(&f.disk, &disk).unwrap();
    f.assert_refused_unchanged(
        &["--booted", "A", "rollback"],
        "rollback: slot B: partition ROOT-B does not match its record",
    );
    // A booted slot with a damaged record: the floor is unknown, refused.
    disk[off as usize + 10] ^= 0xff;
    let (boff, bsize) = f.partition("A", "BOOT");
    disk[(boff + bsize - slotctl::record::RECORD_RESERVED) as usize] = 0;
    std::fs::write(&f.disk, &disk).unwrap();
    f.assert_refused_unchanged(
        &["--booted", "A", "rollback"],
        "rollback: booted slot A: slot record: no record magic",
    );
}
