//! The service's D-Bus errors: `org.freedesktop.DBus.Error.InvalidArgs` for
//! malformed arguments and the CLI's usage errors, and
//! `org.slotctl.Updater1.Error.{Busy,NotRunning,Refused,Failed}`.

use std::fmt;

use zbus::message::{Header, Message};
use zbus::names::ErrorName;

pub const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
pub const BUSY: &str = "org.slotctl.Updater1.Error.Busy";
pub const NOT_RUNNING: &str = "org.slotctl.Updater1.Error.NotRunning";
pub const REFUSED: &str = "org.slotctl.Updater1.Error.Refused";
pub const FAILED: &str = "org.slotctl.Updater1.Error.Failed";

/// A D-Bus error: its name and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub name: &'static str,
    pub message: String,
}

impl Error {
    pub fn new(name: &'static str, message: impl Into<String>) -> Error {
        Error {
            name,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(INVALID_ARGS, message)
    }

    /// The error for a `slotctl` exit code (updater/src/exit.rs): 2 usage,
    /// 3 refused, 4 busy (the lock), anything else failed.
    pub fn from_exit(code: Option<i32>, message: impl Into<String>) -> Error {
        let name = match code {
            Some(2) => INVALID_ARGS,
            Some(3) => REFUSED,
            Some(4) => BUSY,
            _ => FAILED,
        };
        Error::new(name, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for Error {}

impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Error {
        Error::new(FAILED, e.to_string())
    }
}

impl zbus::DBusError for Error {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name())?.build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_str_unchecked(self.name)
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}
