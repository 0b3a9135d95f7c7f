//! Shared fixtures for the boot-flags tests (unit tests include it too).
#![allow(dead_code)]

use boot_flags::{Gpt, Guid, MemDevice, NewPartition};

/// An 8 MiB in-memory disk: BOOT-A=1 ROOT-A=2 BOOT-B=3 ROOT-B=4 DATA=5,
/// data areas filled with a pattern, attribute bits 0, 2, 57, 60 and 63 set
/// (bits the flags must never touch).
pub fn sample_disk(ss: u32) -> MemDevice {
    let mut dev = MemDevice::new(8 << 20);
    for (i, b) in dev.data.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mib = (1u64 << 20) / u64::from(ss);
    let parts: Vec<NewPartition> = ["BOOT-A", "ROOT-A", "BOOT-B", "ROOT-B", "DATA"]
        .iter()
        .enumerate()
        .map(|(i, n)| NewPartition {
            name: n.to_string(),
            type_guid: Guid::LINUX_DATA,
            unique_guid: Guid::from_random_bytes([i as u8 + 1; 16]),
            first_lba: mib * (i as u64 + 1),
            last_lba: mib * (i as u64 + 2) - 1,
            attributes: 1 | (1 << 2) | (1 << 57) | (1 << 60) | (1 << 63),
        })
        .collect();
    Gpt::create(&mut dev, ss, Guid::from_random_bytes([0x42; 16]), &parts).unwrap();
    dev
}
