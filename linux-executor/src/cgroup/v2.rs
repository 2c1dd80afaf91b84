//! The cgroup v2 driver: one directory in the unified hierarchy.
//!
//! Controllers only show up in a cgroup when its parent lists them in
//! `cgroup.subtree_control`, so creation enables, top-down from the root, every controller
//! each ancestor offers. Resource settings are in [`super::v2_apply`].

use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use super::{
    CgroupError, CgroupPath,
    fsutil::{ensure_dir, mkdir_levels, read, read_flat_keyed, read_opt, remove_dir, write},
    stats::{self, CgroupStats, CgroupVersion},
};

/// A cgroup on a unified (v2) host.
#[derive(Debug, Clone)]
pub(crate) struct V2Cgroup {
    root: PathBuf,
    dir: PathBuf,
    emulated: bool,
}

impl V2Cgroup {
    pub(crate) fn new(root: &Path, path: &CgroupPath, emulated: bool) -> V2Cgroup {
        V2Cgroup {
            root: root.to_path_buf(),
            dir: path.under(root),
            emulated,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// True on a test's fake tree (ordinary directories).
    pub(crate) fn emulated(&self) -> bool {
        self.emulated
    }

    /// Creates the directory (recording new levels in `created`) and enables controllers
    /// in every ancestor.
    pub(crate) fn create_dir(
        &self,
        path: &CgroupPath,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), CgroupError> {
        mkdir_levels(&self.root, path.relative(), created)?;
        let mut ancestor = self.root.clone();
        for comp in path.components() {
            enable_subtree_controllers(&ancestor)?;
            ancestor.push(comp);
        }
        Ok(())
    }

    pub(crate) fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    pub(crate) fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    pub(crate) fn has_freezer(&self) -> bool {
        self.dir.join("cgroup.freeze").exists()
    }

    /// Writes `1` to `cgroup.freeze` and waits for `cgroup.events` to say `frozen 1`.
    pub(crate) fn freeze(&self, timeout: Duration) -> Result<(), CgroupError> {
        let freeze = self.dir.join("cgroup.freeze");
        if !freeze.exists() {
            return Err(CgroupError::Unsupported {
                what: "pause".into(),
                file: freeze,
            });
        }
        write(&freeze, "1")?;
        let events = self.dir.join("cgroup.events");
        let deadline = Instant::now() + timeout;
        loop {
            if read_flat_keyed(&events)?.get("frozen") == Some(&1) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Err(e) = write(&freeze, "0") {
                    log::warn!("cgroup: thaw after failed freeze: {e}");
                }
                return Err(CgroupError::Timeout {
                    path: events,
                    state: "frozen 1",
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn thaw(&self) -> Result<(), CgroupError> {
        let freeze = self.dir.join("cgroup.freeze");
        if !freeze.exists() {
            return Err(CgroupError::Unsupported {
                what: "resume".into(),
                file: freeze,
            });
        }
        write(&freeze, "0")
    }

    /// Kills every process of the subtree at once through `cgroup.kill` (Linux 5.14+).
    /// Returns false when the kernel has no such file.
    pub(crate) fn kill_via_cgroup_kill(&self) -> Result<bool, CgroupError> {
        let kill = self.dir.join("cgroup.kill");
        if !kill.exists() {
            return Ok(false);
        }
        write(&kill, "1")?;
        Ok(true)
    }

    pub(crate) fn stats(&self) -> Result<CgroupStats, CgroupError> {
        ensure_dir(&self.dir)?;
        Ok(CgroupStats {
            version: CgroupVersion::V2,
            cpu: stats::read_v2_cpu(&self.dir)?,
            memory: stats::read_v2_memory(&self.dir)?,
            pids: stats::read_pids(&self.dir)?,
            io: stats::read_v2_io(&self.dir)?,
        })
    }

    pub(crate) fn remove(&self) -> Result<(), CgroupError> {
        remove_dir(&self.dir, self.emulated)
    }
}

/// Enables in `dir/cgroup.subtree_control` every controller `dir/cgroup.controllers`
/// offers that is not enabled yet: all in one write, and if the kernel refuses that, one
/// write per controller with refusals only logged. A controller that cannot be enabled
/// (for example `cpu` while a realtime task sits in the parent) must not block the others;
/// a setting that needs it then fails in `apply` with the missing file named.
fn enable_subtree_controllers(dir: &Path) -> Result<(), CgroupError> {
    let Some(available) = read_opt(&dir.join("cgroup.controllers"))? else {
        return Ok(());
    };
    let control = dir.join("cgroup.subtree_control");
    let enabled = read(&control)?;
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<String> = available
        .split_whitespace()
        .filter(|c| !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if write(&control, &missing.join(" ")).is_ok() {
        return Ok(());
    }
    for c in &missing {
        if let Err(e) = write(&control, c) {
            log::debug!("cgroup: cannot enable {c} below {}: {e}", dir.display());
        }
    }
    Ok(())
}
