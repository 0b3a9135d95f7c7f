//! The boot flags in a GPT entry's attribute word (ChromeOS cgpt / GRUB
//! gptprio layout).

use std::fmt;

/// First bit of the 4-bit priority field.
pub const PRIORITY_SHIFT: u32 = 48;
/// First bit of the 4-bit tries-remaining field.
pub const TRIES_SHIFT: u32 = 52;
/// The successful bit.
pub const SUCCESSFUL_SHIFT: u32 = 56;
/// Mask of a 4-bit field before shifting.
const NIBBLE_MASK: u64 = 0xf;
/// Every bit the flags own (48..=56); all others are preserved as found.
pub const FLAGS_MASK: u64 =
    (NIBBLE_MASK << PRIORITY_SHIFT) | (NIBBLE_MASK << TRIES_SHIFT) | (1 << SUCCESSFUL_SHIFT);

/// A 4-bit value, 0..=15: a priority or a tries counter. It cannot hold 16.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nibble(u8);

impl Nibble {
    /// Zero.
    pub const ZERO: Nibble = Nibble(0);
    /// The largest value, 15.
    pub const MAX: Nibble = Nibble(15);

    /// `Some` when `v <= 15`.
    pub const fn new(v: u8) -> Option<Nibble> {
        if v <= 15 {
            Some(Nibble(v))
        } else {
            None
        }
    }

    /// The value.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// One less, stopping at 0.
    pub const fn saturating_dec(self) -> Nibble {
        Nibble(self.0.saturating_sub(1))
    }

    /// One more, stopping at 15.
    pub const fn saturating_inc(self) -> Nibble {
        if self.0 >= 15 {
            Nibble(15)
        } else {
            Nibble(self.0 + 1)
        }
    }
}

impl fmt::Debug for Nibble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Nibble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<u8> for Nibble {
    type Error = crate::Error;
    fn try_from(v: u8) -> Result<Nibble, crate::Error> {
        Nibble::new(v).ok_or(crate::Error::OutOfRange {
            field: "value",
            value: u64::from(v),
            max: 15,
        })
    }
}

/// One slot's boot flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Flags {
    /// 0 = never boot; higher boots first.
    pub priority: Nibble,
    /// Boot attempts left before the slot stops being bootable.
    pub tries: Nibble,
    /// A boot of this slot has been confirmed good.
    pub successful: bool,
}

impl Flags {
    /// Priority 0, tries 0, not successful: not bootable.
    pub const ZERO: Flags = Flags {
        priority: Nibble::ZERO,
        tries: Nibble::ZERO,
        successful: false,
    };

    /// Build from plain numbers, refusing values above 15 with an error
    /// naming the field.
    pub fn new(priority: u8, tries: u8, successful: bool) -> Result<Flags, crate::Error> {
        let nib = |field: &'static str, v: u8| {
            Nibble::new(v).ok_or(crate::Error::OutOfRange {
                field,
                value: u64::from(v),
                max: 15,
            })
        };
        Ok(Flags {
            priority: nib("priority", priority)?,
            tries: nib("tries", tries)?,
            successful,
        })
    }

    /// The flags held in a GPT attribute word.
    pub fn from_attributes(attrs: u64) -> Flags {
        // Masked to 4 bits, so always in range.
        let nib = |shift: u32| Nibble(((attrs >> shift) & NIBBLE_MASK) as u8);
        Flags {
            priority: nib(PRIORITY_SHIFT),
            tries: nib(TRIES_SHIFT),
            successful: attrs & (1 << SUCCESSFUL_SHIFT) != 0,
        }
    }

    /// `attrs` with bits 48..=56 replaced by these flags; every other bit as
    /// it was.
    pub fn apply_to(self, attrs: u64) -> u64 {
        (attrs & !FLAGS_MASK)
            | (u64::from(self.priority.0) << PRIORITY_SHIFT)
            | (u64::from(self.tries.0) << TRIES_SHIFT)
            | (u64::from(self.successful) << SUCCESSFUL_SHIFT)
    }

    /// `priority > 0 && (tries > 0 || successful)`.
    pub fn bootable(self) -> bool {
        self.priority.0 > 0 && (self.tries.0 > 0 || self.successful)
    }

    /// Bootable and confirmed good.
    pub fn good(self) -> bool {
        self.bootable() && self.successful
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "priority={} tries={} successful={}",
            self.priority.0,
            self.tries.0,
            u8::from(self.successful)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_attribute_words() {
        // cgpt add -P 2 -T 3 -S 0 on a zero word.
        assert_eq!(
            Flags::new(2, 3, false).unwrap().apply_to(0),
            0x0032_0000_0000_0000
        );
        // P=1 T=0 S=1.
        assert_eq!(
            Flags::new(1, 0, true).unwrap().apply_to(0),
            0x0101_0000_0000_0000
        );
        // P=15 T=15 S=1: bits 48..=56 all set.
        assert_eq!(Flags::new(15, 15, true).unwrap().apply_to(0), FLAGS_MASK);
        assert_eq!(FLAGS_MASK, 0x01ff_0000_0000_0000);
    }

    #[test]
    fn other_bits_preserved() {
        // Bits 0, 2, 57, 59, 60, 63 and a stale priority.
        let word = 1 | (1 << 2) | (1 << 57) | (1 << 59) | (1 << 60) | (1 << 63) | (7 << 48);
        let out = Flags::new(0, 1, false).unwrap().apply_to(word);
        assert_eq!(out & !FLAGS_MASK, word & !FLAGS_MASK);
        assert_eq!(
            Flags::from_attributes(out),
            Flags::new(0, 1, false).unwrap()
        );
    }

    #[test]
    fn round_trip_all_values() {
        for p in 0..16 {
            for t in 0..16 {
                for s in [false, true] {
                    let f = Flags::new(p, t, s).unwrap();
                    assert_eq!(Flags::from_attributes(f.apply_to(u64::MAX)), f);
                    assert_eq!(Flags::from_attributes(f.apply_to(0)), f);
                }
            }
        }
        assert!(Flags::new(16, 0, false).is_err());
        assert!(Flags::new(0, 16, false).is_err());
    }

    #[test]
    fn bootable_rule() {
        assert!(!Flags::new(0, 5, true).unwrap().bootable());
        assert!(!Flags::new(3, 0, false).unwrap().bootable());
        assert!(Flags::new(3, 0, true).unwrap().bootable());
        assert!(Flags::new(3, 1, false).unwrap().bootable());
    }
}
