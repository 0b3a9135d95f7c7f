//! Header field rules.
