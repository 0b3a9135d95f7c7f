//! The command line: the whole clap command tree ([`Cli`]) and the options
//! every subcommand accepts ([`Globals`]). The binary parses it; the man
//! pages and shell completions (`slotctl-gen-docs`) are generated from it,
//! so they never drift from `--help`.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::{agent, feed, image_cmd, install, slots};

/// `slotctl`'s command line.
#[derive(Parser, Debug)]
#[command(name = "slotctl", version, about = "A/B partition updater", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand, grouped by the module that runs it.
#[derive(Subcommand, Debug)]
pub enum Command {
    #[command(flatten)]
    Slots(slots::SlotCommand),
    #[command(flatten)]
    Image(image_cmd::ImageCommand),
    #[command(flatten)]
    Install(install::InstallCommand),
    #[command(flatten)]
    Feed(feed::FeedCommand),
    #[command(flatten)]
    Agent(agent::AgentCommand),
}

/// The clap `Command` the binary parses with (for man pages, completions).
pub fn command() -> clap::Command {
    Cli::command()
}

#[derive(Args, Debug, Clone, Default)]
pub struct Globals {
    /// The disk (block device or disk image file) to work on. Default: the
    /// disk holding the booted root filesystem, found through sysfs.
    #[arg(long, global = true, value_name = "PATH")]
    pub disk: Option<PathBuf>,
    /// Which slot is booted (A or B), overriding detection.
    #[arg(long, global = true, value_name = "SLOT", value_parser = ["A", "B", "a", "b"])]
    pub booted: Option<String>,
    /// Config file [default: /etc/slotctl/slotctl.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable output: JSON (JSON lines for progress).
    #[arg(long, global = true)]
    pub json: bool,
}
