//! `slotctl boot-check`: run at every boot (packaging/slotctl-boot-check.service,
//! ordered before boot-complete.target).
//!
//! - booted slot already good: nothing to do, exit 0 (the checks are not
//!   run: a transient failure must not condemn a slot that has proven
//!   itself);
//! - otherwise run the config's health checks in order, each a command
//!   (argv, no shell) with a timeout; the check's process group is killed
//!   when it runs over;
//! - all pass: mark the booted slot good (one commit), exit 0;
//! - one fails: mark the booted slot bad and, if `reboot_on_failure`, reboot
//!   (so that boot selection falls back to the other slot); exit 5. When the
//!   booted slot is the only bootable one it is left as it is (marking it bad
//!   would leave nothing to boot) and there is no reboot; exit 5.
//!
//! Reboot: the config's `boot_check.reboot_command` if set, else `sync()`
//! and the `reboot(2)` system call. As a guard, slotctl never calls
//! `reboot(2)` when working on a disk image file (tests, CI).

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::cli::Globals;
use crate::config::{Config, HealthCheck};
use crate::exit::{self, Coded};
use crate::{device, lock};

/// Run one health check. `Err` says why it failed.
pub fn run_check(check: &HealthCheck) -> Result<(), String> {
    let Some((prog, rest)) = check.command.split_first() else {
        return Err("empty command".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(rest).stdin(Stdio::null()).process_group(0);
    // The check's output goes to our stderr (stdout may carry JSON).
    if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
        cmd.stdout(Stdio::from(fd));
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {prog}: {e}"))?;
    // The config bounds timeout_secs to a day; past what an Instant holds
    // would mean "no deadline".
    let deadline = Instant::now().checked_add(Duration::from_secs(check.timeout_secs));
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{prog} {status}")),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for {prog}: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // Kill the whole group we started (the check and its children).
            let pid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {}s (killed)", check.timeout_secs));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reboot the machine (config `reboot_command`, else sync + reboot(2)).
/// Refuses the system call when the disk is an image file.
pub fn reboot(cfg: &Config, globals: &Globals) -> anyhow::Result<()> {
    if let Some((prog, rest)) = cfg.boot_check.reboot_command.split_first() {
        let status = Command::new(prog)
            .args(rest)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("cannot run reboot command {prog}"))?;
        if !status.success() {
            anyhow::bail!("reboot command {prog} failed: {status}");
        }
        return Ok(());
    }
    let path = device::disk_path(globals, cfg)?;
    let is_file = std::fs::metadata(&path)
        .map(|m| m.file_type().is_file())
        .unwrap_or(true);
    if is_file {
        anyhow::bail!(
            "not rebooting: {} is a disk image file, not this machine's disk (set boot_check.reboot_command to override)",
            path.display()
        );
    }
    nix::unistd::sync();
    nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT)
        .context("reboot(2) failed")?;
    Ok(())
}

pub fn run(globals: &Globals) -> anyhow::Result<()> {
    let cfg = Config::load(globals)?;
    let _lock = lock::acquire(&cfg.lock_file)?;
    let mut opened = device::open(globals, &cfg, true)?;
    let disk = &mut opened.disk;
    let booted = disk.booted().ok_or_else(|| {
        anyhow::anyhow!(
            "boot-check needs the booted slot, and none is known for {} (pass --booted A|B)",
            opened.path.display()
        )
    })?;
    let flags = disk.flags(booted);
    if flags.successful {
        // A committed slot's boot reached boot-check: its count of boots
        // that did not starts again (docs/state-machine.md, "The boot
        // counter"). Written only when it is not clear already.
        let counted = disk
            .boot_state(booted)
            .with_context(|| format!("reading slot {booted}'s boot state"))?
            .is_some_and(|s| !s.is_clear());
        disk.clear_boot_state(booted)
            .with_context(|| format!("clearing slot {booted}'s boot counter"))?;
        let msg = if counted {
            format!("slot {booted} is already marked good; its boot counter is cleared")
        } else {
            format!("slot {booted} is already marked good; nothing to do")
        };
        say(globals, true, &msg);
        return Ok(());
    }
    let mut failure = None;
    for check in &cfg.boot_check.checks {
        if let Err(why) = run_check(check) {
            failure = Some(format!("health check {:?} failed: {why}", check.name));
            break;
        }
    }
    let Some(why) = failure else {
        disk.mark_good()
            .with_context(|| format!("marking slot {booted} good"))?;
        let n = cfg.boot_check.checks.len();
        say(
            globals,
            true,
            &format!("slot {booted} marked good ({n} health check(s) passed)"),
        );
        return Ok(());
    };
    let other_bootable = disk.flags(booted.other()).bootable();
    if !other_bootable {
        let msg = format!(
            "{why}; slot {booted} is the only bootable slot, so it stays as it is (no reboot)"
        );
        say(globals, false, &msg);
        return Err(unhealthy(msg));
    }
    disk.mark_bad(Some(booted), false)
        .with_context(|| format!("marking slot {booted} bad"))?;
    let reboot_now = cfg.boot_check.reboot_on_failure;
    let msg = format!(
        "{why}; slot {booted} marked bad{}",
        if reboot_now { ", rebooting" } else { "" }
    );
    say(globals, false, &msg);
    if reboot_now {
        // Say it before the machine goes down; a reboot command that
        // returns (systemctl reboot) ends the run here with the same code.
        eprintln!("slotctl: error: {}", crate::term::printable(&msg));
        drop(_lock);
        reboot(&cfg, globals)?;
        std::process::exit(i32::from(exit::UNHEALTHY));
    }
    Err(unhealthy(msg))
}

fn unhealthy(message: String) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code: exit::UNHEALTHY,
        message,
    })
}

fn say(globals: &Globals, ok: bool, message: &str) {
    if globals.json {
        println!(
            "{}",
            serde_json::json!({"event": "result", "ok": ok, "message": message})
        );
    } else if ok {
        println!("{}", crate::term::printable(message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cmd: &[&str], timeout: u64) -> HealthCheck {
        HealthCheck {
            name: "t".into(),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            timeout_secs: timeout,
        }
    }

    #[test]
    fn pass_fail_timeout_missing() {
        assert!(run_check(&check(&["true"], 5)).is_ok());
        let e = run_check(&check(&["false"], 5)).unwrap_err();
        assert!(e.contains("exit status: 1"), "{e}");
        let t = Instant::now();
        let e = run_check(&check(&["sh", "-c", "sleep 30; true"], 1)).unwrap_err();
        assert!(e.contains("timed out after 1s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        let e = run_check(&check(&["/nonexistent/check"], 5)).unwrap_err();
        assert!(e.contains("cannot run /nonexistent/check"), "{e}");
    }
}
