//! `slotctl boot-check` on disk images: health checks from the config, then
//! mark-good; on failure mark-bad and the configured reboot command; nothing
//! harmful when the slot is already good. The reboot command of the test
//! config only creates a file (Fix::rebooted).

use slotctl_tests::installfix::*;

const PASSING: &str = r#"
[[boot_check.checks]]
name = "true"
command = ["true"]

[[boot_check.checks]]
name = "shell"
command = ["sh", "-c", "exit 0"]
"#;

#[test]
fn passing_checks_mark_the_booted_slot_good() {
    let f = Fix::updated(PASSING);
    let out = ok(f.run(&["boot-check", "--booted", "B"]));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("slot B marked good (2 health check(s) passed)"),
        "{s}"
    );
    assert_eq!(f.flags("B"), (2, 3, true));
    assert_eq!(f.flags("A"), (1, 0, true));
    assert!(!f.rebooted.exists());
}

#[test]
fn already_good_does_nothing() {
    let f = Fix::updated(
        r#"
[[boot_check.checks]]
name = "would-fail"
command = ["false"]
"#,
    );
    let before = f.disk_bytes();
    let out = ok(f.run(&["boot-check", "--booted", "A"]));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("slot A is already marked good; nothing to do"),
        "{s}"
    );
    assert!(
        f.disk_bytes() == before,
        "boot-check on a good slot wrote to the disk"
    );
    assert!(!f.rebooted.exists());
}

/// A committed slot's boot that reaches boot-check clears its boot
/// counter (docs/state-machine.md, "The boot counter"), and only that.
#[test]
fn already_good_clears_the_boot_counter() {
    let f = Fix::updated(
        r#"
[[boot_check.checks]]
name = "would-fail"
command = ["false"]
"#,
    );
    // B on trial: A is made the next boot, then booted twice without
    // boot-check.
    ok(f.run(&["--booted", "A", "cancel"]));
    for _ in 0..2 {
        let out = ok(f.run(&["boot-select"]));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("SLOTCTL_SLOT=A\n"));
    }
    let boot_state = |f: &Fix| f.status(None)["slots"]["A"]["boot_state"].clone();
    assert_eq!(boot_state(&f)["unchecked_boots"], 2);
    let flags = (f.flags("A"), f.flags("B"));
    let out = ok(f.run(&["boot-check", "--booted", "A"]));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("slot A is already marked good; its boot counter is cleared"),
        "{s}"
    );
    assert_eq!(
        boot_state(&f),
        serde_json::json!({"unchecked_boots": 0, "given_up": null})
    );
    assert_eq!((f.flags("A"), f.flags("B")), flags);
    assert!(!f.rebooted.exists());
}

#[test]
fn failing_check_marks_bad_and_reboots() {
    let f = Fix::updated(
        r#"
[[boot_check.checks]]
name = "ok"
command = ["true"]

[[boot_check.checks]]
name = "app"
command = ["sh", "-c", "exit 7"]
"#,
    );
    let out = f.run(&["boot-check", "--booted", "B"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = error_line(&out);
    assert!(
        err.contains("health check \"app\" failed") && err.contains("slot B marked bad, rebooting"),
        "{err}"
    );
    assert_eq!(f.flags("B"), (0, 0, false));
    assert_eq!(f.flags("A"), (1, 0, true));
    assert!(f.rebooted.exists(), "reboot command not run");
}

#[test]
fn check_timeout_counts_as_failure() {
    let f = Fix::updated(
        r#"
[[boot_check.checks]]
name = "hangs"
command = ["sleep", "30"]
timeout_secs = 1
"#,
    );
    let t = std::time::Instant::now();
    let out = f.run(&["boot-check", "--booted", "B"]);
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(error_line(&out).contains("timed out after 1s"));
    assert_eq!(f.flags("B"), (0, 0, false));
}

#[test]
fn no_reboot_when_configured_off() {
    let f = Fix::updated(
        r#"
[[boot_check.checks]]
name = "fails"
command = ["false"]
"#,
    );
    // Switch reboot_on_failure off in the config.
    let cfg = std::fs::read_to_string(&f.config)
        .unwrap()
        .replace("reboot_on_failure = true", "reboot_on_failure = false");
    std::fs::write(&f.config, cfg).unwrap();
    let out = f.run(&["boot-check", "--booted", "B"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(error_line(&out).contains("slot B marked bad"));
    assert_eq!(f.flags("B"), (0, 0, false));
    assert!(!f.rebooted.exists());
}

#[test]
fn only_bootable_slot_is_left_alone_on_failure() {
    let f = Fix::with_config_extra(
        r#"
[[boot_check.checks]]
name = "fails"
command = ["false"]
"#,
    );
    f.provision_a("1.0.0", 1);
    // A on trial and the only bootable slot.
    ok(f.run(&[
        "set-flags",
        "A",
        "--priority",
        "2",
        "--tries",
        "2",
        "--successful",
        "0",
    ]));
    let before = f.disk_bytes();
    let out = f.run(&["boot-check", "--booted", "A"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(error_line(&out).contains("only bootable slot"));
    assert!(f.disk_bytes() == before);
    assert!(!f.rebooted.exists());
}
