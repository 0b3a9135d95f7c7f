//! The disk interface the pipeline writes through.
//! TEMPORARY: a copy of boot-flags' `BlockDevice` (docs/architecture.md)
//! until the flags branch is merged; then this becomes a re-export.

use std::io;

#[allow(clippy::len_without_is_empty, dead_code)]
pub trait BlockDevice {
    fn len(&mut self) -> io::Result<u64>;
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    fn logical_sector_size(&mut self) -> io::Result<Option<u32>> {
        Ok(None)
    }
    fn drop_cache(&mut self, _off: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}
