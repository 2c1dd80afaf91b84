//! Recognising the host's cgroup layout below a root directory.
//!
//! - `root/cgroup.controllers` exists: the root is a cgroup v2 (unified) hierarchy.
//! - otherwise every subdirectory named after v1 controllers (`memory`, `cpu,cpuacct`, or a
//!   symlink such as `cpu -> cpu,cpuacct`) is a v1 hierarchy; co-mounted controllers share
//!   one hierarchy. A `unified` subdirectory holding `cgroup.controllers` marks a hybrid
//!   host; it is recorded but not used (see the module docs of [`super`]).
//!
//! For the real host, [`CgroupRoot::detect`] also checks the file-system magic numbers, so a
//! directory tree that merely looks like cgroupfs is caught.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, statfs};

use super::CgroupError;

/// v1 controllers amphi knows how to place processes in. Named hierarchies (such as
/// `name=systemd` mounted at `systemd`) are deliberately not listed.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// One mounted v1 hierarchy: its directory and the controllers attached to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1Hierarchy {
    pub(crate) dir: PathBuf,
    pub(crate) controllers: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Layout {
    V1 {
        hierarchies: Vec<V1Hierarchy>,
        /// The cgroup2 mount of a hybrid host, unused for now.
        unified: Option<PathBuf>,
    },
    V2,
}

/// The host's cgroup layout, rooted at an injectable directory.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    pub(crate) root: PathBuf,
    pub(crate) layout: Layout,
    /// True when the hierarchies are ordinary directories (a test's fake tree), not a
    /// kernel cgroup file system. Only directory removal behaves differently.
    pub(crate) emulated: bool,
}

impl CgroupRoot {
    /// The real host, rooted at `/sys/fs/cgroup`, with a file-system type check.
    pub fn detect() -> Result<CgroupRoot, CgroupError> {
        let root = CgroupRoot::at(Path::new("/sys/fs/cgroup"))?;
        if root.emulated {
            return Err(CgroupError::Layout {
                path: root.root.clone(),
                reason: "the hierarchies are not cgroup file systems".into(),
            });
        }
        Ok(root)
    }

    /// Detects the layout below `root` (a fake tree in tests).
    pub fn at(root: &Path) -> Result<CgroupRoot, CgroupError> {
        let (layout, probe) = if root.join("cgroup.controllers").is_file() {
            (Layout::V2, root.to_path_buf())
        } else {
            let hierarchies = v1_hierarchies(root)?;
            let Some(first) = hierarchies.first() else {
                return Err(CgroupError::NoHierarchy(root.to_path_buf()));
            };
            let probe = first.dir.clone();
            let unified =
                Some(root.join("unified")).filter(|u| u.join("cgroup.controllers").is_file());
            (
                Layout::V1 {
                    hierarchies,
                    unified,
                },
                probe,
            )
        };
        let emulated = !is_cgroup_fs(&probe)?;
        Ok(CgroupRoot {
            root: root.to_path_buf(),
            layout,
            emulated,
        })
    }

    /// True on a unified (pure cgroup v2) host.
    pub fn is_v2(&self) -> bool {
        matches!(self.layout, Layout::V2)
    }

    /// True on a v1 host that also mounts a cgroup2 hierarchy (at `unified`).
    pub fn is_hybrid(&self) -> bool {
        matches!(
            self.layout,
            Layout::V1 {
                unified: Some(_),
                ..
            }
        )
    }

    /// The directory the layout was detected under.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// v1 only: the controllers found, in name order (empty on v2).
    pub fn v1_controllers(&self) -> Vec<String> {
        match &self.layout {
            Layout::V1 { hierarchies, .. } => {
                let mut all: Vec<String> = hierarchies
                    .iter()
                    .flat_map(|h| h.controllers.iter().cloned())
                    .collect();
                all.sort();
                all
            }
            Layout::V2 => Vec::new(),
        }
    }
}

fn v1_hierarchies(root: &Path) -> Result<Vec<V1Hierarchy>, CgroupError> {
    let entries = fs::read_dir(root).map_err(|e| CgroupError::io("list", root, e))?;
    // Keyed by the resolved directory so `cpu`, `cpuacct` and `cpu,cpuacct` merge.
    let mut by_dir: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| CgroupError::io("list", root, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let controllers: Vec<&str> = name
            .split(',')
            .filter(|c| V1_CONTROLLERS.contains(c))
            .collect();
        if controllers.is_empty() || !path.is_dir() {
            continue;
        }
        let dir = fs::canonicalize(&path).map_err(|e| CgroupError::io("resolve", &path, e))?;
        let list = by_dir.entry(dir).or_default();
        for c in controllers {
            if !list.iter().any(|known| known == c) {
                list.push(c.to_string());
            }
        }
    }
    Ok(by_dir
        .into_iter()
        .map(|(dir, mut controllers)| {
            controllers.sort();
            V1Hierarchy { dir, controllers }
        })
        .collect())
}

fn is_cgroup_fs(path: &Path) -> Result<bool, CgroupError> {
    let st = statfs(path).map_err(|e| CgroupError::io("statfs", path, io::Error::from(e)))?;
    let fs_type = st.filesystem_type();
    Ok(fs_type == CGROUP_SUPER_MAGIC || fs_type == CGROUP2_SUPER_MAGIC)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::cgroup::CgroupErrorKind;

    #[test]
    fn v2_is_recognised_by_cgroup_controllers() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let root = CgroupRoot::at(t.path()).unwrap();
        assert!(root.is_v2());
        assert!(!root.is_hybrid());
        assert!(root.emulated);
        assert!(root.v1_controllers().is_empty());
    }

    #[test]
    fn v1_merges_comounted_controllers_and_spots_hybrid() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in [
            "cpu,cpuacct",
            "memory",
            "pids",
            "systemd",
            "unified",
            "junk",
        ] {
            fs::create_dir(r.join(d)).unwrap();
        }
        symlink(r.join("cpu,cpuacct"), r.join("cpu")).unwrap();
        symlink(r.join("cpu,cpuacct"), r.join("cpuacct")).unwrap();
        fs::write(r.join("unified/cgroup.controllers"), "hugetlb\n").unwrap();
        let root = CgroupRoot::at(r).unwrap();
        assert!(!root.is_v2());
        assert!(root.is_hybrid());
        assert_eq!(root.v1_controllers(), ["cpu", "cpuacct", "memory", "pids"]);
        let Layout::V1 { hierarchies, .. } = &root.layout else {
            panic!("expected v1");
        };
        assert_eq!(hierarchies.len(), 3, "{hierarchies:?}");
    }

    #[test]
    fn an_empty_directory_is_no_cgroup_root() {
        let t = tempfile::tempdir().unwrap();
        let err = CgroupRoot::at(t.path()).unwrap_err();
        assert_eq!(err.kind(), CgroupErrorKind::Unsupported);
        let err = CgroupRoot::at(&t.path().join("missing")).unwrap_err();
        assert!(err.is_not_found());
    }
}
