//! The dm-verity table: its parameters, their validation and the exact
//! parameter string the kernel parses (Documentation/admin-guide/
//! device-mapper/verity.rst, format version 1).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What dm-verity does when a block does not match its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCorruption {
    /// The read fails with `EIO` (the kernel's default: no optional argument).
    Eio,
    /// The machine restarts (`restart_on_corruption`).
    Restart,
    /// The kernel panics (`panic_on_corruption`).
    Panic,
}

impl OnCorruption {
    /// The optional argument, `None` for the default.
    pub fn arg(self) -> Option<&'static str> {
        match self {
            OnCorruption::Eio => None,
            OnCorruption::Restart => Some("restart_on_corruption"),
            OnCorruption::Panic => Some("panic_on_corruption"),
        }
    }
}

/// One dm-verity target covering a whole data area, with its hash tree on
/// `hash_dev` starting at block `hash_start_block` (the same device when the
/// tree is appended to the data, as slotctl packs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityTable {
    pub data_dev: PathBuf,
    pub hash_dev: PathBuf,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    /// In hash blocks from the start of `hash_dev`.
    pub hash_start_block: u64,
    /// A kernel crypto hash name, e.g. `sha256`.
    pub algorithm: String,
    pub root_hex: String,
    /// Hex, or `-` for no salt.
    pub salt_hex: String,
    pub on_corruption: OnCorruption,
}

/// Why a [`VerityTable`] was refused (one line).
#[derive(Debug)]
struct Invalid(String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid verity table: {}", self.0)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, Invalid(msg).to_string())
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A table word: non-empty, printable, no whitespace (the kernel splits the
/// parameters on spaces).
fn check_word(what: &str, s: &str) -> io::Result<()> {
    if s.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!(
            "{what} {s:?} contains a space or control character"
        )));
    }
    Ok(())
}

impl VerityTable {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> io::Result<()> {
        for (what, p) in [
            ("data device", &self.data_dev),
            ("hash device", &self.hash_dev),
        ] {
            let s = p
                .to_str()
                .ok_or_else(|| invalid(format!("{what} {p:?} is not UTF-8")))?;
            check_word(what, s)?;
        }
        for (what, bs) in [
            ("data block size", self.data_block_size),
            ("hash block size", self.hash_block_size),
        ] {
            if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
                return Err(invalid(format!(
                    "{what} {bs} is not a power of two from 512 to 65536"
                )));
            }
        }
        if self.data_blocks == 0 {
            return Err(invalid("data block count is 0".into()));
        }
        // The target length in 512-byte sectors must fit in a u64.
        if self
            .data_blocks
            .checked_mul(u64::from(self.data_block_size / 512))
            .is_none()
        {
            return Err(invalid(format!(
                "data block count {} is too large",
                self.data_blocks
            )));
        }
        check_word("hash algorithm", &self.algorithm)?;
        if !self
            .algorithm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(format!(
                "hash algorithm {:?} is not a hash name",
                self.algorithm
            )));
        }
        if !is_hex(&self.root_hex) {
            return Err(invalid(format!(
                "root hash {:?} is not an even number of hex digits",
                self.root_hex
            )));
        }
        if self.salt_hex != "-" && !is_hex(&self.salt_hex) {
            return Err(invalid(format!(
                "salt {:?} is not an even number of hex digits (or - for none)",
                self.salt_hex
            )));
        }
        Ok(())
    }

    /// The target's length in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size / 512)
    }

    /// The target parameter string with this table's corruption option.
    pub fn params(&self) -> String {
        self.params_with(self.on_corruption)
    }

    /// The target parameter string with the given corruption option, e.g.
    /// `1 /dev/vda3 /dev/vda3 4096 4096 4096 4096 sha256 ROOT SALT 1 restart_on_corruption`.
    pub fn params_with(&self, on_corruption: OnCorruption) -> String {
        let mut s = format!(
            "1 {} {} {} {} {} {} {} {} {}",
            self.data_dev.display(),
            self.hash_dev.display(),
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start_block,
            self.algorithm,
            self.root_hex,
            self.salt_hex,
        );
        if let Some(arg) = on_corruption.arg() {
            s.push_str(" 1 ");
            s.push_str(arg);
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> VerityTable {
        VerityTable {
            data_dev: "/dev/vda3".into(),
            hash_dev: "/dev/vda3".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 4096,
            hash_start_block: 4096,
            algorithm: "sha256".into(),
            root_hex: "4392a5e4e0a5b8a53e3a2e7c2ef3c8b6ab0c1ae8d1e1b5c5b0e7a3d8e1f2a3b4".into(),
            salt_hex: "d2a1f0e3".into(),
            on_corruption: OnCorruption::Restart,
        }
    }

    #[test]
    fn params_restart() {
        let t = sample();
        assert_eq!(
            t.params(),
            "1 /dev/vda3 /dev/vda3 4096 4096 4096 4096 sha256 \
             4392a5e4e0a5b8a53e3a2e7c2ef3c8b6ab0c1ae8d1e1b5c5b0e7a3d8e1f2a3b4 d2a1f0e3 \
             1 restart_on_corruption"
        );
        assert_eq!(t.sectors(), 32768);
        t.validate().unwrap();
    }

    #[test]
    fn params_panic_and_eio() {
        let mut t = sample();
        t.on_corruption = OnCorruption::Panic;
        assert!(t.params().ends_with(" d2a1f0e3 1 panic_on_corruption"));
        t.on_corruption = OnCorruption::Eio;
        assert!(t.params().ends_with(
            " sha256 4392a5e4e0a5b8a53e3a2e7c2ef3c8b6ab0c1ae8d1e1b5c5b0e7a3d8e1f2a3b4 d2a1f0e3"
        ));
        assert_eq!(t.params(), sample().params_with(OnCorruption::Eio));
    }

    #[test]
    fn params_other_sizes() {
        let mut t = sample();
        t.data_dev = "/dev/vdb".into();
        t.hash_dev = "/dev/vdc".into();
        t.data_block_size = 1024;
        t.hash_block_size = 512;
        t.data_blocks = 3;
        t.hash_start_block = 0;
        t.salt_hex = "-".into();
        t.on_corruption = OnCorruption::Eio;
        t.validate().unwrap();
        assert_eq!(t.sectors(), 6);
        assert_eq!(
            t.params(),
            format!("1 /dev/vdb /dev/vdc 1024 512 3 0 sha256 {} -", t.root_hex)
        );
    }

    fn refused(t: VerityTable, needle: &str) {
        let e = t.validate().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let msg = e.to_string();
        assert!(msg.starts_with("invalid verity table: "), "{msg}");
        assert!(msg.contains(needle), "{msg:?} should name {needle:?}");
        assert!(!msg.contains('\n'), "{msg:?} is more than one line");
    }

    #[test]
    fn bad_input_refused() {
        let s = sample;
        refused(
            VerityTable {
                root_hex: "".into(),
                ..s()
            },
            "root hash",
        );
        refused(
            VerityTable {
                root_hex: "abc".into(),
                ..s()
            },
            "root hash \"abc\"",
        );
        refused(
            VerityTable {
                root_hex: "zz".into(),
                ..s()
            },
            "root hash",
        );
        refused(
            VerityTable {
                root_hex: "ab cd".into(),
                ..s()
            },
            "root hash",
        );
        refused(
            VerityTable {
                salt_hex: "".into(),
                ..s()
            },
            "salt",
        );
        refused(
            VerityTable {
                salt_hex: "0x12".into(),
                ..s()
            },
            "salt",
        );
        refused(
            VerityTable {
                data_dev: "".into(),
                ..s()
            },
            "data device is empty",
        );
        refused(
            VerityTable {
                hash_dev: "/dev/vda 3".into(),
                ..s()
            },
            "hash device",
        );
        refused(
            VerityTable {
                algorithm: "".into(),
                ..s()
            },
            "hash algorithm is empty",
        );
        refused(
            VerityTable {
                algorithm: "sha256 1".into(),
                ..s()
            },
            "hash algorithm",
        );
        refused(
            VerityTable {
                data_block_size: 4000,
                ..s()
            },
            "data block size 4000",
        );
        refused(
            VerityTable {
                hash_block_size: 256,
                ..s()
            },
            "hash block size 256",
        );
        refused(
            VerityTable {
                data_blocks: 0,
                ..s()
            },
            "data block count is 0",
        );
        refused(
            VerityTable {
                data_blocks: u64::MAX,
                ..s()
            },
            "too large",
        );
    }
}
