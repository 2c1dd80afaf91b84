//! WASI 0.2 components, written as component-model text (no toolchain needed): stdout
//! through `wasi:cli/stdout`, `wasi:cli/run` results, `exit-with-code`, the initial cwd,
//! traps, named exports, and the cache on a component.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// Imports for writing to stdout (`wasi:io/error`, `wasi:io/streams`, `wasi:cli/stdout`),
/// a core memory with a bump `realloc`, and the lowered `$get-stdout`/`$write` functions.
const STDOUT: &str = r#"
  (import "wasi:io/error@0.2.0" (instance $io-error (export "error" (type (sub resource)))))
  (alias export $io-error "error" (type $error))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer $C $error (type $e))
    (export "error" (type $e2 (eq $e)))
    (export "output-stream" (type $os (sub resource)))
    (type $se (variant (case "last-operation-failed" (own $e2)) (case "closed")))
    (export "stream-error" (type $se2 (eq $se)))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $os)) (param "contents" (list u8)) (result (result (error $se2)))))))
  (alias export $streams "output-stream" (type $output-stream))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer $C $output-stream (type $os))
    (export "output-stream" (type $os2 (eq $os)))
    (export "get-stdout" (func (result (own $os2))))))
  (core module $Mem
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $next) (i32.const 7)) (i32.const -8)))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (local.get $p)))
  (core instance $mem (instantiate $Mem))
  (core func $get-stdout (canon lower (func $stdout "get-stdout")))
  (core func $write (canon lower (func $streams "[method]output-stream.blocking-write-and-flush")
    (memory (core memory $mem "memory"))))
"#;

/// Lifts the core instance `$main`'s `run` (returning the `result` discriminant) as
/// `wasi:cli/run`.
const EXPORT_RUN: &str = r#"
  (func $run (result (result)) (canon lift (core func $main "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli))
"#;

/// A command that writes `text` (ASCII, no quotes or backslashes) to stdout; `run`
/// returns the write's result. Also exports `quiet` (prints nothing, returns 42).
fn hello(text: &str) -> String {
    format!(
        r#"(component $C {STDOUT}
  (core module $Main
    (import "host" "get-stdout" (func $get-stdout (result i32)))
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (import "host" "memory" (memory 1))
    (data (i32.const 16) "{text}")
    (func (export "run") (result i32)
      (call $write (call $get-stdout) (i32.const 16) (i32.const {len}) (i32.const 64))
      (i32.load8_u (i32.const 64)))
    (func (export "quiet") (result i32) (i32.const 42)))
  (core instance $main (instantiate $Main (with "host" (instance
    (export "get-stdout" (func $get-stdout))
    (export "write" (func $write))
    (export "memory" (memory $mem "memory"))))))
  {EXPORT_RUN}
  (func $quiet (result u32) (canon lift (core func $main "quiet")))
  (export "quiet" (func $quiet)))"#,
        len = text.len()
    )
}

/// A command whose `run` body is `body` (core instructions returning an i32), with
/// `wasi:cli/exit.exit-with-code` available as `$exit`.
fn command(body: &str) -> String {
    format!(
        r#"(component
  (import "wasi:cli/exit@0.2.0" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $exit (canon lower (func $exit "exit-with-code")))
  (core module $Main
    (import "host" "exit" (func $exit (param i32)))
    (func (export "run") (result i32) {body}))
  (core instance $main (instantiate $Main (with "host" (instance (export "exit" (func $exit))))))
  {EXPORT_RUN})"#
    )
}

/// A command that prints `wasi:cli/environment.initial-cwd`; `run` fails when it is none.
fn print_cwd() -> String {
    format!(
        r#"(component $C {STDOUT}
  (import "wasi:cli/environment@0.2.0" (instance $env
    (export "initial-cwd" (func (result (option string))))))
  (core func $get-cwd (canon lower (func $env "initial-cwd")
    (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))))
  (core module $Main
    (import "host" "get-stdout" (func $get-stdout (result i32)))
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (import "host" "get-cwd" (func $get-cwd (param i32)))
    (import "host" "memory" (memory 1))
    (func (export "run") (result i32)
      (call $get-cwd (i32.const 64))
      (if (i32.eqz (i32.load8_u (i32.const 64))) (then (return (i32.const 1))))
      (call $write (call $get-stdout) (i32.load (i32.const 68)) (i32.load (i32.const 72))
        (i32.const 96))
      (i32.load8_u (i32.const 96))))
  (core instance $main (instantiate $Main (with "host" (instance
    (export "get-stdout" (func $get-stdout))
    (export "write" (func $write))
    (export "get-cwd" (func $get-cwd))
    (export "memory" (memory $mem "memory"))))))
  {EXPORT_RUN})"#
    )
}

#[test]
fn a_component_prints_through_wasi_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_fixture(dir.path(), "hello.wat", &hello("hello from a component"));
    let out = run(common::command(&file, &[], &[]));
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "hello from a component");
}

#[test]
fn a_cached_component_runs_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let cache = cache.display().to_string();
    let file = write_fixture(dir.path(), "hello.wat", &hello("cached component"));
    for expected in ["cache: Miss", "cache: Hit"] {
        let out = run(common::command(&file, &["--cache", &cache], &[]));
        assert_eq!(out.code(), Some(0), "{out:?}");
        assert_eq!(out.stdout_text(), "cached component");
        assert!(out.stderr.contains(expected), "{expected}: {out:?}");
    }
}

#[test]
fn run_results_and_exit_codes_become_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("(i32.const 0)", Some(0)),
        ("(i32.const 1)", Some(1)),
        ("(call $exit (i32.const 7)) (i32.const 0)", Some(7)),
        ("unreachable", Some(134)),
    ];
    for (body, status) in cases {
        let file = write_fixture(dir.path(), "command.wat", &command(body));
        let out = run(common::command(&file, &[], &[]));
        assert_eq!(out.code(), status, "{body}: {out:?}");
        if status == Some(134) {
            assert!(out.stderr.contains("wasm trap: "), "{out:?}");
        }
    }
}

#[test]
fn the_initial_cwd_reaches_components() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_fixture(dir.path(), "cwd.wat", &print_cwd());
    let out = run(common::command(&file, &["--cwd", "/srv/app"], &[]));
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "/srv/app");
}

#[test]
fn export_selects_a_component_function() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_fixture(dir.path(), "hello.wat", &hello("not printed"));
    let out = run(common::command(&file, &["--export", "quiet"], &[]));
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    let out = run(common::command(&file, &["--export", "absent"], &[]));
    assert_eq!(out.code(), Some(127), "{out:?}");
}

#[test]
fn a_component_without_wasi_cli_run_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_fixture(dir.path(), "lib.wat", "(component)");
    let out = run(common::command(&file, &[], &[]));
    assert_eq!(out.code(), Some(127), "{out:?}");
    assert!(out.stderr.contains("wasi:cli/run"), "{out:?}");
}
