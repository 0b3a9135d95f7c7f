//! `slotctl install`, `verify-slot`, `boot-check`: the device side.
//!
//! An install, in order (docs/architecture.md, DESIGN.md):
//! 1. lock (one updater at a time);
//! 2. policy checks, all before any byte is written: the state machine would
//!    allow invalidating the target (not the booted slot, booted slot not on
//!    trial); the image's signatures meet the keyring's threshold;
//!    `compatible`; `rollback_index` and `version` against the booted slot's
//!    record; each role exists on the target slot and each payload fits;
//! 3. invalidate the target (one GPT commit) and erase its record;
//! 4. stream the payloads (decompressing, hashing) onto the partitions;
//! 5. flush; read back and re-hash bypassing the page cache (default);
//! 6. write the slot record, flush, read it back;
//! 7. activate (one GPT commit) unless `--no-activate`; reboot if `--reboot`.
//!    SIGTERM or SIGINT before this step cancels the install ([`cancel`]).
//!
//! With `--factory --slot A` (a fresh disk image in CI, no booted slot) the
//! last step marks the slot good instead: P=2 T=0 S=1.

pub mod cancel;
pub mod counters;
pub mod delta;
pub mod dev;
pub mod pin;
pub mod pipeline;
mod plan;
pub mod policy;
pub mod roles;
pub mod verify;

use std::path::PathBuf;

use anyhow::Context;
use boot_flags::{BlockDevice, Disk, Flags, Nibble, SlotId};
use clap::{Args, Subcommand};
use image_format::Keyring;
use serde_json::json;

use crate::cli::Globals;
use crate::config::Config;
use crate::exit::refused;
use crate::progress::Progress;
use crate::{bootcheck, device, lock, record, source};

use counters::{Counters, Method};
use pin::ImagePin;
use pipeline::Job;
pub(crate) use plan::plan;

#[derive(Subcommand, Debug)]
pub enum InstallCommand {
    /// Install a signed image into the inactive slot and make it the next boot.
    Install(InstallArgs),
    /// Re-hash a slot's partitions against its slot record (default: the
    /// booted slot, else both).
    VerifySlot(VerifySlotArgs),
    /// At boot: run the health checks, then mark the booted slot good (or
    /// bad, and reboot).
    BootCheck,
}

/// Where trusted keys come from (overrides the config's keyring).
#[derive(Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// Directory of trusted SPKI PEM public keys [default: config `keyring`].
    #[arg(long, value_name = "DIR")]
    pub keyring: Option<PathBuf>,
    /// A trusted public key file (repeatable); replaces the keyring.
    #[arg(long, value_name = "FILE")]
    pub pubkey: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The image: a file, `-` for standard input, or an http(s):// URL.
    pub source: String,
    /// Target slot. Only with --factory, or on a disk image with --booted
    /// (then it must be the slot that is not booted).
    #[arg(long, value_name = "SLOT")]
    pub slot: Option<String>,
    /// Factory provisioning of a fresh disk (no booted slot): write, verify,
    /// record, then mark the slot good (P=2 T=0 S=1). Needs --slot.
    #[arg(long)]
    pub factory: bool,
    /// The device's compatible string; only with --factory (a device uses
    /// its config's `compatible`).
    #[arg(long, value_name = "STRING")]
    pub compatible: Option<String>,
    /// Skip re-reading and re-hashing what was written.
    #[arg(long)]
    pub no_readback: bool,
    /// Write, verify and record, but do not make the slot the next boot.
    #[arg(long)]
    pub no_activate: bool,
    /// Reboot once the new slot is activated.
    #[arg(long)]
    pub reboot: bool,
    /// Allow a version lower than the booted slot's (never a lower
    /// rollback index).
    #[arg(long)]
    pub allow_downgrade: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
}

#[derive(Args, Debug)]
pub struct VerifySlotArgs {
    /// A or B [default: the booted slot, else both].
    pub slot: Option<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
}

impl InstallArgs {
    /// An unattended install of `source` into the inactive slot with every
    /// default (the agent's `update` and the DDI backend): read-back on,
    /// activation on, no downgrade, the config's keyring.
    pub fn unattended(source: String) -> InstallArgs {
        InstallArgs {
            source,
            slot: None,
            factory: false,
            compatible: None,
            no_readback: false,
            no_activate: false,
            reboot: false,
            allow_downgrade: false,
            keys: KeyArgs::default(),
        }
    }
}

pub fn run(cmd: InstallCommand, globals: &Globals) -> anyhow::Result<()> {
    match cmd {
        InstallCommand::Install(args) => {
            // SIGTERM/SIGINT cancel it before activation (exit code 6).
            cancel::arm(globals.json)?;
            install(args, globals, None).map(drop)
        }
        InstallCommand::VerifySlot(args) => verify::run(args, globals),
        InstallCommand::BootCheck => bootcheck::run(globals),
    }
}

/// `slotctl install`; with `expect`, the image must be exactly the pinned
/// one (`slotctl update`: the feed's release, see [`pin`]).
pub fn install(
    args: InstallArgs,
    globals: &Globals,
    expect: Option<ImagePin>,
) -> anyhow::Result<InstallReport> {
    install_with(args, globals, expect, None)
}

/// Opens the image once the lock is held and the target chosen, instead
/// of `args.source` (the DDI backend: a download unwrapped and checked
/// against the server's hashes, `crate::ddi`). Given the warning callback.
pub type Opener = Box<dyn FnOnce(source::Warn) -> anyhow::Result<source::Source>>;

/// [`install`], the image opened by `opener` when given.
pub fn install_with(
    args: InstallArgs,
    globals: &Globals,
    expect: Option<ImagePin>,
    opener: Option<Opener>,
) -> anyhow::Result<InstallReport> {
    let progress = Progress::new(globals.json);
    // `--json` promises a last `result` line on every failure, a config
    // that cannot be loaded included.
    let cfg = match Config::load(globals) {
        Ok(cfg) => cfg,
        Err(e) => {
            progress.result(false, json!({"error": format!("{e:#}")}));
            return Err(e);
        }
    };
    let result = install_inner(&args, globals, &cfg, &progress, expect, opener);
    match &result {
        Ok(report) => progress.result(true, report.to_json()),
        Err(e) => progress.result(false, json!({"error": format!("{e:#}")})),
    }
    let report = result?;
    if !globals.json {
        println!("{}", crate::term::printable(&report.message));
        println!("{}", crate::term::printable(&report.summary));
    }
    if args.reboot && !args.no_activate {
        bootcheck::reboot(&cfg, globals)?;
    }
    Ok(report)
}

fn install_inner(
    args: &InstallArgs,
    globals: &Globals,
    cfg: &Config,
    progress: &Progress,
    expect: Option<ImagePin>,
    opener: Option<Opener>,
) -> anyhow::Result<InstallReport> {
    if args.factory && args.slot.is_none() {
        return Err(crate::exit::usage(
            "install --factory needs --slot A or --slot B",
        ));
    }
    if args.compatible.is_some() && !args.factory {
        return Err(crate::exit::usage(
            "--compatible is only for --factory; a device uses the config's `compatible`",
        ));
    }
    if args.factory && args.reboot {
        return Err(crate::exit::usage(
            "--factory and --reboot do not go together",
        ));
    }
    let _lock = lock::acquire(&cfg.lock_file)?;
    let keyring = policy::load_keyring(&args.keys, cfg)?;

    let mut opened = device::open(globals, cfg, true)?;
    let target = policy::choose_target(args, &opened)?;

    let warn_progress = progress.clone();
    let warn: source::Warn = Box::new(move |m| warn_progress.warn(m));
    let src = match opener {
        Some(open) => open(warn)?,
        None => source::open(&args.source, &source::HttpOptions::from_config(cfg), warn)?,
    };
    let opts = InstallOptions {
        expect,
        ..InstallOptions::from(args)
    };
    install_on(
        &mut opened.disk,
        target,
        src,
        &keyring,
        cfg,
        &opts,
        progress,
    )
}

/// How an install behaves: the command-line switches of `slotctl install`
/// that [`install_on`] needs.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Factory provisioning: invalidate with P=0 T=0 S=0 whatever the state
    /// machine says (no booted slot), and mark the slot good at the end
    /// (P=2 T=0 S=1) instead of activating it.
    pub factory: bool,
    /// With `factory`: the compatible string, over the config's.
    pub compatible: Option<String>,
    /// Skip re-reading and re-hashing what was written.
    pub no_readback: bool,
    /// Write, verify and record, but leave the slot invalidated.
    pub no_activate: bool,
    /// Allow a version lower than the booted slot's record.
    pub allow_downgrade: bool,
    /// The image must be exactly this one (size, SHA-256, signed header):
    /// checked before any write and again before the record and the
    /// activation ([`pin`]).
    pub expect: Option<ImagePin>,
}

impl From<&InstallArgs> for InstallOptions {
    fn from(a: &InstallArgs) -> InstallOptions {
        InstallOptions {
            factory: a.factory,
            compatible: a.compatible.clone(),
            no_readback: a.no_readback,
            no_activate: a.no_activate,
            allow_downgrade: a.allow_downgrade,
            expect: None,
        }
    }
}

/// What an install did ([`install_on`]'s result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The slot written.
    pub slot: SlotId,
    /// The image's version.
    pub version: String,
    /// The image's rollback index.
    pub rollback_index: u64,
    /// Whether the slot boots next (activated, or marked good by a factory
    /// install).
    pub activated: bool,
    /// Whether the payloads were read back and re-hashed (on the delta
    /// way, chunked payloads always are: docs/delta.md).
    pub readback: bool,
    /// The one-line summary `slotctl install` prints.
    pub message: String,
    /// How the payloads came: the whole stream or the delta way.
    pub method: Method,
    /// Bytes downloaded, reused, written.
    pub counters: Counters,
    /// The second line `slotctl install` prints: the counters.
    pub summary: String,
    /// Where the time went (the stream's stages, flush, read-back).
    pub timing: pipeline::Timing,
}

impl InstallReport {
    /// The `--json` result fields.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "slot": self.slot.as_str(),
            "version": self.version,
            "rollback_index": self.rollback_index,
            "activated": self.activated,
            "readback": self.readback,
            "message": self.message,
            "method": self.method.as_str(),
            "downloaded": self.counters.downloaded,
            "reused": self.counters.to_json()["reused"],
            "written": self.counters.written,
            "fetched_blocks": self.counters.fetched_blocks,
            "refetched_groups": self.counters.refetched_groups,
            "summary": self.summary,
            "timing": self.timing.to_json(),
        })
    }
}

/// The core of `slotctl install`, on an opened disk: everything after the
/// lock, the keyring and the choice of the target slot.
///
/// In order: check that `target` may be written (the booted slot is
/// `disk.booted()`; see [`policy::check_target`]); read the image header
/// from `src` and verify its signatures against `keyring` (with the
/// config's `signature_threshold`), `compatible`, rollback index and version
/// against the booted slot's record, roles and sizes, all before any byte is
/// written; then invalidate `target` (one GPT commit) and erase its record,
/// stream the payloads onto its partitions, flush, read them back and
/// re-hash (unless `opts.no_readback`), write the slot record, flush and
/// read it back, and finally activate `target` with the config's `tries`
/// (or mark it good with `opts.factory`, or leave it with
/// `opts.no_activate`).
///
/// With `opts.expect` (`slotctl update`: the feed's release), the image is
/// pinned ([`pin`]): the verified header must be the pinned one before any
/// write, no source byte past the pinned size is read, and the size and
/// whole-image SHA-256 must match before the slot record and the activation.
///
/// The caller holds the updater lock ([`crate::lock`]) if other updaters may
/// run. A refusal (exit code 3, [`crate::exit`]) leaves the disk as it was;
/// an error after the invalidation leaves the target slot invalidated (never
/// bootable) and the booted slot untouched.
///
/// The disk is any [`BlockDevice`]: the binary passes the opened disk, the
/// reliability suite a simulated device it cuts the power of.
pub fn install_on<D: BlockDevice>(
    disk: &mut Disk<D>,
    target: SlotId,
    src: source::Source,
    keyring: &Keyring,
    cfg: &Config,
    opts: &InstallOptions,
    progress: &Progress,
) -> anyhow::Result<InstallReport> {
    policy::check_target(disk, target, opts.factory)?;
    let pin = opts.expect.as_ref();
    // Every byte read from the source goes through the tee: with a pin it
    // is counted, hashed and bounded by the pinned size.
    let tee = pin::Tee::new(src.reader, pin);
    let exceeded = tee.exceeded_flag();
    let name = src.name.as_str();
    // A source longer than the pin is a refusal wherever it shows.
    let longer = |e: anyhow::Error| pin::exceeded_refusal(&exceeded, pin, name).unwrap_or(e);
    // Verify the header before anything is written.
    let reader =
        image_format::ImageReader::new(tee).map_err(|e| longer(policy::image_error(e, name)))?;
    let verified = reader
        .verify(keyring, cfg.signature_threshold)
        .map_err(|e| policy::image_error(e, name))?;
    let header = verified.header().clone();
    if let Some(p) = pin {
        p.check_header(&header, name)?;
    }
    policy::check_header(opts, cfg, disk, target, &header, keyring)?;
    let mut plan = plan(disk, target, &header)?;
    let stream = verified.into_inner();
    // The one place that decides the way: an image with a chunked payload
    // from a source that gives random access (an HTTP server honouring
    // Range) goes the delta way (docs/delta.md); everything else streams.
    let chunked = header.payloads().iter().any(|p| p.chunked.is_some());
    let mut way = if chunked && stream.get_ref().can_range() {
        let ranges = stream
            .into_inner()
            .into_ranges()
            .ok_or_else(|| anyhow::anyhow!("image {name}: the source stopped offering ranges"))?;
        Way::Delta(ranges)
    } else {
        Way::Stream(stream)
    };
    let booted = match &way {
        Way::Delta(r) => {
            // What the stream way learns at its end, known here before any
            // write: the image is exactly as long as its header says (and,
            // with a pin, as the feed says).
            if let Some(p) = pin {
                if r.len() != p.size {
                    return Err(refused(format!(
                        "image {name} is {} bytes, the feed says {}: refusing it",
                        r.len(),
                        p.size
                    )));
                }
            }
            if r.len() > plan.end {
                return Err(policy::image_error(
                    image_format::Error::TrailingData { offset: plan.end },
                    name,
                ));
            }
            if r.len() < plan.end {
                return Err(refused(format!(
                    "image {name} truncated: {} bytes, its header declares {}",
                    r.len(),
                    plan.end
                )));
            }
            let booted = if opts.factory { None } else { disk.booted() };
            delta::booted_regions(disk, booted, &header)
        }
        Way::Stream(_) => Vec::new(),
    };

    // --- From here on the target slot is written. ---
    let flags_part = disk.layout().slot(target).flags_partition().clone();
    if opts.factory {
        disk.set_flags(target, Flags::ZERO)
            .with_context(|| format!("invalidating slot {target}"))?;
    } else {
        disk.invalidate(target)
            .with_context(|| format!("invalidating slot {target}"))?;
    }
    let dev = disk.device();
    record::erase(dev, flags_part.offset, flags_part.size)?;
    dev.flush().context("flushing the erased slot record")?;

    let left_invalid = || format!("installing into slot {target} (left invalid, not activated)");
    let mut counters = Counters::default();
    let mut timing = pipeline::Timing::default();
    // With a read-back, the stream's payloads are checked against their
    // signed hashes there, as the disk holds them, and not hashed twice
    // (pipeline::Check). The read-back starts while the stream writes,
    // where the disk has a direct reader (pipeline/ahead.rs); the rest is
    // read after the flush.
    let ahead = match &way {
        Way::Stream(_) if !opts.no_readback => {
            for job in &mut plan.jobs {
                job.check = pipeline::Check::ReadBack;
            }
            pipeline::ReadAhead::start(dev, &plan.jobs)
        }
        _ => pipeline::ReadAhead::none(),
    };
    let method = match &mut way {
        Way::Stream(stream) => {
            pipeline::write_payloads_reading(
                stream,
                &plan.jobs,
                dev,
                progress,
                &mut timing,
                &ahead,
            )
            .map_err(|e| longer(pipeline_error(e, target, "installing into")))?;
            // The image ends with its last payload (as `image verify`
            // demands): read the source to its end before anything is
            // recorded.
            pipeline::check_end(stream, plan.end, name)
                .map_err(longer)
                .with_context(left_invalid)?;
            counters.downloaded = stream.count();
            counters.written = plan.jobs.iter().map(|j| j.raw_size).sum();
            Method::Stream
        }
        Way::Delta(src) => {
            let job = delta::DeltaJob {
                header: &header,
                jobs: &plan.jobs,
                booted: &booted,
                progress,
            };
            let res = delta::install(dev, src.as_mut(), &job, &mut counters);
            counters.downloaded = src.received();
            res.map_err(|e| delta_error(e, target))?;
            Method::Delta
        }
    };
    // With a pin: what was read is the pinned image, byte for byte. On the
    // delta way the image is not read whole: its length was checked against
    // the pin before any write, and every byte written was proven by the
    // pinned header's tables and hashes (docs/feed.md).
    if let (Some(p), Way::Stream(stream)) = (pin, way) {
        stream.check_whole(p, name).with_context(left_invalid)?;
    }
    let t = std::time::Instant::now();
    dev.flush().context("flushing the written payloads")?;
    timing.flush = t.elapsed();
    if !opts.no_readback {
        // The delta way's chunked payloads had their final pass already.
        let rest: Vec<Job> = plan
            .jobs
            .iter()
            .zip(header.payloads())
            .filter(|(_, p)| method == Method::Stream || p.chunked.is_none())
            .map(|(j, _)| j.clone())
            .collect();
        pipeline::readback_after(&rest, dev, progress, &mut timing, ahead)
            .map_err(|e| pipeline_error(e, target, "verifying"))?;
    }

    record::write(dev, flags_part.offset, flags_part.size, &plan.record)?;
    dev.flush().context("flushing the slot record")?;
    verify::check_record_matches(dev, &flags_part, &plan.record)?;
    cancel::commit_point(); // the point of no return: SIGTERM no longer cancels

    let (activated, message) = if opts.factory {
        let good = Flags::new(2, 0, true).context("flags")?;
        disk.set_flags(target, good)
            .with_context(|| format!("marking slot {target} good"))?;
        (
            true,
            format!(
                "installed {} into slot {target} (factory): marked good",
                plan.version
            ),
        )
    } else if opts.no_activate {
        (
            false,
            format!(
                "installed {} into slot {target}; not activated (run `slotctl activate` to boot it next)",
                plan.version
            ),
        )
    } else {
        let tries = Nibble::new(cfg.tries).context("tries")?;
        disk.activate(target, tries)
            .with_context(|| format!("activating slot {target}"))?;
        (
            true,
            format!(
                "installed {} into slot {target}; it boots next ({} tries)",
                plan.version, cfg.tries
            ),
        )
    };
    Ok(InstallReport {
        slot: target,
        version: plan.version,
        rollback_index: plan.rollback_index,
        activated,
        readback: !opts.no_readback,
        message,
        method,
        summary: counters.summary(method, plan.end),
        counters,
        timing,
    })
}

/// How the payloads are read: one stream, or random access (the delta way).
enum Way {
    Stream(pin::Tee<Box<dyn source::Stream>>),
    Delta(Box<dyn source::RangeSource>),
}

fn delta_error(e: delta::DeltaError, target: SlotId) -> anyhow::Error {
    if e.is_refusal() {
        refused(format!("installing into slot {target}: {e}"))
    } else {
        anyhow::Error::new(e).context(format!("installing into slot {target}"))
    }
}

fn pipeline_error(e: pipeline::PipelineError, target: SlotId, doing: &str) -> anyhow::Error {
    if e.is_refusal() {
        refused(format!("{doing} slot {target}: {e}"))
    } else {
        anyhow::Error::new(e).context(format!("{doing} slot {target}"))
    }
}
