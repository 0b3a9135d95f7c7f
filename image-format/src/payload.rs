//! Streaming payloads: exactly `stored_size` bytes per payload from the
//! underlying stream, decompressed and hashed on the way, with the checks at
//! the end of each payload.

use std::io::{self, BufReader, Read, Write};
use std::sync::mpsc::sync_channel;

use sha2::{Digest, Sha256};

use crate::chunked::stream::ChunkedDecoder;
use crate::error::{Error, Result};
use crate::format::{Compression, PayloadInfo, ZSTD_WINDOW_LOG_MAX};

/// Chunk handed from the reading thread to the hashing thread: large enough
/// that the per-chunk cost vanishes next to SHA-256, small enough for L2.
const COPY_CHUNK: usize = 256 * 1024;
/// Chunks in flight between the two threads.
const COPY_QUEUE: usize = 4;

/// Buffer between the stream and the zstd decoder.
const ZSTD_INPUT_BUFFER: usize = 128 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Waiting,
    Open,
    Done,
}

/// The payload part of an image stream.
pub(crate) struct Stream<R> {
    inner: R,
    payloads: Vec<PayloadInfo>,
    states: Vec<State>,
    next: usize,
    /// Stored bytes of the current payload not yet read from `inner`.
    pending: u64,
    /// Offset in the image of the next byte of `inner`.
    pos: u64,
}

impl<R: Read> Stream<R> {
    pub(crate) fn new(inner: R, payloads: Vec<PayloadInfo>, pos: u64) -> Stream<R> {
        let states = vec![State::Waiting; payloads.len()];
        Stream {
            inner,
            payloads,
            states,
            next: 0,
            pending: 0,
            pos,
        }
    }

    fn check_previous(&self) -> Result<()> {
        if let Some(prev) = self.next.checked_sub(1) {
            if self.states[prev] != State::Done {
                return Err(Error::PayloadAbandoned {
                    role: self.payloads[prev].role.clone(),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn next_payload(&mut self, hashed: bool) -> Result<Option<PayloadReader<'_, R>>> {
        self.check_previous()?;
        let index = self.next;
        if index == self.payloads.len() {
            return Ok(None);
        }
        self.next += 1;
        self.states[index] = State::Open;
        self.pending = self.payloads[index].stored_size;
        let Stream {
            inner,
            payloads,
            states,
            pending,
            pos,
            ..
        } = self;
        let info = &payloads[index];
        let limited = Limited {
            inner,
            remaining: pending,
            pos,
            role: &info.role,
            hasher: info.stored_sha256.map(|_| Sha256::new()),
        };
        let source = match info.compression {
            Compression::None => Source::Plain(limited),
            Compression::Zstd => Source::Zstd(Box::new(zstd_decoder(BufReader::with_capacity(
                ZSTD_INPUT_BUFFER,
                limited,
            ))?)),
            Compression::Chunked => {
                Source::Chunked(Box::new(ChunkedDecoder::new(info.clone(), limited)))
            }
        };
        Ok(Some(PayloadReader {
            info,
            source,
            hasher: hashed.then(PayloadHasher::new),
            raw: 0,
            state: &mut states[index],
            failed: false,
        }))
    }

    pub(crate) fn skip_payload(&mut self) -> Result<Option<PayloadInfo>> {
        self.check_previous()?;
        let index = self.next;
        if index == self.payloads.len() {
            return Ok(None);
        }
        self.next += 1;
        self.pending = self.payloads[index].stored_size;
        let mut limited = Limited {
            inner: &mut self.inner,
            remaining: &mut self.pending,
            pos: &mut self.pos,
            role: &self.payloads[index].role,
            hasher: None,
        };
        io::copy(&mut limited, &mut io::sink()).map_err(|e| Error::io("skipping a payload", e))?;
        self.states[index] = State::Done;
        Ok(Some(self.payloads[index].clone()))
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        if let Some(i) = self.states.iter().position(|s| *s != State::Done) {
            return Err(Error::PayloadNotConsumed {
                role: self.payloads[i].role.clone(),
            });
        }
        let mut byte = [0u8; 1];
        loop {
            match self.inner.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(Error::TrailingData { offset: self.pos }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading after the last payload", e)),
            }
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }
}

/// Reads at most `remaining` bytes; the stream ending earlier is an error.
/// Hashes them when the payload's entry has a `stored_sha256`.
struct Limited<'a, R> {
    inner: &'a mut R,
    remaining: &'a mut u64,
    pos: &'a mut u64,
    role: &'a str,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if *self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(*self.remaining).unwrap_or(usize::MAX));
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading a payload", e).into()),
            }
        };
        if n == 0 {
            return Err(Error::PayloadTruncated {
                role: self.role.to_owned(),
                offset: *self.pos,
            }
            .into());
        }
        *self.remaining -= n as u64;
        *self.pos += n as u64;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

fn zstd_decoder<'a, B: io::BufRead>(input: B) -> Result<zstd::stream::read::Decoder<'a, B>> {
    let mut d = zstd::stream::read::Decoder::with_buffer(input)
        .map_err(|e| Error::io("creating the zstd decoder", e))?;
    d.window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(|e| Error::io("creating the zstd decoder", e))?;
    Ok(d)
}

/// A decompressing reader over stored payload bytes, with the zstd window
/// bounded (for pipelines built from the lower-level pieces; it neither
/// counts nor hashes: pair it with a [`PayloadHasher`]).
pub fn decompressor<'a, R: Read + 'a>(
    compression: Compression,
    stored: R,
) -> Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(stored),
        Compression::Zstd => Box::new(zstd_decoder(BufReader::with_capacity(
            ZSTD_INPUT_BUFFER,
            stored,
        ))?),
        Compression::Chunked => {
            return Err(Error::InvalidInput(
                "a chunked payload needs its header entry: use payload_decompressor".into(),
            ))
        }
    })
}

/// A decoding reader over a payload's stored bytes, for every compression:
/// for `chunked` it reads and checks the table frame, then hands on each
/// group of blocks only after its SHA-256 matched the table (a mismatch is a
/// read error wrapping [`Error::GroupHashMismatch`]). Like [`decompressor`]
/// it checks neither the raw size nor the whole payload's SHA-256.
pub fn payload_decompressor<'a, R: Read + 'a>(
    payload: &PayloadInfo,
    stored: R,
) -> Result<Box<dyn Read + 'a>> {
    match payload.compression {
        Compression::Chunked => Ok(Box::new(ChunkedDecoder::new(payload.clone(), stored))),
        c => decompressor(c, stored),
    }
}

enum Source<'a, R> {
    Plain(Limited<'a, R>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Limited<'a, R>>>>),
    Chunked(Box<ChunkedDecoder<Limited<'a, R>>>),
}

impl<R: Read> Source<'_, R> {
    /// The SHA-256 of the stored bytes read, if they were hashed.
    fn take_stored_digest(&mut self) -> Option<[u8; 32]> {
        let limited = match self {
            Source::Plain(l) => l,
            Source::Zstd(d) => d.get_mut().get_mut(),
            Source::Chunked(d) => d.get_mut(),
        };
        limited.hasher.take().map(|h| h.finalize().into())
    }
}

/// The raw bytes of one payload. Reading it to the end checks the stored
/// size, the raw size and (unless made by `next_payload_unhashed`) the
/// SHA-256: on a mismatch the final `read` returns an error wrapping an
/// [`Error`] (recover it with [`Error::from_io`]) instead of `Ok(0)`, and
/// every later `read` fails too.
pub struct PayloadReader<'a, R> {
    info: &'a PayloadInfo,
    source: Source<'a, R>,
    hasher: Option<PayloadHasher>,
    raw: u64,
    state: &'a mut State,
    failed: bool,
}

impl<R: Read> PayloadReader<'_, R> {
    /// What the header declares for this payload.
    pub fn info(&self) -> &PayloadInfo {
        self.info
    }

    fn fail(&mut self, e: Error) -> io::Error {
        self.failed = true;
        e.into()
    }

    fn stored_left(&self) -> u64 {
        match &self.source {
            Source::Plain(l) => *l.remaining,
            Source::Zstd(d) => d.get_ref().buffer().len() as u64 + *d.get_ref().get_ref().remaining,
            Source::Chunked(d) => *d.get_ref().remaining,
        }
    }

    fn at_end(&mut self) -> io::Result<usize> {
        let role = &self.info.role;
        let left = self.stored_left();
        if left != 0 {
            let e = Error::StoredSizeMismatch {
                role: role.clone(),
                left,
            };
            return Err(self.fail(e));
        }
        if self.raw != self.info.raw_size {
            let e = Error::RawSizeMismatch {
                role: role.clone(),
                expected: self.info.raw_size,
                actual: self.raw,
            };
            return Err(self.fail(e));
        }
        if let Some(h) = self.hasher.take() {
            if let Err(e) = h.finish(self.info) {
                return Err(self.fail(e));
            }
        }
        if let (Some(want), Some(got)) = (self.info.stored_sha256, self.source.take_stored_digest())
        {
            if got != want {
                let e = Error::StoredHashMismatch {
                    role: role.clone(),
                    expected: crate::hex(&want),
                    actual: crate::hex(&got),
                };
                return Err(self.fail(e));
            }
        }
        *self.state = State::Done;
        Ok(0)
    }
}

impl<R: Read> Read for PayloadReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(Error::PayloadPoisoned {
                role: self.info.role.clone(),
            }
            .into());
        }
        if *self.state == State::Done || buf.is_empty() {
            return Ok(0);
        }
        let result = match &mut self.source {
            Source::Plain(l) => l.read(buf),
            Source::Zstd(d) => d.read(buf),
            Source::Chunked(d) => d.read(buf),
        };
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let err = match Error::from_io(e) {
                    // Not one of ours: the zstd decoder rejected the data.
                    Error::Io { message, .. } if matches!(self.source, Source::Zstd(_)) => {
                        Error::CorruptPayload {
                            role: self.info.role.clone(),
                            detail: message,
                        }
                    }
                    other => other,
                };
                return Err(self.fail(err));
            }
        };
        if n == 0 {
            return self.at_end();
        }
        self.raw += n as u64;
        if self.raw > self.info.raw_size {
            let e = Error::RawSizeMismatch {
                role: self.info.role.clone(),
                expected: self.info.raw_size,
                actual: self.raw,
            };
            return Err(self.fail(e));
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// SHA-256 and length of a payload's raw bytes, checked against the header.
#[derive(Clone, Default)]
pub struct PayloadHasher {
    sha: Sha256,
    len: u64,
}

impl PayloadHasher {
    /// A fresh hasher.
    pub fn new() -> PayloadHasher {
        PayloadHasher::default()
    }

    /// Feed raw bytes, in order.
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of what was fed.
    pub fn digest(self) -> [u8; 32] {
        self.sha.finalize().into()
    }

    /// Check length and SHA-256 against the header's entry.
    pub fn finish(self, info: &PayloadInfo) -> Result<()> {
        if self.len != info.raw_size {
            return Err(Error::RawSizeMismatch {
                role: info.role.clone(),
                expected: info.raw_size,
                actual: self.len,
            });
        }
        let actual = self.digest();
        if actual != info.sha256 {
            return Err(Error::HashMismatch {
                role: info.role.clone(),
                expected: info.sha256_hex(),
                actual: crate::hex(&actual),
            });
        }
        Ok(())
    }
}

/// Fill `buf` as far as the payload goes; 0 only at its (checked) end.
fn read_full<R: Read>(p: &mut PayloadReader<'_, R>, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match p.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io(e)),
        }
    }
    Ok(filled)
}

/// Read an unhashed payload to its end, writing its raw bytes to `out`, while
/// a second thread hashes them (each chunk handed over without a copy), so
/// that reading and decompressing overlap SHA-256. Checks size and hash
/// before returning `Ok`; `out` has then received exactly the raw bytes.
pub(crate) fn copy_with_hasher_thread<R: Read>(
    p: &mut PayloadReader<'_, R>,
    out: &mut dyn Write,
) -> Result<u64> {
    debug_assert!(p.hasher.is_none(), "the payload would be hashed twice");
    let info = p.info.clone();
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<Vec<u8>>(COPY_QUEUE);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(COPY_QUEUE + 2);
        let hasher = scope.spawn(move || {
            let mut h = PayloadHasher::new();
            for buf in full_rx {
                h.update(&buf);
                let _ = empty_tx.try_send(buf);
            }
            h
        });
        let read = (|| loop {
            let mut buf = empty_rx.try_recv().unwrap_or_default();
            buf.resize(COPY_CHUNK, 0);
            let n = read_full(p, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            out.write_all(&buf)
                .map_err(|e| Error::io("writing the payload", e))?;
            if full_tx.send(buf).is_err() {
                return Err(Error::io(
                    "hashing the payload",
                    io::Error::other("hashing thread ended"),
                ));
            }
        })();
        drop(full_tx);
        let hasher = hasher.join().expect("the hashing thread does not panic");
        read?;
        let len = hasher.len();
        hasher.finish(&info)?;
        Ok(len)
    })
}
