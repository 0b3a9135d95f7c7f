//! The environment of `power_cut_install_inproc.rs`: the config, keyring
//! and signed images, the in-process install, and the field device.

use std::io::Cursor;
use std::sync::Arc;

use boot_flags::{BlockDevice, Disk, SlotId};
use slotctl::config::Config;
use slotctl::install::{install_on, policy, InstallOptions, KeyArgs};
use slotctl::progress::{Mode, Progress};
use slotctl::source::Source;
use slotctl_tests::installfix::{ok, Fix, BOOT_SIZE, ROOT_SIZE};
use slotctl_tests::sim::{Rng, SimDevice};

/// One signed image: its bytes and its payloads.
pub struct Version {
    pub name: &'static str,
    pub image: Arc<[u8]>,
    pub boot: Vec<u8>,
    pub root: Vec<u8>,
    /// Installed from a source that gives random access (an HTTP server
    /// honouring Range, [`Source::memory`]): a chunked image goes the delta
    /// way (docs/delta.md).
    pub ranges: bool,
}

/// Random bytes, so that every torn sector differs from what it replaces.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next_u64() as u8).collect()
}

/// `zero_mib`: a MiB of ROOT (from its start) that is all zeros, which
/// the install hands to the device's own zeroing
/// (`BlockDevice::write_zeroes`) instead of writing it.
fn make_version(
    fix: &Fix,
    name: &'static str,
    version: &str,
    seed: u64,
    zero_mib: Option<usize>,
) -> Version {
    // Past one read-back read (4 MiB): the power is also cut between the
    // reads of one payload's read-back.
    let mut root = noise((4 << 20) + (100 << 10), seed + 1);
    if let Some(m) = zero_mib {
        root[m << 20..(m + 1) << 20].fill(0);
    }
    make_version_with(fix, name, version, seed, root, "zstd")
}

/// A version with the given ROOT payload and compression (`chunked`
/// images are installed from a source with ranges).
fn make_version_with(
    fix: &Fix,
    name: &'static str,
    version: &str,
    seed: u64,
    root: Vec<u8>,
    compression: &str,
) -> Version {
    let boot = noise(96 << 10, seed);
    let bp = fix.path(&format!("{name}-boot.bin"));
    let rp = fix.path(&format!("{name}-root.bin"));
    std::fs::write(&bp, &boot).unwrap();
    std::fs::write(&rp, &root).unwrap();
    let path = fix.pack(
        &format!("{name}.img"),
        version,
        1,
        &[("BOOT", &bp), ("ROOT", &rp)],
        compression,
    );
    Version {
        name,
        image: std::fs::read(path).unwrap().into(),
        boot,
        root,
        ranges: compression == "chunked",
    }
}

/// The config, keyring and images of one run.
pub struct Env {
    pub cfg: Config,
    pub keyring: image_format::Keyring,
    pub v1: Version,
    pub v2: Version,
    _fix: Fix,
}

impl Env {
    pub fn new() -> Env {
        let fix = Fix::new();
        let cfg = Config::from_file(&fix.config).unwrap();
        let keyring = policy::load_keyring(&KeyArgs::default(), &cfg).unwrap();
        let v1 = make_version(&fix, "v1", "1.0.0", 10, None);
        // v2 over v1: the zeroed MiB replaces v1's noise, so its torn
        // states differ from both versions.
        let v2 = make_version(&fix, "v2", "2.0.0", 20, Some(2));
        Env {
            cfg,
            keyring,
            v1,
            v2,
            _fix: fix,
        }
    }

    /// v1 and v2 packed `chunked`, installed from a source with ranges:
    /// v2's ROOT is v1's with one 4 KiB block in 128 changed and the same
    /// BOOT, so an install of v2 over a booted v1 goes the delta way (reads
    /// of the booted slot, zeros, ranges, the final pass) with few writes
    /// (each write multiplies the crash states).
    pub fn chunked() -> Env {
        let fix = Fix::new();
        let cfg = Config::from_file(&fix.config).unwrap();
        let keyring = policy::load_keyring(&KeyArgs::default(), &cfg).unwrap();
        let mut root1 = noise((4 << 20) + (100 << 10), 11);
        // Zero runs: written as zeros, never fetched.
        root1[1 << 20..(1 << 20) + (64 << 10)].fill(0);
        let mut root2 = root1.clone();
        for (i, b) in root2.chunks_mut(4096).enumerate() {
            if i % 128 == 5 {
                b.copy_from_slice(&noise(b.len(), 1000 + i as u64));
            }
        }
        let v1 = make_version_with(&fix, "v1", "1.0.0", 10, root1, "chunked");
        let v2 = make_version_with(&fix, "v2", "2.0.0", 10, root2, "chunked");
        Env {
            cfg,
            keyring,
            v1,
            v2,
            _fix: fix,
        }
    }

    /// Install `v` into `target` in-process, with `booted` as the booted
    /// slot (`None`: a factory install).
    pub fn install<D: BlockDevice>(
        &self,
        dev: D,
        v: &Version,
        target: SlotId,
        booted: Option<SlotId>,
    ) -> Result<slotctl::install::InstallReport, String> {
        let mut disk = Disk::open(dev, None).map_err(|e| format!("opening the disk: {e}"))?;
        self.install_disk(&mut disk, v, target, booted)
    }

    /// [`Env::install`] on an opened disk.
    pub fn install_disk<D: BlockDevice>(
        &self,
        disk: &mut Disk<D>,
        v: &Version,
        target: SlotId,
        booted: Option<SlotId>,
    ) -> Result<slotctl::install::InstallReport, String> {
        disk.set_booted(booted);
        let src = if v.ranges {
            Source::memory(&format!("{}.img", v.name), v.image.to_vec(), true)
        } else {
            Source {
                reader: Box::new(Cursor::new(v.image.to_vec())),
                name: format!("{}.img", v.name),
            }
        };
        let opts = InstallOptions {
            factory: booted.is_none(),
            ..InstallOptions::default()
        };
        install_on(
            disk,
            target,
            src,
            &self.keyring,
            &self.cfg,
            &opts,
            &Progress::with_mode(Mode::Quiet),
        )
        .map_err(|e| format!("{e:#}"))
    }

    /// A device in the field, built in-process: factory v1 into A, install
    /// v1 into B from A, boot B, mark it good. B is booted (P=2), A the
    /// fallback.
    pub fn field_device(&self, sector: u32) -> SimDevice {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut args: Vec<String> = vec!["disk".into(), "init".into()];
        args.push(path.display().to_string());
        args.extend(["--sector-size".into(), sector.to_string()]);
        args.extend(["--role".into(), format!("BOOT={BOOT_SIZE}")]);
        args.extend(["--role".into(), format!("ROOT={}", ROOT_SIZE + (1 << 20))]);
        ok(slotctl_tests::run_slotctl(args));
        let mut dev = SimDevice::new(std::fs::read(&path).unwrap(), sector, false);
        let r = self.install(&mut dev, &self.v1, SlotId::A, None).unwrap();
        assert!(r.activated && r.readback, "factory install: {r:?}");
        self.install(&mut dev, &self.v1, SlotId::B, Some(SlotId::A))
            .unwrap();
        {
            let mut d = Disk::open(&mut dev, None).unwrap();
            assert_eq!(d.boot_select(false).unwrap().choice.slot, SlotId::B);
            d.set_booted(Some(SlotId::B));
            d.mark_good().unwrap();
            let f = d.slot_flags();
            assert!(f.b.priority.get() == 2 && f.b.good() && f.a.good(), "{f:?}");
        }
        dev.flush().unwrap();
        dev
    }
}
