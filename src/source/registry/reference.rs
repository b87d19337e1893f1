//! `docker://` references, normalised as skopeo and Docker normalise them
//! (`github.com/distribution/reference`, `ParseNormalizedNamed`):
//!
//! - the first path component is the registry when it holds a `.` or a
//!   `:`, is `localhost`, or has an upper-case letter; otherwise the
//!   registry is `docker.io`;
//! - on `docker.io`, a one-component name lives under `library/`, and
//!   `index.docker.io` is `docker.io`;
//! - path components are lower case, `[a-z0-9]` joined by `.`, `_`, `__`
//!   or runs of `-`; a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`;
//! - no tag and no digest means `:latest`; with both, the digest wins.

use std::fmt;

use crate::digest::Digest;
use crate::source::selector::Selector;

/// Docker Hub's name, and the host its API lives on.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A repository in a registry: `docker.io` + `library/debian`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepositoryName {
    /// `HOST[:PORT]`, as the user names it (`docker.io`, `127.0.0.1:5000`).
    pub domain: String,
    /// `library/debian`, `team/app`.
    pub repository: String,
}

impl RepositoryName {
    /// The `HOST[:PORT]` the API is reached at.
    pub fn api_host(&self) -> &str {
        if self.domain == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.domain
        }
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)
    }
}

/// Parse what follows `docker://`. Returns the repository and either the
/// tag (`latest` when none is given) or the digest.
pub fn parse(body: &str) -> Result<(RepositoryName, Selector), String> {
    let body = body.strip_prefix("//").unwrap_or(body);
    if body.is_empty() {
        return Err("the name is empty".to_string());
    }
    let (rest, digest) = match body.split_once('@') {
        Some((rest, digest)) => (
            rest,
            Some(Digest::parse(digest).map_err(|e| e.to_string())?),
        ),
        None => (body, None),
    };
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    let (domain, path) = split_domain(name);
    check_domain(&domain)?;
    check_path(&path)?;
    let repo = RepositoryName {
        domain,
        repository: path,
    };
    if repo.to_string().len() > MAX_NAME_LEN {
        return Err(format!("the name is longer than {MAX_NAME_LEN} characters"));
    }
    let selector = match (digest, tag) {
        (Some(digest), _) => Selector::Digest(digest),
        (None, Some(tag)) => Selector::Tag(tag.to_string()),
        (None, None) => Selector::Tag("latest".to_string()),
    };
    Ok((repo, selector))
}

fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        domain
    };
    let path = if domain == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    (domain, path)
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, Some(port)),
        _ => (domain, None),
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }));
    if !host_ok {
        return Err(format!("{domain:?} is not a registry host"));
    }
    if let Some(port) = port {
        if port.is_empty()
            || !port.chars().all(|c| c.is_ascii_digit())
            || port.parse::<u16>().is_err()
        {
            return Err(format!("{domain:?} has a bad port"));
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(format!(
                "{component:?} is not a repository name component \
                 (lower-case letters and digits, joined by '.', '_', '__' or '-')"
            ));
        }
    }
    Ok(())
}

fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or any run of '-'.
        let run_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[run_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{tag:?} is not a tag (up to {MAX_TAG_LEN} of letters, digits, '_', '.' and '-', \
             not starting with '.' or '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(text: &str) -> String {
        let (repo, selector) = parse(text).unwrap();
        match selector {
            Selector::Tag(t) => format!("{repo}:{t}"),
            Selector::Digest(d) => format!("{repo}@{d}"),
            Selector::Default => unreachable!(),
        }
    }

    #[test]
    fn short_names_are_normalised_as_skopeo_does() {
        assert_eq!(norm("debian"), "docker.io/library/debian:latest");
        assert_eq!(norm("//debian:12"), "docker.io/library/debian:12");
        assert_eq!(norm("team/app"), "docker.io/team/app:latest");
        assert_eq!(
            norm("index.docker.io/debian"),
            "docker.io/library/debian:latest"
        );
        assert_eq!(norm("docker.io/debian"), "docker.io/library/debian:latest");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(
            norm("127.0.0.1:5000/a/b/c:v1.2-rc_3"),
            "127.0.0.1:5000/a/b/c:v1.2-rc_3"
        );
        assert_eq!(norm("Registry/app"), "Registry/app:latest");
        assert_eq!(norm("quay.io/a/b"), "quay.io/a/b:latest");
        assert_eq!(
            norm(&format!("quay.io/a/b:tag@sha256:{HEX}")),
            format!("quay.io/a/b@sha256:{HEX}")
        );
        assert_eq!(
            norm("a__b-c---d/e_f.g"),
            "docker.io/a__b-c---d/e_f.g:latest"
        );
        let (repo, _) = parse("debian").unwrap();
        assert_eq!(repo.api_host(), "registry-1.docker.io");
        let (repo, _) = parse("127.0.0.1:5000/x").unwrap();
        assert_eq!(repo.api_host(), "127.0.0.1:5000");
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "empty"),
            ("Debian", "component"),
            ("debian:", "not a tag"),
            ("debian:-x", "not a tag"),
            ("a//b", "component"),
            ("a/b/", "component"),
            ("a..b", "component"),
            ("a_-b", "component"),
            ("host:99999/x", "bad port"),
            ("host:/x", "bad port"),
            ("debian@sha256:abc", "sha256"),
            ("ho$t.io/x", "registry host"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let long_tag = format!("debian:{}", "a".repeat(129));
        assert!(parse(&long_tag).unwrap_err().contains("not a tag"));
        let long_name = format!("x.io/{}", "a".repeat(300));
        assert!(parse(&long_name).unwrap_err().contains("longer"));
    }
}
