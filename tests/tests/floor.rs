//! Issue 11, item 3: the rollback floor (the booted slot's rollback index)
//! is read from the booted slot's record with its signatures re-verified,
//! and fails closed. A damaged, forged or zeroed record of the booted slot
//! never lowers it: the install is refused in one line (exit 3) naming the
//! slot and what is wrong, with the disk byte for byte as before. With no
//! slot record anywhere on the disk (a disk provisioned outside slotctl, as
//! the RAUC comparison bench builds it) there is no floor; with none on the
//! booted slot, a pending other slot's verified record sets it. The way out
//! for a technician (docs/slot-record.md) is tested too.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use slotctl_tests::installfix::{assert_refused, ok, stderr, test_bytes, Fix, COMPATIBLE};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Slot A provisioned (factory) with 1.0.0 at rollback index 5: good, the
/// booted slot. Returns the fixture and an older image (0.5.0, index 1)
/// that the floor must keep out.
fn provisioned() -> (Fix, PathBuf) {
    let f = Fix::provisioned("1.0.0", 5);
    let (old, _) = f.image("old.img", "0.5.0", 1, 50_000, 2);
    (f, old)
}

/// Disk byte offset of slot `slot`'s record region (the last 64 KiB of its
/// flags partition, BOOT in these fixtures).
fn record_offset(f: &Fix, slot: &str) -> usize {
    let (off, size) = f.partition(slot, "BOOT");
    (off + size - slotctl::record::RECORD_RESERVED) as usize
}

/// The arguments of an install of `image` into B with A booted (plus
/// `extra` arguments).
fn install_args<'a>(image: &'a Path, extra: &[&'a str]) -> Vec<&'a OsStr> {
    let mut args: Vec<&OsStr> = vec![os("install"), os("--booted"), os("A")];
    args.extend(extra.iter().map(|a| os(a)));
    args.push(image.as_os_str());
    args
}

/// Run the install of the older image and check the refusal: exit 3, one
/// line naming `what` and the booted slot A, the disk byte-identical.
fn assert_install_refused(f: &Fix, image: &Path, extra: &[&str], what: &str) {
    let out = f.assert_refused_unchanged(&install_args(image, extra), what);
    assert!(
        stderr(&out).contains("booted slot A"),
        "the error must name the booted slot: {}",
        stderr(&out)
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

/// Zero the first byte of slot `slot`'s record (its magic).
fn zero_magic_byte(f: &Fix, slot: &str) {
    let mut disk = f.disk_bytes();
    let at = record_offset(f, slot);
    assert_eq!(&disk[at..at + 8], b"SLOTREC\0");
    disk[at] = 0;
    std::fs::write(&f.disk, &disk).unwrap();
}

/// Rewrite slot `slot`'s record with rollback_index 0, re-encoded with the
/// record format (CRC and SHA-256 recomputed), no key: its signature no
/// longer matches.
fn forge_rollback_index_0(f: &Fix, slot: &str) {
    let mut disk = f.disk_bytes();
    let at = record_offset(f, slot);
    let region = &disk[at..at + slotctl::record::RECORD_RESERVED as usize];
    let blob = slotctl::record::decode(region)
        .unwrap()
        .unwrap_or_else(|| panic!("{slot} has a record"));
    let forged = slotctl::record::encode(&with_rollback_index(&blob, 0)).unwrap();
    disk[at..at + forged.len()].copy_from_slice(&forged);
    std::fs::write(&f.disk, &disk).unwrap();
}

#[test]
fn zeroed_magic_byte_does_not_drop_the_floor() {
    let (f, old) = provisioned();
    zero_magic_byte(&f, "A");
    assert_install_refused(&f, &old, &[], "damaged record");
    // With --allow-downgrade too: the floor is never overridable.
    assert_install_refused(&f, &old, &["--allow-downgrade"], "damaged record");
}

#[test]
fn forged_record_with_rollback_index_0_is_refused() {
    let (f, old) = provisioned();
    forge_rollback_index_0(&f, "A");
    // The forged record decodes (status reads it, unverified) ...
    let st = f.status(Some("A"));
    assert_eq!(st["slots"]["A"]["installed"]["rollback_index"], 0, "{st}");
    // ... but the floor needs its signatures: refused.
    assert_install_refused(&f, &old, &["--allow-downgrade"], "does not verify");
}

/// The state after an update was committed: A (1.0.0, index 5) booted and
/// good, B (0.9.0, index 1) good, the fallback. Both slots hold a record;
/// B's, taken as a floor, would let the old image (index 1) in.
fn two_good_slots() -> (Fix, PathBuf) {
    let f = Fix::two_good_slots("1.0.0", 5);
    let (old, _) = f.image("old.img", "0.5.0", 1, 50_000, 2);
    (f, old)
}

/// Zero slot `slot`'s whole record region.
fn zero_region(f: &Fix, slot: &str) {
    let mut disk = f.disk_bytes();
    let at = record_offset(f, slot);
    disk[at..at + slotctl::record::RECORD_RESERVED as usize].fill(0);
    std::fs::write(&f.disk, &disk).unwrap();
}

/// Run `args` (with `--booted A`): refused (exit 3, one line naming
/// `what`), the disk byte-identical.
fn assert_cmd_refused(f: &Fix, args: &[&str], what: &str) {
    let mut v = vec!["--booted", "A"];
    v.extend_from_slice(args);
    f.assert_refused_unchanged(&v, what);
}

const UNKNOWN_A: &str = "booted slot A has no slot record while slot B has one: the rollback floor is unknown, refusing (docs/slot-record.md: reprovisioning)";

/// Zeroing the booted slot's whole record region, while the other slot
/// holds a record, does not drop the floor (nor put the other slot's lower
/// one in its place): install, activate and rollback are refused, whether
/// B's record is good (the fallback), B is marked bad (not bootable, its
/// record kept) or B's record is damaged.
#[test]
fn zeroed_booted_record_while_the_other_slot_has_one_is_refused() {
    let (f, old) = two_good_slots();
    zero_region(&f, "A");
    assert_install_refused(&f, &old, &["--allow-downgrade"], UNKNOWN_A);
    assert_install_refused(&f, &old, &[], UNKNOWN_A);
    assert_cmd_refused(&f, &["rollback"], UNKNOWN_A);
    assert_cmd_refused(&f, &["activate", "B"], UNKNOWN_A);
    // B marked bad: flags cleared, its record (index 1) still there.
    ok(f.run(&["--booted", "A", "mark-bad", "B"]));
    assert_eq!(f.flags("B"), (0, 0, false));
    assert_install_refused(&f, &old, &["--allow-downgrade"], UNKNOWN_A);
    // B's record damaged (a byte of its blob flipped): refused as well.
    let mut disk = f.disk_bytes();
    disk[record_offset(&f, "B") + 100] ^= 0xff;
    std::fs::write(&f.disk, &disk).unwrap();
    assert_install_refused(
        &f,
        &old,
        &["--allow-downgrade"],
        "booted slot A has no slot record while slot B has one (slot record: blob SHA-256 mismatch",
    );
}

/// A booted slot marked successful that never had a record (flags set by
/// hand) while the other slot holds one (a factory install of B): its floor
/// is unknown, refused.
#[test]
fn a_successful_booted_slot_without_a_record_while_the_other_has_one_is_refused() {
    let f = Fix::new();
    let (v, _) = f.image("v.img", "2.0.0", 3, 50_000, 4);
    f.factory("B", &v);
    ok(f.run(&["set-flags", "B", "--priority", "1"]));
    ok(f.run(&["set-flags", "A", "--priority", "2", "--successful", "1"]));
    assert_install_refused(&f, &v, &["--no-readback"], UNKNOWN_A);
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
    ok(f.run(&install_args(&newer, &[])));
}

/// No slot record anywhere on the disk (provisioned outside slotctl with
/// `slotctl disk init` and flags set by hand): no floor, even with the
/// booted slot marked successful. The first install's record (index 2,
/// pending in B) then sets the floor while A has none.
#[test]
fn no_record_on_either_slot_sets_no_floor_whatever_the_flags() {
    let f = Fix::new();
    ok(f.run(&["set-flags", "A", "--priority", "1", "--successful", "1"]));
    let (img, r) = f.image("v.img", "2.0.0", 2, 50_000, 4);
    ok(f.run(&install_args(&img, &["--no-readback"])));
    assert_eq!(f.flags("B"), (2, 3, false));
    f.assert_partition_holds("B", "ROOT", &r);
    let (older, _) = f.image("older.img", "2.1.0", 1, 50_000, 5);
    assert_install_refused(
        &f,
        &older,
        &[],
        "rollback index 1 is below slot B's 2 (pending: booted slot A has no record)",
    );
}

/// With no record on the booted slot, a pending other slot (activated, not
/// yet booted: P>0, T>0, S=0) whose record verifies sets the floor: it was
/// checked against the floor of its time when it was installed. Its forged
/// record does not verify, and once cancelled (not bootable) it no longer
/// sets anything: refused.
#[test]
fn a_pending_other_slot_sets_the_floor_when_the_booted_slot_has_no_record() {
    let (f, old) = provisioned();
    let (v11, _) = f.image("v11.img", "1.1.0", 5, 50_000, 6);
    ok(f.run(&install_args(&v11, &[])));
    assert_eq!(f.flags("B"), (2, 3, false));
    zero_region(&f, "A");
    assert_install_refused(
        &f,
        &old,
        &["--allow-downgrade"],
        "rollback index 1 is below slot B's 5 (pending: booted slot A has no record)",
    );
    let (v09, _) = f.image("v09.img", "0.9.0", 5, 50_000, 7);
    assert_install_refused(
        &f,
        &v09,
        &[],
        "version 0.9.0 is older than slot B's 1.1.0 (pending: booted slot A has no record)",
    );
    // B's record forged to index 0 (CRC and SHA-256 recomputed, no key).
    let good = f.disk_bytes();
    forge_rollback_index_0(&f, "B");
    assert_install_refused(
        &f,
        &old,
        &["--allow-downgrade"],
        "booted slot A has no slot record while slot B has one: slot record does not verify",
    );
    // B cancelled (P=0 T=0, record kept): no longer pending, refused.
    std::fs::write(&f.disk, &good).unwrap();
    ok(f.run(&["--booted", "A", "cancel"]));
    assert_eq!(f.flags("B"), (0, 0, false));
    assert_install_refused(&f, &v11, &[], UNKNOWN_A);
    assert_cmd_refused(&f, &["activate", "B"], UNKNOWN_A);
}

/// The RAUC comparison bench's disk (../shared/bench/rauc/run.sh, the
/// `SLOT_LAYOUT=gpt` branch; slotctl.sh's config, image and command) at a
/// small scale: a zeroed file, `sgdisk` with the bench's arguments (ROOT-A
/// and ROOT-B; A priority 1 and successful, no slot record anywhere), then
/// `--booted A install --no-readback` repeated as the bench repeats it
/// (the head of ROOT-B wiped before the runs). Each install succeeds and
/// ROOT-B holds the payload; ROOT-A is never written. From the second on,
/// the first install's record (pending in B) is the floor.
#[test]
fn the_rauc_bench_disk_installs_repeatedly() {
    slotctl_tests::require_tool("sgdisk");
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let payload_bytes: usize = 512 << 10;
    let payload = w.join("payload.img");
    std::fs::write(&payload, test_bytes(payload_bytes, 11)).unwrap();
    let slot_bytes = payload_bytes + (1 << 20);
    let disk = w.join("disk.bin");
    std::fs::write(&disk, vec![0u8; 2 * slot_bytes + (4 << 20)]).unwrap();
    let size = format!("+{}K", slot_bytes / 1024);
    let out = Command::new("sgdisk")
        .args(["-o", "-n", &format!("1:2048:{size}"), "-c", "1:ROOT-A"])
        .args(["-n", &format!("2:0:{size}"), "-c", "2:ROOT-B"])
        .args(["-A", "1:set:48", "-A", "1:set:56"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(out.status.success(), "sgdisk: {out:?}");
    let part_off = |n: u32| -> usize {
        let out = Command::new("sgdisk")
            .arg("-i")
            .arg(n.to_string())
            .arg(&disk)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let first = text
            .lines()
            .find_map(|l| l.strip_prefix("First sector: "))
            .unwrap_or_else(|| panic!("sgdisk -i {n}: {text}"));
        first
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<usize>()
            .unwrap()
            * 512
    };
    let (off_a, off_b) = (part_off(1), part_off(2));

    // CANDIDATE_PREP_CMD of slotctl.sh.
    std::fs::create_dir_all(w.join("sc/ring")).unwrap();
    let sc = |p: &str| w.join("sc").join(p);
    ok(slotctl_tests::run_slotctl([
        os("keygen"),
        os("--out"),
        sc("k").as_os_str(),
    ]));
    std::fs::copy(sc("k.pub"), sc("ring/k.pub")).unwrap();
    let pack = |name: &str, index: &str| -> PathBuf {
        let mut part = std::ffi::OsString::from("ROOT=");
        part.push(&payload);
        ok(slotctl_tests::run_slotctl([
            os("image"),
            os("pack"),
            os("--key"),
            sc("k.key").as_os_str(),
            os("--version"),
            os("2.0.0"),
            os("--compatible"),
            os(COMPATIBLE),
            os("--rollback-index"),
            os(index),
            os("--part"),
            &part,
            os("-o"),
            sc(name).as_os_str(),
        ]));
        sc(name)
    };
    let v = pack("v.img", "1");
    let config = format!(
        "compatible = \"{COMPATIBLE}\"\nkeyring = \"{}\"\nlock_file = \"{}\"\n",
        sc("ring").display(),
        sc("lock").display()
    );
    std::fs::write(sc("c.toml"), config).unwrap();
    let install = |image: &Path| {
        slotctl_tests::run_slotctl([
            os("--config"),
            sc("c.toml").as_os_str(),
            os("--disk"),
            disk.as_os_str(),
            os("--booted"),
            os("A"),
            os("install"),
            os("--no-readback"),
            image.as_os_str(),
        ])
    };

    let want = std::fs::read(&payload).unwrap();
    for run in 0..3 {
        // "wipe the head of the target so the check below proves the
        // candidate wrote it"
        let mut d = std::fs::read(&disk).unwrap();
        d[off_b..off_b + payload_bytes].fill(0);
        std::fs::write(&disk, &d).unwrap();
        let out = install(&v);
        assert_eq!(out.status.code(), Some(0), "install run {run}: {out:?}");
        let d = std::fs::read(&disk).unwrap();
        assert!(
            d[off_b..off_b + payload_bytes] == want[..],
            "run {run}: ROOT-B does not hold the payload"
        );
        assert!(
            d[off_a..off_a + slot_bytes].iter().all(|&b| b == 0),
            "run {run}: ROOT-A was written"
        );
    }
    // There is a floor now (B's record, pending): an image below it is refused.
    let below = pack("below.img", "0");
    let before = std::fs::read(&disk).unwrap();
    assert_refused(
        &install(&below),
        3,
        "rollback index 0 is below slot B's 1 (pending: booted slot A has no record)",
    );
    assert!(std::fs::read(&disk).unwrap() == before);
}

/// A booted slot with no record (on trial: B) while the other slot (A)
/// holds one: the floor is unknown, so `rollback` is refused too, even
/// back to A whose record verifies. A single stray byte in B's region is a
/// damaged record, refused as such.
#[test]
fn a_booted_slot_without_a_record_refuses_rollback_when_the_other_has_one() {
    let (f, _) = provisioned();
    ok(f.run(&["set-flags", "A", "--priority", "1"]));
    ok(f.run(&["set-flags", "B", "--priority", "3", "--tries", "2"]));
    f.assert_refused_unchanged(
        &["--booted", "B", "rollback"],
        "rollback: booted slot B has no slot record while slot A has one: the rollback floor is unknown",
    );
    let mut disk = f.disk_bytes();
    disk[record_offset(&f, "B") + 4000] = 1;
    std::fs::write(&f.disk, &disk).unwrap();
    f.assert_refused_unchanged(
        &["--booted", "B", "rollback"],
        "rollback: booted slot B: slot record: no record magic",
    );
}

/// docs/slot-record.md's way out for a technician whose booted slot's
/// record is damaged: from a rescue system (no booted slot on this disk),
/// clear the good marks with `set-flags` and reprovision with
/// `install --factory`; the floor is back.
#[test]
fn technician_reprovisions_a_damaged_booted_slot() {
    let (f, old) = provisioned();
    zero_magic_byte(&f, "A");
    assert_install_refused(&f, &old, &[], "damaged record");
    // --factory refuses while A is still marked good ...
    let v1 = f.path("v1.img");
    let factory = [
        os("install"),
        os("--factory"),
        os("--slot"),
        os("A"),
        v1.as_os_str(),
    ];
    f.assert_refused_unchanged(&factory, "slot A is marked successful");
    // ... so the technician clears the marks, then reprovisions.
    f.clear_flags("A");
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
    let (v2, _) = f.image("v2.img", "2.0.0", 5, 50_000, 5);
    ok(f.run(&install_args(&v2, &[])));
    assert_eq!(f.flags("B"), (2, 3, false));
}
