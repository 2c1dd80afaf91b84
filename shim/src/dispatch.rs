//! Which kind of container this is: Linux or WebAssembly. A pure, ordered decision,
//! made once at Create, logged with its reason and persisted with the task.
//!
//! Rules, first match wins:
//!
//! 1. A pod sandbox (`io.kubernetes.cri.container-type=sandbox`) is always Linux.
//! 2. Annotations: ours (`amphi.io/kind=wasm|linux`), then the ones users already write
//!    for crun (`run.oci.handler=wasm|wasm-smart`, `module.wasm.image/variant=
//!    compat|compat-smart`; the `-smart` forms mean "Wasm only if the entrypoint ends in
//!    `.wasm` or `.wat`"). Annotations that disagree are an error, not a guess; so is a
//!    value we do not know.
//! 3. A native entrypoint (ELF or `#!`) → Linux: nothing else could run it.
//! 4. The image, read through containerd's API ([`crate::image`]): the Wasm OCI artifact,
//!    a `wasi/wasm` platform or a wasm layer media type → Wasm. An image that says
//!    nothing (or no image facts at all) defers to rule 5. A Wasm image with neither
//!    wasm layers nor the entrypoint in the rootfs is an error naming both.
//! 5. The entrypoint's first bytes: `\0asm` (module or component) or WAT text → Wasm.
//! 6. Otherwise: an error naming the rules tried.
//!
//! Which module a Wasm container runs is [`wasm_module`]: the image's wasm layer when it
//! has one (read from containerd's content store, never from the rootfs), else the
//! entrypoint file.
//!
//! The image costs a few gRPC round trips (about 4 ms), so callers ask [`needs_image`]
//! first: when rules 1 to 3 decide (pod sandboxes, annotated containers, native programs:
//! the whole Linux start path), the image is not read. Rule 3 precedes the image, unlike
//! the order in `../shared/design/architecture.md`; see `docs/decisions.md`.

use std::collections::HashMap;
use std::fmt;

use amphi_wasm_executor::classify;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::image::{Descriptor, ImageFacts};

pub const KIND: &str = "amphi.io/kind";
pub const CRUN_HANDLER: &str = "run.oci.handler";
pub const WASM_VARIANT: &str = "module.wasm.image/variant";
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Linux,
    Wasm,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Linux => "linux",
            Kind::Wasm => "wasm",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub kind: Kind,
    pub reason: String,
}

/// What the shim found at the entrypoint (`process.args[0]`, resolved in the rootfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entrypoint {
    /// The file's path inside the container and its first bytes.
    Found { path: String, head: Vec<u8> },
    /// Nothing at that name (after the `$PATH` lookup for bare names).
    Missing { name: String },
}

impl Entrypoint {
    fn name(&self) -> &str {
        match self {
            Entrypoint::Found { path, .. } => path,
            Entrypoint::Missing { name } => name,
        }
    }

    fn looks_like_wasm_file(&self) -> bool {
        let name = self.name();
        name.ends_with(".wasm") || name.ends_with(".wat")
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

/// Rule 2: the kind one annotation asks for, `None` if it is absent or defers to the
/// entrypoint and the entrypoint does not look like Wasm.
fn from_annotation(key: &str, value: &str, entry: &Entrypoint) -> Result<Option<Kind>, Error> {
    let smart = |k| Ok(entry.looks_like_wasm_file().then_some(k));
    match (key, value) {
        (KIND, "wasm") => Ok(Some(Kind::Wasm)),
        (KIND, "linux") => Ok(Some(Kind::Linux)),
        (CRUN_HANDLER, "wasm") | (WASM_VARIANT, "compat") => Ok(Some(Kind::Wasm)),
        (CRUN_HANDLER, "wasm-smart") | (WASM_VARIANT, "compat-smart") => smart(Kind::Wasm),
        (KIND, _) => Err(invalid(format!(
            "annotation {key}={value:?}: expected \"wasm\" or \"linux\""
        ))),
        (CRUN_HANDLER, _) => Err(invalid(format!(
            "annotation {key}={value:?}: amphi handles \"wasm\" and \"wasm-smart\""
        ))),
        _ => Err(invalid(format!(
            "annotation {key}={value:?}: expected \"compat\" or \"compat-smart\""
        ))),
    }
}

/// Rule 4: what the entrypoint's bytes say, if anything.
fn from_bytes(head: &[u8]) -> Option<(Kind, &'static str)> {
    if classify(head).is_some() {
        Some((Kind::Wasm, "WebAssembly"))
    } else if head.starts_with(b"\x7fELF") {
        Some((Kind::Linux, "an ELF binary"))
    } else if head.starts_with(b"#!") {
        Some((Kind::Linux, "a script (#!)"))
    } else {
        None
    }
}

/// Rules 1 and 2: the decision the spec alone makes, `None` when it defers to the image
/// and the entrypoint.
fn from_spec(
    annotations: &HashMap<String, String>,
    entry: &Entrypoint,
) -> Result<Option<Decision>, Error> {
    if annotations.get(CONTAINER_TYPE).map(String::as_str) == Some("sandbox") {
        return Ok(Some(Decision {
            kind: Kind::Linux,
            reason: format!("{CONTAINER_TYPE}=sandbox: pod sandboxes always run as Linux"),
        }));
    }
    let mut asked: Option<(Kind, String)> = None;
    for key in [KIND, CRUN_HANDLER, WASM_VARIANT] {
        let Some(value) = annotations.get(key) else {
            continue;
        };
        let Some(kind) = from_annotation(key, value, entry)? else {
            continue;
        };
        match &asked {
            Some((first, by)) if *first != kind => {
                return Err(invalid(format!(
                    "conflicting annotations: {by} asks for {first}, {key}={value} for {kind}"
                )));
            }
            Some(_) => {}
            None => asked = Some((kind, format!("{key}={value}"))),
        }
    }
    Ok(asked.map(|(kind, by)| Decision {
        kind,
        reason: format!("annotation {by}"),
    }))
}

/// Rule 3: a native program runs natively, whatever the image says.
fn native(entry: &Entrypoint) -> Option<Decision> {
    match entry {
        Entrypoint::Found { path, head } => match from_bytes(head) {
            Some((Kind::Linux, what)) => Some(Decision {
                kind: Kind::Linux,
                reason: format!("entrypoint {path} is {what}"),
            }),
            _ => None,
        },
        Entrypoint::Missing { .. } => None,
    }
}

/// Whether [`decide`] would look at the image: rules 1 to 3 neither decide nor fail.
pub fn needs_image(annotations: &HashMap<String, String>, entry: &Entrypoint) -> bool {
    matches!(from_spec(annotations, entry), Ok(None)) && native(entry).is_none()
}

/// The container's kind, by the rules in the module docs. `image` is what
/// [`crate::image::inspect`] found, `None` when there are no image facts (or when
/// [`needs_image`] said they are not needed).
pub fn decide(
    annotations: &HashMap<String, String>,
    image: Option<&ImageFacts>,
    entry: &Entrypoint,
) -> Result<Decision, Error> {
    if let Some(decision) = from_spec(annotations, entry)? {
        return Ok(decision);
    }
    if let Some(decision) = native(entry) {
        return Ok(decision);
    }
    if let Some(ImageFacts {
        name: image,
        wasm: Some(reason),
        layers,
    }) = image
    {
        return match entry {
            Entrypoint::Found { .. } => Ok(Decision {
                kind: Kind::Wasm,
                reason: reason.clone(),
            }),
            Entrypoint::Missing { name } if layers.is_empty() => Err(invalid(format!(
                "not found: {name} (image {image} is WebAssembly but has no wasm layer to \
                 run instead)"
            ))),
            Entrypoint::Missing { .. } => Ok(Decision {
                kind: Kind::Wasm,
                reason: reason.clone(),
            }),
        };
    }
    match entry {
        Entrypoint::Missing { name } => Err(invalid(format!("not found: {name}"))),
        Entrypoint::Found { path, head } => match from_bytes(head) {
            Some((kind, what)) => Ok(Decision {
                kind,
                reason: format!("entrypoint {path} is {what}"),
            }),
            None => Err(invalid(format!(
                "cannot tell how to run {path}: no {KIND}, {CRUN_HANDLER} or {WASM_VARIANT} \
                 annotation, the image does not say it is WebAssembly, and its first bytes \
                 are not ELF, #!, \\0asm or WebAssembly text"
            ))),
        },
    }
}

/// Where a Wasm container's module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Module {
    /// The entrypoint file in the rootfs (its path in the container).
    Rootfs(String),
    /// A wasm layer of the image, read from containerd's content store.
    Layer(Descriptor),
}

/// Which module a Wasm container runs: the image's wasm layer when it has some (the CNCF
/// artifact has nothing else), choosing among several the one whose title
/// (`org.opencontainers.image.title`) is the entrypoint's file name; otherwise the
/// entrypoint file in the rootfs.
pub fn wasm_module(image: Option<&ImageFacts>, entry: &Entrypoint) -> Result<Module, Error> {
    let (image, layers) = match image {
        Some(facts) => (facts.name.as_str(), facts.layers.as_slice()),
        None => ("", &[][..]),
    };
    match (layers, entry) {
        ([], Entrypoint::Found { path, .. }) => Ok(Module::Rootfs(path.clone())),
        ([], Entrypoint::Missing { name }) => Err(invalid(format!("not found: {name}"))),
        ([only], _) => Ok(Module::Layer(only.clone())),
        (several, entry) => {
            let file = entry.name().rsplit('/').next().unwrap_or_default();
            several
                .iter()
                .find(|l| l.title() == Some(file))
                .cloned()
                .map(Module::Layer)
                .ok_or_else(|| {
                    let titles: Vec<_> = several
                        .iter()
                        .map(|l| format!("{} ({})", l.digest, l.title().unwrap_or("untitled")))
                        .collect();
                    invalid(format!(
                        "image {image} has {} wasm layers and none is titled {file:?} (the \
                         entrypoint's file name): {}",
                        several.len(),
                        titles.join(", ")
                    ))
                })
        }
    }
}

/// How a program exec'd into a running container runs, Linux or Wasm container alike: a
/// WebAssembly module or component (rule 5, by its bytes) runs in wasmtime; anything else,
/// or nothing found, is exec'd natively, so that the executable lookup and `execve` in the
/// container name a missing or unrunnable program. Annotations and the image describe the
/// container's entrypoint, not the program an exec names, so they are not consulted.
pub fn decide_exec(entry: &Entrypoint) -> Decision {
    match entry {
        Entrypoint::Found { path, head } => match from_bytes(head) {
            Some((kind, what)) => Decision {
                kind,
                reason: format!("exec program {path} is {what}"),
            },
            None => Decision {
                kind: Kind::Linux,
                reason: format!("exec program {path} is not WebAssembly"),
            },
        },
        Entrypoint::Missing { name } => Decision {
            kind: Kind::Linux,
            reason: format!("exec program {name} is not in the rootfs; the container looks it up"),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use containerd_shim::protos::ttrpc::Code;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn found(path: &str, head: &[u8]) -> Entrypoint {
        Entrypoint::Found {
            path: path.into(),
            head: head.to_vec(),
        }
    }

    const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0";
    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    fn kind(a: &[(&str, &str)], e: &Entrypoint) -> Kind {
        decide(&ann(a), None, e).unwrap().kind
    }

    fn err(a: &[(&str, &str)], e: &Entrypoint) -> String {
        let e = decide(&ann(a), None, e).unwrap_err();
        assert_eq!(e.code(), Code::INVALID_ARGUMENT);
        e.to_string()
    }

    #[test]
    fn rule1_pod_sandbox_is_linux_whatever_else_says() {
        let d = decide(
            &ann(&[(CONTAINER_TYPE, "sandbox"), (KIND, "wasm")]),
            Some(&wasm_image()),
            &found("/pause", WASM),
        )
        .unwrap();
        assert_eq!(d.kind, Kind::Linux);
        assert!(d.reason.contains("sandbox"), "{}", d.reason);
    }

    #[test]
    fn rule2_our_annotation_wins_over_bytes() {
        assert_eq!(kind(&[(KIND, "wasm")], &found("/bin/sh", ELF)), Kind::Wasm);
        assert_eq!(
            kind(&[(KIND, "linux")], &found("/app.wasm", WASM)),
            Kind::Linux
        );
        let d = decide(&ann(&[(KIND, "wasm")]), None, &found("/x", ELF)).unwrap();
        assert_eq!(d.reason, "annotation amphi.io/kind=wasm");
    }

    #[test]
    fn rule2_crun_annotations() {
        assert_eq!(
            kind(&[(CRUN_HANDLER, "wasm")], &found("/x", ELF)),
            Kind::Wasm
        );
        assert_eq!(
            kind(&[(WASM_VARIANT, "compat")], &found("/x", ELF)),
            Kind::Wasm
        );
    }

    #[test]
    fn rule2_smart_forms_look_at_the_file_name() {
        let smart = [(CRUN_HANDLER, "wasm-smart")];
        assert_eq!(kind(&smart, &found("/app.wasm", b"????")), Kind::Wasm);
        assert_eq!(kind(&smart, &found("/app.wat", b"????")), Kind::Wasm);
        // Not a .wasm name: the smart form defers to the bytes.
        assert_eq!(kind(&smart, &found("/bin/sh", ELF)), Kind::Linux);
        let variant = [(WASM_VARIANT, "compat-smart")];
        assert_eq!(kind(&variant, &found("/app.wasm", b"????")), Kind::Wasm);
        assert_eq!(kind(&variant, &found("/bin/app", ELF)), Kind::Linux);
    }

    #[test]
    fn rule2_conflicts_and_unknown_values_are_errors() {
        let e = err(
            &[(KIND, "linux"), (CRUN_HANDLER, "wasm")],
            &found("/x", ELF),
        );
        assert!(e.contains("conflicting"), "{e}");
        let e = err(&[(KIND, "bogus")], &found("/x", ELF));
        assert!(e.contains("bogus") && e.contains(KIND), "{e}");
        let e = err(&[(CRUN_HANDLER, "krun")], &found("/x", ELF));
        assert!(e.contains("krun"), "{e}");
        let e = err(&[(WASM_VARIANT, "nope")], &found("/x", ELF));
        assert!(e.contains("nope"), "{e}");
        // Agreeing annotations are fine.
        assert_eq!(
            kind(&[(KIND, "wasm"), (CRUN_HANDLER, "wasm")], &found("/x", ELF)),
            Kind::Wasm
        );
    }

    fn wasm_image() -> ImageFacts {
        ImageFacts {
            name: "localhost/w:1".into(),
            wasm: Some("image localhost/w:1 has platform wasip1/wasm".into()),
            layers: vec![],
        }
    }

    fn silent_image() -> ImageFacts {
        ImageFacts {
            name: "localhost/l:1".into(),
            wasm: None,
            layers: vec![],
        }
    }

    fn layer(digest: &str, title: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: "application/wasm".into(),
            digest: digest.into(),
            size: 8,
            platform: None,
            annotations: title
                .map(|t| [(crate::image::TITLE.to_string(), t.to_string())].into())
                .unwrap_or_default(),
        }
    }

    fn artifact(layers: Vec<Descriptor>) -> ImageFacts {
        ImageFacts {
            name: "localhost/a:1".into(),
            wasm: Some("image localhost/a:1 is a Wasm OCI artifact".into()),
            layers,
        }
    }

    #[test]
    fn rule3_a_native_entrypoint_runs_natively_without_asking_the_image() {
        for (head, what) in [
            (ELF, "an ELF binary"),
            (&b"#!/bin/sh\n"[..], "a script (#!)"),
        ] {
            let d = decide(&ann(&[]), Some(&wasm_image()), &found("/app", head)).unwrap();
            assert_eq!(d.kind, Kind::Linux);
            assert_eq!(d.reason, format!("entrypoint /app is {what}"));
            // The Linux start path pays no gRPC round trip.
            assert!(!needs_image(&ann(&[]), &found("/app", head)));
        }
    }

    #[test]
    fn rule4_the_image_says_wasm() {
        for head in [WASM, &b"\x01\x02unknown"[..]] {
            let d = decide(&ann(&[]), Some(&wasm_image()), &found("/app", head)).unwrap();
            assert_eq!(d.kind, Kind::Wasm);
            assert_eq!(d.reason, "image localhost/w:1 has platform wasip1/wasm");
            assert!(needs_image(&ann(&[]), &found("/app", head)));
        }
        assert!(needs_image(
            &ann(&[]),
            &Entrypoint::Missing { name: "x".into() }
        ));
    }

    #[test]
    fn rule4_a_silent_image_or_no_facts_defer_to_the_bytes() {
        for image in [Some(&silent_image()), None] {
            let d = decide(&ann(&[]), image, &found("/bin/sh", ELF)).unwrap();
            assert_eq!(d.kind, Kind::Linux);
            assert_eq!(d.reason, "entrypoint /bin/sh is an ELF binary");
            let d = decide(&ann(&[]), image, &found("/hello.wasm", WASM)).unwrap();
            assert_eq!(d.reason, "entrypoint /hello.wasm is WebAssembly");
        }
        let e = decide(
            &ann(&[]),
            Some(&silent_image()),
            &Entrypoint::Missing { name: "x".into() },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "not found: x");
    }

    #[test]
    fn rule4_annotations_and_sandboxes_beat_the_image() {
        let image = Some(&wasm_image());
        let linux = ann(&[(KIND, "linux")]);
        let d = decide(&linux, image, &found("/app.wasm", WASM)).unwrap();
        assert_eq!(d.kind, Kind::Linux);
        assert_eq!(d.reason, "annotation amphi.io/kind=linux");
        // Rules 1 and 2 decide (or fail) without the image: it is not read at all.
        assert!(!needs_image(&linux, &found("/app.wasm", WASM)));
        assert!(!needs_image(
            &ann(&[(CONTAINER_TYPE, "sandbox")]),
            &found("/pause", ELF)
        ));
        assert!(!needs_image(&ann(&[(KIND, "bogus")]), &found("/x", ELF)));
        // A smart annotation that defers to the bytes does not decide.
        assert!(needs_image(
            &ann(&[(CRUN_HANDLER, "wasm-smart")]),
            &found("/bin/app", b"????")
        ));
        assert!(needs_image(
            &ann(&[(CONTAINER_TYPE, "container")]),
            &found("/bin/app", b"????")
        ));
    }

    #[test]
    fn rule4_a_wasm_image_with_neither_layers_nor_the_module_is_an_error() {
        let e = decide(
            &ann(&[]),
            Some(&wasm_image()),
            &Entrypoint::Missing {
                name: "/hello.wasm".into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::INVALID_ARGUMENT);
        assert_eq!(
            e.to_string(),
            "not found: /hello.wasm (image localhost/w:1 is WebAssembly but has no wasm \
             layer to run instead)"
        );
    }

    #[test]
    fn rule4_an_artifact_runs_its_layer_whatever_the_rootfs_holds() {
        let missing = Entrypoint::Missing {
            name: "hello.wasm".into(),
        };
        let image = artifact(vec![layer("sha256:aa", None)]);
        let d = decide(&ann(&[]), Some(&image), &missing).unwrap();
        assert_eq!(d.kind, Kind::Wasm);
        assert!(d.reason.contains("artifact"), "{}", d.reason);
        assert_eq!(
            wasm_module(Some(&image), &missing).unwrap(),
            Module::Layer(layer("sha256:aa", None))
        );
        // Layers win over a file in the rootfs.
        assert_eq!(
            wasm_module(Some(&image), &found("/hello.wasm", WASM)).unwrap(),
            Module::Layer(layer("sha256:aa", None))
        );
    }

    #[test]
    fn among_several_layers_the_title_picks() {
        let image = artifact(vec![
            layer("sha256:aa", Some("tool.wasm")),
            layer("sha256:bb", Some("hello.wasm")),
        ]);
        let entry = Entrypoint::Missing {
            name: "/bin/hello.wasm".into(),
        };
        assert_eq!(
            wasm_module(Some(&image), &entry).unwrap(),
            Module::Layer(layer("sha256:bb", Some("hello.wasm")))
        );
        let e = wasm_module(
            Some(&image),
            &Entrypoint::Missing {
                name: "other.wasm".into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::INVALID_ARGUMENT);
        assert_eq!(
            e.to_string(),
            "image localhost/a:1 has 2 wasm layers and none is titled \"other.wasm\" (the \
             entrypoint's file name): sha256:aa (tool.wasm), sha256:bb (hello.wasm)"
        );
    }

    #[test]
    fn without_layers_the_module_is_the_entrypoint_file() {
        assert_eq!(
            wasm_module(Some(&wasm_image()), &found("/hello.wasm", WASM)).unwrap(),
            Module::Rootfs("/hello.wasm".into())
        );
        assert_eq!(
            wasm_module(None, &found("/x.wat", b"(module)")).unwrap(),
            Module::Rootfs("/x.wat".into())
        );
        let e = wasm_module(None, &Entrypoint::Missing { name: "x".into() }).unwrap_err();
        assert_eq!(e.to_string(), "not found: x");
    }

    #[test]
    fn rule4_bytes() {
        assert_eq!(kind(&[], &found("/hello.wasm", WASM)), Kind::Wasm);
        assert_eq!(kind(&[], &found("/hello.wat", b"(module)")), Kind::Wasm);
        assert_eq!(kind(&[], &found("/bin/busybox", ELF)), Kind::Linux);
        assert_eq!(kind(&[], &found("/entry.sh", b"#!/bin/sh\n")), Kind::Linux);
        let d = decide(&ann(&[]), None, &found("/hello.wasm", WASM)).unwrap();
        assert_eq!(d.reason, "entrypoint /hello.wasm is WebAssembly");
    }

    #[test]
    fn rule5_nothing_matches_names_what_was_tried() {
        let e = err(&[], &found("/data.bin", b"\x01\x02\x03\x04"));
        assert!(
            e.contains("/data.bin") && e.contains(KIND) && e.contains("ELF"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_entrypoint_says_not_found() {
        let e = err(
            &[],
            &Entrypoint::Missing {
                name: "nosuch".into(),
            },
        );
        assert_eq!(e, "not found: nosuch");
    }

    #[test]
    fn exec_programs_run_as_wasm_by_their_bytes_only() {
        let module = found("/app/two.wasm", b"\0asm\x01\0\0\0");
        assert_eq!(decide_exec(&module).kind, Kind::Wasm);
        let wat = found("/app/two.wat", b"(module)");
        assert_eq!(decide_exec(&wat).kind, Kind::Wasm);
        assert_eq!(decide_exec(&found("/bin/sh", b"\x7fELF")).kind, Kind::Linux);
        assert_eq!(decide_exec(&found("/x.sh", b"#!/bin/sh")).kind, Kind::Linux);
        let text = decide_exec(&found("/etc/motd", b"hello"));
        assert_eq!(text.kind, Kind::Linux);
        assert!(text.reason.contains("/etc/motd"), "{}", text.reason);
        let missing = decide_exec(&Entrypoint::Missing {
            name: "nope".into(),
        });
        assert_eq!(missing.kind, Kind::Linux);
        assert!(missing.reason.contains("nope"), "{}", missing.reason);
    }
}
