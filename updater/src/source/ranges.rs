//! Random access to an image: the [`RangeSource`] trait, its HTTP form
//! ([`HttpRanges`], from [`super::HttpReader::into_ranges`]) and an
//! in-memory form ([`MemRanges`], for the in-process reliability suite and
//! unit tests).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Random access to an image (an HTTP server that honours Range).
#[allow(clippy::len_without_is_empty)] // an image is never empty
pub trait RangeSource: Send {
    /// The image's length in bytes.
    fn len(&self) -> u64;
    /// Bytes [start, end) of the image, as a stream that resumes across dropped
    /// connections within the download's retry budget and deadline.
    fn range(&mut self, start: u64, end: u64) -> std::io::Result<Box<dyn std::io::Read + '_>>;
    /// HTTP body bytes received so far over every request of this download.
    fn received(&self) -> u64;
}

/// `start..end` must lie within an image of `len` bytes.
pub(super) fn check_bounds(start: u64, end: u64, len: u64) -> io::Result<()> {
    if start > end || end > len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {start}..{end} is outside the image's {len} bytes"),
        ));
    }
    Ok(())
}

enum Backing {
    Bytes(Arc<Vec<u8>>),
    File(File),
}

/// A [`RangeSource`] over bytes in memory or a file, counting the bytes it
/// served (as they are read) like an HTTP download counts body bytes.
pub struct MemRanges {
    backing: Backing,
    len: u64,
    served: u64,
    requests: u64,
}

impl MemRanges {
    pub fn from_bytes(data: impl Into<Arc<Vec<u8>>>) -> MemRanges {
        let data = data.into();
        MemRanges {
            len: data.len() as u64,
            backing: Backing::Bytes(data),
            served: 0,
            requests: 0,
        }
    }

    pub fn open(path: &Path) -> io::Result<MemRanges> {
        let f = File::open(path)?;
        let len = f.metadata()?.len();
        Ok(MemRanges {
            backing: Backing::File(f),
            len,
            served: 0,
            requests: 0,
        })
    }

    /// How many ranges were asked for.
    pub fn requests(&self) -> u64 {
        self.requests
    }
}

struct MemRange<'a> {
    src: &'a mut MemRanges,
    pos: u64,
    end: u64,
}

impl Read for MemRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.end - self.pos) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = match &self.src.backing {
            Backing::Bytes(b) => {
                let at = self.pos as usize;
                buf[..want].copy_from_slice(&b[at..at + want]);
                want
            }
            Backing::File(f) => f.read_at(&mut buf[..want], self.pos)?,
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("image file ended at byte {} of {}", self.pos, self.end),
            ));
        }
        self.pos += n as u64;
        self.src.served += n as u64;
        Ok(n)
    }
}

impl RangeSource for MemRanges {
    fn len(&self) -> u64 {
        self.len
    }

    fn range(&mut self, start: u64, end: u64) -> io::Result<Box<dyn Read + '_>> {
        check_bounds(start, end, self.len)?;
        self.requests += 1;
        Ok(Box::new(MemRange {
            src: self,
            pos: start,
            end,
        }))
    }

    fn received(&self) -> u64 {
        self.served
    }
}
