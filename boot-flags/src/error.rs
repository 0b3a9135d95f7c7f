//! The library's error type: plain values naming what went wrong.

use std::io;

use crate::slot::SlotId;
use crate::state::Refusal;

/// Everything boot-flags can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with what was being done.
    #[error("{what}")]
    Io {
        /// What was being done, e.g. "read the primary GPT header".
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No GPT at all (blank disk, MBR-only disk, not a disk image).
    #[error("no GPT on this disk ({0})")]
    NoGpt(String),
    /// Both copies exist but neither can be trusted.
    #[error("both GPT copies are corrupt (primary: {primary}; backup: {backup})")]
    BothCopiesBad {
        /// Why the primary copy is not trusted.
        primary: String,
        /// Why the backup copy is not trusted.
        backup: String,
    },
    /// The GPT describes a larger disk than the device (a truncated image).
    #[error("disk is truncated: its GPT needs {expected} bytes but it has {actual}")]
    Truncated {
        /// Bytes the GPT needs.
        expected: u64,
        /// Bytes the device has.
        actual: u64,
    },
    /// A sector size other than 512 or 4096.
    #[error("unsupported logical sector size {0} (512 and 4096 are supported)")]
    SectorSize(u32),
    /// No A/B slot pair on the disk.
    #[error("no A/B slots: {0}")]
    NoSlots(String),
    /// Slots A and B do not have the same roles.
    #[error("slots A and B have different roles (only in A: [{only_a}]; only in B: [{only_b}])")]
    RoleMismatch {
        /// Roles only slot A has, comma-separated.
        only_a: String,
        /// Roles only slot B has, comma-separated.
        only_b: String,
    },
    /// Two partitions of one slot share a role.
    #[error("slot {slot} has two partitions with role {role}")]
    DuplicateRole {
        /// The slot.
        slot: SlotId,
        /// The role.
        role: String,
    },
    /// The configured flags role does not exist in a slot.
    #[error("slot {slot} has no partition with the flags role {role}")]
    FlagsRole {
        /// The slot.
        slot: SlotId,
        /// The configured role.
        role: String,
    },
    /// Two partitions share sectors: an install into one would overwrite
    /// the other.
    #[error("partitions {first} ({first_name}) and {second} ({second_name}) overlap")]
    Overlap {
        /// Number of the partition that starts first.
        first: u32,
        /// Its name.
        first_name: String,
        /// Number of the partition that starts inside it.
        second: u32,
        /// Its name.
        second_name: String,
    },
    /// A partition number that is not in use.
    #[error("partition {0} does not exist")]
    NoSuchPartition(u32),
    /// A partition entry pointing outside the disk's usable area.
    #[error("partition {index} ({name}) lies outside the usable area of the disk")]
    PartitionOutOfRange {
        /// 1-based partition number.
        index: u32,
        /// Its name.
        name: String,
    },
    /// A number out of its range.
    #[error("{field} = {value} is out of range (at most {max})")]
    OutOfRange {
        /// Which value.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// Text that is not a GUID.
    #[error("not a GUID: {0:?}")]
    BadGuid(String),
    /// A fresh table that cannot be built as asked.
    #[error("invalid partition layout: {0}")]
    BadLayout(String),
    /// The state machine refused the operation; nothing was written.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// What was read back after a commit is not what was written.
    #[error("read-back after commit does not match: {0}")]
    VerifyFailed(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
