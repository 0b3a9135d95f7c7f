//! `slotctl image verify`, `image info` and `image extract`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use anyhow::{bail, Context};
use clap::Args;
use image_format::{
    Error, ImageReader, PayloadHasher, PayloadInfo, SignatureStatus, UntrustedHeader,
    VerifiedHeader,
};
use serde_json::json;

use super::{image_error, persist, temp_beside, TrustArgs};
use crate::cli::Globals;
use crate::exit;

/// Chunk handed from the reading thread to the hashing thread: large enough
/// that the per-chunk cost vanishes next to SHA-256, small enough to stay in L2.
const READ_CHUNK: usize = 256 * 1024;
/// Chunks in flight between the two threads.
const QUEUE: usize = 4;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The image (`-` for standard input).
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

fn open_image(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(f))
}

fn require_trust(trust: &TrustArgs) -> anyhow::Result<image_format::Keyring> {
    match trust.load()? {
        Some(ring) => Ok(ring),
        None => bail!("give the trusted keys: --keyring DIR or --pubkey FILE"),
    }
}

/// Read a payload (made by `next_payload_unhashed`) to its end, writing its
/// raw bytes to `out`, while a second thread hashes them: reading (and
/// decompressing) overlaps SHA-256, and each chunk is handed over without a
/// copy. The hash is checked before this returns `Ok`.
pub(super) fn drain<R: Read>(
    p: &mut image_format::PayloadReader<'_, R>,
    out: &mut dyn Write,
) -> image_format::Result<()> {
    let info = p.info().clone();
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<Vec<u8>>(QUEUE);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(QUEUE + 2);
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
            buf.resize(READ_CHUNK, 0);
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
                    std::io::Error::other("hashing thread ended"),
                ));
            }
        })();
        drop(full_tx);
        let hasher = hasher.join().expect("the hashing thread does not panic");
        read?;
        hasher.finish(&info)
    })
}

/// Fill `buf` as far as the payload goes; 0 only at its (checked) end.
fn read_full<R: Read>(
    p: &mut image_format::PayloadReader<'_, R>,
    buf: &mut [u8],
) -> image_format::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match p.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io(e)),
        }
    }
    Ok(filled)
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let ring = require_trust(&args.trust)?;
    let path = &args.image;
    let input = open_image(path)?;
    let run = || -> image_format::Result<VerifiedHeader> {
        let mut img = ImageReader::new(input)?.verify(&ring, args.trust.threshold)?;
        let mut sink = std::io::sink();
        while let Some(mut p) = img.next_payload_unhashed()? {
            drain(&mut p, &mut sink)?;
        }
        let header = img.header().clone();
        img.finish()?;
        Ok(header)
    };
    let header = run().map_err(|e| image_error(path, e))?;
    let signers: Vec<String> = header.verified_by().iter().map(|k| k.to_hex()).collect();
    println!(
        "{}: OK: {} {} (rollback index {}), signed by {}",
        path.display(),
        header.compatible(),
        header.version(),
        header.rollback_index(),
        signers.join(", ")
    );
    for p in header.payloads() {
        println!(
            "  {:<8} {} bytes, sha256 {} matches",
            p.role,
            p.raw_size,
            p.sha256_hex()
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Check the signatures against these keys (without: shown as not checked).
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The image (`-` for standard input); only its header is read.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

fn payload_json(p: &PayloadInfo) -> serde_json::Value {
    json!({
        "role": p.role,
        "compression": p.compression.name(),
        "raw_size": p.raw_size,
        "stored_size": p.stored_size,
        "sha256": p.sha256_hex(),
        "offset": p.offset,
    })
}

pub fn info(args: &InfoArgs, globals: &Globals) -> anyhow::Result<()> {
    let path = &args.image;
    let ring = args.trust.load()?;
    let reader = ImageReader::new(open_image(path)?).map_err(|e| image_error(path, e))?;
    let statuses: Vec<(String, &str)> = match &ring {
        Some(ring) => reader
            .signature_status(ring)
            .into_iter()
            .map(|(e, s)| {
                let s = match s {
                    SignatureStatus::Valid => "valid",
                    SignatureStatus::Invalid => "INVALID",
                    SignatureStatus::UnknownKey => "unknown key",
                };
                (e.key_id.to_hex(), s)
            })
            .collect(),
        None => reader
            .signatures()
            .iter()
            .map(|e| (e.key_id.to_hex(), "not checked"))
            .collect(),
    };
    // The fields come from the verified header when the keys verify it;
    // otherwise from an explicitly untrusted parse, and are labelled so.
    let (verified, why) = match &ring {
        None => (false, "no --keyring/--pubkey given".to_owned()),
        Some(ring) => {
            let record = reader_record(&reader);
            match VerifiedHeader::from_record_bytes(ring, args.trust.threshold, &record) {
                Ok(_) => (true, String::new()),
                Err(e) => (false, e.to_string()),
            }
        }
    };
    let header_len = reader.header_bytes().len();
    let block_len = reader.signature_block_bytes().len();
    let room = image_format::signature_room(block_len as u32);
    let h: UntrustedHeader = reader
        .into_untrusted()
        .map_err(|e| image_error(path, e))?
        .header()
        .clone();

    if globals.json {
        let v = json!({
            "image": path.display().to_string(),
            "verified": verified,
            "not_verified_because": if verified { None } else { Some(why) },
            "format_version": h.format_version(),
            "compatible": h.compatible(),
            "version": h.version().to_string(),
            "rollback_index": h.rollback_index(),
            "created": h.created(),
            "header_len": header_len,
            "signature_block_len": block_len,
            "signature_room": room,
            "image_len": h.image_len(),
            "payloads": h.payloads().iter().map(payload_json).collect::<Vec<_>>(),
            "signatures": statuses.iter().map(|(id, s)| json!({"key_id": id, "status": s})).collect::<Vec<_>>(),
            "ignored_fields": h.ignored_fields().iter().map(|(t, o, l)| json!({"tag": t, "offset": o, "len": l})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if verified {
        println!("{}: header verified", path.display());
    } else {
        println!(
            "{}: header NOT VERIFIED ({why}); fields below are untrusted",
            path.display()
        );
    }
    println!("  format version  {}", h.format_version());
    println!("  compatible      {}", h.compatible());
    println!("  version         {}", h.version());
    println!("  rollback index  {}", h.rollback_index());
    println!("  created         {}", h.created());
    println!("  header          {header_len} bytes");
    println!("  signature block {block_len} bytes (room for {room})");
    println!("  image length    {}", h.image_len());
    for p in h.payloads() {
        println!(
            "  payload {:<8} {:<4} raw {} stored {} at {} sha256 {}",
            p.role,
            p.compression.name(),
            p.raw_size,
            p.stored_size,
            p.offset,
            p.sha256_hex()
        );
    }
    for (tag, off, len) in h.ignored_fields() {
        println!("  ignored optional field {tag:#06x} at byte {off} ({len} bytes)");
    }
    for (i, (id, s)) in statuses.iter().enumerate() {
        println!("  signature {i}: key {id}: {s}");
    }
    println!("  (payload hashes are not checked by info; use `slotctl image verify`)");
    Ok(())
}

fn reader_record<R: Read>(r: &ImageReader<R>) -> Vec<u8> {
    let mut v = r.header_bytes().to_vec();
    v.extend_from_slice(r.signature_block_bytes());
    v
}

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// The role of the payload to extract.
    #[arg(value_name = "ROLE")]
    pub role: String,
    /// Where to write its raw bytes (only once they matched the hash).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Extract without checking any signature (the payload hash is still
    /// checked against the unverified header).
    #[arg(long, conflicts_with_all = ["keyring", "pubkey"])]
    pub no_verify_signature: bool,
    /// The image (`-` for standard input).
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

pub fn extract(args: &ExtractArgs) -> anyhow::Result<()> {
    let path = &args.image;
    let ring = if args.no_verify_signature {
        None
    } else {
        Some(
            require_trust(&args.trust)
                .context("extract checks the signature (or pass --no-verify-signature)")?,
        )
    };
    let tmp = temp_beside(&args.output)?;
    let mut out = std::io::BufWriter::new(tmp.reopen()?);
    let input = open_image(path)?;
    let role = args.role.as_str();
    macro_rules! walk {
        ($img:expr) => {{
            let mut img = $img;
            let roles: Vec<String> = img
                .header()
                .payloads()
                .iter()
                .map(|p| p.role.clone())
                .collect();
            if !roles.iter().any(|r| r == role) {
                return Err(exit::refused(format!(
                    "{}: no payload with role {role} (roles: {})",
                    path.display(),
                    roles.join(", ")
                )));
            }
            loop {
                let Some(mut p) = img
                    .next_payload_unhashed()
                    .map_err(|e| image_error(path, e))?
                else {
                    break;
                };
                if p.info().role == role {
                    drain(&mut p, &mut out).map_err(|e| image_error(path, e))?;
                    break;
                }
                drain(&mut p, &mut std::io::sink()).map_err(|e| image_error(path, e))?;
            }
        }};
    }
    let reader = ImageReader::new(input).map_err(|e| image_error(path, e))?;
    match &ring {
        Some(ring) => walk!(reader
            .verify(ring, args.trust.threshold)
            .map_err(|e| image_error(path, e))?),
        None => {
            eprintln!("slotctl: warning: signature not checked (--no-verify-signature)");
            walk!(reader.into_untrusted().map_err(|e| image_error(path, e))?)
        }
    }
    out.into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", args.output.display(), e.error()))?;
    persist(tmp, &args.output)?;
    println!("extracted {role} to {}", args.output.display());
    Ok(())
}
