//! What the shim persists per container in its bundle, so that the `delete` action (run
//! by containerd in a new process, possibly after the server died) can clean up exactly
//! that container: kill what is left in its cgroup, remove the cgroup, unmount the rootfs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const STATE_FILE: &str = "amphi-state.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Persisted {
    pub id: String,
    /// The dispatch decision, so a restarted shim agrees with itself.
    #[serde(default)]
    pub decision: Option<crate::dispatch::Decision>,
    /// Host pid of the container's init, 0 until it exists.
    pub pid: i32,
    /// The container's cgroup, relative to each hierarchy root.
    pub cgroup: String,
    /// The rootfs the shim mounted (and must unmount), if it mounted one.
    pub mounted_rootfs: Option<PathBuf>,
}

impl Persisted {
    pub fn path(bundle: &Path) -> PathBuf {
        bundle.join(STATE_FILE)
    }

    /// Written atomically (temp file + rename).
    pub fn save(&self, bundle: &Path) -> Result<()> {
        let path = Self::path(bundle);
        let tmp = bundle.join(format!(".{STATE_FILE}.tmp"));
        let data = serde_json::to_vec(self)
            .map_err(|e| Error::io("encode state", path.display(), std::io::Error::other(e)))?;
        std::fs::write(&tmp, data).map_err(|e| Error::io("write", tmp.display(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", path.display(), e))
    }

    /// `Ok(None)` when there is nothing to clean up.
    pub fn load(bundle: &Path) -> Result<Option<Persisted>> {
        let path = Self::path(bundle);
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| Error::io("decode state", path.display(), std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path.display(), e)),
        }
    }

    pub fn remove(bundle: &Path) {
        let _ = std::fs::remove_file(Self::path(bundle));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Persisted::load(dir.path()).unwrap(), None);
        let p = Persisted {
            id: "c1".into(),
            decision: Some(crate::dispatch::Decision {
                kind: crate::dispatch::Kind::Wasm,
                reason: "test".into(),
            }),
            pid: 42,
            cgroup: "/default/c1".into(),
            mounted_rootfs: Some(dir.path().join("rootfs")),
        };
        p.save(dir.path()).unwrap();
        assert_eq!(Persisted::load(dir.path()).unwrap(), Some(p));
        Persisted::remove(dir.path());
        assert_eq!(Persisted::load(dir.path()).unwrap(), None);
    }
}
