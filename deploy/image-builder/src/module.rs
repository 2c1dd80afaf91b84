//! Loading a WebAssembly input: `.wasm` binaries are taken as they are, WebAssembly text
//! (`.wat`, or any file that is not binary) is compiled with the `wat` crate, and the
//! result is validated with `wasmparser` so a broken module is refused at build time,
//! not at container start.

use std::path::Path;

use crate::Error;

/// Whether a binary is a core module or a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A core module (WASI preview 1 when it imports `wasi_snapshot_preview1`).
    Module,
    /// A component (WASI 0.2).
    Component,
}

impl WasmKind {
    /// The WASI `os` value the CNCF artifact config uses: `wasip1` for modules, `wasip2`
    /// for components.
    pub fn wasi_os(self) -> &'static str {
        match self {
            WasmKind::Module => "wasip1",
            WasmKind::Component => "wasip2",
        }
    }
}

/// A validated WebAssembly binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmBinary {
    /// The binary (`\0asm...`).
    pub bytes: Vec<u8>,
    /// Module or component.
    pub kind: WasmKind,
    /// The input file's stem (`hello` for `hello.wat`), used to name the file in the image.
    pub stem: String,
}

/// The kind a binary's 8-byte header announces, if it is WebAssembly at all.
pub fn kind_of(bytes: &[u8]) -> Option<WasmKind> {
    match bytes.get(..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(WasmKind::Module),
        [0, b'a', b's', b'm', _, _, 1, 0] => Some(WasmKind::Component),
        _ => None,
    }
}

/// Reads `path`, compiles it when it is text, and validates it.
pub fn load(path: &Path) -> Result<WasmBinary, Error> {
    let input = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::NonUtf8Path(path.to_path_buf()))?
        .to_string();
    let bytes = to_binary(&input).map_err(|message| Error::Wat {
        path: path.to_path_buf(),
        message,
    })?;
    let kind = validate(&bytes).map_err(|message| Error::InvalidWasm {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(WasmBinary { bytes, kind, stem })
}

/// Binary input is returned unchanged; anything else is parsed as WebAssembly text.
pub fn to_binary(input: &[u8]) -> Result<Vec<u8>, String> {
    if input.starts_with(b"\0asm") {
        return Ok(input.to_vec());
    }
    wat::parse_bytes(input)
        .map(|b| b.into_owned())
        .map_err(|e| e.to_string())
}

/// Validates a binary (core module or component) and returns its kind.
pub fn validate(bytes: &[u8]) -> Result<WasmKind, String> {
    let kind = kind_of(bytes).ok_or("no WebAssembly header (\\0asm with a known version)")?;
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(bytes)
        .map_err(|e| e.to_string())?;
    Ok(kind)
}

/// The names a component imports and exports at its top level (for the artifact config's
/// `component` field); `None` for a core module or an unparsable binary.
pub fn component_world(bytes: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    if kind_of(bytes)? != WasmKind::Component {
        return None;
    }
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import.ok()?.name.full_name().into_owned());
                }
            }
            wasmparser::Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export.ok()?.name.full_name().into_owned());
                }
            }
            _ => {}
        }
    }
    Some((imports, exports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wat_is_compiled_and_validated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tiny.wat");
        std::fs::write(&path, "(module (func (export \"_start\")))").expect("write");
        let wasm = load(&path).expect("load");
        assert!(wasm.bytes.starts_with(b"\0asm\x01\0\0\0"));
        assert_eq!(wasm.kind, WasmKind::Module);
        assert_eq!(wasm.stem, "tiny");
    }

    #[test]
    fn binaries_pass_through() {
        let bin = wat::parse_str("(module)").expect("wat");
        assert_eq!(to_binary(&bin).expect("binary"), bin);
        assert_eq!(validate(&bin), Ok(WasmKind::Module));
    }

    #[test]
    fn invalid_input_is_refused_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = dir.path().join("bad.wat");
        std::fs::write(&text, "(module (func (result i32)))").expect("write");
        let err = load(&text).expect_err("type error must be refused");
        assert!(err.to_string().contains("bad.wat"), "{err}");

        let bin = dir.path().join("junk.wasm");
        std::fs::write(&bin, b"\0asm\x01\0\0\0\xff\xff").expect("write");
        let err = load(&bin).expect_err("junk must be refused");
        assert!(matches!(err, Error::InvalidWasm { .. }), "{err}");
    }

    #[test]
    fn components_are_recognised() {
        let bin = wat::parse_str(
            "(component (import \"wasi:cli/stdout@0.2.0\" (instance)) \
             (core module $m) (core instance (instantiate $m)))",
        )
        .expect("component wat");
        assert_eq!(validate(&bin), Ok(WasmKind::Component));
        let (imports, exports) = component_world(&bin).expect("world");
        assert_eq!(imports, ["wasi:cli/stdout@0.2.0"]);
        assert!(exports.is_empty());
        assert_eq!(WasmKind::Component.wasi_os(), "wasip2");
    }
}
