//! The writer's one shortcut: a buffer of zeros is not sent to the disk.
//!
//! A root file system image is partly zeros (free space, zero-filled
//! files): 29 % of the shared RAUC harness's ext4 payload. A full `CHUNK`
//! of decoded bytes that is all zeros goes to the device as
//! [`BlockDevice::write_zeroes`] (boot-flags: `fallocate(ZERO_RANGE)`),
//! which asks the device to zero the range itself (its write-zeroes
//! command; the kernel writes its own zero page where it has none). The
//! slot ends up byte for byte the same, the range is still flushed before
//! the slot record and still read back from the medium, and a device or
//! file system that refuses the call gets the zeros written, so nothing
//! else changes. Android's update_engine does the same for its ZERO
//! operations (BLKZEROOUT). Checking a buffer costs little: a non-zero
//! buffer is usually told by its first 4 KiB.

use std::io;

use super::super::dev::BlockDevice;
use super::CHUNK;

/// Bytes compared per step, against a static page of zeros (libc's
/// vectorised `memcmp`: a byte-wise fold here took 0.1 s of the writer's
/// thread per 170 MiB of zeros); the first non-zero step ends the check.
const STEP: usize = 4096;
static ZEROS: [u8; STEP] = [0; STEP];

/// Whether `buf` is all zeros.
pub(super) fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(STEP).all(|c| c == &ZEROS[..c.len()])
}

/// Write `buf` at `off`: a full `CHUNK` of zeros through the device's own
/// zeroing when it has one, everything else as it is. Returns whether the
/// zeros went the short way (for `timing`).
pub(super) fn write_chunk(dev: &mut dyn BlockDevice, off: u64, buf: &[u8]) -> io::Result<bool> {
    if buf.len() == CHUNK && is_zero(buf) && dev.write_zeroes(off, buf.len() as u64)? {
        return Ok(true);
    }
    dev.write_all_at(off, buf).map(|()| false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use boot_flags::MemDevice;

    #[test]
    fn zeros_anywhere_in_a_buffer_are_told_apart() {
        assert!(is_zero(&[]));
        assert!(is_zero(&vec![0u8; CHUNK]));
        assert!(is_zero(&vec![0u8; 4097]));
        for at in [0, 1, STEP - 1, STEP, CHUNK / 2, CHUNK - 1] {
            let mut b = vec![0u8; CHUNK];
            b[at] = 0x80;
            assert!(!is_zero(&b), "a byte at {at}");
        }
        let mut odd = vec![0u8; 5000];
        odd[4999] = 1;
        assert!(!is_zero(&odd));
    }

    /// A device that zeroes ranges itself, recording what it was asked.
    struct Zeroing {
        mem: MemDevice,
        zeroed: Vec<(u64, u64)>,
        writes: Vec<(u64, usize)>,
    }

    impl BlockDevice for Zeroing {
        fn len(&mut self) -> io::Result<u64> {
            self.mem.len()
        }
        fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
            self.mem.read_exact_at(off, buf)
        }
        fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
            self.writes.push((off, buf.len()));
            self.mem.write_all_at(off, buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn write_zeroes(&mut self, off: u64, len: u64) -> io::Result<bool> {
            self.zeroed.push((off, len));
            let z = vec![0u8; len as usize];
            self.mem.write_all_at(off, &z).map(|()| true)
        }
    }

    #[test]
    fn only_full_chunks_of_zeros_go_the_short_way() {
        let mut d = Zeroing {
            mem: MemDevice {
                data: vec![0xa5; 4 * CHUNK],
                sector_size: None,
            },
            zeroed: vec![],
            writes: vec![],
        };
        let zeros = vec![0u8; CHUNK];
        let mut data = vec![0u8; CHUNK];
        data[CHUNK - 1] = 7;
        assert!(write_chunk(&mut d, 0, &zeros).unwrap());
        assert!(!write_chunk(&mut d, CHUNK as u64, &data).unwrap());
        // A short tail of zeros is written: not worth a command.
        assert!(!write_chunk(&mut d, 2 * CHUNK as u64, &zeros[..100]).unwrap());
        assert_eq!(d.zeroed, vec![(0, CHUNK as u64)]);
        assert_eq!(
            d.writes,
            vec![(CHUNK as u64, CHUNK), (2 * CHUNK as u64, 100)]
        );
        let m = &d.mem.data;
        assert!(m[..CHUNK].iter().all(|&b| b == 0));
        assert_eq!(m[CHUNK..2 * CHUNK], data[..]);
        assert!(m[2 * CHUNK..2 * CHUNK + 100].iter().all(|&b| b == 0));
        assert!(m[2 * CHUNK + 100..].iter().all(|&b| b == 0xa5));
    }

    #[test]
    fn a_device_without_zeroing_gets_the_zeros_written() {
        let mut d = MemDevice {
            data: vec![0xa5; CHUNK],
            sector_size: None,
        };
        assert!(!write_chunk(&mut d, 0, &vec![0u8; CHUNK]).unwrap());
        assert!(d.data.iter().all(|&b| b == 0));
    }
}
