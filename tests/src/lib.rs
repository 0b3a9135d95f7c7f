//! Helpers shared by the workspace-level integration tests.
//!
//! The tests run the real `slotctl` binary. `cargo test --workspace` builds
//! it into the same target directory as the test executables; `SLOTCTL_BIN`
//! overrides the path.

pub mod image;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of the `slotctl` binary under test.
pub fn slotctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLOTCTL_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/slotctl
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("slotctl");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p slotctl` (or `cargo test --workspace`) first, or set SLOTCTL_BIN",
        bin.display()
    );
    bin
}

/// A `Command` for slotctl with the given arguments.
pub fn slotctl() -> Command {
    Command::new(slotctl_bin())
}

/// Run slotctl and return its output (never panics on a non-zero exit).
pub fn run_slotctl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    slotctl().args(args).output().expect("spawn slotctl")
}

/// True when an external tool is on PATH (the validators: cgpt, sgdisk, sfdisk, openssl).
pub fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Panic with a clear message when a validator the test needs is missing:
/// tests never silently skip their checks.
pub fn require_tool(name: &str) {
    assert!(
        have_tool(name),
        "{name} is required by this test: run scripts/setup.sh (installs the Debian packages)"
    );
}

pub mod chunked;
pub mod dbusfix;
pub mod ddisrv;
pub mod disk;
pub mod feedenv;
pub mod feedsrv;
pub mod goosebit;
pub mod gptcrate;
pub mod http;
pub mod installfix;
pub mod limited;
pub mod nginx;
pub mod sim;

/// Run slotctl with `args` under `/usr/bin/time -v` (Debian package `time`);
/// it must succeed. Returns its stdout and its peak RSS in KiB ("Maximum
/// resident set size").
pub fn run_slotctl_peak_rss<I, S>(args: I) -> (String, u64)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    assert!(
        std::path::Path::new("/usr/bin/time").exists(),
        "/usr/bin/time is required: run scripts/setup.sh (Debian package `time`)"
    );
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(slotctl_bin())
        .args(&args)
        .output()
        .expect("spawn /usr/bin/time");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "slotctl {args:?} failed: {stderr}");
    let kib = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in: {stderr}"));
    (String::from_utf8_lossy(&out.stdout).into_owned(), kib)
}
