//! Power cuts during the real `slotctl` slot commands (the binary, recorded
//! with strace: `activate`, `cancel`, `boot-select`, `mark-good`,
//! `rollback`, `mark-bad`, `set-flags`, `repair`), run as one device's
//! history on 512- and 4096-byte-sector disks. Each command's crash states
//! must read as the table before or after it, boot, and keep a slot that
//! was bootable before and after it bootable: the same invariants as
//! `power_cut.rs`, on the code path of the CLI rather than the library
//! alone (a command that wrote more than its one commit would show here).

use std::process::Command;
use std::time::Instant;

use boot_flags::SlotId;
use slotctl_tests::installfix::{ok, Fix};
use slotctl_tests::sim::flagdisk::{boot, read_view};
use slotctl_tests::sim::strace::record_binary;
use slotctl_tests::sim::{
    disk_identity, full_mode, seed_from_env, CrashOptions, CrashStates, CrashStats, Rng,
};

fn cmd(fix: &Fix, args: &[&str]) -> Command {
    let mut c = Command::new(slotctl_tests::slotctl_bin());
    c.args(args)
        .arg("--disk")
        .arg(&fix.disk)
        .arg("--config")
        .arg(&fix.config);
    c
}

fn history(sector: u32, rng: &mut Rng, states: &mut CrashStates) -> (CrashStats, usize) {
    let fix = Fix::new();
    if sector != 512 {
        fix.reinit_disk(sector);
    }
    let b = fix.payload("boot.bin", 64 << 10, 1);
    let r = fix.payload("root.bin", 256 << 10, 2);
    let img = fix.pack("v1.img", "1.0.0", 1, &[("BOOT", &b), ("ROOT", &r)], "none");
    fix.factory("A", &img);
    // B holds a verified image but is not activated: `activate` needs that.
    ok(fix.run(&[
        "install".as_ref(),
        "--no-activate".as_ref(),
        "--booted".as_ref(),
        "A".as_ref(),
        img.as_os_str(),
    ]));
    let steps: &[(&str, &[&str])] = &[
        (
            "activate",
            &["--booted", "A", "activate", "B", "--tries", "3"],
        ),
        ("cancel", &["--booted", "A", "cancel"]),
        ("activate again", &["--booted", "A", "activate", "B"]),
        ("boot-select", &["boot-select"]),
        ("mark-good", &["--booted", "B", "mark-good"]),
        ("rollback", &["--booted", "B", "rollback"]),
        ("mark-bad B", &["--booted", "A", "mark-bad", "B"]),
        (
            "set-flags",
            &["set-flags", "B", "--priority", "1", "--tries", "2"],
        ),
        ("boot-select good", &["boot-select"]),
        ("repair", &["repair"]),
        ("boot-select after damage", &["boot-select"]),
    ];
    let opts = CrashOptions {
        max_tears: if full_mode() { usize::MAX } else { 64 },
        ..CrashOptions::default()
    };
    let mut total = CrashStats::default();
    let mut commands = 0;
    for (i, (name, args)) in steps.iter().enumerate() {
        // Damage one copy before the repair steps, as an earlier crash might.
        if name.starts_with("repair") || name.ends_with("damage") {
            let mut d = fix.disk_bytes();
            let ss = sector as usize;
            if i % 2 == 0 {
                d[ss..2 * ss].fill(0); // primary header
            } else {
                let n = d.len();
                d[n - ss..].fill(0); // backup header
            }
            std::fs::write(&fix.disk, &d).unwrap();
        }
        let base = fix.disk_bytes();
        let (out, trace) = record_binary(
            cmd(&fix, args),
            &fix.disk,
            base.clone(),
            sector,
            &fix.path("strace.log"),
        );
        let out = ok(out);
        commands += 1;
        let after = fix.disk_bytes();
        assert!(
            trace.final_disk() == after,
            "{name}: the capture replays to the result"
        );
        let (e0, f0) = read_view(&base, sector, false).unwrap();
        let (e1, f1) = read_view(&after, sector, false).unwrap();
        // Each command's crash states are checked against its own before
        // and after: one scenario per command.
        let scenario = (u64::from(sector) << 8) | i as u64;
        let s = trace.for_each_crash(&opts, rng, scenario, states, |cut, variant, disk, inv| {
            let ctx = || format!("{name} ({sector}-byte sectors), cut {cut}, {variant:?}");
            let (e, f) = inv.ok(read_view(disk, sector, false), |e| {
                format!("{}: the table is unreadable: {e}", ctx())
            });
            inv.that(e == e0 || e == e1, || {
                format!(
                    "{}: neither before nor after (flags {f:?}; before {f0:?}, after {f1:?})",
                    ctx()
                )
            });
            for id in SlotId::ALL {
                if f0.get(id).bootable() && f1.get(id).bootable() {
                    inv.that(f.get(id).bootable(), || {
                        format!("{}: slot {id} stopped being bootable", ctx())
                    });
                }
            }
            let b = inv.ok(boot(disk, sector, false), |e| {
                format!("{}: boot failed: {e}", ctx())
            });
            if f.next_boot().is_some() {
                inv.that(b.before.get(b.choice.slot).bootable(), || {
                    format!("{}: chose an unbootable slot", ctx())
                });
            }
        });
        // The command is among its crash states: the disk it left (the cut
        // after its last event) and the one it started from were checked.
        for (what, d) in [("before", &base), ("after", &after)] {
            assert!(
                states.was_checked(scenario, disk_identity(d)),
                "{name}: the disk {what} the command is not among the checked states"
            );
        }
        if name.starts_with("boot-select") {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.starts_with("SLOTCTL_SLOT="),
                "{name}: boot-select output: {text}"
            );
        }
        total += s;
    }
    (total, commands)
}

#[test]
fn reliability_power_cut_cli_slot_commands() {
    let seed = seed_from_env();
    eprintln!("power_cut_cli: seed {seed} (SLOTCTL_SEED={seed} reproduces)");
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut total = CrashStats::default();
    let mut states = CrashStates::new("power_cut_cli");
    let mut commands = 0;
    for sector in [512u32, 4096] {
        let (s, n) = history(sector, &mut rng, &mut states);
        total += s;
        commands += n;
    }
    eprintln!(
        "power_cut_cli: {commands} slotctl commands, {} variants at {} cut points, in {:.1?}",
        total.generated,
        total.cut_points,
        start.elapsed()
    );
    eprintln!("{}", states.summary());
    assert!(
        states.distinct() >= 70,
        "too few distinct crash states: {}",
        states.distinct()
    );
}
