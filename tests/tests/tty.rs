//! Terminal cases, run against containerd 1.6 and 2.1: `ctr run -t` and `ctr task exec -t`
//! on a terminal the test owns ([`amphi_e2e::pty::Terminal`]: ctr's stdio is the slave of a
//! pty whose master the test reads and writes), and ResizePty.
//!
//! - `ctr run -t ... sh -c 'tty; stty size; exit 3'`: a pty of the container's devpts, the
//!   size of the test's terminal (ctr sends it with ResizePty once the task started), exit 3;
//! - an interactive `sh` fed `echo ...; exit 4` through the terminal;
//! - `ctr task exec -t` into a running container: a terminal, output, exit code, and the
//!   shim's descriptor count unchanged after three such execs (no master left behind);
//! - resize: the test's terminal resized (ctr forwards SIGWINCH as ResizePty) and
//!   Tasks.ResizePty through containerd's API (ctr has no resize command), both seen by
//!   `stty size` in the container; ResizePty of a process without a terminal
//!   (FAILED_PRECONDITION) or of an unknown exec (NOT_FOUND) fails;
//! - a Wasm module run with `-t` sees a terminal (`fd_fdstat_get` reports a character
//!   device) and its output arrives; without `-t` it does not see one.

use std::thread;
use std::time::{Duration, Instant};

use amphi_e2e::leaks::processes_matching;
use amphi_e2e::pty::Terminal;
use amphi_e2e::wasm::{WasmImageSpec, fixture};
use amphi_e2e::{Containerd, Output, e2e_test};

/// How long a whole terminal session may take.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for something to show up on the terminal.
const SHOW_TIMEOUT: Duration = Duration::from_secs(20);
/// The size of the test's terminal.
const ROWS: u16 = 37;
const COLS: u16 = 101;

/// `ctr run -t --rm --runtime <runtime> <image> <id> <cmd...>`, on a new terminal.
fn run_tty(d: &Containerd, id: &str, image: &str, cmd: &[&str]) -> Terminal {
    let mut command = d.ctr_command();
    command.args(d.image_run_argv("--rm", id, &["-t"], image, cmd));
    Terminal::spawn(&command, ROWS, COLS)
}

/// `ctr task exec -t --exec-id <exec_id> <id> <cmd...>`, on a new terminal.
fn exec_tty(d: &Containerd, id: &str, exec_id: &str, cmd: &[&str]) -> Terminal {
    let mut command = d.ctr_command();
    command
        .args(["tasks", "exec", "-t", "--exec-id", exec_id, id])
        .args(cmd);
    Terminal::spawn(&command, ROWS, COLS)
}

/// A shell line that waits (up to 10 s) until the terminal has a size, then prints it: ctr
/// sends the size with ResizePty only after the task started (busybox `stty size` prints
/// nothing on stdout while the size is 0).
const PRINT_SIZE: &str = "i=0; until [ -n \"$(stty size 2>/dev/null)\" ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; stty size";

#[track_caller]
fn assert_shows(d: &Containerd, out: &Output, needle: &str, what: &str) {
    assert!(
        out.stdout.contains(needle),
        "{}: {what}: the terminal does not show {needle:?}:\n{out}",
        d.version()
    );
}

/// Like [`assert_shows`], for a whole line (line ends on a terminal are CR LF, or CR CR LF
/// when ctr's side is not in raw mode).
#[track_caller]
fn assert_line(d: &Containerd, out: &Output, line: &str, what: &str) {
    assert!(
        out.stdout.lines().any(|l| l.trim_end_matches('\r') == line),
        "{}: {what}: the terminal shows no line {line:?}:\n{out}",
        d.version()
    );
}

/// Pids of the amphi shim servers of this daemon.
fn shim_servers(d: &Containerd) -> Vec<u32> {
    processes_matching(&[d.socket().display().to_string()])
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("containerd-shim-amphi-v1") && cmd.contains("-socket"))
        .map(|(pid, _)| pid)
        .collect()
}

fn open_fds(pid: u32) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| {
                    let target = std::fs::read_link(e.path()).unwrap_or_default();
                    format!(
                        "{} -> {}",
                        e.file_name().to_string_lossy(),
                        target.display()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    fds.sort();
    fds
}

/// Types `line` once the shell's prompt is there.
fn type_line(d: &Containerd, term: &mut Terminal, line: &str) {
    assert!(
        term.wait_for("# ", SHOW_TIMEOUT),
        "{}: no shell prompt on the terminal:\n{}",
        d.version(),
        term.transcript()
    );
    term.write(line.as_bytes());
}

/// Waits until `stty size` run in the container printed `rows cols` (the shell reprints it
/// on request until the resize arrived: a resize travels ctr → containerd → shim).
#[track_caller]
fn wait_for_size(d: &Containerd, term: &mut Terminal, rows: u16, cols: u16, how: &str) {
    let want = format!("{rows} {cols}");
    let deadline = Instant::now() + SHOW_TIMEOUT;
    loop {
        // The echo of "stty size" never contains the size itself.
        term.write(b"stty size\r");
        if term.wait_for(&format!("\n{want}"), Duration::from_secs(2)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: after {how}, stty size in the container never printed {want:?}:\n{}",
            d.version(),
            term.transcript()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

e2e_test!(
    run_tty_size_and_exit_code,
    [v1_6, v2_1],
    |d: &Containerd| {
        let id = d.new_id("tty");
        let script = format!("tty; echo fds: $(ls /proc/self/fd); {PRINT_SIZE}; exit 3");
        let out = run_tty(d, &id, amphi_e2e::image::IMAGE, &["sh", "-c", &script])
            .wait_timeout(SESSION_TIMEOUT);
        assert_eq!(
            out.code(),
            Some(3),
            "{}: exit status of `ctr run -t`:\n{out}",
            d.version()
        );
        assert!(
            out.stdout.contains("/dev/pts/") || out.stdout.contains("/dev/console"),
            "{}: `tty` in the container names no terminal:\n{out}",
            d.version()
        );
        assert!(!out.stdout.contains("not a tty"), "{}:\n{out}", d.version());
        assert_shows(
            d,
            &out,
            &format!("{ROWS} {COLS}"),
            "stty size (the test's window size)",
        );
        d.assert_no_leaks(&id);
    }
);

e2e_test!(interactive_shell, [v1_6, v2_1], |d: &Containerd| {
    let id = d.new_id("ttysh");
    let mut term = run_tty(d, &id, amphi_e2e::image::IMAGE, &["sh"]);
    // The product only appears if the shell ran the line (the echo shows "6*7").
    type_line(
        d,
        &mut term,
        "echo hi-$((6*7)); [ -t 0 ] && echo stdin-is-a-tty; exit 4\r",
    );
    let out = term.wait_timeout(SESSION_TIMEOUT);
    assert_eq!(
        out.code(),
        Some(4),
        "{}: exit status of the shell:\n{out}",
        d.version()
    );
    assert_shows(d, &out, "hi-42", "the shell's output");
    assert_shows(d, &out, "stdin-is-a-tty", "[ -t 0 ]");
    d.assert_no_leaks(&id);
});

e2e_test!(exec_tty, [v1_6, v2_1], |d: &Containerd| {
    let id = d.new_id("ttyexec");
    d.run_detached(&id, &[], &["sleep", "1000"]);
    let shims = shim_servers(d);
    assert_eq!(
        shims.len(),
        1,
        "{}: one shim server: {shims:?}",
        d.version()
    );
    let before = open_fds(shims[0]);
    for n in 0..3 {
        let exec_id = format!("{id}-e{n}");
        let script = format!(
            "tty; [ -t 1 ] && echo out-is-a-tty; echo fds: $(ls /proc/self/fd); {PRINT_SIZE}; exit 5"
        );
        let out = exec_tty(d, &id, &exec_id, &["sh", "-c", &script]).wait_timeout(SESSION_TIMEOUT);
        assert_eq!(
            out.code(),
            Some(5),
            "{}: exit status of the exec:\n{out}",
            d.version()
        );
        assert_shows(d, &out, "/dev/pts/", "tty in the exec");
        assert_shows(d, &out, "out-is-a-tty", "[ -t 1 ] in the exec");
        assert_line(d, &out, "fds: 0 1 2 3", "the exec's fds");
        assert_shows(d, &out, &format!("{ROWS} {COLS}"), "stty size in the exec");
    }
    // ctr deletes its exec when done; give the shim a moment to drop what it held.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = open_fds(shims[0]);
    while after.len() != before.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        after = open_fds(shims[0]);
    }
    assert_eq!(
        after.len(),
        before.len(),
        "{}: the shim's descriptors changed over three terminal execs:\nbefore {before:#?}\nafter {after:#?}",
        d.version()
    );
    assert_eq!(d.kill_and_remove(&id, "KILL"), 137);
    d.assert_no_leaks(&id);
});

e2e_test!(resize, [v1_6, v2_1], |d: &Containerd| {
    let id = d.new_id("ttyresize");
    let mut term = run_tty(d, &id, amphi_e2e::image::IMAGE, &["sh"]);
    assert!(
        term.wait_for("# ", SHOW_TIMEOUT),
        "{}: no prompt:\n{}",
        d.version(),
        term.transcript()
    );
    wait_for_size(d, &mut term, ROWS, COLS, "start");
    // SIGWINCH: ctr forwards the new size with ResizePty.
    term.resize(50, 132);
    wait_for_size(d, &mut term, 50, 132, "resizing ctr's terminal");
    // Tasks.ResizePty through containerd's API (ctr has no resize command).
    d.api_resize_pty(&id, "", 140, 60)
        .unwrap_or_else(|e| panic!("{}: ResizePty of the init: {e}", d.version()));
    wait_for_size(d, &mut term, 60, 140, "Tasks.ResizePty");
    // An exec id that does not exist.
    let err = d
        .api_resize_pty(&id, "nope", 80, 24)
        .expect_err("resize of an unknown exec must fail");
    assert!(
        err.contains("NotFound"),
        "{}: resize of an unknown exec: {err}",
        d.version()
    );
    term.write(b"exit 0\r");
    let out = term.wait_timeout(SESSION_TIMEOUT);
    assert_eq!(out.code(), Some(0), "{}:\n{out}", d.version());
    d.assert_no_leaks(&id);

    // A task without a terminal cannot be resized.
    let plain = d.new_id("nottyresize");
    d.run_detached(&plain, &[], &["sleep", "1000"]);
    let err = d
        .api_resize_pty(&plain, "", 80, 24)
        .expect_err("resize without a terminal must fail");
    assert!(
        err.contains("FailedPrecondition") && err.contains("no terminal"),
        "{}: resize without a terminal: {err}",
        d.version()
    );
    assert_eq!(d.kill_and_remove(&plain, "KILL"), 137);
    d.assert_no_leaks(&plain);
});

e2e_test!(wasm_tty, [v1_6, v2_1], |d: &Containerd| {
    let image = d.import_wasm("isatty", &fixture("isatty"), &WasmImageSpec::default());
    let id = d.new_id("wtty");
    let out = run_tty(d, &id, &image, &[]).wait_timeout(SESSION_TIMEOUT);
    assert_eq!(
        out.code(),
        Some(0),
        "{}: the module with -t:\n{out}",
        d.version()
    );
    assert_shows(d, &out, "stdout is a tty", "the module's isatty with -t");
    d.assert_no_leaks(&id);

    let plain = d.new_id("wnotty");
    let out = d.run_image_rm(&plain, &[], &image, &[]);
    assert_eq!(
        out.code(),
        Some(0),
        "{}: the module without -t:\n{out}",
        d.version()
    );
    assert!(
        out.stdout.contains("stdout is not a tty"),
        "{}: without -t the module must not see a terminal:\n{out}",
        d.version()
    );
    d.assert_no_leaks(&plain);
});
