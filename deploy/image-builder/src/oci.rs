//! OCI image layouts: blobs, the image config, the manifest, `index.json`, and the layout
//! written as one tar archive for `ctr image import --base-name <repository>`.
//!
//! The index names the manifest twice, as `ctr image export` does:
//! `org.opencontainers.image.ref.name` holds the tag (containerd prefixes it with
//! `--base-name`) and `io.containerd.image.name` the full name.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::module::{WasmBinary, component_world};

/// `index.json` media type.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Image manifest media type.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Image config media type.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed layer media type.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// CNCF TAG-Runtime Wasm artifact: config media type (and the manifest's `artifactType`).
pub const MEDIA_WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// CNCF TAG-Runtime Wasm artifact: layer media type (the raw module or component).
pub const MEDIA_WASM_LAYER: &str = "application/wasm";
/// Annotation holding the tag in `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation holding the full image name in `index.json` (containerd's own).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Fixed creation time: the same input gives the same digests.
pub const CREATED: &str = "1970-01-01T00:00:00Z";
/// The `author` written into configs.
pub const AUTHOR: &str = "amphi-image";

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// An OCI descriptor of `bytes`.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest(bytes), "size": bytes.len() })
}

/// `localhost/hello:test` split into repository and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// `localhost/hello`: what `ctr image import --base-name` must be given.
    pub repository: String,
    /// `test`.
    pub tag: String,
}

impl ImageName {
    /// Parses `repository:tag`; the tag is required (digest references are refused).
    pub fn parse(name: &str) -> Result<ImageName, Error> {
        let bad = || Error::ImageName(name.to_string());
        if name.contains('@') || name.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let colon = name[last_slash..].rfind(':').map(|i| i + last_slash);
        let (repository, tag) = match colon {
            Some(i) => (&name[..i], &name[i + 1..]),
            None => return Err(bad()),
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        let repo_ok = !repository.is_empty()
            && !repository.starts_with('/')
            && !repository.ends_with('/')
            && repository.chars().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '/' | '.' | '_' | '-' | ':')
            });
        if !tag_ok || !repo_ok {
            return Err(bad());
        }
        Ok(ImageName {
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }

    /// `repository:tag`.
    pub fn full(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// An image platform (`os`/`architecture`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, `wasip1`, ...
    pub os: String,
    /// `amd64`, `arm64`, `wasm`, ...
    pub architecture: String,
}

impl Platform {
    /// Linux on the host's architecture, in OCI (Go) spelling.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
        }
    }

    /// `wasip1`/`wasm`: what runwasi-style tooling calls the `wasi/wasm` platform.
    pub fn wasi() -> Platform {
        Platform {
            os: "wasip1".into(),
            architecture: "wasm".into(),
        }
    }

    /// Parses `host`, `linux/<arch>`, `wasi/wasm` or `wasip1/wasm`.
    pub fn parse(text: &str) -> Result<Platform, Error> {
        match text {
            "host" => Ok(Platform::host()),
            "wasi/wasm" | "wasip1/wasm" => Ok(Platform::wasi()),
            other => match other.split_once('/') {
                Some(("linux", arch)) if !arch.is_empty() && !arch.contains('/') => Ok(Platform {
                    os: "linux".into(),
                    architecture: arch.into(),
                }),
                _ => Err(Error::Platform(text.to_string())),
            },
        }
    }

    fn to_json(&self) -> Value {
        json!({ "os": self.os, "architecture": self.architecture })
    }
}

/// The runtime part of an image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`KEY=VALUE`).
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `os`/`architecture`.
    pub platform: Platform,
    /// What made the layer, for the config's `history`.
    pub created_by: String,
}

/// An OCI image layout held in memory.
#[derive(Debug, Clone)]
pub struct Layout {
    name: ImageName,
    blobs: BTreeMap<String, Vec<u8>>,
    index: Vec<u8>,
    manifest_digest: String,
}

impl Layout {
    /// A single-layer image: `layer_tar` (uncompressed) plus a config from `config`.
    pub fn image(name: &ImageName, layer_tar: Vec<u8>, config: &ImageConfig) -> Layout {
        let diff_id = digest(&layer_tar);
        let config_json = json!({
            "created": CREATED,
            "author": AUTHOR,
            "architecture": config.platform.architecture,
            "os": config.platform.os,
            "config": {
                "Entrypoint": config.entrypoint,
                "Cmd": config.cmd,
                "Env": config.env,
                "WorkingDir": config.working_dir,
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created": CREATED, "created_by": config.created_by }],
        });
        let config_bytes = to_bytes(&config_json);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": descriptor(MEDIA_CONFIG, &config_bytes),
            "layers": [descriptor(MEDIA_LAYER_TAR, &layer_tar)],
        });
        let platform = config.platform.to_json();
        Layout::assemble(
            name,
            vec![config_bytes, layer_tar],
            &manifest,
            Some(platform),
            None,
        )
    }

    /// The CNCF TAG-Runtime Wasm OCI artifact: config `application/vnd.wasm.config.v0+json`
    /// and one `application/wasm` layer holding the binary as it is.
    pub fn wasm_artifact(name: &ImageName, wasm: &WasmBinary) -> Layout {
        let layer_digest = digest(&wasm.bytes);
        let mut config_json = json!({
            "created": CREATED,
            "author": AUTHOR,
            "architecture": "wasm",
            "os": wasm.kind.wasi_os(),
            "layerDigests": [layer_digest],
        });
        if let Some((imports, exports)) = component_world(&wasm.bytes) {
            config_json["component"] = json!({
                "imports": imports,
                "exports": exports,
                "target": Value::Null,
            });
        }
        let config_bytes = to_bytes(&config_json);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "artifactType": MEDIA_WASM_CONFIG,
            "config": descriptor(MEDIA_WASM_CONFIG, &config_bytes),
            "layers": [descriptor(MEDIA_WASM_LAYER, &wasm.bytes)],
        });
        let platform = json!({ "os": wasm.kind.wasi_os(), "architecture": "wasm" });
        Layout::assemble(
            name,
            vec![config_bytes, wasm.bytes.clone()],
            &manifest,
            Some(platform),
            Some(MEDIA_WASM_CONFIG),
        )
    }

    fn assemble(
        name: &ImageName,
        blobs: Vec<Vec<u8>>,
        manifest: &Value,
        platform: Option<Value>,
        artifact_type: Option<&str>,
    ) -> Layout {
        let manifest_bytes = to_bytes(manifest);
        let mut manifest_desc = descriptor(MEDIA_MANIFEST, &manifest_bytes);
        if let Some(platform) = platform {
            manifest_desc["platform"] = platform;
        }
        if let Some(artifact_type) = artifact_type {
            manifest_desc["artifactType"] = json!(artifact_type);
        }
        manifest_desc["annotations"] = json!({
            ANNOTATION_IMAGE_NAME: name.full(),
            ANNOTATION_REF_NAME: name.tag,
        });
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [manifest_desc],
        });
        let manifest_digest = digest(&manifest_bytes);
        let mut map = BTreeMap::new();
        for blob in blobs.into_iter().chain(std::iter::once(manifest_bytes)) {
            map.insert(digest(&blob), blob);
        }
        Layout {
            name: name.clone(),
            blobs: map,
            index: to_bytes(&index),
            manifest_digest,
        }
    }

    /// The image name.
    pub fn name(&self) -> &ImageName {
        &self.name
    }

    /// The blob with `digest` (`sha256:...`).
    pub fn blob(&self, digest: &str) -> Option<&[u8]> {
        self.blobs.get(digest).map(Vec::as_slice)
    }

    /// Every blob, by digest.
    pub fn blobs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.blobs.iter().map(|(d, b)| (d.as_str(), b.as_slice()))
    }

    /// `index.json`, parsed.
    pub fn index(&self) -> Value {
        parse(&self.index)
    }

    /// The digest of the image manifest.
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
    }

    /// The image manifest, parsed.
    pub fn manifest(&self) -> Value {
        self.blob(&self.manifest_digest)
            .map(parse)
            .unwrap_or(Value::Null)
    }

    /// The config blob, parsed.
    pub fn config(&self) -> Value {
        let manifest = self.manifest();
        manifest["config"]["digest"]
            .as_str()
            .and_then(|d| self.blob(d))
            .map(parse)
            .unwrap_or(Value::Null)
    }

    /// The layout as a tar archive: `oci-layout`, `index.json`, `blobs/sha256/<hex>`, sorted,
    /// with fixed metadata.
    pub fn to_tar(&self) -> Result<Vec<u8>, Error> {
        let mut layer = crate::Layer::new();
        let oci_layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();
        layer.add_file("oci-layout", oci_layout, 0o644)?;
        layer.add_file("index.json", self.index.clone(), 0o644)?;
        for (digest, bytes) in &self.blobs {
            let hex = digest.trim_start_matches("sha256:");
            layer.add_file(&format!("blobs/sha256/{hex}"), bytes.clone(), 0o644)?;
        }
        layer.to_tar()
    }

    /// Writes [`Layout::to_tar`] to `path` (through a temporary file and a rename).
    pub fn write_tar(&self, path: &Path) -> Result<(), Error> {
        let bytes = self.to_tar()?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::NonUtf8Path(path.to_path_buf()))?;
        let tmp = path.with_file_name(format!(".{file_name}.tmp"));
        let write_err = |source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, &bytes).map_err(write_err)?;
        std::fs::rename(&tmp, path).map_err(write_err)
    }
}

fn to_bytes(value: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail: its map keys are strings.
    serde_json::to_vec(value).unwrap_or_default()
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{WasmKind, to_binary};

    fn hello() -> WasmBinary {
        WasmBinary {
            bytes: to_binary(b"(module (func (export \"_start\")))").expect("wat"),
            kind: WasmKind::Module,
            stem: "hello".into(),
        }
    }

    fn check_descriptor(layout: &Layout, desc: &Value) {
        let digest_text = desc["digest"].as_str().expect("digest");
        let blob = layout
            .blob(digest_text)
            .unwrap_or_else(|| panic!("no blob {digest_text}"));
        assert_eq!(desc["size"].as_u64(), Some(blob.len() as u64));
        assert_eq!(digest(blob), digest_text);
    }

    #[test]
    fn names_parse() {
        let n = ImageName::parse("localhost/hello:test").expect("name");
        assert_eq!(n.repository, "localhost/hello");
        assert_eq!(n.tag, "test");
        let n = ImageName::parse("localhost:5000/a/b:v1.0").expect("port");
        assert_eq!(n.repository, "localhost:5000/a/b");
        assert!(ImageName::parse("localhost:5000/a").is_err());
        assert!(ImageName::parse("hello").is_err());
        assert!(ImageName::parse("Hello:x").is_err());
        assert!(ImageName::parse("a@sha256:00").is_err());
    }

    #[test]
    fn platforms_parse() {
        assert_eq!(
            Platform::parse("wasi/wasm").expect("wasi"),
            Platform::wasi()
        );
        assert_eq!(Platform::parse("host").expect("host").os, "linux");
        assert_eq!(
            Platform::parse("linux/arm64").expect("arm").architecture,
            "arm64"
        );
        assert!(Platform::parse("windows/amd64").is_err());
    }

    #[test]
    fn image_descriptors_match_blobs() {
        let name = ImageName::parse("localhost/hello:test").expect("name");
        let mut layer = crate::Layer::new();
        layer
            .add_file("hello.wasm", hello().bytes, 0o755)
            .expect("add");
        let tar = layer.to_tar().expect("tar");
        let config = ImageConfig {
            entrypoint: vec!["/hello.wasm".into()],
            cmd: vec![],
            env: vec!["A=b".into()],
            working_dir: "/".into(),
            platform: Platform::host(),
            created_by: "test".into(),
        };
        let layout = Layout::image(&name, tar.clone(), &config);
        let index = layout.index();
        let desc = &index["manifests"][0];
        check_descriptor(&layout, desc);
        assert_eq!(desc["mediaType"], MEDIA_MANIFEST);
        assert_eq!(desc["annotations"][ANNOTATION_REF_NAME], "test");
        assert_eq!(
            desc["annotations"][ANNOTATION_IMAGE_NAME],
            "localhost/hello:test"
        );
        let manifest = layout.manifest();
        check_descriptor(&layout, &manifest["config"]);
        check_descriptor(&layout, &manifest["layers"][0]);
        assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_LAYER_TAR);
        let cfg = layout.config();
        assert_eq!(cfg["os"], "linux");
        assert_eq!(cfg["architecture"], Platform::host().architecture);
        assert_eq!(cfg["config"]["Entrypoint"][0], "/hello.wasm");
        assert_eq!(cfg["config"]["Env"][0], "A=b");
        assert_eq!(cfg["rootfs"]["diff_ids"][0], digest(&tar));
    }

    #[test]
    fn artifact_has_the_wasm_media_types() {
        let name = ImageName::parse("localhost/art:test").expect("name");
        let wasm = hello();
        let layout = Layout::wasm_artifact(&name, &wasm);
        let manifest = layout.manifest();
        assert_eq!(manifest["artifactType"], MEDIA_WASM_CONFIG);
        assert_eq!(manifest["config"]["mediaType"], MEDIA_WASM_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_WASM_LAYER);
        assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1));
        check_descriptor(&layout, &manifest["config"]);
        check_descriptor(&layout, &manifest["layers"][0]);
        let layer_digest = manifest["layers"][0]["digest"].as_str().expect("digest");
        assert_eq!(layout.blob(layer_digest), Some(wasm.bytes.as_slice()));
        let cfg = layout.config();
        assert_eq!(cfg["architecture"], "wasm");
        assert_eq!(cfg["os"], "wasip1");
        assert_eq!(cfg["created"], CREATED);
        assert_eq!(cfg["author"], AUTHOR);
        assert_eq!(cfg["layerDigests"][0], layer_digest);
        assert!(cfg.get("component").is_none());
        check_descriptor(&layout, &layout.index()["manifests"][0]);
    }

    #[test]
    fn layout_tar_holds_every_blob_under_its_digest() {
        let name = ImageName::parse("localhost/art:test").expect("name");
        let layout = Layout::wasm_artifact(&name, &hello());
        let tar = layout.to_tar().expect("tar");
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut files = BTreeMap::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
            files.insert(path, data);
        }
        assert!(files.contains_key("oci-layout"));
        assert_eq!(
            parse(files.get("index.json").expect("index.json")),
            layout.index()
        );
        for (d, bytes) in layout.blobs() {
            let path = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
            assert_eq!(files.get(&path).map(Vec::as_slice), Some(bytes), "{path}");
            assert_eq!(digest(bytes), d);
        }
        assert_eq!(files.len(), 2 + layout.blobs().count());
    }

    #[test]
    fn write_tar_creates_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.tar");
        let name = ImageName::parse("localhost/art:test").expect("name");
        let layout = Layout::wasm_artifact(&name, &hello());
        layout.write_tar(&out).expect("write");
        assert_eq!(
            std::fs::read(&out).expect("read"),
            layout.to_tar().expect("tar")
        );
        assert!(!dir.path().join(".out.tar.tmp").exists());
    }
}
