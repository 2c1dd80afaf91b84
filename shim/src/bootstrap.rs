//! The short-lived actions containerd runs the shim binary for: `start`, `delete`,
//! `-info`, `-v`.
//!
//! `start` answers in the form the calling containerd understands (checklist L-3, D-1/D-2):
//!
//! | containerd | what it passes | our reply |
//! |---|---|---|
//! | 2.3+ | `BootstrapParams` on stdin | protobuf `BootstrapResult{version: 3}` |
//! | 1.7, 2.0–2.2 | `MAX_SHIM_VERSION` in the environment | JSON `{"version": min(MAX_SHIM_VERSION, 3), ...}` |
//! | 1.6 | neither | the bare socket address |
//!
//! containerd 1.7 and 2.1 both announce `MAX_SHIM_VERSION=2` (1.7 rejects version 3),
//! so we honour what containerd says it accepts. Both task API names are served, so
//! whichever client containerd builds finds us; see `docs/decisions.md`.

use std::io::{Read, Write};
use std::path::PathBuf;

use containerd_shim::Flags;
use containerd_shim::StartOpts;
use containerd_shim::bootstrap::{BootstrapParams, BootstrapResult, Extension};
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::error::{Error, Result};
use crate::server::socket_path;
use crate::task::destroy_persisted;

/// The annotation CRI puts on every container of a pod (its pause container carries its
/// own id): containers with the same value share one shim.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// Our own explicit grouping annotation, for non-CRI users.
pub const GROUP: &str = "io.containerd.amphi.v1.group";

const MAX_INPUT: u64 = 10 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Bootstrap,
    Json(u32),
    Plain,
}

fn read_stdin() -> Result<Vec<u8>> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut input = Vec::new();
    stdin
        .lock()
        .take(MAX_INPUT)
        .read_to_end(&mut input)
        .map_err(|e| Error::io("read", "stdin", e))?;
    Ok(input)
}

/// `BootstrapParams` when containerd 2.3+ sent them (legacy runtime options, a protobuf
/// `Any`, also decode as `BootstrapParams` but never with our id and namespace).
fn bootstrap_params(input: &[u8], flags: &Flags) -> Option<BootstrapParams> {
    let params = BootstrapParams::parse_from_bytes(input).ok()?;
    (params.instance_id == flags.id && params.namespace == flags.namespace).then_some(params)
}

fn legacy_params(input: &[u8], flags: &Flags) -> BootstrapParams {
    let mut params = BootstrapParams {
        instance_id: flags.id.clone(),
        namespace: flags.namespace.clone(),
        containerd_ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        containerd_grpc_address: flags.address.clone(),
        containerd_binary: flags.publish_binary.clone(),
        ..Default::default()
    };
    if params.containerd_grpc_address.is_empty() {
        params.containerd_grpc_address = std::env::var("GRPC_ADDRESS").unwrap_or_default();
    }
    if let Ok(any) = Any::parse_from_bytes(input)
        && !any.type_url.is_empty()
    {
        params.extensions.push(Extension {
            value: Some(any).into(),
            ..Default::default()
        });
    }
    params
}

fn legacy_reply(max_shim_version: Option<&str>) -> Reply {
    match max_shim_version.and_then(|v| v.trim().parse::<u32>().ok()) {
        Some(v) if v >= 2 => Reply::Json(v.min(3)),
        _ => Reply::Plain,
    }
}

fn encode_reply(reply: Reply, address: &str) -> Result<Vec<u8>> {
    Ok(match reply {
        Reply::Plain => address.as_bytes().to_vec(),
        Reply::Json(version) => serde_json::json!({
            "version": version,
            "address": address,
            "protocol": "ttrpc",
        })
        .to_string()
        .into_bytes(),
        Reply::Bootstrap => BootstrapResult {
            version: 3,
            address: address.to_string(),
            protocol: "ttrpc".to_string(),
            ..Default::default()
        }
        .write_to_bytes()
        .map_err(containerd_shim::Error::from)?,
    })
}

/// The grouping key: the pod's sandbox id, our group annotation, or the container id.
fn grouping_key(config_json: Option<&[u8]>, id: &str) -> String {
    let annotations = config_json
        .and_then(|data| serde_json::from_slice::<serde_json::Value>(data).ok())
        .and_then(|v| v.get("annotations").cloned());
    [GROUP, SANDBOX_ID]
        .iter()
        .find_map(|key| {
            annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| id.to_string())
}

pub async fn start(flags: &Flags) -> Result<()> {
    let input = read_stdin()?;
    let (params, reply) = match bootstrap_params(&input, flags) {
        Some(p) => (p, Reply::Bootstrap),
        None => (
            legacy_params(&input, flags),
            legacy_reply(std::env::var("MAX_SHIM_VERSION").ok().as_deref()),
        ),
    };
    let opts: StartOpts = params.into();
    let config = std::fs::read("config.json").ok();
    let grouping = grouping_key(config.as_deref(), &flags.id);
    let address = opts.socket_address(&grouping);
    // A grouped container whose shim already runs: reuse it without spawning.
    let address = if std::os::unix::net::UnixStream::connect(socket_path(&address)).is_ok() {
        address
    } else {
        containerd_shim::spawn(opts, &grouping, Vec::new()).await?
    };
    std::fs::write("address", &address).map_err(|e| Error::io("write", "address", e))?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&encode_reply(reply, &address)?)
        .and_then(|_| stdout.flush())
        .map_err(|e| Error::io("write", "stdout", e))
}

/// The `delete` action: clean up one container after its shim is gone (or after a
/// normal delete, when there is nothing left to do). Never touches other containers.
pub fn delete(flags: &Flags) -> Result<()> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(|e| Error::io("getcwd", "", e))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let persisted = destroy_persisted(&bundle)?;
    remove_dead_socket(&bundle);
    let response = DeleteResponse {
        pid: persisted.map(|p| p.pid.max(0) as u32).unwrap_or(0),
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(crate::reaper::now()).into(),
        ..Default::default()
    };
    let bytes = response
        .write_to_bytes()
        .map_err(containerd_shim::Error::from)?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(|e| Error::io("write", "stdout", e))
}

/// A shim killed outright leaves its socket behind. Remove it only when nothing answers
/// on it: a live grouped shim still serves the pod's other containers.
fn remove_dead_socket(bundle: &std::path::Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = socket_path(address.trim());
    if !path.is_empty() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// `-info`: who we are, for containerd 2.x's introspection.
pub fn info() -> Result<()> {
    // Runtime options may be piped in; amphi has none yet, so read and drop them.
    let _ = read_stdin()?;
    let info = RuntimeInfo {
        name: crate::RUNTIME_ID.to_string(),
        version: Some(RuntimeVersion {
            version: crate::VERSION.to_string(),
            revision: String::new(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let bytes = info
        .write_to_bytes()
        .map_err(containerd_shim::Error::from)?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(|e| Error::io("write", "stdout", e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reply_form_follows_what_containerd_announces() {
        assert_eq!(legacy_reply(None), Reply::Plain); // 1.6
        assert_eq!(legacy_reply(Some("2")), Reply::Json(2)); // 1.7, 2.0-2.2
        assert_eq!(legacy_reply(Some("3")), Reply::Json(3));
        assert_eq!(legacy_reply(Some("9")), Reply::Json(3));
        assert_eq!(legacy_reply(Some("junk")), Reply::Plain);
        assert_eq!(
            encode_reply(Reply::Plain, "unix:///s").unwrap(),
            b"unix:///s"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&encode_reply(Reply::Json(2), "unix:///s").unwrap()).unwrap();
        assert_eq!(json["version"], 2);
        assert_eq!(json["address"], "unix:///s");
        assert_eq!(json["protocol"], "ttrpc");
        let result = BootstrapResult::parse_from_bytes(
            &encode_reply(Reply::Bootstrap, "unix:///s").unwrap(),
        )
        .unwrap();
        assert_eq!(result.version, 3);
    }

    fn flags() -> Flags {
        Flags {
            id: "c1".into(),
            namespace: "k8s.io".into(),
            address: "/run/containerd/containerd.sock".into(),
            ..Default::default()
        }
    }

    #[test]
    fn bootstrap_params_are_recognised_only_for_us() {
        let params = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "k8s.io".into(),
            containerd_ttrpc_address: "/x.ttrpc".into(),
            ..Default::default()
        };
        let bytes = params.write_to_bytes().unwrap();
        assert!(bootstrap_params(&bytes, &flags()).is_some());
        // Legacy runtime options: an Any, which must not be taken for bootstrap params.
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![],
            ..Default::default()
        };
        let bytes = any.write_to_bytes().unwrap();
        assert!(bootstrap_params(&bytes, &flags()).is_none());
        assert_eq!(legacy_params(&bytes, &flags()).extensions.len(), 1);
        assert!(bootstrap_params(b"", &flags()).is_none());
    }

    #[test]
    fn grouping_prefers_explicit_group_then_pod_then_id() {
        assert_eq!(grouping_key(None, "c1"), "c1");
        let pod = br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#;
        assert_eq!(grouping_key(Some(pod), "c1"), "pod1");
        let both = br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.containerd.amphi.v1.group":"g"}}"#;
        assert_eq!(grouping_key(Some(both), "c1"), "g");
        assert_eq!(grouping_key(Some(b"not json"), "c1"), "c1");
    }
}
