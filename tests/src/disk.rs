//! Disk-image helpers for the slot and GPT tests: make images with
//! `slotctl disk init`, attach 4K images to loop devices, and read flags
//! back with the real tools (`cgpt`, `sfdisk`, `sgdisk`) and the `gpt` crate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{gptcrate, require_tool, run_slotctl};

/// A temporary A/B disk image: BOOT-A=1 ROOT-A=2 BOOT-B=3 ROOT-B=4 DATA=5.
///
/// Both slots hold a small signed image and its slot record (`activate`
/// requires a verified record), and all flags are zero, as on a fresh disk.
/// Every command run through [`Image::ok`] / [`Image::run`] gets this
/// image's config (`--config`, keyring and lock file in the temp dir) unless
/// the arguments name another.
pub struct Image {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The image file.
    pub path: PathBuf,
    /// 512 or 4096.
    pub sector_size: u32,
    /// The config file (compatible, keyring, lock file, plus any extra TOML).
    pub config: PathBuf,
}

impl Image {
    /// A fresh image (all flags zero) with the given logical sector size.
    pub fn new(sector_size: u32) -> Image {
        Image::with_config(sector_size, "")
    }

    /// Like [`Image::new`], with `extra` TOML appended to the config (e.g.
    /// `flags_role = "ROOT"`) before the slot records are written.
    pub fn with_config(sector_size: u32, extra: &str) -> Image {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        let path = d.join("disk.img");
        let ss = sector_size.to_string();
        ok(&[
            "disk",
            "init",
            path_str(&path),
            "--sector-size",
            &ss,
            "--role",
            "BOOT=2M",
            "--role",
            "ROOT=3M",
            "--data",
            "2M",
        ]);
        let keyring = d.join("keyring");
        std::fs::create_dir_all(&keyring).expect("mkdir keyring");
        let key = d.join("release");
        ok(&["keygen", "--out", path_str(&key)]);
        std::fs::copy(d.join("release.pub"), keyring.join("release.pub")).expect("copy pub");
        let config = d.join("slotctl.toml");
        std::fs::write(
            &config,
            format!(
                "compatible = \"slots-test\"\nkeyring = \"{}\"\nlock_file = \"{}\"\nstate_dir = \"{}\"\n{extra}\n",
                keyring.display(),
                d.join("slotctl.lock").display(),
                d.join("state").display(),
            ),
        )
        .expect("write config");
        let img = Image {
            dir,
            path,
            sector_size,
            config,
        };
        // A signed image in each slot (with its record), then all flags
        // back to zero.
        // A payload for each role: an image must cover every role of its
        // slot (docs/image-format.md, "Roles").
        let part = d.join("payload.bin");
        std::fs::write(&part, vec![0x5a; 8192]).expect("write payload");
        let part_arg = format!("ROOT={}", path_str(&part));
        let boot = d.join("boot.bin");
        std::fs::write(&boot, vec![0xb0; 4096]).expect("write payload");
        let boot_arg = format!("BOOT={}", path_str(&boot));
        let image = d.join("v1.img");
        ok(&[
            "image",
            "pack",
            "--key",
            path_str(&d.join("release.key")),
            "--version",
            "1.0.0",
            "--compatible",
            "slots-test",
            "--rollback-index",
            "0",
            "--part",
            &boot_arg,
            "--part",
            &part_arg,
            "-o",
            path_str(&image),
        ]);
        for slot in ["A", "B"] {
            img.ok(&["install", "--factory", "--slot", slot, path_str(&image)]);
            img.ok(&[
                "set-flags",
                slot,
                "--priority",
                "0",
                "--tries",
                "0",
                "--successful",
                "0",
            ]);
        }
        img
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--disk", path_str(&self.path)];
        if !args.contains(&"--config") {
            v.extend(["--config", path_str(&self.config)]);
        }
        v.extend_from_slice(args);
        v
    }

    /// `--disk <image> [--config <config>]` followed by `args`, expecting success.
    pub fn ok(&self, args: &[&str]) -> Output {
        ok(&self.args(args))
    }

    /// `--disk <image> [--config <config>]` followed by `args`, unchecked.
    pub fn run(&self, args: &[&str]) -> Output {
        run_slotctl(self.args(args))
    }

    /// `slotctl status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = self.ok(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// The whole image.
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read image")
    }

    /// A device the real tools read with the right sector size: the image
    /// itself for 512, a `losetup -b 4096` loop device for 4096 (cgpt and
    /// sfdisk cannot be told the sector size of a file; sgdisk would read a
    /// 4K image as 512 and pass it falsely).
    pub fn tool_view(&self) -> ToolView {
        if self.sector_size == 512 {
            ToolView {
                path: self.path.clone(),
                loop_dev: false,
            }
        } else {
            require_tool("losetup");
            let out = Command::new("losetup")
                .args(["-b", "4096", "-f", "--show"])
                .arg(&self.path)
                .output()
                .expect("run losetup");
            assert!(out.status.success(), "losetup: {}", text(&out.stderr));
            ToolView {
                path: PathBuf::from(text(&out.stdout).trim()),
                loop_dev: true,
            }
        }
    }
}

/// A path the validators read; a loop device is detached on drop.
pub struct ToolView {
    /// The file or loop device.
    pub path: PathBuf,
    loop_dev: bool,
}

impl Drop for ToolView {
    fn drop(&mut self) {
        if self.loop_dev {
            let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
        }
    }
}

impl ToolView {
    /// `cgpt show -i N -P/-T/-S`: (priority, tries, successful).
    pub fn cgpt_flags(&self, index: u32) -> (u8, u8, u8) {
        require_tool("cgpt");
        let get = |flag: &str| -> u8 {
            let out = Command::new("cgpt")
                .args(["show", "-i", &index.to_string(), flag])
                .arg(&self.path)
                .output()
                .expect("run cgpt");
            assert!(
                out.status.success(),
                "cgpt show {flag}: {}",
                text(&out.stderr)
            );
            text(&out.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("cgpt {flag} printed {:?}", text(&out.stdout)))
        };
        (get("-P"), get("-T"), get("-S"))
    }

    /// `sfdisk --json`: per partition number, its name and attribute bits
    /// among 48..=56 (from `"attrs": "GUID:48,52,56"`).
    pub fn sfdisk_flags(&self, index: u32) -> (u8, u8, u8) {
        let word = self
            .sfdisk_entries()
            .remove(&index)
            .unwrap_or_else(|| panic!("sfdisk shows no partition {index}"))
            .attrs;
        (
            ((word >> 48) & 0xf) as u8,
            ((word >> 52) & 0xf) as u8,
            ((word >> 56) & 1) as u8,
        )
    }

    /// `sfdisk --json`: every partition by number, with its whole attribute
    /// word (bits 0-2 by their names, the rest from `GUID:n,m`), type and
    /// unique GUIDs.
    pub fn sfdisk_entries(&self) -> BTreeMap<u32, SfdiskEntry> {
        require_tool("sfdisk");
        let out = Command::new("sfdisk")
            .arg("--json")
            .arg(&self.path)
            .output()
            .expect("run sfdisk");
        assert!(out.status.success(), "sfdisk: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sfdisk JSON");
        let parts = v["partitiontable"]["partitions"]
            .as_array()
            .expect("partitions");
        let node_suffix = |p: &serde_json::Value| {
            let node = p["node"].as_str().unwrap_or_default();
            let digits: String = node
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            digits.parse::<u32>().ok()
        };
        let mut map = BTreeMap::new();
        for p in parts {
            let index = node_suffix(p).unwrap_or_else(|| panic!("sfdisk node {p}"));
            let mut word = 0u64;
            for tok in p["attrs"].as_str().unwrap_or_default().split_whitespace() {
                match tok {
                    "RequiredPartition" => word |= 1,
                    "NoBlockIOProtocol" => word |= 1 << 1,
                    "LegacyBIOSBootable" => word |= 1 << 2,
                    _ => {
                        let bits = tok
                            .strip_prefix("GUID:")
                            .unwrap_or_else(|| panic!("sfdisk attrs token {tok:?}"));
                        for b in bits.split(',') {
                            word |= 1 << b.parse::<u32>().expect("bit number");
                        }
                    }
                }
            }
            let guid = |k: &str| p[k].as_str().unwrap_or_default().to_uppercase();
            map.insert(
                index,
                SfdiskEntry {
                    name: p["name"].as_str().unwrap_or_default().to_string(),
                    attrs: word,
                    type_guid: guid("type"),
                    part_guid: guid("uuid"),
                },
            );
        }
        map
    }

    /// Assert `sgdisk -v` prints "No problems found." (it exits 0 even on a
    /// bad CRC, so the output is what counts).
    pub fn assert_sgdisk_clean(&self) {
        require_tool("sgdisk");
        let out = Command::new("sgdisk")
            .arg("-v")
            .arg(&self.path)
            .output()
            .expect("run sgdisk");
        let s = text(&out.stdout);
        assert!(
            s.contains("No problems found."),
            "sgdisk -v {}: {s}",
            self.path.display()
        );
    }
}

/// One partition as `sfdisk --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfdiskEntry {
    pub name: String,
    /// The whole 64-bit attribute word.
    pub attrs: u64,
    /// Upper case.
    pub type_guid: String,
    /// Upper case.
    pub part_guid: String,
}

/// Check slotctl, cgpt, sfdisk and the `gpt` crate agree on both slots'
/// flags, the `gpt` crate agrees with status on every partition's bounds
/// and name (see [`crate::gptcrate`]) and with sfdisk on every partition's
/// name, whole attribute word and GUIDs, `sgdisk -v` is clean, and both GPT
/// copies are good. Returns the status JSON.
pub fn assert_tools_agree(img: &Image) -> serde_json::Value {
    let st = img.status();
    assert_eq!(st["gpt"]["primary"], "ok", "{st}");
    assert_eq!(st["gpt"]["backup"], "ok", "{st}");
    assert_eq!(st["sector_size"], img.sector_size, "{st}");
    let view = img.tool_view();
    for slot in ["A", "B"] {
        let s = &st["slots"][slot];
        let idx = s["flags_partition"].as_u64().expect("flags_partition") as u32;
        let ours = (
            s["priority"].as_u64().unwrap() as u8,
            s["tries"].as_u64().unwrap() as u8,
            u8::from(s["successful"].as_bool().unwrap()),
        );
        assert_eq!(view.cgpt_flags(idx), ours, "cgpt vs slotctl, slot {slot}");
        assert_eq!(
            view.sfdisk_flags(idx),
            ours,
            "sfdisk vs slotctl, slot {slot}"
        );
    }
    view.assert_sgdisk_clean();
    let crate_table = gptcrate::assert_agrees(&img.path, &st);
    compare_crate_with_sfdisk(&crate_table, &view.sfdisk_entries())
        .unwrap_or_else(|e| panic!("{}: {e}", img.path.display()));
    st
}

/// The `gpt` crate and sfdisk see the same used partitions with the same
/// names, whole attribute words (every bit, not only 48-56), type and
/// unique GUIDs. Returns every disagreement, one per line.
pub fn compare_crate_with_sfdisk(
    t: &gptcrate::Table,
    sf: &BTreeMap<u32, SfdiskEntry>,
) -> Result<(), String> {
    let mut errs = Vec::new();
    let ours: Vec<_> = t.entries.keys().collect();
    let theirs: Vec<_> = sf.keys().collect();
    if ours != theirs {
        errs.push(format!(
            "partition numbers: gpt crate {ours:?}, sfdisk {theirs:?}"
        ));
    }
    for (i, e) in &t.entries {
        let Some(s) = sf.get(i) else { continue };
        let mine = (&e.name, e.attrs, &e.type_guid, &e.part_guid);
        let other = (&s.name, s.attrs, &s.type_guid, &s.part_guid);
        if mine != other {
            errs.push(format!(
                "partition {i}: (name, attributes, type, unique GUID): gpt crate {:?} {:#018x} {} {}, sfdisk {:?} {:#018x} {} {}",
                e.name, e.attrs, e.type_guid, e.part_guid, s.name, s.attrs, s.type_guid, s.part_guid
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the gpt crate disagrees with sfdisk:\n{}",
            errs.join("\n")
        ))
    }
}

/// The `(priority, tries, successful)` of a slot in a status JSON.
pub fn flags_of(st: &serde_json::Value, slot: &str) -> (u64, u64, bool) {
    let s = &st["slots"][slot];
    (
        s["priority"].as_u64().unwrap(),
        s["tries"].as_u64().unwrap(),
        s["successful"].as_bool().unwrap(),
    )
}

/// Run slotctl expecting success; panics with its stderr otherwise.
pub fn ok(args: &[&str]) -> Output {
    let out = run_slotctl(args);
    assert!(
        out.status.success(),
        "slotctl {args:?} failed: {}",
        text(&out.stderr)
    );
    out
}

/// Assert a failed run printed exactly one line, `slotctl: error: ...`,
/// containing `needle`; returns that line.
pub fn assert_one_line_error(out: &Output, needle: &str) -> String {
    assert!(!out.status.success(), "expected failure");
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line: {err:?}");
    assert!(lines[0].starts_with("slotctl: error: "), "{err:?}");
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "{:?} does not mention {needle:?}",
        lines[0]
    );
    lines[0].to_string()
}

/// Lossy UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A path as `&str` (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
