//! `linux.cgroupsPath` to a relative cgroup path.
//!
//! Two spellings reach a runtime:
//!
//! - cgroupfs: `/kubepods/burstable/pod1/ctr` (or without the leading slash). Both are taken
//!   relative to the root of every hierarchy.
//! - systemd: `slice:prefix:name`, e.g. `kubepods-burstable.slice:cri-containerd:abc`, which
//!   names the scope `cri-containerd-abc.scope` inside the slice. Slices nest by their dashes:
//!   `a-b-c.slice` lives at `a.slice/a-b.slice/a-b-c.slice`.
//!
//! A path that starts with `/` is always cgroupfs; otherwise a path containing `:` must be the
//! three-part systemd form.
//!
//! # Limitations
//!
//! The systemd form is only translated into directories: amphi does not ask systemd (there
//! is no D-Bus client) to create the slice or scope, so systemd does not know the unit.
//! Relative cgroupfs paths are taken from the hierarchy root, not from the shim's own
//! cgroup (runc's rule), because the shim is not necessarily in a meaningful cgroup.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use super::CgroupError;

/// Where a container's cgroup lives below each hierarchy root (never absolute, never
/// empty, no `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupPath {
    rel: PathBuf,
}

impl CgroupPath {
    /// The path relative to a hierarchy root, e.g. `kubepods/pod1/ctr`.
    pub fn relative(&self) -> &Path {
        &self.rel
    }

    /// The path's components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.rel.iter().filter_map(|c| c.to_str())
    }

    /// This path placed under a hierarchy root.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.rel)
    }

    fn from_components(original: &str, parts: &[&str]) -> Result<CgroupPath, CgroupError> {
        let mut rel = PathBuf::new();
        for part in parts {
            check_component(original, part)?;
            rel.push(part);
        }
        if rel.as_os_str().is_empty() {
            return Err(invalid(original, "it names the root cgroup"));
        }
        Ok(CgroupPath { rel })
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.rel.display())
    }
}

/// Turns `linux.cgroupsPath` into a [`CgroupPath`].
///
/// An empty `cgroups_path` gives `/amphi/<container_id>`. See the module documentation for
/// the accepted forms.
pub fn parse_cgroups_path(
    cgroups_path: &str,
    container_id: &str,
) -> Result<CgroupPath, CgroupError> {
    if cgroups_path.is_empty() {
        return CgroupPath::from_components(container_id, &["amphi", container_id]);
    }
    if !cgroups_path.starts_with('/') && cgroups_path.contains(':') {
        return parse_systemd(cgroups_path);
    }
    let parts: Vec<&str> = cgroups_path.split('/').filter(|p| !p.is_empty()).collect();
    CgroupPath::from_components(cgroups_path, &parts)
}

fn parse_systemd(original: &str) -> Result<CgroupPath, CgroupError> {
    let fields: Vec<&str> = original.split(':').collect();
    let [slice, prefix, name] = fields.as_slice() else {
        return Err(invalid(
            original,
            "systemd form must be \"slice:prefix:name\"",
        ));
    };
    if name.is_empty() {
        return Err(invalid(original, "systemd unit name is empty"));
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let mut parts = expand_slice(original, slice)?;
    let unit = if name.ends_with(".slice") {
        (*name).to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    parts.push(unit);
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    CgroupPath::from_components(original, &refs)
}

/// `a-b-c.slice` -> [`a.slice`, `a-b.slice`, `a-b-c.slice`]; `-.slice` (the root slice) -> [].
fn expand_slice(original: &str, slice: &str) -> Result<Vec<String>, CgroupError> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(invalid(original, "the slice must end in \".slice\""));
    };
    if stem == "-" {
        return Ok(Vec::new());
    }
    if stem.is_empty() || stem.contains('/') {
        return Err(invalid(original, "malformed slice name"));
    }
    let words: Vec<&str> = stem.split('-').collect();
    if words.iter().any(|w| w.is_empty()) {
        return Err(invalid(
            original,
            "slice name has an empty dash-separated part",
        ));
    }
    Ok((1..=words.len())
        .map(|n| format!("{}.slice", words[..n].join("-")))
        .collect())
}

fn check_component(original: &str, part: &str) -> Result<(), CgroupError> {
    if part == "." || part == ".." {
        return Err(invalid(original, "\".\" and \"..\" are not allowed"));
    }
    if part.is_empty() || part.contains('/') || part.contains('\0') {
        return Err(invalid(original, "malformed path component"));
    }
    Ok(())
}

fn invalid(path: &str, reason: &str) -> CgroupError {
    CgroupError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cgroup::CgroupErrorKind;

    fn parse(p: &str) -> String {
        parse_cgroups_path(p, "ctr1").unwrap().to_string()
    }

    fn reject(p: &str) -> String {
        let err = parse_cgroups_path(p, "ctr1").unwrap_err();
        assert_eq!(err.kind(), CgroupErrorKind::InvalidArgument, "{p}");
        err.to_string()
    }

    #[test]
    fn cgroupfs_paths_are_relative_to_every_root() {
        assert_eq!(
            parse("/kubepods/burstable/pod1/ctr1"),
            "/kubepods/burstable/pod1/ctr1"
        );
        assert_eq!(parse("a/b"), "/a/b");
        assert_eq!(parse("//a///b/"), "/a/b");
        let p = parse_cgroups_path("/a/b", "x").unwrap();
        assert_eq!(p.relative(), Path::new("a/b"));
        assert_eq!(
            p.under(Path::new("/sys/fs/cgroup/memory")),
            Path::new("/sys/fs/cgroup/memory/a/b")
        );
        assert_eq!(p.components().collect::<Vec<_>>(), ["a", "b"]);
        // A leading slash makes a colon part of a plain directory name.
        assert_eq!(parse("/odd:name"), "/odd:name");
    }

    #[test]
    fn empty_path_defaults_under_amphi() {
        assert_eq!(parse(""), "/amphi/ctr1");
        let err = parse_cgroups_path("", "../evil").unwrap_err();
        assert_eq!(err.kind(), CgroupErrorKind::InvalidArgument);
    }

    #[test]
    fn systemd_form_expands_slices_and_names_a_scope() {
        assert_eq!(
            parse("kubepods-burstable-pod1.slice:cri-containerd:abc"),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            parse("system.slice:docker:abc"),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(parse(":amphi:abc"), "/system.slice/amphi-abc.scope");
        assert_eq!(parse("user.slice::abc"), "/user.slice/abc.scope");
        assert_eq!(parse("-.slice:p:abc"), "/p-abc.scope");
        assert_eq!(
            parse("kubepods.slice:p:kubepods-besteffort.slice"),
            "/kubepods.slice/kubepods-besteffort.slice"
        );
    }

    #[test]
    fn bad_paths_are_rejected_with_a_reason() {
        assert!(reject("/a/../b").contains("\"..\""));
        assert!(reject("a/./b").contains("\"..\""));
        assert!(reject("/").contains("root cgroup"));
        assert!(reject("a:b").contains("slice:prefix:name"));
        assert!(reject("a:b:c:d").contains("slice:prefix:name"));
        assert!(reject("system:p:n").contains(".slice"));
        assert!(reject("a--b.slice:p:n").contains("empty dash-separated"));
        assert!(reject("-a.slice:p:n").contains("empty dash-separated"));
        assert!(reject("system.slice:p:").contains("name is empty"));
        assert!(reject("system.slice:p:../x").contains("malformed"));
        reject("/a/b\0c");
    }
}
