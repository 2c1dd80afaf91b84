//! The one `unsafe` call of the shim, behind a safe function: registering the OOM watch's
//! descriptor with tokio's reactor.
//!
//! Every `unsafe` block states its justification in a `// SAFETY:` comment.
#![allow(unsafe_code)]

use amphi_linux_executor::cgroup::OomWatch;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers `watch` for readability with the current tokio runtime.
pub fn async_oom_watch(watch: OomWatch) -> std::io::Result<AsyncFd<OomWatch>> {
    // SAFETY: `OomWatch` owns its descriptor (an eventfd or an inotify instance held by
    // value, never replaced), so the fd `as_raw_fd` returns is open, refers to the same
    // file description, and is the same number for as long as the `AsyncFd` owns it; it
    // is closed only when the `AsyncFd` (and with it the watch) is dropped.
    unsafe { AsyncFd::register_with_interest(watch, Interest::READABLE) }.map_err(|e| e.into())
}
