//! The text boot-flags puts in front of a user (status lines, errors,
//! `Debug` in logs), pinned to hand-written strings: slotctl's output and
//! the QEMU scenarios' expectations are built from these.

use boot_flags::state::{boot_select, BootChoice, BootKind};
use boot_flags::{Flags, GptCopy, Guid, Health, Nibble, SlotFlags, SlotId};

fn f(p: u8, t: u8, s: bool) -> Flags {
    Flags::new(p, t, s).unwrap()
}

#[test]
fn nibble_and_flags() {
    let n = Nibble::new(11).unwrap();
    assert_eq!(format!("{n}"), "11");
    assert_eq!(format!("{n:?}"), "11");
    assert_eq!(format!("{:?}", Nibble::ZERO), "0");
    assert_eq!(
        f(2, 3, false).to_string(),
        "priority=2 tries=3 successful=0"
    );
    assert_eq!(
        f(15, 0, true).to_string(),
        "priority=15 tries=0 successful=1"
    );
    assert_eq!(
        format!("{:?}", f(1, 2, true)),
        "Flags { priority: 1, tries: 2, successful: true }"
    );
}

#[test]
fn nibble_arithmetic_stops_at_the_ends() {
    let n = |v| Nibble::new(v).unwrap();
    assert_eq!(n(0).saturating_dec(), n(0));
    assert_eq!(n(1).saturating_dec(), n(0));
    assert_eq!(n(9).saturating_dec(), n(8));
    assert_eq!(n(14).saturating_inc(), n(15));
    assert_eq!(n(15).saturating_inc(), n(15));
    assert_eq!(n(0).saturating_inc(), n(1));
    assert_eq!(Nibble::MAX.get(), 15);
    assert!(Nibble::new(16).is_none());
    assert_eq!(Nibble::try_from(15u8).unwrap(), n(15));
    let e = Nibble::try_from(16u8).unwrap_err();
    assert_eq!(e.to_string(), "value = 16 is out of range (at most 15)");
    let e = Flags::new(3, 17, false).unwrap_err();
    assert_eq!(e.to_string(), "tries = 17 is out of range (at most 15)");
    let e = Flags::new(20, 1, false).unwrap_err();
    assert_eq!(e.to_string(), "priority = 20 is out of range (at most 15)");
}

#[test]
fn flags_good_and_bootable() {
    // good = bootable and successful.
    assert!(f(1, 0, true).good());
    assert!(!f(1, 3, false).good(), "on trial is bootable but not good");
    assert!(!f(0, 0, true).good(), "successful but priority 0");
    assert!(f(1, 3, false).bootable());
}

#[test]
fn guid_text() {
    let g = Guid([
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ]);
    assert_eq!(g.to_string(), "33221100-5544-7766-8899-aabbccddeeff");
    assert_eq!(
        format!("{g:?}"),
        "Guid(33221100-5544-7766-8899-aabbccddeeff)"
    );
    assert_eq!(
        "33221100-5544-7766-8899-aabbccddeeff"
            .parse::<Guid>()
            .unwrap(),
        g
    );
    // Five groups of the wrong lengths (a dash moved) are refused, though
    // all 32 hex digits are there.
    assert!("33221100-5544-7766-8899a-abbccddeeff"
        .parse::<Guid>()
        .is_err());
    assert!("332211005-544-7766-8899-aabbccddeeff"
        .parse::<Guid>()
        .is_err());
    assert!(Guid::ZERO.is_zero());
    assert!(!g.is_zero());
    // Version 4, RFC 4122 variant, the other bits as given.
    let r = Guid::from_random_bytes([0xff; 16]);
    assert_eq!(r.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    let r = Guid::from_random_bytes([0; 16]);
    assert_eq!(r.to_string(), "00000000-0000-4000-8000-000000000000");
    assert_eq!(r.0[7], 0x40);
    assert_eq!(r.0[8], 0x80);
}

#[test]
fn gpt_words() {
    assert_eq!(GptCopy::Primary.to_string(), "primary");
    assert_eq!(GptCopy::Backup.to_string(), "backup");
    assert_eq!(GptCopy::Primary.other(), GptCopy::Backup);
    assert_eq!(GptCopy::Backup.other(), GptCopy::Primary);
    assert_eq!(Health::Ok.to_string(), "ok");
    assert_eq!(
        Health::Bad("header CRC mismatch".into()).to_string(),
        "bad: header CRC mismatch"
    );
    assert!(Health::Ok.is_ok());
    assert!(!Health::Bad(String::new()).is_ok());
}

#[test]
fn slot_ids() {
    assert_eq!(SlotId::A.to_string(), "A");
    assert_eq!(SlotId::B.to_string(), "B");
    assert_eq!(!SlotId::A, SlotId::B);
    assert_eq!(!SlotId::B, SlotId::A);
    assert_eq!("b".parse::<SlotId>().unwrap(), SlotId::B);
    assert_eq!("a".parse::<SlotId>().unwrap(), SlotId::A);
    let e = "C".parse::<SlotId>().unwrap_err();
    assert_eq!(e.to_string(), "not a slot: \"C\" (expected A or B)");
}

#[test]
fn boot_choice_lines() {
    let good = boot_select(SlotFlags {
        a: f(1, 0, true),
        b: f(0, 0, false),
    });
    assert_eq!(good.to_string(), "slot A (good)");
    let trial = boot_select(SlotFlags {
        a: f(1, 0, true),
        b: f(2, 3, false),
    });
    assert_eq!(trial.kind, BootKind::Trial { tries_left: 2 });
    assert_eq!(trial.to_string(), "slot B (on trial, 2 tries left)");
    let one = BootChoice {
        kind: BootKind::Trial { tries_left: 1 },
        ..trial
    };
    assert_eq!(one.to_string(), "slot B (on trial, 1 try left)");
    let last = boot_select(SlotFlags {
        a: f(0, 0, false),
        b: f(0, 0, true),
    });
    assert_eq!(
        last.to_string(),
        "slot B as a last resort: no slot is bootable (it was the last successful slot)"
    );
    let none = boot_select(SlotFlags::default());
    assert_eq!(
        none.to_string(),
        "slot A as a last resort: no slot is bootable (no slot was ever successful, so A)"
    );
}
