//! Publishing TaskOOM: one tokio task per container, from Create until Delete.
//!
//! ```text
//! Create ─▶ Cgroup::watch_oom (v1 eventfd / v2 inotify on memory.events)
//!        ─▶ tokio task: AsyncFd readable ─▶ OomWatch::on_readable ─▶ Kills(n > 0) ─▶ TaskOOM
//!                                                                   └▶ Gone ─▶ task ends
//! Delete ─▶ OomWatcher dropped ─▶ task aborted, descriptors closed
//! ```
//!
//! CRI marks a container OOMKilled from this event (and from the `oom_kill` counter the
//! Stats carry). One TaskOOM is published per wake-up that saw new kills, as containerd's
//! own watchers do.

use amphi_linux_executor::cgroup::{Cgroup, OomPoll, OomWatch};
use containerd_shim::protos::events::task::TaskOOM;
use containerd_shim::protos::topics::TASK_OOM_EVENT_TOPIC;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::events::Events;

/// The running watch; dropping it stops the task and closes its descriptors.
pub struct OomWatcher(JoinHandle<()>);

impl Drop for OomWatcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts watching `cgroup` for OOM kills of container `id`. `None` (logged) when the
/// host offers nothing to watch or the watch cannot be set up: OOM kills then still show
/// in Stats and in the exit status, only the event is missing.
pub fn watch(id: &str, cgroup: &Cgroup, events: &Events) -> Option<OomWatcher> {
    let watch = match cgroup.watch_oom() {
        Ok(Some(watch)) => watch,
        Ok(None) => {
            log::info!("container {id}: no memory controller, no OOM events");
            return None;
        }
        Err(e) => {
            log::warn!("container {id}: cannot watch for OOM kills: {e}");
            return None;
        }
    };
    let fd = match crate::sys::register(watch, tokio::io::Interest::READABLE) {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("container {id}: cannot poll the OOM watch: {e}");
            return None;
        }
    };
    let id = id.to_string();
    let events = events.clone();
    Some(OomWatcher(tokio::spawn(run(id, fd, events))))
}

async fn run(id: String, mut fd: AsyncFd<OomWatch>, events: Events) {
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(guard) => guard,
            Err(e) => {
                log::warn!("container {id}: OOM watch: {e}");
                return;
            }
        };
        let polled = guard.get_inner_mut().on_readable();
        // Everything readable was drained: wait for the next edge.
        guard.clear_ready();
        match polled {
            Ok(OomPoll::Kills(0)) => {}
            Ok(OomPoll::Kills(n)) => {
                log::info!("container {id}: {n} OOM kill(s)");
                events.send(
                    TASK_OOM_EVENT_TOPIC,
                    TaskOOM {
                        container_id: id.clone(),
                        ..Default::default()
                    },
                );
            }
            Ok(OomPoll::Gone) => {
                log::debug!("container {id}: cgroup gone, OOM watch ends");
                return;
            }
            Err(e) => {
                log::warn!("container {id}: OOM watch ends: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use amphi_linux_executor::cgroup::{CgroupRoot, parse_cgroups_path};
    use std::time::Duration;

    /// A fake unified tree holding one cgroup with the files the watch reads.
    fn fake_v2() -> (tempfile::TempDir, Cgroup) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "memory\n").unwrap();
        let cg_dir = dir.path().join("ctr");
        std::fs::create_dir(&cg_dir).unwrap();
        std::fs::write(cg_dir.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
        let root = CgroupRoot::at(dir.path()).unwrap();
        let cg = Cgroup::load(&root, &parse_cgroups_path("/ctr", "ctr").unwrap());
        (dir, cg)
    }

    #[tokio::test]
    async fn an_oom_kill_is_published_and_the_watch_ends_when_dropped() {
        let (dir, cg) = fake_v2();
        let (events, mut rx) = Events::for_test();
        let watcher = watch("c1", &cg, &events).expect("a watch on a v2 tree");
        let events_file = dir.path().join("ctr/memory.events");

        std::fs::write(&events_file, "oom 1\noom_kill 1\n").unwrap();
        let (topic, event) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a TaskOOM within 5 s")
            .unwrap();
        assert_eq!(topic, TASK_OOM_EVENT_TOPIC);
        let oom = event.downcast_ref::<TaskOOM>().expect("a TaskOOM message");
        assert_eq!(oom.container_id, "c1");

        // Dropping the watcher ends the task: later kills are not reported.
        let handle = watcher.0.abort_handle();
        drop(watcher);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !handle.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the watch task ends");
        std::fs::write(&events_file, "oom 2\noom_kill 2\n").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "no event after the watch was dropped"
        );
    }

    #[tokio::test]
    async fn the_watch_ends_by_itself_when_the_cgroup_is_removed() {
        let (dir, cg) = fake_v2();
        let (events, mut rx) = Events::for_test();
        let watcher = watch("c2", &cg, &events).unwrap();
        std::fs::remove_dir_all(dir.path().join("ctr")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !watcher.0.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the watch task ends once the cgroup is gone");
        assert!(rx.try_recv().is_err(), "removal is not an OOM");
    }
}
