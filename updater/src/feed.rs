//! The signed update feed (docs/feed.md): its document, signatures and
//! verification, and the CI commands that write it (`slotctl feed init |
//! add | pull | sign | show`).
//!
//! A feed is one small JSON file listing releases for a `compatible`: the
//! devices fetch it from any static web server, verify it with
//! [`sign::verify`], and pick a release with `crate::agent`.

pub mod doc;
pub mod sign;
pub mod time;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};

use crate::cli::Globals;
use crate::term::printable;
use doc::{Envelope, FeedDoc, Release, Wave};
use time::{parse_duration, Timestamp};

pub use sign::{verify, FeedKeyring, VerifiedFeed};

/// Why a feed is refused. Each message is one line naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("feed is malformed: {0}")]
    Malformed(String),
    #[error("feed is invalid: {0}")]
    Invalid(String),
    #[error("feed format {0} is not supported (this slotctl reads format 1)")]
    UnknownFormat(u32),
    #[error("feed is not signed")]
    Unsigned,
    #[error("feed signature by key {0} is invalid (the feed was altered or signed wrongly)")]
    BadSignature(String),
    #[error(
        "feed has {good} trusted signature(s), {threshold} required (untrusted keys: {untrusted})"
    )]
    NotTrusted {
        good: usize,
        threshold: usize,
        untrusted: String,
    },
    #[error(
        "feed is already signed by key {0} (--renew starts a new round: new serial and expiry)"
    )]
    AlreadySigned(String),
    #[error("feed keyring {path}: {detail}")]
    Keyring { path: String, detail: String },
    #[error("feed expired at {expires} (now {now}): refusing a frozen feed")]
    Expired { expires: Timestamp, now: Timestamp },
    #[error("feed serial {got} is lower than {seen} seen before: refusing a replayed feed")]
    Replayed { got: u64, seen: u64 },
    #[error("feed serial {0} was seen before with different content: refusing it")]
    SerialReused(u64),
    #[error("feed is for compatible {feed:?}, this device is {device:?}")]
    Incompatible { feed: String, device: String },
    #[error("feed is larger than the {limit}-byte bound")]
    TooLarge { limit: u64 },
}

/// The freshness and replay checks a device makes on a verified feed:
/// `last` is the serial and document hash it accepted before.
pub fn check_fresh(
    feed: &VerifiedFeed,
    now: Timestamp,
    last: Option<(u64, &str)>,
) -> Result<(), FeedError> {
    let d = feed.doc();
    if now >= d.expires {
        return Err(FeedError::Expired {
            expires: d.expires,
            now,
        });
    }
    if let Some((seen, hash)) = last {
        if d.serial < seen {
            return Err(FeedError::Replayed {
                got: d.serial,
                seen,
            });
        }
        if d.serial == seen && hash != feed.sha256() {
            return Err(FeedError::SerialReused(seen));
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct FeedFile {
    /// The feed file to work on.
    #[arg(long, value_name = "FILE", default_value = "feed.json")]
    pub feed: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum FeedCommand {
    /// Release engineering: write and sign the update feed.
    #[command(subcommand)]
    Feed(FeedSub),
}

#[derive(Subcommand, Debug)]
pub enum FeedSub {
    /// Create an empty, unsigned feed for a compatible.
    Init {
        #[command(flatten)]
        file: FeedFile,
        /// The devices' compatible string (must equal the images').
        #[arg(long)]
        compatible: String,
        /// Overwrite an existing feed file (its serial carries on).
        #[arg(long)]
        force: bool,
    },
    /// Add a release from a signed image file (drops existing signatures).
    Add {
        #[command(flatten)]
        file: FeedFile,
        /// The image file as it will be uploaded.
        image: PathBuf,
        /// Where devices fetch it, relative to the feed's URL or absolute.
        #[arg(long)]
        url: String,
        /// When the rollout starts (YYYY-MM-DDTHH:MM:SSZ) [default: now].
        #[arg(long, value_name = "TIME")]
        start: Option<String>,
        /// A wave: OFFSET:PERCENT, the delay after --start (0, 90m, 12h, 2d)
        /// and the cumulative share of the fleet. Repeat for each wave.
        /// Default: one wave, 100% at the start.
        #[arg(long = "wave", value_name = "OFFSET:PERCENT")]
        waves: Vec<String>,
    },
    /// Stop a rollout: devices stop taking VERSION at their next check.
    Pull {
        #[command(flatten)]
        file: FeedFile,
        version: String,
    },
    /// Sign the feed. The first signature of a round sets the expiry and
    /// bumps the serial; further keys add their signatures to the same round.
    Sign {
        #[command(flatten)]
        file: FeedFile,
        /// PKCS#8 PEM private key [default: the PEM text in SLOTCTL_SIGNING_KEY, as for image pack].
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// How long devices accept the feed.
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        expires_in: String,
        /// Start a new round even though the feed is signed (new serial, new
        /// expiry): how a feed is refreshed before it expires.
        #[arg(long)]
        renew: bool,
    },
    /// Print the feed; with --keyring, verify its signatures too.
    Show {
        #[command(flatten)]
        file: FeedFile,
        /// Public key file or keyring directory to verify against.
        #[arg(long, value_name = "PATH")]
        keyring: Option<PathBuf>,
    },
}

/// Bound on feed files read by the CI commands.
const MAX_FEED_FILE: u64 = 16 << 20;

fn read_envelope(path: &Path) -> anyhow::Result<(Envelope, FeedDoc)> {
    use crate::localfile::{read_bounded, FileError, Links};
    let bytes = read_bounded(path, Links::Follow, MAX_FEED_FILE).map_err(|e| match e {
        FileError::Io(e) => anyhow::anyhow!("cannot read feed {}: {e}", path.display()),
        e => anyhow::anyhow!("feed {}: {e}", path.display()),
    })?;
    let env = doc::parse_envelope(&bytes).with_context(|| format!("feed {}", path.display()))?;
    let d: FeedDoc = serde_json::from_str(&env.signed)
        .map_err(|e| FeedError::Malformed(format!("signed document: {e}")))
        .with_context(|| format!("feed {}", path.display()))?;
    d.validate()
        .with_context(|| format!("feed {}", path.display()))?;
    Ok((env, d))
}

fn write_doc(path: &Path, d: &FeedDoc, signatures: Vec<doc::SignatureJson>) -> anyhow::Result<()> {
    let env = Envelope {
        signed: d.to_signed_text(),
        signatures,
    };
    write_envelope(path, &env)
}

/// Write a feed file atomically (crate::localfile::write_atomic).
fn write_envelope(path: &Path, env: &Envelope) -> anyhow::Result<()> {
    crate::localfile::write_atomic(path, &doc::envelope_bytes(env), 0o644)
        .with_context(|| format!("cannot write feed {}", path.display()))
}

/// Parse `OFFSET:PERCENT` wave specs against a start time.
pub fn parse_waves(start: Timestamp, specs: &[String]) -> anyhow::Result<Vec<Wave>> {
    if specs.is_empty() {
        return Ok(vec![Wave {
            start,
            percent: 100,
        }]);
    }
    specs
        .iter()
        .map(|s| {
            let (off, pct) = s
                .split_once(':')
                .with_context(|| format!("wave {s:?}: expected OFFSET:PERCENT, e.g. 12h:25"))?;
            let off = parse_duration(off)
                .with_context(|| format!("wave {s:?}: bad offset (use 0, 90m, 12h, 2d)"))?;
            let percent: u8 = pct
                .trim_end_matches('%')
                .parse()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .with_context(|| format!("wave {s:?}: percent must be 1 to 100"))?;
            Ok(Wave {
                start: start.saturating_add(off),
                percent,
            })
        })
        .collect()
}

/// What `feed add` needs from an image file: its signed identity, its
/// size and its hashes.
struct ImageIdentity {
    compatible: String,
    version: String,
    rollback_index: u64,
    size: u64,
    sha256: String,
    header_sha256: String,
}

/// The image's identity from its header (not its signatures: the devices
/// verify those; `image verify` does it in CI), its size and SHA-256 and
/// its header's SHA-256, all from ONE read of the file: every value the
/// feed lists comes from the same bytes.
fn read_image_identity(path: &Path) -> anyhow::Result<ImageIdentity> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?;
    let mut r = crate::install::pin::Tee::hashing(std::io::BufReader::new(f));
    let img = image_format::ImageReader::new(&mut r)
        .and_then(|r| r.into_untrusted())
        .with_context(|| format!("image {}", path.display()))?;
    let h = img.header();
    let (compatible, version, rollback_index) = (
        h.compatible().to_string(),
        h.version().to_string(),
        h.rollback_index(),
    );
    let header_sha256 = sign::hex(&Sha256::digest(h.record_bytes()));
    drop(img);
    std::io::copy(&mut r, &mut std::io::sink())
        .with_context(|| format!("cannot read {}", path.display()))?;
    let (size, sha256) = r.finish();
    Ok(ImageIdentity {
        compatible,
        version,
        rollback_index,
        size,
        sha256: sign::hex(&sha256.expect("a hashing tee hashes")),
        header_sha256,
    })
}

/// The signing key: `--key FILE`, else the PEM text in SLOTCTL_SIGNING_KEY
/// (as for `image pack`). Never prints key material.
fn signing_key(file: Option<&Path>) -> anyhow::Result<image_format::SigningKey> {
    const ENV: &str = "SLOTCTL_SIGNING_KEY";
    if let Some(p) = file {
        return image_format::SigningKey::load_file(p).map_err(anyhow::Error::from);
    }
    match std::env::var(ENV) {
        Ok(pem) if !pem.trim().is_empty() => image_format::SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{ENV}: {e}")),
        _ => bail!("no signing key: give --key FILE or set {ENV} to the PEM text"),
    }
}

pub fn run(cmd: FeedCommand, globals: &Globals) -> anyhow::Result<()> {
    let FeedCommand::Feed(sub) = cmd;
    match sub {
        FeedSub::Init {
            file,
            compatible,
            force,
        } => {
            let mut d = FeedDoc::new(&compatible);
            if file.feed.exists() {
                if !force {
                    bail!(
                        "feed {} exists (--force replaces it, keeping its serial)",
                        file.feed.display()
                    );
                }
                if let Ok((_, old)) = read_envelope(&file.feed) {
                    d.serial = old.serial;
                }
            }
            d.validate()?;
            write_doc(&file.feed, &d, Vec::new())?;
            println!("created {} for {compatible}", file.feed.display());
        }
        FeedSub::Add {
            file,
            image,
            url,
            start,
            waves,
        } => {
            let (_, mut d) = read_envelope(&file.feed)?;
            // The whole image, as `image verify` reads it (exit 3 for trailing
            // bytes, a cut or an altered payload): a feed never names a file
            // that every device would refuse.
            crate::image_cmd::check_image_file(&image)?;
            let id = read_image_identity(&image)?;
            if id.compatible != d.compatible {
                return Err(crate::exit::refused(format!(
                    "image {} is for compatible {:?}, the feed for {:?}",
                    image.display(),
                    id.compatible,
                    d.compatible
                )));
            }
            if d.release(&id.version).is_some() {
                bail!("feed already lists version {}", id.version);
            }
            let start = match start.as_deref() {
                None | Some("now") => Timestamp::now(),
                Some(s) => Timestamp::parse(s)
                    .with_context(|| format!("--start {s:?}: expected YYYY-MM-DDTHH:MM:SSZ"))?,
            };
            let rollout = parse_waves(start, &waves)?;
            let size = id.size;
            d.releases.push(Release {
                version: id.version.clone(),
                rollback_index: id.rollback_index,
                url,
                size,
                sha256: id.sha256,
                header_sha256: id.header_sha256,
                rollout,
                pulled: None,
            });
            d.validate()?;
            write_doc(&file.feed, &d, Vec::new())?;
            println!(
                "added {} ({} bytes) to {}; sign it before uploading",
                id.version,
                size,
                file.feed.display()
            );
        }
        FeedSub::Pull { file, version } => {
            let (_, mut d) = read_envelope(&file.feed)?;
            let Some(r) = d.releases.iter_mut().find(|r| r.version == version) else {
                bail!("feed {} has no version {version}", file.feed.display());
            };
            if r.pulled.is_some() {
                bail!("version {version} is already pulled");
            }
            r.pulled = Some(Timestamp::now());
            write_doc(&file.feed, &d, Vec::new())?;
            println!(
                "pulled {version} from {}; sign and upload it to stop the rollout",
                file.feed.display()
            );
        }
        FeedSub::Sign {
            file,
            key,
            expires_in,
            renew,
        } => {
            let validity = parse_duration(&expires_in)
                .filter(|&v| v > 0)
                .with_context(|| format!("--expires-in {expires_in:?}: use e.g. 12h or 30d"))?;
            let key = signing_key(key.as_deref())?;
            let (mut env, mut d) = read_envelope(&file.feed)?;
            if renew {
                env.signatures.clear();
            }
            if env.signatures.is_empty() {
                d.serial = d
                    .serial
                    .checked_add(1)
                    .context("feed serial cannot grow further")?;
                d.expires = Timestamp::now().saturating_add(validity);
                env.signed = d.to_signed_text();
            }
            let id = sign::add_signature(&mut env, &key)?;
            write_envelope(&file.feed, &env)?;
            println!(
                "signed {} with key {id}: serial {}, expires {}",
                file.feed.display(),
                d.serial,
                d.expires
            );
        }
        FeedSub::Show { file, keyring } => {
            let (env, d) = read_envelope(&file.feed)?;
            let verified = match &keyring {
                Some(k) => {
                    let ring = FeedKeyring::load(k)?;
                    let bytes = doc::envelope_bytes(&env);
                    Some(verify(&bytes, &ring, 1)?)
                }
                None => None,
            };
            if globals.json {
                let v = serde_json::json!({
                    "feed": d,
                    "signatures": env.signatures,
                    "verified_by": verified.as_ref().map(|v| v.signed_by().to_vec()),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                // Every field of a feed may come from outside: escaped.
                let line = format!(
                    "feed {}: compatible {}, serial {}, expires {}",
                    file.feed.display(),
                    d.compatible,
                    d.serial,
                    d.expires
                );
                println!("{}", printable(&line));
                for s in &env.signatures {
                    println!("  signed by {}", printable(&s.keyid));
                }
                if let Some(v) = verified {
                    println!("  verified by {}", printable(&v.signed_by().join(", ")));
                }
                for r in &d.releases {
                    let waves: Vec<String> = r
                        .rollout
                        .iter()
                        .map(|w| format!("{}% from {}", w.percent, w.start))
                        .collect();
                    let line = format!(
                        "  {} (rollback index {}) {} {} bytes sha256 {} header_sha256 {}{}: {}",
                        r.version,
                        r.rollback_index,
                        r.url,
                        r.size,
                        r.sha256,
                        r.header_sha256,
                        r.pulled
                            .map(|t| format!(" PULLED at {t}"))
                            .unwrap_or_default(),
                        waves.join(", ")
                    );
                    println!("{}", printable(&line));
                }
            }
        }
    }
    Ok(())
}
