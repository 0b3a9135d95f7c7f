//! The D-Bus service (issue 16) on a real `dbus-daemon` the test starts on
//! a private bus, with the shipped policy (tests/src/dbusfix.rs), driving
//! the real `slotctl-dbus` and through it the real `slotctl` on a disk
//! image:
//!
//! - an install over D-Bus: progress signals in the install's own order
//!   (the phases of a CLI `--json` install of the same image), BytesDone
//!   never decreasing within a phase, `Completed` last, its result's
//!   `status` equal to `slotctl status --json` afterwards;
//! - a second Install while one runs: `Busy` (and a CLI install then: the
//!   lock, exit 4); Cancel: `Completed(false)` saying cancelled,
//!   the target slot unbootable, the booted slot untouched; Cancel with
//!   nothing running: `NotRunning`;
//! - malformed arguments (unknown option, wrong types, bad scheme, relative
//!   path, bad slot): `InvalidArgs` naming the problem (a wrong method
//!   signature: zbus's own error naming both signatures), the disk byte for
//!   byte unchanged; a policy refusal of the CLI: `Refused`;
//! - an unprivileged caller (uid 65534, no groups) is refused Install,
//!   MarkGood, Cancel and Rollback by the shipped policy and may read
//!   GetStatus and the properties;
//! - Rollback, MarkGood, MarkBad change the flags as the CLI does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;
use slotctl_tests::dbusfix::{Bus, NAME};
use slotctl_tests::http::{Mode, TestServer};
use slotctl_tests::installfix::*;
use zbus::zvariant::{OwnedValue, Value as ZValue};

const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
const BUSY: &str = "org.slotctl.Updater1.Error.Busy";
const NOT_RUNNING: &str = "org.slotctl.Updater1.Error.NotRunning";
const REFUSED: &str = "org.slotctl.Updater1.Error.Refused";

/// Slot A good and booted (1.0.0), B good (0.9.0): a failed install into B
/// visibly changes B. A 2.0.0 update with a 3.5 MB uncompressed ROOT.
fn setup() -> (Fix, PathBuf) {
    let f = Fix::two_good_slots("1.0.0", 1);
    let (update, _) = f.image_with("v2.img", "2.0.0", 1, 3_500_000, 2, "none");
    (f, update)
}

/// A signal as the test saw it.
#[derive(Debug)]
enum Sig {
    Changed(HashMap<String, OwnedValue>),
    Completed(bool, String, String),
}

fn next_signal(rx: &Receiver<zbus::Message>, deadline: Instant) -> Sig {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = rx
            .recv_timeout(left)
            .expect("no signal before the deadline");
        let h = m.header();
        let member = h.member().map(|m| m.to_string()).unwrap_or_default();
        match member.as_str() {
            "PropertiesChanged" => {
                let (iface, changed, _): (String, HashMap<String, OwnedValue>, Vec<String>) =
                    m.body().deserialize().unwrap();
                assert_eq!(iface, NAME);
                return Sig::Changed(changed);
            }
            "Completed" => {
                let (ok, msg, result): (bool, String, String) = m.body().deserialize().unwrap();
                return Sig::Completed(ok, msg, result);
            }
            _ => {}
        }
    }
}

fn string(v: &OwnedValue) -> String {
    String::try_from(v.try_clone().unwrap()).unwrap()
}

fn u64_of(v: &OwnedValue) -> u64 {
    u64::try_from(v).unwrap()
}

/// The (phase, role) sequence of a CLI `slotctl install --json` of `img`
/// onto a copy of the fixture's disk.
fn cli_phases(f: &Fix, img: &Path) -> Vec<(String, String)> {
    let copy = f.path("copy.img");
    std::fs::copy(&f.disk, &copy).unwrap();
    let out = ok(slotctl_tests::run_slotctl([
        "install".as_ref(),
        "--json".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        "--disk".as_ref(),
        copy.as_os_str(),
        "--config".as_ref(),
        f.config.as_os_str(),
        img.as_os_str(),
    ]));
    std::fs::remove_file(&copy).unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "phase")
        .map(|v| {
            (
                v["phase"].as_str().unwrap().into(),
                v["role"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn status_now(f: &Fix) -> Value {
    let out = ok(f.run(&["status", "--json", "--booted", "A"]));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn install_over_dbus_reports_progress_in_order_and_completes_with_status() {
    let (f, update) = setup();
    let expected = cli_phases(&f, &update);
    assert!(expected.len() >= 4, "{expected:?}");
    let bus = Bus::start(&f);
    let rx = bus.signals();
    bus.install(update.to_str().unwrap(), &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut phases: Vec<(String, String)> = Vec::new();
    let (mut done, mut total) = (0u64, 0u64);
    let mut role = String::new();
    let mut operations = Vec::new();
    let (ok_, message, result) = loop {
        match next_signal(&rx, deadline) {
            Sig::Changed(c) => {
                if let Some(op) = c.get("Operation") {
                    operations.push(string(op));
                }
                if let Some(r) = c.get("Role") {
                    role = string(r);
                }
                if let Some(p) = c.get("Phase") {
                    let p = string(p);
                    if !p.is_empty() {
                        // The previous phase ended complete.
                        assert_eq!(done, total, "phase {phases:?} ended at {done}/{total}");
                        phases.push((p, role.clone()));
                        done = 0;
                    }
                }
                if let Some(t) = c.get("BytesTotal") {
                    total = u64_of(t);
                }
                if let Some(d) = c.get("BytesDone") {
                    let d = u64_of(d);
                    if !c.contains_key("Phase") {
                        assert!(d >= done, "BytesDone went from {done} to {d} in {phases:?}");
                    }
                    assert!(d <= total, "BytesDone {d} > BytesTotal {total}");
                    if let Some(p) = c.get("Percent") {
                        let want = (d * 100).checked_div(total).unwrap_or(0);
                        assert_eq!(u64::from(u32::try_from(p).unwrap()), want);
                    }
                    done = d;
                }
            }
            Sig::Completed(ok_, message, result) => break (ok_, message, result),
        }
    };
    assert_eq!(phases, expected, "the phases in the install's order");
    assert_eq!(done, total, "the last phase ended complete");
    assert_eq!(operations, ["install", ""], "Operation set, then cleared");
    assert!(ok_, "{message} {result}");
    assert_eq!(
        message,
        "installed 2.0.0 into slot B; it boots next (3 tries)"
    );
    // Completed was the last signal of the install.
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["ok"], true);
    assert_eq!(result["slot"], "B");
    assert_eq!(result["version"], "2.0.0");
    let now = status_now(&f);
    assert_eq!(result["status"], now, "Completed's status vs status --json");
    let over_bus: Value = serde_json::from_str(&bus.call_string("GetStatus")).unwrap();
    assert_eq!(over_bus, now);
    assert_eq!(f.flags("B"), (2, 3, false));
    f.assert_partition_holds("B", "ROOT", &f.path("v2.root"));
    assert_eq!(string(&bus.property("Operation")), "");
    assert_eq!(string(&bus.property("LastError")), "");
    assert_eq!(u32::try_from(&bus.property("Percent")).unwrap(), 100);
}

#[test]
fn second_install_is_busy_and_cancel_leaves_the_target_unbootable() {
    let (f, update) = setup();
    // 1,000,000 bytes at once, then a byte every 20 ms: the install is
    // still writing B when the test asks.
    let srv = TestServer::start(
        &update,
        Mode::Trickle {
            after: 1_000_000,
            every_ms: 20,
        },
    );
    let before = status_now(&f);
    let a_before = (f.read_partition("A", "BOOT"), f.read_partition("A", "ROOT"));
    let bus = Bus::start(&f);
    let (name, msg) = bus.call("Cancel", &()).unwrap_err();
    assert_eq!(
        (name.as_str(), msg.as_str()),
        (NOT_RUNNING, "no install is running")
    );
    let rx = bus.signals();
    bus.install(&srv.url("v2.img"), &[("no-readback", ZValue::Bool(true))])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut phase = String::new();
    loop {
        match next_signal(&rx, deadline) {
            Sig::Changed(c) => {
                if let Some(p) = c.get("Phase") {
                    phase = string(p);
                }
                if phase == "write" && c.get("BytesDone").is_some_and(|d| u64_of(d) > 0) {
                    break;
                }
            }
            Sig::Completed(ok_, m, _) => panic!("the install ended early: {ok_} {m}"),
        }
    }
    assert_eq!(string(&bus.property("Operation")), "install");
    // A second install: the service's own Busy.
    let (name, msg) = bus.install(update.to_str().unwrap(), &[]).unwrap_err();
    assert_eq!(name, BUSY, "{msg}");
    assert_eq!(msg, "an install is already running");
    // The service's install holds the CLI's lock: a CLI install is busy
    // (exit 4), the disk as it is.
    let out = f.run(&["install", "--booted", "A", update.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // Cancel: SIGTERM to `slotctl install`, which ends with exit 6.
    bus.call("Cancel", &()).unwrap();
    let (ok_, message, result) = loop {
        if let Sig::Completed(ok_, m, r) = next_signal(&rx, deadline) {
            break (ok_, m, r);
        }
    };
    assert!(!ok_);
    assert!(
        message.starts_with("install cancelled by SIGTERM before activation"),
        "{message}"
    );
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["cancelled"], true, "{result}");
    assert_eq!(result["ok"], false, "{result}");
    let after = status_now(&f);
    assert_eq!(result["status"], after);
    assert_status_unchanged_but_target(&before, &after, "B");
    assert_eq!(after["slots"]["B"]["installed"], Value::Null, "{after}");
    assert_eq!(f.flags("A"), (2, 0, true));
    let a_after = (f.read_partition("A", "BOOT"), f.read_partition("A", "ROOT"));
    assert!(a_before == a_after, "the booted slot A changed");
    assert_eq!(string(&bus.property("Operation")), "");
    assert_eq!(string(&bus.property("LastError")), message);
    let (name, _) = bus.call("Cancel", &()).unwrap_err();
    assert_eq!(name, NOT_RUNNING);
    // Nothing held: the same image installs now, from the file.
    bus.install(update.to_str().unwrap(), &[]).unwrap();
    let ok_ = loop {
        if let Sig::Completed(ok_, _, _) = next_signal(&rx, deadline) {
            break ok_;
        }
    };
    assert!(ok_);
    assert_eq!(f.flags("B"), (2, 3, false));
}

#[test]
fn malformed_arguments_get_invalid_args_naming_the_problem_and_change_nothing() {
    let (f, update) = setup();
    let img = update.to_str().unwrap();
    let bus = Bus::start(&f);
    let disk = f.disk_bytes();
    type Case<'a> = (&'a str, Vec<(&'a str, ZValue<'a>)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (img, vec![("bogus", ZValue::Bool(true))], "unknown option 'bogus': the options are no-readback (b), no-activate (b), allow-downgrade (b), reboot (b)"),
        (img, vec![("no-readback", ZValue::from("yes"))], "option 'no-readback' must be of type b, not s"),
        (img, vec![("reboot", ZValue::U32(1))], "option 'reboot' must be of type b, not u"),
        // The trust anchors are the device's: a caller naming its own keys
        // could install an image it signed itself.
        (img, vec![("pubkey", ZValue::from(vec!["/k.pem"]))], "option 'pubkey' is not offered over D-Bus: the device's configured keyring decides which keys are trusted"),
        (img, vec![("keyring", ZValue::from("/tmp/keys"))], "option 'keyring' is not offered over D-Bus: the device's configured keyring decides which keys are trusted"),
        ("ftp://x", vec![], "source 'ftp://x' has scheme ftp: give an absolute path or an http(s) URL"),
        ("file:///x.img", vec![], "source 'file:///x.img' has scheme file: give an absolute path or an http(s) URL"),
        ("-", vec![], "source '-' is not an absolute path: give an absolute path or an http(s) URL"),
        ("v2.img", vec![], "source 'v2.img' is not an absolute path: give an absolute path or an http(s) URL"),
    ];
    for (source, opts, want) in cases {
        let (name, msg) = bus.install(source, &opts).unwrap_err();
        assert_eq!((name.as_str(), msg.as_str()), (INVALID_ARGS, want));
        assert_eq!(string(&bus.property("Operation")), "");
        assert!(f.disk_bytes() == disk, "a refused Install changed the disk");
    }
    // The wrong signature: zbus refuses it before the service sees it,
    // naming both signatures.
    let (name, msg) = bus.call("Install", &("/x.img",)).unwrap_err();
    assert_eq!(name, "org.freedesktop.zbus.Error", "{msg}");
    assert!(msg.contains("sa{sv}"), "{msg}");
    let (name, msg) = bus.call("MarkBad", &("C", false)).unwrap_err();
    assert_eq!(name, INVALID_ARGS);
    assert_eq!(msg, "slot 'C': give A, B or \"\" (the booted slot)");
    assert!(f.disk_bytes() == disk);
    // The CLI's own refusal (exit 3) is Refused, with its message: marking
    // the only bootable slot bad.
    bus.call("MarkBad", &("B", false)).unwrap();
    let disk = f.disk_bytes();
    let (name, msg) = bus.call("MarkBad", &("", false)).unwrap_err();
    assert_eq!(name, REFUSED, "{msg}");
    assert!(!msg.is_empty() && !msg.contains('\n'), "{msg}");
    assert!(f.disk_bytes() == disk, "a refused MarkBad changed the disk");
    // GetAgentState is the CLI's agent-state --json.
    let st: Value = serde_json::from_str(&bus.call_string("GetAgentState")).unwrap();
    let cli: Value =
        serde_json::from_slice(&ok(f.run(&["agent-state", "--json", "--booted", "A"])).stdout)
            .unwrap();
    assert_eq!(st, cli);
    assert!(
        st["last_check"].is_null() && st["pending"].is_null(),
        "{st}"
    );
}

#[test]
fn unprivileged_caller_is_refused_under_the_shipped_policy() {
    let (f, update) = setup();
    let bus = Bus::start(&f);
    let disk = f.disk_bytes();
    let path = "/org/slotctl/Updater1";
    let img = update.to_str().unwrap();
    let denied: [&[&str]; 4] = [
        &["call", NAME, path, NAME, "Install", "sa{sv}", img, "0"],
        &["call", NAME, path, NAME, "MarkGood"],
        &["call", NAME, path, NAME, "Cancel"],
        &["call", NAME, path, NAME, "Rollback"],
    ];
    for args in denied {
        let out = bus.busctl_as_nobody(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} was allowed");
        // dbus-daemon's AccessDenied, as busctl says it.
        assert_eq!(err.trim(), "Call failed: Access denied", "{args:?}");
        assert!(
            f.disk_bytes() == disk,
            "a refused {args:?} changed the disk"
        );
    }
    assert_eq!(string(&bus.property("Operation")), "");
    // Reading is allowed.
    let out = bus.busctl_as_nobody(&["--json=short", "call", NAME, path, NAME, "GetStatus"]);
    let reply: Value = serde_json::from_slice(&ok(out).stdout).unwrap();
    let status: Value = serde_json::from_str(reply["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(status, status_now(&f));
    let out = bus.busctl_as_nobody(&["--json=short", "call", NAME, path, NAME, "GetAgentState"]);
    ok(out);
    let out = bus.busctl_as_nobody(&["get-property", NAME, path, NAME, "Percent"]);
    assert_eq!(String::from_utf8(ok(out).stdout).unwrap().trim(), "u 0");
    let out = bus.busctl_as_nobody(&["introspect", NAME, path]);
    let text = String::from_utf8(ok(out).stdout).unwrap();
    assert!(
        text.contains(".Completed") && text.contains(".Install"),
        "{text}"
    );
    assert!(f.disk_bytes() == disk);
}

#[test]
fn slot_commands_over_dbus_do_what_the_cli_does() {
    let (f, _) = setup();
    let bus = Bus::start(&f);
    // Rollback: the other (good) slot boots next, the booted one is the
    // fallback.
    bus.call("Rollback", &()).unwrap();
    assert_eq!(f.flags("B").0, 2);
    assert_eq!(f.flags("A").0, 1);
    let over_bus: Value = serde_json::from_str(&bus.call_string("GetStatus")).unwrap();
    assert_eq!(over_bus, status_now(&f));
    // MarkGood on the booted, already good slot: nothing to change.
    let disk = f.disk_bytes();
    bus.call("MarkGood", &()).unwrap();
    assert!(f.disk_bytes() == disk);
    // MarkBad B: never boots again.
    bus.call("MarkBad", &("B", false)).unwrap();
    assert_eq!(f.flags("B"), (0, 0, false));
    assert_eq!(f.flags("A"), (1, 0, true));
}
