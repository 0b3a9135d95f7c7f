//! `slotctl image wrap-swu`: a slotctl image inside an SWUpdate-style cpio
//! (docs/ddi.md, "Uploading a slotctl image").
//!
//! DDI servers such as goosebit accept only SWUpdate `.swu` files (a cpio
//! archive, "newc" format, whose first member is `sw-description`) or RAUC
//! bundles, and read the release's version and hardware compatibility from
//! them. The wrapper is that cpio with exactly three members:
//!
//! 1. `sw-description`, in libconfig syntax, with the version and the
//!    compatible string from the image's *verified* header:
//!    `software = { version = "V"; hardware-compatibility = [ "C" ]; };`
//!    (a server reads it as hardware model `default`, revision `C`);
//! 2. [`IMAGE_MEMBER`]: the slotctl image, byte for byte;
//! 3. the cpio trailer `TRAILER!!!`, then zeros up to a multiple of 512.
//!
//! The device ([`crate::ddi::unwrap`]) trusts nothing in the wrapper: it
//! streams the image member into the install pipeline, where the image's
//! own signatures, compatible and rollback rules decide.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use image_format::ImageReader;

use super::{image_error, persist, temp_beside, TrustArgs};
use crate::term::printable;

/// The cpio "newc" magic (SWUpdate also takes "crc", `070702`).
pub const MAGIC_NEWC: &[u8; 6] = b"070701";
pub const MAGIC_CRC: &[u8; 6] = b"070702";
/// A newc header: the magic and 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 110;
/// The first member, as SWUpdate and the servers expect it.
pub const DESCRIPTION_MEMBER: &str = "sw-description";
/// The second member: the slotctl image.
pub const IMAGE_MEMBER: &str = "slotctl-image";
/// The last member's name.
pub const TRAILER: &str = "TRAILER!!!";
/// The largest member a newc header can describe.
pub const MAX_MEMBER: u64 = 0xffff_ffff;

#[derive(Args, Debug)]
pub struct WrapSwuArgs {
    /// The image's signatures are checked against these keys first.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The signed slotctl image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Where to write the .swu file.
    #[arg(short, long, value_name = "OUT")]
    pub out: PathBuf,
}

/// One newc member header, its name and the padding after the name.
pub fn member_header(name: &str, size: u64, ino: u32) -> Vec<u8> {
    let namesize = name.len() + 1;
    let mode: u32 = if name == TRAILER { 0 } else { 0o100644 };
    let nlink: u32 = u32::from(name != TRAILER);
    let fields: [u64; 13] = [
        u64::from(ino),
        u64::from(mode),
        0,
        0,
        u64::from(nlink),
        0,
        size,
        0,
        0,
        0,
        0,
        namesize as u64,
        0,
    ];
    let mut h = MAGIC_NEWC.to_vec();
    for f in fields {
        h.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    h.extend_from_slice(name.as_bytes());
    h.push(0);
    h.resize(h.len() + pad4(h.len() as u64) as usize, 0);
    h
}

/// Zeros to add after `len` bytes to reach a multiple of 4.
pub fn pad4(len: u64) -> u64 {
    (4 - len % 4) % 4
}

/// A libconfig string literal (the compatible string is printable ASCII,
/// the version semver: only `"` and `\` need escaping).
fn quoted(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// The `sw-description` text for `version` and `compatible`.
pub fn description(version: &str, compatible: &str) -> String {
    format!(
        "software =\n{{\n\tversion = {};\n\thardware-compatibility = [ {} ];\n}};\n",
        quoted(version),
        quoted(compatible)
    )
}

/// Write the wrapper around `image` (`size` bytes) to `out`.
pub fn write_swu(
    out: &mut impl Write,
    version: &str,
    compatible: &str,
    image: &mut impl Read,
    size: u64,
) -> io::Result<()> {
    let desc = description(version, compatible);
    let mut out = Counting {
        inner: out,
        written: 0,
    };
    out.write_all(&member_header(DESCRIPTION_MEMBER, desc.len() as u64, 1))?;
    out.write_all(desc.as_bytes())?;
    out.write_all(&vec![0; pad4(desc.len() as u64) as usize])?;
    out.write_all(&member_header(IMAGE_MEMBER, size, 2))?;
    let copied = io::copy(&mut image.take(size), &mut out)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the image ended after {copied} of {size} bytes"),
        ));
    }
    out.write_all(&vec![0; pad4(size) as usize])?;
    out.write_all(&member_header(TRAILER, 0, 0))?;
    // Zeros to a multiple of 512, as cpio writes its blocks.
    let tail = (512 - out.written % 512) % 512;
    out.write_all(&vec![0; tail as usize])?;
    Ok(())
}

/// A writer that counts the bytes written.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `slotctl image wrap-swu IMAGE -o OUT.swu --keyring DIR`.
pub fn wrap_swu(args: &WrapSwuArgs) -> anyhow::Result<()> {
    let Some(ring) = args.trust.load()? else {
        anyhow::bail!("give the trusted keys: --keyring DIR or --pubkey FILE (the version and compatible written are the verified header's)");
    };
    let path = &args.image;
    let open = || File::open(path).with_context(|| format!("opening {}", path.display()));
    // The whole image is verified (signatures and payload hashes) before
    // anything is written: the wrapper never carries a broken image.
    let header = {
        let input = BufReader::with_capacity(1 << 20, open()?);
        let run = || -> image_format::Result<image_format::VerifiedHeader> {
            let mut img = ImageReader::new(input)?.verify(&ring, args.trust.threshold)?;
            while img.copy_next_payload(&mut io::sink())?.is_some() {}
            let h = img.header().clone();
            img.finish()?;
            Ok(h)
        };
        run().map_err(|e| image_error(path, e))?
    };
    let size = open()?.metadata()?.len();
    if size > MAX_MEMBER {
        return Err(crate::exit::refused(format!(
            "{}: {size} bytes: a cpio (newc) member holds at most {MAX_MEMBER} bytes",
            path.display()
        )));
    }
    let version = header.version().to_string();
    let compatible = header.compatible().to_string();
    let tmp = temp_beside(&args.out)?;
    {
        let mut w = io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut input = BufReader::with_capacity(1 << 20, open()?);
        write_swu(&mut w, &version, &compatible, &mut input, size)
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", args.out.display()))?;
    }
    persist(tmp, &args.out)?;
    let line = format!(
        "{}: {compatible} {version} wrapped as {} ({IMAGE_MEMBER}, {size} bytes)",
        path.display(),
        args.out.display()
    );
    println!("{}", printable(&line));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_newc_with_description_first() {
        let img = b"slotctl image bytes".to_vec();
        let mut out = Vec::new();
        write_swu(
            &mut out,
            "1.2.3",
            "acme-gw",
            &mut &img[..],
            img.len() as u64,
        )
        .unwrap();
        assert_eq!(&out[..6], MAGIC_NEWC);
        assert_eq!(out.len() % 512, 0);
        // goosebit's parser: size at [54:62], the name after the header.
        let size = usize::from_str_radix(std::str::from_utf8(&out[54..62]).unwrap(), 16).unwrap();
        assert_eq!(&out[110..124], b"sw-description");
        let desc = std::str::from_utf8(&out[128..128 + size]).unwrap();
        assert!(desc.contains("version = \"1.2.3\";"), "{desc}");
        assert!(desc.contains("hardware-compatibility = [ \"acme-gw\" ];"));
        let pos = out.windows(img.len()).position(|w| w == &img[..]).unwrap();
        assert_eq!(pos % 4, 0);
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn quoting_escapes() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
