//! amphi's runtime options: what an operator sets per runtime handler in containerd's
//! config, delivered with every `CreateTaskRequest`.
//!
//! containerd has no message of ours, so both of its clients wrap options in
//! `runtimeoptions.v1.Options {type_url = 1, config_path = 2, config_body = 3}`:
//!
//! - `ctr run --runtime-config-path /etc/amphi/options.toml` fills `config_path`;
//! - CRI fills the fields from the runtime's `options` table
//!   (`ConfigPath = "/etc/amphi/options.toml"` or `ConfigBody = '''...'''`).
//!
//! Either way the content is TOML:
//!
//! ```toml
//! wasm_cache_dir = "/var/lib/amphi/wasm-cache"   # compiled-module cache
//! wasm_cache_max_bytes = 1073741824              # its size bound
//! ```
//!
//! Unknown keys are an error, so a typo does not silently fall back to a default. ctr
//! sends runc's own option types for some flags (`--uidmap` sends
//! `containerd.runc.v1.Options`, or `containerd.linux.runc.CreateOptions` on 1.6): they
//! carry nothing for amphi and are ignored, as is any other type (with a warning). What
//! is not set comes from the environment (`AMPHI_WASM_CACHE_DIR`,
//! `AMPHI_WASM_CACHE_MAX_BYTES`), then from the defaults.

use std::path::PathBuf;

use containerd_shim::protos::protobuf::CodedInputStream;
use containerd_shim::protos::protobuf::rt::WireType;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use serde::Deserialize;

use crate::error::{Error, Result};

const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
/// runc's option types, which ctr sends for flags such as `--uidmap`.
const RUNC_OPTIONS: &[&str] = &[
    "containerd.runc.v1.Options",
    "containerd.linux.runc.CreateOptions",
];

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub wasm_cache_dir: Option<PathBuf>,
    pub wasm_cache_max_bytes: Option<u64>,
}

#[derive(Debug, Default, PartialEq)]
struct Wrapper {
    config_path: String,
    config_body: String,
}

fn decode_wrapper(bytes: &[u8]) -> Result<Wrapper> {
    let bad = |e: containerd_shim::protos::protobuf::Error| {
        Error::InvalidArgument(format!("runtime options: malformed {RUNTIME_OPTIONS}: {e}"))
    };
    let mut w = Wrapper::default();
    let mut input = CodedInputStream::from_bytes(bytes);
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(bad)? {
        match tag {
            // type_url: informative only.
            10 => drop(input.read_string().map_err(bad)?),
            18 => w.config_path = input.read_string().map_err(bad)?,
            26 => w.config_body = input.read_string().map_err(bad)?,
            _ => {
                let wire = WireType::new(tag & 7).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "runtime options: malformed {RUNTIME_OPTIONS}: wire type {}",
                        tag & 7
                    ))
                })?;
                input.skip_field(wire).map_err(bad)?
            }
        }
    }
    Ok(w)
}

fn parse_toml(text: &str, origin: &str) -> Result<Options> {
    toml::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("runtime options {origin}: {e}")))
}

/// The options a Create carries; none means the defaults.
pub fn from_any(any: Option<&Any>) -> Result<Options> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty()) else {
        return Ok(Options::default());
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != RUNTIME_OPTIONS {
        if !RUNC_OPTIONS.contains(&name) {
            log::warn!(
                "runtime options of type {} ignored: amphi reads {RUNTIME_OPTIONS} \
                 (ConfigPath or ConfigBody)",
                any.type_url
            );
        }
        return Ok(Options::default());
    }
    let w = decode_wrapper(&any.value)?;
    match (w.config_path.is_empty(), w.config_body.is_empty()) {
        (true, true) => Ok(Options::default()),
        (false, true) => {
            let text = std::fs::read_to_string(&w.config_path).map_err(|e| {
                Error::InvalidArgument(format!("runtime options {}: {e}", w.config_path))
            })?;
            parse_toml(&text, &w.config_path)
        }
        (true, false) => parse_toml(&w.config_body, "ConfigBody"),
        (false, false) => Err(Error::InvalidArgument(
            "runtime options: set ConfigPath or ConfigBody, not both".into(),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use containerd_shim::protos::ttrpc::Code;

    /// Encodes the wrapper the way containerd does (length-delimited string fields).
    fn wrapper(path: &str, body: &str) -> Any {
        let mut value = Vec::new();
        for (field, s) in [(2u8, path), (3u8, body)] {
            if !s.is_empty() {
                value.push(field << 3 | 2);
                value.push(s.len() as u8);
                value.extend_from_slice(s.as_bytes());
            }
        }
        Any {
            type_url: RUNTIME_OPTIONS.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn nothing_means_defaults() {
        assert_eq!(from_any(None).unwrap(), Options::default());
        assert_eq!(
            from_any(Some(&wrapper("", ""))).unwrap(),
            Options::default()
        );
    }

    #[test]
    fn runc_options_from_ctr_are_ignored() {
        for type_url in [
            "containerd.runc.v1.Options",
            "containerd.linux.runc.CreateOptions",
        ] {
            let any = Any {
                type_url: type_url.into(),
                value: vec![0x08, 0x01],
                ..Default::default()
            };
            assert_eq!(
                from_any(Some(&any)).unwrap(),
                Options::default(),
                "{type_url}"
            );
        }
    }

    #[test]
    fn config_body_and_config_path() {
        let o = from_any(Some(&wrapper("", "wasm_cache_dir = \"/c\"\n"))).unwrap();
        assert_eq!(o.wasm_cache_dir, Some(PathBuf::from("/c")));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("o.toml");
        std::fs::write(&file, "wasm_cache_max_bytes = 4096\n").unwrap();
        let o = from_any(Some(&wrapper(file.to_str().unwrap(), ""))).unwrap();
        assert_eq!(o.wasm_cache_max_bytes, Some(4096));
    }

    #[test]
    fn mistakes_are_invalid_argument_and_named() {
        let cases = [
            (wrapper("", "wasm_cache_dirr = \"/c\""), "wasm_cache_dirr"),
            (
                wrapper("/nonexistent/amphi.toml", ""),
                "/nonexistent/amphi.toml",
            ),
            (wrapper("/a", "b = 1"), "not both"),
        ];
        for (any, needle) in cases {
            let e = from_any(Some(&any)).unwrap_err();
            assert_eq!(e.code(), Code::INVALID_ARGUMENT);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}
