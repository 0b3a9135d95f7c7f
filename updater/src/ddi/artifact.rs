//! The downloaded artifact as the DDI server described it: every byte is
//! counted and hashed, and at its end the size and the hashes the server
//! gave (sha1, sha256; md5 is not checked) must match, else the read fails
//! there, before the install pipeline sees the end of the image and so
//! before any slot record or activation. More bytes than the size given
//! fail at once. A progress callback sees the bytes received.

use std::io::{self, Read};

use sha1::Digest;

/// What the server says of the artifact.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub size: Option<u64>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

impl Expected {
    /// True when a hash the device can check is given.
    pub fn has_hash(&self) -> bool {
        self.sha1.is_some() || self.sha256.is_some()
    }
}

pub type OnProgress = Box<dyn FnMut(u64) + Send>;

pub struct Checked<R> {
    inner: R,
    expected: Expected,
    sha1: sha1::Sha1,
    sha256: sha2::Sha256,
    received: u64,
    on_progress: OnProgress,
    checked: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> Checked<R> {
    pub fn new(inner: R, expected: Expected, on_progress: OnProgress) -> Checked<R> {
        Checked {
            inner,
            expected,
            sha1: sha1::Sha1::new(),
            sha256: sha2::Sha256::new(),
            received: 0,
            on_progress,
            checked: false,
        }
    }

    fn check_end(&mut self) -> io::Result<()> {
        if self.checked {
            return Ok(());
        }
        self.checked = true;
        if let Some(size) = self.expected.size {
            if self.received != size {
                return Err(bad(format!(
                    "the artifact is {} bytes, the server says {size}",
                    self.received
                )));
            }
        }
        if let Some(want) = &self.expected.sha1 {
            let got = hex(&std::mem::take(&mut self.sha1).finalize());
            if !got.eq_ignore_ascii_case(want) {
                return Err(bad(format!(
                    "the artifact's sha1 is {got}, the server says {want}"
                )));
            }
        }
        if let Some(want) = &self.expected.sha256 {
            let got = hex(&std::mem::take(&mut self.sha256).finalize());
            if !got.eq_ignore_ascii_case(want) {
                return Err(bad(format!(
                    "the artifact's sha256 is {got}, the server says {want}"
                )));
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.check_end()?;
            return Ok(0);
        }
        self.received += n as u64;
        if let Some(size) = self.expected.size {
            if self.received > size {
                return Err(bad(format!(
                    "the artifact is longer than the {size} bytes the server says"
                )));
            }
        }
        if self.expected.sha1.is_some() {
            self.sha1.update(&buf[..n]);
        }
        if self.expected.sha256.is_some() {
            self.sha256.update(&buf[..n]);
        }
        (self.on_progress)(self.received);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(data: &[u8], e: Expected) -> io::Result<Vec<u8>> {
        let mut c = Checked::new(data, e, Box::new(|_| {}));
        let mut v = Vec::new();
        c.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn hashes_and_size_are_checked_at_the_end() {
        let data = b"abc";
        let good = Expected {
            size: Some(3),
            sha1: Some("A9993E364706816ABA3E25717850C26C9CD0D89D".into()),
            sha256: Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()),
        };
        assert_eq!(run(data, good.clone()).unwrap(), data);
        let e = run(b"abd", good.clone()).unwrap_err().to_string();
        assert!(e.contains("sha1 is"), "{e}");
        let only256 = Expected {
            sha1: None,
            ..good.clone()
        };
        let e = run(b"abd", only256).unwrap_err().to_string();
        assert!(e.contains("sha256 is"), "{e}");
        let e = run(b"abcd", good.clone()).unwrap_err().to_string();
        assert!(e.contains("longer than the 3 bytes"), "{e}");
        let e = run(b"ab", good).unwrap_err().to_string();
        assert!(e.contains("is 2 bytes, the server says 3"), "{e}");
    }
}
