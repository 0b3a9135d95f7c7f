//! The systemd units in packaging/ (slotctl-dbus.service included) pass
//! `systemd-analyze verify` (with ExecStart pointed at the binary under
//! test, which must exist and run), and the boot check is ordered before
//! boot-complete.target.

use slotctl_tests::{require_tool, slotctl_bin};

fn packaging(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn verify(unit_name: &str, text: &str) {
    require_tool("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let text = text.replace("/usr/bin/slotctl", &slotctl_bin().display().to_string());
    let path = dir.path().join(unit_name);
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify {unit_name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn boot_check_unit_verifies_and_is_ordered_before_boot_complete() {
    let text = packaging("slotctl-boot-check.service");
    assert!(text.contains("Before=boot-complete.target"));
    assert!(text.contains("ExecStart=/usr/bin/slotctl boot-check"));
    verify("slotctl-boot-check.service", &text);
}

#[test]
fn install_template_unit_verifies() {
    let text = packaging("slotctl-install@.service");
    assert!(text.contains("ExecStart=/usr/bin/slotctl install --json %I"));
    verify("slotctl-install@example.service", &text);
}

/// The D-Bus service's unit (issue 16): Type=dbus with its bus name, run
/// by the real `slotctl-dbus` built next to `slotctl`; the activation file
/// names the same command and unit.
#[test]
fn dbus_service_unit_verifies_and_matches_the_activation_file() {
    let text = packaging("slotctl-dbus.service");
    assert!(text.contains("\nType=dbus\n"), "{text}");
    assert!(text.contains("\nBusName=org.slotctl.Updater1\n"), "{text}");
    assert!(
        text.contains("\nExecStart=/usr/bin/slotctl-dbus --system\n"),
        "{text}"
    );
    let bin = slotctl_bin().with_file_name("slotctl-dbus");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p slotctl-dbus` first",
        bin.display()
    );
    verify("slotctl-dbus.service", &text);
    let act = packaging("dbus/org.slotctl.Updater1.service");
    for line in [
        "[D-BUS Service]",
        "Name=org.slotctl.Updater1",
        "Exec=/usr/bin/slotctl-dbus --system",
        "User=root",
        "SystemdService=slotctl-dbus.service",
    ] {
        assert!(act.lines().any(|l| l == line), "{line} missing: {act}");
    }
}
