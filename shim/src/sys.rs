//! The one `unsafe` call of the shim, behind a safe function: registering a descriptor with
//! tokio's reactor (tokio made that constructor unsafe, tokio#8587, because it cannot check
//! I/O safety itself). Used for the OOM watch and for terminal masters.
//!
//! Every `unsafe` block states its justification in a `// SAFETY:` comment.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};

use amphi_linux_executor::cgroup::OomWatch;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A value that owns one descriptor for its whole life and never replaces it: what makes
/// [`register`] sound. Implemented only for the types the shim registers.
pub trait OwnsFd: AsRawFd {}

/// Owns its descriptor by definition.
impl OwnsFd for OwnedFd {}
/// Holds its eventfd or inotify instance by value, never replaced.
impl OwnsFd for OomWatch {}

/// Registers `owner`'s descriptor with the current tokio runtime for `interest`.
pub fn register<T: OwnsFd>(owner: T, interest: Interest) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `T: OwnsFd` owns the descriptor `as_raw_fd` returns, so it is open, refers to
    // the same file description and keeps its number for as long as the `AsyncFd` owns the
    // value; it is closed only when the `AsyncFd` (and with it the value) is dropped, after
    // deregistration.
    unsafe { AsyncFd::register_with_interest(owner, interest) }.map_err(Into::into)
}
