//! The slot commands on real disk images, checked against cgpt, sfdisk and
//! sgdisk after every command, on 512- and 4096-byte-sector images.

use slotctl_tests::disk::{assert_one_line_error, assert_tools_agree, flags_of, text, Image};
use slotctl_tests::require_tool;

/// A whole install/boot/rollback cycle; the tools agree after each step.
fn cycle(ss: u32) {
    let img = Image::new(ss);
    let st = assert_tools_agree(&img);
    assert_eq!(st["next"], serde_json::Value::Null);
    assert_eq!(flags_of(&st, "A"), (0, 0, false));

    // Factory: A good.
    img.ok(&[
        "set-flags",
        "A",
        "--priority",
        "1",
        "--tries",
        "0",
        "--successful",
        "1",
    ]);
    let st = assert_tools_agree(&img);
    assert_eq!(flags_of(&st, "A"), (1, 0, true));
    assert_eq!(st["next"], "A");

    // Install into B from A (global options after the subcommand too).
    img.ok(&["activate", "B", "--booted", "A", "--tries", "3"]);
    let st = assert_tools_agree(&img);
    assert_eq!(flags_of(&st, "B"), (2, 3, false));
    assert_eq!(flags_of(&st, "A"), (1, 0, true));
    assert_eq!(st["next"], "B");

    // Boot: B on trial, one try used.
    let out = img.ok(&["boot-select"]);
    assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=B\n"));
    let st = assert_tools_agree(&img);
    assert_eq!(flags_of(&st, "B"), (2, 2, false));

    // The boot was good.
    img.ok(&["--booted", "B", "mark-good"]);
    let st = assert_tools_agree(&img);
    assert_eq!(flags_of(&st, "B"), (2, 2, true));

    // Roll back to A.
    img.ok(&["rollback", "--booted", "B"]);
    let st = assert_tools_agree(&img);
    assert_eq!(flags_of(&st, "A"), (2, 0, true));
    assert_eq!(flags_of(&st, "B"), (1, 2, true));
    assert_eq!(st["next"], "A");

    // Booted A again: mark B bad, then activate it and cancel.
    img.ok(&["--booted", "A", "mark-bad", "B"]);
    let st = assert_tools_agree(&img);
    assert_eq!(flags_of(&st, "B"), (0, 0, false));
    img.ok(&["--booted", "A", "activate", "B"]);
    img.ok(&["--booted", "A", "cancel"]);
    let st = assert_tools_agree(&img);
    assert_eq!(flags_of(&st, "A"), (2, 0, true));
    assert_eq!(flags_of(&st, "B"), (0, 0, false));
}

#[test]
fn cycle_512_agrees_with_cgpt_sfdisk_sgdisk() {
    cycle(512);
}

#[test]
fn cycle_4096_agrees_with_cgpt_sfdisk_sgdisk() {
    cycle(4096);
}

/// Flags written by `cgpt add` read back right in `slotctl status`, and
/// a later slotctl commit keeps cgpt's view consistent.
#[test]
fn cgpt_add_reads_back_in_status() {
    require_tool("cgpt");
    for ss in [512, 4096] {
        let img = Image::new(ss);
        {
            let view = img.tool_view();
            for args in [
                ["-i", "3", "-P", "5", "-T", "7", "-S", "1"],
                ["-i", "1", "-P", "9", "-T", "15", "-S", "0"],
            ] {
                let out = std::process::Command::new("cgpt")
                    .arg("add")
                    .args(args)
                    .arg(&view.path)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", text(&out.stderr));
            }
        }
        let st = assert_tools_agree(&img);
        assert_eq!(flags_of(&st, "B"), (5, 7, true));
        assert_eq!(flags_of(&st, "A"), (9, 15, false));
        assert_eq!(st["next"], "A");
        img.ok(&["set-flags", "B", "--tries", "1"]);
        let st = assert_tools_agree(&img);
        assert_eq!(flags_of(&st, "B"), (5, 1, true));
    }
}

#[test]
fn boot_select_output_and_dry_run() {
    let img = Image::new(512);
    img.ok(&["set-flags", "A", "--priority", "1", "--successful", "1"]);
    img.ok(&["--booted", "A", "activate", "B", "--tries", "2"]);
    let before = img.bytes();
    let out = img.ok(&["boot-select", "--dry-run"]);
    assert_eq!(img.bytes(), before, "--dry-run wrote to the disk");
    let st = img.status();
    let b = &st["slots"]["B"]["partitions"];
    assert_eq!(b[1]["role"], "ROOT");
    let p = img.path.display();
    let expected = format!(
        "SLOTCTL_SLOT=B\nSLOTCTL_PART_BOOT={p}\nSLOTCTL_PART_BOOT_OFFSET={}\nSLOTCTL_PART_BOOT_SIZE={}\nSLOTCTL_PART_ROOT={p}\nSLOTCTL_PART_ROOT_OFFSET={}\nSLOTCTL_PART_ROOT_SIZE={}\n",
        b[0]["offset"], b[0]["size"], b[1]["offset"], b[1]["size"],
    );
    assert_eq!(text(&out.stdout), expected);
    assert_eq!(b[1]["size"], 3 << 20);
    let human = text(&img.ok(&["status"]).stdout);
    assert!(human.contains("next boot: B\n"), "{human}");
    assert!(
        human.contains("gpt:       primary ok, backup ok\n"),
        "{human}"
    );
    assert!(
        human.contains("\nB     2         2      no          yes       1.0.0 (rb 0)        BOOT-B=3* ROOT-B=4\n"),
        "{human}"
    );

    // Two real boots use both tries; the third falls back to A.
    for left in [1, 0] {
        let out = img.ok(&["boot-select"]);
        assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=B\n"));
        assert_eq!(flags_of(&img.status(), "B"), (2, left, false));
    }
    // The boot that passes B over names why, once, in B's boot state.
    let out = img.ok(&["boot-select"]);
    assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=A\n"));
    assert_eq!(
        text(&out.stderr),
        "slotctl: warning: gave up slot B: its tries ran out: 2 boots did not reach boot-check\n"
    );
    let out = img.ok(&["boot-select"]);
    assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=A\n"));
    assert_eq!(text(&out.stderr), "", "a good boot warns about nothing");
    let st = img.status();
    assert_eq!(st["slots"]["A"]["boot_state"]["unchecked_boots"], 2);
    assert_eq!(
        st["slots"]["B"]["boot_state"]["given_up"],
        "its tries ran out: 2 boots did not reach boot-check"
    );
}

#[test]
fn boot_select_on_a_block_device_prints_partition_nodes() {
    let img = Image::new(4096);
    img.ok(&["set-flags", "A", "--priority", "1", "--successful", "1"]);
    let view = img.tool_view();
    let dev = view.path.display().to_string();
    let out = slotctl_tests::run_slotctl(["--disk", &dev, "boot-select"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.starts_with("SLOTCTL_SLOT=A\n"), "{s}");
    assert!(s.contains(&format!("SLOTCTL_PART_BOOT={dev}p1\n")), "{s}");
    assert!(s.contains(&format!("SLOTCTL_PART_ROOT={dev}p2\n")), "{s}");
    // The loop device reports 4096-byte sectors through sysfs.
    let out = slotctl_tests::run_slotctl(["--disk", &dev, "status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["sector_size"], 4096);
    assert_eq!(st["booted"], serde_json::Value::Null);
    assert_eq!(
        st["slots"]["B"]["partitions"][1]["device"],
        format!("{dev}p4")
    );
}

#[test]
fn no_bootable_slot_boots_a_loudly() {
    let img = Image::new(512);
    let before = img.bytes();
    let out = img.ok(&["boot-select"]);
    assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=A\n"));
    assert!(
        text(&out.stderr).contains("NO BOOTABLE SLOT"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(img.bytes(), before, "a last-resort boot changes no flags");
    // That boot is good: A becomes bootable again.
    img.ok(&["--booted", "A", "mark-good"]);
    let st = assert_tools_agree(&img);
    assert_eq!(flags_of(&st, "A"), (1, 0, true));
}

#[test]
fn corrupt_copies_are_repaired() {
    for ss in [512u64, 4096] {
        for copy in ["primary", "backup"] {
            let img = Image::new(ss as u32);
            img.ok(&["set-flags", "A", "--priority", "1", "--successful", "1"]);
            let mut bytes = img.bytes();
            let good = bytes.clone();
            let header = if copy == "primary" {
                ss as usize
            } else {
                bytes.len() - ss as usize
            };
            bytes[header + 0x30] ^= 0x01; // last usable LBA: CRC now wrong
            std::fs::write(&img.path, &bytes).unwrap();

            let st = img.status();
            assert!(
                st["gpt"][copy].as_str().unwrap().starts_with("bad: "),
                "{st}"
            );
            assert_eq!(flags_of(&st, "A"), (1, 0, true), "read from the good copy");

            let out = img.ok(&["repair"]);
            let msg = text(&out.stdout);
            assert!(
                msg.contains(&format!("rewrote the {copy} GPT copy")),
                "{msg}"
            );
            assert!(img.bytes() == good, "repair restores the exact bytes");
            assert_tools_agree(&img);
            let out = img.ok(&["repair"]);
            assert!(text(&out.stdout).contains("nothing to repair"));
        }
    }
}

#[test]
fn boot_select_repairs_before_using_a_try() {
    let img = Image::new(512);
    img.ok(&["set-flags", "A", "--priority", "1", "--successful", "1"]);
    img.ok(&["--booted", "A", "activate", "B"]);
    let mut bytes = img.bytes();
    bytes[512 + 0x30] ^= 0x01;
    std::fs::write(&img.path, &bytes).unwrap();
    let out = img.ok(&["boot-select"]);
    let err = text(&out.stderr);
    assert!(err.contains("rewrote the bad primary GPT copy"), "{err}");
    let st = assert_tools_agree(&img);
    assert_eq!(flags_of(&st, "B"), (2, 2, false));
}

#[test]
fn refusals_exit_3_and_change_nothing() {
    let img = Image::new(512);
    img.ok(&["set-flags", "A", "--priority", "1", "--successful", "1"]);
    let before = img.bytes();
    let cases: [(&[&str], &str); 7] = [
        (&["--booted", "A", "mark-bad"], "only bootable"),
        (&["--booted", "A", "rollback"], "not bootable"),
        (&["--booted", "A", "cancel"], "no pending activation"),
        (&["--booted", "A", "activate", "A"], "booted slot"),
        (&["mark-good"], "--booted"),
        (&["activate", "B"], "--booted"),
        (
            &["set-flags", "B", "--priority", "1"],
            "share a non-zero priority",
        ),
    ];
    for (args, needle) in cases {
        let out = img.run(args);
        assert_one_line_error(&out, needle);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert!(img.bytes() == before, "{args:?} changed the disk");
    }
    // B booted on trial: A is its only fallback and may not be touched.
    img.ok(&["--booted", "A", "activate", "B"]);
    let before = img.bytes();
    let out = img.run(&["--booted", "B", "activate", "A"]);
    assert_one_line_error(&out, "on trial");
    assert_eq!(out.status.code(), Some(3));
    assert!(img.bytes() == before);
    // mark-bad --force does what it is told.
    img.ok(&["--booted", "A", "mark-bad", "B"]);
    img.ok(&["--booted", "A", "mark-bad", "--force"]);
    assert_eq!(flags_of(&img.status(), "A"), (0, 0, false));
}

#[test]
fn disk_init_layout_file_and_no_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout.toml");
    std::fs::write(
        &layout,
        "sector_size = 4096\nsize = \"24M\"\n[[role]]\nname = \"BOOT\"\nsize = \"1M\"\n[[role]]\nname = \"ROOT\"\nsize = \"4M\"\n[[role]]\nname = \"HASH\"\nsize = \"512K\"\n[[shared]]\nname = \"STATE\"\nsize = \"2M\"\n",
    )
    .unwrap();
    let img = dir.path().join("x.img");
    let p = img.to_str().unwrap();
    slotctl_tests::disk::ok(&["disk", "init", p, "--layout", layout.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 24 << 20);
    let out = slotctl_tests::disk::ok(&["--disk", p, "status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["sector_size"], 4096);
    let names: Vec<&str> = st["slots"]["B"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["BOOT-B", "ROOT-B", "HASH-B"]);
    assert_eq!(st["shared"][0]["name"], "STATE");
    assert_eq!(st["shared"][0]["index"], 7);
    for p in st["slots"]["A"]["partitions"].as_array().unwrap() {
        assert_eq!(
            p["offset"].as_u64().unwrap() % (1 << 20),
            0,
            "1 MiB aligned"
        );
    }

    let before = std::fs::read(&img).unwrap();
    let out = slotctl_tests::run_slotctl(["disk", "init", p, "--role", "ROOT=1M"]);
    assert_one_line_error(&out, "already exists");
    assert!(std::fs::read(&img).unwrap() == before);
    slotctl_tests::disk::ok(&["disk", "init", p, "--role", "ROOT=1M", "--force"]);
    assert!(std::fs::read(&img).unwrap() != before);
}

#[test]
fn config_flags_role_moves_the_flags() {
    let img = Image::with_config(512, "flags_role = \"ROOT\"\ntries = 5\n");
    let cfg = img.config.clone();
    let c = cfg.to_str().unwrap();
    img.ok(&[
        "--config",
        c,
        "set-flags",
        "A",
        "--priority",
        "1",
        "--successful",
        "1",
    ]);
    img.ok(&["--config", c, "--booted", "A", "activate", "B"]);
    let out = img.ok(&["--config", c, "status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["slots"]["A"]["flags_partition"], 2);
    assert_eq!(st["slots"]["B"]["flags_partition"], 4);
    assert_eq!(flags_of(&st, "B"), (2, 5, false), "tries from the config");
    let view = img.tool_view();
    assert_eq!(view.cgpt_flags(4), (2, 5, 0));
    assert_eq!(view.cgpt_flags(2), (1, 0, 1));
    assert_eq!(view.cgpt_flags(1), (0, 0, 0), "BOOT-A untouched");
    assert_eq!(view.cgpt_flags(3), (0, 0, 0), "BOOT-B untouched");
    // A role that is not there: one line.
    std::fs::write(&cfg, "flags_role = \"HASH\"\n").unwrap();
    let out = img.run(&["--config", c, "status"]);
    slotctl_tests::disk::assert_one_line_error(&out, "no partition with the flags role HASH");
}

#[test]
fn activate_requires_a_verified_slot_record() {
    let img = Image::new(512);
    img.ok(&["set-flags", "A", "--priority", "1", "--successful", "1"]);
    let st = img.status();
    assert_eq!(st["slots"]["B"]["installed"]["version"], "1.0.0");

    // The slot's ROOT no longer matches its signed record: refused, nothing written.
    let root_b = &st["slots"]["B"]["partitions"][1];
    assert_eq!(root_b["role"], "ROOT");
    let off = root_b["offset"].as_u64().unwrap() as usize;
    let mut bytes = img.bytes();
    bytes[off + 100] ^= 0x01;
    std::fs::write(&img.path, &bytes).unwrap();
    let out = img.run(&["--booted", "A", "activate", "B"]);
    assert_one_line_error(&out, "activate");
    assert_eq!(out.status.code(), Some(3));
    assert!(img.bytes() == bytes, "a refused activate changed the disk");

    // Restored: activate works.
    bytes[off + 100] ^= 0x01;
    std::fs::write(&img.path, &bytes).unwrap();
    img.ok(&["--booted", "A", "activate", "B"]);
    assert_eq!(flags_of(&img.status(), "B"), (2, 3, false));

    // A disk without any slot record: refused, naming the record.
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.img");
    let b = bare.to_str().unwrap();
    slotctl_tests::disk::ok(&["disk", "init", b, "--role", "BOOT=2M", "--role", "ROOT=3M"]);
    let c = img.config.to_str().unwrap();
    slotctl_tests::disk::ok(&[
        "--disk",
        b,
        "set-flags",
        "A",
        "--priority",
        "1",
        "--successful",
        "1",
    ]);
    let before = std::fs::read(&bare).unwrap();
    let out =
        slotctl_tests::run_slotctl(["--disk", b, "--config", c, "--booted", "A", "activate", "B"]);
    let line = assert_one_line_error(&out, "record");
    assert_eq!(out.status.code(), Some(3), "{line}");
    assert!(std::fs::read(&bare).unwrap() == before);
}

/// The boot counter through the CLI: a committed slot whose boots never
/// reach boot-check is given up after `--max-unchecked-boots` boots for the
/// good other slot; stderr and `status` say why; mark-good clears a count.
#[test]
fn boot_select_gives_up_a_committed_slot_that_never_reaches_boot_check() {
    for ss in [512, 4096] {
        let img = Image::new(ss);
        img.ok(&["set-flags", "A", "--priority", "1", "--successful", "1"]);
        img.ok(&["set-flags", "B", "--priority", "2", "--successful", "1"]);
        for n in 1..=2 {
            let out = img.ok(&["boot-select", "--max-unchecked-boots", "2"]);
            assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=B\n"));
            assert_eq!(text(&out.stderr), "");
            let st = img.status();
            assert_eq!(
                st["slots"]["B"]["boot_state"],
                serde_json::json!({"unchecked_boots": n, "given_up": null})
            );
        }
        // A dry run says what the next boot does, and writes nothing.
        let before = img.bytes();
        let out = img.ok(&["boot-select", "--dry-run", "--max-unchecked-boots", "2"]);
        assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=A\n"));
        assert!(text(&out.stderr).starts_with("slotctl: warning: would give up slot B"));
        assert_eq!(img.bytes(), before, "--dry-run wrote to the disk");
        let out = img.ok(&["boot-select", "--max-unchecked-boots", "2"]);
        assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=A\n"));
        assert_eq!(
            text(&out.stderr),
            "slotctl: warning: gave up slot B: 2 boots in a row did not reach boot-check\n"
        );
        let st = assert_tools_agree(&img);
        assert_eq!(flags_of(&st, "B"), (2, 0, false));
        assert_eq!(
            st["slots"]["B"]["boot_state"]["given_up"],
            "2 boots in a row did not reach boot-check"
        );
        assert_eq!(st["slots"]["A"]["boot_state"]["unchecked_boots"], 1);
        let human = text(&img.ok(&["status"]).stdout);
        assert!(
            human.contains(
                "slot B:    2 boots in a row did not reach boot-check; \
                 given up: 2 boots in a row did not reach boot-check\n"
            ),
            "{human}"
        );
        // B is never chosen again; A reaches boot-check: its count clears.
        let out = img.ok(&["boot-select"]);
        assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=A\n"));
        assert_eq!(
            img.status()["slots"]["A"]["boot_state"]["unchecked_boots"],
            2
        );
        img.ok(&["--booted", "A", "mark-good"]);
        let st = img.status();
        assert_eq!(
            st["slots"]["A"]["boot_state"],
            serde_json::json!({"unchecked_boots": 0, "given_up": null})
        );
        assert_eq!(flags_of(&st, "B"), (2, 0, false));
    }
}

/// With no good other slot the failing committed slot still boots, loudly.
#[test]
fn boot_select_boots_the_only_good_slot_past_the_bound() {
    let img = Image::new(512);
    img.ok(&["set-flags", "A", "--priority", "1", "--successful", "1"]);
    for n in 1..=3 {
        let out = img.ok(&["boot-select", "--max-unchecked-boots", "2"]);
        assert!(text(&out.stdout).starts_with("SLOTCTL_SLOT=A\n"));
        if n <= 2 {
            assert_eq!(text(&out.stderr), "");
        } else {
            assert_eq!(
                text(&out.stderr),
                "slotctl: WARNING: slot A: 2 boots in a row did not reach boot-check, \
                 but slot B is not good: booting A anyway\n"
            );
        }
    }
    let st = img.status();
    assert_eq!(flags_of(&st, "A"), (1, 0, true));
    assert_eq!(st["slots"]["A"]["boot_state"]["unchecked_boots"], 3);
    // 0 turns the counter off: nothing written.
    let before = img.bytes();
    img.ok(&["boot-select", "--max-unchecked-boots", "0"]);
    assert_eq!(img.bytes(), before);
    let out = img.run(&["boot-select", "--max-unchecked-boots", "256"]);
    assert_eq!(out.status.code(), Some(2));
}
