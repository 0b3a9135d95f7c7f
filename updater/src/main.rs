//! `slotctl`: the A/B partition updater's one binary.
//!
//! The modules live in the library half of this crate (`src/lib.rs`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use slotctl::cli::Globals;
use slotctl::{exit, image_cmd, install, slots};

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
