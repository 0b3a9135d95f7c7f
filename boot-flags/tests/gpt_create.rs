//! `Gpt::create` and `usable_area`, checked byte by byte against the UEFI
//! 2.x layout (protective MBR in LBA 0, 128 entries of 128 bytes) and at
//! the edge of every refusal. `sgdisk -v` (gdisk) then judges a created
//! image independently.

use std::process::Command;

use boot_flags::gpt::usable_area;
use boot_flags::{BlockDevice, FileDevice, Gpt, Guid, MemDevice, NewPartition};

fn part(name: &str, first: u64, last: u64) -> NewPartition {
    NewPartition {
        name: name.into(),
        type_guid: Guid::LINUX_DATA,
        unique_guid: Guid::from_random_bytes([0x33; 16]),
        first_lba: first,
        last_lba: last,
        attributes: 0x8000_0000_0000_0004,
    }
}

#[test]
fn usable_area_edges() {
    // 512-byte sectors: the 16 KiB array is 32 sectors, so LBA 0..=33 and
    // the last 33 sectors are the table's.
    assert_eq!(usable_area(512, 68), Some((34, 34)));
    assert_eq!(usable_area(512, 67), None);
    assert_eq!(usable_area(512, 10), None);
    assert_eq!(usable_area(512, 16384), Some((34, 16384 - 34)));
    // 4096-byte sectors: 4 sectors of entries.
    assert_eq!(usable_area(4096, 12), Some((6, 6)));
    assert_eq!(usable_area(4096, 11), None);
    assert_eq!(usable_area(4096, 2048), Some((6, 2042)));
}

#[test]
fn the_layout_byte_by_byte() {
    for ss in [512u64, 4096] {
        let len = 4u64 << 20;
        let sectors = len / ss;
        let mut dev = MemDevice::new(len as usize);
        let (first, last) = usable_area(ss as u32, sectors).unwrap();
        let gpt = Gpt::create(
            &mut dev,
            ss as u32,
            Guid::from_random_bytes([9; 16]),
            &[part("ROOT-A", first, first + 99), part("é-B", last, last)],
        )
        .unwrap();
        assert_eq!(gpt.sector_size() as u64, ss);
        let d = &dev.data;
        // Protective MBR: one partition of type 0xEE from LBA 1 over the
        // rest of the disk (in sectors of this disk), CHS 0/0/2..max.
        let e = &d[446..462];
        assert_eq!(e[0], 0x00);
        assert_eq!(e[1..4], [0x00, 0x02, 0x00]);
        assert_eq!(e[4], 0xee);
        assert_eq!(e[5..8], [0xff, 0xff, 0xff]);
        assert_eq!(e[8..12], 1u32.to_le_bytes());
        assert_eq!(e[12..16], ((sectors - 1) as u32).to_le_bytes());
        assert!(d[462..510].iter().all(|&b| b == 0), "other MBR entries");
        assert_eq!(d[510..512], [0x55, 0xaa]);
        // Primary header in LBA 1, entries from LBA 2; backup header in the
        // last LBA, its entries just before it.
        let s = ss as usize;
        let array = 16384;
        assert_eq!(&d[s..s + 8], b"EFI PART");
        let last_lba = sectors as usize - 1;
        assert_eq!(&d[last_lba * s..last_lba * s + 8], b"EFI PART");
        let h = gpt.header();
        assert_eq!((h.my_lba, h.alternate_lba), (1, sectors - 1));
        assert_eq!((h.first_usable_lba, h.last_usable_lba), (first, last));
        assert_eq!((h.entries_lba, h.num_entries, h.entry_size), (2, 128, 128));
        assert_eq!(h.revision, 0x0001_0000);
        assert_eq!(h.header_size, 92);
        let backup_entries = (last_lba - array / s) * s;
        assert_eq!(
            d[2 * s..2 * s + array],
            d[backup_entries..backup_entries + array]
        );
        // Entry 1, by its UEFI offsets.
        let en = &d[2 * s..2 * s + 128];
        assert_eq!(en[0..16], Guid::LINUX_DATA.0);
        assert_eq!(en[16..32], Guid::from_random_bytes([0x33; 16]).0);
        assert_eq!(en[32..40], first.to_le_bytes());
        assert_eq!(en[40..48], (first + 99).to_le_bytes());
        assert_eq!(en[48..56], 0x8000_0000_0000_0004u64.to_le_bytes());
        let name: Vec<u8> = "ROOT-A".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(en[56..56 + name.len()], name[..]);
        assert!(en[56 + name.len()..].iter().all(|&b| b == 0));
        // Entry 2 in table order (numbered as given), a non-ASCII name.
        let p2 = gpt.partition(2).unwrap();
        assert_eq!(
            (p2.name.as_str(), p2.first_lba, p2.last_lba),
            ("é-B", last, last)
        );
        assert_eq!(
            d[2 * s + 128 + 56..2 * s + 128 + 60],
            [0xe9, 0x00, 0x2d, 0x00]
        );
        assert!(gpt.partition(3).is_none());
        assert!(gpt.is_healthy());
    }
}

fn try_create(parts: &[NewPartition]) -> Result<MemDevice, String> {
    let mut dev = MemDevice::new(1 << 20);
    match Gpt::create(&mut dev, 512, Guid::ZERO, parts) {
        Ok(_) => Ok(dev),
        Err(e) => {
            assert!(dev.data.iter().all(|&b| b == 0), "written on refusal: {e}");
            Err(e.to_string())
        }
    }
}

#[test]
fn refusals_at_the_edges() {
    // The 1 MiB disk: 2048 sectors, usable 34..=2014.
    let (first, last) = usable_area(512, 2048).unwrap();
    assert_eq!((first, last), (34, 2014));
    try_create(&[part("X", first, last)]).unwrap();
    let e = try_create(&[part("X", first - 1, last)]).unwrap_err();
    assert!(
        e.contains("X: LBAs 33..=2014 outside the usable area 34..=2014"),
        "{e}"
    );
    let e = try_create(&[part("X", first, last + 1)]).unwrap_err();
    assert!(e.contains("outside the usable area"), "{e}");
    try_create(&[part("X", 100, 100)]).unwrap();
    let e = try_create(&[part("X", 101, 100)]).unwrap_err();
    assert!(e.contains("X: LBAs 101..=100 outside"), "{e}");
    // Adjacent partitions are fine, one shared sector is an overlap (in
    // either order given).
    try_create(&[part("A", 100, 199), part("B", 200, 299)]).unwrap();
    let e = try_create(&[part("B", 199, 299), part("A", 100, 199)]).unwrap_err();
    assert!(e.contains("partitions A and B overlap"), "{e}");
    // A zero type GUID would be an unused entry.
    let mut z = part("Z", 100, 200);
    z.type_guid = Guid::ZERO;
    let e = try_create(&[z]).unwrap_err();
    assert!(e.contains("Z: zero type GUID"), "{e}");
    // Names: 36 UTF-16 units fit, 37 do not.
    try_create(&[part(&"N".repeat(36), 100, 200)]).unwrap();
    let e = try_create(&[part(&"N".repeat(37), 100, 200)]).unwrap_err();
    assert!(e.contains("longer than 36 UTF-16 units"), "{e}");
    // 128 entries: 128 partitions fit, 129 do not.
    let many = |n: u64| {
        (0..n)
            .map(|i| part("P", 34 + i, 34 + i))
            .collect::<Vec<_>>()
    };
    let dev = try_create(&many(128)).unwrap();
    assert_eq!(Gpt::read(&mut dev.clone()).unwrap().partitions().len(), 128);
    let e = try_create(&many(129)).unwrap_err();
    assert!(e.contains("129 partitions, at most 128"), "{e}");
    // Sector sizes and disk sizes.
    let mut dev = MemDevice::new(1 << 20);
    let e = Gpt::create(&mut dev, 2048, Guid::ZERO, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported logical sector size 2048 (512 and 4096 are supported)"
    );
    let mut dev = MemDevice::new(67 * 512);
    let e = Gpt::create(&mut dev, 512, Guid::ZERO, &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("a disk of 34304 bytes is too small for a GPT"),
        "{e}"
    );
    let mut dev = MemDevice::new(68 * 512);
    Gpt::create(&mut dev, 512, Guid::ZERO, &[]).unwrap();
}

/// A disk of more than 2^32 sectors: the protective MBR's size field is
/// capped at 0xFFFFFFFF (a sparse 3 TiB image file).
#[test]
fn protective_mbr_size_is_capped_on_a_huge_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(3 << 40).unwrap();
    drop(f);
    let mut dev = FileDevice::open(&path, true).unwrap();
    Gpt::create(
        &mut dev,
        512,
        Guid::from_random_bytes([5; 16]),
        &[part("X-A", 2048, 4095), part("X-B", 4096, 6143)],
    )
    .unwrap();
    let mut mbr = [0u8; 512];
    dev.read_exact_at(0, &mut mbr).unwrap();
    assert_eq!(mbr[446 + 12..446 + 16], [0xff; 4]);
    drop(dev);
    sgdisk_verifies(&path);
}

/// gdisk's own verifier finds no problem with a created table.
fn sgdisk_verifies(path: &std::path::Path) {
    let out = Command::new("sgdisk")
        .arg("-v")
        .arg(path)
        .output()
        .expect("sgdisk must be installed (gdisk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("No problems found"),
        "sgdisk -v: {text}"
    );
}

#[test]
fn sgdisk_accepts_a_created_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let mut dev = FileDevice::open(&path, true).unwrap();
    Gpt::create(
        &mut dev,
        512,
        Guid::from_random_bytes([6; 16]),
        &[
            part("BOOT-A", 2048, 4095),
            part("BOOT-B", 4096, 6143),
            part("DATA", 6144, 16000),
        ],
    )
    .unwrap();
    drop(dev);
    sgdisk_verifies(&path);
}
