//! A small in-memory A/B disk on a [`SimDevice`], built with boot-flags'
//! own GPT writer, and the boot a device does after a power cut.

use boot_flags::{
    BlockDevice, BootChoice, Disk, Flags, Gpt, Guid, NewPartition, SlotFlags, SlotId,
};

use super::{CowDevice, SimDevice, SliceDevice};

/// Size of the simulated disk.
pub const DISK_LEN: usize = 4 << 20;

/// A fresh disk: BOOT-A, ROOT-A, BOOT-B, ROOT-B, DATA, data area filled with
/// a pattern, flags zero (other attribute bits set, to be preserved).
pub fn fresh_disk(sector: u32, report_sector_size: bool) -> SimDevice {
    let mut bytes = vec![0u8; DISK_LEN];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mut dev = SimDevice::new(bytes, sector, report_sector_size);
    let ss = u64::from(sector);
    let unit = (512 << 10) / ss; // 512 KiB per partition
    let first = boot_flags::gpt::usable_area(sector, DISK_LEN as u64 / ss)
        .expect("usable area")
        .0
        .max(unit);
    let names = ["BOOT-A", "ROOT-A", "BOOT-B", "ROOT-B", "DATA"];
    let parts: Vec<NewPartition> = names
        .iter()
        .enumerate()
        .map(|(i, n)| NewPartition {
            name: (*n).into(),
            type_guid: Guid::LINUX_DATA,
            unique_guid: Guid::from_random_bytes([i as u8 + 1; 16]),
            first_lba: first + unit * i as u64,
            last_lba: first + unit * (i as u64 + 1) - 1,
            attributes: 1 | (1 << 2) | (1 << 57) | (1 << 60),
        })
        .collect();
    Gpt::create(
        &mut dev,
        sector,
        Guid::from_random_bytes([0x42; 16]),
        &parts,
    )
    .expect("create GPT");
    dev.flush().expect("flush");
    dev
}

/// Set both slots' flags (one commit each, as a factory would).
pub fn with_flags(mut dev: SimDevice, a: Flags, b: Flags) -> SimDevice {
    {
        let mut disk = Disk::open(&mut dev, None).expect("open");
        // Set the one with the lower priority first so no two slots share
        // a non-zero priority on the way.
        let (first, second) = if a.priority <= b.priority {
            ((SlotId::A, a), (SlotId::B, b))
        } else {
            ((SlotId::B, b), (SlotId::A, a))
        };
        disk.set_flags(SlotId::A, Flags::ZERO).expect("zero A");
        disk.set_flags(SlotId::B, Flags::ZERO).expect("zero B");
        disk.set_flags(first.0, first.1).expect("set flags");
        disk.set_flags(second.0, second.1).expect("set flags");
    }
    dev
}

/// Shorthand for flags in tests.
pub fn fl(priority: u8, tries: u8, successful: bool) -> Flags {
    Flags::new(priority, tries, successful).expect("valid flags")
}

/// What a reader sees on a disk: the entry array of the copy in use and
/// both slots' flags. `Err` when the table cannot be read.
pub fn read_view(bytes: &[u8], sector: u32, report: bool) -> Result<(Vec<u8>, SlotFlags), String> {
    let dev = SliceDevice {
        bytes,
        sector_size: report.then_some(sector),
    };
    let disk = Disk::open(dev, None).map_err(|e| e.to_string())?;
    Ok((disk.gpt().entry_bytes().to_vec(), disk.slot_flags()))
}

/// The outcome of a simulated boot.
#[derive(Debug)]
pub struct Booted {
    /// What boot selection chose.
    pub choice: BootChoice,
    /// The flags as read before the boot.
    pub before: SlotFlags,
    /// The disk after the boot stage's writes (empty unless asked for).
    pub after: Vec<u8>,
}

/// Boot a crash disk as the boot stage does (`slotctl boot-select`: open,
/// repair a bad copy, pick, use a try), then check that the table is
/// healthy afterwards and holds what boot selection decided.
pub fn boot(bytes: &[u8], sector: u32, report: bool) -> Result<Booted, String> {
    boot_with(bytes, sector, report, false)
}

/// [`boot`], returning the disk after the boot when `keep`.
pub fn boot_with(bytes: &[u8], sector: u32, report: bool, keep: bool) -> Result<Booted, String> {
    let mut dev = CowDevice::new(bytes, report.then_some(sector));
    let (choice, before) = {
        let mut disk = Disk::open(&mut dev, None).map_err(|e| format!("open: {e}"))?;
        let before = disk.slot_flags();
        let report = disk
            .boot_select(false)
            .map_err(|e| format!("boot-select: {e}"))?;
        (report.choice, before)
    };
    let expect = boot_flags::state::boot_select(before);
    if choice != expect {
        return Err(format!(
            "boot-select chose {choice:?}, the state machine says {expect:?}"
        ));
    }
    let disk = Disk::open(&mut dev, None).map_err(|e| format!("reopen after boot: {e}"))?;
    if !disk.gpt().is_healthy() {
        return Err("a GPT copy is still bad after boot-select".into());
    }
    if disk.slot_flags() != choice.flags {
        return Err(format!(
            "after boot-select the flags are {:?}, expected {:?}",
            disk.slot_flags(),
            choice.flags
        ));
    }
    Ok(Booted {
        choice,
        before,
        after: if keep { dev.to_vec() } else { Vec::new() },
    })
}
