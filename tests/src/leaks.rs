//! Leak checks run after every case, and the forced cleanup a daemon's teardown does.
//!
//! For a container id the checks look for, on the whole host:
//! - a mount whose line in `/proc/self/mountinfo` names the id or the daemon's directory;
//! - a cgroup directory whose name contains the id, in every v1 hierarchy under
//!   `/sys/fs/cgroup/*/` and in `/sys/fs/cgroup/unified` (or `/sys/fs/cgroup` on a pure v2 host);
//! - a process whose command line contains the id (a shim is started with `-id <id>`), and
//!   any task pid seen while the case ran that is still alive;
//! - the shim socket: the one containerd computes for the id
//!   (`/run/containerd/s/sha256(<address>/<namespace>/<id>)`) and the one the daemon recorded
//!   while the task ran (`address` or `bootstrap.json` in the task's bundle);
//! - what containerd itself still lists: the container, its task, its snapshot, and the
//!   task's bundle directory under the state dir;
//! - stdio FIFOs named after the id under `/run/containerd/fifo`.
//!
//! Nothing in the daemon's Wasm module cache ([`Containerd::wasm_cache_dir`]) is a leak:
//! compiled modules are meant to outlive the containers that used them.
//!
//! Teardown is asynchronous in containerd (the shim exits after `delete` returns), so the
//! checks poll for a few seconds and report only what persists.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use crate::daemon::{Containerd, NAMESPACE};

/// How long teardown may lag behind `ctr` before a leftover counts as a leak.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where containerd (and shims built on its shim libraries) put shim sockets.
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// Something observed while a task ran that must be gone after it is deleted.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The container id.
    pub id: String,
    /// A task pid and its start time (field 22 of `/proc/<pid>/stat`), to survive pid reuse.
    pub pid: Option<(u32, u64)>,
    /// The shim socket path the daemon recorded for the task.
    pub shim_socket: Option<PathBuf>,
}

/// The socket path containerd derives for a shim of `id` on the daemon at `address`.
pub fn expected_shim_socket(address: &Path, namespace: &str, id: &str) -> PathBuf {
    let key = format!("{}/{namespace}/{id}", address.display());
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SHIM_SOCKET_DIR).join(hex)
}

/// Lines of `/proc/self/mountinfo` containing any of `needles`.
pub fn mounts_matching(needles: &[String]) -> Vec<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter(|line| {
            needles
                .iter()
                .any(|n| !n.is_empty() && line.contains(n.as_str()))
        })
        .map(str::to_string)
        .collect()
}

/// The cgroup hierarchies to search: every v1 controller mount and the v2 mount.
pub fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    let mut roots = Vec::new();
    if let Ok(entries) = fs::read_dir(base) {
        for entry in entries.flatten() {
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                roots.push(entry.path());
            }
        }
    }
    roots.sort();
    roots
}

/// Cgroup directories (at any depth up to 8) whose name contains any of `ids`.
pub fn cgroups_matching(ids: &[String]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in cgroup_roots() {
        walk_cgroups(&root, 0, ids, &mut found);
    }
    found
}

fn walk_cgroups(dir: &Path, depth: usize, ids: &[String], found: &mut Vec<PathBuf>) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if ids
            .iter()
            .any(|id| !id.is_empty() && name.contains(id.as_str()))
        {
            found.push(entry.path());
        }
        walk_cgroups(&entry.path(), depth + 1, ids, found);
    }
}

/// Every pid on the host, from the numeric entries of /proc.
pub fn host_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// A process's command line with its arguments joined by spaces; `None` once it is gone.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim()
            .to_string(),
    )
}

/// Processes (pid, command line) whose command line contains any of `needles`, except this
/// process.
pub fn processes_matching(needles: &[String]) -> Vec<(u32, String)> {
    let me = std::process::id();
    host_pids()
        .into_iter()
        .filter(|pid| *pid != me)
        .filter_map(|pid| cmdline(pid).map(|c| (pid, c)))
        .filter(|(_, c)| {
            needles
                .iter()
                .any(|n| !n.is_empty() && c.contains(n.as_str()))
        })
        .collect()
}

/// Where ctr creates the stdio FIFOs of a task (`<dir>/<random>/<id>-stdout`).
pub const FIFO_DIR: &str = "/run/containerd/fifo";

/// FIFOs (and their directories) under [`FIFO_DIR`] named after `id`.
pub fn fifos_matching(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(dirs) = fs::read_dir(FIFO_DIR) else {
        return found;
    };
    for dir in dirs.flatten() {
        let Ok(files) = fs::read_dir(dir.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{id}-")) {
                found.push(file.path());
            }
        }
    }
    found
}

/// The start time of `pid` (clock ticks since boot), if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its ')' are plain.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start` still exists (zombies included).
pub fn process_alive(pid: u32, start: u64) -> bool {
    process_start_time(pid) == Some(start)
}

impl Containerd {
    /// Pids of the amphi shim servers serving this daemon (a grouped shim serves many
    /// containers; its command line names the first one).
    pub fn shim_servers(&self) -> Vec<u32> {
        processes_matching(&[self.socket().display().to_string()])
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("containerd-shim-amphi-v1") && cmd.contains("-socket"))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Records the task pid and shim socket of a running task for the leak checks.
    pub fn remember_running(&self, id: &str, pid: u32) {
        let seen = Seen {
            id: id.to_string(),
            pid: process_start_time(pid).map(|start| (pid, start)),
            shim_socket: self.recorded_shim_socket(id),
        };
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(seen);
    }

    /// The task's bundle directory under the daemon's state dir.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.state_dir()
            .join("io.containerd.runtime.v2.task")
            .join(NAMESPACE)
            .join(id)
    }

    /// The shim socket containerd recorded for a running task (`address` for 1.x,
    /// `bootstrap.json` for 2.x), as a file-system path.
    pub fn recorded_shim_socket(&self, id: &str) -> Option<PathBuf> {
        let bundle = self.bundle_dir(id);
        ["address", "bootstrap.json"]
            .iter()
            .filter_map(|f| fs::read_to_string(bundle.join(f)).ok())
            .find_map(|text| socket_path_in(&text))
    }

    /// Everything that still exists for `id`; empty when nothing leaked.
    pub fn leaks(&self, id: &str) -> Vec<String> {
        let mut leaks = Vec::new();
        let ids = vec![id.to_string()];
        let cache = self.wasm_cache_dir();
        for line in mounts_matching(&ids) {
            if !mount_is_under(&line, &cache) {
                leaks.push(format!("mount: {line}"));
            }
        }
        for dir in cgroups_matching(&ids) {
            leaks.push(format!("cgroup: {}", dir.display()));
        }
        for (pid, cmdline) in processes_matching(&ids) {
            leaks.push(format!("process {pid}: {cmdline}"));
        }
        let expected = expected_shim_socket(&self.socket(), NAMESPACE, id);
        if expected.exists() {
            leaks.push(format!("shim socket: {}", expected.display()));
        }
        let seen: Vec<Seen> = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|s| s.id == id)
            .cloned()
            .collect();
        for s in seen {
            if let Some((pid, start)) = s.pid
                && process_alive(pid, start)
            {
                leaks.push(format!("task process {pid} still exists"));
            }
            if let Some(sock) = s.shim_socket
                && sock != expected
                && sock.exists()
            {
                leaks.push(format!("shim socket: {}", sock.display()));
            }
        }
        for fifo in fifos_matching(id) {
            leaks.push(format!("fifo: {}", fifo.display()));
        }
        let bundle = self.bundle_dir(id);
        if bundle.exists() {
            leaks.push(format!("task bundle: {}", bundle.display()));
        }
        leaks.extend(self.containerd_leaks(id));
        leaks
    }

    fn containerd_leaks(&self, id: &str) -> Vec<String> {
        let mut leaks = Vec::new();
        let listings: [(&str, &[&str]); 3] = [
            ("container", &["containers", "ls", "-q"]),
            ("task", &["tasks", "ls", "-q"]),
            ("snapshot", &["snapshots", "ls"]),
        ];
        for (what, args) in listings {
            let out = self.ctr(args);
            if !out.success() {
                leaks.push(format!("cannot list {what}s:\n{out}"));
                continue;
            }
            let listed = out
                .stdout
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .any(|first| first == id);
            if listed {
                leaks.push(format!("containerd still lists the {what} {id}"));
            }
        }
        leaks
    }

    /// Asserts that nothing of `id` is left (polling up to [`SETTLE_TIMEOUT`] for
    /// asynchronous teardown); the message lists every leak.
    #[track_caller]
    pub fn assert_no_leaks(&self, id: &str) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let leaks = self.leaks(id);
            if leaks.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} / runtime {}: container {id} leaked after {SETTLE_TIMEOUT:?}:\n  - {}",
                    self.version(),
                    crate::env::runtime(),
                    leaks.join("\n  - ")
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Extracts `/path` from `unix:///path`, a plain `/path`, or JSON holding `"address":"unix:///path"`.
pub fn socket_path_in(text: &str) -> Option<PathBuf> {
    if let Some(start) = text.find("unix://") {
        let rest = &text[start + "unix://".len()..];
        let end = rest
            .find(|c: char| c == '"' || c.is_whitespace())
            .unwrap_or(rest.len());
        let path = &rest[..end];
        return (!path.is_empty()).then(|| PathBuf::from(path));
    }
    let trimmed = text.trim();
    trimmed.starts_with('/').then(|| PathBuf::from(trimmed))
}

/// Sends SIGKILL to every process whose command line contains one of `needles`.
pub fn kill_processes_matching(needles: &[String]) {
    for (pid, cmdline) in processes_matching(needles) {
        eprintln!("amphi-e2e: killing leftover process {pid}: {cmdline}");
        if let Ok(raw) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
}

/// Kills the processes in, then removes, every cgroup whose name contains one of `ids`.
pub fn remove_cgroups_matching(ids: &[String]) {
    let mut dirs = cgroups_matching(ids);
    if dirs.is_empty() {
        return;
    }
    for dir in &dirs {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    // Deepest first, so children go before their parents.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let deadline = Instant::now() + Duration::from_secs(5);
    for dir in dirs {
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() >= deadline => {
                    eprintln!("amphi-e2e: cannot remove cgroup {}: {e}", dir.display());
                    break;
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Lazily unmounts (deepest first) every mount point whose mountinfo line contains one of
/// `needles`.
pub fn unmount_matching(needles: &[String]) {
    for _round in 0..3 {
        let mut points: Vec<String> = mounts_matching(needles)
            .iter()
            .filter_map(|line| line.split(' ').nth(4).map(unescape_mountinfo))
            .collect();
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        points.dedup();
        for point in points {
            if let Err(e) = umount2(Path::new(&point), MntFlags::MNT_DETACH) {
                eprintln!("amphi-e2e: cannot unmount {point}: {e}");
            }
        }
    }
}

/// Whether the mount point of a `/proc/self/mountinfo` line is `dir` or below it.
pub fn mount_is_under(line: &str, dir: &Path) -> bool {
    line.split(' ')
        .nth(4)
        .map(unescape_mountinfo)
        .is_some_and(|point| Path::new(&point).starts_with(dir))
}

fn unescape_mountinfo(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_socket_is_sha256_of_address_namespace_id() {
        // Seen on this host with containerd 1.6.20's runc shim.
        let p = expected_shim_socket(Path::new("/run/ae-1.6/c.sock"), "default", "d1");
        assert_eq!(
            p,
            PathBuf::from(
                "/run/containerd/s/17ac3793aeaa2650cf385393964aeb2046766c90b765698564a9c601e5082068"
            )
        );
    }

    #[test]
    fn socket_path_from_address_file_and_bootstrap_json() {
        assert_eq!(
            socket_path_in("unix:///run/containerd/s/abc\n"),
            Some(PathBuf::from("/run/containerd/s/abc"))
        );
        assert_eq!(
            socket_path_in(
                r#"{"version":3,"address":"unix:///run/containerd/s/def","protocol":"ttrpc"}"#
            ),
            Some(PathBuf::from("/run/containerd/s/def"))
        );
        assert_eq!(socket_path_in("/x/y\n"), Some(PathBuf::from("/x/y")));
        assert_eq!(socket_path_in("garbage"), None);
    }

    #[test]
    fn start_time_of_this_process_is_stable() {
        let me = std::process::id();
        let t = process_start_time(me);
        assert!(t.is_some());
        assert!(t.is_some_and(|t| process_alive(me, t)));
        assert!(!process_alive(me, t.unwrap_or(0) + 1));
    }

    #[test]
    fn mounts_in_the_wasm_cache_are_recognised() {
        let line = "99 30 0:52 / /run/amphi-e2e/dX/wasm-cache/m rw - tmpfs tmpfs rw";
        assert!(mount_is_under(
            line,
            Path::new("/run/amphi-e2e/dX/wasm-cache")
        ));
        assert!(!mount_is_under(line, Path::new("/run/amphi-e2e/dX/work")));
        assert!(!mount_is_under(
            "99 30 0:52 / /run/amphi-e2e/dX/wasm-cache-other rw - tmpfs tmpfs rw",
            Path::new("/run/amphi-e2e/dX/wasm-cache")
        ));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }
}
