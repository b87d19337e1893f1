//! Platforms, normalised the way containerd does, and the ranked fallbacks a
//! host accepts (`arm/v7` runs `v6` and `v5` images, `amd64` runs `386`).

use std::fmt;

use crate::error::{Error, Result};

/// A normalised platform: `arm64` always has variant `v8`, 32-bit `arm`
/// always has a variant, `amd64` never has `v1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let arch = architecture.to_ascii_lowercase();
        let variant = variant
            .filter(|v| !v.is_empty())
            .map(|v| v.to_ascii_lowercase());
        let (architecture, variant) = match (arch.as_str(), variant.as_deref()) {
            ("x86_64" | "x86-64" | "amd64", Some("v1")) | ("x86_64" | "x86-64", None) => {
                ("amd64".to_string(), None)
            }
            ("x86_64" | "x86-64", Some(v)) => ("amd64".to_string(), Some(v.to_string())),
            ("aarch64" | "arm64", None | Some("8") | Some("v8")) => {
                ("arm64".to_string(), Some("v8".to_string()))
            }
            ("aarch64", Some(v)) => ("arm64".to_string(), Some(v.to_string())),
            ("armhf", _) => ("arm".to_string(), Some("v7".to_string())),
            ("armel", _) => ("arm".to_string(), Some("v6".to_string())),
            ("arm", None) => ("arm".to_string(), Some("v7".to_string())),
            ("arm", Some(v)) => {
                let v = if v.starts_with('v') {
                    v.to_string()
                } else {
                    format!("v{v}")
                };
                ("arm".to_string(), Some(v))
            }
            ("i386" | "i486" | "i586" | "i686", _) => ("386".to_string(), None),
            _ => (arch, variant),
        };
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// Parse `os/arch[/variant]`, as `--platform` takes it.
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(Error::BadPlatform(text.to_string())),
        }
    }

    /// The platform this binary runs on.
    pub fn host() -> Platform {
        let arch = std::env::consts::ARCH;
        match arch {
            "arm" => Platform::new("linux", "arm", Some(&arm_variant_of_cpu())),
            _ => Platform::new(std::env::consts::OS, arch, None),
        }
    }

    /// Attestation manifests carry `unknown/unknown`; they are never images.
    /// Artifacts without a platform normalise to empty names: unknown too.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown"
            || self.architecture == "unknown"
            || self.os.is_empty()
            || self.architecture.is_empty()
    }

    /// Platforms this one can run, best first.
    pub fn acceptable(&self) -> Vec<Platform> {
        let arm = |v: &str| Platform::new(&self.os, "arm", Some(v));
        let arm_down_from = |top: u32| (5..=top).rev().map(|n| arm(&format!("v{n}"))).collect();
        let mut out = vec![self.clone()];
        let mut rest: Vec<Platform> = match (self.architecture.as_str(), self.variant.as_deref()) {
            ("amd64", _) => vec![Platform::new(&self.os, "386", None)],
            ("arm64", _) => arm_down_from(8),
            ("arm", Some(v)) => match v.trim_start_matches('v').parse::<u32>() {
                Ok(n) if (6..=8).contains(&n) => arm_down_from(n - 1),
                _ => vec![],
            },
            _ => vec![],
        };
        out.append(&mut rest);
        out
    }

    /// The rank of `candidate` for this wanted platform: 0 is an exact match,
    /// higher numbers are fallbacks, `None` means it cannot run.
    pub fn rank(&self, candidate: &Platform) -> Option<usize> {
        if candidate.is_unknown() {
            return None;
        }
        self.acceptable().iter().position(|p| p == candidate)
    }
}

/// The ARM variant of the CPU we run on, read from `/proc/cpuinfo`; `v7`
/// when it cannot be read, since that is what `armhf` distributions target.
fn arm_variant_of_cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let level = info
        .lines()
        .find(|l| l.starts_with("CPU architecture"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<u32>().ok());
    match level {
        Some(n) if (5..=8).contains(&n) => format!("v{n}"),
        _ => "v7".to_string(),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    #[test]
    fn names_are_normalised_like_containerd() {
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/x86-64").to_string(), "linux/amd64");
        assert_eq!(p("linux/amd64/v1").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm64/8").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armel").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm/6").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/i386").to_string(), "linux/386");
        assert_eq!(p("Linux/AMD64").to_string(), "linux/amd64");
    }

    #[test]
    fn bad_platform_strings_are_rejected() {
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/arm/v7/x",
            "linux/a b",
            "",
        ] {
            assert!(
                matches!(Platform::parse(bad), Err(Error::BadPlatform(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn arm_v7_falls_back_to_v6_then_v5() {
        let host = p("linux/arm/v7");
        assert_eq!(host.rank(&p("linux/arm/v7")), Some(0));
        assert_eq!(host.rank(&p("linux/arm/v6")), Some(1));
        assert_eq!(host.rank(&p("linux/arm/v5")), Some(2));
        assert_eq!(host.rank(&p("linux/arm/v8")), None);
        assert_eq!(host.rank(&p("linux/arm64")), None);
    }

    #[test]
    fn arm64_prefers_itself_then_32_bit_arm() {
        let host = p("linux/arm64");
        assert_eq!(host.rank(&p("linux/aarch64")), Some(0));
        assert_eq!(host.rank(&p("linux/arm/v8")), Some(1));
        assert_eq!(host.rank(&p("linux/arm/v7")), Some(2));
        assert_eq!(host.rank(&p("linux/arm/v5")), Some(4));
        assert_eq!(host.rank(&p("linux/amd64")), None);
    }

    #[test]
    fn amd64_runs_386_but_not_arm_or_other_os() {
        let host = p("linux/amd64");
        assert_eq!(host.rank(&p("linux/x86_64")), Some(0));
        assert_eq!(host.rank(&p("linux/386")), Some(1));
        assert_eq!(host.rank(&p("linux/arm64")), None);
        assert_eq!(host.rank(&p("windows/amd64")), None);
    }

    #[test]
    fn attestation_manifests_are_never_chosen() {
        assert_eq!(p("linux/amd64").rank(&p("unknown/unknown")), None);
    }

    #[test]
    fn host_platform_is_normalised() {
        let host = Platform::host();
        assert_eq!(Platform::parse(&host.to_string()).unwrap(), host);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(host.to_string(), "linux/amd64");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(host.to_string(), "linux/arm64/v8");
    }
}
