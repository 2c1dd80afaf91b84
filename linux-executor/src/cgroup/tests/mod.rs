//! Tests of the cgroup drivers against fake v1 and v2 trees (`fake`), plus tests on the
//! real host that need root (`root_host`, and `root_devices` for cgroup v2 device programs;
//! run on v1 and, by tests/vm/lane.sh, on v2).

#![allow(clippy::unwrap_used)]

mod fake;
mod root_devices;
mod root_host;
mod v1_tests;
mod v2_tests;

use std::{
    os::unix::process::ExitStatusExt,
    process::{Child, Command},
};

use oci_spec::runtime::LinuxResources;

/// `linux.resources` written as the JSON a `config.json` would carry.
fn resources(json: serde_json::Value) -> LinuxResources {
    serde_json::from_value(json).unwrap()
}

/// A real `sleep` to put into a fake cgroup and signal; killed and reaped on drop if the
/// test did not reap it.
struct Sleeper(Option<Child>);

impl Sleeper {
    fn spawn() -> Sleeper {
        Sleeper(Some(Command::new("sleep").arg("30").spawn().unwrap()))
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.0.as_ref().unwrap().id()).unwrap()
    }

    /// Waits for the process and returns the signal that ended it.
    fn wait_signal(mut self) -> Option<i32> {
        self.0.take().unwrap().wait().unwrap().signal()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
