//! `slotctl disk init`: a fresh A/B disk image.
//!
//! Partitions are laid out A's roles first, then B's, then the shared ones,
//! each starting on a 1 MiB boundary. Type GUIDs: role `ROOT` is "Linux
//! root (x86-64)", everything else "Linux filesystem data". All flags are
//! zero: no slot is bootable until provisioning marks one good
//! (`slotctl set-flags A --priority 1 --successful 1`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use boot_flags::{FileDevice, Gpt, Guid, NewPartition};
use clap::Subcommand;
use serde::Deserialize;

use crate::cli::Globals;

const MIB: u64 = 1 << 20;

#[derive(Subcommand, Debug)]
pub enum DiskCommand {
    /// Create a fresh A/B disk image file (all flags zero).
    Init(InitArgs),
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The image file to create.
    pub path: PathBuf,
    /// Layout file (TOML: size, sector_size, [[role]] name/size[/type],
    /// [[shared]] name/size[/type]); the options below override it.
    #[arg(long, value_name = "FILE")]
    pub layout: Option<PathBuf>,
    /// Total image size, e.g. 64M [default: just large enough].
    #[arg(long)]
    pub size: Option<String>,
    /// A slot role and its size, e.g. ROOT=24M (repeat; A and B each get one).
    #[arg(long = "role", value_name = "NAME=SIZE")]
    pub roles: Vec<String>,
    /// Size of a shared partition named DATA.
    #[arg(long, value_name = "SIZE")]
    pub data: Option<String>,
    /// Logical sector size, 512 or 4096 [default: 512].
    #[arg(long)]
    pub sector_size: Option<u32>,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LayoutFile {
    size: Option<String>,
    sector_size: Option<u32>,
    #[serde(default)]
    role: Vec<PartSpec>,
    #[serde(default)]
    shared: Vec<PartSpec>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct PartSpec {
    name: String,
    size: String,
    #[serde(rename = "type")]
    type_guid: Option<String>,
}

/// Parse `24M`, `8MiB`, `512K`, `1G`, or plain bytes.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("size {s:?}: expected a number with an optional K/M/G suffix"))?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => bail!("size {s:?}: unknown unit {unit:?} (K, M or G)"),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| anyhow!("size {s:?} is out of range"))
}

fn check_name(name: &str, slot_role: bool) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 34
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        bail!("partition name {name:?}: use 1..=34 characters A-Z a-z 0-9 _ -");
    }
    if name.ends_with("-A") || name.ends_with("-B") {
        bail!(
            "{} name {name:?} must not end in -A or -B",
            if slot_role {
                "role"
            } else {
                "shared partition"
            }
        );
    }
    Ok(())
}

fn random_guid() -> anyhow::Result<Guid> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom")?;
    Ok(Guid::from_random_bytes(b))
}

/// The partitions to create and the image size, validated.
struct Plan {
    size: u64,
    sector_size: u32,
    parts: Vec<NewPartition>,
}

fn plan(args: &InitArgs) -> anyhow::Result<Plan> {
    let file = match &args.layout {
        Some(p) => {
            // A layout file is a few lines: bounded like the config.
            let text = crate::localfile::read_bounded_text(
                p,
                crate::localfile::Links::Follow,
                crate::config::MAX_CONFIG_BYTES,
            )
            .map_err(|e| anyhow!("layout {}: {e}", p.display()))?;
            toml::from_str::<LayoutFile>(&text).map_err(|e| {
                anyhow!("layout {}: {}", p.display(), e.message().replace('\n', " "))
            })?
        }
        None => LayoutFile::default(),
    };
    let sector_size = args.sector_size.or(file.sector_size).unwrap_or(512);
    if sector_size != 512 && sector_size != 4096 {
        bail!("sector size {sector_size}: expected 512 or 4096");
    }
    let mut roles = file.role.clone();
    if !args.roles.is_empty() {
        roles = args
            .roles
            .iter()
            .map(|r| {
                let (name, size) = r
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--role {r:?}: expected NAME=SIZE"))?;
                Ok(PartSpec {
                    name: name.to_string(),
                    size: size.to_string(),
                    type_guid: None,
                })
            })
            .collect::<anyhow::Result<_>>()?;
    }
    let mut shared = file.shared.clone();
    if let Some(d) = &args.data {
        shared.retain(|p| p.name != "DATA");
        shared.push(PartSpec {
            name: "DATA".into(),
            size: d.clone(),
            type_guid: None,
        });
    }
    if roles.is_empty() {
        bail!("no slot roles: give --role NAME=SIZE (e.g. --role ROOT=24M) or a layout file");
    }
    let mut names = std::collections::BTreeSet::new();
    let mut specs = Vec::new();
    for (slot, list) in [("-A", &roles), ("-B", &roles), ("", &shared)] {
        for spec in list {
            check_name(&spec.name, !slot.is_empty())?;
            let name = format!("{}{slot}", spec.name);
            if !names.insert(name.clone()) {
                bail!("partition name {name} appears twice");
            }
            let size = parse_size(&spec.size)?;
            if size % u64::from(sector_size) != 0 {
                bail!("{name}: size {size} is not a multiple of the {sector_size}-byte sector");
            }
            let type_guid = match &spec.type_guid {
                Some(t) => t.parse().map_err(|e| anyhow!("{name}: {e}"))?,
                None if spec.name == "ROOT" => Guid::LINUX_ROOT_X86_64,
                None => Guid::LINUX_DATA,
            };
            specs.push((name, size, type_guid));
        }
    }
    let ss = u64::from(sector_size);
    let mut at = MIB;
    let mut parts = Vec::new();
    for (name, size, type_guid) in specs {
        parts.push(NewPartition {
            name,
            type_guid,
            unique_guid: random_guid()?,
            first_lba: at / ss,
            last_lba: (at + size) / ss - 1,
            attributes: 0,
        });
        at = (at + size).div_ceil(MIB) * MIB;
    }
    // Room for the backup GPT after the last partition.
    let needed = at + MIB;
    let size = match args.size.as_deref().or(file.size.as_deref()) {
        Some(s) => {
            let size = parse_size(s)?;
            if size % ss != 0 {
                bail!("image size {size} is not a multiple of the {sector_size}-byte sector");
            }
            if size < needed {
                bail!("image size {size} is too small for the partitions: {needed} bytes needed");
            }
            size
        }
        None => needed,
    };
    Ok(Plan {
        size,
        sector_size,
        parts,
    })
}

fn create(path: &Path, plan: &Plan) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.set_len(plan.size)
        .with_context(|| format!("cannot size {}", path.display()))?;
    drop(file);
    let mut dev =
        FileDevice::open(path, true).with_context(|| format!("cannot open {}", path.display()))?;
    Gpt::create(&mut dev, plan.sector_size, random_guid()?, &plan.parts)
        .with_context(|| path.display().to_string())?;
    Ok(())
}

pub fn run(cmd: DiskCommand, globals: &Globals) -> anyhow::Result<()> {
    let DiskCommand::Init(args) = cmd;
    let plan = plan(&args)?;
    let path = &args.path;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.is_file() {
            bail!("{} exists and is not a regular file", path.display());
        }
        if !args.force {
            bail!("{} already exists (--force to overwrite)", path.display());
        }
    }
    if let Err(e) = create(path, &plan) {
        // Leave no half-made image behind.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    if globals.json {
        let parts: Vec<_> = plan
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| serde_json::json!({"index": i + 1, "name": p.name}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"disk": path.display().to_string(), "size": plan.size,
                "sector_size": plan.sector_size, "partitions": parts})
        );
    } else {
        let names: Vec<String> = plan
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}={}", p.name, i + 1))
            .collect();
        outln!(
            "created {} ({} bytes, {}-byte sectors): {}",
            path.display(),
            plan.size,
            plan.sector_size,
            names.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("8X").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }
}
