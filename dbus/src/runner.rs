//! Running `slotctl`: every operation of the service is the CLI's own
//! command, with the service's `--disk`, `--config` and `--booted` passed
//! through; and the checks of `Install`'s arguments before anything runs.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use zbus::zvariant::OwnedValue;

use crate::error::Error;

/// How to run `slotctl`.
#[derive(Debug, Clone)]
pub struct Runner {
    pub slotctl: PathBuf,
    /// `--disk`, `--config`, `--booted` as the service was given them.
    pub globals: Vec<OsString>,
}

impl Runner {
    /// A `slotctl` command with the global options, then `args`.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.slotctl);
        c.args(&self.globals).args(args).stdin(Stdio::null());
        c
    }

    /// Run `slotctl ARGS` to its end: its stdout, or the error its exit
    /// code and stderr line make.
    pub fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = self.command(args).output().map_err(|e| {
            Error::new(
                crate::error::FAILED,
                format!("running {}: {e}", self.slotctl.display()),
            )
        })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(Error::from_exit(out.status.code(), error_line(&out.stderr)))
    }
}

/// The CLI's one error line (the last non-empty stderr line), without its
/// `slotctl: error: ` prefix.
pub fn error_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("slotctl failed without a message");
    line.strip_prefix("slotctl: error: ")
        .unwrap_or(line)
        .to_string()
}

/// `Install`'s source: an absolute file path or an http(s) URL.
pub fn check_source(source: &str) -> Result<(), Error> {
    let lower = source.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(());
    }
    if let Some((scheme, _)) = source.split_once("://") {
        return Err(Error::invalid(format!(
            "source '{source}' has scheme {scheme}: give an absolute path or an http(s) URL"
        )));
    }
    if source.starts_with('/') {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "source '{source}' is not an absolute path: give an absolute path or an http(s) URL"
    )))
}

/// The options `Install` takes: key, D-Bus type (all booleans), the CLI
/// flag.
const OPTIONS: &[(&str, &str, &str)] = &[
    ("no-readback", "b", "--no-readback"),
    ("no-activate", "b", "--no-activate"),
    ("allow-downgrade", "b", "--allow-downgrade"),
    ("reboot", "b", "--reboot"),
];

/// CLI options a bus caller may not pass, and why: the trust anchors are
/// the device's configured keyring. A caller the policy lets install (the
/// group `slotctl`, not only root) who could name its own keys could
/// install any image it signed itself, i.e. become root on the next boot.
const REFUSED: &[&str] = &["keyring", "pubkey"];

fn known() -> String {
    OPTIONS
        .iter()
        .map(|(k, t, _)| format!("{k} ({t})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The CLI flags for `Install`'s options; an unknown or refused key or a
/// wrong type is `InvalidArgs` naming it.
pub fn install_flags(options: &HashMap<String, OwnedValue>) -> Result<Vec<OsString>, Error> {
    let mut keys: Vec<&String> = options.keys().collect();
    keys.sort();
    let mut flags = Vec::new();
    for key in keys {
        let value = &options[key];
        if REFUSED.contains(&key.as_str()) {
            return Err(Error::invalid(format!(
                "option '{key}' is not offered over D-Bus: the device's configured keyring \
                 decides which keys are trusted"
            )));
        }
        let Some(&(_, want, flag)) = OPTIONS.iter().find(|(k, _, _)| k == key) else {
            return Err(Error::invalid(format!(
                "unknown option '{key}': the options are {}",
                known()
            )));
        };
        let got = value.value_signature().to_string();
        if got != want {
            return Err(Error::invalid(format!(
                "option '{key}' must be of type {want}, not {got}"
            )));
        }
        let yes = bool::try_from(value)
            .map_err(|e| Error::invalid(format!("option '{key}' must be of type {want}: {e}")))?;
        if yes {
            flags.push(flag.into());
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Value;

    fn opts(v: &[(&str, Value<'_>)]) -> HashMap<String, OwnedValue> {
        v.iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    OwnedValue::try_from(v.try_clone().unwrap()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn sources() {
        assert!(check_source("/media/usb/x.img").is_ok());
        assert!(check_source("https://h/x.img").is_ok());
        assert!(check_source("HTTP://h/x.img").is_ok());
        let e = check_source("ftp://x").unwrap_err();
        assert_eq!(e.name, crate::error::INVALID_ARGS);
        assert_eq!(
            e.message,
            "source 'ftp://x' has scheme ftp: give an absolute path or an http(s) URL"
        );
        assert!(check_source("-")
            .unwrap_err()
            .message
            .contains("not an absolute path"));
        assert!(check_source("x.img").is_err());
        assert!(check_source("").is_err());
    }

    #[test]
    fn options() {
        let f = install_flags(&opts(&[
            ("no-readback", Value::Bool(true)),
            ("reboot", Value::Bool(false)),
            ("allow-downgrade", Value::Bool(true)),
        ]))
        .unwrap();
        let f: Vec<_> = f.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(f, ["--allow-downgrade", "--no-readback"]);
        let e = install_flags(&opts(&[("bogus", Value::Bool(true))])).unwrap_err();
        assert!(e.message.starts_with("unknown option 'bogus'"), "{e}");
        let e = install_flags(&opts(&[("no-readback", Value::from("yes"))])).unwrap_err();
        assert_eq!(e.message, "option 'no-readback' must be of type b, not s");
        for key in ["keyring", "pubkey"] {
            let e = install_flags(&opts(&[(key, Value::from("/etc/keys"))])).unwrap_err();
            assert!(e.message.contains("configured keyring decides"), "{e}");
        }
    }
}
