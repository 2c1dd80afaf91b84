//! Running `ctr` on a terminal the test owns, for `ctr run -t` and `ctr task exec -t` (ctr
//! refuses `-t` unless its own stdin is a terminal).
//!
//! [`Terminal::spawn`] opens a pty pair (`openpty`) with a window size, starts the command
//! with the slave as stdin, stdout and stderr through `setsid -w -c` (util-linux: a new
//! session whose controlling terminal is the slave, so ctr is in its foreground process
//! group and gets SIGWINCH when the size changes), and keeps the master: a thread copies
//! everything the command prints into a transcript; [`Terminal::write`] types input;
//! [`Terminal::resize`] changes the window size with `stty -F <slave>`.
//!
//! Limitations: the transcript is what a terminal would show (CR LF line ends, echoed
//! input, and whatever escape sequences ctr or the container print).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::pty::{Winsize, openpty};

use crate::command::{Output, describe, wait_or_kill};

/// A command running on a terminal the test owns; dropping it kills the command.
pub struct Terminal {
    command: String,
    child: Option<Child>,
    master: File,
    slave_path: String,
    transcript: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Terminal {
    /// Starts `cmd` as the session leader of a new terminal of `rows` x `cols`.
    pub fn spawn(cmd: &Command, rows: u16, cols: u16) -> Terminal {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        let slave_path = nix::unistd::ttyname(&pty.slave)
            .expect("ttyname of the pty slave")
            .display()
            .to_string();
        let mut wrapped = Command::new("setsid");
        wrapped
            .args(["-w", "-c"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        let slave: OwnedFd = pty.slave;
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the pty slave"));
        wrapped
            .stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        let command = describe(cmd);
        let child = wrapped
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `setsid -w -c {command}`: {e}"));
        // Only the command holds the slave now: its exit is the master's EIO.
        drop(wrapped);
        drop(slave);
        let master = File::from(pty.master);
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let mut master = master.try_clone().expect("dup the pty master");
            let transcript = transcript.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // EIO once every holder of the slave is gone.
                while let Ok(n @ 1..) = master.read(&mut buf) {
                    transcript
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .extend_from_slice(&buf[..n]);
                }
            })
        };
        Terminal {
            command,
            child: Some(child),
            master,
            slave_path,
            transcript,
            reader: Some(reader),
        }
    }

    /// What the terminal showed so far.
    pub fn transcript(&self) -> String {
        let bytes = self
            .transcript
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until the transcript contains `needle`; `false` after `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.transcript().contains(needle) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Types `input` on the terminal.
    pub fn write(&mut self, input: &[u8]) {
        self.master
            .write_all(input)
            .expect("write to the pty master");
    }

    /// Changes the window size (the foreground process group gets SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        let out = crate::command::run_args(
            "stty",
            &[
                "-F",
                &self.slave_path,
                "rows",
                &rows.to_string(),
                "cols",
                &cols.to_string(),
            ],
            Duration::from_secs(10),
        );
        assert!(out.success(), "stty resize of {}: {out}", self.slave_path);
    }

    /// Waits for the command to exit (killing it after `timeout`) and for its output to
    /// drain; the transcript is the output's stdout.
    pub fn wait_timeout(mut self, timeout: Duration) -> Output {
        let (status, timed_out) = match self.child.take() {
            Some(mut child) => wait_or_kill(&mut child, timeout, &self.command),
            None => (None, false),
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Output {
            command: format!("(on a terminal) {}", self.command),
            status,
            stdout: self.transcript(),
            stderr: String::new(),
            timed_out,
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
