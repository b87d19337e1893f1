//! Which image of a source a reference picks: a tag, a digest, or the
//! source's default. Shared by the local references and the registry's.

use crate::digest::Digest;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// No tag: the only entry of `index.json`, else `latest`.
    Default,
    Tag(String),
    Digest(Digest),
}
