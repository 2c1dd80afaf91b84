//! The `unsafe` part of loading compiled artifacts: wasmtime's deserialization trusts its
//! input (an artifact is machine code), so each call here states why the input is one
//! wasmtime produced.
//!
//! Data flow: [`VerifiedArtifact`]s come only from the cache after their checksum matched
//! (or from our own write of a fresh artifact); [`Artifact`]s come from
//! `Engine::precompile_*` in this process.
//!
//! Limitations: components have no `deserialize_open_file` in this wasmtime line; they are
//! mapped through `/proc/self/fd/<fd>` (the same inode) and read into memory when that
//! path is unavailable (no procfs in the container).

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use wasmtime::component::Component;
use wasmtime::{Engine, Module, Result};

use super::Artifact;
use crate::cache::VerifiedArtifact;

/// Maps a verified cache entry as a core module.
pub(super) fn module_from_verified_file(
    engine: &Engine,
    artifact: &VerifiedArtifact,
) -> Result<Module> {
    let file = artifact.file().try_clone()?;
    // SAFETY: `artifact` is only constructed by the cache after the sha256 of this very
    // opened file matched the checksum recorded when the entry was written from the output
    // of `Engine::precompile_module` (or by our own write of that output). Entries are
    // never modified in place (replacements are renamed over, creating a new inode), so
    // the mapped file stays unchanged while the module lives. wasmtime itself rejects
    // artifacts of another version or engine configuration with an error.
    unsafe { Module::deserialize_open_file(engine, file) }
}

/// Maps a verified cache entry as a component.
pub(super) fn component_from_verified_file(
    engine: &Engine,
    artifact: &VerifiedArtifact,
) -> Result<Component> {
    let path = PathBuf::from(format!("/proc/self/fd/{}", artifact.file().as_raw_fd()));
    if path.exists() {
        // SAFETY: as in `module_from_verified_file`: `/proc/self/fd/<fd>` reopens the
        // verified, never-modified inode we hold open, produced by
        // `Engine::precompile_component`.
        unsafe { Component::deserialize_file(engine, &path) }
    } else {
        let bytes = artifact.read_all()?;
        // SAFETY: these bytes were read through the verified fd (see above) and match the
        // recorded checksum of `Engine::precompile_component` output.
        unsafe { Component::deserialize(engine, bytes) }
    }
}

/// Loads a core module from bytes `Engine::precompile_module` just returned.
pub(super) fn module_from_fresh_bytes(engine: &Engine, artifact: &Artifact) -> Result<Module> {
    // SAFETY: an `Artifact` is only made by `engine::precompile` from the unmodified output
    // of `Engine::precompile_module` in this process; it never left our memory.
    unsafe { Module::deserialize(engine, artifact.bytes()) }
}

/// Loads a component from bytes `Engine::precompile_component` just returned.
pub(super) fn component_from_fresh_bytes(
    engine: &Engine,
    artifact: &Artifact,
) -> Result<Component> {
    // SAFETY: an `Artifact` is only made by `engine::precompile` from the unmodified output
    // of `Engine::precompile_component` in this process; it never left our memory.
    unsafe { Component::deserialize(engine, artifact.bytes()) }
}
