//! Process-level system calls that need `unsafe`: the SIGTERM/SIGINT handler of a running
//! guest.
//!
//! Why: the init process is PID 1 of the container's pid namespace, where the kernel
//! ignores signals whose disposition is the default, so a plain SIGTERM would do nothing,
//! and a guest spinning in a loop never returns to the host to look at a flag. The handler
//! therefore ends the whole process at once with `_exit(128 + signo)`, the status a shell
//! reports for a process killed by that signal (SIGKILL needs no handler).
//!
//! Limitations: nothing is flushed or unwound on that path: the guest's writes went
//! straight to fds 0-2 (wasmtime-wasi does not buffer them), and the container is going
//! away anyway.

#![allow(unsafe_code)]

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The signals that stop a running guest.
const TERMINATING: [Signal; 2] = [Signal::SIGTERM, Signal::SIGINT];

/// Async-signal-safe: only calls `_exit`.
extern "C" fn exit_on_signal(signo: libc::c_int) {
    // SAFETY: `_exit` is async-signal-safe (POSIX.1 list) and takes any status; it ends
    // the process without running user-space cleanup that could deadlock here.
    unsafe { libc::_exit(128 + signo) }
}

/// Installs [`exit_on_signal`] for SIGTERM and SIGINT and unblocks them in this thread
/// (threads created later, such as wasmtime-wasi's workers, inherit the mask).
pub(crate) fn exit_on_termination_signals() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(exit_on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in TERMINATING {
        // SAFETY: the handler is async-signal-safe (it only calls `_exit`), and replacing
        // the disposition of SIGTERM/SIGINT does not invalidate any handler the rest of
        // the process relies on (wasmtime installs its own for SIGSEGV/SIGILL/SIGFPE/SIGBUS
        // only).
        unsafe { sigaction(signal, &action) }?;
    }
    let mut set = SigSet::empty();
    for signal in TERMINATING {
        set.add(signal);
    }
    set.thread_unblock()
}
