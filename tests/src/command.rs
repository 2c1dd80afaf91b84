//! Running external programs (`ctr`, `umoci`, `tar`) with a deadline.
//!
//! A hung `ctr` must fail the test, not hang CI: [`run`] kills the child when its deadline
//! passes and returns [`Output::timed_out`] set, and [`Output`] prints everything a failure
//! message needs (the command line, the exit status, stdout and stderr).

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long one `ctr` invocation may take before the test fails.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished (or killed) command produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// The exit status; `None` if the command was killed because it timed out.
    pub status: Option<ExitStatus>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// The deadline passed and the command was killed.
    pub timed_out: bool,
}

impl Output {
    /// The exit code, or `None` when the command was killed by a signal or timed out.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// The command exited with status 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }

    /// Panics with the full output unless the command exited 0; returns self for chaining.
    #[track_caller]
    pub fn expect_success(self, what: &str) -> Self {
        assert!(self.success(), "{what} failed:\n{self}");
        self
    }

    /// stdout with surrounding white space removed.
    pub fn stdout_trimmed(&self) -> &str {
        self.stdout.trim()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  command: {}", self.command)?;
        if self.timed_out {
            writeln!(f, "  status:  killed after its deadline passed")?;
        } else {
            writeln!(f, "  status:  {:?}", self.status)?;
        }
        writeln!(f, "  stdout:  {}", indent(&self.stdout))?;
        write!(f, "  stderr:  {}", indent(&self.stderr))
    }
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "(empty)".to_string();
    }
    text.trim_end().replace('\n', "\n           ")
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '\'', '"', '$', ';']) {
            line.push_str(&format!(" '{}'", arg.replace('\'', "'\\''")));
        } else {
            line.push(' ');
            line.push_str(&arg);
        }
    }
    line
}

/// Runs `cmd` to completion with stdin closed, killing it after `timeout`.
///
/// Panics only if the program cannot be started at all (missing binary): that is a broken
/// test host, reported with the program name.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    Background::spawn(cmd).wait_timeout(timeout)
}

/// Runs `program args...` with a deadline; a shorthand for [`run`].
pub fn run_args(program: impl AsRef<Path>, args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(program.as_ref());
    cmd.args(args);
    run(&mut cmd, timeout)
}

/// A child running in the background whose stdout and stderr are collected by threads.
///
/// Used for `ctr events` and for a foreground `ctr run` that another command signals.
/// Dropping it kills the child (SIGKILL) and reaps it, so no stray `ctr` outlives a test.
pub struct Background {
    command: String,
    child: Option<Child>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// The stdout collected so far, shared with the reader thread.
    live_stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Background {
    /// Starts `cmd` with stdin closed and stdout/stderr collected.
    pub fn spawn(cmd: &mut Command) -> Background {
        let command = describe(cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        Background::adopt(child, command)
    }

    pub(crate) fn adopt(mut child: Child, command: String) -> Background {
        let live_stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stdout = child.stdout.take().map(|pipe| {
            let live = live_stdout.clone();
            thread::spawn(move || collect(pipe, Some(live)))
        });
        let stderr = child
            .stderr
            .take()
            .map(|pipe| thread::spawn(move || collect(pipe, None)));
        Background {
            command,
            child: Some(child),
            stdout,
            stderr,
            live_stdout,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A copy of what the child wrote to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        match self.live_stdout.lock() {
            Ok(text) => text.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether the child has exited (it is then reaped by [`Background::wait_timeout`]).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Waits for the child to exit; kills it when `timeout` passes first.
    pub fn wait_timeout(mut self, timeout: Duration) -> Output {
        let (status, timed_out) = match self.child.take() {
            Some(mut child) => wait_or_kill(&mut child, timeout, &self.command),
            None => (None, false),
        };
        self.finish(status, timed_out)
    }

    /// Sends SIGKILL, reaps the child and returns what it wrote.
    pub fn kill(mut self) -> Output {
        let mut status = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            status = child.wait().ok();
        }
        self.finish(status, false)
    }

    fn finish(&mut self, status: Option<ExitStatus>, timed_out: bool) -> Output {
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Output {
            command: self.command.clone(),
            status: if timed_out { None } else { status },
            stdout,
            stderr,
            timed_out,
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn collect(mut pipe: impl Read, live: Option<std::sync::Arc<std::sync::Mutex<String>>>) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                if let Some(live) = &live {
                    let text = String::from_utf8_lossy(&all).into_owned();
                    match live.lock() {
                        Ok(mut guard) => *guard = text,
                        Err(poisoned) => *poisoned.into_inner() = text,
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Waits for `child` to exit; kills and reaps it when `timeout` passes first. Returns its
/// status (`None` when killed) and whether the timeout struck.
pub(crate) fn wait_or_kill(
    child: &mut Child,
    timeout: Duration,
    command: &str,
) -> (Option<ExitStatus>, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return (Some(s), false),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return (None, true);
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{command}` failed: {e}"),
        }
    }
}
