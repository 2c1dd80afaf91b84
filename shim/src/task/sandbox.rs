//! Building and tearing down one container's sandbox: everything Create does before the
//! init waits on its start barrier, in order, with a rollback that leaves nothing behind
//! when any step fails.
//!
//! 1. read `config.json`;
//! 2. mount the rootfs containerd handed us;
//! 3. decide the container's kind (Linux or Wasm, see [`crate::dispatch`]; only when
//!    the spec alone does not decide, ask containerd about the image, see
//!    [`crate::image`]) and turn the spec into a plan; a Wasm module that is a layer of
//!    the image is streamed from containerd's content store into `<bundle>/`
//!    [`LAYER_MODULE`], which the init opens before entering the container and the shim
//!    removes as soon as the init has it (compiled code comes from the module cache);
//! 4. create the cgroup;
//! 5. open stdio (with a terminal: the FIFOs, attached to the pty master the init sends
//!    back in step 7);
//! 6. persist what `delete` needs;
//! 7. launch the init helper (placed in the cgroup before it unshares anything).

use std::path::{Path, PathBuf};

use amphi_linux_executor::cgroup::{Cgroup, CgroupRoot, parse_cgroups_path};
use amphi_linux_executor::launch;
use amphi_linux_executor::plan::{InitPlan, WasmWorkload, Workload, split_entrypoint};
use amphi_linux_executor::rootfs_lookup::{read_head_in_root, resolve_in_root};
use containerd_shim::protos::api::CreateTaskRequest;
use containerd_shim::util::mount_rootfs;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::Parts;
use super::exec::ExecBase;
use crate::dispatch::{self, Decision, Entrypoint, Kind, Module};
use crate::error::{Error, Result};
use crate::image::{self, ContainerdApi};
use crate::state::Persisted;
use crate::stdio;

/// Where a module read from an image layer waits, in the bundle, for the init to open it.
pub const LAYER_MODULE: &str = "amphi-module.wasm";

/// Undoes the steps done so far unless disarmed.
struct Rollback<'a> {
    armed: bool,
    bundle: &'a Path,
    mounted_rootfs: Option<PathBuf>,
    cgroup: Option<Cgroup>,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        // Needed only until the init has opened it, whatever happens.
        remove_layer_module(self.bundle);
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

pub async fn create(
    req: &CreateTaskRequest,
    cgroups: &CgroupRoot,
    exe: &Path,
    containerd: &ContainerdApi,
) -> Result<Parts> {
    if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
        return Err(Error::InvalidArgument(
            "restoring from a checkpoint is not supported".into(),
        ));
    }
    let options = crate::options::from_any(req.options.as_ref())?;
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

    let (decision, wasm) = decide(&req.id, &spec, &rootfs, &bundle, containerd).await?;
    log::info!(
        "container {}: {} ({})",
        req.id,
        decision.kind,
        decision.reason
    );
    let mut plan = InitPlan::from_spec(&spec, &rootfs)?;
    if let Some(wasm) = wasm {
        let dir = crate::wasm::cache_dir(&options);
        create_cache_dir(&dir)?;
        plan = plan.with_workload(Workload::Wasm(
            wasm.with_cache(dir, crate::wasm::cache_max_bytes(&options)),
        ));
    }
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

    let (io, mut keepalive) = stdio::open(&req.stdin, &req.stdout, &req.stderr, req.terminal)?;

    let mut persisted = Persisted {
        id: req.id.clone(),
        decision: Some(decision),
        pid: 0,
        cgroup: cgroup_path.to_string(),
        mounted_rootfs: rollback.mounted_rootfs.clone(),
    };
    persisted.save(&bundle)?;

    let exec_base = ExecBase {
        plan: plan.clone(),
        spec: spec.clone(),
        wasm_cache: (
            crate::wasm::cache_dir(&options),
            crate::wasm::cache_max_bytes(&options),
        ),
    };
    let exe = exe.to_path_buf();
    let placed = cgroup.clone();
    let mut created = tokio::task::spawn_blocking(move || {
        launch::create(&exe, &plan, io, &|pid| {
            placed.add_pid(pid).map_err(std::io::Error::other)
        })
    })
    .await
    .map_err(|e| Error::Launch(std::io::Error::other(e).into()))??;

    for warning in created.warnings() {
        log::warn!("container {}: {warning}", req.id);
    }
    if let Some(master) = created.take_console() {
        keepalive.attach_terminal(master)?;
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
        exec_base,
    })
}

/// How many leading bytes of the entrypoint dispatch looks at.
const HEAD: usize = 512;

/// Runs the dispatch rules for this container (reading the image through containerd only
/// when the spec alone does not decide); for Wasm, also the workload (the module, from the
/// image's wasm layer or resolved in the rootfs, the export of a `path#export` entrypoint,
/// the memory limit).
async fn decide(
    id: &str,
    spec: &Spec,
    rootfs: &Path,
    bundle: &Path,
    containerd: &ContainerdApi,
) -> Result<(Decision, Option<WasmWorkload>)> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("config.json has no process".into()))?;
    let arg0 = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .ok_or_else(|| Error::InvalidArgument("process.args is empty".into()))?;
    let (name, export) = split_entrypoint(arg0)?;
    let path_env = process.env().as_ref().and_then(|env| {
        env.iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .map(str::to_string)
    });
    let entry = find_entrypoint(rootfs, name, path_env.as_deref())?;
    let annotations = spec.annotations().clone().unwrap_or_default();
    let mut image = if dispatch::needs_image(&annotations, &entry) {
        image::inspect(&containerd.address, &containerd.namespace, id).await
    } else {
        None
    };
    let decision = dispatch::decide(&annotations, image.as_ref(), &entry)?;
    if decision.kind == Kind::Linux {
        return Ok((decision, None));
    }
    if image.is_none() && matches!(entry, Entrypoint::Missing { .. }) {
        // Wasm by annotation, and nothing in the rootfs: the image may carry the module.
        image = image::inspect(&containerd.address, &containerd.namespace, id).await;
    }
    let workload = match dispatch::wasm_module(image.as_ref(), &entry)? {
        Module::Rootfs(path) => WasmWorkload::new(&path, export, spec)?,
        Module::Layer(layer) => {
            let image_name = image.as_ref().map(|i| i.name.as_str()).unwrap_or_default();
            let file = bundle.join(LAYER_MODULE);
            let started = std::time::Instant::now();
            image::fetch_layer(containerd, image_name, &layer, &file).await?;
            log::debug!(
                "container {id}: layer {} ({} bytes) read in {:?}",
                layer.digest,
                layer.size,
                started.elapsed()
            );
            let name = format!("layer {} of image {image_name}", layer.digest);
            WasmWorkload::from_host_file(file, &name, export, spec)
        }
    };
    Ok((decision, Some(workload)))
}

fn remove_layer_module(bundle: &Path) {
    let path = bundle.join(LAYER_MODULE);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        log::warn!("remove {}: {e}", path.display());
    }
}

/// Looks `name` up in the rootfs (the container's `PATH` for a bare name) and reads the
/// first bytes dispatch looks at.
pub(super) fn find_entrypoint(
    rootfs: &Path,
    name: &str,
    path_env: Option<&str>,
) -> Result<Entrypoint> {
    let missing = || Entrypoint::Missing {
        name: name.to_string(),
    };
    let Some(path) = resolve_in_root(rootfs, name, path_env) else {
        return Ok(missing());
    };
    match read_head_in_root(rootfs, &path, HEAD) {
        Ok(head) => Ok(Entrypoint::Found { path, head }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(missing()),
        Err(e) => Err(Error::io("read entrypoint", &path, e)),
    }
}

pub(super) fn create_cache_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create wasm cache", dir.display(), e))
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
