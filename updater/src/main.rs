//! `slotctl`: the A/B partition updater's one binary.
//!
//! The modules live in the library half of this crate (`src/lib.rs`).

use std::process::ExitCode;

use clap::Parser;

use slotctl::cli::{Cli, Command};
use slotctl::{agent, exit, feed, image_cmd, install, slots};

/// glibc's malloc raises its mmap threshold each time a mmapped block is
/// freed (up to 32 MiB); big buffers then come from the heap, which keeps
/// them in RSS. An install of an image with two zstd payloads (BOOT then
/// ROOT: every image covers every role of its slot) peaked at 34-36 MiB
/// that way, over the 32 MiB README promise, against 23 MiB with the
/// threshold fixed at glibc's default of 128 KiB, which turns that
/// adjustment off (tests/tests/install_memory.rs).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the binary's one exception: a malloc tuning call
fn fix_mmap_threshold() {
    // SAFETY: mallopt only sets a malloc parameter; it runs first thing in
    // main, before any other thread exists.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() {}

fn main() -> ExitCode {
    fix_mmap_threshold();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Slots(cmd) => slots::run(cmd, &cli.globals),
        Command::Image(cmd) => image_cmd::run(cmd, &cli.globals),
        Command::Install(cmd) => install::run(cmd, &cli.globals),
        Command::Feed(cmd) => feed::run(cmd, &cli.globals),
        Command::Agent(cmd) => agent::run(cmd, &cli.globals),
    };
    exit::report(result)
}
