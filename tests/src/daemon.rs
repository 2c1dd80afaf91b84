//! A private containerd daemon per test: start, configuration, logs, and teardown.
//!
//! Layout of one daemon (kept short: a unix socket path must fit in 107 bytes):
//!
//! ```text
//! /run/amphi-e2e/d<random>/
//!   c.sock          containerd's gRPC socket (c.sock.ttrpc next to it)
//!   config.toml     generated: schema 2 for 1.x, 3 for 2.x; CRI and NRI disabled
//!   containerd.log  the daemon's stdout and stderr
//!   bin/            first on the daemon's PATH: containerd-shim-amphi-v1 -> the built shim
//!   root/ state/    containerd's --root and --state
//!   work/           scratch space for the test (bind mount sources, specs, rootfs copies)
//!   wasm-cache/     the shim's compiled-module cache: AMPHI_WASM_CACHE_DIR in the daemon's
//!                   environment, which the shims it starts inherit; entries persist across
//!                   containers, so nothing in it counts as a leak
//! ```
//!
//! Dropping a [`Containerd`] removes every container it still knows, stops the daemon
//! (SIGTERM, then SIGKILL), kills shims and container processes it left, unmounts what is
//! left under its directory, and removes the directory. When the test is failing it prints
//! the tail of the daemon log first.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::command::{self, CTR_TIMEOUT, Output};
use crate::env::{SHIM_BINARY_NAME, require_root, shim_binary};
use crate::leaks;
use crate::version::Version;

/// Parent of every daemon directory.
pub const RUN_ROOT: &str = "/run/amphi-e2e";
/// The containerd namespace the cases use.
pub const NAMESPACE: &str = "default";
/// The containerd namespace of the CRI plugin (Kubernetes).
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The CRI runtime handler (RuntimeClass `handler`) the CRI daemons configure.
pub const CRI_HANDLER: &str = "amphi";
/// The pod sandbox ("pause") image the CRI daemons are configured with.
pub const PAUSE_IMAGE: &str = "localhost/pause:test";
/// The environment variable naming the shim's compiled Wasm module cache directory.
pub const WASM_CACHE_ENV: &str = "AMPHI_WASM_CACHE_DIR";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 80;

/// A running private containerd.
pub struct Containerd {
    version: Version,
    dir: PathBuf,
    tag: String,
    /// The daemon process; replaced by [`Containerd::restart`].
    child: Mutex<Option<Child>>,
    ctr: PathBuf,
    /// Container ids handed out by [`Containerd::new_id`], for teardown and leak checks.
    pub(crate) ids: Mutex<Vec<String>>,
    /// Per id: what was seen while its task ran (pids, shim socket), for leak checks.
    pub(crate) seen: Mutex<Vec<leaks::Seen>>,
    counter: Mutex<u32>,
    /// Whether the CRI plugin is enabled ([`Containerd::start_cri`]).
    cri: bool,
}

impl Containerd {
    /// Starts a private daemon of `version` and waits until `ctr version` answers.
    ///
    /// Panics when not root, when the version's binaries or (for amphi) the shim binary are
    /// missing, or when the daemon does not come up; the message carries the log tail.
    pub fn start(version: Version) -> Containerd {
        Containerd::start_with(version, false)
    }

    /// [`Containerd::start`] with the CRI plugin enabled: runtime handler [`CRI_HANDLER`]
    /// for the runtime under test, sandbox image [`PAUSE_IMAGE`], an empty CNI directory of
    /// its own (host-network pods only), `restrict_oom_score_adj` (this host's PID 1 holds a
    /// capability the daemon lacks), no streaming port.
    pub fn start_cri(version: Version) -> Containerd {
        let d = Containerd::start_with(version, true);
        // containerd starts without a plugin whose config it rejects: say so here.
        let plugins = d.ctr(&["plugins", "ls"]).expect_success("ctr plugins ls");
        let cri_ok = plugins.stdout.lines().any(|l| {
            l.contains("io.containerd.grpc.v1")
                && l.contains(" cri ")
                && l.trim_end().ends_with("ok")
        });
        assert!(
            cri_ok,
            "{version}: the CRI plugin did not load:\n{plugins}\nlog tail:\n{}",
            d.log_tail(LOG_TAIL_LINES)
        );
        d
    }

    fn start_with(version: Version, cri: bool) -> Containerd {
        require_root();
        let containerd = version.containerd();
        let ctr = version.ctr();
        let shim = shim_binary();

        fs::create_dir_all(RUN_ROOT).unwrap_or_else(|e| panic!("mkdir {RUN_ROOT}: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("d")
            .rand_bytes(6)
            .tempdir_in(RUN_ROOT)
            .unwrap_or_else(|e| panic!("cannot create a daemon dir in {RUN_ROOT}: {e}"))
            .keep();
        let tag = dir
            .file_name()
            .map(|n| n.to_string_lossy().trim_start_matches('d').to_string())
            .unwrap_or_default();
        let daemon = Containerd {
            version,
            dir,
            tag,
            child: Mutex::new(None),
            ctr,
            ids: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            counter: Mutex::new(0),
            cri,
        };
        for sub in ["bin", "root", "state", "work", "cni"] {
            let p = daemon.dir.join(sub);
            fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        }
        if let Some(shim) = shim {
            let link = daemon.bin_dir().join(SHIM_BINARY_NAME);
            symlink(&shim, &link).unwrap_or_else(|e| {
                panic!("symlink {} -> {}: {e}", link.display(), shim.display())
            });
        }
        let config = daemon.dir.join("config.toml");
        fs::write(&config, daemon.config_toml())
            .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        daemon.spawn(&containerd, &config);
        daemon.wait_ready();
        daemon
    }

    /// The containerd version this daemon runs.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The daemon's private directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gRPC socket (absolute, as ctr 2.x requires).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// containerd's `--root`.
    pub fn root_dir(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// containerd's `--state`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Scratch space for the test, removed with the daemon.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The shim's compiled Wasm module cache of this daemon (`AMPHI_WASM_CACHE_DIR` in the
    /// daemon's environment, inherited by the shims it starts; the shim creates it on first
    /// use). Its entries outlive containers by design: the leak checks ignore everything
    /// in it.
    pub fn wasm_cache_dir(&self) -> PathBuf {
        self.dir.join("wasm-cache")
    }

    /// The directory put first on the daemon's PATH (holds the shim symlink).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The `ctr` binary matching this daemon.
    pub fn ctr_path(&self) -> &Path {
        &self.ctr
    }

    /// A fresh container id, unique among all daemons running on this host:
    /// `<label>-<n>-<daemon tag>`; no id is a substring of another, which the leak checks
    /// (substring matches on command lines and cgroup names) rely on.
    pub fn new_id(&self, label: &str) -> String {
        let n = {
            let mut c = self
                .counter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *c += 1;
            *c
        };
        let id = format!("{label}-{n}-{}", self.tag);
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id.clone());
        id
    }

    /// Registers an id this daemon did not hand out (a CRI pod or container id) for the
    /// leak checks and the teardown.
    pub fn track_id(&self, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id.to_string());
    }

    /// The generated config.toml.
    pub fn config_toml(&self) -> String {
        let schema = self.version.config_schema();
        let disabled = match (self.cri, self.version.is_2x()) {
            (true, _) => r#"["io.containerd.nri.v1.nri"]"#,
            (false, true) => {
                r#"["io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"]"#
            }
            (false, false) => r#"["io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"]"#,
        };
        let mut config = format!(
            "# generated by amphi-e2e for {version}\n\
             version = {schema}\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = {disabled}\n\
             \n\
             [grpc]\n  address = \"{sock}\"\n\
             \n\
             [debug]\n  level = \"debug\"\n\
             \n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            version = self.version,
            root = self.root_dir().display(),
            state = self.state_dir().display(),
            sock = self.socket().display(),
            opt = self.dir.join("opt").display(),
        );
        if self.cri {
            config.push_str(&self.cri_config());
        }
        config
    }

    /// The CRI plugin's part of the config, in the schema of this version.
    fn cri_config(&self) -> String {
        let cni = self.dir.join("cni").display().to_string();
        let runtime = crate::env::runtime();
        if self.version.is_2x() {
            format!(
                "\n[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = \"{PAUSE_IMAGE}\"\n\
                 \n[plugins.\"io.containerd.cri.v1.runtime\"]\n  restrict_oom_score_adj = true\n  \
                 netns_mounts_under_state_dir = true\n  enable_cdi = false\n\
                 [plugins.\"io.containerd.cri.v1.runtime\".cni]\n  conf_dir = \"{cni}\"\n  \
                 bin_dirs = [\"/usr/lib/cni\"]\n\
                 [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.{CRI_HANDLER}]\n  \
                 runtime_type = \"{runtime}\"\n\
                 \n[plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_port = \"0\"\n"
            )
        } else {
            format!(
                "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{PAUSE_IMAGE}\"\n  \
                 restrict_oom_score_adj = true\n  stream_server_port = \"0\"\n  \
                 netns_mounts_under_state_dir = true\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  conf_dir = \"{cni}\"\n  \
                 bin_dir = \"/usr/lib/cni\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  \
                 default_runtime_name = \"{CRI_HANDLER}\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{CRI_HANDLER}]\n  \
                 runtime_type = \"{runtime}\"\n"
            )
        }
    }

    fn daemon_path_env(&self) -> String {
        let host = std::env::var("PATH").unwrap_or_default();
        let mut parts = vec![
            self.bin_dir().display().to_string(),
            self.version.bin_dir().display().to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ];
        if !host.is_empty() {
            parts.push(host);
        }
        parts.join(":")
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the daemon process, appending to its log (a restart keeps what came before).
    fn spawn(&self, containerd: &Path, config: &Path) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("create {}: {e}", self.log_path().display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup of the log file: {e}"));
        let child = Command::new(containerd)
            .arg("--config")
            .arg(config)
            .env("PATH", self.daemon_path_env())
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .env("TMPDIR", self.work_dir())
            .env(WASM_CACHE_ENV, self.wasm_cache_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", containerd.display()));
        *self.child() = Some(child);
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = None;
        loop {
            let exited = self
                .child()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "{} exited during start-up ({status}); log tail:\n{}",
                    self.version,
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            if self.socket().exists() {
                let out = self.ctr_timeout(&["version"], Duration::from_secs(5));
                if out.success() {
                    return;
                }
                last = Some(out);
            }
            if Instant::now() >= deadline {
                let last = last
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "(the socket never appeared)".to_string());
                panic!(
                    "{} did not become ready within {START_TIMEOUT:?} at {}:\n{last}\nlog tail:\n{}",
                    self.version,
                    self.socket().display(),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `ctr -a <socket> -n default` command, ready for more arguments.
    pub fn ctr_command(&self) -> Command {
        self.ctr_command_in(NAMESPACE)
    }

    /// A `ctr -a <socket> -n <namespace>` command, ready for more arguments.
    pub fn ctr_command_in(&self, namespace: &str) -> Command {
        let mut cmd = Command::new(&self.ctr);
        cmd.arg("-a")
            .arg(self.socket())
            .arg("-n")
            .arg(namespace)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE");
        cmd
    }

    /// Runs `ctr <args>` against this daemon with the default 60 s deadline.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_timeout(args, CTR_TIMEOUT)
    }

    /// Runs `ctr <args>` against this daemon with a deadline.
    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = self.ctr_command();
        cmd.args(args);
        command::run(&mut cmd, timeout)
    }

    /// Runs `ctr -n <namespace> <args>` against this daemon with the default deadline.
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        let mut cmd = self.ctr_command_in(namespace);
        cmd.args(args);
        command::run(&mut cmd, CTR_TIMEOUT)
    }

    /// The last `lines` lines of the daemon log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = match fs::read(self.log_path()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return format!("(cannot read {}: {e})", self.log_path().display()),
        };
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        all[from..].join("\n")
    }

    /// Copies the daemon log to `<target>/amphi-e2e/logs/<thread name>-<tag>.log` (the thread
    /// of a test is named after it) and returns where it went.
    fn keep_log(&self) -> String {
        let logs = crate::env::target_dir().join("amphi-e2e").join("logs");
        let name = thread::current()
            .name()
            .unwrap_or("main")
            .replace("::", "-")
            .replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                "_",
            );
        let dest = logs.join(format!("{name}-{}.log", self.tag));
        match fs::create_dir_all(&logs).and_then(|()| fs::copy(self.log_path(), &dest)) {
            Ok(_) => dest.display().to_string(),
            Err(e) => format!("not kept, copy to {} failed: {e}", dest.display()),
        }
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&self) -> bool {
        match self.child().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Asserts the daemon-wide leak checks (see [`leaks`]) for every id it handed out,
    /// then tears the daemon down. Call it at the end of a passing test.
    #[track_caller]
    pub fn finish(self) {
        let ids = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for id in &ids {
            self.assert_no_leaks(id);
        }
        self.assert_daemon_clean();
        drop(self);
    }

    /// Asserts that, with every case done, nothing is mounted under the daemon's directory
    /// and no process (a shim, a stray ctr) still names its socket.
    #[track_caller]
    pub fn assert_daemon_clean(&self) {
        let deadline = Instant::now() + leaks::SETTLE_TIMEOUT;
        loop {
            let mut found: Vec<String> = leaks::mounts_matching(&[self.dir.display().to_string()])
                .into_iter()
                .filter(|m| !leaks::mount_is_under(m, &self.wasm_cache_dir()))
                .map(|m| format!("mount: {m}"))
                .collect();
            found.extend(
                leaks::processes_matching(&[self.socket().display().to_string()])
                    .into_iter()
                    .map(|(pid, cmd)| format!("process {pid}: {cmd}")),
            );
            if found.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} / runtime {}: left behind after all cases:\n  - {}",
                    self.version,
                    crate::env::runtime(),
                    found.join("\n  - ")
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn teardown(&mut self) {
        let ids = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if self.is_running() {
            self.remove_leftover_containers();
        }
        self.stop_daemon();
        let sock = self.socket().display().to_string();
        let mut needles = ids.clone();
        needles.push(sock);
        leaks::kill_processes_matching(&needles);
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (pid, start) in seen.iter().filter_map(|s| s.pid) {
            if leaks::process_alive(pid, start)
                && let Ok(raw) = i32::try_from(pid)
            {
                eprintln!("amphi-e2e: killing leftover task process {pid}");
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
        leaks::remove_cgroups_matching(&ids);
        let mut mount_needles = ids;
        mount_needles.push(self.dir.display().to_string());
        leaks::unmount_matching(&mount_needles);
        let still = leaks::mounts_matching(&[self.dir.display().to_string()]);
        if still.is_empty() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("amphi-e2e: cannot remove {}: {e}", self.dir.display());
            }
        } else {
            eprintln!(
                "amphi-e2e: leaving {} in place, still mounted under it:\n{}",
                self.dir.display(),
                still.join("\n")
            );
        }
    }

    /// Best effort, through containerd: kill and delete every task, delete every container
    /// (in the CRI namespace too when the CRI plugin runs).
    fn remove_leftover_containers(&self) {
        let quick = Duration::from_secs(10);
        let mut namespaces = vec![NAMESPACE];
        if self.cri {
            namespaces.push(CRI_NAMESPACE);
        }
        for ns in namespaces {
            let ctr = |args: &[&str]| {
                let mut cmd = self.ctr_command_in(ns);
                cmd.args(args);
                command::run(&mut cmd, quick)
            };
            let tasks = ctr(&["tasks", "ls", "-q"]);
            for id in tasks.stdout.lines().map(str::trim) {
                if id.is_empty() {
                    continue;
                }
                let _ = ctr(&["tasks", "kill", "-a", "-s", "SIGKILL", id]);
                let _ = ctr(&["tasks", "delete", "-f", id]);
            }
            let containers = ctr(&["containers", "ls", "-q"]);
            for id in containers.stdout.lines().map(str::trim) {
                if !id.is_empty() {
                    let _ = ctr(&["containers", "delete", id]);
                }
            }
        }
    }

    /// Stops the daemon (SIGTERM, like a service manager) and starts it again with the same
    /// configuration, state and root, as after an upgrade or a crash-restart; waits until
    /// it answers. Shims and their tasks are not touched.
    pub fn restart(&self) {
        self.stop_daemon();
        self.spawn(&self.version.containerd(), &self.dir.join("config.toml"));
        self.wait_ready();
    }

    fn stop_daemon(&self) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!(
                        "amphi-e2e: {} ignored SIGTERM for {STOP_TIMEOUT:?}; sending SIGKILL",
                        self.version
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if thread::panicking() {
            let kept = self.keep_log();
            eprintln!(
                "---- {} log tail (full log: {kept}) ----\n{}\n---- end of containerd log ----",
                self.version,
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        self.teardown();
    }
}
