//! Wasm fixtures and images for the end-to-end suite (`tests/tests/wasm.rs`).
//!
//! - Fixtures are WebAssembly text in `tests/fixtures/wasm/*.wat` (WASI preview 1), turned
//!   into images with `amphi-image` (the [`amphi_image`] library): one layer holding
//!   `/<stem>.wasm`, `Entrypoint: ["/<stem>.wasm", ...]`, platform linux/<host arch>, so
//!   containerd unpacks it like any image and amphi recognises the module by its bytes.
//! - The WASI 0.2 component is built from `tests/fixtures/wasm/hello_component.rs` with
//!   `cargo build --offline --target wasm32-wasip2`, once per test process ([`component`]).
//! - [`cache_entries`] reads the shim's compiled-module cache
//!   ([`Containerd::wasm_cache_dir`]): files not starting with `.` grouped by the name
//!   before their first `.` (`<key>.cwasm` + `<key>.sum` are one entry; `.tmp-*` files of
//!   writers in progress are not entries).
//!
//! ```text
//! fixtures/wasm/hello.wat ──amphi_image::wasm_image──▶ <work>/localhost-hello.tar
//!   ──ctr image import --base-name localhost/hello──▶ localhost/hello:test
//!   ──ctr run --runtime io.containerd.amphi.v1──▶ shim: entrypoint bytes \0asm ─▶ wasmtime
//! ```

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use amphi_image::{ImageName, Layout, Platform, WasmImageOptions};

use crate::command::{Background, Output, run};
use crate::ctr::TaskRow;
use crate::daemon::Containerd;
use crate::env::{runtime, target_dir, workspace_root};

/// The `.wat` fixtures (file stems), each a WASI preview 1 command module.
pub const FIXTURES: &[&str] = &[
    "hello",
    "exit3",
    "echo",
    "fs",
    "memory",
    "loop",
    "sleep",
    "isatty",
    "probe",
    "hugemem",
    "hugetable",
    "recurse",
];

/// The Rust source of the WASI 0.2 component fixture.
pub const COMPONENT_SOURCE: &str = "hello_component.rs";

/// The tag every image the suite builds carries.
pub const TAG: &str = "test";

/// How long building the component may take (a cold `cargo build` of a tiny crate).
const COMPONENT_BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// `tests/fixtures/wasm`.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("tests").join("fixtures").join("wasm")
}

/// The path of the fixture `<name>.wat`; panics when it is missing.
pub fn fixture(name: &str) -> PathBuf {
    let path = fixtures_dir().join(format!("{name}.wat"));
    assert!(
        path.is_file(),
        "Wasm fixture {} is missing (expected one of {FIXTURES:?})",
        path.display()
    );
    path
}

/// The WASI 0.2 component (`.wasm`), built once per test process under
/// `<target>/amphi-e2e/wasm-component/`. Panics with the fix when the `wasm32-wasip2`
/// target is not installed or the build fails.
pub fn component() -> &'static Path {
    static COMPONENT: OnceLock<PathBuf> = OnceLock::new();
    COMPONENT
        .get_or_init(|| build_component(&target_dir().join("amphi-e2e").join("wasm-component")))
}

/// Builds the component fixture in `dir` (a standalone cargo package with its own
/// `[workspace]`, so the amphi workspace is not involved) and returns the `.wasm`.
pub fn build_component(dir: &Path) -> PathBuf {
    let src = fixtures_dir().join(COMPONENT_SOURCE);
    let source = fs::read_to_string(&src)
        .unwrap_or_else(|e| panic!("cannot read the component source {}: {e}", src.display()));
    let src_dir = dir.join("src");
    fs::create_dir_all(&src_dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", src_dir.display()));
    write_if_changed(
        &dir.join("Cargo.toml"),
        "[package]\nname = \"hello-component\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
         publish = false\n\n[workspace]\n\n[profile.release]\nopt-level = \"s\"\n",
    );
    write_if_changed(&src_dir.join("main.rs"), &source);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args([
            "build",
            "--offline",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(dir.join("target"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let out = run(&mut cmd, COMPONENT_BUILD_TIMEOUT);
    assert!(
        out.success(),
        "building the WASI 0.2 component fixture failed; is the target installed? \
         (`rustup target add wasm32-wasip2`, done by deploy/install-deps.sh)\n{out}"
    );
    let wasm = dir.join("target/wasm32-wasip2/release/hello-component.wasm");
    let bytes = fs::read(&wasm)
        .unwrap_or_else(|e| panic!("the component build produced no {}: {e}", wasm.display()));
    assert_eq!(
        amphi_image::module::kind_of(&bytes),
        Some(amphi_image::WasmKind::Component),
        "{} is not a component",
        wasm.display()
    );
    wasm
}

fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// What goes into a Wasm image besides the module.
#[derive(Debug, Clone, Default)]
pub struct WasmImageSpec<'a> {
    /// Arguments after the module in `Entrypoint`.
    pub args: &'a [&'a str],
    /// `Env` entries (`KEY=VALUE`).
    pub env: &'a [&'a str],
    /// Host files and where they go in the image.
    pub files: &'a [(&'a Path, &'a str)],
}

/// A cache entry: the files of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The name before the first `.` (the cache key).
    pub key: String,
    /// Its files, sorted.
    pub files: Vec<PathBuf>,
}

impl CacheEntry {
    /// The largest file of the entry: the compiled artifact (the rest is metadata).
    pub fn artifact(&self) -> &Path {
        self.files
            .iter()
            .max_by_key(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .map(PathBuf::as_path)
            .unwrap_or_else(|| panic!("cache entry {} has no files", self.key))
    }
}

/// The entries of a cache directory (see the module docs); panics when it does not exist.
pub fn cache_entries(dir: &Path) -> Vec<CacheEntry> {
    let listing = fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "cannot list the Wasm cache {}: {e} (does the shim honour AMPHI_WASM_CACHE_DIR?)",
            dir.display()
        )
    });
    let mut entries: Vec<CacheEntry> = Vec::new();
    let mut paths: Vec<PathBuf> = listing.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let key = name.split('.').next().unwrap_or_default().to_string();
        match entries.iter_mut().find(|e| e.key == key) {
            Some(entry) => entry.files.push(path),
            None => entries.push(CacheEntry {
                key,
                files: vec![path],
            }),
        }
    }
    entries
}

/// The inode number of `path`.
pub fn inode(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// Flips `count` bytes in the middle of `path`, in place (the inode stays the same).
pub fn corrupt_in_place(path: &Path, count: usize) {
    use std::io::{Seek, SeekFrom, Write};
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        bytes.len() > 2 * count,
        "{} is too small to corrupt",
        path.display()
    );
    let at = bytes.len() / 2;
    let flipped: Vec<u8> = bytes[at..at + count].iter().map(|b| !b).collect();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", path.display()));
    file.seek(SeekFrom::Start(at as u64))
        .and_then(|_| file.write_all(&flipped))
        .and_then(|()| file.sync_all())
        .unwrap_or_else(|e| panic!("corrupt {}: {e}", path.display()));
}

/// The image `localhost/<name>:test` running `module` (`.wat` or `.wasm`) with `spec`.
pub fn wasm_layout(name: &str, module: &Path, spec: &WasmImageSpec<'_>) -> Layout {
    let mut opts = WasmImageOptions::new(image_name(name), Platform::host());
    opts.entrypoint_args = spec.args.iter().map(|s| s.to_string()).collect();
    opts.env = spec.env.iter().map(|s| s.to_string()).collect();
    opts.files = spec
        .files
        .iter()
        .map(|(host, dest)| (host.to_path_buf(), dest.to_string()))
        .collect();
    amphi_image::wasm_image(module, &opts)
        .unwrap_or_else(|e| panic!("amphi-image wasm {}: {e}", module.display()))
}

impl Containerd {
    /// Builds an image named `localhost/<name>:test` running `module` (`.wat` or `.wasm`)
    /// with `spec`, imports it, and returns the image reference.
    pub fn import_wasm(&self, name: &str, module: &Path, spec: &WasmImageSpec<'_>) -> String {
        self.import_layout(&wasm_layout(name, module, spec))
    }

    /// Builds a Linux image `localhost/<name>:test` from the directory `rootfs` with
    /// `entrypoint`, imports it, and returns the image reference.
    pub fn import_dir_image(&self, name: &str, rootfs: &Path, entrypoint: &[&str]) -> String {
        let opts = amphi_image::DirImageOptions {
            name: image_name(name),
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: Vec::new(),
            env: Vec::new(),
            working_dir: "/".into(),
        };
        let layout = amphi_image::dir_image(rootfs, &opts)
            .unwrap_or_else(|e| panic!("amphi-image dir {}: {e}", rootfs.display()));
        self.import_layout(&layout)
    }

    /// Writes `layout` as a tar in the work dir, imports it with
    /// `ctr image import --base-name <repository>`, checks that the name is listed, and
    /// returns it.
    pub fn import_layout(&self, layout: &Layout) -> String {
        let out = self.try_import_layout(layout, &[]);
        let full = layout.name().full();
        out.expect_success(&format!("ctr image import of {full}"));
        let list = self
            .ctr(&["images", "ls", "-q"])
            .expect_success("ctr image ls");
        assert!(
            list.stdout.lines().any(|l| l.trim() == full),
            "{}: after import, {full} is not listed:\n{list}",
            self.version()
        );
        full
    }

    /// `ctr image import [extra...] --base-name <repository> <tar>` of `layout`, whatever
    /// its outcome.
    pub fn try_import_layout(&self, layout: &Layout, extra: &[&str]) -> Output {
        self.try_import_layout_in(crate::daemon::NAMESPACE, layout, extra)
    }

    /// [`Containerd::try_import_layout`] into the containerd namespace `namespace`.
    pub fn try_import_layout_in(&self, namespace: &str, layout: &Layout, extra: &[&str]) -> Output {
        let name = layout.name();
        let tar = self
            .work_dir()
            .join(format!("{}.tar", name.full().replace(['/', ':'], "-")));
        layout
            .write_tar(&tar)
            .unwrap_or_else(|e| panic!("write {}: {e}", tar.display()));
        let tar = tar.display().to_string();
        let mut args = vec!["images", "import"];
        args.extend_from_slice(extra);
        args.extend(["--base-name", name.repository.as_str(), tar.as_str()]);
        self.ctr_in(namespace, &args)
    }

    pub fn image_run_argv(
        &self,
        mode: &str,
        id: &str,
        opts: &[&str],
        image: &str,
        cmd: &[&str],
    ) -> Vec<String> {
        let mut argv = vec!["run".to_string(), mode.to_string(), "--runtime".to_string()];
        argv.push(runtime());
        argv.extend(opts.iter().map(|s| s.to_string()));
        argv.push(image.to_string());
        argv.push(id.to_string());
        argv.extend(cmd.iter().map(|s| s.to_string()));
        argv
    }

    /// `ctr run --rm --runtime <runtime> <opts...> <image> <id> [cmd...]`: runs to
    /// completion (ctr's exit code mirrors the task's). An empty `cmd` keeps the image's
    /// entrypoint and arguments; a non-empty one replaces the whole argv (ctr's rule).
    pub fn run_image_rm(&self, id: &str, opts: &[&str], image: &str, cmd: &[&str]) -> Output {
        let argv = self.image_run_argv("--rm", id, opts, image, cmd);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.ctr(&refs)
    }

    /// Starts [`Containerd::run_image_rm`] in the background.
    pub fn spawn_run_image_rm(
        &self,
        id: &str,
        opts: &[&str],
        image: &str,
        cmd: &[&str],
    ) -> Background {
        let argv = self.image_run_argv("--rm", id, opts, image, cmd);
        let mut command = self.ctr_command();
        command.args(&argv);
        Background::spawn(&mut command)
    }

    /// The shim's dispatch decision for container `id`, from the daemon log: the line
    /// holding `container <id>: wasm (<reason>)` or `container <id>: linux (<reason>)`
    /// (the shim logs it at info into the bundle's log FIFO, which containerd copies into
    /// its own log). `None` when there is no such line.
    pub fn dispatch_line(&self, id: &str) -> Option<String> {
        let log = fs::read(self.log_path()).ok()?;
        let wasm = format!("container {id}: wasm (");
        let linux = format!("container {id}: linux (");
        String::from_utf8_lossy(&log)
            .lines()
            .find(|l| l.contains(&wasm) || l.contains(&linux))
            .map(str::to_string)
    }

    /// `ctr run -d` of `image`: waits until the task runs and returns its row.
    pub fn run_image_detached(
        &self,
        id: &str,
        opts: &[&str],
        image: &str,
        cmd: &[&str],
    ) -> TaskRow {
        let argv = self.image_run_argv("-d", id, opts, image, cmd);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.ctr(&refs).expect_success("ctr run -d");
        self.wait_task_status(id, "RUNNING")
    }
}

/// `localhost/<name>:test`.
pub fn image_name(name: &str) -> ImageName {
    ImageName::parse(&format!("localhost/{name}:{TAG}"))
        .unwrap_or_else(|e| panic!("image name for {name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fixture is valid WebAssembly text: it compiles, validates, is a core module,
    /// exports `_start` and a memory, and imports only WASI preview 1.
    #[test]
    fn fixtures_are_valid_wasi_p1_commands() {
        for name in FIXTURES {
            let path = fixture(name);
            let wasm =
                amphi_image::module::load(&path).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
            assert_eq!(wasm.kind, amphi_image::WasmKind::Module, "{name}");
            let mut exports = Vec::new();
            for payload in wasmparser::Parser::new(0).parse_all(&wasm.bytes) {
                match payload.unwrap_or_else(|e| panic!("{name}: {e}")) {
                    wasmparser::Payload::ImportSection(reader) => {
                        for import in reader.into_imports() {
                            let import = import.unwrap_or_else(|e| panic!("{name}: {e}"));
                            assert_eq!(
                                import.module, "wasi_snapshot_preview1",
                                "{name} imports {}::{}",
                                import.module, import.name
                            );
                        }
                    }
                    wasmparser::Payload::ExportSection(reader) => {
                        for export in reader {
                            exports.push(export.unwrap_or_else(|e| panic!("{name}: {e}")).name);
                        }
                    }
                    _ => {}
                }
            }
            assert!(exports.contains(&"_start"), "{name}: no _start export");
            assert!(exports.contains(&"memory"), "{name}: no memory export");
        }
    }

    #[test]
    fn every_fixture_file_is_listed() {
        let mut on_disk: Vec<String> = fs::read_dir(fixtures_dir())
            .expect("list the fixtures")
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".wat").map(str::to_string)
            })
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = FIXTURES.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        assert!(fixtures_dir().join(COMPONENT_SOURCE).is_file());
    }

    #[test]
    fn cache_entries_group_by_key_and_skip_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("abc.cwasm"), vec![0u8; 100]).expect("write");
        fs::write(dir.path().join("abc.sum"), "x 100\n").expect("write");
        fs::write(dir.path().join(".tmp-1"), "partial").expect("write");
        let entries = cache_entries(dir.path());
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].key, "abc");
        assert_eq!(entries[0].files.len(), 2);
        assert_eq!(entries[0].artifact(), dir.path().join("abc.cwasm"));
    }

    #[test]
    fn corruption_keeps_the_inode_and_changes_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.cwasm");
        fs::write(&f, vec![7u8; 64]).expect("write");
        let before = inode(&f);
        corrupt_in_place(&f, 4);
        assert_eq!(inode(&f), before);
        let bytes = fs::read(&f).expect("read");
        assert_eq!(&bytes[32..36], &[!7u8; 4]);
        assert_eq!(bytes.len(), 64);
    }
}
