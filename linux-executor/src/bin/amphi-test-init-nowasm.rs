//! Test fixture binary: routes `init` to [`amphi_linux_executor::init::main`], the entry
//! point without a WebAssembly runner, so a root test can check that it refuses Wasm
//! workloads clearly.

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "init") {
        amphi_linux_executor::init::main();
    }
    eprintln!("amphi-test-init-nowasm: internal test helper; run by launch::create");
    std::process::exit(2);
}
