//! The container's `/sys/fs/cgroup` (a `cgroup`/`cgroup2` entry of `mounts`).
//!
//! - Pure cgroup v2 host (`/sys/fs/cgroup` is cgroup2): mount a `cgroup2` filesystem; with a
//!   new cgroup namespace its root is the container's cgroup.
//! - cgroup v1 or hybrid host: a tmpfs at the destination, then one directory per host
//!   hierarchy (`cpu,cpuacct`, `memory`, `name=systemd` as `systemd`, `unified`...). With a
//!   new cgroup namespace each is a fresh mount of that hierarchy (rooted at the container's
//!   cgroup by the kernel); otherwise the container's own cgroup directory is bind-mounted
//!   from the host (runc's v1 approach). Co-mounted controllers get symlinks (`cpu ->
//!   cpu,cpuacct`). The tmpfs is remounted read-only when the entry says `ro`.
//!
//! The helper was placed in its cgroups by the shim before it unshared anything, so
//! `/proc/self/cgroup` names the container's cgroups.
//!
//! Limitations: hierarchies are found in the helper's `/proc/self/mountinfo` under
//! `/sys/fs/cgroup/`; an unusual host layout elsewhere is not mirrored.

use std::path::PathBuf;

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use nix::unistd::symlinkat;

use super::error::InitError;
use super::mounts::{bind, reopen};
use super::paths::{fd_path, mkdir_all};
use super::rootfs::Ctx;
use crate::plan::{MountPlan, NamespaceKind};

/// One cgroup hierarchy mounted on the host.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Hierarchy {
    /// Host mount point (`/sys/fs/cgroup/cpu,cpuacct`).
    pub mount_point: PathBuf,
    /// Root of the mount inside the hierarchy (usually `/`).
    pub root: String,
    /// `true` for cgroup2.
    pub v2: bool,
    /// Controllers and `name=` options of a v1 hierarchy.
    pub controllers: Vec<String>,
}

/// Parses `/proc/self/mountinfo` for cgroup hierarchies under `/sys/fs/cgroup/`.
pub(super) fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mount_point), Some(fstype), Some(super_opts)) = (
            fields.get(3),
            fields.get(4),
            rfields.first(),
            rfields.get(2),
        ) else {
            continue;
        };
        let v2 = *fstype == "cgroup2";
        if !(v2 || *fstype == "cgroup") || !mount_point.starts_with("/sys/fs/cgroup/") {
            continue;
        }
        let controllers = if v2 {
            Vec::new()
        } else {
            super_opts
                .split(',')
                .filter(|o| is_controller_option(o))
                .map(str::to_string)
                .collect()
        };
        out.push(Hierarchy {
            mount_point: PathBuf::from(unescape(mount_point)),
            root: unescape(root),
            v2,
            controllers,
        });
    }
    out
}

fn is_controller_option(o: &str) -> bool {
    let flag = matches!(
        o,
        "rw" | "ro" | "xattr" | "noprefix" | "clone_children" | "cpuset_v2_mode" | "nsdelegate"
    );
    o.starts_with("name=") || (!flag && !o.contains('='))
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Parses `/proc/self/cgroup` into (controllers, path) pairs (`""` controllers for v2).
pub(super) fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let list = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((list, path.to_string()))
        })
        .collect()
}

/// The host directory of our own cgroup in `h`, if `/proc/self/cgroup` has one.
fn own_dir(h: &Hierarchy, own: &[(Vec<String>, String)]) -> Option<PathBuf> {
    let (_, path) = own.iter().find(|(controllers, _)| {
        if h.v2 {
            controllers.is_empty()
        } else {
            !controllers.is_empty() && controllers.iter().all(|c| h.controllers.contains(c))
        }
    })?;
    let rel = path
        .strip_prefix(h.root.trim_end_matches('/'))
        .unwrap_or(path);
    Some(h.mount_point.join(rel.trim_start_matches('/')))
}

/// Mounts the cgroup entry `m`.
pub(super) fn mount_cgroup(ctx: &mut Ctx<'_>, m: &MountPlan) -> Result<(), InitError> {
    let dest = &m.destination;
    let target = mkdir_all(ctx.root(), dest)?;
    let host_v2 = statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
        .map_err(InitError::sys("statfs", "/sys/fs/cgroup"))?;
    if host_v2 {
        return mount(
            Some("cgroup2"),
            fd_path(&target).as_str(),
            Some("cgroup2"),
            m.ms_flags(),
            None::<&str>,
        )
        .map_err(InitError::sys("mount cgroup2 on", dest.display()));
    }
    let base = m.ms_flags() & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    mount(
        Some("tmpfs"),
        fd_path(&target).as_str(),
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )
    .map_err(InitError::sys("mount tmpfs for cgroups on", dest.display()))?;

    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| InitError::sys("read", "/proc/self/mountinfo")(io_errno(&e)))?;
    let own_text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| InitError::sys("read", "/proc/self/cgroup")(io_errno(&e)))?;
    let own = parse_proc_cgroup(&own_text);
    let new_cgroupns = ctx.plan.creates_namespace(NamespaceKind::Cgroup);
    let tmpfs = reopen(ctx, dest)?;
    for h in parse_mountinfo(&mountinfo) {
        let Some(name) = h
            .mount_point
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        let sub = dest.join(&name);
        if new_cgroupns {
            let sub_fd = mkdir_all(ctx.root(), &sub)?;
            let (fstype, data) = if h.v2 {
                ("cgroup2", String::new())
            } else {
                ("cgroup", h.controllers.join(","))
            };
            mount(
                Some(fstype),
                fd_path(&sub_fd).as_str(),
                Some(fstype),
                m.ms_flags(),
                (!data.is_empty()).then_some(data.as_str()),
            )
            .map_err(InitError::sys(
                format!("mount {fstype} ({data}) on"),
                sub.display(),
            ))?;
        } else if let Some(source) = own_dir(&h, &own) {
            bind(ctx, &source, &sub, false, m.ms_flags())?;
        }
        if h.controllers.len() > 1 {
            for c in &h.controllers {
                match symlinkat(name.as_str(), &tmpfs, c.as_str()) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(InitError::sys(
                            "symlink cgroup controller",
                            dest.join(c).display(),
                        )(e));
                    }
                }
            }
        }
    }
    if m.readonly() {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base;
        mount(
            None::<&str>,
            fd_path(&tmpfs).as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(InitError::sys("remount read-only", dest.display()))?;
    }
    Ok(())
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
37 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
";

    const PROC_CGROUP: &str = "\
5:memory:/default/c1
4:cpu,cpuacct:/default/c1
1:name=systemd:/init.scope
0::/
";

    #[test]
    fn hierarchies_and_own_dirs() {
        let hs = parse_mountinfo(MOUNTINFO);
        assert_eq!(hs.len(), 4, "{hs:?}");
        assert!(hs[0].v2);
        assert_eq!(hs[1].controllers, ["name=systemd"]);
        assert_eq!(hs[2].controllers, ["cpu", "cpuacct"]);
        let own = parse_proc_cgroup(PROC_CGROUP);
        assert_eq!(
            own_dir(&hs[2], &own),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/default/c1"))
        );
        assert_eq!(
            own_dir(&hs[3], &own),
            Some(PathBuf::from("/sys/fs/cgroup/memory/default/c1"))
        );
        assert_eq!(
            own_dir(&hs[0], &own),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            own_dir(&hs[1], &own),
            Some(PathBuf::from("/sys/fs/cgroup/systemd/init.scope"))
        );
    }
}
