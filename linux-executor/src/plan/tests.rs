//! Unit tests of the plan builder, on the spec `ctr run` generates (containerd 1.6).

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use serde_json::{Value, json};

use super::*;

/// The spec `ctr run --rm docker.io/library/busybox:latest c1 sh` writes (trimmed of
/// resources), as JSON.
fn ctr_spec_json() -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0, "additionalGids": [10]},
            "args": ["sh", "-c", "echo hi"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"],
                "effective": ["CAP_CHOWN", "CAP_KILL"],
                "permitted": ["CAP_CHOWN", "CAP_KILL"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "hostname": "c1",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "cgroupsPath": "/default/c1",
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

fn spec_from(value: Value) -> Spec {
    serde_json::from_value(value).expect("test spec parses")
}

fn plan_of(value: Value) -> Result<InitPlan, PlanError> {
    InitPlan::from_spec(&spec_from(value), Path::new("/run/amphi/c1/rootfs"))
}

/// Sets the field at a JSON-pointer-like path, creating object members as needed.
fn with(mut value: Value, pointer: &str, new: Value) -> Value {
    let mut slot = &mut value;
    for key in pointer.split('/').skip(1) {
        slot = &mut slot[key];
    }
    *slot = new;
    value
}

#[test]
fn ctr_default_spec_plans() {
    let plan = plan_of(ctr_spec_json()).expect("ctr spec is valid");
    assert_eq!(plan.rootfs, Path::new("/run/amphi/c1/rootfs"));
    let kinds: Vec<_> = plan.namespaces.iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        [
            NamespaceKind::Mount,
            NamespaceKind::Uts,
            NamespaceKind::Ipc,
            NamespaceKind::Network,
            NamespaceKind::Pid
        ]
    );
    assert!(plan.creates_namespace(NamespaceKind::Pid));
    assert!(!plan.in_user_namespace());
    assert_eq!(plan.hostname.as_deref(), Some("c1"));
    assert_eq!(plan.mounts.len(), 8);
    assert!(plan.setup_dev);
    assert_eq!(plan.devices.len(), 6, "default devices: {:?}", plan.devices);
    assert_eq!(plan.masked_paths.len(), 10);
    assert_eq!(plan.readonly_paths[3], Path::new("/proc/sys"));
    assert_eq!(
        plan.rootfs_propagation,
        Propagation {
            kind: PropagationKind::Slave,
            recursive: true
        }
    );
    assert_eq!(plan.process.args, ["sh", "-c", "echo hi"]);
    assert_eq!(
        plan.process.path_env(),
        Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    );
    assert_eq!(plan.process.user.additional_gids, [10]);
    assert!(plan.process.no_new_privileges);
    assert_eq!(
        plan.process.capabilities.effective,
        ["CAP_CHOWN", "CAP_KILL"]
    );
    assert_eq!(plan.process.capabilities.bounding.len(), 14);
    assert!(plan.process.capabilities.inheritable.is_empty());
    assert!(plan.process.capabilities.ambient.is_empty());
    assert_eq!(plan.process.rlimits[0].name, "RLIMIT_NOFILE");
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn plan_round_trips_through_json() {
    let plan = plan_of(ctr_spec_json()).expect("valid");
    let text = serde_json::to_string(&plan).expect("serializes");
    let back: InitPlan = serde_json::from_str(&text).expect("deserializes");
    assert_eq!(back, plan);
}

#[test]
fn mounts_options_become_flags_and_data() {
    let plan = plan_of(ctr_spec_json()).expect("valid");
    let proc_ = &plan.mounts[0];
    assert_eq!(
        proc_.kind,
        MountKind::Fs {
            fstype: "proc".into(),
            source: "proc".into()
        }
    );
    assert_eq!(
        proc_.ms_flags(),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV
    );
    assert_eq!(proc_.data, "");
    let dev = &plan.mounts[1];
    assert_eq!(dev.ms_flags(), MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
    assert_eq!(dev.data, "mode=755,size=65536k");
    let pts = &plan.mounts[2];
    assert_eq!(pts.data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
    let sys = &plan.mounts[5];
    assert!(sys.readonly());
    assert_eq!(plan.mounts[6].kind, MountKind::Cgroup);
    assert!(plan.mounts[6].readonly());
}

#[test]
fn bind_mounts_ro_rbind_and_propagation() {
    let mut spec = ctr_spec_json();
    spec["mounts"] = json!([
        {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro", "rprivate"]},
        {"destination": "/etc/hosts", "source": "/tmp/hosts", "options": ["bind", "nosuid", "rw"]},
        {"destination": "/x", "type": "none", "source": "/tmp/x", "options": ["bind", "ro", "rw"]}
    ]);
    let plan = plan_of(spec).expect("valid");
    assert_eq!(
        plan.mounts[0].kind,
        MountKind::Bind {
            source: PathBuf::from("/srv/data"),
            recursive: true
        }
    );
    assert!(plan.mounts[0].readonly());
    assert_eq!(
        plan.mounts[0].propagation,
        Some(Propagation {
            kind: PropagationKind::Private,
            recursive: true
        })
    );
    assert_eq!(
        plan.mounts[1].kind,
        MountKind::Bind {
            source: PathBuf::from("/tmp/hosts"),
            recursive: false
        }
    );
    assert_eq!(plan.mounts[1].ms_flags(), MsFlags::MS_NOSUID);
    assert!(!plan.mounts[2].readonly(), "a later rw cancels ro");
}

#[test]
fn bind_of_dev_disables_device_setup() {
    let mut spec = ctr_spec_json();
    spec["mounts"] =
        json!([{"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]}]);
    let plan = plan_of(spec).expect("valid");
    assert!(!plan.setup_dev);
    assert!(plan.devices.is_empty());
}

#[test]
fn bad_mounts_are_rejected_naming_the_field() {
    let cases = [
        (
            json!({"destination": "proc", "type": "proc"}),
            "mounts[0].destination \"proc\"",
        ),
        (
            json!({"destination": "/a/../b", "type": "tmpfs"}),
            "must be an absolute path",
        ),
        (
            json!({"destination": "/a", "source": "rel", "options": ["bind"]}),
            "bind source \"rel\"",
        ),
        (
            json!({"destination": "/a", "options": ["bind"]}),
            "needs a source",
        ),
        (
            json!({"destination": "/a", "type": "tmpfs", "options": ["rro"]}),
            "unsupported mount option \"rro\"",
        ),
        (
            json!({"destination": "/a", "source": "/b", "options": ["bind", "idmap"]}),
            "\"idmap\"",
        ),
        (
            json!({"destination": "/a", "source": "/b", "options": ["bind", "mode=7"]}),
            "unknown mount options",
        ),
        (json!({"destination": "/a"}), "type is required"),
    ];
    for (mount, expected) in cases {
        let mut spec = ctr_spec_json();
        spec["mounts"] = json!([mount]);
        let err = plan_of(spec).expect_err("invalid mount");
        assert!(
            err.to_string().contains(expected),
            "{err} should contain {expected}"
        );
    }
}

#[test]
fn tmpcopyup_is_refused() {
    let mut spec = ctr_spec_json();
    spec["mounts"] = json!([{"destination": "/t", "type": "tmpfs", "options": ["tmpcopyup"]}]);
    let err = plan_of(spec).expect_err("tmpcopyup cannot be honoured");
    assert!(err.to_string().contains("tmpcopyup"), "{err}");
}

#[test]
fn namespaces_new_path_and_duplicates() {
    let spec = with(
        ctr_spec_json(),
        "/linux/namespaces",
        json!([{"type": "mount"}, {"type": "network", "path": "/proc/42/ns/net"}, {"type": "user"}]),
    );
    let spec = with(
        spec,
        "/linux/uidMappings",
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
    );
    let spec = with(
        spec,
        "/linux/gidMappings",
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
    );
    let mut spec = spec;
    spec.as_object_mut().expect("object").remove("hostname");
    let plan = plan_of(spec).expect("valid");
    assert_eq!(
        plan.namespaces[0].kind,
        NamespaceKind::User,
        "user namespace first"
    );
    assert_eq!(
        plan.namespace(NamespaceKind::Network)
            .and_then(|n| n.path.clone()),
        Some(PathBuf::from("/proc/42/ns/net"))
    );
    assert!(plan.in_user_namespace());
    assert_eq!(id_map_text(&plan.uid_mappings), "0 100000 65536\n");

    let dup = with(
        ctr_spec_json(),
        "/linux/namespaces",
        json!([{"type": "mount"}, {"type": "pid"}, {"type": "pid"}]),
    );
    assert_eq!(plan_of(dup), Err(PlanError::DuplicateNamespace("pid")));

    let no_mnt = with(
        ctr_spec_json(),
        "/linux/namespaces",
        json!([{"type": "pid"}, {"type": "uts"}]),
    );
    assert_eq!(plan_of(no_mnt), Err(PlanError::MountNamespaceRequired));

    let joined_mnt = with(
        ctr_spec_json(),
        "/linux/namespaces",
        json!([{"type": "mount", "path": "/proc/1/ns/mnt"}, {"type": "uts"}]),
    );
    assert_eq!(plan_of(joined_mnt), Err(PlanError::MountNamespaceRequired));

    let relative = with(
        ctr_spec_json(),
        "/linux/namespaces",
        json!([{"type": "mount"}, {"type": "uts", "path": "ns/uts"}]),
    );
    let err = plan_of(relative).expect_err("relative ns path");
    assert!(err.to_string().contains("uts namespace path"), "{err}");
}

#[test]
fn unknown_namespace_type_is_rejected_when_parsing_the_spec() {
    let spec = with(
        ctr_spec_json(),
        "/linux/namespaces",
        json!([{"type": "mount"}, {"type": "bogus"}]),
    );
    assert!(serde_json::from_value::<Spec>(spec).is_err());
}

#[test]
fn id_mappings_are_checked() {
    let base = with(
        ctr_spec_json(),
        "/linux/namespaces",
        json!([{"type": "mount"}, {"type": "user"}, {"type": "uts"}]),
    );
    let err = plan_of(base.clone()).expect_err("no mappings");
    assert!(
        err.to_string().contains("both uid and gid mappings"),
        "{err}"
    );

    let maps = json!([{"containerID": 0, "hostID": 100000, "size": 1000}]);
    let spec = with(
        with(base.clone(), "/linux/uidMappings", maps.clone()),
        "/linux/gidMappings",
        maps.clone(),
    );
    let spec = with(spec, "/process/user/uid", json!(1000));
    let err = plan_of(spec).expect_err("uid 1000 unmapped");
    assert!(
        err.to_string()
            .contains("process.user.uid 1000 is not mapped"),
        "{err}"
    );

    let spec = with(
        with(base, "/linux/uidMappings", maps.clone()),
        "/linux/gidMappings",
        maps.clone(),
    );
    assert!(plan_of(spec).is_ok());

    let host = with(ctr_spec_json(), "/linux/uidMappings", maps);
    let err = plan_of(host).expect_err("mappings without userns");
    assert!(
        err.to_string().contains("need a new user namespace"),
        "{err}"
    );
}

#[test]
fn masked_and_readonly_paths_must_be_absolute() {
    let spec = with(ctr_spec_json(), "/linux/maskedPaths", json!(["proc/kcore"]));
    assert_eq!(
        plan_of(spec),
        Err(PlanError::BadPath {
            field: "linux.maskedPaths",
            path: PathBuf::from("proc/kcore")
        })
    );
    let spec = with(
        ctr_spec_json(),
        "/linux/readonlyPaths",
        json!(["/proc/../etc"]),
    );
    let err = plan_of(spec).expect_err("dotdot");
    assert!(
        err.to_string().starts_with("linux.readonlyPaths entry"),
        "{err}"
    );
}

#[test]
fn capabilities_parse_and_unknown_names_fail() {
    assert_eq!(
        capability_from_name("CAP_SYS_ADMIN"),
        Ok(caps::Capability::CAP_SYS_ADMIN)
    );
    assert_eq!(
        capability_from_name("net_raw"),
        Ok(caps::Capability::CAP_NET_RAW)
    );
    let err = capability_from_name("CAP_MAKE_COFFEE").expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "process.capabilities: unknown capability \"CAP_MAKE_COFFEE\""
    );

    let mut spec = ctr_spec_json();
    spec["process"]["capabilities"]["ambient"] = json!(["CAP_NET_BIND_SERVICE"]);
    spec["process"]["capabilities"]["inheritable"] = json!(["NET_BIND_SERVICE"]);
    let plan = plan_of(spec).expect("valid");
    assert_eq!(plan.process.capabilities.ambient, ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(
        plan.process.capabilities.inheritable,
        ["CAP_NET_BIND_SERVICE"]
    );

    let mut spec = ctr_spec_json();
    spec["process"]
        .as_object_mut()
        .expect("object")
        .remove("capabilities");
    let plan = plan_of(spec).expect("valid");
    assert_eq!(plan.process.capabilities, CapabilitiesPlan::default());
    assert!(plan.warnings[0].contains("no capability"));
}

#[test]
fn rlimits_unknown_duplicate_and_soft_above_hard() {
    assert_eq!(
        rlimit_resource_from_name("RLIMIT_NOPE"),
        Err(PlanError::UnknownRlimit("RLIMIT_NOPE".into()))
    );
    assert!(rlimit_resource_from_name("RLIMIT_RTTIME").is_ok());
    let dup = with(
        ctr_spec_json(),
        "/process/rlimits",
        json!([{"type": "RLIMIT_CORE", "hard": 1, "soft": 1}, {"type": "RLIMIT_CORE", "hard": 2, "soft": 2}]),
    );
    assert_eq!(
        plan_of(dup),
        Err(PlanError::DuplicateRlimit("RLIMIT_CORE".into()))
    );
    let inverted = with(
        ctr_spec_json(),
        "/process/rlimits",
        json!([{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 20}]),
    );
    let err = plan_of(inverted).expect_err("soft > hard");
    assert!(
        err.to_string().contains("RLIMIT_NOFILE soft limit 20"),
        "{err}"
    );
    let unknown = with(
        ctr_spec_json(),
        "/process/rlimits",
        json!([{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}]),
    );
    assert!(
        serde_json::from_value::<Spec>(unknown).is_err(),
        "oci-spec rejects unknown types"
    );
}

#[test]
fn process_fields_are_required() {
    let mut no_process = ctr_spec_json();
    no_process
        .as_object_mut()
        .expect("object")
        .remove("process");
    assert_eq!(plan_of(no_process), Err(PlanError::MissingProcess));

    assert_eq!(
        plan_of(with(ctr_spec_json(), "/process/args", json!([]))),
        Err(PlanError::EmptyArgs)
    );
    assert_eq!(
        plan_of(with(ctr_spec_json(), "/process/cwd", json!("work"))),
        Err(PlanError::RelativeCwd(PathBuf::from("work")))
    );
    assert_eq!(
        plan_of(with(ctr_spec_json(), "/process/env", json!(["NOEQUALS"]))),
        Err(PlanError::BadEnv("NOEQUALS".into()))
    );
    assert_eq!(
        plan_of(with(ctr_spec_json(), "/process/args", json!(["a\u{0}b"]))),
        Err(PlanError::NulByte("process.args"))
    );
    let mut no_linux = ctr_spec_json();
    no_linux.as_object_mut().expect("object").remove("linux");
    assert_eq!(plan_of(no_linux), Err(PlanError::MissingLinux));
    assert_eq!(
        InitPlan::from_spec(&spec_from(ctr_spec_json()), Path::new("rootfs")),
        Err(PlanError::RelativeRootfs(PathBuf::from("rootfs")))
    );
}

#[test]
fn terminal_and_console_size_are_planned() {
    let plan = plan_of(ctr_spec_json()).expect("plan");
    assert!(!plan.process.terminal);
    assert_eq!(plan.process.console_size, None);
    let spec = with(ctr_spec_json(), "/process/terminal", json!(true));
    let spec = with(
        spec,
        "/process/consoleSize",
        json!({"height": 40, "width": 132}),
    );
    let plan = plan_of(spec).expect("plan with a terminal");
    assert!(plan.process.terminal);
    assert_eq!(plan.process.console_size, Some((40, 132)));
    // A zero size is no size (ctr and CRI send one before they know the client's).
    let spec = with(
        ctr_spec_json(),
        "/process/consoleSize",
        json!({"height": 0, "width": 80}),
    );
    assert_eq!(plan_of(spec).expect("plan").process.console_size, None);
    let spec = with(
        ctr_spec_json(),
        "/process/consoleSize",
        json!({"height": 70000, "width": 80}),
    );
    let err = plan_of(spec).expect_err("too tall");
    assert_eq!(
        err,
        PlanError::BadConsoleSize {
            height: 70000,
            width: 80
        }
    );
    assert!(err.to_string().contains("process.consoleSize"), "{err}");
}

#[test]
fn hostname_needs_uts_namespace() {
    let spec = with(
        ctr_spec_json(),
        "/linux/namespaces",
        json!([{"type": "mount"}, {"type": "pid"}]),
    );
    assert_eq!(
        plan_of(spec.clone()),
        Err(PlanError::NameWithoutUts("hostname"))
    );
    let mut spec = spec;
    spec["hostname"] = json!("");
    assert!(plan_of(spec).is_ok(), "an empty hostname is no hostname");
}

#[test]
fn devices_merge_with_defaults() {
    let mut spec = ctr_spec_json();
    spec["linux"]["devices"] = json!([
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 420}
    ]);
    let plan = plan_of(spec).expect("valid");
    assert_eq!(plan.devices.len(), 7);
    let null = plan
        .devices
        .iter()
        .find(|d| d.path == Path::new("/dev/null"))
        .expect("null");
    assert_eq!(null.mode, 0o644, "the spec overrides the default");
    let fuse = plan
        .devices
        .iter()
        .find(|d| d.path == Path::new("/dev/fuse"))
        .expect("fuse");
    assert_eq!(
        (fuse.kind, fuse.major, fuse.minor),
        (DeviceKind::Char, 10, 229)
    );

    let mut spec = ctr_spec_json();
    spec["linux"]["devices"] = json!([{"path": "/etc/evil", "type": "c", "major": 1, "minor": 1}]);
    let err = plan_of(spec).expect_err("outside /dev");
    assert!(
        err.to_string()
            .contains("linux.devices entry \"/etc/evil\""),
        "{err}"
    );
}

#[test]
fn sysctls_and_propagation_are_validated() {
    let spec = with(
        ctr_spec_json(),
        "/linux/sysctl",
        json!({"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}),
    );
    let plan = plan_of(spec).expect("valid");
    assert_eq!(plan.sysctls[0].0, "kernel.shm_rmid_forced");
    let bad = with(
        ctr_spec_json(),
        "/linux/sysctl",
        json!({"net/../../etc": "1"}),
    );
    assert!(matches!(plan_of(bad), Err(PlanError::BadSysctl(_))));
    let spec = with(
        ctr_spec_json(),
        "/linux/rootfsPropagation",
        json!("rshared"),
    );
    assert_eq!(
        plan_of(spec).expect("valid").rootfs_propagation.ms_flags(),
        MsFlags::MS_SHARED | MsFlags::MS_REC
    );
    let bad = with(
        ctr_spec_json(),
        "/linux/rootfsPropagation",
        json!("sideways"),
    );
    assert_eq!(
        plan_of(bad),
        Err(PlanError::BadRootfsPropagation("sideways".into()))
    );
}

#[test]
fn unimplemented_settings_are_refused_naming_the_field() {
    for (path, value, field) in [
        (
            "linux.personality",
            json!({"domain": "LINUX"}),
            "linux.personality",
        ),
        (
            "linux.timeOffsets",
            json!({"monotonic": {"secs": 1}}),
            "linux.timeOffsets",
        ),
        (
            "process.ioPriority",
            json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0}),
            "process.ioPriority",
        ),
        (
            "hooks",
            json!({"prestart": [{"path": "/bin/true"}]}),
            "hooks",
        ),
    ] {
        let mut spec = ctr_spec_json();
        let mut keys = path.split('.');
        let first = keys.next().expect("a key");
        match keys.next() {
            Some(second) => spec[first][second] = value,
            None => spec[first] = value,
        }
        assert_eq!(plan_of(spec), Err(PlanError::Unsupported(field)), "{path}");
    }
    // The exec's process is checked the same way.
    let container = plan_of(ctr_spec_json()).expect("container plans");
    let process: oci_spec::runtime::Process = serde_json::from_value(json!({
        "args": ["ls"], "cwd": "/", "user": {"uid": 0, "gid": 0},
        "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4}
    }))
    .expect("process parses");
    assert_eq!(
        container.for_exec(&process),
        Err(PlanError::Unsupported("process.ioPriority"))
    );
}

#[test]
fn seccomp_is_planned() {
    let mut spec = ctr_spec_json();
    spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ERRNO"});
    let plan = plan_of(spec).expect("valid");
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert_eq!(
        plan.seccomp.map(|s| s.default_action),
        Some(SeccompAction::Errno(DEFAULT_ERRNO))
    );
}

#[test]
fn an_exec_plan_keeps_the_container_and_swaps_the_process() {
    let mut spec = ctr_spec_json();
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
    });
    let container = plan_of(spec).expect("container plans");
    assert!(container.seccomp.is_some());
    let process: oci_spec::runtime::Process = serde_json::from_value(json!({
        "args": ["ls", "-l"], "cwd": "/tmp", "env": ["A=1"],
        "user": {"uid": 7, "gid": 8},
        "selinuxLabel": "system_u:system_r:container_t:s0"
    }))
    .expect("process parses");
    let exec = container.for_exec(&process).expect("exec plans");
    assert_eq!(exec.process.args, ["ls", "-l"]);
    assert_eq!(exec.process.cwd, Path::new("/tmp"));
    assert_eq!((exec.process.user.uid, exec.process.user.gid), (7, 8));
    assert_eq!(exec.rootfs, container.rootfs);
    assert_eq!(exec.mounts, container.mounts);
    assert_eq!(exec.workload, Workload::Exec);
    // The container's seccomp filter applies to its execs, as with runc.
    assert_eq!(exec.seccomp, container.seccomp);
    // The exec's own warnings only (no capabilities), not the container's; its label is
    // planned, not dropped.
    assert_eq!(exec.warnings.len(), 1, "{:?}", exec.warnings);
    assert_eq!(
        exec.process.selinux_label.as_deref(),
        Some("system_u:system_r:container_t:s0")
    );
    // Every namespace of the container is joined, user first when present.
    assert_eq!(
        exec.exec_namespaces(),
        container
            .namespaces
            .iter()
            .map(|n| n.kind)
            .collect::<Vec<_>>()
    );
    let bad: oci_spec::runtime::Process =
        serde_json::from_value(json!({"args": ["ls"], "cwd": "rel", "user": {"uid": 0, "gid": 0}}))
            .expect("process parses");
    assert!(matches!(
        container.for_exec(&bad),
        Err(PlanError::RelativeCwd(_))
    ));
}

#[test]
fn an_exec_user_must_be_mapped_in_a_new_user_namespace() {
    let mut spec = ctr_spec_json();
    spec["process"]["user"] = json!({"uid": 0, "gid": 0});
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({"type": "user"}));
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 1000}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 1000}]);
    let container = plan_of(spec).expect("container plans");
    assert_eq!(container.exec_namespaces()[0], NamespaceKind::User);
    let unmapped: oci_spec::runtime::Process = serde_json::from_value(
        json!({"args": ["ls"], "cwd": "/", "user": {"uid": 5000, "gid": 0}}),
    )
    .expect("process parses");
    assert!(matches!(
        container.for_exec(&unmapped),
        Err(PlanError::IdMappings(_))
    ));
}
