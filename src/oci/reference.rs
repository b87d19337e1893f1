//! Image references as skopeo and umoci spell them for local layouts:
//! `[oci:]PATH`, `[oci:]PATH:TAG` and `[oci:]PATH@sha256:HEX`.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// No tag: the only entry of `index.json`, else `latest`.
    Default,
    Tag(String),
    Digest(Digest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub layout: PathBuf,
    pub selector: Selector,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef> {
        let bad = |reason: &str| Error::BadReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        let body = text.strip_prefix("oci:").unwrap_or(text);
        if body.is_empty() {
            return Err(bad("the layout path is empty"));
        }
        if let Some((path, digest)) = body.rsplit_once('@') {
            if path.is_empty() {
                return Err(bad("the layout path is empty"));
            }
            return Ok(ImageRef {
                layout: PathBuf::from(path),
                selector: Selector::Digest(Digest::parse(digest)?),
            });
        }
        // A colon followed by no slash is a tag; `./a:b/c` is a path.
        if let Some((path, tag)) = body.rsplit_once(':') {
            if !tag.contains('/') {
                if path.is_empty() {
                    return Err(bad("the layout path is empty"));
                }
                if tag.is_empty() {
                    return Err(bad("the tag after ':' is empty"));
                }
                return Ok(ImageRef {
                    layout: PathBuf::from(path),
                    selector: Selector::Tag(tag.to_string()),
                });
            }
        }
        Ok(ImageRef {
            layout: PathBuf::from(body),
            selector: Selector::Default,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn all_reference_forms_parse() {
        assert_eq!(
            ImageRef::parse("img").unwrap(),
            ImageRef {
                layout: "img".into(),
                selector: Selector::Default
            }
        );
        assert_eq!(
            ImageRef::parse("oci:/srv/img:v1.2").unwrap(),
            ImageRef {
                layout: "/srv/img".into(),
                selector: Selector::Tag("v1.2".into())
            }
        );
        assert_eq!(
            ImageRef::parse(&format!("img@sha256:{HEX}"))
                .unwrap()
                .selector,
            Selector::Digest(Digest::parse(&format!("sha256:{HEX}")).unwrap())
        );
        assert_eq!(
            ImageRef::parse("./dir:with/colon").unwrap(),
            ImageRef {
                layout: "./dir:with/colon".into(),
                selector: Selector::Default
            }
        );
    }

    #[test]
    fn empty_parts_are_errors() {
        for bad in ["", "oci:", ":tag", "img:", "img@sha256:abc"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
