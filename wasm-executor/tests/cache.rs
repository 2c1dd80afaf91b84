//! The compiled-artifact cache through the public API: miss then hit, corrupt and
//! incompatible entries, the size bound, a read-only directory, and `prepare` errors.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amphi_wasm_executor::{CacheOutcome, WasmConfig, WasmError, prepare};
use common::*;

fn config(dir: &Path, max: u64) -> WasmConfig {
    WasmConfig {
        cache_dir: Some(OwnedFd::from(File::open(dir).expect("open cache dir"))),
        cache_view: None,
        cache_max_bytes: max,
    }
}

fn outcome(wat: &str, config: &WasmConfig) -> CacheOutcome {
    prepare(wat.as_bytes(), config).expect("prepare").1
}

/// The `.cwasm` entries in `dir`.
fn artifacts(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    found.sort();
    found
}

fn total_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn miss_then_hit() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 64 << 20);
    let wat = hello("cached\n");
    assert_eq!(outcome(&wat, &config), CacheOutcome::Miss);
    assert_eq!(artifacts(dir.path()).len(), 1);
    assert_eq!(outcome(&wat, &config), CacheOutcome::Hit);
    assert_eq!(outcome(&hello("other"), &config), CacheOutcome::Miss);
    assert_eq!(artifacts(dir.path()).len(), 2);
}

#[test]
fn without_a_directory_the_cache_is_disabled() {
    let config = WasmConfig::default();
    assert_eq!(outcome(&hello("x"), &config), CacheOutcome::Disabled);
}

#[test]
fn a_corrupt_entry_is_recompiled_then_hits() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 64 << 20);
    let wat = hello("corrupt me");
    assert_eq!(outcome(&wat, &config), CacheOutcome::Miss);
    let entry = artifacts(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&entry, &bytes).unwrap();
    assert_eq!(outcome(&wat, &config), CacheOutcome::Recompiled);
    assert_eq!(outcome(&wat, &config), CacheOutcome::Hit);
}

#[test]
fn an_entry_wasmtime_rejects_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 64 << 20);
    let wat = hello("incompatible");
    assert_eq!(outcome(&wat, &config), CacheOutcome::Miss);
    let entry = artifacts(dir.path()).pop().unwrap();
    // Content that matches its checksum but is not an artifact of this engine, as an
    // entry from an incompatible build would be.
    let fake = b"not an artifact of this engine";
    std::fs::write(&entry, fake).unwrap();
    let digest = sha2_hex(fake);
    std::fs::write(
        entry.with_extension("sum"),
        format!("{digest} {}\n", fake.len()),
    )
    .unwrap();
    assert_eq!(outcome(&wat, &config), CacheOutcome::Recompiled);
    assert_eq!(outcome(&wat, &config), CacheOutcome::Hit);
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_missing_checksum_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 64 << 20);
    let wat = hello("no sum");
    assert_eq!(outcome(&wat, &config), CacheOutcome::Miss);
    let entry = artifacts(dir.path()).pop().unwrap();
    std::fs::remove_file(entry.with_extension("sum")).unwrap();
    assert_eq!(outcome(&wat, &config), CacheOutcome::Recompiled);
    assert_eq!(outcome(&wat, &config), CacheOutcome::Hit);
}

#[test]
fn eviction_keeps_the_bound_and_drops_the_least_recently_used() {
    // Measure one entry (the fixtures differ only in a same-length string).
    let probe = tempfile::tempdir().unwrap();
    assert_eq!(
        outcome(&hello("module-a"), &config(probe.path(), u64::MAX)),
        CacheOutcome::Miss
    );
    let one = total_size(probe.path());
    let max = one * 5 / 2; // room for two entries, not three

    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), max);
    let tick = || std::thread::sleep(Duration::from_millis(30)); // coarse mtime clock
    assert_eq!(outcome(&hello("module-a"), &config), CacheOutcome::Miss);
    tick();
    assert_eq!(outcome(&hello("module-b"), &config), CacheOutcome::Miss);
    tick();
    assert_eq!(outcome(&hello("module-a"), &config), CacheOutcome::Hit); // a is now newer
    tick();
    assert_eq!(outcome(&hello("module-c"), &config), CacheOutcome::Miss);
    assert!(
        total_size(dir.path()) <= max,
        "{} > {max}",
        total_size(dir.path())
    );
    assert_eq!(artifacts(dir.path()).len(), 2);
    assert_eq!(outcome(&hello("module-a"), &config), CacheOutcome::Hit);
    assert_eq!(outcome(&hello("module-c"), &config), CacheOutcome::Hit);
    assert_eq!(outcome(&hello("module-b"), &config), CacheOutcome::Miss);
}

#[test]
fn an_artifact_larger_than_the_bound_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 100);
    assert_eq!(outcome(&hello("big"), &config), CacheOutcome::NotStored);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn components_are_cached_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 64 << 20);
    let wat = r#"(component
  (core module $m (func (export "f")))
  (core instance $i (instantiate $m))
  (func $f (canon lift (core func $i "f")))
  (export "f" (func $f)))"#;
    let (prepared, first) = prepare(wat.as_bytes(), &config).unwrap();
    assert!(prepared.is_component());
    assert_eq!(first, CacheOutcome::Miss);
    let (prepared, second) = prepare(wat.as_bytes(), &config).unwrap();
    assert!(prepared.is_component());
    assert_eq!(second, CacheOutcome::Hit);
}

/// A read-only cache directory: as root (which ignores permission bits) the child gets a
/// private mount namespace with a read-only bind mount (`unshare` from util-linux);
/// otherwise mode 0555 does it. Either way the module must still run.
#[test]
fn a_readonly_cache_is_not_stored_but_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let file = write_fixture(dir.path(), "hello.wat", &hello("still runs"));
    let cache_arg = cache.display().to_string();
    let out = if nix::unistd::geteuid().is_root() {
        let script = format!(
            "mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && exec {BIN} --cache \"$1\" \"$2\""
        );
        let mut cmd = std::process::Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(&cache)
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        run(cmd)
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o555)).unwrap();
        run(command(&file, &["--cache", &cache_arg], &[]))
    };
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "still runs");
    assert!(out.stderr.contains("cache: NotStored"), "{out:?}");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
}

#[test]
fn invalid_bytes_are_reported_as_invalid() {
    let config = WasmConfig::default();
    for bytes in [
        &b"\x7fELF\x02\x01\x01"[..],
        b"\0asm\x01\0\0\0\x01\x02",
        b"(module (func (result i32)))",
        b"(module (func",
    ] {
        match prepare(bytes, &config) {
            Err(err @ WasmError::Invalid(_)) => {
                assert!(
                    err.to_string().starts_with("invalid WebAssembly module: "),
                    "{err}"
                );
            }
            other => panic!("{bytes:?}: expected Invalid, got {other:?}"),
        }
    }
}
