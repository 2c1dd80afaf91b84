//! # amphi-image: OCI image tarballs for `ctr image import`, built without a registry
//!
//! Three kinds of image, each a single OCI image layout written as one tar archive
//! (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), deterministic: the same input gives
//! the same digests (sorted tar entries, mtime 0, uid/gid 0, a fixed `created` time).
//!
//! | builder | layers | config | what runs it |
//! |---|---|---|---|
//! | [`wasm_image`] | one tar layer: `/<stem>.wasm` (+ `--file`s) | `os: linux`, host arch, `Entrypoint: ["/<stem>.wasm", args...]` | amphi recognises the module by its `\0asm` bytes |
//! | [`wasm_image`] with [`Platform::wasi`] | same | `os: wasip1`, `architecture: wasm` | containerd unpacks it only when asked for that platform |
//! | [`wasm_artifact`] | one `application/wasm` layer: the raw binary | `application/vnd.wasm.config.v0+json` (CNCF TAG-Runtime) | runtimes that read the artifact through containerd's API |
//! | [`dir_image`] | one tar layer: a directory tree | `os: linux`, host arch | any Linux runtime |
//!
//! ```text
//! .wat ──wat──▶ .wasm ──wasmparser validate──▶ Layer (tar) ──▶ config + manifest ──▶ Layout ──▶ out.tar
//! ```
//!
//! ```no_run
//! use amphi_image::{ImageName, Platform, WasmImageOptions, wasm_image};
//! let name = ImageName::parse("localhost/hello:test").expect("name");
//! let opts = WasmImageOptions::new(name, Platform::host());
//! let layout = wasm_image(std::path::Path::new("hello.wat"), &opts).expect("build");
//! layout.write_tar(std::path::Path::new("hello.tar")).expect("write");
//! // then: ctr image import --base-name localhost/hello hello.tar
//! ```

pub mod layer;
pub mod module;
pub mod oci;

use std::path::{Path, PathBuf};

pub use layer::{Entry, Layer};
pub use module::{WasmBinary, WasmKind};
pub use oci::{ImageConfig, ImageName, Layout, Platform};

/// Everything that can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an input failed.
    #[error("read {path}: {source}")]
    Read {
        /// The input.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("write {path}: {source}")]
    Write {
        /// The output.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The input is neither a WebAssembly binary nor valid WebAssembly text.
    #[error("{path}: not a WebAssembly binary, and not valid WebAssembly text: {message}")]
    Wat {
        /// The input.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The binary does not validate.
    #[error("{path}: invalid WebAssembly: {message}")]
    InvalidWasm {
        /// The input.
        path: PathBuf,
        /// The validator's message.
        message: String,
    },
    /// An image name without a tag, or with characters a reference cannot hold.
    #[error(
        "invalid image name {0:?}: expected <repository>:<tag>, e.g. localhost/hello:test (lower case repository)"
    )]
    ImageName(String),
    /// An unknown `--platform`.
    #[error("unknown platform {0:?}: expected host, linux/<arch> or wasi/wasm")]
    Platform(String),
    /// A path inside the image that is empty or climbs out with `..`.
    #[error("invalid path {0:?} inside the image: it must name a file below / without `..`")]
    LayerPath(String),
    /// A path inside the image whose parent is already a file or symlink.
    #[error("{0:?} is not a directory in the image, so nothing can be put below it")]
    NotADirectoryInLayer(String),
    /// The `dir` input is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    /// A socket, FIFO or device node in a `dir` input.
    #[error("{0}: unsupported file type (only files, directories and symlinks go into a layer)")]
    UnsupportedFileType(PathBuf),
    /// A path that is not UTF-8, or has no file name.
    #[error("{0}: the path must be UTF-8 and name a file")]
    NonUtf8Path(PathBuf),
    /// `--env` without `=`.
    #[error("invalid environment entry {0:?}: expected KEY=VALUE")]
    Env(String),
    /// `--file` without `:`.
    #[error("invalid file mapping {0:?}: expected HOST_PATH:CONTAINER_PATH")]
    FileSpec(String),
    /// Writing a tar archive failed.
    #[error("tar: {0}")]
    Tar(std::io::Error),
}

/// How [`wasm_image`] builds the image.
#[derive(Debug, Clone)]
pub struct WasmImageOptions {
    /// The image name (`localhost/hello:test`).
    pub name: ImageName,
    /// Arguments after the module in `Entrypoint`.
    pub entrypoint_args: Vec<String>,
    /// `Env` entries (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Extra files: host path and absolute path in the image.
    pub files: Vec<(PathBuf, String)>,
    /// `os`/`architecture` of the config and the index entry.
    pub platform: Platform,
}

impl WasmImageOptions {
    /// No arguments, no environment, no extra files.
    pub fn new(name: ImageName, platform: Platform) -> WasmImageOptions {
        WasmImageOptions {
            name,
            entrypoint_args: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            platform,
        }
    }
}

/// A single-layer image running the module at `module` (`.wasm`, or `.wat` compiled here):
/// the layer holds `/<stem>.wasm` and the extra files; `Entrypoint` is
/// `["/<stem>.wasm", args...]`.
pub fn wasm_image(module: &Path, opts: &WasmImageOptions) -> Result<Layout, Error> {
    let wasm = module::load(module)?;
    let in_image = format!("/{}.wasm", wasm.stem);
    let mut layer = Layer::new();
    layer.add_file(&in_image, wasm.bytes, 0o755)?;
    add_files(&mut layer, &opts.files)?;
    check_env(&opts.env)?;
    let mut entrypoint = vec![in_image];
    entrypoint.extend(opts.entrypoint_args.iter().cloned());
    let config = ImageConfig {
        entrypoint,
        cmd: Vec::new(),
        env: opts.env.clone(),
        working_dir: "/".into(),
        platform: opts.platform.clone(),
        created_by: format!("amphi-image wasm {}", display_name(module)),
    };
    Ok(Layout::image(&opts.name, layer.to_tar()?, &config))
}

/// The CNCF TAG-Runtime Wasm OCI artifact of `module` (`wasip1` for a core module,
/// `wasip2` for a component).
pub fn wasm_artifact(module: &Path, name: &ImageName) -> Result<Layout, Error> {
    let wasm = module::load(module)?;
    Ok(Layout::wasm_artifact(name, &wasm))
}

/// How [`dir_image`] builds the image.
#[derive(Debug, Clone)]
pub struct DirImageOptions {
    /// The image name.
    pub name: ImageName,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` entries (`KEY=VALUE`).
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
}

/// A single-layer Linux image of everything under `rootfs`.
pub fn dir_image(rootfs: &Path, opts: &DirImageOptions) -> Result<Layout, Error> {
    let layer = Layer::from_dir(rootfs)?;
    check_env(&opts.env)?;
    let config = ImageConfig {
        entrypoint: opts.entrypoint.clone(),
        cmd: opts.cmd.clone(),
        env: opts.env.clone(),
        working_dir: opts.working_dir.clone(),
        platform: Platform::host(),
        created_by: format!("amphi-image dir {}", display_name(rootfs)),
    };
    Ok(Layout::image(&opts.name, layer.to_tar()?, &config))
}

/// Parses `HOST:CONTAINER` (split at the last `:`; the container path must be absolute).
pub fn parse_file_spec(spec: &str) -> Result<(PathBuf, String), Error> {
    match spec.rsplit_once(':') {
        Some((host, container))
            if !host.is_empty() && container.starts_with('/') && container.len() > 1 =>
        {
            Ok((PathBuf::from(host), container.to_string()))
        }
        _ => Err(Error::FileSpec(spec.to_string())),
    }
}

fn add_files(layer: &mut Layer, files: &[(PathBuf, String)]) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    for (host, container) in files {
        let read_err = |source| Error::Read {
            path: host.clone(),
            source,
        };
        let meta = std::fs::metadata(host).map_err(read_err)?;
        if meta.is_dir() {
            let sub = Layer::from_dir(host)?;
            layer.add_dir(container, meta.permissions().mode() & 0o7777)?;
            for (path, entry) in sub.entries() {
                let dest = format!("{}/{path}", container.trim_end_matches('/'));
                match entry {
                    Entry::Dir { mode } => layer.add_dir(&dest, *mode)?,
                    Entry::File { data, mode } => layer.add_file(&dest, data.clone(), *mode)?,
                    Entry::Symlink { target } => layer.add_symlink(&dest, target)?,
                }
            }
        } else {
            let data = std::fs::read(host).map_err(read_err)?;
            layer.add_file(container, data, meta.permissions().mode() & 0o7777)?;
        }
    }
    Ok(())
}

fn check_env(env: &[String]) -> Result<(), Error> {
    match env
        .iter()
        .find(|e| e.split_once('=').is_none_or(|(k, _)| k.is_empty()))
    {
        Some(bad) => Err(Error::Env(bad.clone())),
        None => Ok(()),
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_files(layout: &Layout) -> Vec<(String, Vec<u8>)> {
        let manifest = layout.manifest();
        let d = manifest["layers"][0]["digest"]
            .as_str()
            .expect("layer digest");
        let blob = layout.blob(d).expect("layer blob");
        let mut out = Vec::new();
        let mut archive = tar::Archive::new(blob);
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
            out.push((path, data));
        }
        out
    }

    #[test]
    fn wasm_image_holds_the_compiled_module_and_extra_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wat = dir.path().join("hello.wat");
        std::fs::write(&wat, "(module (func (export \"_start\")))").expect("write");
        let data = dir.path().join("data.txt");
        std::fs::write(&data, "payload\n").expect("write");
        let mut opts = WasmImageOptions::new(
            ImageName::parse("localhost/hello:test").expect("name"),
            Platform::host(),
        );
        opts.entrypoint_args = vec!["one".into()];
        opts.env = vec!["K=V".into()];
        opts.files = vec![parse_file_spec(&format!("{}:/data.txt", data.display())).expect("spec")];
        let layout = wasm_image(&wat, &opts).expect("image");
        let files = layer_files(&layout);
        let module = files
            .iter()
            .find(|(p, _)| p == "hello.wasm")
            .expect("hello.wasm in the layer");
        assert!(
            module.1.starts_with(b"\0asm\x01\0\0\0"),
            "WAT was not compiled"
        );
        assert!(
            files
                .iter()
                .any(|(p, d)| p == "data.txt" && d == b"payload\n")
        );
        let cfg = layout.config();
        assert_eq!(
            cfg["config"]["Entrypoint"],
            serde_json::json!(["/hello.wasm", "one"])
        );
        assert_eq!(cfg["config"]["Env"], serde_json::json!(["K=V"]));
    }

    #[test]
    fn wasi_platform_is_written_to_config_and_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wat = dir.path().join("m.wat");
        std::fs::write(&wat, "(module)").expect("write");
        let opts = WasmImageOptions::new(
            ImageName::parse("localhost/m:test").expect("name"),
            Platform::wasi(),
        );
        let layout = wasm_image(&wat, &opts).expect("image");
        assert_eq!(layout.config()["os"], "wasip1");
        assert_eq!(layout.config()["architecture"], "wasm");
        assert_eq!(
            layout.index()["manifests"][0]["platform"]["architecture"],
            "wasm"
        );
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(parse_file_spec("nocolon").is_err());
        assert!(parse_file_spec("/host:relative").is_err());
        assert_eq!(
            parse_file_spec("/a:b:/c").expect("last colon"),
            (PathBuf::from("/a:b"), "/c".to_string())
        );
        assert!(check_env(&["NOEQUALS".into()]).is_err());
        assert!(check_env(&["=v".into()]).is_err());
        assert!(check_env(&["A=".into()]).is_ok());
    }

    #[test]
    fn dir_image_keeps_the_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("bin")).expect("mkdir");
        std::fs::write(dir.path().join("bin/app"), "x").expect("write");
        let opts = DirImageOptions {
            name: ImageName::parse("localhost/d:test").expect("name"),
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["arg".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: "/".into(),
        };
        let layout = dir_image(dir.path(), &opts).expect("image");
        let names: Vec<String> = layer_files(&layout).into_iter().map(|f| f.0).collect();
        assert_eq!(names, ["bin/", "bin/app"]);
        assert_eq!(layout.config()["config"]["Cmd"][0], "arg");
        assert_eq!(layout.config()["os"], "linux");
    }
}
