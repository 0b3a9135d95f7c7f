//! The `gpt` crate as one more GPT reader (issue 16): it agrees with
//! `status --json` and sfdisk on 512- and 4096-byte-sector images, keeps
//! the attribute bits slotctl does not own, and its checks fail on a
//! disagreement (one flipped attribute bit with recomputed CRCs, or a
//! status value that does not match the disk).

use std::process::Command;

use slotctl_tests::disk::{assert_tools_agree, compare_crate_with_sfdisk, text, Image};
use slotctl_tests::gptcrate::{self, compare, flag_bits};
use slotctl_tests::require_tool;

/// Flip attribute bit `bit` of entry `index` (1-based) in both entry
/// arrays and recompute both arrays' and both headers' CRCs: a valid table
/// that differs from the old one in that one bit.
fn flip_attr_bit(img: &Image, index: u32, bit: u32) {
    let ss = img.sector_size as usize;
    let mut d = img.bytes();
    let u32_at = |d: &[u8], o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
    let u64_at = |d: &[u8], o: usize| u64::from_le_bytes(d[o..o + 8].try_into().unwrap());
    let backup_lba = u64_at(&d, ss + 32) as usize;
    for h in [ss, backup_lba * ss] {
        assert_eq!(&d[h..h + 8], b"EFI PART", "no GPT header at byte {h}");
        let hsize = u32_at(&d, h + 12) as usize;
        let entries = u64_at(&d, h + 72) as usize * ss;
        let n = u32_at(&d, h + 80) as usize;
        let esize = u32_at(&d, h + 84) as usize;
        let a = entries + (index as usize - 1) * esize + 48;
        let word = u64_at(&d, a) ^ (1 << bit);
        d[a..a + 8].copy_from_slice(&word.to_le_bytes());
        let crc = crc32fast::hash(&d[entries..entries + n * esize]);
        d[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
        d[h + 16..h + 20].fill(0);
        let crc = crc32fast::hash(&d[h..h + hsize]);
        d[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&img.path, d).unwrap();
}

/// The crate reads what slotctl wrote, after each flags change, on both
/// sector sizes (the whole cross-check: status, cgpt, sfdisk, sgdisk, gpt).
#[test]
fn agrees_with_status_and_sfdisk_512_and_4096() {
    for ss in [512, 4096] {
        let img = Image::new(ss);
        let st = assert_tools_agree(&img);
        let t = gptcrate::read(&img.path, ss).unwrap();
        assert_eq!(t.entries.len(), 5, "{t:?}");
        assert_eq!(t.entries[&5].name, "DATA");
        assert!(t.primary_ok && t.backup_ok);
        assert_eq!(st["shared"][0]["size"], 2 << 20);
        img.ok(&["set-flags", "A", "--priority", "15", "--tries", "15"]);
        img.ok(&["set-flags", "B", "--priority", "9", "--successful", "1"]);
        assert_tools_agree(&img);
        let t = gptcrate::read(&img.path, ss).unwrap();
        assert_eq!(flag_bits(t.entries[&1].attrs), (15, 15, false));
        assert_eq!(flag_bits(t.entries[&3].attrs), (9, 0, true));
    }
}

/// Attribute bits slotctl does not own (set by sgdisk: 0, 2, 60, 63)
/// survive its flag writes, as the crate and sfdisk both read them.
#[test]
fn other_attribute_bits_round_trip() {
    require_tool("sgdisk");
    for ss in [512, 4096] {
        let img = Image::new(ss);
        {
            let view = img.tool_view();
            let out = Command::new("sgdisk")
                .args(["-A", "1:set:0", "-A", "1:set:2", "-A", "1:set:60"])
                .args(["-A", "3:set:63", "-A", "2:set:1"])
                .arg(&view.path)
                .output()
                .unwrap();
            assert!(out.status.success(), "sgdisk: {}", text(&out.stderr));
        }
        img.ok(&["set-flags", "A", "--priority", "3", "--tries", "2"]);
        img.ok(&["set-flags", "B", "--priority", "1", "--successful", "1"]);
        assert_tools_agree(&img);
        let t = gptcrate::read(&img.path, ss).unwrap();
        let other = |i: u32| t.entries[&i].attrs & !(0x1ff << 48);
        assert_eq!(other(1), 1 | 1 << 2 | 1 << 60, "{ss}");
        assert_eq!(other(2), 1 << 1, "{ss}");
        assert_eq!(other(3), 1 << 63, "{ss}");
        assert_eq!(flag_bits(t.entries[&1].attrs), (3, 2, false));
        assert_eq!(flag_bits(t.entries[&3].attrs), (1, 0, true));
    }
}

/// One flipped bit in the attribute word (with valid CRCs) makes the
/// crate disagree with the status taken before: a priority bit with
/// status, a bit status does not show with sfdisk's earlier reading. After
/// the flip, every reader agrees again.
#[test]
fn a_flipped_attribute_bit_is_caught() {
    for ss in [512, 4096] {
        let img = Image::new(ss);
        let st_before = img.status();
        let sf_before = img.tool_view().sfdisk_entries();
        let t = gptcrate::read(&img.path, ss).unwrap();
        compare(&st_before, &t).unwrap();
        compare_crate_with_sfdisk(&t, &sf_before).unwrap();

        // Bit 49: slot B's priority (flags partition 3) 0 -> 2.
        flip_attr_bit(&img, 3, 49);
        let t = gptcrate::read(&img.path, ss).unwrap();
        let e = compare(&st_before, &t).unwrap_err();
        assert!(e.contains("slot B (partition 3)"), "{e}");
        assert!(
            e.contains("status (0, 0, false), gpt crate (2, 0, false)"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        let st = assert_tools_agree(&img);
        assert_eq!(st["slots"]["B"]["priority"], 2);

        // Bit 57, which status does not show: sfdisk's earlier reading
        // disagrees, its reading now agrees.
        flip_attr_bit(&img, 2, 57);
        let t = gptcrate::read(&img.path, ss).unwrap();
        compare(&img.status(), &t).unwrap();
        let e = compare_crate_with_sfdisk(&t, &sf_before).unwrap_err();
        assert!(e.contains("partition 2:"), "{e}");
        assert!(e.contains(&format!("{:#018x}", 1u64 << 57)), "{e}");
        assert_tools_agree(&img);
    }
}

/// What is changed, how, and what the error must say.
type Case = (&'static str, fn(&mut serde_json::Value), &'static str);

/// Each kind of mismatch a status could have is named: name, offset, size,
/// flags, a partition the crate does not see, one status does not show.
#[test]
fn mismatching_status_values_are_caught() {
    let img = Image::new(4096);
    let st = img.status();
    let t = gptcrate::read(&img.path, 4096).unwrap();
    compare(&st, &t).unwrap();
    let cases: [Case; 7] = [
        (
            "name",
            |s| s["slots"]["A"]["partitions"][1]["name"] = "ROOT-X".into(),
            "partition 2: name: status \"ROOT-X\", gpt crate \"ROOT-A\"",
        ),
        (
            "offset",
            |s| s["slots"]["B"]["partitions"][0]["offset"] = 6291456u64.wrapping_add(4096).into(),
            "partition 3 (BOOT-B): offset",
        ),
        (
            "size",
            |s| s["shared"][0]["size"] = (2u64 << 20).wrapping_sub(4096).into(),
            "partition 5 (DATA): size",
        ),
        (
            "tries",
            |s| s["slots"]["A"]["tries"] = 1.into(),
            "slot A (partition 1)",
        ),
        (
            "successful",
            |s| s["slots"]["B"]["successful"] = true.into(),
            "slot B (partition 3)",
        ),
        (
            "unknown index",
            |s| s["slots"]["B"]["partitions"][1]["index"] = 9.into(),
            "partition 9 (ROOT-B): in status, not a used entry",
        ),
        (
            "hidden partition",
            |s| s["shared"] = serde_json::json!([]),
            "partition 5 (DATA): a used entry for the gpt crate, not in status",
        ),
    ];
    for (what, change, needle) in cases {
        let mut bad = st.clone();
        change(&mut bad);
        let e = compare(&bad, &t).expect_err(what);
        assert!(e.contains(needle), "{what}: {e}");
    }
    // The sector size the crate was given must be the disk's.
    let e = gptcrate::read(&img.path, 512)
        .map(|t| compare(&st, &t))
        .expect_err("a 4K disk read as 512 has no GPT at LBA 1");
    assert!(e.contains("gpt crate: read"), "{e}");
    // A GUID that differs from sfdisk's is named.
    let mut sf = img.tool_view().sfdisk_entries();
    sf.get_mut(&4).unwrap().part_guid = "00000000-0000-0000-0000-000000000000".into();
    let e = compare_crate_with_sfdisk(&t, &sf).unwrap_err();
    assert!(e.contains("partition 4:"), "{e}");
}

/// A header status calls "ok" that the crate finds invalid is named (one
/// byte of the backup header's CRC changed after status was taken).
#[test]
fn a_bad_backup_header_is_caught() {
    let img = Image::new(512);
    let st = img.status();
    let mut d = img.bytes();
    let h = d.len() - 512;
    assert_eq!(&d[h..h + 8], b"EFI PART");
    d[h + 16] ^= 1;
    std::fs::write(&img.path, d).unwrap();
    let t = gptcrate::read(&img.path, 512).unwrap();
    assert!(t.primary_ok && !t.backup_ok, "{t:?}");
    let e = compare(&st, &t).unwrap_err();
    assert_eq!(e, "backup header: status ok, gpt crate finds it invalid");
    let now = img.status();
    assert_ne!(now["gpt"]["backup"], "ok", "{now}");
    compare(&now, &t).unwrap();
}
