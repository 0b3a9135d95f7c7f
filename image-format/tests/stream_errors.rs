//! Reading an image from a source that misbehaves the way pipes and
//! sockets do: interrupted reads (EINTR) are retried and change nothing;
//! any other read error, in a payload or after the last one, is reported
//! (not retried into silence), with the I/O error's kind.

use std::io::{self, Cursor, Read};

use image_format::*;

/// Serves `data`; every read that would start at or past `fail_at` fails
/// once with `kind`, and every other read is interrupted first when
/// `eintr` is set.
struct Flaky {
    data: Cursor<Vec<u8>>,
    fail_at: u64,
    kind: io::ErrorKind,
    failed: bool,
    eintr: bool,
    tick: bool,
}

impl Read for Flaky {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.eintr {
            self.tick = !self.tick;
            if self.tick {
                return Err(io::ErrorKind::Interrupted.into());
            }
        }
        if !self.failed && self.data.position() >= self.fail_at {
            self.failed = true;
            return Err(io::Error::new(self.kind, "flaky source"));
        }
        // Short reads too: at most 1000 bytes at a time.
        let n = buf.len().min(1000);
        self.data.read(&mut buf[..n])
    }
}

fn image() -> (Vec<u8>, Keyring, Vec<u8>) {
    let key = SigningKey::generate().unwrap();
    let mut ring = Keyring::new();
    ring.add(key.public_key().clone());
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let spec = PackSpec::new("acme", semver::Version::new(1, 0, 0), 1, 0);
    let parts = vec![
        PackPart {
            role: "BOOT".into(),
            compression: Compression::None,
            source: Box::new(&data[..]),
            size_hint: None,
            verity: None,
        },
        PackPart {
            role: "ROOT".into(),
            compression: Compression::Zstd,
            source: Box::new(&data[..]),
            size_hint: None,
            verity: None,
        },
    ];
    let mut out = Cursor::new(Vec::new());
    pack(&mut out, &spec, parts, &[&key]).unwrap();
    (out.into_inner(), ring, data)
}

fn flaky(img: &[u8], fail_at: u64, eintr: bool) -> Flaky {
    Flaky {
        data: Cursor::new(img.to_vec()),
        fail_at,
        kind: io::ErrorKind::ConnectionReset,
        failed: false,
        eintr,
        tick: false,
    }
}

/// Read the whole image; the first error, as text.
fn read_all(src: Flaky, ring: &Keyring, want: &[u8]) -> Result<(), String> {
    let mut v = ImageReader::new(src)
        .map_err(|e| e.to_string())?
        .verify(ring, 1)
        .map_err(|e| e.to_string())?;
    while let Some(mut p) = v.next_payload().map_err(|e| e.to_string())? {
        let mut raw = Vec::new();
        p.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        assert_eq!(raw, want);
    }
    v.finish().map_err(|e| e.to_string())
}

#[test]
fn interrupted_reads_are_retried() {
    let (img, ring, data) = image();
    read_all(flaky(&img, u64::MAX, true), &ring, &data).unwrap();
}

#[test]
fn a_read_error_in_a_payload_is_reported() {
    let (img, ring, data) = image();
    // Inside the first payload (BOOT starts at a 4 KiB boundary).
    for eintr in [false, true] {
        let e = read_all(flaky(&img, 4096 + 5000, eintr), &ring, &data).unwrap_err();
        assert!(
            e.contains("reading a payload") && e.contains("flaky source"),
            "{e}"
        );
    }
}

#[test]
fn a_read_error_after_the_last_payload_is_reported() {
    let (img, ring, data) = image();
    for eintr in [false, true] {
        let e = read_all(flaky(&img, img.len() as u64, eintr), &ring, &data).unwrap_err();
        assert_eq!(e, "reading after the last payload: flaky source");
    }
    // The same error surfaces through io::Error with its kind.
    let err = Error::io("x", io::Error::new(io::ErrorKind::ConnectionReset, "y"));
    assert_eq!(io::Error::from(err).kind(), io::ErrorKind::ConnectionReset);
}
