//! image-format: the slotctl signed image container.
#![forbid(unsafe_code)]
