//! Fixtures for the install, HTTP and boot-check tests: a fresh A/B disk
//! image made by `slotctl disk init`, a signing key by `slotctl keygen`,
//! images by `slotctl image pack`, and a config file pointing at all of it
//! (lock file, keyring, reboot command, short HTTP timeouts) in a temp dir.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::run_slotctl;

pub const COMPATIBLE: &str = "acme-test-board";
/// Role sizes of the test disk: BOOT (the flags partition) and ROOT.
pub const BOOT_SIZE: u64 = 1 << 20;
pub const ROOT_SIZE: u64 = 4 << 20;

pub struct Fix {
    pub dir: tempfile::TempDir,
    pub disk: PathBuf,
    pub config: PathBuf,
    /// The signing key (PKCS#8 PEM) whose public half is in the keyring.
    pub key: PathBuf,
    pub keyring: PathBuf,
    pub lock: PathBuf,
    /// Created by the configured reboot command.
    pub rebooted: PathBuf,
}

/// Panic with stdout and stderr unless the command succeeded.
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "slotctl failed ({:?})\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Deterministic test bytes: the first half pseudo-random, the rest zero.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = vec![0u8; len];
    for b in v.iter_mut().take(len / 2) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    v
}

impl Default for Fix {
    fn default() -> Self {
        Fix::new()
    }
}

impl Fix {
    /// Slot A provisioned and good; an update installed into B (on trial).
    /// `checks` is added to the config (the boot-check tests' checks).
    pub fn updated(checks: &str) -> Fix {
        let f = Fix::with_config_extra(&format!("\n{checks}"));
        f.provision_a("1.0.0", 1);
        let (v2, _) = f.image("v2.img", "2.0.0", 1, 60_000, 2);
        ok(f.run(&[
            "install".as_ref(),
            "--booted".as_ref(),
            "A".as_ref(),
            v2.as_os_str(),
        ]));
        assert_eq!(f.flags("B"), (2, 3, false));
        f
    }

    /// A fresh fixture whose slot A is provisioned ([`Fix::provision_a`]).
    pub fn provisioned(version: &str, rollback_index: u64) -> Fix {
        let f = Fix::new();
        f.provision_a(version, rollback_index);
        f
    }

    /// Slot A factory-provisioned with `v1.img` (`version`, `rollback_index`;
    /// BOOT and a 50,000-byte ROOT payload, file `root1`): good at priority
    /// 2, the booted slot. Returns the image.
    pub fn provision_a(&self, version: &str, rollback_index: u64) -> PathBuf {
        let r1 = self.payload("root1", 50_000, 1);
        let v1 = self.pack(
            "v1.img",
            version,
            rollback_index,
            &[("BOOT", &self.boot_payload()), ("ROOT", &r1)],
            "zstd",
        );
        self.factory("A", &v1);
        assert_eq!(self.flags("A"), (2, 0, true));
        v1
    }

    /// The state after an update to A was committed: B factory-provisioned
    /// with `v0.img` (0.9.0, rollback index 1), then A as by
    /// [`Fix::provision_a`]; A good at priority 2 (booted), B good at
    /// priority 1 (the fallback). `--factory` wants a disk with no bootable
    /// or good slot: B's flags are cleared for A's install, then restored.
    pub fn two_good_slots(a_version: &str, a_rollback_index: u64) -> Fix {
        let f = Fix::new();
        let (v0, _) = f.image("v0.img", "0.9.0", 1, 150_000, 9);
        f.factory("B", &v0);
        ok(f.run(&["set-flags", "B", "--priority", "0", "--successful", "0"]));
        f.provision_a(a_version, a_rollback_index);
        ok(f.run(&["set-flags", "B", "--priority", "1", "--successful", "1"]));
        assert_eq!(f.flags("B"), (1, 0, true));
        f
    }

    pub fn new() -> Fix {
        Fix::with_config_extra("")
    }

    /// Replace the fixture's disk by a fresh one (512-byte sectors) whose
    /// ROOT partitions hold `root` bytes, for payloads larger than
    /// [`ROOT_SIZE`].
    pub fn replace_disk(&self, root: u64) {
        std::fs::remove_file(&self.disk).unwrap();
        init_disk_with_root(&self.disk, 512, root);
    }

    /// A fixture whose config gets `extra` appended (TOML).
    pub fn with_config_extra(extra: &str) -> Fix {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let disk = d.join("disk.img");
        init_disk(&disk, 512);
        std::fs::create_dir_all(d.join("private")).unwrap();
        let keyring = d.join("keyring");
        std::fs::create_dir_all(&keyring).unwrap();
        ok(run_slotctl([
            "keygen".as_ref(),
            "--out".as_ref(),
            d.join("private/dev").as_os_str(),
        ]));
        std::fs::copy(d.join("private/dev.pub"), keyring.join("dev.pub")).unwrap();
        let lock = d.join("slotctl.lock");
        let rebooted = d.join("rebooted");
        let config = d.join("slotctl.toml");
        let text = format!(
            r#"compatible = "{COMPATIBLE}"
keyring = "{keyring}"
lock_file = "{lock}"
state_dir = "{state}"
tries = 3

[boot_check]
reboot_on_failure = true
reboot_command = ["touch", "{rebooted}"]

[http]
connect_timeout_secs = 2
stall_timeout_secs = 1
retries = 3
backoff_initial_ms = 10
backoff_max_ms = 50
{extra}
"#,
            keyring = keyring.display(),
            lock = lock.display(),
            state = d.join("state").display(),
            rebooted = rebooted.display(),
        );
        std::fs::write(&config, text).unwrap();
        Fix {
            key: d.join("private/dev.key"),
            dir,
            disk,
            config,
            keyring,
            lock,
            rebooted,
        }
    }

    /// Replace the fixture's disk by a fresh one (same layout) with
    /// `sector_size`-byte logical sectors.
    pub fn reinit_disk(&self, sector_size: u32) {
        std::fs::remove_file(&self.disk).unwrap();
        init_disk(&self.disk, sector_size);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `args` followed by `--disk` and `--config` of this fixture.
    pub fn args<S: AsRef<OsStr>>(&self, args: &[S]) -> Vec<OsString> {
        let mut v: Vec<OsString> = args.iter().map(|a| a.as_ref().into()).collect();
        v.push("--disk".into());
        v.push(self.disk.clone().into());
        v.push("--config".into());
        v.push(self.config.clone().into());
        v
    }

    /// Run slotctl with `--disk` and `--config` of this fixture.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        run_slotctl(self.args(args))
    }

    /// Run `args` (as [`Fix::run`]) and check a refusal: exit 3, one
    /// `slotctl: error:` line naming `what`, the disk byte for byte as
    /// before. Returns the output.
    pub fn assert_refused_unchanged<S: AsRef<OsStr>>(&self, args: &[S], what: &str) -> Output {
        let before = self.disk_bytes();
        let out = self.run(args);
        assert_refused(&out, 3, what);
        assert!(
            self.disk_bytes() == before,
            "a refused {:?} changed the disk",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        );
        out
    }

    /// Write a payload file of `len` test bytes.
    pub fn payload(&self, name: &str, len: usize, seed: u64) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, test_bytes(len, seed)).unwrap();
        p
    }

    /// A small BOOT payload (8 KiB of test bytes, the same for every image
    /// of the fixture): the fixture's slots have BOOT and ROOT, and an image
    /// must carry a payload for every role of its slot (docs/image-format.md,
    /// "Roles").
    pub fn boot_payload(&self) -> PathBuf {
        let p = self.path("boot.bin");
        if !p.exists() {
            std::fs::write(&p, test_bytes(8192, 0xb007)).unwrap();
        }
        p
    }

    /// Pack and sign `name` (zstd) holding the fixture's BOOT payload and a
    /// ROOT payload of `root_len` test bytes from `seed`, written to the
    /// file `STEM.root` (`v2.img`: `v2.root`). Returns (image, ROOT payload).
    pub fn image(
        &self,
        name: &str,
        version: &str,
        rollback_index: u64,
        root_len: usize,
        seed: u64,
    ) -> (PathBuf, PathBuf) {
        self.image_with(name, version, rollback_index, root_len, seed, "zstd")
    }

    /// [`Fix::image`] with the payloads' `compression`.
    pub fn image_with(
        &self,
        name: &str,
        version: &str,
        rollback_index: u64,
        root_len: usize,
        seed: u64,
        compression: &str,
    ) -> (PathBuf, PathBuf) {
        let stem = name.strip_suffix(".img").unwrap_or(name);
        let root = self.payload(&format!("{stem}.root"), root_len, seed);
        let img = self.pack(
            name,
            version,
            rollback_index,
            &[("BOOT", &self.boot_payload()), ("ROOT", &root)],
            compression,
        );
        (img, root)
    }

    /// Pack and sign an image with this fixture's key.
    pub fn pack(
        &self,
        name: &str,
        version: &str,
        rollback_index: u64,
        parts: &[(&str, &Path)],
        compression: &str,
    ) -> PathBuf {
        self.pack_with(
            name,
            version,
            rollback_index,
            COMPATIBLE,
            parts,
            compression,
            &self.key,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn pack_with(
        &self,
        name: &str,
        version: &str,
        rollback_index: u64,
        compatible: &str,
        parts: &[(&str, &Path)],
        compression: &str,
        key: &Path,
    ) -> PathBuf {
        self.pack_extra(
            name,
            version,
            rollback_index,
            compatible,
            parts,
            compression,
            key,
            &[],
        )
    }

    /// [`Fix::pack_with`] with `extra` arguments for `image pack` (e.g.
    /// `--verity ROOT`).
    #[allow(clippy::too_many_arguments)]
    pub fn pack_extra(
        &self,
        name: &str,
        version: &str,
        rollback_index: u64,
        compatible: &str,
        parts: &[(&str, &Path)],
        compression: &str,
        key: &Path,
        extra: &[&str],
    ) -> PathBuf {
        let out = self.path(name);
        let mut args: Vec<std::ffi::OsString> = vec![
            "image".into(),
            "pack".into(),
            "--key".into(),
            key.into(),
            "--version".into(),
            version.into(),
            "--compatible".into(),
            compatible.into(),
            "--rollback-index".into(),
            rollback_index.to_string().into(),
            "--compression".into(),
            compression.into(),
            "-o".into(),
            out.clone().into(),
        ];
        args.extend(extra.iter().map(|a| a.into()));
        for (role, file) in parts {
            args.push("--part".into());
            let mut s = std::ffi::OsString::from(format!("{role}="));
            s.push(file.as_os_str());
            args.push(s);
        }
        ok(run_slotctl(args));
        out
    }

    /// `install --factory --slot SLOT IMAGE`.
    pub fn factory(&self, slot: &str, image: &Path) {
        ok(self.run(&[
            "install".as_ref(),
            "--factory".as_ref(),
            "--slot".as_ref(),
            slot.as_ref(),
            image.as_os_str(),
        ]));
    }

    /// Clear a slot's flags (P=0 T=0 S=0) with `set-flags`, the escape hatch.
    pub fn clear_flags(&self, slot: &str) {
        ok(self.run(&[
            "set-flags",
            slot,
            "--priority",
            "0",
            "--tries",
            "0",
            "--successful",
            "0",
        ]));
    }

    /// `status --json` (with `--booted` when given).
    pub fn status(&self, booted: Option<&str>) -> Value {
        let mut args = vec!["status", "--json"];
        if let Some(b) = booted {
            args.push("--booted");
            args.push(b);
        }
        let out = ok(self.run(&args));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// (offset, size) of a slot's partition, from `status --json`.
    pub fn partition(&self, slot: &str, role: &str) -> (u64, u64) {
        let st = self.status(None);
        let parts = st["slots"][slot]["partitions"]
            .as_array()
            .expect("partitions");
        let p = parts
            .iter()
            .find(|p| p["role"] == role)
            .unwrap_or_else(|| panic!("no {role} in slot {slot}: {st}"));
        (p["offset"].as_u64().unwrap(), p["size"].as_u64().unwrap())
    }

    /// The bytes of a slot's partition.
    pub fn read_partition(&self, slot: &str, role: &str) -> Vec<u8> {
        let (off, size) = self.partition(slot, role);
        let all = std::fs::read(&self.disk).unwrap();
        all[off as usize..(off + size) as usize].to_vec()
    }

    pub fn disk_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.disk).unwrap()
    }

    /// Assert that a partition starts with exactly `payload`'s bytes.
    pub fn assert_partition_holds(&self, slot: &str, role: &str, payload: &Path) {
        let want = std::fs::read(payload).unwrap();
        let got = self.read_partition(slot, role);
        assert!(
            got.len() >= want.len() && got[..want.len()] == want[..],
            "partition {role}-{slot} does not hold {}",
            payload.display()
        );
    }

    /// The flags of a slot as (priority, tries, successful). The `gpt`
    /// crate re-reads the disk first and must agree with status on every
    /// partition's bounds and name and on both slots' flags.
    pub fn flags(&self, slot: &str) -> (u64, u64, bool) {
        let st = self.status(None);
        crate::gptcrate::assert_agrees(&self.disk, &st);
        let s = &st["slots"][slot];
        (
            s["priority"].as_u64().unwrap(),
            s["tries"].as_u64().unwrap(),
            s["successful"].as_bool().unwrap(),
        )
    }
}

/// `status --json` with everything about slot `target` that an install may
/// change (flags, record) blanked, and the derived `next` removed: what
/// must be equal before and after a failed install.
pub fn status_without_target(st: &Value, target: &str) -> Value {
    let mut st = st.clone();
    if let Some(o) = st.as_object_mut() {
        o.remove("next");
    }
    if let Some(slot) = st["slots"][target].as_object_mut() {
        for (k, v) in slot.iter_mut() {
            if k != "partitions" && k != "flags_partition" {
                *v = Value::Null;
            }
        }
    }
    st
}

/// Check the invariant of every failed install: `status` is exactly as
/// before apart from the target slot, which is not bootable.
pub fn assert_status_unchanged_but_target(before: &Value, after: &Value, target: &str) {
    assert_eq!(
        after["slots"][target]["bootable"],
        Value::Bool(false),
        "target slot {target} must be unbootable after a failed install: {after}"
    );
    assert_eq!(
        status_without_target(before, target),
        status_without_target(after, target),
        "status changed beyond the target slot"
    );
}

/// The one `slotctl: error:` line of a failed run (warnings, e.g. about
/// retries, and a delta install's `slotctl: downloading ...` plan line may
/// precede it); panics unless there is exactly one, last.
pub fn error_line(out: &Output) -> String {
    let err = stderr(out);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("slotctl: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line: {err}");
    assert_eq!(
        err.lines().last(),
        Some(errors[0]),
        "error line must be last: {err}"
    );
    assert!(
        err.lines().all(|l| l.starts_with("slotctl: error: ")
            || l.starts_with("slotctl: warning: ")
            || l.starts_with("slotctl: downloading ")),
        "unexpected stderr: {err}"
    );
    errors[0].to_string()
}

/// Assert a refusal: exit code `code`, one line on stderr naming `what`.
pub fn assert_refused(out: &Output, code: i32, what: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stderr: {err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {err}");
    assert!(
        lines[0].starts_with("slotctl: error: ") && lines[0].contains(what),
        "stderr should name {what:?}: {err}"
    );
}

/// `slotctl disk init` of the fixtures' layout (BOOT and ROOT per slot).
fn init_disk(disk: &Path, sector_size: u32) {
    init_disk_with_root(disk, sector_size, ROOT_SIZE);
}

/// The fixtures' layout with `root` bytes for each ROOT partition.
fn init_disk_with_root(disk: &Path, sector_size: u32, root: u64) {
    ok(run_slotctl([
        "disk".as_ref(),
        "init".as_ref(),
        disk.as_os_str(),
        "--sector-size".as_ref(),
        sector_size.to_string().as_ref(),
        "--role".as_ref(),
        format!("BOOT={BOOT_SIZE}").as_ref(),
        "--role".as_ref(),
        format!("ROOT={root}").as_ref(),
    ]));
}
