//! The cgroup v1 driver: one directory per mounted hierarchy.
//!
//! A container's cgroup is the same relative path in every hierarchy amphi knows (see
//! `root::V1_CONTROLLERS`); each operation goes to the hierarchy of the controller it
//! needs. Resource settings are in [`super::v1_apply`].

use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use super::{
    CgroupError, CgroupPath,
    fsutil::{self, ensure_dir, mkdir_levels, read, read_opt, remove_dir, write},
    root::V1Hierarchy,
    stats::{self, CgroupStats, CgroupVersion},
};

/// One v1 hierarchy's directory for this cgroup.
#[derive(Debug, Clone)]
struct Member {
    hierarchy: PathBuf,
    controllers: Vec<String>,
    dir: PathBuf,
}

/// A cgroup on a v1 (or hybrid) host.
#[derive(Debug, Clone)]
pub(crate) struct V1Cgroup {
    members: Vec<Member>,
    /// The directory the controllers were found under (for error messages).
    root: PathBuf,
    emulated: bool,
}

/// Controllers preferred for reading `cgroup.procs`, most specific first.
const PROCS_PREFERENCE: &[&str] = &["pids", "freezer", "memory", "cpu", "cpuacct"];

impl V1Cgroup {
    pub(crate) fn new(
        root: &Path,
        hierarchies: &[V1Hierarchy],
        path: &CgroupPath,
        emulated: bool,
    ) -> V1Cgroup {
        let members = hierarchies
            .iter()
            .map(|h| Member {
                hierarchy: h.dir.clone(),
                controllers: h.controllers.clone(),
                dir: path.under(&h.dir),
            })
            .collect();
        V1Cgroup {
            members,
            root: root.to_path_buf(),
            emulated,
        }
    }

    /// The cgroup's directory in the hierarchy of `controller`, if mounted.
    pub(crate) fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.members
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
            .map(|m| m.dir.as_path())
    }

    /// Like [`Self::dir_of`], but a missing controller is an error naming `what` was asked.
    pub(crate) fn controller(&self, controller: &str, what: &str) -> Result<&Path, CgroupError> {
        self.dir_of(controller)
            .ok_or_else(|| CgroupError::Unsupported {
                what: what.to_string(),
                file: self.root.join(controller),
            })
    }

    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        self.members.iter().map(|m| m.dir.clone()).collect()
    }

    fn procs_dir(&self) -> Option<&Path> {
        PROCS_PREFERENCE
            .iter()
            .find_map(|c| self.dir_of(c))
            .or_else(|| self.members.first().map(|m| m.dir.as_path()))
    }

    /// Creates the cgroup in every hierarchy, recording each directory made in `created`.
    pub(crate) fn create_dirs(
        &self,
        path: &CgroupPath,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), CgroupError> {
        for m in &self.members {
            mkdir_levels(&m.hierarchy, path.relative(), created)?;
            if m.controllers.iter().any(|c| c == "cpuset") {
                fill_cpuset_levels(&m.hierarchy, path)?;
            }
        }
        Ok(())
    }

    pub(crate) fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for m in &self.members {
            write(&m.dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    pub(crate) fn procs_file(&self) -> Option<PathBuf> {
        self.procs_dir().map(|d| d.join("cgroup.procs"))
    }

    pub(crate) fn has_freezer(&self) -> bool {
        self.dir_of("freezer").is_some()
    }

    /// Writes `FROZEN` and waits until the kernel reports it (it shows `FREEZING` while
    /// tasks are still running). On timeout the cgroup is thawed again.
    pub(crate) fn freeze(&self, timeout: Duration) -> Result<(), CgroupError> {
        let state = self.controller("freezer", "pause")?.join("freezer.state");
        write(&state, "FROZEN")?;
        let deadline = Instant::now() + timeout;
        loop {
            if read(&state)?.trim() == "FROZEN" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Err(e) = write(&state, "THAWED") {
                    log::warn!("cgroup: thaw after failed freeze: {e}");
                }
                return Err(CgroupError::Timeout {
                    path: state,
                    state: "FROZEN",
                });
            }
            thread::sleep(Duration::from_millis(10));
            // Writing again makes the kernel retry tasks that were busy last time.
            write(&state, "FROZEN")?;
        }
    }

    pub(crate) fn thaw(&self) -> Result<(), CgroupError> {
        let state = self.controller("freezer", "resume")?.join("freezer.state");
        write(&state, "THAWED")
    }

    pub(crate) fn stats(&self) -> Result<CgroupStats, CgroupError> {
        if let Some(dir) = self.procs_dir() {
            ensure_dir(dir)?;
        }
        Ok(CgroupStats {
            version: CgroupVersion::V1,
            cpu: stats::read_v1_cpu(self.dir_of("cpuacct"), self.dir_of("cpu"))?,
            memory: self
                .dir_of("memory")
                .map(stats::read_v1_memory)
                .transpose()?
                .unwrap_or_default(),
            pids: self
                .dir_of("pids")
                .map(stats::read_pids)
                .transpose()?
                .unwrap_or_default(),
            io: self
                .dir_of("blkio")
                .map(stats::read_v1_blkio)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// Removes the cgroup from every hierarchy; tries them all and reports the first error.
    pub(crate) fn remove(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for m in &self.members {
            if let Err(e) = remove_dir(&m.dir, self.emulated) {
                log::warn!("cgroup: {e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A new cpuset cgroup starts with empty `cpuset.cpus`/`cpuset.mems`, and no task can join
/// it until they are set: copy them down from the parent, level by level.
fn fill_cpuset_levels(hierarchy: &Path, path: &CgroupPath) -> Result<(), CgroupError> {
    let mut parent = hierarchy.to_path_buf();
    for comp in path.components() {
        let dir = parent.join(comp);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = dir.join(file);
            let Some(current) = read_opt(&own)? else {
                continue;
            };
            if current.trim().is_empty() {
                let inherited = fsutil::read(&parent.join(file))?;
                write(&own, inherited.trim())?;
            }
        }
        parent = dir;
    }
    Ok(())
}
