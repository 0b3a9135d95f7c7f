//! Power cuts during a commit: after every write, and with a torn sector in
//! flight. A reader then sees the old or the new flags, never a mix and
//! never an unreadable table, and `repair` restores two good copies.

mod common;

use std::io;

use boot_flags::{BlockDevice, Disk, Flags, MemDevice, Nibble, Op, SlotFlags, SlotId};

/// A device that records every write (the writes also go through, so the
/// operation completes normally).
struct Recorder {
    inner: MemDevice,
    writes: Vec<(u64, Vec<u8>)>,
}

impl BlockDevice for Recorder {
    fn len(&mut self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(off, buf)
    }
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        self.writes.push((off, buf.to_vec()));
        self.inner.write_all_at(off, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn flags(p: u8, t: u8, s: bool) -> Flags {
    Flags::new(p, t, s).unwrap()
}

fn read_flags(dev: MemDevice) -> (SlotFlags, Disk<MemDevice>) {
    let disk = Disk::open(dev, None).expect("a cut commit leaves a readable table");
    (disk.slot_flags(), disk)
}

/// Check one interrupted image: old or new flags; repair gives two good
/// copies with the same flags.
fn check_image(img: MemDevice, old: SlotFlags, new: SlotFlags, what: &str) -> bool {
    let (seen, mut disk) = read_flags(img);
    assert!(
        seen == old || seen == new,
        "{what}: saw {seen:?}, old {old:?}, new {new:?}"
    );
    disk.repair().unwrap();
    assert!(disk.gpt().is_healthy(), "{what}");
    let (after, disk) = read_flags(disk.into_device());
    assert!(disk.gpt().is_healthy(), "{what}: not healthy after repair");
    assert_eq!(after, seen, "{what}: repair changed the flags");
    seen == new
}

/// Run `op` on `start`, then replay every prefix of its writes (and every
/// prefix plus a torn sector) onto `start`. Returns how many cuts were checked.
fn cut_everywhere(start: &MemDevice, booted: Option<SlotId>, op: Op, ss: usize) -> usize {
    let (old, _) = read_flags(start.clone());
    let mut rec = Recorder {
        inner: start.clone(),
        writes: Vec::new(),
    };
    let new = {
        let mut disk = Disk::open(&mut rec, None).unwrap();
        disk.set_booted(booted);
        disk.apply(op).unwrap()
    };
    assert!(
        rec.writes.len() >= 4,
        "a commit writes two copies of two parts"
    );
    let mut checked = 0;
    let mut saw_new = false;
    for k in 0..=rec.writes.len() {
        let mut img = start.clone();
        for (off, data) in &rec.writes[..k] {
            img.write_all_at(*off, data).unwrap();
        }
        saw_new |= check_image(
            img.clone(),
            old,
            new,
            &format!("{op:?} cut after {k} writes"),
        );
        checked += 1;
        let Some((off, data)) = rec.writes.get(k) else {
            continue;
        };
        // Torn write k: j whole sectors landed, then half a sector, or a
        // sector of garbage.
        let sectors = data.len().div_ceil(ss);
        let mut js = vec![0, sectors / 2, sectors - 1];
        js.dedup();
        for j in js {
            for garbage in [false, true] {
                let mut t = img.clone();
                let whole = &data[..j * ss];
                t.write_all_at(*off, whole).unwrap();
                let at = *off + (j * ss) as u64;
                let torn: Vec<u8> = if garbage {
                    vec![0xa5; ss]
                } else {
                    let mut s = vec![0u8; ss];
                    t.read_exact_at(at, &mut s).unwrap();
                    let half = ss / 2;
                    s[..half].copy_from_slice(&data[j * ss..j * ss + half]);
                    s
                };
                t.write_all_at(at, &torn).unwrap();
                check_image(t, old, new, &format!("{op:?} torn write {k} at sector {j}"));
                checked += 1;
            }
        }
    }
    assert!(saw_new, "the complete commit shows the new flags");
    checked
}

fn good_a(ss: u32) -> MemDevice {
    let mut disk = Disk::open(common::sample_disk(ss), None).unwrap();
    disk.set_flags(SlotId::A, flags(1, 0, true)).unwrap();
    disk.into_device()
}

fn ops() -> Vec<(Option<SlotId>, Op)> {
    let three = Nibble::new(3).unwrap();
    vec![
        (
            Some(SlotId::A),
            Op::Activate {
                target: SlotId::B,
                tries: three,
            },
        ),
        (None, Op::SetFlags(SlotId::B, flags(5, 15, true))),
        (
            Some(SlotId::A),
            Op::MarkBad {
                slot: Some(SlotId::A),
                force: true,
            },
        ),
    ]
}

#[test]
fn cut_after_each_write_and_torn_sectors() {
    let mut total = 0;
    for ss in [512u32, 4096] {
        let start = good_a(ss);
        for (booted, op) in ops() {
            total += cut_everywhere(&start, booted, op, ss as usize);
        }
    }
    assert!(total > 100, "checked {total} cut points");
}

#[test]
fn cuts_starting_from_a_bad_primary() {
    for ss in [512u32, 4096] {
        let mut start = good_a(ss);
        let s = ss as usize;
        start.data[s + 0x30] ^= 1;
        for (booted, op) in ops() {
            cut_everywhere(&start, booted, op, s);
        }
    }
}

#[test]
fn cuts_starting_from_a_stale_backup() {
    // A first commit cut between its copies: primary new, backup old.
    for ss in [512u32, 4096] {
        let start = good_a(ss);
        let mut rec = Recorder {
            inner: start.clone(),
            writes: Vec::new(),
        };
        {
            let mut disk = Disk::open(&mut rec, None).unwrap();
            disk.set_booted(Some(SlotId::A));
            disk.activate(SlotId::B, Nibble::new(2).unwrap()).unwrap();
        }
        let mut stale = start.clone();
        for (off, data) in &rec.writes[..2] {
            stale.write_all_at(*off, data).unwrap();
        }
        let (seen, disk) = read_flags(stale.clone());
        assert_eq!(seen.b, flags(2, 2, false), "primary wins");
        assert!(!disk.gpt().health(boot_flags::GptCopy::Backup).is_ok());
        // A second operation on top: every cut shows the state after the
        // first operation or after the second, never the older backup.
        cut_everywhere(&stale, Some(SlotId::A), Op::Cancel, ss as usize);
    }
}
