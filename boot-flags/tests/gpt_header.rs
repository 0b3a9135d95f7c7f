//! `Header::parse` and `Header::check_geometry` at the edge of every rule
//! (UEFI 2.x, section 5.3.2): each case is one field moved one step past
//! what is allowed, next to the last value that is still allowed. The
//! disk: 1000 sectors of 512 bytes, 128 entries of 128 bytes (32 sectors).

use boot_flags::gpt::Header;
use boot_flags::Guid;

const DISK: u64 = 1000;

/// The primary header of a well-formed table.
fn primary() -> Header {
    Header {
        revision: 0x0001_0000,
        header_size: 92,
        my_lba: 1,
        alternate_lba: DISK - 1,
        first_usable_lba: 34,
        last_usable_lba: 966,
        disk_guid: Guid([7; 16]),
        entries_lba: 2,
        num_entries: 128,
        entry_size: 128,
        entries_crc: 0,
    }
}

/// The backup header of the same table.
fn backup() -> Header {
    Header {
        my_lba: DISK - 1,
        alternate_lba: 1,
        entries_lba: 967,
        ..primary()
    }
}

fn geo(h: &Header, primary: bool) -> Result<(), String> {
    h.check_geometry(h.my_lba, primary, 512, DISK)
}

#[track_caller]
fn refused(h: &Header, primary: bool, why: &str) {
    let e = geo(h, primary).expect_err("must be refused");
    assert!(e.contains(why), "{e:?} should say {why:?}");
}

#[test]
fn the_base_tables_are_accepted() {
    geo(&primary(), true).unwrap();
    geo(&backup(), false).unwrap();
    assert_eq!(primary().entries_bytes(), 16384);
    assert_eq!(
        Header {
            num_entries: 3,
            entry_size: 256,
            ..primary()
        }
        .entries_bytes(),
        768
    );
}

#[test]
fn found_where_it_says() {
    let e = primary().check_geometry(2, true, 512, DISK).unwrap_err();
    assert!(e.contains("header at LBA 2 says it is at LBA 1"), "{e}");
}

#[test]
fn entry_size_edges() {
    // 120: too small; 130: not a multiple of 8; 136 (x 120 entries = 34
    // sectors, with the usable area moved up to fit) is fine.
    for size in [0, 120, 127, 130, 132] {
        let h = Header {
            entry_size: size,
            ..primary()
        };
        refused(&h, true, &format!("entry size {size} is invalid"));
    }
    let h = Header {
        entry_size: 136,
        num_entries: 120,
        first_usable_lba: 34,
        ..primary()
    };
    assert_eq!(h.entries_bytes(), 16320);
    geo(&h, true).unwrap();
}

#[test]
fn entry_array_size_edges() {
    let h = Header {
        num_entries: 0,
        ..primary()
    };
    refused(&h, true, "0 entries of 128 bytes");
    // 1 MiB is the cap: 8192 entries of 128 bytes (2048 sectors) pass on a
    // disk big enough, 8193 do not.
    let big = |n: u32| Header {
        num_entries: n,
        first_usable_lba: 2 + 2049,
        last_usable_lba: 10_000,
        alternate_lba: 20_000,
        ..primary()
    };
    big(8192).check_geometry(1, true, 512, 20_001).unwrap();
    let e = big(8193).check_geometry(1, true, 512, 20_001).unwrap_err();
    assert!(e.contains("8193 entries of 128 bytes"), "{e}");
    // With 4096-byte sectors the same 16 KiB array is 4 sectors.
    let h4 = Header {
        alternate_lba: 99,
        first_usable_lba: 6,
        last_usable_lba: 94,
        ..primary()
    };
    h4.check_geometry(1, true, 4096, 100).unwrap();
    let h4 = Header {
        first_usable_lba: 5,
        ..h4
    };
    h4.check_geometry(1, true, 4096, 100).unwrap_err();
}

#[test]
fn primary_alternate_edges() {
    // The alternate must lie past the usable area...
    let h = Header {
        alternate_lba: 966,
        ..primary()
    };
    refused(&h, true, "alternate header LBA 966 is inconsistent");
    let h = Header {
        alternate_lba: 967,
        ..primary()
    };
    geo(&h, true).unwrap();
    // ...and is never LBA 1 (even with a degenerate usable area).
    let h = Header {
        alternate_lba: 1,
        last_usable_lba: 0,
        ..primary()
    };
    refused(&h, true, "alternate header LBA 1 is inconsistent");
}

#[test]
fn primary_entry_array_edges() {
    // The array starts after the header...
    let h = Header {
        entries_lba: 1,
        ..primary()
    };
    refused(&h, true, "entry array at LBA 1 overlaps");
    // ...and ends at or before the first usable LBA.
    let h = Header {
        first_usable_lba: 33,
        ..primary()
    };
    refused(&h, true, "entry array at LBA 2 overlaps");
    let h = Header {
        entries_lba: 3,
        first_usable_lba: 35,
        ..primary()
    };
    geo(&h, true).unwrap();
    let h = Header {
        entries_lba: 3,
        ..primary()
    };
    refused(&h, true, "entry array at LBA 3 overlaps");
}

#[test]
fn backup_edges() {
    // The backup's alternate is the primary, at LBA 1.
    let h = Header {
        alternate_lba: 2,
        ..backup()
    };
    refused(&h, false, "alternate header LBA 2 is inconsistent");
    // Its array lies after the usable area...
    let h = Header {
        last_usable_lba: 967,
        ..backup()
    };
    refused(&h, false, "entry array at LBA 967 overlaps");
    // ...and ends at or before its own header.
    let h = Header {
        entries_lba: 968,
        ..backup()
    };
    refused(&h, false, "entry array at LBA 968 overlaps");
    let h = Header {
        entries_lba: 966,
        last_usable_lba: 965,
        ..backup()
    };
    geo(&h, false).unwrap();
    // The same header read as a primary is refused (its alternate is 1).
    refused(&backup(), true, "alternate header LBA 1");
    // And the primary read as a backup (its alternate is not 1).
    refused(&primary(), false, "alternate header LBA 999");
}

#[test]
fn usable_area_edges() {
    // An empty usable area (first = last + 1) is allowed, first > last + 1
    // is not.
    let h = Header {
        first_usable_lba: 967,
        entries_lba: 968,
        ..backup()
    };
    refused(&h, false, "entry array at LBA 968 overlaps");
    let h = Header {
        last_usable_lba: 33,
        ..primary()
    };
    geo(&h, true).unwrap();
    let h = Header {
        last_usable_lba: 32,
        ..primary()
    };
    refused(&h, true, "usable area 34..=32 is invalid");
    // The usable area never starts at LBA 0 or 1 (checked on a backup,
    // whose own array does not pin it).
    let h = Header {
        first_usable_lba: 1,
        ..backup()
    };
    refused(&h, false, "usable area 1..=966 is invalid");
    let h = Header {
        first_usable_lba: 2,
        ..backup()
    };
    geo(&h, false).unwrap();
}

#[test]
fn disk_size_edges() {
    // The primary's alternate must be on the disk.
    let h = primary();
    h.check_geometry(1, true, 512, DISK).unwrap();
    let e = h.check_geometry(1, true, 512, DISK - 1).unwrap_err();
    assert!(
        e.contains("describes a disk of at least 1000 sectors, the disk has 999"),
        "{e}"
    );
    // The backup itself must be on the disk.
    let b = backup();
    b.check_geometry(DISK - 1, false, 512, DISK).unwrap();
    let e = b
        .check_geometry(DISK - 1, false, 512, DISK - 1)
        .unwrap_err();
    assert!(e.contains("at least 1000 sectors, the disk has 999"), "{e}");
}

fn sector_of(h: &Header, len: usize) -> Vec<u8> {
    let mut s = vec![0u8; len];
    h.write_into(&mut s);
    s
}

#[test]
fn parse_edges() {
    let h = primary();
    let s = sector_of(&h, 512);
    assert_eq!(Header::parse(&s).unwrap(), h);
    // Field offsets, as UEFI places them.
    assert_eq!(&s[..8], b"EFI PART");
    assert_eq!(s[8..12], 0x0001_0000u32.to_le_bytes());
    assert_eq!(s[12..16], 92u32.to_le_bytes());
    assert_eq!(s[24..32], 1u64.to_le_bytes());
    assert_eq!(s[32..40], 999u64.to_le_bytes());
    assert_eq!(s[40..48], 34u64.to_le_bytes());
    assert_eq!(s[48..56], 966u64.to_le_bytes());
    assert_eq!(s[56..72], [7; 16]);
    assert_eq!(s[72..80], 2u64.to_le_bytes());
    assert_eq!(s[80..84], 128u32.to_le_bytes());
    assert_eq!(s[84..88], 128u32.to_le_bytes());
    // The header CRC: CRC32 of bytes 0..92 with the CRC field zeroed.
    let mut z = s[..92].to_vec();
    z[16..20].fill(0);
    assert_eq!(s[16..20], crc32fast::hash(&z).to_le_bytes());

    // Too short for a header, or no signature.
    assert!(Header::parse(&s[..91]).unwrap_err().contains("signature"));
    Header::parse(&s[..92]).unwrap();
    let mut bad = s.clone();
    bad[0] = b'e';
    assert!(Header::parse(&bad).unwrap_err().contains("signature"));

    // header_size: 92..=sector length.
    for (size, ok) in [
        (91u32, false),
        (92, true),
        (511, true),
        (512, true),
        (513, false),
    ] {
        let h = Header {
            header_size: size.min(512),
            ..primary()
        };
        let mut s = sector_of(&h, 512);
        // (write_into cannot take a size past the sector: set it by hand.)
        s[12..16].copy_from_slice(&size.to_le_bytes());
        match Header::parse(&s) {
            Ok(back) => assert!(ok && back == h, "size {size}"),
            Err(e) => assert!(
                !ok && e.contains(&format!("header size {size} is invalid")),
                "size {size}: {e}"
            ),
        }
    }
    // A larger header's tail is under the CRC.
    let h = Header {
        header_size: 100,
        ..primary()
    };
    let mut s = sector_of(&h, 512);
    s[96] ^= 1;
    assert!(Header::parse(&s)
        .unwrap_err()
        .contains("header CRC mismatch"));
    // Past header_size, bytes are not under the CRC.
    let mut s = sector_of(&h, 512);
    s[100] ^= 1;
    Header::parse(&s).unwrap();
}
