//! A primary GPT that is valid but whose alternate LBA leaves no room to
//! rebuild the backup (issue 11, smaller items): `boot-select` used to
//! exit 1 ("no room for the backup GPT copy") and boot nothing. It now
//! boots from the valid primary and writes nothing (a slot on trial is
//! passed over: its try cannot be recorded); every command that would
//! write refuses in one line before writing, the disk byte-identical.
//!
//! The disk is partitioned by the real `sgdisk`; the primary's alternate
//! LBA is then set just past the last usable LBA with both CRCs valid, and
//! `sgdisk -v` and `cgpt show -v` confirm what was made: main header OK,
//! backup header not found where the primary says.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use slotctl_tests::disk::{path_str, text};
use slotctl_tests::installfix::Fix;
use slotctl_tests::{require_tool, run_slotctl};

const SS: usize = 512;

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Set the primary header's alternate LBA to its last usable LBA + 1 and
/// recompute its CRC (the entry array, and so its CRC, are unchanged).
/// Returns the new alternate LBA.
fn break_alternate(disk: &Path) -> u64 {
    let mut b = std::fs::read(disk).unwrap();
    let h = &mut b[SS..2 * SS];
    assert_eq!(&h[..8], b"EFI PART");
    let size = u32::from_le_bytes(h[12..16].try_into().unwrap()) as usize;
    let alternate = u64_at(h, 48) + 1;
    h[32..40].copy_from_slice(&alternate.to_le_bytes());
    h[16..20].fill(0);
    let crc = crc32fast::hash(&h[..size]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(disk, &b).unwrap();
    alternate
}

/// The validators' view of the crafted disk (read-only commands).
fn validate_crafted(disk: &Path, alternate: u64) {
    let before = std::fs::read(disk).unwrap();
    let sg = Command::new("sgdisk").arg("-v").arg(disk).output().unwrap();
    // sgdisk prints its verdicts on both streams.
    let out = text(&sg.stdout) + &text(&sg.stderr);
    assert!(out.contains("Main header: OK"), "sgdisk -v: {out}");
    assert!(out.contains("Backup header: ERROR"), "sgdisk -v: {out}");
    assert!(out.contains("Main partition table: OK"), "sgdisk -v: {out}");
    let cg = Command::new("cgpt")
        .args(["show", "-v"])
        .arg(disk)
        .output()
        .unwrap();
    let out = text(&cg.stdout);
    assert!(cg.status.success(), "cgpt: {}", text(&cg.stderr));
    assert!(
        out.contains(&format!("Alternate LBA: {alternate}")),
        "cgpt show -v: {out}"
    );
    assert!(
        !out.contains("INVALID"),
        "cgpt: the primary must be valid: {out}"
    );
    assert!(std::fs::read(disk).unwrap() == before, "a validator wrote");
}

/// A 12 MiB disk partitioned by sgdisk: BOOT-A ROOT-A BOOT-B ROOT-B.
fn sgdisk_disk(dir: &Path) -> PathBuf {
    require_tool("sgdisk");
    require_tool("cgpt");
    let p = dir.join("sg.img");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(12 << 20)
        .unwrap();
    let mut cmd = Command::new("sgdisk");
    cmd.arg("-o");
    for (i, name) in ["BOOT-A", "ROOT-A", "BOOT-B", "ROOT-B"].iter().enumerate() {
        let n = i + 1;
        cmd.arg(format!("-n={n}:{}:+2M", 2048 + i * 4096));
        cmd.arg(format!("-c={n}:{name}"));
    }
    let out = cmd.arg(&p).output().unwrap();
    assert!(out.status.success(), "sgdisk: {}", text(&out.stderr));
    p
}

fn run(disk: &Path, args: &[&str]) -> Output {
    let mut v = vec!["--disk", path_str(disk)];
    v.extend_from_slice(args);
    run_slotctl(&v)
}

fn ok(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
    out
}

/// Exit 1 (a disk that cannot be written is bad input, as a corrupt one
/// is), one line naming why.
fn refused_unwritable(out: &Output, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: {err}");
    assert!(
        err.starts_with("slotctl: error: ")
            && err.contains("cannot be written safely")
            && err.contains("no room for the backup GPT copy"),
        "{what}: {err}"
    );
}

#[test]
fn boot_select_boots_a_valid_primary_whose_backup_cannot_be_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let disk = sgdisk_disk(d.path());
    // A good at 14; B on trial at 15 (boots next when the disk is writable).
    ok(
        run(
            &disk,
            &["set-flags", "A", "--priority", "14", "--successful", "1"],
        ),
        "A",
    );
    ok(
        run(
            &disk,
            &["set-flags", "B", "--priority", "15", "--tries", "3"],
        ),
        "B",
    );
    let alternate = break_alternate(&disk);
    validate_crafted(&disk, alternate);
    let before = std::fs::read(&disk).unwrap();

    // Trial B cannot use a try: A boots, two warnings, nothing written.
    for args in [&["boot-select"][..], &["boot-select", "--dry-run"]] {
        let out = ok(run(&disk, args), "boot-select");
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with("SLOTCTL_SLOT=A\n"), "{stdout}");
        let err = text(&out.stderr);
        assert!(
            err.contains("slotctl: warning: the partition table cannot be written safely")
                && err.contains("no room for the backup GPT copy")
                && err.contains(
                    "slotctl: warning: slot B is on trial but its try cannot be recorded"
                ),
            "{err}"
        );
        assert!(std::fs::read(&disk).unwrap() == before, "{args:?} wrote");
    }
    // status reads it (read-only).
    let st = ok(run(&disk, &["status"]), "status");
    assert!(
        text(&st.stdout).contains("primary ok, backup bad"),
        "{}",
        text(&st.stdout)
    );

    // Every command that would write refuses in one line, nothing written.
    let writers: [&[&str]; 8] = [
        &["repair"],
        &["--booted", "A", "mark-good"],
        &["--booted", "A", "mark-bad", "B"],
        &["--booted", "A", "cancel"],
        &["--booted", "A", "rollback"],
        &["--booted", "A", "activate", "B"],
        &["set-flags", "A", "--priority", "1"],
        &["boot-check", "--booted", "A"],
    ];
    for args in writers {
        refused_unwritable(&run(&disk, args), &format!("{args:?}"));
        assert!(std::fs::read(&disk).unwrap() == before, "{args:?} wrote");
    }
    validate_crafted(&disk, alternate);
}

#[test]
fn install_refuses_a_disk_whose_table_cannot_be_written_before_writing() {
    require_tool("sgdisk");
    require_tool("cgpt");
    let f = Fix::provisioned("1.0.0", 1);
    let (v2, _) = f.image("v2.img", "2.0.0", 2, 50_000, 2);
    let alternate = break_alternate(&f.disk);
    validate_crafted(&f.disk, alternate);
    let before = f.disk_bytes();
    let out = f.run(&[
        "install".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        v2.as_os_str(),
    ]);
    refused_unwritable(&out, "install");
    assert!(f.disk_bytes() == before, "install wrote");
    // boot-select still boots the factory slot A from it, writing nothing.
    let out = f.run(&["boot-select"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=A\n"));
    assert!(f.disk_bytes() == before, "boot-select wrote");
}
