//! The reader's side of a payload of frames: the stored bytes are read one
//! whole zstd frame at a time, each into a buffer of its own, by following
//! the frame's header and its blocks' 3-byte headers (RFC 8878, 3.1.1), so
//! that the buffer read from the source is the one a decode worker
//! decodes: no copy between them, and no thread that only cuts bytes into
//! frames.
//!
//! Whatever is not a frame the workers take ends the walk: no content
//! size, more than `CHUNK` of content, a skippable frame, a reserved block
//! type, a frame that would not fit `max_frame_stored()` or the payload's
//! stored bytes, bytes that are not zstd at all. Those bytes and the rest
//! of the payload go to the streaming decoder, which installs what is
//! valid (an image of an older slotctl: one frame of unknown size) and
//! gives what is corrupt its error.

use std::io::{self, Read};

use boot_flags::AlignedBuf;
use zstd::zstd_safe;

use super::super::stages::read_full;
use super::CHUNK;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// The largest block content (RFC 8878, 3.1.1.2.4).
const BLOCK_MAX: usize = 128 << 10;

/// What [`read_frame`] read into its buffer.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::install::pipeline) enum Walked {
    /// One whole frame a worker can decode.
    Frame,
    /// The start of something else (possibly nothing): for the streaming
    /// decoder, with the rest of the payload.
    Other,
    /// The source ended in the middle.
    Ended,
}

/// Why the walk stopped early.
enum Stop {
    Other,
    Ended,
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Stop {
        Stop::Io(e)
    }
}

struct Walk<'a> {
    src: &'a mut dyn Read,
    buf: &'a mut AlignedBuf,
    filled: usize,
    /// Bytes the frame may take: the buffer's, or the payload's left.
    room: usize,
}

impl Walk<'_> {
    /// Read exactly `n` more bytes; none if they do not fit.
    fn take(&mut self, n: usize) -> Result<(), Stop> {
        if n > self.room - self.filled {
            return Err(Stop::Other);
        }
        let got = read_full(self.src, &mut self.buf[self.filled..self.filled + n])?;
        self.filled += got;
        if got < n {
            return Err(Stop::Ended);
        }
        Ok(())
    }

    /// The 3-byte block header that ends what was read: (last, content
    /// bytes that follow it).
    fn block_header(&self) -> Result<(bool, usize), Stop> {
        let h = &self.buf[self.filled - 3..self.filled];
        let h = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
        let size = (h >> 3) as usize;
        let content = match (h >> 1) & 3 {
            0 | 2 => size, // raw, compressed
            1 => 1,        // RLE: one byte, repeated
            _ => return Err(Stop::Other),
        };
        if size > BLOCK_MAX {
            return Err(Stop::Other);
        }
        Ok((h & 1 == 1, content))
    }

    fn frame(&mut self) -> Result<(), Stop> {
        // Magic number and frame header descriptor.
        self.take(5)?;
        let magic = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes"));
        let fhd = self.buf[4];
        if magic != ZSTD_MAGIC || fhd & 0x08 != 0 {
            return Err(Stop::Other);
        }
        let single_segment = fhd & 0x20 != 0;
        let window = usize::from(!single_segment);
        let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
        let size = [usize::from(single_segment), 2, 4, 8][usize::from(fhd >> 6)];
        // The rest of the header and the first block's header: one read.
        self.take(window + dict + size + 3)?;
        match zstd_safe::get_frame_content_size(&self.buf[..self.filled - 3]) {
            Ok(Some(n)) if n <= CHUNK as u64 => {}
            _ => return Err(Stop::Other),
        }
        loop {
            let (last, content) = self.block_header()?;
            if last {
                self.take(content)?;
                break;
            }
            // This block and the next one's header.
            self.take(content + 3)?;
        }
        if fhd & 0x04 != 0 {
            self.take(4)?; // content checksum
        }
        Ok(())
    }
}

/// Read one frame from `src` into `buf` (whose capacity is the largest
/// frame a worker takes), reading at most `left` bytes; `buf`'s length is
/// then what was read, whatever the outcome.
pub(in crate::install::pipeline) fn read_frame(
    src: &mut dyn Read,
    buf: &mut AlignedBuf,
    left: u64,
) -> io::Result<Walked> {
    let room = usize::try_from(left).map_or(buf.capacity(), |l| l.min(buf.capacity()));
    buf.set_len(buf.capacity());
    let mut w = Walk {
        src,
        buf,
        filled: 0,
        room,
    };
    let r = w.frame();
    let filled = w.filled;
    buf.set_len(filled);
    match r {
        Ok(()) => Ok(Walked::Frame),
        Err(Stop::Other) => Ok(Walked::Other),
        Err(Stop::Ended) => Ok(Walked::Ended),
        Err(Stop::Io(e)) => Err(e),
    }
}
