//! The disk interface the pipeline writes through: boot-flags' `BlockDevice`.

pub use boot_flags::BlockDevice;
