//! Bad input: one clear error line, a non-zero exit, and the disk
//! byte-for-byte as it was, for reading and writing commands alike.

use std::path::Path;
use std::process::{Command, Stdio};

use slotctl_tests::disk::{assert_one_line_error, path_str, text, Image};
use slotctl_tests::{require_tool, run_slotctl};

/// Commands that must all refuse a bad disk without writing.
const COMMANDS: [&[&str]; 5] = [
    &["status"],
    &["status", "--json"],
    &["boot-select"],
    &["repair"],
    &["--booted", "A", "mark-bad", "A", "--force"],
];

fn assert_refused_untouched(disk: &Path, needle: &str) {
    let before = std::fs::read(disk).ok();
    for cmd in COMMANDS {
        let mut args = vec!["--disk", path_str(disk)];
        args.extend_from_slice(cmd);
        let out = run_slotctl(&args);
        let line = assert_one_line_error(&out, needle);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {line}");
        assert!(out.stdout.is_empty(), "{cmd:?} printed to stdout");
        assert!(
            std::fs::read(disk).ok() == before,
            "{cmd:?} changed {}",
            disk.display()
        );
    }
}

/// A blank 8 MiB file partitioned by sgdisk with the given names.
fn sgdisk_image(dir: &Path, names: &[&str]) -> std::path::PathBuf {
    require_tool("sgdisk");
    let p = dir.join("sg.img");
    std::fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
    let mut cmd = Command::new("sgdisk");
    cmd.arg("-o");
    for (i, name) in names.iter().enumerate() {
        let n = i + 1;
        cmd.arg(format!("-n={n}:{}:+512K", 2048 + i * 2048));
        cmd.arg(format!("-c={n}:{name}"));
    }
    let out = cmd.arg(&p).output().unwrap();
    assert!(out.status.success(), "sgdisk: {}", text(&out.stderr));
    p
}

#[test]
fn no_ab_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let p = sgdisk_image(dir.path(), &["DATA", "STATE"]);
    assert_refused_untouched(&p, "no A/B slots");
    let p = sgdisk_image(dir.path(), &["BOOT-A", "ROOT-A", "DATA"]);
    assert_refused_untouched(&p, "no partition name ends in -B");
}

#[test]
fn roles_differ_between_slots() {
    let dir = tempfile::tempdir().unwrap();
    let p = sgdisk_image(dir.path(), &["BOOT-A", "ROOT-A", "BOOT-B", "HASH-B"]);
    assert_refused_untouched(&p, "only in A: [ROOT]; only in B: [HASH]");
    let p = sgdisk_image(dir.path(), &["ROOT-A", "ROOT-A", "ROOT-B"]);
    assert_refused_untouched(&p, "two partitions with role ROOT");
}

#[test]
fn both_copies_corrupt() {
    for ss in [512usize, 4096] {
        let img = Image::new(ss as u32);
        let mut b = img.bytes();
        let n = b.len();
        b[ss + 0x30] ^= 1;
        b[n - ss + 0x30] ^= 1;
        std::fs::write(&img.path, &b).unwrap();
        assert_refused_untouched(&img.path, "both GPT copies are corrupt");
    }
}

#[test]
fn mbr_only_disk() {
    require_tool("sfdisk");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mbr.img");
    std::fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
    let mut child = Command::new("sfdisk")
        .arg(&p)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\n,1M\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_refused_untouched(&p, "MBR partition table only");
    // A file of zeros: no partition table at all.
    let z = dir.path().join("zero.img");
    std::fs::File::create(&z).unwrap().set_len(8 << 20).unwrap();
    assert_refused_untouched(&z, "no partition table");
}

#[test]
fn truncated_image() {
    let img = Image::new(512);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    drop(f);
    assert_refused_untouched(&img.path, "truncated");
    // Cut to a few bytes: no GPT can be there.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img.path)
        .unwrap()
        .set_len(700)
        .unwrap();
    assert_refused_untouched(&img.path, "no GPT");
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.img");
    assert_refused_untouched(&p, "No such file");
    assert!(!p.exists(), "no command may create the disk");
}

#[test]
fn slot_that_does_not_exist() {
    let img = Image::new(512);
    img.ok(&["set-flags", "A", "--priority", "1", "--successful", "1"]);
    let before = img.bytes();
    let cases: [&[&str]; 5] = [
        &["mark-bad", "C"],
        &["activate", "C"],
        &["set-flags", "C", "--priority", "1"],
        &["--booted", "C", "status"],
        &["set-flags", "B", "--priority", "16"],
    ];
    for args in cases {
        let out = img.run(args);
        let needle = if args.contains(&"16") {
            "out of range"
        } else {
            "no slot \"C\""
        };
        if args[0] == "--booted" {
            // clap checks --booted itself (usage error, exit 2).
            assert_eq!(out.status.code(), Some(2), "{args:?}");
        } else {
            assert_one_line_error(&out, needle);
        }
        assert!(img.bytes() == before, "{args:?} changed the disk");
    }
}
