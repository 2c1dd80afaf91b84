//! The shim's only `waitpid`: it is a child subreaper, so every container process (and
//! the intermediate init helpers) ends up as its child. One task turns `SIGCHLD` into
//! [`Exit`] records; the task service decides which of them matter.
//!
//! Nothing else in the server may wait for a child (no `Child::wait`, no
//! `tokio::process`): the status would be stolen from whoever is waiting here.

use std::time::SystemTime;

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// A reaped child: its pid, the containerd exit status (code, or 128 + signal) and the
/// wall-clock time it was observed, which is reported identically everywhere.
#[derive(Debug, Clone)]
pub struct Exit {
    pub pid: i32,
    pub status: u32,
    pub at: Timestamp,
}

/// The containerd exit status for a wait status, or `None` for stops and continues.
pub fn exit_status(ws: WaitStatus) -> Option<(i32, u32)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code as u32)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as u32)),
        _ => None,
    }
}

pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Reaps every exited child now, without blocking.
fn reap_all(tx: &mpsc::UnboundedSender<Exit>) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(ws) => {
                if let Some((pid, status)) = exit_status(ws) {
                    let _ = tx.send(Exit {
                        pid,
                        status,
                        at: now(),
                    });
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("waitpid: {e}");
                return;
            }
        }
    }
}

/// Starts the reaper. Must be called before the server creates any child, from inside
/// the tokio runtime.
pub fn start() -> std::io::Result<mpsc::UnboundedReceiver<Exit>> {
    let mut sigchld = signal(SignalKind::child())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Children may have exited before the handler was installed.
        reap_all(&tx);
        while sigchld.recv().await.is_some() {
            reap_all(&tx);
            if tx.is_closed() {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn exit_codes_and_signals_map_like_containerd() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_status(WaitStatus::Exited(pid, 3)), Some((42, 3)));
        assert_eq!(
            exit_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((42, 137))
        );
        assert_eq!(
            exit_status(WaitStatus::Signaled(pid, Signal::SIGTERM, true)),
            Some((42, 143))
        );
        assert_eq!(exit_status(WaitStatus::StillAlive), None);
    }
}
