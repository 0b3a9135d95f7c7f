//! GPT GUIDs: 16 bytes stored mixed-endian, shown in the usual
//! `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` form.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A GUID as stored on disk (the first three groups little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The all-zero GUID: an unused partition entry's type.
    pub const ZERO: Guid = Guid([0; 16]);
    /// Linux filesystem data, `0fc63daf-8483-4772-8e79-3d69d8477de4`.
    pub const LINUX_DATA: Guid = Guid([
        0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d,
        0xe4,
    ]);
    /// Linux root (x86-64), `4f68bce3-e8cd-4db1-96e7-fbcaf984b709`.
    pub const LINUX_ROOT_X86_64: Guid = Guid([
        0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7,
        0x09,
    ]);

    /// A random (version 4) GUID made from 16 random bytes.
    pub fn from_random_bytes(mut b: [u8; 16]) -> Guid {
        // Version 4 in the high nibble of the third group (stored LE: byte 7).
        b[7] = (b[7] & 0x0f) | 0x40;
        // RFC 4122 variant.
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }

    /// True for the all-zero GUID.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = Error;

    fn from_str(s: &str) -> Result<Guid, Error> {
        let bad = || Error::BadGuid(s.to_string());
        let groups: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if groups.len() != 5 || groups.iter().zip(lens).any(|(g, l)| g.len() != l) {
            return Err(bad());
        }
        let hex: String = groups.concat();
        let mut v = [0u8; 16];
        for (i, byte) in v.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        // Text order -> on-disk mixed-endian order.
        v[0..4].reverse();
        v[4..6].reverse();
        v[6..8].reverse();
        Ok(Guid(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_constants() {
        let g: Guid = "0fc63daf-8483-4772-8e79-3d69d8477de4".parse().unwrap();
        assert_eq!(g, Guid::LINUX_DATA);
        assert_eq!(
            Guid::LINUX_ROOT_X86_64.to_string(),
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
        );
        assert!("0fc63daf-8483-4772-8e79".parse::<Guid>().is_err());
        assert!("zfc63daf-8483-4772-8e79-3d69d8477de4"
            .parse::<Guid>()
            .is_err());
    }
}
