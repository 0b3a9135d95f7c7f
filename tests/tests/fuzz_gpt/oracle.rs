//! The write oracle of the GPT fuzz loop: every write attempt boot-select
//! makes on an accepted (mutated) table is recorded before the device sees
//! it and must lie inside the GPT areas of the table as it was before the
//! mutation, read from its own header bytes, not from the code under test,
//! or inside a slot's boot state: the last 8 KiB (two 4 KiB copies) of a
//! slot partition (`*-A`, `*-B`), as named by the entry arrays of the table
//! before or after the mutation, read from their raw bytes here too
//! (docs/state-machine.md, "The boot counter": boot-select counts boots).

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
    /// Boot-state areas (see the module doc).
    boot_states: Vec<(u64, u64)>,
}

/// The last 8 KiB of each slot partition (name ending `-A` or `-B`) that
/// the primary or backup entry array of `disk` names, found from the raw
/// bytes (headers with the signature, whatever their CRCs), for partitions
/// of at least 128 KiB (smaller ones hold no boot state).
pub(crate) fn boot_state_areas(disk: &[u8], ss: usize) -> Vec<(u64, u64)> {
    const STATE: u64 = 8192;
    let mut out = Vec::new();
    for hdr_off in [ss, disk.len().saturating_sub(ss)] {
        let Some(h) = disk.get(hdr_off..hdr_off + ss) else {
            continue;
        };
        if &h[..8] != b"EFI PART" {
            continue;
        }
        let esize = u64::from(get32(h, H_ESIZE));
        if !(128..=4096).contains(&esize) {
            continue;
        }
        let base = get64(h, H_ENTRIES_LBA).saturating_mul(ss as u64);
        for i in 0..u64::from(get32(h, H_NUM)).min(1024) {
            let Some(off) = base
                .checked_add(i * esize)
                .and_then(|o| usize::try_from(o).ok())
            else {
                break;
            };
            let Some(e) = disk.get(off..off.saturating_add(128)) else {
                break;
            };
            let name: String = char::decode_utf16(
                e[56..128]
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|&u| u != 0),
            )
            .map(|c| c.unwrap_or('?'))
            .collect();
            if !(name.ends_with("-A") || name.ends_with("-B")) {
                continue;
            }
            let (first, last) = (get64(e, 32), get64(e, 40));
            let (Some(start), Some(end)) = (
                first.checked_mul(ss as u64),
                last.checked_add(1).and_then(|l| l.checked_mul(ss as u64)),
            ) else {
                continue;
            };
            if end > start && end - start >= 16 * STATE {
                out.push((end - STATE, end));
            }
        }
    }
    out
}

impl GptAreas {
    /// These areas, plus the boot states named by the (mutated) `disk`.
    pub(crate) fn with_boot_states_of(&self, disk: &[u8], ss: usize) -> GptAreas {
        let mut a = self.clone();
        a.boot_states.extend(boot_state_areas(disk, ss));
        a
    }
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
            boot_states: boot_state_areas(disk, ss),
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
    if original
        .areas
        .iter()
        .chain(&original.boot_states)
        .any(|&(a, b)| a <= off && end <= b)
    {
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
            // One sector before BOOT-A's boot state (its last 8 KiB), and
            // one straddling its end into ROOT-A.
            ((512 << 10) - 8192 - ss, ss),
            ((512 << 10) - 4096, 8192),
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
        // Each copy of a slot partition's boot state.
        for part_end in [512u64 << 10, 768 << 10, 1024 << 10, 1280 << 10] {
            check_write(&areas, part_end - 8192, 4096).unwrap();
            check_write(&areas, part_end - 4096, 4096).unwrap();
        }
        // DATA (1280..1536 KiB) is no slot partition: no boot state.
        assert!(check_write(&areas, (1536 << 10) - 4096, 4096).is_err());
        // A real repair: the backup header destroyed, boot-select rewrites it.
        let mut d = base.clone();
        d[DISK_LEN - ss as usize..].fill(0);
        let mut dev = Recording::new(CowDevice::new(&d, None));
        Disk::open(&mut dev, None)
            .expect("opens on the primary")
            .boot_select(false)
            .expect("boot-select");
        assert!(!dev.writes.is_empty(), "{ss}: the repair wrote nothing");
        for &(off, n) in &dev.writes {
            check_write(&areas, off, n).unwrap();
        }
        assert!(
            dev.writes
                .iter()
                .any(|&(o, n)| n == 4096 && (o == (512 << 10) - 8192 || o == (512 << 10) - 4096)),
            "{ss}: boot-select counted no boot in BOOT-A's boot state: {:?}",
            dev.writes
        );
        assert!(
            dev.writes.contains(&(len - ss, ss)),
            "{ss}: the backup header was not rewritten: {:?}",
            dev.writes
        );
    }
}
