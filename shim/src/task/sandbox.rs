//! Building and tearing down one container's sandbox: everything Create does before the
//! init waits on its start barrier, in order, with a rollback that leaves nothing behind
//! when any step fails.
//!
//! 1. read `config.json`;
//! 2. mount the rootfs containerd handed us;
//! 3. turn the spec into a plan;
//! 4. create the cgroup;
//! 5. open stdio;
//! 6. persist what `delete` needs;
//! 7. launch the init helper (placed in the cgroup before it unshares anything).

use std::path::{Path, PathBuf};

use amphi_linux_executor::cgroup::{Cgroup, CgroupRoot, parse_cgroups_path};
use amphi_linux_executor::launch;
use amphi_linux_executor::plan::InitPlan;
use containerd_shim::protos::api::CreateTaskRequest;
use containerd_shim::util::mount_rootfs;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::Parts;
use crate::error::{Error, Result};
use crate::state::Persisted;
use crate::stdio;

/// Undoes the steps done so far unless disarmed.
struct Rollback<'a> {
    armed: bool,
    bundle: &'a Path,
    mounted_rootfs: Option<PathBuf>,
    cgroup: Option<Cgroup>,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all(libc::SIGKILL);
            if let Err(e) = cg.remove() {
                log::warn!("rollback: remove cgroup: {e}");
            }
        }
        if let Some(rootfs) = self.mounted_rootfs.take() {
            unmount_rootfs(&rootfs);
        }
        Persisted::remove(self.bundle);
    }
}

pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    if !path.exists() {
        return Err(Error::InvalidArgument(format!(
            "not found: {}",
            path.display()
        )));
    }
    Spec::load(&path)
        .map_err(|e| Error::InvalidArgument(format!("invalid {}: {e}", path.display())))
}

/// Where the container's root filesystem is, and whether the shim must mount it.
fn rootfs_path(req: &CreateTaskRequest, spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let path = if req.rootfs.is_empty() {
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("config.json has no root".into()))?;
        bundle.join(root.path())
    } else {
        bundle.join("rootfs")
    };
    if !path.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "rootfs not found: {}",
            path.display()
        )));
    }
    Ok(path)
}

/// A pid namespace of its own means the kernel kills everything when the init dies;
/// otherwise (host or pod pid namespace) the shim must.
fn shares_pid_namespace(spec: &Spec) -> bool {
    let own = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|nss| {
            nss.iter()
                .any(|ns| ns.typ() == LinuxNamespaceType::Pid && ns.path().is_none())
        });
    !own
}

pub async fn create(req: &CreateTaskRequest, cgroups: &CgroupRoot, exe: &Path) -> Result<Parts> {
    if req.terminal {
        return Err(Error::InvalidArgument(
            "terminal=true is not supported yet".into(),
        ));
    }
    if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
        return Err(Error::InvalidArgument(
            "restoring from a checkpoint is not supported".into(),
        ));
    }
    let bundle = PathBuf::from(&req.bundle);
    let spec = load_spec(&bundle)?;
    let rootfs = rootfs_path(req, &spec, &bundle)?;
    let mut rollback = Rollback {
        armed: true,
        bundle: &bundle,
        mounted_rootfs: None,
        cgroup: None,
    };

    for m in &req.rootfs {
        mount_rootfs(m, &rootfs).await?;
        rollback.mounted_rootfs = Some(rootfs.clone());
    }

    let plan = InitPlan::from_spec(&spec, &rootfs)?;
    for warning in &plan.warnings {
        log::warn!("container {}: {warning}", req.id);
    }
    let linux = spec.linux().as_ref();
    let cgroups_path = linux
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroup_path = parse_cgroups_path(&cgroups_path, &req.id)
        .map_err(|e| Error::InvalidArgument(format!("linux.cgroupsPath: {e}")))?;
    let cgroup = Cgroup::create(
        cgroups,
        &cgroup_path,
        linux.and_then(|l| l.resources().as_ref()),
    )
    .map_err(Error::cgroup("create"))?;
    rollback.cgroup = Some(cgroup.clone());

    let (io, keepalive) = stdio::open(&req.stdin, &req.stdout, &req.stderr)?;

    let mut persisted = Persisted {
        id: req.id.clone(),
        pid: 0,
        cgroup: cgroup_path.to_string(),
        mounted_rootfs: rollback.mounted_rootfs.clone(),
    };
    persisted.save(&bundle)?;

    let exe = exe.to_path_buf();
    let placed = cgroup.clone();
    let created = tokio::task::spawn_blocking(move || {
        launch::create(&exe, &plan, io, &|pid| {
            placed.add_pid(pid).map_err(std::io::Error::other)
        })
    })
    .await
    .map_err(|e| Error::Launch(std::io::Error::other(e).into()))??;

    for warning in created.warnings() {
        log::warn!("container {}: {warning}", req.id);
    }
    persisted.pid = created.pid();
    persisted.save(&bundle)?;
    rollback.armed = false;
    let mounted_rootfs = rollback.mounted_rootfs.take();
    Ok(Parts {
        created,
        cgroup,
        keepalive,
        mounted_rootfs,
        kill_all_on_exit: shares_pid_namespace(&spec),
    })
}

fn unmount_rootfs(rootfs: &Path) {
    if let Err(e) = containerd_shim::mount::umount_recursive(rootfs.to_str(), libc::MNT_DETACH) {
        log::warn!("unmount {}: {e}", rootfs.display());
    }
}

/// Removes what Create built. Every step tolerates "already gone", so it can run again
/// (the `delete` action after a crashed server does the same through [`destroy_persisted`]).
pub fn destroy(cgroup: &Cgroup, mounted_rootfs: Option<&Path>, bundle: &str) -> Result<()> {
    cgroup.remove().map_err(Error::cgroup("remove"))?;
    if let Some(rootfs) = mounted_rootfs {
        unmount_rootfs(rootfs);
    }
    Persisted::remove(Path::new(bundle));
    Ok(())
}

/// The `delete` action: kill whatever is left of the container, then [`destroy`] it.
pub fn destroy_persisted(bundle: &Path) -> Result<Option<Persisted>> {
    let Some(p) = Persisted::load(bundle)? else {
        return Ok(None);
    };
    let root = CgroupRoot::detect().map_err(Error::cgroup("detect"))?;
    let path = parse_cgroups_path(&p.cgroup, &p.id)
        .map_err(|e| Error::InvalidArgument(format!("persisted cgroup {}: {e}", p.cgroup)))?;
    let cgroup = Cgroup::load(&root, &path);
    if let Err(e) = cgroup.kill_all(libc::SIGKILL) {
        log::warn!("delete {}: kill remaining processes: {e}", p.id);
    }
    // The pid is persisted only once the init is in the cgroup, so killing the cgroup
    // reaches it without the risk of signalling a recycled pid.
    // rmdir fails while killed processes are still exiting; remove() retries briefly.
    destroy(
        &cgroup,
        p.mounted_rootfs.as_deref(),
        &bundle.to_string_lossy(),
    )?;
    Ok(Some(p))
}
