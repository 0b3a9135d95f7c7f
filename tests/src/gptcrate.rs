//! The `gpt` crate as one more independent GPT reader (issue 16), beside
//! cgpt, sfdisk and sgdisk: it re-reads a disk image and must agree with
//! `slotctl status --json` on every partition's bounds and name, and on the
//! flags partitions' priority (bits 48-51), tries (52-55) and successful (56).
//!
//! `status --json` shows neither the other attribute bits nor the GUIDs, so
//! [`crate::disk::assert_tools_agree`] compares those between this reader
//! and sfdisk (two readers that share no code with slotctl or each other).
//!
//! The image is opened read-only (`File::open`, and the crate's `writable`
//! off): this reader can never write to the disk it checks. The crate cannot
//! detect the sector size: the one `status --json` reports is passed to it.

use std::collections::BTreeMap;
use std::path::Path;

use gpt::disk::LogicalBlockSize;
use gpt::GptConfig;
use serde_json::Value;

/// One used partition entry as the `gpt` crate reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The partition name (UTF-16 in the entry, up to the first NUL).
    pub name: String,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    /// The whole 64-bit attribute word.
    pub attrs: u64,
    /// Partition type GUID, upper case (as sfdisk prints it).
    pub type_guid: String,
    /// Unique partition GUID, upper case.
    pub part_guid: String,
}

/// What the `gpt` crate reads from an image.
#[derive(Debug, Clone)]
pub struct Table {
    /// 512 or 4096.
    pub sector_size: u32,
    /// Whether the crate finds each header valid (signature, header CRC).
    pub primary_ok: bool,
    pub backup_ok: bool,
    /// Used entries by partition number (1-based entry index).
    pub entries: BTreeMap<u32, Entry>,
}

/// Read `path`'s GPT with the `gpt` crate, read-only, with the given
/// logical sector size (512 or 4096).
pub fn read(path: &Path, sector_size: u32) -> Result<Table, String> {
    let lb = LogicalBlockSize::try_from(u64::from(sector_size))
        .map_err(|e| format!("gpt crate: sector size {sector_size}: {e}"))?;
    // Read-only at the OS level: a write through this handle would fail.
    let file = std::fs::File::open(path)
        .map_err(|e| format!("gpt crate: open {}: {e}", path.display()))?;
    let disk = GptConfig::new()
        .writable(false)
        .logical_block_size(lb)
        .open_from_device(file)
        .map_err(|e| format!("gpt crate: read {}: {e}", path.display()))?;
    let entries = disk
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(&i, p)| {
            (
                i,
                Entry {
                    name: p.name.clone(),
                    first_lba: p.first_lba,
                    last_lba: p.last_lba,
                    attrs: p.flags,
                    type_guid: p.part_type_guid.guid.to_string().to_uppercase(),
                    part_guid: p.part_guid.to_string().to_uppercase(),
                },
            )
        })
        .collect();
    Ok(Table {
        sector_size,
        primary_ok: disk.primary_header().is_ok(),
        backup_ok: disk.backup_header().is_ok(),
        entries,
    })
}

/// (priority, tries, successful) from an attribute word: bits 48-51,
/// 52-55, 56.
pub fn flag_bits(attrs: u64) -> (u64, u64, bool) {
    (
        (attrs >> 48) & 0xf,
        (attrs >> 52) & 0xf,
        (attrs >> 56) & 1 == 1,
    )
}

/// Compare a table read by the crate with `status --json`: the sector size,
/// the validity of each header status calls "ok", every partition status
/// reports (slots' and shared; index, name, offset, size) and no other used
/// entry, and each slot's flags against its flags partition's attribute
/// bits. Returns every disagreement, one per line.
pub fn compare(st: &Value, t: &Table) -> Result<(), String> {
    let mut errs = Vec::new();
    if st["sector_size"].as_u64() != Some(u64::from(t.sector_size)) {
        errs.push(format!(
            "sector size: status {}, gpt crate read with {}",
            st["sector_size"], t.sector_size
        ));
    }
    for (which, ok) in [("primary", t.primary_ok), ("backup", t.backup_ok)] {
        if st["gpt"][which] == "ok" && !ok {
            errs.push(format!(
                "{which} header: status ok, gpt crate finds it invalid"
            ));
        }
    }
    let ss = u64::from(t.sector_size);
    let mut reported = Vec::new();
    let slot_parts = ["A", "B"].into_iter().flat_map(|s| {
        st["slots"][s]["partitions"]
            .as_array()
            .into_iter()
            .flatten()
    });
    let shared = st["shared"].as_array().into_iter().flatten();
    for p in slot_parts.chain(shared) {
        let Some(index) = p["index"].as_u64().and_then(|i| u32::try_from(i).ok()) else {
            errs.push(format!("status partition without an index: {p}"));
            continue;
        };
        reported.push(index);
        let name = p["name"].as_str().unwrap_or_default();
        let Some(e) = t.entries.get(&index) else {
            errs.push(format!(
                "partition {index} ({name}): in status, not a used entry for the gpt crate"
            ));
            continue;
        };
        if e.name != name {
            errs.push(format!(
                "partition {index}: name: status {name:?}, gpt crate {:?}",
                e.name
            ));
        }
        let offset = e.first_lba * ss;
        let size = (e.last_lba + 1).saturating_sub(e.first_lba) * ss;
        if p["offset"].as_u64() != Some(offset) {
            errs.push(format!(
                "partition {index} ({name}): offset: status {}, gpt crate {offset} (first LBA {})",
                p["offset"], e.first_lba
            ));
        }
        if p["size"].as_u64() != Some(size) {
            errs.push(format!(
                "partition {index} ({name}): size: status {}, gpt crate {size} (LBAs {}..={})",
                p["size"], e.first_lba, e.last_lba
            ));
        }
    }
    for (i, e) in &t.entries {
        if !reported.contains(i) {
            errs.push(format!(
                "partition {i} ({}): a used entry for the gpt crate, not in status",
                e.name
            ));
        }
    }
    for slot in ["A", "B"] {
        let s = &st["slots"][slot];
        let Some(idx) = s["flags_partition"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
        else {
            errs.push(format!("slot {slot}: status has no flags_partition"));
            continue;
        };
        let ours = (
            s["priority"].as_u64().unwrap_or(u64::MAX),
            s["tries"].as_u64().unwrap_or(u64::MAX),
            s["successful"].as_bool().unwrap_or_default(),
        );
        match t.entries.get(&idx) {
            None => errs.push(format!("slot {slot}: no flags partition {idx} in the gpt crate's table")),
            Some(e) if flag_bits(e.attrs) != ours => errs.push(format!(
                "slot {slot} (partition {idx}): (priority, tries, successful): status {ours:?}, gpt crate {:?} (attributes {:#018x})",
                flag_bits(e.attrs),
                e.attrs
            )),
            Some(_) => {}
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

/// Read `path` with the `gpt` crate (with the sector size status reports)
/// and panic on any disagreement with `st`; returns what the crate read.
pub fn assert_agrees(path: &Path, st: &Value) -> Table {
    let ss = st["sector_size"].as_u64().expect("status sector_size") as u32;
    let t = read(path, ss).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = compare(st, &t) {
        panic!(
            "the gpt crate disagrees with slotctl status on {}:\n{e}",
            path.display()
        );
    }
    t
}
