//! The verified boot chain of `boot-select` (issue 14; docs/verified-boot.md):
//! the check boot selection runs on the slot it is about to boot.
//!
//! For the chosen slot, in this order:
//! 1. its slot record verifies against the keyring given to boot-select
//!    (`--keyring`, a directory in the initramfs): the root hashes come from
//!    a header a trusted key signed, never from the disk alone;
//! 2. each payload the record declares with a dm-verity tree is opened as a
//!    read-only verity device on its partition (`bootchain::open_verity`
//!    reads its first block, so a wrong root hash fails here, at once), and
//!    boot-select names that device (`SLOTCTL_PART_ROOT=/dev/dm-0`);
//! 3. with `--kexec`, the slot's own kernel and initramfs are loaded from
//!    its verified root (`kexec_file_load`); a slot without a kernel file is
//!    booted with the running kernel instead.
//!
//! Any step that fails gives the slot up (boot-flags, `boot_select_checked`)
//! and selection goes on with the other slot. Everything the check needs
//! from the disk (both slots' records and partitions) is read before
//! selection starts, so the check borrows nothing from the disk.
//!
//! On a disk image file (not a block device: the host, tests) nothing can
//! be opened: the check verifies the record and prints the verity table it
//! would load (`SLOTCTL_VERITY_<ROLE>`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boot_flags::SlotId;
use image_format::{Keyring, PayloadInfo};

use crate::device;
use crate::record;

/// What boot-select's flags ask of the chain.
#[derive(Default)]
pub struct ChainArgs {
    /// Verify slot records against this keyring (none: not verified).
    pub keyring: Option<Keyring>,
    /// Signatures required (the config's `signature_threshold`).
    pub threshold: usize,
    /// Open verity devices (false: a dry run, which opens nothing).
    pub open: bool,
    /// Load the slot's own kernel and kexec it.
    pub kexec: Option<KexecPaths>,
}

/// Where a slot keeps its kernel, inside its ROOT file system.
#[derive(Clone, Debug)]
pub struct KexecPaths {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: PathBuf,
    /// Where the slot's root is mounted (read-only) to read them.
    pub mount_dir: PathBuf,
    /// The role whose file system holds them.
    pub role: String,
}

/// A partition of a slot, as the check needs it.
#[derive(Clone, Debug)]
struct Part {
    role: String,
    node: PathBuf,
    size: u64,
}

/// One slot: its record as read before selection, and its partitions.
struct SlotData {
    record: Result<Option<Vec<u8>>, String>,
    parts: Vec<Part>,
}

/// A slot that passed the check: its verity devices, and whether its
/// kernel is loaded for kexec.
#[derive(Debug, Default)]
pub struct Passed {
    /// role -> what boot-select names instead of the raw partition.
    pub devices: Vec<(String, PathBuf)>,
    /// role -> the verity table (on a disk image, where nothing is opened).
    pub tables: Vec<(String, String)>,
    /// The slot's kernel is loaded: boot-select kexecs it (with --kexec,
    /// false means the slot carries none and boots with this kernel).
    pub kexec_loaded: bool,
}

pub struct Chain {
    args: ChainArgs,
    keyring: Option<Keyring>,
    is_block: bool,
    disk: PathBuf,
    slots: [SlotData; 2],
    /// What the last successful check set up, per slot.
    passed: [Option<Passed>; 2],
}

impl Chain {
    /// Reads what the checks need: both records and the partition nodes.
    pub fn prepare(o: &mut device::Opened, mut args: ChainArgs) -> anyhow::Result<Chain> {
        let is_block = o.is_block;
        let disk = o.path.clone();
        anyhow::ensure!(
            args.kexec.is_none() || (is_block && args.open),
            "--kexec needs a block device (the running system's disk), not {}",
            disk.display()
        );
        let read = |o: &mut device::Opened, id: SlotId| SlotData {
            record: record::read_slot(&mut o.disk, id).map_err(|e| e.to_string()),
            parts: o
                .disk
                .layout()
                .slot(id)
                .partitions
                .iter()
                .map(|p| Part {
                    role: p.role.clone(),
                    node: o.partition_path(p.index),
                    size: p.size,
                })
                .collect(),
        };
        let a = read(o, SlotId::A);
        let b = read(o, SlotId::B);
        Ok(Chain {
            keyring: args.keyring.take(),
            args,
            is_block,
            disk,
            slots: [a, b],
            passed: [None, None],
        })
    }

    /// Whether the chain has anything to check at all.
    pub fn active(&self) -> bool {
        self.keyring.is_some() || self.args.kexec.is_some()
    }

    /// The check for `slot`: Ok when it may be booted (its devices are open
    /// and, with --kexec, its kernel loaded); Err(reason) gives it up.
    pub fn check(&mut self, slot: SlotId) -> Result<(), String> {
        let i = slot as usize;
        if let Some(old) = self.passed[i].take() {
            self.close(slot, &old);
        }
        let passed = self.check_inner(slot)?;
        self.passed[i] = Some(passed);
        Ok(())
    }

    /// What the last check of `slot` set up.
    pub fn passed(&self, slot: SlotId) -> Option<&Passed> {
        self.passed[slot as usize].as_ref()
    }

    fn check_inner(&mut self, slot: SlotId) -> Result<Passed, String> {
        let data = &self.slots[slot as usize];
        let payloads = match (&data.record, &self.keyring) {
            (Err(e), _) => return Err(format!("its slot record cannot be read: {e}")),
            (Ok(None), Some(_)) => {
                return Err("it has no slot record to verify its root against".into())
            }
            (Ok(None), None) => Vec::new(),
            (Ok(Some(blob)), ring) => header_payloads(blob, ring.as_ref(), self.args.threshold)?,
        };
        let mut passed = Passed::default();
        if let Err(e) = self.open_roles(slot, &payloads, &mut passed) {
            self.close(slot, &passed);
            return Err(e);
        }
        if let Some(k) = self.args.kexec.clone() {
            match load_kernel(slot, &k, &passed) {
                Ok(loaded) => passed.kexec_loaded = loaded,
                Err(e) => {
                    self.close(slot, &passed);
                    return Err(e);
                }
            }
        }
        Ok(passed)
    }

    /// Opens (or, where nothing can be opened, describes) the verity device
    /// of each payload that has a tree; what it opened is in `passed`, also
    /// when it fails (the caller closes it).
    fn open_roles(
        &self,
        slot: SlotId,
        payloads: &[PayloadInfo],
        passed: &mut Passed,
    ) -> Result<(), String> {
        let data = &self.slots[slot as usize];
        for p in payloads {
            let Some(v) = &p.verity else { continue };
            let part = data
                .parts
                .iter()
                .find(|x| x.role == p.role)
                .ok_or_else(|| format!("its record names role {} it does not have", p.role))?;
            // The tree lies inside the payload, which lies inside the
            // partition (the install checked both; the record may be old).
            if v.partition_len() > p.raw_size || p.raw_size > part.size {
                return Err(format!(
                    "{}: its verity data and tree ({} bytes) are not inside its {} byte payload \
                     and {} byte partition",
                    p.role,
                    v.partition_len(),
                    p.raw_size,
                    part.size
                ));
            }
            let table = verity_table(&part.node, v);
            if !(self.is_block && self.args.open) {
                table
                    .validate()
                    .map_err(|e| format!("{}: its verity field: {e}", p.role))?;
                passed.tables.push((p.role.clone(), table.params()));
                continue;
            }
            if !part.node.exists() {
                reread_partitions(&self.disk, &part.node)?;
            }
            let name = dm_name(slot, &p.role);
            let node =
                bootchain::open_verity(&name, &table).map_err(|e| format!("{}: {e}", p.role))?;
            passed.devices.push((p.role.clone(), node));
        }
        Ok(())
    }

    /// Removes the verity devices a check opened.
    fn close(&self, slot: SlotId, passed: &Passed) {
        for (role, _) in &passed.devices {
            if let Err(e) = bootchain::remove(&dm_name(slot, role)) {
                eprintln!(
                    "slotctl: warning: cannot remove the verity device of {slot} {role}: {e}"
                );
            }
        }
    }
}

/// The payloads of a record's header: verified against the keyring when
/// there is one.
fn header_payloads(
    blob: &[u8],
    ring: Option<&Keyring>,
    threshold: usize,
) -> Result<Vec<PayloadInfo>, String> {
    let r = image_format::ImageReader::new(blob)
        .map_err(|e| format!("its slot record holds no image header: {e}"))?;
    match ring {
        Some(ring) => r
            .verify(ring, threshold.max(1))
            .map(|v| v.header().payloads().to_vec())
            .map_err(|e| format!("its slot record does not verify against the boot keyring: {e}")),
        None => r
            .into_untrusted()
            .map(|u| u.header().payloads().to_vec())
            .map_err(|e| format!("its slot record holds no valid image header: {e}")),
    }
}

/// The device-mapper name of a slot's role.
pub fn dm_name(slot: SlotId, role: &str) -> String {
    format!("slotctl-{slot}-{role}")
}

/// The verity table for a payload's field, on its partition.
pub fn verity_table(node: &Path, v: &image_format::VerityInfo) -> bootchain::VerityTable {
    bootchain::VerityTable {
        data_dev: node.to_path_buf(),
        hash_dev: node.to_path_buf(),
        data_block_size: v.data_block_size,
        hash_block_size: v.hash_block_size,
        data_blocks: v.data_blocks,
        hash_start_block: v.hash_start_block,
        algorithm: v.hash_algorithm.to_string(),
        root_hex: v.root_hex(),
        salt_hex: v.salt_hex(),
        on_corruption: bootchain::OnCorruption::Restart,
    }
}

/// The kernel read the partition table before boot-select repaired it (a
/// bad primary GPT: it ignores the backup): re-read it and wait for `node`.
fn reread_partitions(disk: &Path, node: &Path) -> Result<(), String> {
    eprintln!(
        "slotctl: no {} yet: re-reading the partition table of {}",
        node.display(),
        disk.display()
    );
    bootchain::reread_partitions(disk).map_err(|e| {
        format!(
            "cannot re-read the partition table of {}: {e}",
            disk.display()
        )
    })?;
    let t0 = Instant::now();
    while !node.exists() {
        if t0.elapsed() > Duration::from_secs(5) {
            return Err(format!(
                "no {} after re-reading the partition table",
                node.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Mounts the slot's verified root read-only, loads its kernel (and
/// initramfs, command line) for kexec, unmounts. Ok(false): the slot
/// carries no kernel (or has no verified root to load one from), so it is
/// booted with the running kernel.
fn load_kernel(slot: SlotId, k: &KexecPaths, passed: &Passed) -> Result<bool, String> {
    use nix::mount::{mount, umount, MsFlags};
    let Some((_, dev)) = passed.devices.iter().find(|(r, _)| *r == k.role) else {
        eprintln!(
            "slotctl: slot {slot} has no verified {} to load a kernel from: booting it with this kernel",
            k.role
        );
        return Ok(false);
    };
    std::fs::create_dir_all(&k.mount_dir)
        .map_err(|e| format!("cannot create {}: {e}", k.mount_dir.display()))?;
    let mut mounted = Err(String::new());
    for fstype in ["ext4", "squashfs", "erofs"] {
        match mount(
            Some(dev.as_path()),
            &k.mount_dir,
            Some(fstype),
            MsFlags::MS_RDONLY,
            None::<&str>,
        ) {
            Ok(()) => {
                mounted = Ok(());
                break;
            }
            Err(e) => mounted = Err(format!("{e}")),
        }
    }
    mounted.map_err(|e| format!("cannot mount its {} ({}): {e}", k.role, dev.display()))?;
    let r = load_from(slot, k);
    if let Err(e) = umount(&k.mount_dir) {
        eprintln!(
            "slotctl: warning: cannot unmount {}: {e}",
            k.mount_dir.display()
        );
    }
    r
}

/// The part of [`load_kernel`] that runs with the root mounted.
fn load_from(slot: SlotId, k: &KexecPaths) -> Result<bool, String> {
    let inside = |p: &Path| k.mount_dir.join(p.strip_prefix("/").unwrap_or(p));
    let kernel = inside(&k.kernel);
    if !kernel.exists() {
        eprintln!(
            "slotctl: slot {slot} carries no kernel ({}): booting it with this kernel",
            k.kernel.display()
        );
        return Ok(false);
    }
    let initrd = inside(&k.initrd);
    let initrd = initrd.exists().then_some(initrd);
    let base = match std::fs::read_to_string(inside(&k.cmdline)) {
        Ok(s) => s,
        Err(_) => std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
    };
    let cmdline = kexec_cmdline(&base, slot);
    bootchain::kexec_load(&kernel, initrd.as_deref(), &cmdline)
        .map_err(|e| format!("its kernel {} could not be loaded: {e}", k.kernel.display()))?;
    eprintln!(
        "slotctl: loaded slot {slot}'s kernel {}{} with command line '{cmdline}'",
        k.kernel.display(),
        if initrd.is_some() {
            " and initramfs"
        } else {
            ""
        }
    );
    Ok(true)
}

/// The command line the slot's kernel gets: its own (or this one), without
/// the first stage's `slotctl.kexec` and any `slotctl.slot`, plus
/// `slotctl.slot=SLOT` for its initramfs (the second stage).
pub fn kexec_cmdline(base: &str, slot: SlotId) -> String {
    let mut words: Vec<&str> = base
        .split_whitespace()
        .filter(|w| !w.starts_with("slotctl.kexec=") && !w.starts_with("slotctl.slot="))
        .collect();
    let tail = format!("slotctl.slot={slot}");
    words.push(&tail);
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_stage_gets_the_slot_and_not_the_kexec_switch() {
        assert_eq!(
            kexec_cmdline(
                "console=ttyS0 quiet slotctl.kexec=1 slotctl.slot=A x\n",
                SlotId::B
            ),
            "console=ttyS0 quiet x slotctl.slot=B"
        );
        assert_eq!(kexec_cmdline("", SlotId::A), "slotctl.slot=A");
    }

    #[test]
    fn dm_names_are_per_slot_and_role() {
        assert_eq!(dm_name(SlotId::A, "ROOT"), "slotctl-A-ROOT");
        assert_ne!(dm_name(SlotId::A, "ROOT"), dm_name(SlotId::B, "ROOT"));
    }
}
