//! The attack suite: every case attacks from inside a container (Linux or Wasm) through a
//! real containerd (1.6 and 2.1), and must fail because of one named defence. Each module
//! is one defence; each case's doc comment says which fix it would catch the removal of.
//!
//! Run as root like the other suites (`cargo test -p amphi-e2e --test attack`, or
//! `tests/run.sh`). Cases that need a capability beyond containerd's defaults add it with
//! `ctr run --cap-add` (usually `CAP_SYS_PTRACE`, the grant that beats non-dumpable).

#[allow(unused_imports)]
use amphi_e2e::{Containerd, e2e_test};

mod baseline;
mod cache;
mod devices;
mod hostile_module;
mod lsm;
mod sealed;
mod seccomp;
mod wasm_guest;
