//! Slot discovery (`SlotLayout::discover`) on hand-made tables: which
//! partitions form slots A and B, which carries the flags, where they lie,
//! and each refusal with its message.

use boot_flags::gpt::Header;
use boot_flags::{Error, Gpt, Guid, MemDevice, NewPartition, SlotId, SlotLayout};

const SS: usize = 512;

fn part(name: &str, first: u64, last: u64) -> NewPartition {
    NewPartition {
        name: name.into(),
        type_guid: Guid::LINUX_DATA,
        unique_guid: Guid::from_random_bytes([name.len() as u8; 16]),
        first_lba: first,
        last_lba: last,
        attributes: 0,
    }
}

/// A 4 MiB disk with the named partitions, 1024 sectors each from LBA 2048.
fn disk(names: &[&str]) -> MemDevice {
    let mut dev = MemDevice::new(8 << 20);
    let parts: Vec<NewPartition> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let first = 2048 + 1024 * i as u64;
            part(n, first, first + 1023)
        })
        .collect();
    Gpt::create(&mut dev, 512, Guid::from_random_bytes([1; 16]), &parts).unwrap();
    dev
}

fn discover(dev: &mut MemDevice, role: Option<&str>) -> Result<SlotLayout, Error> {
    let gpt = Gpt::read(dev).unwrap();
    SlotLayout::discover(&gpt, role)
}

#[test]
fn the_usual_layout() {
    let mut dev = disk(&["BOOT-A", "ROOT-A", "BOOT-B", "ROOT-B", "DATA"]);
    let l = discover(&mut dev, None).unwrap();
    let a = l.slot(SlotId::A);
    let b = l.slot(SlotId::B);
    assert_eq!(a.id, SlotId::A);
    assert_eq!(b.id, SlotId::B);
    assert_eq!(a.roles().collect::<Vec<_>>(), ["BOOT", "ROOT"]);
    assert_eq!(b.roles().collect::<Vec<_>>(), ["BOOT", "ROOT"]);
    let idx = |s: &boot_flags::Slot| s.partitions.iter().map(|p| p.index).collect::<Vec<_>>();
    assert_eq!(idx(a), [1, 2]);
    assert_eq!(idx(b), [3, 4]);
    // Flags on each slot's first partition by default.
    assert_eq!(a.flags_index, 1);
    assert_eq!(b.flags_index, 3);
    assert_eq!(a.flags_partition().name, "BOOT-A");
    assert_eq!(b.flags_partition().name, "BOOT-B");
    // Where they lie: LBA 2048 + 1024 i, 1024 sectors of 512 bytes.
    let root_b = b.partition("ROOT").unwrap();
    assert_eq!(root_b.name, "ROOT-B");
    assert_eq!(root_b.role, "ROOT");
    assert_eq!(root_b.index, 4);
    assert_eq!(root_b.offset, (2048 + 3 * 1024) * 512);
    assert_eq!(root_b.size, 1024 * 512);
    assert!(a.partition("DATA").is_none());
    // DATA is shared.
    assert_eq!(l.shared.len(), 1);
    assert_eq!(l.shared[0].name, "DATA");
    assert_eq!(l.shared[0].index, 5);
    assert_eq!(l.slot_of_partition(2), Some(SlotId::A));
    assert_eq!(l.slot_of_partition(3), Some(SlotId::B));
    assert_eq!(l.slot_of_partition(5), None);
    assert_eq!(l.slot_of_partition(99), None);
}

#[test]
fn a_flags_role_picks_the_partition() {
    let mut dev = disk(&["BOOT-A", "ROOT-A", "BOOT-B", "ROOT-B"]);
    let l = discover(&mut dev, Some("ROOT")).unwrap();
    assert_eq!(l.slot(SlotId::A).flags_index, 2);
    assert_eq!(l.slot(SlotId::B).flags_index, 4);
    assert_eq!(l.slot(SlotId::B).flags_partition().name, "ROOT-B");
    let e = discover(&mut dev, Some("HOME")).unwrap_err();
    assert!(
        matches!(&e, Error::FlagsRole { slot: SlotId::A, role } if role == "HOME"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "slot A has no partition with the flags role HOME"
    );
}

#[test]
fn names_that_are_not_slots() {
    // "-A" alone has no role; lower case is not a slot suffix; "A" alone
    // has no dash.
    let mut dev = disk(&["-A", "x-a", "A", "ROOT-A", "ROOT-B"]);
    let l = discover(&mut dev, None).unwrap();
    let shared: Vec<&str> = l.shared.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(shared, ["-A", "x-a", "A"]);
    assert_eq!(l.slot(SlotId::A).flags_index, 4);
}

#[test]
fn refusals_name_the_problem() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["DATA"],
            "no A/B slots: no partition name ends in -A or -B",
        ),
        (
            &["ROOT-A", "DATA"],
            "no A/B slots: slot A has partitions but no partition name ends in -B",
        ),
        (
            &["ROOT-B"],
            "no A/B slots: slot B has partitions but no partition name ends in -A",
        ),
        (
            &["BOOT-A", "ROOT-A", "BOOT-B", "HOME-B", "X-B"],
            "slots A and B have different roles (only in A: [ROOT]; only in B: [HOME, X])",
        ),
        (
            &["ROOT-A", "ROOT-B", "ROOT-A"],
            "slot A has two partitions with role ROOT",
        ),
    ];
    for (names, msg) in cases {
        let mut dev = disk(names);
        let e = discover(&mut dev, None).unwrap_err();
        assert_eq!(e.to_string(), msg, "{names:?}");
    }
}

/// Rewrite entry `index` (1-based) in both arrays and re-seal both headers.
fn edit_entry(dev: &mut MemDevice, index: usize, first: u64, last: u64) {
    let last_lba = dev.data.len() / SS - 1;
    for hdr_lba in [1, last_lba] {
        let mut sector = dev.data[hdr_lba * SS..(hdr_lba + 1) * SS].to_vec();
        let mut h = Header::parse(&sector).unwrap();
        let arr = h.entries_lba as usize * SS;
        let e = arr + (index - 1) * h.entry_size as usize;
        dev.data[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
        dev.data[e + 40..e + 48].copy_from_slice(&last.to_le_bytes());
        h.entries_crc = crc32fast::hash(&dev.data[arr..arr + h.entries_bytes() as usize]);
        h.write_into(&mut sector);
        dev.data[hdr_lba * SS..(hdr_lba + 1) * SS].copy_from_slice(&sector);
    }
}

/// Every partition must lie inside the usable area, first <= last: at the
/// edges exactly.
#[test]
fn partitions_outside_the_usable_area_are_refused() {
    let base = disk(&["ROOT-A", "ROOT-B"]);
    let h = Gpt::read(&mut base.clone()).unwrap().header().clone();
    let (fu, lu) = (h.first_usable_lba, h.last_usable_lba);
    // (entry 2's first, last, accepted)
    let cases = [
        (fu, 2048 + 1023, false), // overlaps ROOT-A, but in range: Overlap
        (lu, lu, true),
        (lu, lu + 1, false),
        (4000, 3999, false),
        (4000, 4000, true),
    ];
    for (first, last, ok) in cases {
        let mut dev = base.clone();
        edit_entry(&mut dev, 2, first, last);
        match discover(&mut dev, None) {
            Ok(l) => {
                assert!(ok, "{first}..={last}");
                let p = &l.slot(SlotId::B).partitions[0];
                assert_eq!((p.offset, p.size), (first * 512, (last - first + 1) * 512));
            }
            Err(Error::PartitionOutOfRange { index, name }) => {
                assert!(!ok && index == 2 && name == "ROOT-B", "{first}..={last}");
            }
            Err(Error::Overlap {
                first: 2,
                second: 1,
                ..
            }) => assert_eq!(first, fu),
            Err(e) => panic!("{first}..={last}: {e}"),
        }
    }
    // Entry 1 at the first usable LBA is fine; one below is not.
    let mut dev = base.clone();
    edit_entry(&mut dev, 1, fu, 2000);
    discover(&mut dev, None).unwrap();
    let mut dev = base;
    edit_entry(&mut dev, 1, fu - 1, 2000);
    let e = discover(&mut dev, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "partition 1 (ROOT-A) lies outside the usable area of the disk"
    );
}
