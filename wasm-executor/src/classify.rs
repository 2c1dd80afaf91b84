//! Recognising WebAssembly by its leading bytes: a core module, a component, or text.
//!
//! Pure byte inspection, no wasmtime: dispatch (in the shim) uses [`classify`] to decide
//! whether an entrypoint is Wasm at all, and [`crate::prepare`] uses it to pick between
//! the module and component compilers.
//!
//! Limitations: text is recognised by its first form only (`(module` or `(component`
//! after comments), within the first 512 bytes; whether it parses is decided later.

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
    let body = text_body(head)?;
    (body.starts_with("module") || body.starts_with("component")).then_some(Binary::Text)
}

/// Whether WebAssembly text starts with a `(component` form (rather than `(module`).
pub(crate) fn text_is_component(head: &[u8]) -> bool {
    text_body(head).is_some_and(|body| body.starts_with("component"))
}

/// The text after the first `(` that follows leading comments and white space.
fn text_body(head: &[u8]) -> Option<&str> {
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
    Some(rest.strip_prefix('(')?.trim_start())
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

    #[test]
    fn text_kind() {
        assert!(text_is_component(b";; c\n( component (core module))"));
        assert!(!text_is_component(b"(module (func))"));
        assert!(!text_is_component(b"\0asm\x0d\0\x01\0"));
    }
}
