//! The write oracle of the GPT fuzz loop: every write attempt boot-select
//! makes on an accepted (mutated) table is recorded before the device sees
//! it and must lie inside the GPT areas of the table as it was before the
//! mutation, read from its own header bytes, not from the code under test.

use boot_flags::{BlockDevice, Disk};
use slotctl_tests::sim::CowDevice;

use super::{get32, get64, serial, valid_disk, DISK_LEN, H_ENTRIES_LBA, H_ESIZE, H_MY, H_NUM};

/// Where a valid table keeps its GPT: the two header sectors and the two
/// entry arrays, read from the unmutated disk's own header bytes (not from
/// the code under test). Byte ranges `(start, end)`; areas that touch are
/// merged (an entry array ending where its header starts: a write may
/// cover both).
#[derive(Clone, Debug)]
pub(crate) struct GptAreas {
    disk_len: u64,
    areas: Vec<(u64, u64)>,
}

impl GptAreas {
    pub(crate) fn of(disk: &[u8], ss: usize) -> GptAreas {
        let mut areas = Vec::new();
        for (name, hdr_off) in [("primary", ss), ("backup", disk.len() - ss)] {
            let h = &disk[hdr_off..hdr_off + ss];
            assert_eq!(&h[..8], b"EFI PART", "the base table has a {name} header");
            assert_eq!(get64(h, H_MY) * ss as u64, hdr_off as u64);
            let entries = get64(h, H_ENTRIES_LBA) * ss as u64;
            let bytes = u64::from(get32(h, H_NUM)) * u64::from(get32(h, H_ESIZE));
            areas.push((hdr_off as u64, (hdr_off + ss) as u64));
            areas.push((entries, entries + bytes));
        }
        areas.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for a in areas {
            match merged.last_mut() {
                Some(m) if a.0 <= m.1 => m.1 = m.1.max(a.1),
                _ => merged.push(a),
            }
        }
        GptAreas {
            disk_len: disk.len() as u64,
            areas: merged,
        }
    }
}

/// One write attempt `(off, len)` against the original table's GPT areas.
pub(crate) fn check_write(original: &GptAreas, off: u64, len: u64) -> Result<(), String> {
    let Some(end) = off.checked_add(len).filter(|&e| e <= original.disk_len) else {
        return Err(format!(
            "boot-select tried to write {len} bytes at {off}, past the end of the {}-byte disk",
            original.disk_len
        ));
    };
    if original.areas.iter().any(|&(a, b)| a <= off && end <= b) {
        return Ok(());
    }
    let what = if off < original.areas[0].0 {
        "the protective MBR"
    } else {
        "a partition or free space"
    };
    Err(format!(
        "boot-select wrote bytes {off}..{end}, outside the original table's GPT areas \
         (touching {what})"
    ))
}

/// A device that records every write attempt (offset, length) before
/// passing it on, whether the device then accepts it or not.
pub(crate) struct Recording<D> {
    inner: D,
    pub(crate) writes: Vec<(u64, u64)>,
}

impl<D: BlockDevice> Recording<D> {
    pub(crate) fn new(inner: D) -> Recording<D> {
        Recording {
            inner,
            writes: Vec::new(),
        }
    }
}

impl<D: BlockDevice> BlockDevice for Recording<D> {
    fn len(&mut self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact_at(off, buf)
    }
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> std::io::Result<()> {
        self.writes.push((off, buf.len() as u64));
        self.inner.write_all_at(off, buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn logical_sector_size(&mut self) -> std::io::Result<Option<u32>> {
        self.inner.logical_sector_size()
    }
    fn drop_cache(&mut self, off: u64, len: u64) -> std::io::Result<()> {
        self.inner.drop_cache(off, len)
    }
}

/// The write oracle itself can fail: writes a broken repair could make
/// (past the end, straddling the end, into the MBR, into a partition, one
/// sector beside an entry array, an entry array written one sector long)
/// are recorded and refused, while the writes of a real repair pass.
/// (The fuzz loop's own failure was also shown by hand: a repair that
/// wrote the backup header one sector past its place, and one that wrote
/// the primary entries one sector later, each made the loop fail.)
#[test]
fn write_oracle_refuses_writes_outside_the_original_gpt_areas() {
    let _serial = serial();
    for ss in [512u64, 4096] {
        let base = valid_disk(ss as u32).data;
        let areas = GptAreas::of(&base, ss as usize);
        let len = DISK_LEN as u64;
        let entries = 128 * 128;
        let backup_entries = len - ss - entries;
        let bad = [
            (len, ss),
            (len - ss, 2 * ss),
            (u64::MAX - 1, 4),
            (0, ss),
            (ss - 1, 2),
            (256 << 10, ss),
            (2 * ss + entries, ss),
            (backup_entries - ss, ss),
            (2 * ss, entries + ss),
            (backup_entries - 1, 2),
        ];
        for (off, n) in bad {
            // Through the recorder, as the fuzz loop sees writes; the device
            // refuses the ones past its end, the record keeps them.
            let mut dev = Recording::new(CowDevice::new(&base, None));
            let _ = dev.write_all_at(off, &vec![0u8; n as usize]);
            assert_eq!(dev.writes, vec![(off, n)]);
            assert!(
                check_write(&areas, off, n).is_err(),
                "{ss}: a write of {n} bytes at {off} passed the oracle"
            );
        }
        // Entries and header of the backup in one write: one GPT area.
        check_write(&areas, backup_entries, entries + ss).unwrap();
        // A real repair: the backup header destroyed, boot-select rewrites it
        // (with the boot counter off: the count is written into the flags
        // partition, which the fuzz loop allows apart).
        let mut d = base.clone();
        d[DISK_LEN - ss as usize..].fill(0);
        let mut dev = Recording::new(CowDevice::new(&d, None));
        Disk::open(&mut dev, None)
            .expect("opens on the primary")
            .boot_select_checked(false, 0, &mut |_| Ok(()))
            .expect("boot-select");
        assert!(!dev.writes.is_empty(), "{ss}: the repair wrote nothing");
        for &(off, n) in &dev.writes {
            check_write(&areas, off, n).unwrap();
        }
        assert!(
            dev.writes.contains(&(len - ss, ss)),
            "{ss}: the backup header was not rewritten: {:?}",
            dev.writes
        );
    }
}
