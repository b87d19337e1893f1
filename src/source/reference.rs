//! Image references as skopeo spells them for local images:
//! `[oci:]PATH[:TAG|@sha256:HEX]` for a layout directory,
//! `oci-archive:FILE[:TAG]` for a tar of one, and
//! `docker-archive:FILE[:REPO:TAG]` for what `docker save` writes. A plain
//! path to a regular file is either kind of archive, told by its contents.
//! `docker://…` names an image in a registry (see `crate::source::registry::reference`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::source::archive::{self, DockerArchive, OciArchive};
use crate::source::registry::reference as registry_reference;
use crate::source::registry::settings::Settings;
use crate::source::registry::{RegistryStore, RepositoryName};
use crate::source::selector::Selector;
use crate::source::{ImageStore, Layout};

/// What holds the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A plain path: a layout directory, or an archive file of either kind
    /// (told apart when it is opened).
    Path(PathBuf),
    /// `oci:PATH`: a layout directory and nothing else, as in skopeo.
    Layout(PathBuf),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
    /// `docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]`: a repository in a registry.
    Registry(RepositoryName),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub transport: Transport,
    pub selector: Selector,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef> {
        let bad = |reason: &str| Error::BadReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        if let Some(body) = text.strip_prefix("docker://") {
            let (name, selector) = registry_reference::parse(body).map_err(|r| bad(&r))?;
            return Ok(ImageRef {
                transport: Transport::Registry(name),
                selector,
            });
        }
        if let Some(body) = text.strip_prefix("docker-archive:") {
            // skopeo splits at the first colon: the rest is REPO:TAG, whose
            // registry part may hold a port.
            let (path, selector) = match split_digest(body)? {
                Some((path, digest)) => (path, Selector::Digest(digest)),
                None => match body.split_once(':') {
                    Some((_, "")) => return Err(bad("the name after ':' is empty")),
                    Some((path, name)) => (path, Selector::Tag(name.to_string())),
                    None => (body, Selector::Default),
                },
            };
            if path.is_empty() {
                return Err(bad("the archive path is empty"));
            }
            return Ok(ImageRef {
                transport: Transport::DockerArchive(PathBuf::from(path)),
                selector,
            });
        }
        let (body, archive, layout) = match text.strip_prefix("oci-archive:") {
            Some(body) => (body, true, false),
            None => match text.strip_prefix("oci:") {
                Some(body) => (body, false, true),
                None => (text, false, false),
            },
        };
        let what = if archive {
            "the archive path is empty"
        } else {
            "the layout path is empty"
        };
        let (path, selector) = path_and_selector(body).map_err(|reason| bad(&reason))?;
        if path.is_empty() {
            return Err(bad(what));
        }
        let path = PathBuf::from(path);
        Ok(ImageRef {
            transport: if archive {
                Transport::OciArchive(path)
            } else if layout {
                Transport::Layout(path)
            } else {
                Transport::Path(path)
            },
            selector,
        })
    }

    /// The file or directory that holds the image; none for a registry.
    pub fn path(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Path(p)
            | Transport::Layout(p)
            | Transport::OciArchive(p)
            | Transport::DockerArchive(p) => Some(p),
            Transport::Registry(_) => None,
        }
    }

    /// Open what holds the image.
    pub fn open_store(&self, settings: &Settings) -> Result<Arc<dyn ImageStore>> {
        Ok(match &self.transport {
            Transport::Path(path) if is_regular_file(path) => archive::open(path)?,
            Transport::Path(path) | Transport::Layout(path) => {
                Arc::new(Layout::open_with(path, settings.clone())?)
            }
            Transport::OciArchive(path) => Arc::new(OciArchive::open(path)?),
            Transport::DockerArchive(path) => Arc::new(DockerArchive::open(path)?),
            Transport::Registry(name) => {
                Arc::new(RegistryStore::open(name, &self.selector, settings)?)
            }
        })
    }

    /// The same image pinned to one manifest, with an absolute path: what a
    /// daemon started later must open, whatever tags have moved since.
    pub fn pinned(&self, manifest: &Digest) -> Result<String> {
        let path = match &self.transport {
            Transport::Registry(name) => return Ok(format!("docker://{name}@{manifest}")),
            Transport::Path(p)
            | Transport::Layout(p)
            | Transport::OciArchive(p)
            | Transport::DockerArchive(p) => p,
        };
        let path = std::fs::canonicalize(path).at(path)?;
        let prefix = match &self.transport {
            // A plain path stays plain: it may be a layout or an archive.
            Transport::Path(_) => "",
            Transport::Layout(_) => "oci:",
            Transport::OciArchive(_) => "oci-archive:",
            Transport::DockerArchive(_) => "docker-archive:",
            Transport::Registry(_) => unreachable!("returned above"),
        };
        Ok(format!("{prefix}{}@{manifest}", path.display()))
    }
}

fn is_regular_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// `PATH@sha256:HEX`, when the text ends in a digest.
fn split_digest(body: &str) -> Result<Option<(&str, Digest)>> {
    match body.rsplit_once('@') {
        Some((path, digest)) if digest.contains(':') => Ok(Some((path, Digest::parse(digest)?))),
        _ => Ok(None),
    }
}

/// `PATH`, `PATH:TAG` or `PATH@DIGEST`, as for layouts.
fn path_and_selector(body: &str) -> std::result::Result<(&str, Selector), String> {
    if let Some((path, digest)) = body.rsplit_once('@') {
        let digest = Digest::parse(digest).map_err(|e| e.to_string())?;
        return Ok((path, Selector::Digest(digest)));
    }
    // A colon followed by no slash is a tag; `./a:b/c` is a path.
    if let Some((path, tag)) = body.rsplit_once(':') {
        if !tag.contains('/') {
            if tag.is_empty() && !path.is_empty() {
                return Err("the tag after ':' is empty".to_string());
            }
            return Ok((path, Selector::Tag(tag.to_string())));
        }
    }
    Ok((body, Selector::Default))
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
                transport: Transport::Path("img".into()),
                selector: Selector::Default
            }
        );
        assert_eq!(
            ImageRef::parse("oci:/srv/img:v1.2").unwrap(),
            ImageRef {
                transport: Transport::Layout("/srv/img".into()),
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
                transport: Transport::Path("./dir:with/colon".into()),
                selector: Selector::Default
            }
        );
    }

    #[test]
    fn archive_references_parse_as_skopeo_writes_them() {
        assert_eq!(
            ImageRef::parse("docker-archive:/tmp/a.tar:localhost:5000/busybox:1.36").unwrap(),
            ImageRef {
                transport: Transport::DockerArchive("/tmp/a.tar".into()),
                selector: Selector::Tag("localhost:5000/busybox:1.36".into()),
            }
        );
        assert_eq!(
            ImageRef::parse("docker-archive:a.tar").unwrap(),
            ImageRef {
                transport: Transport::DockerArchive("a.tar".into()),
                selector: Selector::Default,
            }
        );
        assert_eq!(
            ImageRef::parse("oci-archive:dir/a.tar:v1").unwrap(),
            ImageRef {
                transport: Transport::OciArchive("dir/a.tar".into()),
                selector: Selector::Tag("v1".into()),
            }
        );
        assert_eq!(
            ImageRef::parse(&format!("docker-archive:a.tar@sha256:{HEX}"))
                .unwrap()
                .selector,
            Selector::Digest(Digest::parse(&format!("sha256:{HEX}")).unwrap())
        );
    }

    #[test]
    fn empty_parts_are_errors() {
        for bad in [
            "",
            "oci:",
            ":tag",
            "img:",
            "img@sha256:abc",
            "oci-archive:",
            "docker-archive:",
            "docker-archive:a.tar:",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
