//! Decoding the resources of an `Update` request.
//!
//! containerd (ctr `task update`, CRI `UpdateContainerResources`) packs an OCI
//! `LinuxResources` as JSON in a protobuf `Any` whose type URL is
//! [`LINUX_RESOURCES_TYPE_URL`] (typeurl's name for Go types that are not protobuf
//! messages). [`decode`] checks the URL and parses the JSON; the cgroup driver then writes
//! what was asked ([`amphi_linux_executor::cgroup::Cgroup::apply`]), leaving every setting
//! the request does not mention as it is.
//!
//! # Limitations
//!
//! The Windows variant (`WindowsResources`) is refused: amphi runs Linux containers only.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::LinuxResources;

use crate::error::{Error, Result};

/// The type URL containerd gives OCI `LinuxResources` JSON.
pub const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// The `LinuxResources` of an Update request; INVALID_ARGUMENT naming the problem when
/// there are none, they are of another type, or the JSON does not parse.
pub fn decode(resources: Option<&Any>) -> Result<LinuxResources> {
    let any = resources
        .ok_or_else(|| Error::InvalidArgument("update request carries no resources".into()))?;
    let url = any.type_url.trim_start_matches('/');
    if url != LINUX_RESOURCES_TYPE_URL {
        return Err(Error::InvalidArgument(format!(
            "update resources of type {:?}: only {LINUX_RESOURCES_TYPE_URL} is supported",
            any.type_url
        )));
    }
    serde_json::from_slice(&any.value).map_err(|e| {
        Error::InvalidArgument(format!(
            "update resources: invalid LinuxResources JSON: {e}"
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use containerd_shim::protos::ttrpc::Code;

    fn any(type_url: &str, json: &str) -> Any {
        Any {
            type_url: type_url.into(),
            value: json.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn what_ctr_task_update_sends() {
        // `ctr task update --memory-limit 67108864 --cpu-quota 50000`.
        let r = decode(Some(&any(
            LINUX_RESOURCES_TYPE_URL,
            r#"{"memory":{"limit":67108864},"cpu":{"quota":50000}}"#,
        )))
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(67108864));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50000));
        assert!(r.pids().is_none(), "unmentioned settings stay unset");
    }

    #[test]
    fn what_cri_sends() {
        // CRI sends the container's whole resources, device rules included.
        let r = decode(Some(&any(
            LINUX_RESOURCES_TYPE_URL,
            r#"{"devices":[{"allow":false,"access":"rwm"}],
                "memory":{"limit":134217728,"swap":134217728},
                "cpu":{"shares":512,"quota":100000,"period":100000,"cpus":"","mems":""},
                "pids":{"limit":100},
                "hugepageLimits":[{"pageSize":"2MB","limit":0}],
                "unified":{}}"#,
        )))
        .unwrap();
        assert_eq!(r.pids().as_ref().unwrap().limit(), 100);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(r.devices().as_ref().unwrap().len(), 1);
        assert_eq!(r.hugepage_limits().as_ref().unwrap()[0].page_size(), "2MB");
    }

    #[test]
    fn bad_input_is_invalid_argument_naming_the_problem() {
        let err = decode(None).unwrap_err();
        assert_eq!(err.code(), Code::INVALID_ARGUMENT);
        assert_eq!(err.to_string(), "update request carries no resources");

        let err = decode(Some(&any(
            "types.containerd.io/opencontainers/runtime-spec/1/WindowsResources",
            "{}",
        )))
        .unwrap_err();
        assert_eq!(err.code(), Code::INVALID_ARGUMENT);
        assert!(err.to_string().contains("WindowsResources"), "{err}");

        let err = decode(Some(&any(LINUX_RESOURCES_TYPE_URL, r#"{"memory":"#))).unwrap_err();
        assert_eq!(err.code(), Code::INVALID_ARGUMENT);
        assert!(
            err.to_string()
                .starts_with("update resources: invalid LinuxResources JSON: "),
            "{err}"
        );

        let err = decode(Some(&any(
            LINUX_RESOURCES_TYPE_URL,
            r#"{"memory":{"limit":"lots"}}"#,
        )))
        .unwrap_err();
        assert_eq!(err.code(), Code::INVALID_ARGUMENT);
        assert!(err.to_string().contains("invalid type"), "{err}");
    }
}
