//! Release-engineer commands: keygen, image pack/sign/verify/info/extract/diff-size.
//!
//! All format logic lives in the `image-format` crate; this module parses
//! arguments, opens files, and reports.

mod chunks;
mod diffsize;
mod inspect;
mod keys;
mod pack;
pub mod swu;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::cli::Globals;
use crate::exit;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Generate an ed25519 signing key pair: NAME.key (PKCS#8 PEM, mode 0600)
    /// and NAME.pub (SPKI PEM).
    Keygen(keys::KeygenArgs),
    /// Build, sign, check and take apart signed images.
    #[command(subcommand)]
    Image(ImageSub),
}

#[derive(Subcommand, Debug)]
pub enum ImageSub {
    /// Pack payloads into a signed image.
    Pack(Box<pack::PackArgs>),
    /// Add a signature to an image (key rotation, several signers).
    Sign(pack::SignArgs),
    /// Check an image's signatures and every payload hash.
    Verify(inspect::VerifyArgs),
    /// Show every header field and each signature's key id and status.
    Info(inspect::InfoArgs),
    /// Write one payload's raw bytes to a file (after checking it).
    Extract(inspect::ExtractArgs),
    /// Estimate the bytes a device running OLD downloads to install NEW
    /// (chunked payloads: only the blocks it does not hold).
    DiffSize(diffsize::DiffSizeArgs),
    /// Wrap a signed image in an SWUpdate-style cpio (.swu) for DDI servers
    /// that take only .swu uploads, such as goosebit (docs/ddi.md).
    WrapSwu(swu::WrapSwuArgs),
}

/// Where the trusted public keys come from.
#[derive(Args, Debug, Clone)]
pub struct TrustArgs {
    /// Directory of trusted public keys (*.pub / *.pem, SPKI PEM).
    #[arg(long, value_name = "DIR", conflicts_with = "pubkey")]
    pub keyring: Option<PathBuf>,
    /// One trusted public key file (SPKI PEM).
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
    /// How many distinct trusted keys must have signed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threshold: usize,
}

impl TrustArgs {
    /// The keyring, if one was given.
    fn load(&self) -> anyhow::Result<Option<image_format::Keyring>> {
        let ring = match (&self.keyring, &self.pubkey) {
            (Some(dir), _) => image_format::Keyring::load_dir(dir)?,
            (None, Some(file)) => image_format::Keyring::load_file(file)?,
            (None, None) => return Ok(None),
        };
        Ok(Some(ring))
    }
}

pub fn run(cmd: ImageCommand, globals: &Globals) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Keygen(args) => keys::keygen(&args),
        ImageCommand::Image(sub) => match sub {
            ImageSub::Pack(args) => pack::pack(&args),
            ImageSub::Sign(args) => pack::sign(&args),
            ImageSub::Verify(args) => inspect::verify(&args),
            ImageSub::Info(args) => inspect::info(&args, globals),
            ImageSub::Extract(args) => inspect::extract(&args),
            ImageSub::DiffSize(args) => diffsize::diff_size(&args, globals),
            ImageSub::WrapSwu(args) => swu::wrap_swu(&args),
        },
    }
}

/// Turn a library error about `path` into one line, with exit code 3 for a
/// verification or integrity refusal.
fn image_error(path: &Path, e: image_format::Error) -> anyhow::Error {
    let line = format!("{}: {e}", path.display());
    if e.is_refusal() {
        exit::refused(line)
    } else {
        anyhow::anyhow!(line)
    }
}

/// Read a whole image file without checking its signatures: the header
/// parses, every payload matches its declared size and SHA-256, and no byte
/// follows the last one. A failure is the one line (exit 3 for a bad
/// image) that `image verify` gives for the same file. For the CI commands
/// that take an image without a keyring: `image sign`, `feed add`.
pub fn check_image_file(path: &Path) -> anyhow::Result<()> {
    use std::io::BufReader;
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    let check = || -> image_format::Result<()> {
        let mut img = image_format::ImageReader::new(BufReader::with_capacity(1 << 20, file))?
            .into_untrusted()?;
        while img.copy_next_payload(&mut std::io::sink())?.is_some() {}
        img.finish()
    };
    check().map_err(|e| image_error(path, e))
}

/// A temporary file beside `dest`, so the final rename is atomic.
fn temp_beside(dest: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".slotctl-tmp-")
        .tempfile_in(dir)
        .map_err(|e| anyhow::anyhow!("creating a temporary file in {}: {e}", dir.display()))
}

/// fsync and rename a finished temporary file to `dest`, mode 0644.
fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let file = tmp.as_file();
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dest.display()))?;
    file.sync_all()
        .map_err(|e| anyhow::anyhow!("syncing {}: {e}", dest.display()))?;
    tmp.persist(dest)
        .map_err(|e| anyhow::anyhow!("writing {}: {}", dest.display(), e.error))?;
    Ok(())
}
