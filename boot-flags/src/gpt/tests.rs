use super::*;
use crate::device::MemDevice;
use crate::flags::Flags;

#[path = "../../tests/common/mod.rs"]
mod common;
use common::sample_disk;

fn ranges_equal_outside(a: &[u8], b: &[u8], allowed: &[(u64, u64)]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            let inside = allowed
                .iter()
                .any(|&(off, len)| (i as u64) >= off && (i as u64) < off + len);
            assert!(inside, "byte {i} changed outside the allowed ranges");
        }
    }
}

#[test]
fn create_and_read_both_sector_sizes() {
    for ss in [512, 4096] {
        let mut dev = sample_disk(ss);
        let gpt = Gpt::read(&mut dev).unwrap();
        assert_eq!(gpt.sector_size(), ss);
        assert!(gpt.is_healthy());
        let parts = gpt.partitions();
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[1].name, "ROOT-A");
        assert_eq!(parts[1].index, 2);
        assert_eq!(gpt.byte_range(&parts[0]), (1 << 20, 1 << 20));
        // Protective MBR.
        assert_eq!(dev.data[446 + 4], 0xee);
        assert_eq!(&dev.data[510..512], &[0x55, 0xaa]);
    }
}

#[test]
fn sector_size_from_device_is_used() {
    let mut dev = sample_disk(4096);
    dev.sector_size = Some(512);
    // Told 512 by the device, a 4K table is not found.
    assert!(Gpt::read(&mut dev).is_err());
    dev.sector_size = Some(4096);
    assert_eq!(Gpt::read(&mut dev).unwrap().sector_size(), 4096);
}

#[test]
fn commit_changes_only_the_flag_bits_and_crcs() {
    for ss in [512, 4096] {
        let mut dev = sample_disk(ss);
        let before = dev.data.clone();
        let mut gpt = Gpt::read(&mut dev).unwrap();
        let p = gpt.partition(3).unwrap();
        let word = Flags::new(2, 3, false).unwrap().apply_to(p.attributes);
        gpt.set_attributes(3, word).unwrap();
        gpt.commit(&mut dev).unwrap();

        let ss64 = u64::from(ss);
        let last = dev.data.len() as u64 / ss64 - 1;
        let entries_len = 128 * 128;
        let backup_entries = (last - entries_len / ss64) * ss64;
        // Allowed to change: the attribute word of entry 3 in both arrays,
        // and the two CRC fields of both headers.
        let attr_off = 2 * 128 + 48;
        let allowed = [
            (2 * ss64 + attr_off, 8),
            (backup_entries + attr_off, 8),
            (ss64 + 16, 4),
            (ss64 + 88, 4),
            (last * ss64 + 16, 4),
            (last * ss64 + 88, 4),
        ];
        ranges_equal_outside(&before, &dev.data, &allowed);
        assert_ne!(before, dev.data);

        let back = Gpt::read(&mut dev).unwrap();
        assert!(back.is_healthy());
        let p3 = back.partition(3).unwrap();
        assert_eq!(p3.attributes, word);
        assert_eq!(
            p3.attributes & !crate::FLAGS_MASK,
            p.attributes & !crate::FLAGS_MASK
        );
        // Exact word: bits 0, 2, 57, 60, 63 plus P=2 (48..51), T=3 (52..55).
        assert_eq!(p3.attributes, 0x9232_0000_0000_0005);
    }
}

#[test]
fn numbering_with_gaps_is_preserved() {
    let mut dev = sample_disk(512);
    let mut gpt = Gpt::read(&mut dev).unwrap();
    // Remove entries 1, 3 and 5: partitions 2 and 4 remain, with a gap.
    for i in [1usize, 3, 5] {
        gpt.entries[(i - 1) * 128..i * 128].fill(0);
    }
    gpt.commit(&mut dev).unwrap();
    let before = dev.data.clone();
    let mut gpt = Gpt::read(&mut dev).unwrap();
    let idx: Vec<u32> = gpt.partitions().iter().map(|p| p.index).collect();
    assert_eq!(idx, vec![2, 4]);
    gpt.set_attributes(4, Flags::new(1, 0, true).unwrap().apply_to(0))
        .unwrap();
    assert!(gpt.set_attributes(3, 0).is_err(), "entry 3 is unused");
    gpt.commit(&mut dev).unwrap();
    let back = Gpt::read(&mut dev).unwrap();
    let idx: Vec<u32> = back.partitions().iter().map(|p| p.index).collect();
    assert_eq!(idx, vec![2, 4]);
    assert_eq!(back.partition(2), gpt.partition(2));
    assert_eq!(
        Flags::from_attributes(back.partition(4).unwrap().attributes),
        Flags::new(1, 0, true).unwrap()
    );
    // Entries 1..=3 are byte-identical in the primary array.
    assert_eq!(before[1024..1024 + 3 * 128], dev.data[1024..1024 + 3 * 128]);
}

#[test]
fn falls_back_to_backup_and_repairs() {
    for ss in [512u32, 4096] {
        for what in ["header", "entries", "signature"] {
            let mut dev = sample_disk(ss);
            let pristine = dev.data.clone();
            let s = ss as usize;
            match what {
                "header" => dev.data[s + 40] ^= 0xff,
                "entries" => dev.data[2 * s + 60] ^= 0xff,
                _ => dev.data[s..s + 8].fill(0),
            }
            let mut gpt = Gpt::read(&mut dev).unwrap();
            assert_eq!(gpt.sector_size(), ss);
            assert!(!gpt.health(GptCopy::Primary).is_ok(), "{what}");
            assert!(gpt.health(GptCopy::Backup).is_ok());
            assert_eq!(gpt.partitions().len(), 5);
            assert_eq!(gpt.commit_order(), [GptCopy::Primary, GptCopy::Backup]);
            let bad = gpt.repair(&mut dev).unwrap();
            assert_eq!(bad.len(), 1);
            assert_eq!(bad[0].0, GptCopy::Primary);
            // The repaired disk is exactly the original.
            assert!(dev.data == pristine, "{what} {ss}");
        }
    }
}

#[test]
fn bad_backup_is_rewritten_first() {
    let mut dev = sample_disk(512);
    let pristine = dev.data.clone();
    let last = dev.data.len() - 512;
    dev.data[last + 20] ^= 1;
    let mut gpt = Gpt::read(&mut dev).unwrap();
    assert!(gpt.health(GptCopy::Primary).is_ok());
    assert!(!gpt.health(GptCopy::Backup).is_ok());
    assert_eq!(gpt.commit_order(), [GptCopy::Backup, GptCopy::Primary]);
    gpt.repair(&mut dev).unwrap();
    assert!(dev.data == pristine);
}

#[test]
fn stale_backup_is_reported() {
    let mut dev = sample_disk(512);
    let mut gpt = Gpt::read(&mut dev).unwrap();
    gpt.set_attributes(1, 7 << 48).unwrap();
    // Write only the primary, as a commit cut between the two copies.
    gpt.write_copy(&mut dev, GptCopy::Primary).unwrap();
    let back = Gpt::read(&mut dev).unwrap();
    assert_eq!(back.partition(1).unwrap().attributes, 7 << 48);
    assert!(back.health(GptCopy::Backup).to_string().contains("differs"));
}

#[test]
fn both_copies_bad_mbr_only_truncated() {
    let mut dev = sample_disk(512);
    dev.data[512 + 40] ^= 1;
    let last = dev.data.len() - 512;
    dev.data[last + 40] ^= 1;
    let err = Gpt::read(&mut dev).unwrap_err();
    assert!(matches!(err, Error::BothCopiesBad { .. }), "{err}");

    let mut mbr = MemDevice::new(1 << 20);
    mbr.data[510] = 0x55;
    mbr.data[511] = 0xaa;
    let err = Gpt::read(&mut mbr).unwrap_err().to_string();
    assert!(err.contains("MBR"), "{err}");

    let mut tiny = MemDevice::new(100);
    assert!(matches!(Gpt::read(&mut tiny), Err(Error::NoGpt(_))));

    let mut trunc = sample_disk(512);
    trunc.data.truncate(6 << 20);
    let err = Gpt::read(&mut trunc).unwrap_err();
    assert!(
        matches!(err, Error::Truncated { expected, actual } if expected == 8 << 20 && actual == 6 << 20),
        "{err}"
    );
}

#[test]
fn create_rejects_bad_layouts() {
    let mut dev = MemDevice::new(4 << 20);
    let p = |name: &str, first, last| NewPartition {
        name: name.into(),
        type_guid: Guid::LINUX_DATA,
        unique_guid: Guid::ZERO,
        first_lba: first,
        last_lba: last,
        attributes: 0,
    };
    let overlap = [p("X-A", 2048, 4095), p("X-B", 4000, 5000)];
    assert!(Gpt::create(&mut dev, 512, Guid::ZERO, &overlap).is_err());
    let outside = [p("X-A", 2048, 1 << 30)];
    assert!(Gpt::create(&mut dev, 512, Guid::ZERO, &outside).is_err());
    let long = [p(&"N".repeat(37), 2048, 4095)];
    assert!(Gpt::create(&mut dev, 512, Guid::ZERO, &long).is_err());
    assert!(Gpt::create(&mut dev, 1024, Guid::ZERO, &[]).is_err());
    assert_eq!(dev.data, vec![0u8; 4 << 20], "nothing written on refusal");
}

/// A 512-byte-sector sample disk whose primary header `edit` changes (CRC
/// recomputed), read: its backup must be judged bad and its repair refused
/// without writing. Returns the repair's error and the table read.
fn refused_backup_repair(edit: impl FnOnce(&mut Header, u64)) -> (Error, Gpt) {
    let mut dev = sample_disk(512);
    let sectors = dev.data.len() as u64 / 512;
    let mut sector = dev.data[512..1024].to_vec();
    let mut h = Header::parse(&sector).unwrap();
    edit(&mut h, sectors);
    h.write_into(&mut sector);
    dev.data[512..1024].copy_from_slice(&sector);
    let before = dev.data.clone();
    let mut gpt = Gpt::read(&mut dev).unwrap();
    assert!(!gpt.health(GptCopy::Backup).is_ok());
    let err = gpt.repair(&mut dev).unwrap_err();
    assert!(err.to_string().contains("no room for the backup"), "{err}");
    assert!(dev.data == before, "a refused repair wrote");
    (err, gpt)
}

#[test]
fn no_room_for_a_rebuilt_backup_writes_nothing() {
    // The backup "lives" right after the usable area: its entry array
    // would have to go over partition data.
    refused_backup_repair(|h, _| h.alternate_lba = h.last_usable_lba + 1);
}

/// Found by tests/fuzz_gpt.rs (seed 1796199590958537264): a primary whose
/// alternate LBA is moved 32 sectors before the disk's end and whose usable
/// area is shrunk to match passes every check of its own; the valid backup
/// at the end is then not where the primary points, and rebuilding it at
/// the alternate LBA wrote its entry array over free space the original
/// table owned. A bad backup is rebuilt only at the disk's last LBA.
#[test]
fn a_bad_backup_is_rebuilt_only_at_the_last_lba() {
    let (err, gpt) = refused_backup_repair(|h, sectors| {
        h.alternate_lba = sectors - 33;
        h.last_usable_lba = sectors / 2;
    });
    assert!(err.to_string().contains("not the disk's last LBA"), "{err}");
    assert!(gpt.check_writable().is_err());
}

/// A device whose reads fail (a dead disk, or the power gone mid-operation).
struct FailingReads(MemDevice);

impl crate::BlockDevice for FailingReads {
    fn len(&mut self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read_exact_at(&mut self, _off: u64, _buf: &mut [u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("simulated read failure"))
    }
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all_at(off, buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[test]
fn unreadable_disk_is_an_io_error_not_no_gpt() {
    let mut dev = FailingReads(sample_disk(512));
    let err = Gpt::read(&mut dev).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(err.to_string(), "cannot read the partition table");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, "simulated read failure");
}
