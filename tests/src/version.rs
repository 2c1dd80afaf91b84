//! The containerd versions the suite runs against and where their binaries live.

use std::fmt;
use std::path::{Path, PathBuf};

/// The script that fetches the non-Debian-12 containerd builds.
pub const FETCH_SCRIPT: &str = "tests/scripts/fetch-containerd.sh";

/// Default directory holding `<version>/usr/bin/{containerd,ctr}` for the fetched builds.
pub const DEFAULT_CONTAINERD_DIR: &str = "/var/cache/amphi/containerd";

/// A containerd release line the suite knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// 1.6.20 from Debian 12 (`/usr/bin`); speaks task API v2 to shims, ignores `runtime_path`.
    V1_6,
    /// 1.7.24 from Debian trixie, fetched into `$AMPHI_CONTAINERD_DIR/1.7.24`.
    V1_7,
    /// 2.1.9 from Debian sid, fetched into `$AMPHI_CONTAINERD_DIR/2.1.9`; task API v3.
    V2_1,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_6, Version::V1_7, Version::V2_1];

    /// The short name used in `AMPHI_CONTAINERD_VERSIONS` and test names: `1.6`, `1.7`, `2.1`.
    pub fn short(self) -> &'static str {
        match self {
            Version::V1_6 => "1.6",
            Version::V1_7 => "1.7",
            Version::V2_1 => "2.1",
        }
    }

    /// The exact release the suite is validated with.
    pub fn release(self) -> &'static str {
        match self {
            Version::V1_6 => "1.6.20",
            Version::V1_7 => "1.7.24",
            Version::V2_1 => "2.1.9",
        }
    }

    /// Parses `1.6`, `v1.6`, `1.6.20`, `V1_6`, ...
    pub fn parse(text: &str) -> Option<Version> {
        let t = text.trim().trim_start_matches(['v', 'V']).replace('_', ".");
        Version::ALL
            .into_iter()
            .find(|v| t == v.short() || t == v.release())
    }

    /// The config file schema version: 2 for containerd 1.x, 3 for 2.x.
    pub fn config_schema(self) -> u32 {
        match self {
            Version::V1_6 | Version::V1_7 => 2,
            Version::V2_1 => 3,
        }
    }

    /// Whether this is containerd 2.x.
    pub fn is_2x(self) -> bool {
        matches!(self, Version::V2_1)
    }

    /// The directory holding `containerd`, `ctr` and `containerd-shim-runc-v2`.
    pub fn bin_dir(self) -> PathBuf {
        match self {
            Version::V1_6 => PathBuf::from("/usr/bin"),
            _ => {
                let root = std::env::var_os("AMPHI_CONTAINERD_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTAINERD_DIR));
                root.join(self.release()).join("usr/bin")
            }
        }
    }

    /// The `containerd` binary; panics naming the path and the fix when it is missing.
    pub fn containerd(self) -> PathBuf {
        self.require("containerd")
    }

    /// The `ctr` binary; panics naming the path and the fix when it is missing.
    pub fn ctr(self) -> PathBuf {
        self.require("ctr")
    }

    fn require(self, name: &str) -> PathBuf {
        let path = self.bin_dir().join(name);
        if !is_executable(&path) {
            panic!("{}", self.missing_message(&path));
        }
        path
    }

    fn missing_message(self, path: &Path) -> String {
        match self {
            Version::V1_6 => format!(
                "containerd {} is required but {} is missing: install Debian 12's containerd \
                 package (`apt-get install -y containerd`, or run deploy/install-deps.sh)",
                self.release(),
                path.display()
            ),
            Version::V1_7 | Version::V2_1 => {
                let suite = if self == Version::V1_7 {
                    "trixie"
                } else {
                    "sid"
                };
                let dir = path
                    .ancestors()
                    .nth(4)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                format!(
                    "containerd {} is required but {} is missing: fetch it with \
                     `{FETCH_SCRIPT} {dir} {suite}={}` (deploy/install-deps.sh does this), \
                     or set AMPHI_CONTAINERD_DIR, or leave {} out of AMPHI_CONTAINERD_VERSIONS",
                    self.release(),
                    path.display(),
                    self.release(),
                    self.short()
                )
            }
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "containerd {}", self.release())
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The versions selected by `AMPHI_CONTAINERD_VERSIONS` (comma list, default: all three).
///
/// Panics on an unknown entry, so a typo cannot deselect everything.
pub fn selected_versions() -> Vec<Version> {
    match std::env::var("AMPHI_CONTAINERD_VERSIONS") {
        Ok(list) if !list.trim().is_empty() => parse_version_list(&list),
        _ => Version::ALL.to_vec(),
    }
}

/// Parses a comma separated version list; panics on an unknown entry.
pub fn parse_version_list(list: &str) -> Vec<Version> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            Version::parse(s).unwrap_or_else(|| {
                panic!(
                    "AMPHI_CONTAINERD_VERSIONS contains unknown version {s:?}; known: 1.6, 1.7, 2.1"
                )
            })
        })
        .collect()
}

/// Whether `version` is selected for this run.
pub fn is_selected(version: Version) -> bool {
    selected_versions().contains(&version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_release_and_ident_forms() {
        assert_eq!(Version::parse("1.6"), Some(Version::V1_6));
        assert_eq!(Version::parse("v1.7"), Some(Version::V1_7));
        assert_eq!(Version::parse("2.1.9"), Some(Version::V2_1));
        assert_eq!(Version::parse("V2_1"), Some(Version::V2_1));
        assert_eq!(Version::parse("2.0"), None);
    }

    #[test]
    fn version_list_keeps_order_and_rejects_typos() {
        assert_eq!(
            parse_version_list("2.1, 1.6"),
            vec![Version::V2_1, Version::V1_6]
        );
        let typo = std::panic::catch_unwind(|| parse_version_list("1.6,2.2"));
        assert!(typo.is_err());
    }

    #[test]
    fn fetched_versions_live_under_their_release() {
        if std::env::var_os("AMPHI_CONTAINERD_DIR").is_none() {
            assert_eq!(
                Version::V2_1.bin_dir(),
                PathBuf::from("/var/cache/amphi/containerd/2.1.9/usr/bin")
            );
        }
        assert_eq!(Version::V1_6.bin_dir(), PathBuf::from("/usr/bin"));
    }

    #[test]
    fn missing_binary_message_names_path_and_script() {
        let msg = Version::V1_7.missing_message(Path::new("/nowhere/1.7.24/usr/bin/containerd"));
        assert!(msg.contains("/nowhere/1.7.24/usr/bin/containerd"), "{msg}");
        assert!(msg.contains(FETCH_SCRIPT), "{msg}");
        assert!(msg.contains("trixie=1.7.24"), "{msg}");
        assert!(msg.contains("/nowhere "), "{msg}");
    }
}
