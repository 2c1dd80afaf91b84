//! The init process's state machine, as pure data: no locks, no processes, no events.
//! [`super::Container`] wraps it with a mutex and performs the side effects the
//! transitions call for; the tests below drive it directly.
//!
//! ```text
//!   Created ──Start──▶ Starting ──exec ok──▶ Running ──exit──▶ Stopped ──Delete──▶ (gone)
//!      │                   │ an exit arriving now is kept until TaskStart is out
//!      └────────────── exit (killed before Start) ─────────────▶ Stopped
//! ```
//!
//! `B` is the start barrier (the real one is `amphi_linux_executor::launch::Created`). An
//! exec ([`super::exec`]) uses the same machine with `B = ()`: it has no process until Start,
//! and a Start whose launch failed goes back to Created ([`Lifecycle::abort_start`]).

use containerd_shim::protos::api::Status;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct ExitInfo {
    pub status: u32,
    pub at: Timestamp,
}

enum Phase<B> {
    Created(Option<B>),
    Starting,
    Running,
    Stopped(ExitInfo),
}

pub struct Lifecycle<B> {
    phase: Phase<B>,
    /// An exit reaped while `Start` was still publishing TaskStart.
    pending_exit: Option<ExitInfo>,
}

impl<B> Lifecycle<B> {
    pub fn new(barrier: B) -> Self {
        Lifecycle {
            phase: Phase::Created(Some(barrier)),
            pending_exit: None,
        }
    }

    pub fn status(&self) -> (Status, Option<ExitInfo>) {
        match &self.phase {
            Phase::Created(_) => (Status::CREATED, None),
            Phase::Starting | Phase::Running => (Status::RUNNING, None),
            Phase::Stopped(e) => (Status::STOPPED, Some(e.clone())),
        }
    }

    /// Takes the start barrier; fails unless the init is still waiting on it.
    pub fn begin_start(&mut self, id: &str) -> Result<B> {
        match &mut self.phase {
            Phase::Created(barrier) => {
                let barrier = barrier.take().ok_or_else(|| {
                    Error::FailedPrecondition(format!("container {id} is being deleted"))
                })?;
                self.phase = Phase::Starting;
                Ok(barrier)
            }
            Phase::Starting | Phase::Running => Err(Error::FailedPrecondition(format!(
                "container {id} is already started"
            ))),
            Phase::Stopped(_) => Err(Error::FailedPrecondition(format!(
                "container {id} has already stopped"
            ))),
        }
    }

    /// Start failed before any process existed (an exec whose launch failed): back to
    /// Created with `barrier`, so it can be started again or deleted.
    pub fn abort_start(&mut self, barrier: B) {
        if let Phase::Starting = self.phase {
            self.phase = Phase::Created(Some(barrier));
        }
    }

    /// Starting or running: a process exists (or is being made) and has not exited yet.
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Starting | Phase::Running)
    }

    /// Start finished (successfully or not): the process runs, or is about to exit.
    /// Returns an exit that arrived meanwhile, to be handled now.
    pub fn end_start(&mut self) -> Option<ExitInfo> {
        if let Phase::Starting = self.phase {
            self.phase = Phase::Running;
        }
        self.pending_exit.take()
    }

    /// The init was reaped. Returns the exit to act on now, or `None` if it must wait
    /// for Start to publish TaskStart first.
    pub fn exited(&mut self, exit: ExitInfo) -> Option<ExitInfo> {
        if let Phase::Starting = self.phase {
            self.pending_exit = Some(exit);
            return None;
        }
        Some(exit)
    }

    /// Records the exit; `false` if it was already recorded.
    pub fn stop(&mut self, exit: ExitInfo) -> bool {
        if let Phase::Stopped(_) = self.phase {
            return false;
        }
        self.phase = Phase::Stopped(exit);
        true
    }

    /// Signals reach a created, running (or paused) process, not a finished one.
    pub fn check_signal(&self, id: &str) -> Result<()> {
        match self.phase {
            Phase::Stopped(_) => Err(Error::NotFound(format!(
                "container {id}: process already finished"
            ))),
            _ => Ok(()),
        }
    }

    /// Delete: the exit if stopped. A created-but-never-started init has its barrier
    /// dropped (it then exits by itself) and `None` is returned: the caller waits for it.
    pub fn prepare_delete(&mut self, id: &str) -> Result<Option<ExitInfo>> {
        match &mut self.phase {
            Phase::Stopped(e) => Ok(Some(e.clone())),
            Phase::Created(barrier) => {
                barrier.take();
                Ok(None)
            }
            Phase::Starting | Phase::Running => Err(Error::FailedPrecondition(format!(
                "container {id} is running: kill it before deleting"
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use containerd_shim::protos::ttrpc::Code;

    fn exit(status: u32) -> ExitInfo {
        ExitInfo {
            status,
            at: Timestamp {
                seconds: 7,
                ..Default::default()
            },
        }
    }

    fn code<T>(r: Result<T>) -> Code {
        r.err().expect("expected an error").code()
    }

    #[test]
    fn normal_life() {
        let mut l = Lifecycle::new("barrier");
        assert_eq!(l.status().0, Status::CREATED);
        assert_eq!(l.begin_start("c").unwrap(), "barrier");
        assert_eq!(l.status().0, Status::RUNNING);
        assert_eq!(l.end_start(), None);
        let e = l.exited(exit(3)).unwrap();
        assert!(l.stop(e));
        assert_eq!(l.status(), (Status::STOPPED, Some(exit(3))));
        assert_eq!(l.prepare_delete("c").unwrap(), Some(exit(3)));
    }

    #[test]
    fn an_exit_racing_start_waits_for_task_start() {
        let mut l = Lifecycle::new(());
        l.begin_start("c").unwrap();
        assert_eq!(l.exited(exit(0)), None, "must be deferred while starting");
        assert_eq!(l.status().0, Status::RUNNING);
        assert_eq!(l.end_start(), Some(exit(0)));
        assert_eq!(l.end_start(), None, "delivered once");
    }

    #[test]
    fn bad_transitions_are_failed_precondition() {
        let mut l = Lifecycle::new(());
        l.begin_start("c").unwrap();
        assert_eq!(code(l.begin_start("c")), Code::FAILED_PRECONDITION);
        assert_eq!(code(l.prepare_delete("c")), Code::FAILED_PRECONDITION);
        l.end_start();
        assert!(l.stop(exit(1)));
        assert!(!l.stop(exit(2)), "an exit is recorded once");
        assert_eq!(code(l.begin_start("c")), Code::FAILED_PRECONDITION);
        assert_eq!(l.status().1, Some(exit(1)));
    }

    #[test]
    fn signals_to_a_finished_process_are_not_found() {
        let mut l = Lifecycle::new(());
        l.check_signal("c").unwrap();
        l.stop(exit(137));
        assert_eq!(code(l.check_signal("c")), Code::NOT_FOUND);
    }

    #[test]
    fn deleting_a_created_task_releases_its_barrier() {
        let mut l = Lifecycle::new(());
        assert_eq!(l.prepare_delete("c").unwrap(), None);
        // The barrier is gone: it cannot be started any more.
        assert_eq!(code(l.begin_start("c")), Code::FAILED_PRECONDITION);
        // Killed before start: the exit applies at once.
        assert_eq!(l.exited(exit(137)), Some(exit(137)));
    }
}
