//! `ctr` operations the cases use, and parsers for `ctr`'s text output.
//!
//! Differences between ctr 1.6, 1.7 and 2.1 handled here:
//! - there is no `ctr task wait`: a detached task's exit status comes from
//!   `ctr task delete`, which exits 0 and logs `task <id> exit with non-zero exit code <n>`
//!   when the status is not 0 (all three versions), or from the `/tasks/exit` event;
//! - `ctr image import` prints different progress text (1.x: `unpacking <name> (...)...done`,
//!   2.x: a table); only the resulting name `localhost/busybox:test` is relied on;
//! - `ctr events` prints `<timestamp> <namespace> <topic> <json>`, and the JSON of 1.7+ writes
//!   `exited_at` as `{seconds, nanos}` where 1.6 writes RFC 3339: only `container_id`/`id`
//!   and `exit_status` are read;
//! - `ctr task metrics` of 1.6 prints a time stamp, 1.7+ `seconds:.. nanos:..`: the suite uses
//!   `--format json`, the same in all three;
//! - ctr 2.x needs an absolute socket path (the harness always passes one).

use std::thread;
use std::time::{Duration, Instant};

use crate::command::{Background, Output};
use crate::daemon::Containerd;
use crate::env::runtime;
use crate::image::{IMAGE, IMAGE_BASE_NAME, busybox};

/// How long a task may take to reach a state the test waits for.
pub const TASK_STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// One row of `ctr task ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Container id.
    pub id: String,
    /// Host pid of the task's init process.
    pub pid: u32,
    /// `RUNNING`, `STOPPED`, `CREATED`, `PAUSED`, ...
    pub status: String,
}

/// Parses `ctr task ls` output (`TASK PID STATUS` table).
pub fn parse_task_list(text: &str) -> Vec<TaskRow> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("TASK"))
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let id = cols.next()?.to_string();
            let pid = cols.next()?.parse().ok()?;
            let status = cols.next()?.to_string();
            Some(TaskRow { id, pid, status })
        })
        .collect()
}

/// The pids listed by `ctr task ps` (`PID INFO` table).
pub fn parse_task_ps(text: &str) -> Vec<u32> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("PID"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The exit status `ctr task delete` reports: the number in
/// `exit with non-zero exit code <n>` on stderr, or 0 when it succeeded without that line.
pub fn parse_delete_exit_status(out: &Output) -> Option<u32> {
    const MARK: &str = "non-zero exit code ";
    if let Some(pos) = out.stderr.find(MARK) {
        let digits: String = out.stderr[pos + MARK.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return digits.parse().ok();
    }
    out.success().then_some(0)
}

/// One line of `ctr events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The topic, e.g. `/tasks/exit`.
    pub topic: String,
    /// The event body.
    pub body: serde_json::Value,
}

impl Event {
    /// The container the event is about (`container_id`, or `id` for container events).
    pub fn container_id(&self) -> Option<&str> {
        self.body
            .get("container_id")
            .or_else(|| self.body.get("id"))
            .and_then(|v| v.as_str())
    }
}

/// Parses `ctr events` output: `<date> <time> <zone..> <namespace> <topic> <json>` per line.
pub fn parse_events(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|line| {
            let json_at = line.find('{')?;
            let body = serde_json::from_str(&line[json_at..]).ok()?;
            let topic = line[..json_at]
                .split_whitespace()
                .rev()
                .find(|w| w.starts_with('/'))?
                .to_string();
            Some(Event { topic, body })
        })
        .collect()
}

/// Memory usage and CPU time read from `ctr task metrics --format json`, for cgroup v1
/// (`memory.usage.usage`, `cpu.usage.total` in ns) or v2 (`memory.usage`,
/// `cpu.usage_usec`) metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Current number of pids, when reported.
    pub pids: Option<u64>,
}

/// Parses the JSON printed by `ctr task metrics --format json`.
pub fn parse_metrics_json(text: &str) -> Result<Metrics, String> {
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("not JSON ({e}): {text}"))?;
    let memory = v.get("memory").ok_or("no \"memory\" section")?;
    let memory_bytes = memory
        .get("usage")
        .and_then(|u| {
            u.get("usage")
                .and_then(|x| x.as_u64())
                .or_else(|| u.as_u64())
        })
        .ok_or("no memory usage (memory.usage.usage for v1, memory.usage for v2)")?;
    let cpu = v.get("cpu").ok_or("no \"cpu\" section")?;
    let cpu_ns = cpu
        .get("usage")
        .and_then(|u| u.get("total"))
        .and_then(|x| x.as_u64())
        .or_else(|| {
            cpu.get("usage_usec")
                .and_then(|x| x.as_u64())
                .map(|us| us * 1000)
        })
        .ok_or("no cpu usage (cpu.usage.total for v1, cpu.usage_usec for v2)")?;
    let pids = v
        .get("pids")
        .and_then(|p| p.get("current"))
        .and_then(|x| x.as_u64());
    Ok(Metrics {
        memory_bytes,
        cpu_ns,
        pids,
    })
}

impl Containerd {
    /// Starts a daemon and imports the busybox image into it.
    pub fn start_with_busybox(version: crate::Version) -> Containerd {
        let d = Containerd::start(version);
        d.import_busybox();
        d
    }

    /// Imports the busybox image as [`IMAGE`] and checks the name.
    pub fn import_busybox(&self) {
        let tar = busybox().tar.display().to_string();
        self.ctr(&["images", "import", "--base-name", IMAGE_BASE_NAME, &tar])
            .expect_success("ctr image import of the busybox image");
        let list = self
            .ctr(&["images", "ls", "-q"])
            .expect_success("ctr image ls");
        assert!(
            list.stdout.lines().any(|l| l.trim() == IMAGE),
            "{}: after import, {IMAGE} is not listed:\n{list}",
            self.version()
        );
    }

    /// `ctr run --runtime <runtime> <opts...> <image> <id> <cmd...>`, the common argv.
    fn run_argv(
        &self,
        mode: &str,
        id: &str,
        opts: &[&str],
        image: Option<&str>,
        cmd: &[&str],
    ) -> Vec<String> {
        let mut argv: Vec<String> = vec!["run".into()];
        if !mode.is_empty() {
            argv.push(mode.into());
        }
        argv.push("--runtime".into());
        argv.push(runtime());
        argv.extend(opts.iter().map(|s| s.to_string()));
        if let Some(image) = image {
            argv.push(image.into());
        }
        argv.push(id.into());
        argv.extend(cmd.iter().map(|s| s.to_string()));
        argv
    }

    /// `ctr run --rm` of the busybox image: runs `cmd` to completion and returns ctr's
    /// output (ctr's exit code mirrors the task's).
    pub fn run_rm(&self, id: &str, opts: &[&str], cmd: &[&str]) -> Output {
        let argv = self.run_argv("--rm", id, opts, Some(IMAGE), cmd);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.ctr(&refs)
    }

    /// `ctr run --rm ... <cmd>` with `input` on ctr's stdin, which ctr forwards to the
    /// task and then closes: the task must see EOF.
    pub fn run_rm_with_stdin(&self, id: &str, cmd: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let argv = self.run_argv("--rm", id, &[], Some(IMAGE), cmd);
        let mut command = self.ctr_command();
        command
            .args(&argv)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let described = crate::command::describe(&command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{described}`: {e}"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).expect("write ctr's stdin");
        drop(stdin);
        crate::command::Background::adopt(child, described)
            .wait_timeout(crate::command::CTR_TIMEOUT)
    }

    /// `ctr run --rm --config <spec>`: runs a container from a full OCI spec file.
    pub fn run_rm_config(&self, id: &str, spec: &std::path::Path) -> Output {
        let spec = spec.display().to_string();
        let argv = self.run_argv("--rm", id, &["--config", &spec], None, &[]);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.ctr(&refs)
    }

    /// Starts `ctr run --rm ... <cmd>` in the background (ctr stays attached to the task).
    pub fn spawn_run_rm(&self, id: &str, opts: &[&str], cmd: &[&str]) -> Background {
        let argv = self.run_argv("--rm", id, opts, Some(IMAGE), cmd);
        let mut command = self.ctr_command();
        command.args(&argv);
        Background::spawn(&mut command)
    }

    /// `ctr run -d`: starts `cmd` detached, waits until the task runs, and returns its row.
    pub fn run_detached(&self, id: &str, opts: &[&str], cmd: &[&str]) -> TaskRow {
        let argv = self.run_argv("-d", id, opts, Some(IMAGE), cmd);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.ctr(&refs).expect_success("ctr run -d");
        self.wait_task_status(id, "RUNNING")
    }

    /// The rows of `ctr task ls`.
    pub fn tasks(&self) -> Vec<TaskRow> {
        let out = self.ctr(&["tasks", "ls"]).expect_success("ctr task ls");
        parse_task_list(&out.stdout)
    }

    /// The `ctr task ls` row of `id`, if listed.
    pub fn task(&self, id: &str) -> Option<TaskRow> {
        self.tasks().into_iter().find(|t| t.id == id)
    }

    /// Waits until `id`'s task has `status` (e.g. `RUNNING`, `STOPPED`); returns its row.
    /// A `RUNNING` task's pid and shim socket are remembered for the leak checks.
    #[track_caller]
    pub fn wait_task_status(&self, id: &str, status: &str) -> TaskRow {
        let deadline = Instant::now() + TASK_STATE_TIMEOUT;
        loop {
            let row = self.task(id);
            if let Some(row) = &row
                && row.status == status
            {
                if status == "RUNNING" {
                    self.remember_running(id, row.pid);
                }
                return row.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: task {id} did not reach {status} within {TASK_STATE_TIMEOUT:?}; last: {row:?}",
                    self.version()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr task kill -s <signal> <id>`, expecting success.
    pub fn kill_task(&self, id: &str, signal: &str) {
        self.ctr(&["tasks", "kill", "-s", signal, id])
            .expect_success("ctr task kill");
    }

    /// `ctr task delete <id>` of a stopped task; returns the exit status it reports.
    #[track_caller]
    pub fn delete_task(&self, id: &str) -> u32 {
        let out = self.ctr(&["tasks", "delete", id]);
        parse_delete_exit_status(&out).unwrap_or_else(|| {
            panic!(
                "{}: ctr task delete {id} failed or reported no exit status:\n{out}",
                self.version()
            )
        })
    }

    /// `ctr container delete <id>`, expecting success.
    pub fn delete_container(&self, id: &str) {
        self.ctr(&["containers", "delete", id])
            .expect_success("ctr container delete");
    }

    /// Kills a detached task with `signal`, waits for it to stop, deletes task and
    /// container, and returns the task's exit status.
    #[track_caller]
    pub fn kill_and_remove(&self, id: &str, signal: &str) -> u32 {
        self.kill_task(id, signal);
        self.wait_task_status(id, "STOPPED");
        let status = self.delete_task(id);
        self.delete_container(id);
        status
    }

    /// `ctr task metrics --format json <id>`, parsed.
    #[track_caller]
    pub fn metrics(&self, id: &str) -> Metrics {
        let out = self
            .ctr(&["tasks", "metrics", "--format", "json", id])
            .expect_success("ctr task metrics");
        parse_metrics_json(&out.stdout)
            .unwrap_or_else(|e| panic!("{}: unparseable metrics: {e}\n{out}", self.version()))
    }

    /// Starts `ctr events` in the background.
    pub fn spawn_events(&self) -> Background {
        let mut cmd = self.ctr_command();
        cmd.arg("events");
        Background::spawn(&mut cmd)
    }

    /// `ctr events`, returned once the subscription is live: the namespace is labelled
    /// until its `/namespaces/update` shows up, so no later event can be missed.
    pub fn subscribe_events(&self) -> Background {
        let events = self.spawn_events();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut n = 0;
        while !events.stdout_so_far().contains("/namespaces/update") {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: ctr events never showed a /namespaces/update",
                self.version()
            );
            n += 1;
            let label = format!("amphi-e2e-poke={n}");
            self.ctr(&["namespaces", "label", "default", &label])
                .expect_success("ctr namespaces label");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        events
    }

    /// Waits (up to 20 s) until `events` shows `topic` for container `id`; returns it.
    pub fn wait_event(&self, events: &Background, topic: &str, id: &str) -> Option<Event> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let found = parse_events(&events.stdout_so_far())
                .into_iter()
                .find(|e| e.topic == topic && e.container_id() == Some(id));
            if found.is_some() || std::time::Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_list_rows() {
        let text = "TASK    PID     STATUS    \nd1      8367    RUNNING\nd2      8400    STOPPED\n";
        let rows = parse_task_list(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            TaskRow {
                id: "d1".into(),
                pid: 8367,
                status: "RUNNING".into()
            }
        );
        assert_eq!(rows[1].status, "STOPPED");
        assert!(parse_task_list("TASK    PID     STATUS    \n").is_empty());
    }

    #[test]
    fn task_ps_pids() {
        assert_eq!(
            parse_task_ps("PID     INFO\n8367    -\n8370    -\n"),
            vec![8367, 8370]
        );
    }

    fn output(code: i32, stderr: &str) -> Output {
        use std::os::unix::process::ExitStatusExt;
        Output {
            command: "ctr tasks delete x".into(),
            status: Some(std::process::ExitStatus::from_raw(code << 8)),
            stdout: String::new(),
            stderr: stderr.into(),
            timed_out: false,
        }
    }

    #[test]
    fn delete_reports_exit_status() {
        let warn = "time=\"2026-11-22T10:22:46Z\" level=warning msg=\"task d1 exit with non-zero exit code 137\"\n";
        assert_eq!(parse_delete_exit_status(&output(0, warn)), Some(137));
        assert_eq!(parse_delete_exit_status(&output(0, "")), Some(0));
        assert_eq!(parse_delete_exit_status(&output(1, "ctr: not found")), None);
    }

    #[test]
    fn events_of_1_6_and_2_1() {
        let text = "2026-11-22 10:22:45.668755861 +0000 UTC default /tasks/start {\"container_id\":\"d1\",\"pid\":8367}\n\
                    2026-11-22 10:22:46.536358157 +0000 UTC default /tasks/exit {\"container_id\":\"d1\",\"id\":\"d1\",\"pid\":8503,\"exit_status\":137,\"exited_at\":{\"seconds\":1795342966,\"nanos\":536277869}}\n\
                    2026-11-22 10:22:46.894569879 +0000 UTC default /containers/delete {\"id\":\"d1\"}\n\
                    garbage line\n";
        let events = parse_events(text);
        let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(
            topics,
            ["/tasks/start", "/tasks/exit", "/containers/delete"]
        );
        assert!(events.iter().all(|e| e.container_id() == Some("d1")));
        assert_eq!(events[1].body["exit_status"], 137);
    }

    #[test]
    fn metrics_v1_and_v2() {
        let v1 = r#"{"pids":{"current":1},"cpu":{"usage":{"total":8554119,"per_cpu":[1,2]}},"memory":{"cache":8192,"usage":{"usage":385024,"limit":9223372036854771712}}}"#;
        assert_eq!(
            parse_metrics_json(v1),
            Ok(Metrics {
                memory_bytes: 385024,
                cpu_ns: 8554119,
                pids: Some(1)
            })
        );
        let v2 = r#"{"pids":{"current":2},"cpu":{"usage_usec":1500},"memory":{"usage":4096}}"#;
        assert_eq!(
            parse_metrics_json(v2),
            Ok(Metrics {
                memory_bytes: 4096,
                cpu_ns: 1_500_000,
                pids: Some(2)
            })
        );
        assert!(parse_metrics_json("{}").is_err());
        assert!(parse_metrics_json("METRIC VALUE").is_err());
    }
}
