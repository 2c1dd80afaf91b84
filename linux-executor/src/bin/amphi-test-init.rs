//! Test fixture binary: routes `init` to [`amphi_linux_executor::init::main`] exactly as the
//! shim's `main` does, so the root integration tests (`tests/root_*.rs`) can launch real
//! containers through `CARGO_BIN_EXE_amphi-test-init` without building the shim.

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "init") {
        amphi_linux_executor::init::main();
    }
    eprintln!(
        "amphi-test-init: internal test helper; run as `amphi-test-init init` by launch::create"
    );
    std::process::exit(2);
}
