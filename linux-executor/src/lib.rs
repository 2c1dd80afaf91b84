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

pub mod cgroup;

pub mod init;
pub mod launch;
pub mod plan;
mod sys;
