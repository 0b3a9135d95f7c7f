//! The command line of `slotctl-dbus`, as a library so that
//! slotctl-gen-docs writes its man page, `slotctl-dbus(8)`, from the same
//! clap definitions the service parses with (the service itself is the
//! binary, src/main.rs).
#![forbid(unsafe_code)]

pub mod cli {
    use std::path::PathBuf;

    use clap::{CommandFactory, Parser};

    /// The slotctl D-Bus service (org.slotctl.Updater1).
    ///
    /// Serves the object /org/slotctl/Updater1 with the interface
    /// org.slotctl.Updater1 under the well-known name org.slotctl.Updater1 on
    /// the system bus, for a device's UI: Install (a file or an http(s) URL,
    /// one at a time), Cancel before the activation, the properties
    /// Operation, Phase, Role, BytesDone, BytesTotal, Percent and LastError
    /// with change signals, the signal Completed, GetStatus, MarkGood,
    /// MarkBad, Rollback and GetAgentState. Every operation runs the slotctl
    /// binary, so its policies, lock, exit codes and messages apply. Started
    /// by systemd (slotctl-dbus.service) or by D-Bus activation; the policy
    /// in /usr/share/dbus-1/system.d/org.slotctl.Updater1.conf lets root and
    /// the group slotctl call everything and anyone read. The interface in
    /// full: /usr/share/doc/slotctl/dbus.md.
    #[derive(Parser, Debug)]
    #[command(name = "slotctl-dbus", version)]
    pub struct Args {
        /// Serve on the system bus (the default).
        #[arg(long, conflicts_with = "address")]
        pub system: bool,
        /// Serve on the bus at this D-Bus address instead (tests).
        #[arg(long, value_name = "ADDR")]
        pub address: Option<String>,
        /// The slotctl binary [default: the `slotctl` next to this executable,
        /// else /usr/bin/slotctl].
        #[arg(long, value_name = "PATH")]
        pub slotctl: Option<PathBuf>,
        /// Passed to every slotctl run as `--disk PATH`.
        #[arg(long, value_name = "PATH")]
        pub disk: Option<PathBuf>,
        /// Passed to every slotctl run as `--config PATH`.
        #[arg(long, value_name = "PATH")]
        pub config: Option<PathBuf>,
        /// Passed to every slotctl run as `--booted SLOT` (a disk image file
        /// has no detected booted slot).
        #[arg(long, value_name = "SLOT", value_parser = ["A", "B", "a", "b"])]
        pub booted: Option<String>,
    }

    /// The clap command (for the man page).
    pub fn command() -> clap::Command {
        Args::command()
    }
}
