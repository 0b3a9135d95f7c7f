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

/// The slotctl D-Bus service (org.slotctl.Updater1).
#[derive(Parser, Debug)]
#[command(name = "slotctl-dbus", version)]
struct Args {
    /// Serve on the system bus (the default).
    #[arg(long, conflicts_with = "address")]
    system: bool,
    /// Serve on the bus at this D-Bus address instead (tests).
    #[arg(long, value_name = "ADDR")]
    address: Option<String>,
    /// The slotctl binary [default: the `slotctl` next to this executable,
    /// else /usr/bin/slotctl].
    #[arg(long, value_name = "PATH")]
    slotctl: Option<PathBuf>,
    /// Passed to every slotctl run as `--disk PATH`.
    #[arg(long, value_name = "PATH")]
    disk: Option<PathBuf>,
    /// Passed to every slotctl run as `--config PATH`.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Passed to every slotctl run as `--booted SLOT` (a disk image file
    /// has no detected booted slot).
    #[arg(long, value_name = "SLOT", value_parser = ["A", "B", "a", "b"])]
    booted: Option<String>,
}

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
