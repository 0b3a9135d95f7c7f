//! The device side of OTA updates: `slotctl check`, `update` and `agent`
//! (docs/feed.md).
//!
//! `check` fetches the signed feed (bounded in size), verifies it (trusted
//! signatures, not expired, serial not lower than the last one seen), then
//! picks the newest release this device may take now ([`select`]): newer
//! than the booted slot's, not pulled, not failed here, its wave open for
//! this device's seed. `update` then verifies the whole image's size and
//! SHA-256 against the feed before anything is written, and installs it
//! through the install pipeline. `agent` does that in a loop.

pub mod config;
pub mod select;
pub mod state;
