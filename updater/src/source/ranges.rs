//! Random access to an image: the [`RangeSource`] trait, its HTTP form
//! ([`HttpRanges`], from [`super::HttpReader::into_ranges`]) and an
//! in-memory form ([`MemRanges`], for the in-process reliability suite and
//! unit tests).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::http::{parse_content_range, Conn, Failure, Head};

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
    pub(super) served: u64,
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

/// [`RangeSource`] over HTTP (from [`super::HttpReader::into_ranges`]):
/// each range is one `GET` with `Range: bytes=START-LAST` over the
/// download's agent (kept alive: every body is read to its end), answered
/// `206` with exactly that `Content-Range` and the image's length; a broken
/// range is resumed from the byte reached, within the download's retry
/// budget and deadline.
pub struct HttpRanges {
    conn: Conn,
    total: u64,
}

impl HttpRanges {
    pub(super) fn new(conn: Conn, total: u64) -> HttpRanges {
        HttpRanges { conn, total }
    }
}

impl RangeSource for HttpRanges {
    fn len(&self) -> u64 {
        self.total
    }

    fn range(&mut self, start: u64, end: u64) -> io::Result<Box<dyn Read + '_>> {
        check_bounds(start, end, self.total)?;
        let mut r = HttpRange {
            conn: &mut self.conn,
            total: self.total,
            start,
            end,
            pos: start,
            body: None,
        };
        if start < end {
            // Connect now: a refusal shows here, before any byte is read.
            r.connect().map_err(io::Error::other)?;
        }
        Ok(Box::new(r))
    }

    fn received(&self) -> u64 {
        self.conn.received
    }
}

/// One range being read: bytes [pos, end) still to come.
struct HttpRange<'a> {
    conn: &'a mut Conn,
    total: u64,
    start: u64,
    end: u64,
    pos: u64,
    body: Option<ureq::BodyReader<'static>>,
}

impl HttpRange<'_> {
    /// Ask for [pos, end) (with retries): only a 206 with exactly that
    /// Content-Range (and the image's length) is taken.
    fn connect(&mut self) -> Result<(), String> {
        let (pos, last, total) = (self.pos, self.end - 1, self.total);
        let url = self.conn.url.clone();
        let judge = |h: &Head| {
            if h.status == 200 {
                return Err(Failure::Fatal(format!(
                    "{url}: server stopped honouring Range (HTTP 200 to Range: bytes={pos}-{last})"
                )));
            }
            let cr = h.content_range.as_deref().and_then(parse_content_range);
            let len_ok = h.content_length.is_none_or(|l| l == last + 1 - pos);
            if cr != Some((pos, last, Some(total))) || !len_ok {
                let sent = match &h.content_range {
                    Some(v) => format!("Content-Range {v}"),
                    None => "no Content-Range".into(),
                };
                let len = match h.content_length {
                    Some(l) if !len_ok => format!(", Content-Length {l}"),
                    _ => String::new(),
                };
                return Err(Failure::Fatal(format!(
                    "{url}: asked for bytes {pos}-{last}/{total} but the server sent {sent}{len}"
                )));
            }
            Ok(())
        };
        let body = self
            .conn
            .open(&format!("bytes={pos}-{last}"), pos, Some(total), judge)?;
        self.body = Some(body);
        Ok(())
    }

    /// At the range's end: read the body to its end, so that the agent can
    /// reuse the connection for the next request.
    fn finish(&mut self) {
        if let Some(mut body) = self.body.take() {
            let mut probe = [0u8; 1];
            let _ = body.read(&mut probe);
        }
    }
}

impl Read for HttpRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.end - self.pos) as usize;
        if want == 0 {
            return Ok(0);
        }
        loop {
            if self.body.is_none() {
                self.connect().map_err(io::Error::other)?;
            }
            let body = self.body.as_mut().expect("connected");
            let why =
                match self
                    .conn
                    .read(body, &mut buf[..want], self.pos, Some(self.total), false)
                {
                    Ok(0) => format!(
                        "{}: connection closed at byte {} of range {}..{}",
                        self.conn.url, self.pos, self.start, self.end
                    ),
                    Ok(n) => {
                        self.pos += n as u64;
                        if self.pos == self.end {
                            self.finish();
                        }
                        return Ok(n);
                    }
                    Err(Failure::Fatal(m)) => {
                        self.body = None;
                        return Err(io::Error::other(m));
                    }
                    Err(Failure::Transient(m)) => m,
                };
            self.body = None;
            self.conn
                .backoff_or_fail(self.pos, Some(self.total), why)
                .map_err(io::Error::other)?;
        }
    }
}
