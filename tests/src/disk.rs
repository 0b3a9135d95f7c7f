//! Disk-image helpers for the slot and GPT tests: make images with
//! `slotctl disk init`, attach 4K images to loop devices, and read flags
//! back with the real tools (`cgpt`, `sfdisk`, `sgdisk`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{require_tool, run_slotctl};

/// A temporary A/B disk image: BOOT-A=1 ROOT-A=2 BOOT-B=3 ROOT-B=4 DATA=5.
pub struct Image {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The image file.
    pub path: PathBuf,
    /// 512 or 4096.
    pub sector_size: u32,
}

impl Image {
    /// A fresh image (all flags zero) with the given logical sector size.
    pub fn new(sector_size: u32) -> Image {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
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
        Image {
            dir,
            path,
            sector_size,
        }
    }

    /// `--disk <image>` followed by `args`, expecting success.
    pub fn ok(&self, args: &[&str]) -> Output {
        let mut v = vec!["--disk", path_str(&self.path)];
        v.extend_from_slice(args);
        ok(&v)
    }

    /// `--disk <image>` followed by `args`, unchecked.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut v = vec!["--disk", path_str(&self.path)];
        v.extend_from_slice(args);
        run_slotctl(v)
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
        let p = parts
            .iter()
            .find(|p| node_suffix(p) == Some(index))
            .unwrap_or_else(|| panic!("sfdisk shows no partition {index}"));
        let mut word = 0u64;
        if let Some(attrs) = p["attrs"].as_str() {
            for tok in attrs.split_whitespace() {
                if let Some(bits) = tok.strip_prefix("GUID:") {
                    for b in bits.split(',') {
                        word |= 1 << b.parse::<u32>().expect("bit number");
                    }
                }
            }
        }
        (
            ((word >> 48) & 0xf) as u8,
            ((word >> 52) & 0xf) as u8,
            ((word >> 56) & 1) as u8,
        )
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

/// Check slotctl, cgpt and sfdisk agree on both slots' flags, `sgdisk -v`
/// is clean, and both GPT copies are good. Returns the status JSON.
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
    st
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
