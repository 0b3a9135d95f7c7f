//! `slotctl-dbus`: the D-Bus service an HMI uses (bus name and interface
//! `org.slotctl.Updater1`, object `/org/slotctl/Updater1`; docs/dbus.md).
//!
//! Every operation runs the `slotctl` binary itself, so every policy, the
//! lock, the exit codes and the messages are the CLI's; an install runs
//! with `--json` and its progress lines become properties and signals.
#![forbid(unsafe_code)]

mod error;
mod runner;
mod service;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use slotctl_dbus::cli::Args;

fn default_slotctl() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("slotctl")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/slotctl"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut globals: Vec<OsString> = Vec::new();
    if let Some(d) = &args.disk {
        globals.extend(["--disk".into(), d.into()]);
    }
    if let Some(c) = &args.config {
        globals.extend(["--config".into(), c.into()]);
    }
    if let Some(b) = &args.booted {
        globals.extend(["--booted".into(), b.into()]);
    }
    let runner = runner::Runner {
        slotctl: args.slotctl.clone().unwrap_or_else(default_slotctl),
        globals,
    };
    match serve(&args, runner) {
        Ok(_conn) => loop {
            // The connection's own thread serves the calls.
            std::thread::park();
        },
        Err(e) => {
            eprintln!("slotctl-dbus: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args, runner: runner::Runner) -> zbus::Result<zbus::blocking::Connection> {
    let builder = match &args.address {
        Some(a) => zbus::blocking::connection::Builder::address(a.as_str())?,
        None => zbus::blocking::connection::Builder::system()?,
    };
    builder
        .serve_at(service::PATH, service::Updater::new(runner))?
        .name(service::NAME)?
        .build()
}
