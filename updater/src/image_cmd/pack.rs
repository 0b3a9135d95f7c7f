//! `slotctl image pack` and `slotctl image sign`.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Seek, SeekFrom};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use image_format::{
    ChunkOptions, Compression, Error, PackPart, PackSpec, SigningKey, ZstdOptions,
    DEFAULT_SIGNATURE_ROOM,
};

use super::keys::signing_keys;
use super::{image_error, persist, temp_beside};

const IO_BUFFER: usize = 1 << 20;

#[derive(Args, Debug)]
pub struct PackArgs {
    /// Signing key (PKCS#8 PEM); repeat for several signers. Default: the
    /// PEM text in the SLOTCTL_SIGNING_KEY environment variable.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// Release version (semantic version, e.g. 1.4.0).
    #[arg(long, value_name = "SEMVER")]
    pub version: String,
    /// Device family the image is for; a device installs only its own.
    #[arg(long, value_name = "STRING")]
    pub compatible: String,
    /// Anti-rollback index; devices refuse an image below their booted one.
    #[arg(long, value_name = "N")]
    pub rollback_index: u64,
    /// A payload: its slot role and file, optionally its own compression
    /// (ROOT=root.img, BOOT:none=boot.img, ROOT:chunked=root.img). Order =
    /// stream order.
    #[arg(long = "part", value_name = "ROLE[:COMPRESSION]=FILE", required = true)]
    pub parts: Vec<String>,
    /// Output image (written to a temporary file, then renamed).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// Compression of parts that do not name their own.
    #[arg(long, value_name = "none|zstd|chunked", default_value = "zstd")]
    pub compression: String,
    /// zstd level (1..=19); for chunked parts, the level of each block's frame.
    #[arg(long, value_name = "LEVEL", default_value_t = 3)]
    pub zstd_level: i32,
    /// zstd worker threads [default: number of CPUs; 0: none]: zstd parts
    /// compress their 1 MiB frames (with 1: on the main thread too), chunked
    /// parts their blocks, on this many threads.
    #[arg(long, value_name = "N")]
    pub zstd_workers: Option<u32>,
    /// No longer used: zstd parts are written as independent frames of
    /// 1 MiB raw bytes each, whatever this is. Accepted so that existing
    /// command lines still work.
    #[arg(long, value_name = "BYTES", default_value_t = image_format::DEFAULT_ZSTD_JOB_SIZE)]
    pub zstd_job_size: u32,
    /// Chunked parts: raw bytes per block, a power of two in 4096..=1048576
    /// [default: the smallest that keeps a part within 262144 blocks].
    #[arg(long, value_name = "BYTES")]
    pub chunk_block_size: Option<u32>,
    /// Chunked parts: blocks per group, the unit of authentication (1..=256).
    #[arg(long, value_name = "N", default_value_t = image_format::DEFAULT_GROUP_BLOCKS)]
    pub chunk_group_blocks: u32,
    /// Chunked parts: bytes of zstd dictionary trained on the first 16 MiB of
    /// each part (0: none; at most 1048576).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub chunk_dict_size: u32,
    /// Append a dm-verity hash tree to this role's payload (repeatable; ROLE
    /// must be a --part role): the partition gets the data, zero padding to
    /// 4096 bytes, then the tree, and the signed header its root hash.
    #[arg(long = "verity", value_name = "ROLE")]
    pub verity: Vec<String>,
    /// Salt of every dm-verity tree, as hex (at most 64 bytes; `-`: none)
    /// [default: 32 random bytes per role, as veritysetup draws].
    #[arg(long, value_name = "HEX", requires = "verity")]
    pub verity_salt: Option<String>,
    /// Signature entries to reserve, so `image sign` can add in place.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SIGNATURE_ROOM)]
    pub signature_room: usize,
    /// Creation time, seconds since the epoch [default: $SOURCE_DATE_EPOCH, else now].
    #[arg(long, value_name = "SECONDS")]
    pub created: Option<u64>,
}

struct PartArg {
    role: String,
    compression: Compression,
    file: PathBuf,
}

fn parse_part(s: &str, default: Compression) -> anyhow::Result<PartArg> {
    let Some((lhs, file)) = s.split_once('=') else {
        bail!("--part `{s}`: expected ROLE[:COMPRESSION]=FILE");
    };
    let (role, compression) = match lhs.split_once(':') {
        Some((role, c)) => (role, c.parse::<Compression>()?),
        None => (lhs, default),
    };
    if !image_format::valid_role(role) {
        bail!(
            "--part `{s}`: role `{role}` must be 1..={} characters of A-Z a-z 0-9 _",
            image_format::MAX_ROLE_LEN
        );
    }
    if file.is_empty() {
        bail!("--part `{s}`: no file");
    }
    Ok(PartArg {
        role: role.to_owned(),
        compression,
        file: PathBuf::from(file),
    })
}

/// The salt of each `--verity` role, in the order of `parts`.
fn verity_salts(args: &PackArgs, parts: &[PartArg]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
    for (i, role) in args.verity.iter().enumerate() {
        if !parts.iter().any(|p| &p.role == role) {
            let roles: Vec<&str> = parts.iter().map(|p| p.role.as_str()).collect();
            bail!(
                "--verity {role}: no --part with role {role} (parts: {})",
                roles.join(", ")
            );
        }
        if args.verity[..i].contains(role) {
            bail!("--verity {role} is given twice");
        }
    }
    let fixed = match args.verity_salt.as_deref() {
        None => None,
        Some("-") => Some(Vec::new()),
        Some(s) => {
            let salt = s
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
                .then(|| crate::feed::sign::unhex(s))
                .flatten()
                .filter(|v| !v.is_empty())
                .with_context(|| {
                    format!(
                        "--verity-salt `{s}` is not hex (an even number of 0-9 a-f digits, or `-`)"
                    )
                })?;
            if salt.len() > image_format::MAX_VERITY_SALT_LEN {
                bail!(
                    "--verity-salt: {} bytes, at most {}",
                    salt.len(),
                    image_format::MAX_VERITY_SALT_LEN
                );
            }
            Some(salt)
        }
    };
    parts
        .iter()
        .map(|p| {
            if !args.verity.contains(&p.role) {
                return Ok(None);
            }
            match &fixed {
                Some(salt) => Ok(Some(salt.clone())),
                None => Ok(Some(image_format::random_salt()?)),
            }
        })
        .collect()
}

fn created(arg: Option<u64>) -> anyhow::Result<u64> {
    if let Some(t) = arg {
        return Ok(t);
    }
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        return s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH `{s}` is not a number of seconds"));
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

pub fn pack(args: &PackArgs) -> anyhow::Result<()> {
    let default: Compression = args.compression.parse()?;
    let version = image_format::semver::Version::parse(&args.version).map_err(|e| {
        anyhow::anyhow!(
            "--version `{}` is not a semantic version: {e}",
            args.version
        )
    })?;
    let parts = args
        .parts
        .iter()
        .map(|s| parse_part(s, default))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let salts = verity_salts(args, &parts)?;
    let keys = signing_keys(&args.keys)?;
    let signers: Vec<&SigningKey> = keys.iter().collect();

    let mut spec = PackSpec::new(
        &args.compatible,
        version,
        args.rollback_index,
        created(args.created)?,
    );
    spec.signature_room = args.signature_room;
    spec.zstd = ZstdOptions {
        level: args.zstd_level,
        workers: args.zstd_workers.unwrap_or(ZstdOptions::default().workers),
        job_size: args.zstd_job_size,
    };
    spec.chunk = ChunkOptions {
        block_size: args.chunk_block_size.unwrap_or(0),
        group_blocks: args.chunk_group_blocks,
        dict_size: args.chunk_dict_size,
        // Spool the frames beside the output, not in a possibly small /tmp.
        temp_dir: Some(
            args.output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from),
        ),
    };
    let mut sources = Vec::with_capacity(parts.len());
    for (p, salt) in parts.iter().zip(salts) {
        let f =
            File::open(&p.file).with_context(|| format!("opening part {}", p.file.display()))?;
        // The automatic chunk block size needs the part's length: a file's
        // size, or a block device's (seek to its end and back).
        let size_hint = match f.metadata() {
            Ok(m) if m.is_file() => Some(m.len()),
            _ => (&f)
                .seek(SeekFrom::End(0))
                .ok()
                .filter(|_| (&f).seek(SeekFrom::Start(0)).is_ok()),
        };
        sources.push(PackPart {
            role: p.role.clone(),
            compression: p.compression,
            source: Box::new(f),
            size_hint,
            verity: salt,
        });
    }

    let tmp = temp_beside(&args.output)?;
    let mut out = BufWriter::with_capacity(IO_BUFFER, tmp.reopen()?);
    let infos = image_format::pack(&mut out, &spec, sources, &signers)
        .map_err(|e| anyhow::anyhow!("packing {}: {e}", args.output.display()))?;
    out.into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", args.output.display(), e.error()))?;
    persist(tmp, &args.output)?;

    let total = infos.last().map_or(0, |p| p.offset + p.stored_size);
    println!("packed {} ({total} bytes)", args.output.display());
    for p in &infos {
        println!(
            "  {:<8} {:<4} raw {} stored {} sha256 {}",
            p.role,
            p.compression.name(),
            p.raw_size,
            p.stored_size,
            p.sha256_hex()
        );
        if let Some(v) = &p.verity {
            println!(
                "  {:<8} verity data blocks {} hash start {} root {} salt {}",
                p.role,
                v.data_blocks,
                v.hash_start_block,
                v.root_hex(),
                v.salt_hex()
            );
        }
    }
    for k in &keys {
        println!("  signed by key {}", k.key_id());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// Signing key (PKCS#8 PEM); repeat for several. Default: SLOTCTL_SIGNING_KEY.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// Always write a new copy and rename it over IMAGE (atomic, costs a
    /// full copy), instead of rewriting the signature block in place.
    #[arg(long)]
    pub copy: bool,
    /// The image to sign; rewritten in place (signature block only) when its
    /// reserved room allows, else copied with a larger block and renamed.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

pub fn sign(args: &SignArgs) -> anyhow::Result<()> {
    let keys = signing_keys(&args.keys)?;
    let path = &args.image;
    // Sign only what is consistent: the header parses and every payload
    // matches its declared size and hash.
    super::check_image_file(path)?;

    for key in &keys {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {} for writing", path.display()))?;
        let in_place = if args.copy {
            Err(Error::NoSignatureRoom { count: 0, room: 0 })
        } else {
            image_format::sign_in_place(&mut f, key)
        };
        match in_place {
            Ok(()) => {
                f.sync_all()
                    .with_context(|| format!("syncing {}", path.display()))?;
                println!(
                    "signed {} with key {} (in place)",
                    path.display(),
                    key.key_id()
                );
            }
            Err(Error::NoSignatureRoom { .. }) => {
                let tmp = temp_beside(path)?;
                let mut out = BufWriter::with_capacity(IO_BUFFER, tmp.reopen()?);
                let src = BufReader::with_capacity(IO_BUFFER, File::open(path)?);
                image_format::sign_copy(src, &mut out, key).map_err(|e| image_error(path, e))?;
                out.into_inner()
                    .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.error()))?;
                persist(tmp, path)?;
                println!(
                    "signed {} with key {} (copied, with room for more signatures)",
                    path.display(),
                    key.key_id()
                );
            }
            Err(e) => return Err(image_error(path, e)),
        }
    }
    Ok(())
}
