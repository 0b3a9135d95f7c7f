//! `slotctl image verify`, `image info` and `image extract`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use image_format::{
    ChunkTable, ImageReader, PayloadInfo, SignatureStatus, UntrustedHeader, VerifiedHeader,
    VerityCheck,
};
use serde_json::json;

use super::{image_error, persist, temp_beside, TrustArgs};
use crate::cli::Globals;
use crate::exit;
use crate::term::printable;

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

pub fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let ring = require_trust(&args.trust)?;
    let path = &args.image;
    let input = open_image(path)?;
    // Each payload's bytes go to a sink, or with a dm-verity tree to a
    // checker that rebuilds the tree from the data (image-format's
    // verity_check.rs): its verdict per payload, in header order.
    let mut trees: Vec<Result<(), String>> = Vec::new();
    let run = || -> image_format::Result<VerifiedHeader> {
        let mut img = ImageReader::new(input)?.verify(&ring, args.trust.threshold)?;
        let header = img.header().clone();
        for p in header.payloads() {
            match &p.verity {
                Some(info) => {
                    let mut check = VerityCheck::new(info)?;
                    img.copy_next_payload(&mut check)?;
                    trees.push(check.finish());
                }
                None => {
                    img.copy_next_payload(&mut std::io::sink())?;
                    trees.push(Ok(()));
                }
            }
        }
        img.finish()?;
        Ok(header)
    };
    let header = run().map_err(|e| image_error(path, e))?;
    for (p, t) in header.payloads().iter().zip(&trees) {
        if let Err(why) = t {
            return Err(exit::refused(format!(
                "{}: payload {}: its dm-verity tree does not match its data: {why}",
                path.display(),
                p.role
            )));
        }
    }
    let signers: Vec<String> = header.verified_by().iter().map(|k| k.to_hex()).collect();
    // The image's strings (and its file name) are escaped: crate::term.
    let line = format!(
        "{}: OK: {} {} (rollback index {}), signed by {}",
        path.display(),
        header.compatible(),
        header.version(),
        header.rollback_index(),
        signers.join(", ")
    );
    println!("{}", printable(&line));
    for p in header.payloads() {
        let line = format!(
            "  {:<8} {} bytes, sha256 {} matches",
            p.role,
            p.raw_size,
            p.sha256_hex()
        );
        println!("{}", printable(&line));
        if let Some(v) = &p.verity {
            let line = format!(
                "           dm-verity tree over {} blocks rebuilt from the data: root {} matches",
                v.data_blocks,
                v.root_hex()
            );
            println!("{}", printable(&line));
        }
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

fn payload_json(p: &PayloadInfo, table: Option<&ChunkTable>) -> serde_json::Value {
    let mut v = json!({
        "role": p.role,
        "compression": p.compression.name(),
        "raw_size": p.raw_size,
        "stored_size": p.stored_size,
        "sha256": p.sha256_hex(),
        "offset": p.offset,
    });
    if p.chunked.is_some() {
        v["chunked"] = super::chunks::stats_json(p, table);
    }
    if let Some(t) = &p.verity {
        v["verity"] = json!({
            "hash_type": t.hash_type,
            "data_blocks": t.data_blocks,
            "hash_start_block": t.hash_start_block,
            "data_block_size": t.data_block_size,
            "hash_block_size": t.hash_block_size,
            "hash_algorithm": t.hash_algorithm,
            "salt": t.salt_hex(),
            "root_hash": t.root_hex(),
            "data_sectors": t.data_sectors(),
        });
    }
    v
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
    let img = reader.into_untrusted().map_err(|e| image_error(path, e))?;
    let h: UntrustedHeader = img.header().clone();
    // The chunk tables (info reads them for the statistics) need the bytes
    // to be there.
    let (tables, input_len) = if path.as_os_str() == "-" {
        super::chunks::tables_from_stream(img.into_inner(), h.payloads_offset(), h.payloads())?
    } else {
        let input_len = input_len(path, img.into_inner(), h.payloads_offset())?;
        let tables = match length_mismatch(&h, input_len) {
            None => super::chunks::tables_from_file(path, h.payloads())?,
            Some(_) => h.payloads().iter().map(|_| None).collect(),
        };
        (tables, input_len)
    };
    let length_error = length_mismatch(&h, input_len);
    // A table that does not match its header: the same line verify gives.
    let table_error = tables
        .iter()
        .flatten()
        .find_map(|t| t.as_ref().err())
        .map(|e| exit::refused(format!("{}: {e}", path.display())));
    let result = match (length_error, table_error) {
        (Some(e), _) => Err(image_error(path, e)),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(()),
    };

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
            "input_len": input_len,
            "payloads": h.payloads().iter().zip(&tables).map(|(p, t)| payload_json(p, t.as_ref().and_then(|t| t.as_ref().ok()))).collect::<Vec<_>>(),
            "signatures": statuses.iter().map(|(id, s)| json!({"key_id": id, "status": s})).collect::<Vec<_>>(),
            "ignored_fields": h.ignored_fields().iter().map(|(t, o, l)| json!({"tag": t, "offset": o, "len": l})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return result;
    }
    // Every string below may come from an untrusted image: escaped
    // (crate::term).
    let name = path.display().to_string();
    let name = printable(&name);
    if verified {
        println!("{name}: header verified");
    } else {
        println!(
            "{name}: header NOT VERIFIED ({}); fields below are untrusted",
            printable(&why)
        );
    }
    println!("  format version  {}", h.format_version());
    println!("  compatible      {}", printable(h.compatible()));
    println!("  version         {}", printable(&h.version().to_string()));
    println!("  rollback index  {}", h.rollback_index());
    println!(
        "  created         {} ({})",
        crate::feed::time::Timestamp(h.created()),
        h.created()
    );
    println!("  header          {header_len} bytes");
    println!("  signature block {block_len} bytes (room for {room})");
    println!("  image length    {}", h.image_len());
    for (p, t) in h.payloads().iter().zip(&tables) {
        println!(
            "  payload {:<8} {:<4} raw {} stored {} at {} sha256 {}",
            printable(&p.role),
            p.compression.name(),
            p.raw_size,
            p.stored_size,
            p.offset,
            p.sha256_hex()
        );
        if p.chunked.is_some() {
            let line = super::chunks::stats_line(p, t.as_ref());
            println!("    chunked: {}", printable(&line));
        }
        if let Some(v) = &p.verity {
            println!(
                "    verity: format {} {} blocks {}/{} data blocks {} hash start block {} salt {} root {}",
                v.hash_type,
                v.hash_algorithm,
                v.data_block_size,
                v.hash_block_size,
                v.data_blocks,
                v.hash_start_block,
                v.salt_hex(),
                v.root_hex()
            );
        }
    }
    for (tag, off, len) in h.ignored_fields() {
        println!("  ignored optional field {tag:#06x} at byte {off} ({len} bytes)");
    }
    for (i, (id, s)) in statuses.iter().enumerate() {
        println!("  signature {i}: key {id}: {s}");
    }
    println!("  input length    {input_len}");
    println!("  (payload hashes are not checked by info; use `slotctl image verify`)");
    result
}

/// The length of the whole input: a file's size, or for standard input
/// what is left after the header and signature block (`consumed` bytes),
/// read to its end and counted.
fn input_len(path: &Path, mut rest: Box<dyn Read>, consumed: u64) -> anyhow::Result<u64> {
    if path.as_os_str() != "-" {
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        if meta.is_file() {
            return Ok(meta.len());
        }
    }
    let n = std::io::copy(&mut rest, &mut std::io::sink())
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(consumed + n)
}

/// Info reads no payload, but the input must be exactly as long as the
/// header declares, as `image verify`, `extract`, `install` and `feed add`
/// require: the same error they give for trailing bytes or a cut image.
fn length_mismatch(h: &UntrustedHeader, input_len: u64) -> Option<image_format::Error> {
    let end = h.image_len();
    if input_len > end {
        return Some(image_format::Error::TrailingData { offset: end });
    }
    let p = h
        .payloads()
        .iter()
        .find(|p| input_len < p.offset + p.stored_size)?;
    Some(image_format::Error::PayloadTruncated {
        role: p.role.clone(),
        offset: input_len,
    })
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
    // Every payload is read and checked, and the image must end with its
    // last one: extract writes nothing from an image that `image verify`
    // (and install) would refuse, trailing bytes and a later truncated or
    // altered payload included.
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
            let mut written = false;
            for r in roles {
                let dest: &mut dyn std::io::Write = if r == role && !written {
                    written = true;
                    &mut out
                } else {
                    &mut std::io::sink()
                };
                img.copy_next_payload(dest)
                    .map_err(|e| image_error(path, e))?;
            }
            img.finish().map_err(|e| image_error(path, e))?;
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
