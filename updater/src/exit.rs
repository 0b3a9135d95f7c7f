//! Exit codes and the one-line error report.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | error (I/O, bad input, corrupt data) |
//! | 2 | usage error (bad arguments; clap's own code) |
//! | 3 | refused by policy or verification (signature, compatible, rollback index, downgrade, size, state) |
//! | 4 | busy: another slotctl holds the lock |
//! | 5 | health check failed (boot-check) |
//! | 6 | install cancelled (SIGTERM or SIGINT before activation) |

use std::fmt;
use std::process::ExitCode;

pub const ERROR: u8 = 1;
pub const USAGE: u8 = 2;
pub const REFUSED: u8 = 3;
pub const BUSY: u8 = 4;
pub const UNHEALTHY: u8 = 5;
pub const CANCELLED: u8 = 6;

/// An error that carries its exit code. Attach with `anyhow::Error::new(Coded(..))`
/// or the helpers below; `report` finds it anywhere in the chain.
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// A policy or verification refusal (exit code 3).
pub fn refused(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code: REFUSED,
        message: message.into(),
    })
}

/// Arguments that do not go together (exit code 2, as clap's own usage
/// errors), found after parsing.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code: USAGE,
        message: message.into(),
    })
}

/// Another updater holds the lock (exit code 4).
#[allow(dead_code)]
pub fn busy(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code: BUSY,
        message: message.into(),
    })
}

/// Print the error as one line on stderr and turn it into the exit code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = err
                .chain()
                .find_map(|e| e.downcast_ref::<Coded>().map(|c| c.code))
                .unwrap_or(ERROR);
            // `{:#}` joins the context chain with ": " on one line; what
            // the chain quotes from outside is escaped (crate::term).
            let line = format!("{err:#}").replace('\n', " ");
            eprintln!("slotctl: error: {}", crate::term::printable(&line));
            ExitCode::from(code)
        }
    }
}
