//! Issue 11, item 3: the rollback floor (the booted slot's rollback index)
//! is read from the booted slot's record with its signatures re-verified,
//! and fails closed. A damaged, missing or forged record of the booted slot
//! never lowers it: the install is refused in one line (exit 3) naming the
//! slot and what is wrong, with the disk byte for byte as before. The way
//! out for a technician (docs/slot-record.md) is tested too.

use std::ffi::OsStr;
use std::path::PathBuf;

use slotctl_tests::installfix::{assert_refused, ok, Fix};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Slot A provisioned (factory) with 1.0.0 at rollback index 5: good, the
/// booted slot. Returns the fixture and an older image (0.5.0, index 1)
/// that the floor must keep out.
fn provisioned() -> (Fix, PathBuf) {
    let f = Fix::new();
    let r1 = f.payload("root1", 60_000, 1);
    let v1 = f.pack(
        "v1.img",
        "1.0.0",
        5,
        &[("BOOT", &f.boot_payload()), ("ROOT", &r1)],
        "zstd",
    );
    f.factory("A", &v1);
    assert_eq!(f.flags("A"), (2, 0, true));
    let r0 = f.payload("root0", 50_000, 2);
    let old = f.pack(
        "old.img",
        "0.5.0",
        1,
        &[("BOOT", &f.boot_payload()), ("ROOT", &r0)],
        "zstd",
    );
    (f, old)
}

/// Disk byte offset of slot `slot`'s record region (the last 64 KiB of its
/// flags partition, BOOT in these fixtures).
fn record_offset(f: &Fix, slot: &str) -> usize {
    let (off, size) = f.partition(slot, "BOOT");
    (off + size - slotctl::record::RECORD_RESERVED) as usize
}

/// Install `image` into B with A booted (plus `extra` arguments).
fn install_from_a(f: &Fix, image: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&OsStr> = vec![os("install"), os("--booted"), os("A")];
    args.extend(extra.iter().map(|a| os(a)));
    args.push(image.as_os_str());
    f.run(&args)
}

/// Run the install of the older image and check the refusal: exit 3, one
/// line naming `what` and the booted slot A, the disk byte-identical.
fn assert_install_refused(f: &Fix, image: &std::path::Path, extra: &[&str], what: &str) {
    let before = f.disk_bytes();
    let out = install_from_a(f, image, extra);
    assert_refused(&out, 3, what);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("booted slot A"),
        "the error must name the booted slot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        f.disk_bytes() == before,
        "a refused install changed the disk"
    );
}

/// The rollback_index field (tag 0x8003 at the top level of the header)
/// of a record blob set to `value`: the signature no longer matches.
fn with_rollback_index(blob: &[u8], value: u64) -> Vec<u8> {
    let mut b = blob.to_vec();
    let h = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
    let mut pos = 16;
    while pos + 6 <= h {
        let tag = u16::from_le_bytes(b[pos..pos + 2].try_into().unwrap());
        let len = u32::from_le_bytes(b[pos + 2..pos + 6].try_into().unwrap()) as usize;
        if tag == 0x8003 {
            assert_eq!(len, 8, "rollback_index is a u64");
            b[pos + 6..pos + 14].copy_from_slice(&value.to_le_bytes());
            return b;
        }
        pos += 6 + len;
    }
    panic!("no rollback_index field in the header");
}

#[test]
fn zeroed_magic_byte_does_not_drop_the_floor() {
    let (f, old) = provisioned();
    let mut disk = f.disk_bytes();
    let at = record_offset(&f, "A");
    assert_eq!(&disk[at..at + 8], b"SLOTREC\0");
    disk[at] = 0;
    std::fs::write(&f.disk, &disk).unwrap();
    assert_install_refused(&f, &old, &[], "damaged record");
    // With --allow-downgrade too: the floor is never overridable.
    assert_install_refused(&f, &old, &["--allow-downgrade"], "damaged record");
}

#[test]
fn forged_record_with_rollback_index_0_is_refused() {
    let (f, old) = provisioned();
    let mut disk = f.disk_bytes();
    let at = record_offset(&f, "A");
    let region = &disk[at..at + slotctl::record::RECORD_RESERVED as usize];
    let blob = slotctl::record::decode(region)
        .unwrap()
        .expect("A has a record");
    // Re-encoded with the record format: CRC and SHA-256 recomputed, no key.
    let forged = slotctl::record::encode(&with_rollback_index(&blob, 0)).unwrap();
    disk[at..at + forged.len()].copy_from_slice(&forged);
    std::fs::write(&f.disk, &disk).unwrap();
    // The forged record decodes (status reads it, unverified) ...
    let st = f.status(Some("A"));
    assert_eq!(st["slots"]["A"]["installed"]["rollback_index"], 0, "{st}");
    // ... but the floor needs its signatures: refused.
    assert_install_refused(&f, &old, &["--allow-downgrade"], "does not verify");
}

#[test]
fn successful_booted_slot_without_a_record_fails_closed() {
    let (f, old) = provisioned();
    let mut disk = f.disk_bytes();
    let at = record_offset(&f, "A");
    disk[at..at + slotctl::record::RECORD_RESERVED as usize].fill(0);
    std::fs::write(&f.disk, &disk).unwrap();
    assert_install_refused(
        &f,
        &old,
        &["--allow-downgrade"],
        "marked successful but has no slot record",
    );
}

#[test]
fn a_record_signed_by_a_key_the_keyring_lost_fails_closed() {
    let (f, old) = provisioned();
    // The keyring now trusts only a new key (rotation done too early): the
    // booted slot's record no longer verifies, so its floor is unknown.
    ok(slotctl_tests::run_slotctl([
        os("keygen"),
        os("--out"),
        f.path("private/new").as_os_str(),
    ]));
    std::fs::remove_file(f.keyring.join("dev.pub")).unwrap();
    std::fs::copy(f.path("private/new.pub"), f.keyring.join("new.pub")).unwrap();
    let r = f.payload("rootn", 40_000, 3);
    let newer = f.pack_with(
        "new.img",
        "2.0.0",
        5,
        slotctl_tests::installfix::COMPATIBLE,
        &[("BOOT", &f.boot_payload()), ("ROOT", &r)],
        "zstd",
        &f.path("private/new.key"),
    );
    assert_install_refused(&f, &newer, &[], "does not verify");
    // Keeping the old key in the keyring (the documented rotation) works,
    // and the floor still holds the older image out.
    std::fs::copy(f.path("private/dev.pub"), f.keyring.join("dev.pub")).unwrap();
    assert_install_refused(
        &f,
        &old,
        &[],
        "rollback index 1 is below the booted slot A's 5",
    );
    ok(install_from_a(&f, &newer, &[]));
}

/// A disk provisioned outside slotctl (sgdisk or dd, as the RAUC
/// comparison bench's setup: slot A marked P=1 S=1, its record region all
/// zero): the booted slot is marked successful without a record, so its
/// floor is unknown and an install is refused, writing nothing. The
/// provisioning docs/slot-record.md gives (clear the marks, `install
/// --factory` into A) makes it installable.
#[test]
fn a_good_slot_provisioned_outside_slotctl_needs_a_factory_install() {
    let f = Fix::new();
    ok(f.run(&["set-flags", "A", "--priority", "1", "--successful", "1"]));
    let r = f.payload("root", 50_000, 4);
    let img = f.pack(
        "v.img",
        "2.0.0",
        1,
        &[("BOOT", &f.boot_payload()), ("ROOT", &r)],
        "zstd",
    );
    assert_install_refused(
        &f,
        &img,
        &["--no-readback"],
        "booted slot A is marked successful but has no slot record",
    );
    ok(f.run(&["set-flags", "A", "--priority", "0", "--successful", "0"]));
    let z = f.path("zero");
    std::fs::write(&z, vec![0u8; 4096]).unwrap();
    let base = f.pack(
        "base.img",
        "0.0.0",
        0,
        &[("BOOT", &f.boot_payload()), ("ROOT", &z)],
        "none",
    );
    f.factory("A", &base);
    ok(install_from_a(&f, &img, &["--no-readback"]));
    assert_eq!(f.flags("B"), (2, 3, false));
    f.assert_partition_holds("B", "ROOT", &r);
}

/// The one case with no floor: the booted slot is not marked successful
/// (on trial, or booted as a last resort) and its record region is all
/// zero (never installed by slotctl). Only `rollback` can run then (install
/// and activate need a good booted slot): back to A, whose record verifies.
#[test]
fn an_unsuccessful_booted_slot_without_a_record_sets_no_floor() {
    let (f, _) = provisioned();
    ok(f.run(&["set-flags", "A", "--priority", "1"]));
    ok(f.run(&["set-flags", "B", "--priority", "3", "--tries", "2"]));
    ok(f.run(&["--booted", "B", "rollback"]));
    assert_eq!(f.flags("A"), (2, 0, true));
    // The same with a single stray byte in B's region: damaged, refused.
    ok(f.run(&["set-flags", "B", "--priority", "3"]));
    ok(f.run(&["set-flags", "A", "--priority", "1"]));
    let mut disk = f.disk_bytes();
    disk[record_offset(&f, "B") + 4000] = 1;
    std::fs::write(&f.disk, &disk).unwrap();
    let before = f.disk_bytes();
    let out = f.run(&["--booted", "B", "rollback"]);
    assert_refused(
        &out,
        3,
        "rollback: booted slot B: slot record: no record magic",
    );
    assert!(f.disk_bytes() == before);
}

/// docs/slot-record.md's way out for a technician whose booted slot's
/// record is damaged: from a rescue system (no booted slot on this disk),
/// clear the good marks with `set-flags` and reprovision with
/// `install --factory`; the floor is back.
#[test]
fn technician_reprovisions_a_damaged_booted_slot() {
    let (f, old) = provisioned();
    let mut disk = f.disk_bytes();
    let at = record_offset(&f, "A");
    disk[at] = 0;
    std::fs::write(&f.disk, &disk).unwrap();
    assert_install_refused(&f, &old, &[], "damaged record");
    // --factory refuses while A is still marked good ...
    let before = f.disk_bytes();
    let v1 = f.path("v1.img");
    let factory = [
        os("install"),
        os("--factory"),
        os("--slot"),
        os("A"),
        v1.as_os_str(),
    ];
    assert_refused(&f.run(&factory), 3, "slot A is marked successful");
    assert!(f.disk_bytes() == before);
    // ... so the technician clears the marks, then reprovisions.
    ok(f.run(&[
        "set-flags",
        "A",
        "--priority",
        "0",
        "--tries",
        "0",
        "--successful",
        "0",
    ]));
    ok(f.run(&factory));
    assert_eq!(f.flags("A"), (2, 0, true));
    ok(f.run(&["verify-slot", "A"]));
    // The floor is back: the older image is refused, a newer one installs.
    assert_install_refused(
        &f,
        &old,
        &[],
        "rollback index 1 is below the booted slot A's 5",
    );
    let r2 = f.payload("root2", 50_000, 5);
    let v2 = f.pack(
        "v2.img",
        "2.0.0",
        5,
        &[("BOOT", &f.boot_payload()), ("ROOT", &r2)],
        "zstd",
    );
    ok(install_from_a(&f, &v2, &[]));
    assert_eq!(f.flags("B"), (2, 3, false));
}
