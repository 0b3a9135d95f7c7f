//! The `slotctl` crate as a library: everything the binary does, reachable
//! from the workspace tests (the reliability suite drives the install
//! pipeline over a simulated block device in-process).
//!
//! The command tree is split by concern: each module owns its subcommands
//! (a clap `Subcommand` enum flattened into the binary's command enum) and
//! their `run`. Errors are `anyhow` in this crate and nowhere else; [`exit`]
//! maps them to the exit codes documented in the README.

pub mod agent;
pub mod bootcheck;
pub mod cli;
pub mod config;
pub mod ddi;
pub mod device;
pub mod exit;
pub mod feed;
pub mod image_cmd;
pub mod install;
pub mod localfile;
pub mod lock;
pub mod progress;
pub mod record;
pub mod slots;
pub mod source;
pub mod term;
