//! Options every subcommand accepts, before or after the subcommand name.

use std::path::PathBuf;

use clap::Args;

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
