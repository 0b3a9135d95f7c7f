//! `Gpt::read` on tables edited one field at a time (headers re-sealed with
//! a valid CRC, so only the rule under test can reject them): when a valid
//! backup counts as agreeing with the primary, when a backup alone can
//! rebuild the primary, which sector sizes a device may report.

mod common;

use boot_flags::gpt::Header;
use boot_flags::{Error, Gpt, GptCopy, Guid, MemDevice};

const SS: usize = 512;

/// Edit the header sector at `lba` and re-seal it (new header CRC).
fn edit_header(dev: &mut MemDevice, lba: usize, f: impl FnOnce(&mut Header)) {
    let sector = &mut dev.data[lba * SS..(lba + 1) * SS];
    let mut h = Header::parse(sector).unwrap();
    f(&mut h);
    h.write_into(sector);
}

/// One header edit, named.
type Edit = (&'static str, fn(&mut Header));

fn last_lba(dev: &MemDevice) -> usize {
    dev.data.len() / SS - 1
}

/// A backup that differs from the primary in one header field is valid on
/// its own but stale: bad, with the reason, and the primary is used.
#[test]
fn a_backup_differing_in_one_field_is_stale() {
    let cases: [Edit; 3] = [
        ("disk GUID", |h| h.disk_guid = Guid([0x11; 16])),
        ("first usable LBA", |h| h.first_usable_lba += 1),
        ("last usable LBA", |h| h.last_usable_lba -= 1),
    ];
    for (what, edit) in cases {
        let mut dev = common::sample_disk(512);
        let last = last_lba(&dev);
        edit_header(&mut dev, last, edit);
        let gpt = Gpt::read(&mut dev).unwrap();
        assert!(gpt.health(GptCopy::Primary).is_ok(), "{what}");
        let h = gpt.health(GptCopy::Backup).to_string();
        assert!(h.contains("differs from the primary"), "{what}: {h}");
        assert!(!gpt.is_healthy());
        assert_eq!(gpt.header().disk_guid, Guid::from_random_bytes([0x42; 16]));
    }
}

/// Same entry bytes, read with another entry size (64 entries of 256
/// bytes instead of 128 of 128): stale too.
#[test]
fn a_backup_with_another_entry_size_is_stale() {
    let mut dev = common::sample_disk(512);
    let last = last_lba(&dev);
    edit_header(&mut dev, last, |h| {
        h.entry_size = 256;
        h.num_entries = 64;
    });
    let gpt = Gpt::read(&mut dev).unwrap();
    let h = gpt.health(GptCopy::Backup).to_string();
    assert!(h.contains("differs from the primary"), "{h}");
    // The untouched table agrees with itself.
    let mut dev = common::sample_disk(512);
    assert!(Gpt::read(&mut dev).unwrap().is_healthy());
}

/// With the primary unusable, the backup rebuilds it at LBA 2..: allowed
/// when the array fits before the first usable LBA. When it does not, the
/// backup is still read (a valid table to boot from) but the table is not
/// writable: repair refuses and nothing is written.
#[test]
fn a_backup_alone_rebuilds_the_primary_only_if_there_is_room() {
    // 128 x 128 bytes = 32 sectors: LBA 2..=33, so first usable 34 fits.
    for (first_usable, fits) in [(34u64, true), (33, false)] {
        let mut dev = common::sample_disk(512);
        let last = last_lba(&dev);
        edit_header(&mut dev, last, |h| h.first_usable_lba = first_usable);
        dev.data[SS..SS + 8].fill(0); // the primary's signature
        let before = dev.data.clone();
        let mut gpt = Gpt::read(&mut dev).unwrap();
        assert!(!gpt.health(GptCopy::Primary).is_ok());
        assert_eq!(gpt.header().first_usable_lba, first_usable);
        if fits {
            gpt.check_writable().unwrap();
            gpt.repair(&mut dev).unwrap();
            let back = Gpt::read(&mut dev).unwrap();
            assert!(back.is_healthy());
            assert_eq!(back.header().my_lba, 1);
            assert_eq!(back.header().entries_lba, 2);
        } else {
            let e = gpt.check_writable().unwrap_err().to_string();
            assert!(e.contains("no room for the primary GPT copy"), "{e}");
            let e = gpt.repair(&mut dev).unwrap_err().to_string();
            assert!(e.contains("no room for the primary GPT copy"), "{e}");
            assert!(dev.data == before);
        }
    }
}

/// A device may report 512 or 4096; anything else is refused by name.
#[test]
fn reported_sector_sizes() {
    for (reported, ok) in [(512u32, true), (4096, false), (1024, false), (0, false)] {
        let mut dev = common::sample_disk(512);
        dev.sector_size = Some(reported);
        let r = Gpt::read(&mut dev);
        match (reported, r) {
            (512, Ok(g)) => assert!(ok && g.sector_size() == 512),
            (4096, Err(e)) => assert!(!matches!(e, Error::SectorSize(_)), "{e}"),
            (s, Err(Error::SectorSize(got))) => assert_eq!(got, s),
            (s, other) => panic!("reported {s}: {other:?}"),
        }
    }
    assert_eq!(
        Error::SectorSize(1024).to_string(),
        "unsupported logical sector size 1024 (512 and 4096 are supported)"
    );
}

/// A 4K table on a device that reports nothing is found by trying 4096
/// after 512; a disk too small for three 4K sectors is not probed at 4K.
#[test]
fn detected_sector_size_and_tiny_disks() {
    let mut dev = common::sample_disk(4096);
    assert_eq!(Gpt::read(&mut dev).unwrap().sector_size(), 4096);
    // 3 x 512 bytes: big enough to look at, nothing there.
    let mut small = MemDevice::new(3 * 512);
    let e = Gpt::read(&mut small).unwrap_err().to_string();
    assert!(e.contains("no partition table found"), "{e}");
    // Less than 3 x 512: named as too small.
    let mut tiny = MemDevice::new(3 * 512 - 1);
    let e = Gpt::read(&mut tiny).unwrap_err().to_string();
    assert!(e.contains("the disk is only 1535 bytes"), "{e}");
}

/// Both copies bad on a disk of the right size: "both copies bad", not
/// "truncated", even when the primary header itself is intact (its entry
/// array is what is damaged) and says the disk is exactly this big.
#[test]
fn both_bad_on_a_full_size_disk_is_not_truncated() {
    let mut dev = common::sample_disk(512);
    let last = last_lba(&dev);
    dev.data[2 * SS + 60] ^= 0xff; // primary entry array
    dev.data[last * SS + 40] ^= 0xff; // backup header
    let e = Gpt::read(&mut dev).unwrap_err();
    assert!(matches!(e, Error::BothCopiesBad { .. }), "{e:?}");
    assert!(e.to_string().contains("entry array CRC mismatch"), "{e}");
    // One sector short, the same damage is a truncated image.
    dev.data.truncate(dev.data.len() - SS);
    let e = Gpt::read(&mut dev).unwrap_err();
    assert!(
        matches!(e, Error::Truncated { expected, actual } if expected == 8 << 20 && actual == (8 << 20) - 512),
        "{e:?}"
    );
}

/// The byte ranges a commit writes (what `Disk` drops from the cache before
/// its read-back): both entry arrays (16 KiB) and both header sectors.
#[test]
fn written_ranges_are_the_two_arrays_and_headers() {
    for ss in [512u64, 4096] {
        let mut dev = common::sample_disk(ss as u32);
        let gpt = Gpt::read(&mut dev).unwrap();
        let last = dev.data.len() as u64 / ss - 1;
        let array = 16384u64;
        let backup_entries = (last - array / ss) * ss;
        assert_eq!(
            gpt.written_ranges(),
            vec![
                (2 * ss, array),
                (ss, ss),
                (backup_entries, array),
                (last * ss, ss)
            ],
            "{ss}-byte sectors"
        );
        assert_eq!(gpt.disk_len(), 8 << 20);
        assert_eq!(gpt.entry_bytes().len(), 16384);
    }
}

/// Both copies bad: a GPT signature in either place makes it "both copies
/// corrupt" (there was a GPT), none at all makes it "no GPT".
#[test]
fn a_signature_in_either_place_means_a_damaged_gpt() {
    for (wipe_primary_sig, wipe_backup_sig) in [(true, false), (false, true), (true, true)] {
        let mut dev = common::sample_disk(512);
        let last = last_lba(&dev);
        // Break both copies: a signature wiped, or a header CRC broken.
        for (lba, wipe) in [(1, wipe_primary_sig), (last, wipe_backup_sig)] {
            if wipe {
                dev.data[lba * SS..lba * SS + 8].fill(0);
            } else {
                dev.data[lba * SS + 40] ^= 0xff;
            }
        }
        let e = Gpt::read(&mut dev).unwrap_err();
        if wipe_primary_sig && wipe_backup_sig {
            assert_eq!(
                e.to_string(),
                "no GPT on this disk (an MBR partition table only)"
            );
        } else {
            assert!(
                matches!(e, Error::BothCopiesBad { .. }),
                "{wipe_primary_sig} {wipe_backup_sig}: {e:?}"
            );
        }
    }
}

/// Disks too small for a GPT (fewer than 3 sectors) are named as such,
/// even with a stray "EFI PART" at LBA 1; from 3 sectors on, a signature
/// there is a damaged GPT.
#[test]
fn tiny_disks_with_a_signature() {
    for len in [600usize, 1024, 1535] {
        let mut dev = MemDevice::new(len);
        if len >= 520 {
            dev.data[512..520].copy_from_slice(b"EFI PART");
        }
        let e = Gpt::read(&mut dev).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("no GPT on this disk (the disk is only {len} bytes)")
        );
    }
    let mut dev = MemDevice::new(1536);
    dev.data[512..520].copy_from_slice(b"EFI PART");
    let e = Gpt::read(&mut dev).unwrap_err();
    assert!(matches!(e, Error::BothCopiesBad { .. }), "{e:?}");
}

/// Partition numbers are 1..=128 (the entry count): 0 and 129 are no
/// partition, not a panic, and cannot have attributes set.
#[test]
fn partition_numbers_outside_the_array() {
    let mut dev = common::sample_disk(512);
    let mut gpt = Gpt::read(&mut dev).unwrap();
    assert_eq!(gpt.header().num_entries, 128);
    for i in [0u32, 6, 128, 129, u32::MAX] {
        assert!(gpt.partition(i).is_none(), "partition {i}");
        let e = gpt.set_attributes(i, 1).unwrap_err();
        assert_eq!(e.to_string(), format!("partition {i} does not exist"));
    }
    assert_eq!(gpt.partition(5).unwrap().name, "DATA");
    let before = gpt.entry_bytes().to_vec();
    gpt.set_attributes(5, 0x1234).unwrap();
    assert_eq!(gpt.partition(5).unwrap().attributes, 0x1234);
    // Only entry 5's attribute word (bytes 48..56 of the 5th entry) moved.
    let after = gpt.entry_bytes();
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    assert!(
        changed
            .iter()
            .all(|&i| (4 * 128 + 48..4 * 128 + 56).contains(&i)),
        "{changed:?}"
    );
}

/// A stale backup with a shorter entry array (124 entries, 31 sectors,
/// ending at its header): rewriting it with the primary's 32-sector array
/// at its place would overwrite its own header, so the commit is refused
/// and nothing is written.
#[test]
fn a_shorter_stale_backup_is_not_overwritten_by_a_longer_array() {
    let mut dev = common::sample_disk(512);
    let last = last_lba(&dev);
    let entries_lba = last - 31;
    let array: Vec<u8> = dev.data[2 * SS..2 * SS + 124 * 128].to_vec();
    dev.data[entries_lba * SS..entries_lba * SS + array.len()].copy_from_slice(&array);
    edit_header(&mut dev, last, |h| {
        h.num_entries = 124;
        h.entries_lba = entries_lba as u64;
        h.entries_crc = crc32fast::hash(&array);
    });
    let mut gpt = Gpt::read(&mut dev).unwrap();
    let h = gpt.health(GptCopy::Backup).to_string();
    assert!(h.contains("differs from the primary"), "{h}");
    let before = dev.data.clone();
    gpt.set_attributes(1, 1 << 48).unwrap();
    let e = gpt.commit(&mut dev).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid partition layout: no room for the backup GPT copy (entries at LBA {entries_lba}, header at LBA {last})"
        )
    );
    assert!(dev.data == before);
}
