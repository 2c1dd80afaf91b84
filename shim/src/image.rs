//! Dispatch rule 3: what the container's image says about WebAssembly, read through
//! containerd's gRPC API (containerd never copies manifests, configs or layer media types
//! into `config.json`).
//!
//! ```text
//! Containers.Get(id) ─▶ image name ─▶ Images.Get(name) ─▶ target descriptor
//!   ─▶ Content.Read(manifest)   (an index: the wasm manifest, else the host's linux one)
//!   ─▶ Content.Read(config)     ─▶ facts_from(manifest, config)
//! ```
//!
//! The image is Wasm when the manifest's config media type is the CNCF Wasm OCI
//! artifact's ([`WASM_CONFIG`]), when the config's platform is `wasi`/`wasip1`/`wasip2`
//! or architecture `wasm`, or when any layer has a wasm media type ([`WASM_LAYERS`]).
//! Otherwise it says nothing and the entrypoint's bytes decide.
//!
//! [`facts_from`] and [`pick_manifest`] are pure; [`inspect`] does the I/O, within
//! [`TIMEOUT`] overall. Anything that goes wrong there (containerd unreachable, a
//! container created from a bare rootfs with no image, unknown JSON) means "no image
//! facts": logged at debug, never an error, so dispatch goes on with the other rules.
//!
//! The image's wasm layers ([`ImageFacts::layers`]) are where a Wasm container's module
//! comes from when it has some (the CNCF artifact has nothing else): [`fetch_layer`]
//! streams one from the content store into a file, checking its digest and size, for the
//! container init to open (see `crate::task::sandbox`).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use containerd_client::services::v1::{
    GetContainerRequest, GetImageRequest, ReadContentRequest, containers_client::ContainersClient,
    content_client::ContentClient, images_client::ImagesClient,
};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{self, Request};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// How long [`inspect`] may take in all, so a slow containerd never stalls Create long.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The largest manifest, index or config blob [`inspect`] reads.
const MAX_BLOB: i64 = 4 << 20;
/// The largest wasm layer [`fetch_layer`] reads.
pub const MAX_LAYER: i64 = 1 << 30;
/// How long [`fetch_layer`] may take.
pub const LAYER_TIMEOUT: Duration = Duration::from_secs(60);
/// The layer annotation naming the file a layer holds.
pub const TITLE: &str = "org.opencontainers.image.title";
/// Indexes nested in indexes followed before giving up.
const MAX_INDEX_DEPTH: usize = 2;

/// The CNCF Wasm OCI artifact's config media type.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Layer media types that hold WebAssembly: the CNCF artifact's, wasm-to-oci's, and
/// runwasi's component layers.
pub const WASM_LAYERS: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];
/// Operating systems of Wasm platforms.
const WASM_OS: &[&str] = &["wasi", "wasip1", "wasip2"];
const WASM_ARCH: &str = "wasm";

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Where containerd's gRPC API is: the server's `-address` and `-namespace`. An empty
/// address means "do not ask" (no image facts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerdApi {
    pub address: String,
    pub namespace: String,
}

/// What the image says about the container's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    /// The image's name in containerd.
    pub name: String,
    /// Why the image is WebAssembly (e.g. "image localhost/x:1 has platform
    /// wasip1/wasm"); `None` when it does not say.
    pub wasm: Option<String>,
    /// The manifest's layers of a wasm media type, in order.
    pub layers: Vec<Descriptor>,
}

/// An OCI content descriptor, as much of it as dispatch needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

impl Descriptor {
    /// The file name the layer carries (`org.opencontainers.image.title`), if any.
    pub fn title(&self) -> Option<&str> {
        self.annotations.get(TITLE).map(String::as_str)
    }

    fn is_wasm_layer(&self) -> bool {
        WASM_LAYERS.contains(&self.media_type.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

impl Platform {
    fn is_wasm(&self) -> bool {
        WASM_OS.contains(&self.os.as_str()) || self.architecture == WASM_ARCH
    }
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// The host's architecture as OCI platforms spell it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// From an image index, the manifest to inspect: one whose platform is Wasm, else the
/// one for this host's Linux. `None` when the JSON is not an index or neither is there.
pub fn pick_manifest(index_json: &[u8]) -> Option<Descriptor> {
    pick_manifest_for(index_json, host_arch())
}

fn pick_manifest_for(index_json: &[u8], arch: &str) -> Option<Descriptor> {
    let index: Index = serde_json::from_slice(index_json).ok()?;
    let platform_of = |d: &Descriptor| d.platform.clone().unwrap_or_default();
    let wasm = index.manifests.iter().find(|d| platform_of(d).is_wasm());
    let linux = || {
        index.manifests.iter().find(|d| {
            let p = platform_of(d);
            p.os == "linux" && p.architecture == arch
        })
    };
    wasm.or_else(linux).cloned()
}

/// Whether a blob is an index rather than a manifest: by its media type, or, for
/// content without one, by having `manifests`.
fn is_index(media_type: &str, json: &[u8]) -> bool {
    INDEX_TYPES.contains(&media_type)
        || serde_json::from_slice::<serde_json::Value>(json)
            .is_ok_and(|v| v.get("manifests").is_some() && v.get("config").is_none())
}

/// The config descriptor of a manifest (what [`inspect`] reads next).
fn config_of(manifest_json: &[u8]) -> Option<Descriptor> {
    serde_json::from_slice::<Manifest>(manifest_json)
        .ok()
        .map(|m| m.config)
}

/// What an image manifest and its config say, first match wins: the Wasm artifact's
/// config media type, a Wasm platform in the config, a Wasm layer media type. A
/// manifest or config that does not parse says nothing.
pub fn facts_from(image_name: &str, manifest_json: &[u8], config_json: &[u8]) -> ImageFacts {
    let layers = serde_json::from_slice::<Manifest>(manifest_json)
        .map(|m| {
            m.layers
                .into_iter()
                .filter(Descriptor::is_wasm_layer)
                .collect()
        })
        .unwrap_or_default();
    ImageFacts {
        name: image_name.to_string(),
        wasm: wasm_reason(image_name, manifest_json, config_json),
        layers,
    }
}

fn wasm_reason(image: &str, manifest_json: &[u8], config_json: &[u8]) -> Option<String> {
    let manifest: Manifest = serde_json::from_slice(manifest_json).ok()?;
    if manifest.config.media_type == WASM_CONFIG {
        return Some(format!(
            "image {image} is a Wasm OCI artifact (config media type {WASM_CONFIG})"
        ));
    }
    if let Ok(p) = serde_json::from_slice::<Platform>(config_json)
        && p.is_wasm()
    {
        return Some(format!(
            "image {image} has platform {}/{}",
            p.os, p.architecture
        ));
    }
    manifest
        .layers
        .iter()
        .find(|l| l.is_wasm_layer())
        .map(|l| format!("image {image} has a layer of media type {}", l.media_type))
}

#[derive(Debug, thiserror::Error)]
enum InspectError {
    #[error("connect to {0}: {1}")]
    Connect(String, tonic::transport::Error),
    #[error("{0}: {1}")]
    Rpc(&'static str, tonic::Status),
    #[error("invalid namespace {0:?}")]
    Namespace(String),
    #[error("{0}")]
    Content(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Asks containerd (at `grpc_address`, in `namespace`) what the image of `container_id`
/// says. `None` when there are no image facts (see the module docs).
pub async fn inspect(
    grpc_address: &str,
    namespace: &str,
    container_id: &str,
) -> Option<ImageFacts> {
    if grpc_address.is_empty() {
        log::debug!("container {container_id}: no containerd address, no image facts");
        return None;
    }
    let started = std::time::Instant::now();
    let found = tokio::time::timeout(TIMEOUT, query(grpc_address, namespace, container_id))
        .await
        .unwrap_or(Err(InspectError::Timeout(TIMEOUT)));
    log::debug!(
        "container {container_id}: image lookup took {:?}",
        started.elapsed()
    );
    match found {
        Ok(Some(facts)) => {
            if facts.wasm.is_none() {
                log::debug!(
                    "container {container_id}: image {} says nothing about wasm",
                    facts.name
                );
            }
            Some(facts)
        }
        Ok(None) => {
            log::debug!("container {container_id}: created without an image, no image facts");
            None
        }
        Err(e) => {
            log::debug!("container {container_id}: no image facts: {e}");
            None
        }
    }
}

/// Adds the `containerd-namespace` metadata every containerd request needs.
fn request<T>(message: T, namespace: &MetadataValue<tonic::metadata::Ascii>) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("containerd-namespace", namespace.clone());
    req
}

/// A channel to containerd's gRPC API and the namespace metadata for its requests.
async fn connect(
    grpc_address: &str,
    namespace: &str,
) -> std::result::Result<(Channel, MetadataValue<tonic::metadata::Ascii>), InspectError> {
    let ns = MetadataValue::try_from(namespace)
        .map_err(|_| InspectError::Namespace(namespace.to_string()))?;
    let path = grpc_address.strip_prefix("unix://").unwrap_or(grpc_address);
    let channel = containerd_client::connect(path)
        .await
        .map_err(|e| InspectError::Connect(path.to_string(), e))?;
    Ok((channel, ns))
}

async fn query(
    grpc_address: &str,
    namespace: &str,
    container_id: &str,
) -> std::result::Result<Option<ImageFacts>, InspectError> {
    let (channel, ns) = connect(grpc_address, namespace).await?;
    let container = ContainersClient::new(channel.clone())
        .get(request(
            GetContainerRequest {
                id: container_id.to_string(),
            },
            &ns,
        ))
        .await
        .map_err(|e| InspectError::Rpc("get container", e))?
        .into_inner()
        .container
        .ok_or_else(|| InspectError::Content("no container in the reply".into()))?;
    if container.image.is_empty() {
        return Ok(None);
    }
    let name = container.image;
    let target = ImagesClient::new(channel.clone())
        .get(request(GetImageRequest { name: name.clone() }, &ns))
        .await
        .map_err(|e| InspectError::Rpc("get image", e))?
        .into_inner()
        .image
        .and_then(|i| i.target)
        .ok_or_else(|| InspectError::Content(format!("image {name} has no target")))?;

    let mut content = ContentClient::new(channel);
    let mut media_type = target.media_type;
    let mut manifest = read(&mut content, &ns, &target.digest, target.size).await?;
    for _ in 0..MAX_INDEX_DEPTH {
        if !is_index(&media_type, &manifest) {
            break;
        }
        let picked = pick_manifest(&manifest).ok_or_else(|| {
            InspectError::Content(format!(
                "image {name}: the index has neither a wasm nor a linux/{} manifest",
                host_arch()
            ))
        })?;
        manifest = read(&mut content, &ns, &picked.digest, picked.size).await?;
        media_type = picked.media_type;
    }
    let config = config_of(&manifest)
        .ok_or_else(|| InspectError::Content(format!("image {name}: unreadable manifest")))?;
    let config_json = read(&mut content, &ns, &config.digest, config.size).await?;
    Ok(Some(facts_from(&name, &manifest, &config_json)))
}

/// Reads a whole blob from the content store (at most [`MAX_BLOB`] bytes).
async fn read(
    content: &mut ContentClient<Channel>,
    ns: &MetadataValue<tonic::metadata::Ascii>,
    digest: &str,
    size: i64,
) -> std::result::Result<Vec<u8>, InspectError> {
    if size > MAX_BLOB {
        return Err(InspectError::Content(format!(
            "{digest} is {size} bytes, more than the {MAX_BLOB} read for dispatch"
        )));
    }
    let mut stream = content
        .read(request(
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
            ns,
        ))
        .await
        .map_err(|e| InspectError::Rpc("read content", e))?
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|e| InspectError::Rpc("read content", e))?
    {
        data.extend_from_slice(&chunk.data);
        if data.len() as i64 > MAX_BLOB {
            return Err(InspectError::Content(format!(
                "{digest} is larger than the {MAX_BLOB} bytes read for dispatch"
            )));
        }
    }
    Ok(data)
}

/// Streams `layer` (of image `image`) from containerd's content store into `dest`,
/// created `0600` (replacing what is there), checking on the way that it is at most
/// [`MAX_LAYER`] bytes, has the descriptor's size and its sha256 digest; within
/// [`LAYER_TIMEOUT`]. A blob containerd does not have is FAILED_PRECONDITION (an image
/// pulled without its layers); a digest we cannot check or a layer too large is
/// INVALID_ARGUMENT; a mismatch or an I/O failure is INTERNAL.
pub async fn fetch_layer(
    api: &ContainerdApi,
    image: &str,
    layer: &Descriptor,
    dest: &Path,
) -> Result<()> {
    let expected = layer
        .digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "image {image}: layer digest {:?} is not sha256",
                layer.digest
            ))
        })?;
    if layer.size > MAX_LAYER {
        return Err(Error::InvalidArgument(format!(
            "image {image}: layer {} is {} bytes, more than the {MAX_LAYER} amphi runs",
            layer.digest, layer.size
        )));
    }
    let what = format!("layer {} of image {image}", layer.digest);
    let fetched =
        tokio::time::timeout(LAYER_TIMEOUT, stream_layer(api, &what, &layer.digest, dest))
            .await
            .unwrap_or_else(|_| {
                Err(Error::io(
                    "read",
                    &what,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
                ))
            });
    let (size, digest) = match fetched {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(dest);
            return Err(e);
        }
    };
    let mismatch = if size != layer.size {
        Some(format!("{size} bytes, the manifest says {}", layer.size))
    } else if digest != expected {
        Some(format!("its content has digest sha256:{digest}"))
    } else {
        None
    };
    if let Some(why) = mismatch {
        let _ = std::fs::remove_file(dest);
        return Err(Error::io(
            "verify",
            &what,
            std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        ));
    }
    Ok(())
}

/// The I/O of [`fetch_layer`]: returns the bytes written and their sha256 (hex).
async fn stream_layer(
    api: &ContainerdApi,
    what: &str,
    digest: &str,
    dest: &Path,
) -> Result<(i64, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let rpc = |e: InspectError| Error::io("read", what, std::io::Error::other(e));
    let (channel, ns) = connect(&api.address, &api.namespace).await.map_err(rpc)?;
    let mut stream = ContentClient::new(channel)
        .read(request(
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
            &ns,
        ))
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => Error::FailedPrecondition(format!(
                "{what} is not in containerd's content store (was the image pulled or \
                 imported with its layers?)"
            )),
            _ => rpc(InspectError::Rpc("read content", status)),
        })?
        .into_inner();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(dest)
        .map_err(|e| Error::io("create", dest.display(), e))?;
    let mut hasher = Sha256::new();
    let mut size: i64 = 0;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|e| rpc(InspectError::Rpc("read content", e)))?
    {
        size = size.saturating_add(i64::try_from(chunk.data.len()).unwrap_or(i64::MAX));
        if size > MAX_LAYER {
            return Err(Error::InvalidArgument(format!(
                "{what} is larger than the {MAX_LAYER} bytes amphi runs"
            )));
        }
        hasher.update(&chunk.data);
        file.write_all(&chunk.data)
            .map_err(|e| Error::io("write", dest.display(), e))?;
    }
    let digest = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    Ok((size, digest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NAME: &str = "localhost/x:1";

    fn manifest(config_media_type: &str, layer_media_types: &[&str]) -> Vec<u8> {
        let layers: Vec<_> = layer_media_types
            .iter()
            .map(|m| serde_json::json!({"mediaType": m, "digest": "sha256:11", "size": 1}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": config_media_type, "digest": "sha256:cc", "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    const TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const LINUX_CONFIG: &[u8] = br#"{"os":"linux","architecture":"amd64","rootfs":{}}"#;

    #[test]
    fn the_wasm_artifact_config_media_type() {
        let f = facts_from(
            NAME,
            &manifest(WASM_CONFIG, &["application/wasm"]),
            br#"{"os":"wasip1","architecture":"wasm","layerDigests":[]}"#,
        );
        assert_eq!(f.name, NAME);
        let reason = f.wasm.unwrap();
        assert!(
            reason.contains("Wasm OCI artifact") && reason.contains(NAME),
            "{reason}"
        );
    }

    #[test]
    fn wasm_layers_are_kept_with_their_titles() {
        let m = serde_json::to_vec(&serde_json::json!({
            "config": {"mediaType": WASM_CONFIG, "digest": "sha256:cc", "size": 2},
            "layers": [
                {"mediaType": TAR_GZ, "digest": "sha256:00", "size": 9},
                {"mediaType": "application/wasm", "digest": "sha256:aa", "size": 3,
                 "annotations": {TITLE: "hello.wasm"}},
                {"mediaType": WASM_LAYERS[2], "digest": "sha256:bb", "size": 4},
            ],
        }))
        .unwrap();
        let f = facts_from(NAME, &m, b"{}");
        let got: Vec<_> = f
            .layers
            .iter()
            .map(|l| (l.digest.as_str(), l.size, l.title()))
            .collect();
        assert_eq!(
            got,
            [("sha256:aa", 3, Some("hello.wasm")), ("sha256:bb", 4, None)]
        );
        // A platform image without wasm layers has none to run.
        let f = facts_from(
            NAME,
            &manifest(OCI_CONFIG, &[TAR_GZ]),
            br#"{"os":"wasip1"}"#,
        );
        assert!(f.wasm.is_some() && f.layers.is_empty());
    }

    #[test]
    fn a_wasi_platform_in_the_config() {
        for (os, arch) in [
            ("wasip1", "wasm"),
            ("wasip2", "wasm"),
            ("wasi", "wasm"),
            ("wasi", ""),
            ("linux", "wasm"),
        ] {
            let config = format!(r#"{{"os":"{os}","architecture":"{arch}"}}"#);
            let f = facts_from(NAME, &manifest(OCI_CONFIG, &[TAR_GZ]), config.as_bytes());
            assert_eq!(
                f.wasm.as_deref(),
                Some(format!("image {NAME} has platform {os}/{arch}").as_str())
            );
        }
    }

    #[test]
    fn wasm_layer_media_types() {
        for layer in WASM_LAYERS {
            let f = facts_from(NAME, &manifest(OCI_CONFIG, &[TAR_GZ, layer]), LINUX_CONFIG);
            assert_eq!(
                f.wasm.as_deref(),
                Some(format!("image {NAME} has a layer of media type {layer}").as_str())
            );
        }
    }

    #[test]
    fn a_plain_linux_image_says_nothing() {
        let f = facts_from(NAME, &manifest(OCI_CONFIG, &[TAR_GZ, TAR_GZ]), LINUX_CONFIG);
        assert_eq!(
            f,
            ImageFacts {
                name: NAME.into(),
                wasm: None,
                layers: vec![],
            }
        );
        // Docker media types, too.
        let docker = manifest(
            "application/vnd.docker.container.image.v1+json",
            &["application/vnd.docker.image.rootfs.diff.tar.gzip"],
        );
        assert_eq!(facts_from(NAME, &docker, LINUX_CONFIG).wasm, None);
    }

    #[test]
    fn unparsable_content_says_nothing() {
        assert_eq!(facts_from(NAME, b"not json", LINUX_CONFIG).wasm, None);
        // A config that is not JSON does not hide a wasm layer.
        let f = facts_from(NAME, &manifest(OCI_CONFIG, &["application/wasm"]), b"\0\0");
        assert!(f.wasm.is_some());
    }

    fn index(manifests: &[(&str, &str, &str)]) -> Vec<u8> {
        let m: Vec<_> = manifests
            .iter()
            .map(|(digest, os, arch)| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": 100,
                    "platform": {"os": os, "architecture": arch},
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": m,
        }))
        .unwrap()
    }

    #[test]
    fn an_index_prefers_the_wasm_manifest() {
        let both = index(&[
            ("sha256:linux", "linux", "amd64"),
            ("sha256:wasm", "wasip1", "wasm"),
        ]);
        let d = pick_manifest_for(&both, "amd64").unwrap();
        assert_eq!(d.digest, "sha256:wasm");
        assert_eq!(d.size, 100);
        assert_eq!(
            d.platform.unwrap(),
            Platform {
                os: "wasip1".into(),
                architecture: "wasm".into()
            }
        );
        assert!(is_index("", &both));
        assert!(!is_index("", &manifest(OCI_CONFIG, &[])));
    }

    #[test]
    fn an_index_without_wasm_gives_the_hosts_linux_manifest() {
        let linux = index(&[
            ("sha256:arm", "linux", "arm64"),
            ("sha256:amd", "linux", "amd64"),
        ]);
        assert_eq!(
            pick_manifest_for(&linux, "amd64").unwrap().digest,
            "sha256:amd"
        );
        assert_eq!(
            pick_manifest_for(&linux, "arm64").unwrap().digest,
            "sha256:arm"
        );
        assert_eq!(pick_manifest_for(&linux, "s390x"), None);
        assert_eq!(pick_manifest(b"{}"), None);
    }

    #[tokio::test]
    async fn an_unreachable_containerd_gives_no_facts() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nothing.sock");
        let started = std::time::Instant::now();
        assert_eq!(
            inspect(&sock.to_string_lossy(), "default", "c1").await,
            None
        );
        assert_eq!(inspect("", "default", "c1").await, None);
        assert!(started.elapsed() < TIMEOUT);
    }
}
