//! `slotctl status`: a human table, or JSON with `--json`.

use boot_flags::{BootState, GptCopy, SlotId};
use serde_json::{json, Value};

use crate::config::Config;
use crate::device::{self, BootedSource, Opened};
use crate::install::roles;
use crate::term::printable;

/// Each slot's record, read once (unverified: status needs no keyring): what
/// it says the slot holds, as `installed` JSON, and how it covers the slot's
/// roles.
fn records(o: &mut Opened, cfg: &Config) -> Vec<(Value, Result<roles::Coverage, String>)> {
    SlotId::ALL
        .iter()
        .map(|&id| {
            let held = crate::install::policy::installed(&mut o.disk, id);
            let coverage = roles::record_coverage(o.disk.layout().slot(id), &held, cfg);
            (crate::install::verify::installed_json(&held), coverage)
        })
        .collect()
}

/// Each slot's boot state (boot-flags `bootstate`): `Ok(None)` when its
/// flags partition is too small to have one.
fn boot_states(o: &mut Opened) -> Vec<Result<Option<BootState>, String>> {
    SlotId::ALL
        .iter()
        .map(|&id| o.disk.boot_state(id).map_err(|e| e.to_string()))
        .collect()
}

fn boot_state_json(s: &Result<Option<BootState>, String>) -> Value {
    match s {
        Ok(Some(s)) => json!({"unchecked_boots": s.unchecked_boots, "given_up": s.given_up}),
        Ok(None) => Value::Null,
        Err(e) => json!({ "error": e }),
    }
}

/// The human line of a slot's boot state; None when there is nothing to
/// say (no boot counted, not given up).
fn boot_state_text(s: &Result<Option<BootState>, String>) -> Option<String> {
    match s {
        Ok(Some(s)) => {
            let mut t = match s.unchecked_boots {
                0 => String::new(),
                1 => "1 boot that has not reached boot-check (yet)".into(),
                n => format!("{n} boots in a row did not reach boot-check"),
            };
            if let Some(why) = &s.given_up {
                if !t.is_empty() {
                    t.push_str("; ");
                }
                t.push_str(&format!("given up: {}", printable(why)));
            }
            (!t.is_empty()).then_some(t)
        }
        Ok(None) => Some("no boot counter (flags partition under 128 KiB)".into()),
        Err(e) => Some(format!("boot state unreadable ({})", printable(e))),
    }
}

/// The status as JSON (also the `--json` output of the flag commands).
pub fn to_json(o: &mut Opened, cfg: &Config) -> Value {
    let (installed, coverage): (Vec<Value>, Vec<Value>) = records(o, cfg)
        .into_iter()
        .map(|(installed, coverage)| {
            let coverage = match coverage {
                Ok(c) => c.to_json(),
                Err(e) => json!({ "error": e }),
            };
            (installed, coverage)
        })
        .unzip();
    let boot = boot_states(o);
    let disk = &o.disk;
    let gpt = disk.gpt();
    let flags = disk.slot_flags();
    let mut slots = serde_json::Map::new();
    for id in SlotId::ALL {
        let slot = disk.layout().slot(id);
        let f = flags.get(id);
        let parts: Vec<Value> = slot
            .partitions
            .iter()
            .map(|p| {
                let node = o.is_block.then(|| {
                    device::partition_node(&o.path, p.index)
                        .display()
                        .to_string()
                });
                json!({
                    "role": p.role,
                    "index": p.index,
                    "name": p.name,
                    "offset": p.offset,
                    "size": p.size,
                    "device": node,
                })
            })
            .collect();
        slots.insert(
            id.to_string(),
            json!({
                "priority": f.priority.get(),
                "tries": f.tries.get(),
                "successful": f.successful,
                "bootable": f.bootable(),
                "flags_partition": slot.flags_index,
                "partitions": parts,
                "installed": installed[id as usize],
                "coverage": coverage[id as usize],
                "boot_state": boot_state_json(&boot[id as usize]),
            }),
        );
    }
    let shared: Vec<Value> = disk
        .layout()
        .shared
        .iter()
        .map(|p| {
            let (offset, size) = gpt.byte_range(p);
            json!({"index": p.index, "name": p.name, "offset": offset, "size": size})
        })
        .collect();
    json!({
        "disk": o.path.display().to_string(),
        "sector_size": gpt.sector_size(),
        "gpt": {
            "primary": gpt.health(GptCopy::Primary).to_string(),
            "backup": gpt.health(GptCopy::Backup).to_string(),
        },
        "booted": disk.booted().map(|s| s.to_string()),
        "booted_source": match o.booted_source {
            BootedSource::Option => "option",
            BootedSource::Detected => "detected",
            BootedSource::Unknown => "unknown",
        },
        "next": disk.next_boot().map(|s| s.to_string()),
        "slots": slots,
        "shared": shared,
        "failed_versions": match crate::agent::failed_versions(&cfg.state_dir) {
            Ok(list) => json!(list
                .iter()
                .map(|f| json!({"version": f.version, "at": f.at.to_string(), "reason": f.reason}))
                .collect::<Vec<_>>()),
            Err(e) => json!({ "error": e.to_string() }),
        },
    })
}

/// The "installed" column: `2.0.0 (rb 5)`, `-` without a record.
fn installed_text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        v => match (v["version"].as_str(), v["rollback_index"].as_u64()) {
            (Some(ver), Some(rb)) => format!("{} (rb {rb})", printable(ver)),
            _ => "corrupt record".into(),
        },
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Print the status.
pub fn print(o: &mut Opened, as_json: bool, cfg: &Config) -> anyhow::Result<()> {
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&to_json(o, cfg))?);
        return Ok(());
    }
    let (installed, coverage): (Vec<String>, Vec<String>) = records(o, cfg)
        .into_iter()
        .map(|(installed, coverage)| {
            let coverage = match coverage {
                Ok(c) => c.describe("record covers"),
                Err(e) => format!("record unreadable ({e})"),
            };
            (installed_text(&installed), coverage)
        })
        .unzip();
    let boot = boot_states(o);
    let disk = &o.disk;
    let gpt = disk.gpt();
    let flags = disk.slot_flags();
    let mut s = String::new();
    s.push_str(&format!(
        "disk:      {} ({}-byte sectors, {} bytes)\n",
        o.path.display(),
        gpt.sector_size(),
        gpt.disk_len()
    ));
    s.push_str(&format!(
        "gpt:       primary {}, backup {}\n",
        gpt.health(GptCopy::Primary),
        gpt.health(GptCopy::Backup)
    ));
    s.push_str(&format!(
        "booted:    {}\n",
        match (disk.booted(), o.booted_source) {
            (Some(b), BootedSource::Option) => format!("{b} (--booted)"),
            (Some(b), _) => format!("{b}"),
            (None, _) => "unknown (not booted from this disk; --booted A|B to say)".into(),
        }
    ));
    let next = match disk.next_boot() {
        Some(n) => n.to_string(),
        None => {
            let c = boot_flags::state::boot_select(flags);
            format!("none bootable (boot-select would fall back to {})", c.slot)
        }
    };
    s.push_str(&format!("next boot: {next}\n\n"));
    s.push_str(
        "slot  priority  tries  successful  bootable  installed           partitions (* = flags)\n",
    );
    for id in SlotId::ALL {
        let f = flags.get(id);
        let slot = disk.layout().slot(id);
        let parts: Vec<String> = slot
            .partitions
            .iter()
            .map(|p| {
                let star = if p.index == slot.flags_index { "*" } else { "" };
                format!("{}={}{star}", p.name, p.index)
            })
            .collect();
        s.push_str(&format!(
            "{:<4}  {:<8}  {:<5}  {:<10}  {:<8}  {:<18}  {}\n",
            id.to_string(),
            f.priority.get(),
            f.tries.get(),
            yes(f.successful),
            yes(f.bootable()),
            installed[id as usize],
            parts.join(" ")
        ));
    }
    // Which roles each slot's record covers (docs/image-format.md, "Roles").
    for id in SlotId::ALL {
        s.push_str(&format!("slot {id}:    {}\n", coverage[id as usize]));
    }
    // The boot counter (docs/state-machine.md, "The boot counter").
    for id in SlotId::ALL {
        if let Some(t) = boot_state_text(&boot[id as usize]) {
            s.push_str(&format!("slot {id}:    {t}\n"));
        }
    }
    let shared: Vec<String> = disk
        .layout()
        .shared
        .iter()
        .map(|p| format!("{}={}", p.name, p.index))
        .collect();
    if !shared.is_empty() {
        s.push_str(&format!("shared:    {}\n", shared.join(" ")));
    }
    // Versions the agent saw roll back here: never installed again automatically.
    match crate::agent::failed_versions(&cfg.state_dir) {
        Ok(list) => {
            for f in list {
                let line = format!("{} at {} ({})", f.version, f.at, f.reason);
                s.push_str(&format!("failed:    {}\n", printable(&line)));
            }
        }
        Err(e) => {
            let e = format!("{e:#}");
            s.push_str(&format!(
                "failed:    cannot read agent state: {}\n",
                printable(&e)
            ));
        }
    }
    out!("{s}");
    Ok(())
}
