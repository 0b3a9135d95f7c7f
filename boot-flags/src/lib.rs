//! boot-flags: the GPT, A/B slot flags and boot selection.
#![forbid(unsafe_code)]
