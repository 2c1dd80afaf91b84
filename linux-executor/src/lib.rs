//! The Linux side of amphi: turning an OCI spec into a sandbox and running a native
//! program in it, plus the cgroup drivers both kinds of container share.
//!
//! Data flows in one direction:
//!
//! 1. [`plan`]: pure code turns the OCI `Spec` into an [`plan::InitPlan`] (plain data:
//!    namespaces, mounts, devices, user, capabilities, rlimits...). Unit-tested without root.
//! 2. [`launch`] (runs in the shim): re-executes our own binary as the container init
//!    helper, hands it the plan over an inherited socket, places it in its cgroup, writes
//!    user-namespace maps, and later releases the start barrier.
//! 3. [`init`] (runs in the re-executed helper, single-threaded): applies the plan with thin
//!    syscall wrappers, reports readiness, blocks on the start barrier, then `execve`s.
//! 4. [`cgroup`]: v1, v2 and hybrid drivers over an injectable cgroupfs root, used by the
//!    shim for both Linux and Wasm containers (create, place, update, freeze, stats, kill).
//! 5. [`pty`] (runs in the shim): window size of the pty master a process created with a
//!    terminal sent back over the launch socket.
//! 6. [`rootfs_lookup`] (runs in the shim, before launching): reads and resolves files of
//!    the container's rootfs without ever leaving it, for the Linux-or-Wasm dispatch.
//! 7. [`sealed`] (runs in the shim, once): the read-only handle on our own binary that every
//!    helper is executed through, so no container ever runs (or can write) the host's file.
//!
//! A plan's [`plan::Workload`] is either `Exec` (the native program) or `Wasm`: the init then
//! runs a WebAssembly module in-process, through the [`init::WasmRunner`] the binary hands to
//! [`init::main_with`]. This crate does not depend on wasmtime; the shim wires the
//! Wasm executor in.

pub mod cgroup;
mod detached;

pub mod init;
pub mod launch;
pub mod plan;
pub mod pty;
pub mod rootfs_lookup;
pub mod sealed;
mod sys;
