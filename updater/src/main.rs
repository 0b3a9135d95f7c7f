//! `slotctl`: the A/B partition updater's one binary.
//!
//! The command tree is split by concern: each module owns its subcommands
//! (a clap `Subcommand` enum flattened into [`Command`]) and their `run`.
//! Errors are `anyhow` here and nowhere else; [`exit`] maps them to the exit
//! codes documented in the README.

mod bootcheck;
mod cli;
mod config;
mod device;
mod exit;
mod image_cmd;
mod install;
mod lock;
mod progress;
mod record;
mod slots;
mod source;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cli::Globals;

#[derive(Parser, Debug)]
#[command(name = "slotctl", version, about = "A/B partition updater", long_about = None)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Slots(slots::SlotCommand),
    #[command(flatten)]
    Image(image_cmd::ImageCommand),
    #[command(flatten)]
    Install(install::InstallCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Slots(cmd) => slots::run(cmd, &cli.globals),
        Command::Image(cmd) => image_cmd::run(cmd, &cli.globals),
        Command::Install(cmd) => install::run(cmd, &cli.globals),
    };
    exit::report(result)
}
