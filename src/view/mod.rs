//! Views of an opened image that need no mount: `export` (one tar stream),
//! `diff` (two merged trees compared) and `layers` (what each layer does).

pub mod diff;
pub mod export;
pub mod layers;
