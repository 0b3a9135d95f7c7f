//! `slotctl install`: stream a signed image into the inactive slot, verify
//! it, record it, activate it.

pub mod dev;
pub mod pipeline;
