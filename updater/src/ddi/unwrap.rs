//! The device side of the `.swu` wrapper ([`crate::image_cmd::swu`]):
//! recognise the cpio at the start of a downloaded artifact, check its
//! member names and sizes, and hand exactly the slotctl image's bytes on,
//! streaming (no temporary file). An artifact that does not start with a
//! cpio magic is taken as a plain slotctl image and passed through as is.
//!
//! Nothing in the wrapper is trusted: `sw-description` is skipped unread
//! (bounded in size), and the image's own signatures, compatible and
//! rollback rules decide in the install pipeline. After the image member
//! the reader goes on to the end of the artifact (the cpio trailer and its
//! zero padding, bounded), so that a hash over the whole artifact
//! ([`super::artifact`]) is checked before the pipeline sees the end.

use std::io::{self, Read};

use crate::image_cmd::swu::{
    pad4, DESCRIPTION_MEMBER, HEADER_LEN, IMAGE_MEMBER, MAGIC_CRC, MAGIC_NEWC, TRAILER,
};

/// The largest `sw-description` skipped.
pub const MAX_DESCRIPTION: u64 = 64 * 1024;
/// The most bytes allowed after the image member (padding, trailer, the
/// trailer's padding to 512).
const MAX_TAIL: u64 = 4096;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the .swu wrapper: {}", msg.into()),
    )
}

/// What the artifact turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plain slotctl image.
    Plain,
    /// A `.swu` cpio holding one, of this many bytes.
    Swu { image_len: u64 },
}

/// The slotctl image inside an artifact.
pub struct Unwrap<R> {
    inner: R,
    kind: Kind,
    /// Bytes read ahead to recognise the artifact (plain: handed on first).
    prefix: Vec<u8>,
    prefix_pos: usize,
    /// Swu: image bytes still to hand on.
    left: u64,
    /// Bytes of the artifact read so far.
    pos: u64,
    done: bool,
}

/// Read up to `buf.len()` bytes, fewer only at the end of the stream.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One member's name and size, from its header at the current position.
struct Member {
    name: Vec<u8>,
    size: u64,
}

impl<R: Read> Unwrap<R> {
    /// Recognise the artifact: reads its first bytes (and, for a `.swu`,
    /// up to the image member).
    pub fn open(mut inner: R) -> io::Result<Unwrap<R>> {
        let mut head = vec![0u8; HEADER_LEN];
        let n = read_full(&mut inner, &mut head)?;
        head.truncate(n);
        let mut u = Unwrap {
            inner,
            kind: Kind::Plain,
            prefix: Vec::new(),
            prefix_pos: 0,
            left: 0,
            pos: n as u64,
            done: false,
        };
        if n < 6 || (&head[..6] != MAGIC_NEWC && &head[..6] != MAGIC_CRC) {
            u.prefix = head;
            return Ok(u);
        }
        let desc = u.member(&head)?;
        if desc.name != DESCRIPTION_MEMBER.as_bytes() {
            return Err(bad(format!(
                "the first member is {:?}, not {DESCRIPTION_MEMBER}",
                String::from_utf8_lossy(&desc.name)
            )));
        }
        if desc.size > MAX_DESCRIPTION {
            return Err(bad(format!(
                "{DESCRIPTION_MEMBER} is {} bytes (at most {MAX_DESCRIPTION})",
                desc.size
            )));
        }
        u.skip(desc.size + pad4(desc.size))?;
        let img = u.next_member()?;
        if img.name != IMAGE_MEMBER.as_bytes() {
            return Err(bad(format!(
                "the second member is {:?}, not {IMAGE_MEMBER}",
                String::from_utf8_lossy(&img.name)
            )));
        }
        u.kind = Kind::Swu {
            image_len: img.size,
        };
        u.left = img.size;
        Ok(u)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn read_exact_counted(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let n = read_full(&mut self.inner, buf)?;
        self.pos += n as u64;
        if n < buf.len() {
            return Err(bad(format!(
                "the artifact ends early (at byte {})",
                self.pos
            )));
        }
        Ok(())
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read_exact_counted(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn next_member(&mut self) -> io::Result<Member> {
        let mut head = vec![0u8; HEADER_LEN];
        self.read_exact_counted(&mut head)?;
        self.member(&head)
    }

    /// Parse the header `head` (just read) and read the name after it.
    fn member(&mut self, head: &[u8]) -> io::Result<Member> {
        if head.len() < HEADER_LEN || (&head[..6] != MAGIC_NEWC && &head[..6] != MAGIC_CRC) {
            return Err(bad(format!(
                "no cpio (newc) header at byte {}",
                self.pos - head.len() as u64
            )));
        }
        let field = |i: usize| -> io::Result<u64> {
            let s = std::str::from_utf8(&head[6 + 8 * i..14 + 8 * i])
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok());
            s.ok_or_else(|| bad("a cpio header field is not hexadecimal"))
        };
        let size = field(6)?;
        let namesize = field(11)?;
        if namesize == 0 || namesize > 256 {
            return Err(bad(format!("a member name of {namesize} bytes")));
        }
        let mut name = vec![0u8; namesize as usize];
        self.read_exact_counted(&mut name)?;
        if name.pop() != Some(0) {
            return Err(bad("a member name is not NUL-terminated"));
        }
        let pad = pad4(self.pos);
        self.skip(pad)?;
        Ok(Member { name, size })
    }

    /// After the image member: its padding, the trailer, zeros, the end.
    fn finish(&mut self) -> io::Result<()> {
        let start = self.pos;
        self.skip(pad4(self.pos))?;
        let t = self.next_member()?;
        if t.name != TRAILER.as_bytes() || t.size != 0 {
            return Err(bad(format!(
                "after {IMAGE_MEMBER} comes {:?}, not the cpio trailer",
                String::from_utf8_lossy(&t.name)
            )));
        }
        let mut buf = [0u8; 512];
        loop {
            let n = read_full(&mut self.inner, &mut buf)?;
            self.pos += n as u64;
            if buf[..n].iter().any(|&b| b != 0) {
                return Err(bad("data after the cpio trailer"));
            }
            if self.pos - start > MAX_TAIL {
                return Err(bad(format!(
                    "more than {MAX_TAIL} bytes after {IMAGE_MEMBER}"
                )));
            }
            if n < buf.len() {
                return Ok(());
            }
        }
    }
}

impl<R: Read> Read for Unwrap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.done {
            return Ok(0);
        }
        match self.kind {
            Kind::Plain => {
                if self.prefix_pos < self.prefix.len() {
                    let n = buf.len().min(self.prefix.len() - self.prefix_pos);
                    buf[..n].copy_from_slice(&self.prefix[self.prefix_pos..self.prefix_pos + n]);
                    self.prefix_pos += n;
                    return Ok(n);
                }
                let n = self.inner.read(buf)?;
                self.pos += n as u64;
                Ok(n)
            }
            Kind::Swu { .. } => {
                if self.left == 0 {
                    self.finish()?;
                    self.done = true;
                    return Ok(0);
                }
                let want = buf
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(bad(format!(
                        "the artifact ends inside {IMAGE_MEMBER}, {} bytes short",
                        self.left
                    )));
                }
                self.pos += n as u64;
                self.left -= n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_cmd::swu::write_swu;

    fn wrapped(img: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_swu(&mut out, "1.0.0", "board", &mut &img[..], img.len() as u64).unwrap();
        out
    }

    fn read_all(data: &[u8]) -> io::Result<(Kind, Vec<u8>)> {
        let mut u = Unwrap::open(data)?;
        let mut v = Vec::new();
        u.read_to_end(&mut v)?;
        Ok((u.kind(), v))
    }

    #[test]
    fn swu_gives_exactly_the_image() {
        for len in [0usize, 1, 3, 4, 5, 511, 512, 513, 70_000] {
            let img: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let (kind, got) = read_all(&wrapped(&img)).unwrap();
            assert_eq!(
                kind,
                Kind::Swu {
                    image_len: len as u64
                }
            );
            assert!(got == img, "len {len}");
        }
    }

    #[test]
    fn plain_passes_through() {
        for len in [0usize, 5, 110, 111, 5000] {
            let img: Vec<u8> = (0..len).map(|i| (i % 200 + 1) as u8).collect();
            let (kind, got) = read_all(&img).unwrap();
            assert_eq!(kind, Kind::Plain);
            assert!(got == img, "len {len}");
        }
    }

    #[test]
    fn bad_wrappers_are_named() {
        let img = vec![9u8; 1000];
        let good = wrapped(&img);
        // Truncated inside the image.
        let e = read_all(&good[..good.len() - 1000])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ends inside slotctl-image"), "{e}");
        // Data after the trailer.
        let mut more = good.clone();
        more.push(1);
        let e = read_all(&more).unwrap_err().to_string();
        assert!(e.contains("after the cpio trailer"), "{e}");
        // The image member renamed.
        let mut renamed = good.clone();
        let at = renamed
            .windows(IMAGE_MEMBER.len())
            .position(|w| w == IMAGE_MEMBER.as_bytes())
            .unwrap();
        renamed[at] = b'X';
        let e = read_all(&renamed).unwrap_err().to_string();
        assert!(e.contains("not slotctl-image"), "{e}");
        // A description that is not first.
        let mut first = good.clone();
        first[110] = b'X';
        let e = read_all(&first).unwrap_err().to_string();
        assert!(e.contains("not sw-description"), "{e}");
    }
}
