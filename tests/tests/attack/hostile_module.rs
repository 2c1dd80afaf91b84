//! Defence: a hostile module ends in a clean status or a failed Create, never in a crashed
//! shim or a hang. Huge memory and table declarations meet the store limits derived from
//! `--memory-limit` (instantiation refused: 126); unbounded recursion meets wasmtime's
//! explicit wasm stack limit (a stack-overflow trap: 134); truncated bytes fail validation
//! in the helper (Create fails with INVALID_ARGUMENT). After each, the shim still runs the
//! next container (`hello` as control).
//!
//! Removing the store limits makes `huge_declarations_are_refused` fail (the module
//! instantiates and prints "instantiated").

use std::fs;

use amphi_e2e::wasm::{WasmImageSpec, fixture};
use amphi_e2e::{Containerd, e2e_test};

const LIMIT: &str = "67108864"; // 64 MiB

fn control(d: &Containerd) {
    let image = d.import_wasm("hello", &fixture("hello"), &WasmImageSpec::default());
    let id = d.new_id("hctl");
    let out = d.run_image_rm(&id, &[], &image, &[]);
    assert_eq!(
        out.code(),
        Some(0),
        "{}: the shim is unwell afterwards:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
}

e2e_test!(
    huge_declarations_are_refused,
    [v1_6, v2_1],
    |d: &Containerd| {
        for name in ["hugemem", "hugetable"] {
            let image = d.import_wasm(name, &fixture(name), &WasmImageSpec::default());
            let id = d.new_id(name);
            let out = d.run_image_rm(&id, &["--memory-limit", LIMIT], &image, &[]);
            eprintln!("{} {name}:\n{out}", d.version());
            assert_eq!(
                out.code(),
                Some(126),
                "{}: {name} under 64 MiB:\n{out}",
                d.version()
            );
            assert!(
                out.stderr.contains("cannot instantiate"),
                "{}: {name}: no reason on stderr:\n{out}",
                d.version()
            );
            assert!(
                !out.stdout.contains("instantiated"),
                "{}: {name} ran:\n{out}",
                d.version()
            );
            d.assert_no_leaks(&id);
        }
        control(d);
    }
);

e2e_test!(deep_recursion_traps, [v1_6, v2_1], |d: &Containerd| {
    let image = d.import_wasm("recurse", &fixture("recurse"), &WasmImageSpec::default());
    let id = d.new_id("hrec");
    let out = d.run_image_rm(&id, &[], &image, &[]);
    eprintln!("{}:\n{out}", d.version());
    assert_eq!(
        out.code(),
        Some(134),
        "{}: stack overflow:\n{out}",
        d.version()
    );
    assert!(
        out.stdout.contains("recursing"),
        "{}: never started:\n{out}",
        d.version()
    );
    assert!(
        out.stderr.contains("wasm trap") && out.stderr.contains("stack"),
        "{}: no stack-overflow trap on stderr:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&id);
    control(d);
});

e2e_test!(
    a_truncated_module_fails_create,
    [v1_6, v2_1],
    |d: &Containerd| {
        let module = amphi_image::module::load(&fixture("hello")).expect("hello fixture");
        let root = d.work_dir().join("truncated-rootfs");
        fs::create_dir_all(&root).expect("mkdir");
        // The header and half of what follows: still `\0asm`, so dispatched as Wasm.
        let cut = 8 + (module.bytes.len() - 8) / 2;
        fs::write(root.join("bad.wasm"), &module.bytes[..cut]).expect("write bad.wasm");
        let image = d.import_dir_image("truncated", &root, &["/bad.wasm"]);
        let id = d.new_id("htrunc");
        let out = d.run_image_rm(&id, &[], &image, &[]);
        eprintln!("{}:\n{out}", d.version());
        assert_ne!(
            out.code(),
            Some(0),
            "{}: a truncated module ran:\n{out}",
            d.version()
        );
        // The runner's InvalidArgument message (ctr 1.6 also prints the code as "invalid
        // argument"; ctr 2.1 prints only the message).
        assert!(
            out.stderr.contains("failed to create shim task")
                && out.stderr.contains("/bad.wasm: invalid WebAssembly module"),
            "{}: Create must fail naming the invalid module:\n{out}",
            d.version()
        );
        if d.version().to_string().starts_with("containerd 1.") {
            assert!(
                out.stderr.contains("invalid argument"),
                "{}: Create must fail with INVALID_ARGUMENT:\n{out}",
                d.version()
            );
        }
        d.assert_no_leaks(&id);
        control(d);
    }
);
