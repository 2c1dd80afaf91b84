//! Every wasmtime call of the crate (style habit 11: one place to read when wasmtime is
//! upgraded): the one engine configuration, compiling, loading artifacts, and (in `run`)
//! the WASI contexts and exit statuses.
//!
//! Data flow: `new_engine` → `compatibility_digest` (for the cache key) → either
//! `compile` (no cache) or `precompile` + `load_verified`/`load_fresh` (cache) →
//! [`Prepared`] → `Prepared::run` (in `run.rs`).
//!
//! The two `unsafe` deserialization calls are in `engine/sys.rs`, next to the argument that
//! makes them sound.
//!
//! Limitations: component validation errors are reported by the compiler (wasmtime has
//! no separate component validator), still as [`WasmError::Invalid`].

mod run;
mod sys;

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, Module, OptLevel, Strategy};

use crate::WasmError;
use crate::cache::VerifiedArtifact;

/// Wasm stack a guest may use, set explicitly (well below the main thread's 8 MiB stack
/// and below wasmtime's async stack size, which wasmtime requires).
const MAX_WASM_STACK: usize = 1 << 20;

/// Frames kept in a trap's wasm backtrace; a full one is not printed (see `run`).
const BACKTRACE_FRAMES: usize = 16;

/// Which compiler and loader applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Module,
    Component,
}

/// A compiled core module or component plus its engine, ready to instantiate.
pub struct Prepared {
    engine: Engine,
    code: Code,
}

enum Code {
    Module(Module),
    Component(Component),
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.code {
            Code::Module(_) => "module",
            Code::Component(_) => "component",
        };
        f.debug_struct("Prepared").field("kind", &kind).finish()
    }
}

impl Prepared {
    /// Whether this is a component (WASI 0.2) rather than a core module (WASI p1).
    pub fn is_component(&self) -> bool {
        matches!(self.code, Code::Component(_))
    }
}

/// The engine configuration, in one place: Cranelift, the component model, an explicit
/// wasm stack limit, compilation on the calling thread only (we compile inside the
/// container's cgroup), no epoch interruption or fuel (SIGTERM stops a guest, see
/// `crate::sys`), synchronous calls only.
pub(crate) fn new_engine() -> Result<Engine, WasmError> {
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .wasm_component_model(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .wasm_backtrace_max_frames(NonZeroUsize::new(BACKTRACE_FRAMES))
        .epoch_interruption(false)
        .consume_fuel(false);
    Engine::new(&config).map_err(|err| WasmError::Engine(format!("{err:#}")))
}

/// sha256 of the engine's precompile compatibility hash: equal digests mean artifacts of
/// one engine load in the other.
pub(crate) fn compatibility_digest(engine: &Engine) -> [u8; 32] {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().into()
}

/// Feeds `Hash` output into sha256 (a stable digest, unlike `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Compiles in memory (no cache).
pub(crate) fn compile(engine: &Engine, kind: Kind, bytes: &[u8]) -> Result<Prepared, WasmError> {
    let binary = validated_binary(engine, kind, bytes)?;
    let code = match kind {
        Kind::Module => Module::from_binary(engine, &binary)
            .map(Code::Module)
            .map_err(|err| WasmError::Compile(format!("{err:#}")))?,
        Kind::Component => Component::from_binary(engine, &binary)
            .map(Code::Component)
            .map_err(|err| WasmError::Invalid(format!("{err:#}")))?,
    };
    Ok(Prepared {
        engine: engine.clone(),
        code,
    })
}

/// The serialized output of [`precompile`], untouched: only this module can make one.
pub(crate) struct Artifact(Vec<u8>);

impl Artifact {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Compiles to a serialized artifact for the cache.
pub(crate) fn precompile(engine: &Engine, kind: Kind, bytes: &[u8]) -> Result<Artifact, WasmError> {
    let binary = validated_binary(engine, kind, bytes)?;
    match kind {
        Kind::Module => engine
            .precompile_module(&binary)
            .map_err(|err| WasmError::Compile(format!("{err:#}"))),
        Kind::Component => engine
            .precompile_component(&binary)
            .map_err(|err| WasmError::Invalid(format!("{err:#}"))),
    }
    .map(Artifact)
}

/// Loads a verified cache entry by mapping its file.
pub(crate) fn load_verified(
    engine: &Engine,
    kind: Kind,
    artifact: &VerifiedArtifact,
) -> Result<Prepared, WasmError> {
    let code = match kind {
        Kind::Module => sys::module_from_verified_file(engine, artifact).map(Code::Module),
        Kind::Component => sys::component_from_verified_file(engine, artifact).map(Code::Component),
    }
    .map_err(|err| WasmError::Load(format!("{}: {err:#}", artifact.name())))?;
    Ok(Prepared {
        engine: engine.clone(),
        code,
    })
}

/// Loads an artifact that [`precompile`] produced with this engine.
pub(crate) fn load_fresh(
    engine: &Engine,
    kind: Kind,
    artifact: &Artifact,
) -> Result<Prepared, WasmError> {
    let code = match kind {
        Kind::Module => sys::module_from_fresh_bytes(engine, artifact).map(Code::Module),
        Kind::Component => sys::component_from_fresh_bytes(engine, artifact).map(Code::Component),
    }
    .map_err(|err| WasmError::Load(format!("{err:#}")))?;
    Ok(Prepared {
        engine: engine.clone(),
        code,
    })
}

/// Text converted to binary; core modules validated (components are validated while
/// compiling).
fn validated_binary<'a>(
    engine: &Engine,
    kind: Kind,
    bytes: &'a [u8],
) -> Result<Cow<'a, [u8]>, WasmError> {
    let binary = wat::parse_bytes(bytes).map_err(|err| WasmError::Invalid(err.to_string()))?;
    if kind == Kind::Module {
        Module::validate(engine, &binary).map_err(|err| WasmError::Invalid(format!("{err:#}")))?;
    }
    Ok(binary)
}
