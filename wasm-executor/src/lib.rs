//! The WebAssembly side of amphi. Today it only recognises WebAssembly binaries and
//! text; running them in wasmtime inside the container's sandbox is the next step (see
//! `docs/architecture.md`, "Roadmap"). It depends on no containerd type.
//!
//! ```
//! use amphi_wasm_executor::{classify, Binary};
//! assert_eq!(classify(b"\0asm\x01\0\0\0"), Some(Binary::Module));
//! assert_eq!(classify(b"(module)"), Some(Binary::Text));
//! assert_eq!(classify(b"\x7fELF"), None);
//! ```

/// What a file's leading bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// A core module (`\0asm`, version 1).
    Module,
    /// A component (`\0asm`, component-model version and layer 1).
    Component,
    /// WebAssembly text (`(module ...)` or `(component ...)`).
    Text,
}

const MAGIC: &[u8; 4] = b"\0asm";

/// Classifies the first bytes of a file (a few hundred bytes are plenty).
pub fn classify(head: &[u8]) -> Option<Binary> {
    if let Some(rest) = head.strip_prefix(MAGIC) {
        // 4 bytes after the magic: a u16 version and a u16 layer (0 core, 1 component).
        return match rest.get(..4)? {
            [1, 0, 0, 0] => Some(Binary::Module),
            [_, _, 1, 0] => Some(Binary::Component),
            _ => None,
        };
    }
    let text = std::str::from_utf8(head.get(..head.len().min(512))?).ok()?;
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(";;") {
            rest = after.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if let Some(after) = rest.strip_prefix("(;") {
            rest = after.split_once(";)").map(|(_, r)| r)?;
        } else {
            break;
        }
    }
    let body = rest.strip_prefix('(')?.trim_start();
    (body.starts_with("module") || body.starts_with("component")).then_some(Binary::Text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries() {
        assert_eq!(classify(b"\0asm\x01\0\0\0rest"), Some(Binary::Module));
        assert_eq!(classify(b"\0asm\x0d\0\x01\0"), Some(Binary::Component));
        assert_eq!(classify(b"\0asm\x02\0\0\0"), None);
        assert_eq!(classify(b"\0asm"), None);
    }

    #[test]
    fn text_with_comments() {
        assert_eq!(classify(b"  ;; hello\n(module)"), Some(Binary::Text));
        assert_eq!(classify(b"(; block ;) ( component )"), Some(Binary::Text));
        assert_eq!(classify(b"(; unterminated"), None);
    }

    #[test]
    fn native_and_scripts_are_not_wasm() {
        assert_eq!(classify(b"\x7fELF\x02\x01\x01"), None);
        assert_eq!(classify(b"#!/bin/sh\necho"), None);
        assert_eq!(classify(b""), None);
    }
}
