//! Entering the container's namespaces (helper process, before the fork).
//!
//! Order (as runc's nsexec): open every namespace file first (paths are resolved in the
//! shim's mount namespace), check each one's type with `NS_GET_NSTYPE`, join the user
//! namespace, join the others, then create a new user namespace if asked (the shim writes
//! its id maps while we wait), become root in it, and finally `unshare` every other new
//! namespace at once, so they are owned by the container's user namespace. New pid and time
//! namespaces only apply to children: the caller forks next.
//!
//! An exec ([`join`]) creates nothing: one `setns` on the pidfd of the container's init
//! joins all of its namespaces at once (the kernel enters the user namespace first), and
//! the mount namespace's root, which is the container's root after its pivot_root, becomes
//! the helper's root and cwd.
//!
//! Limitations: joining a mount namespace is refused by the plan; a joined user namespace
//! must map uid and gid 0; an exec into a container whose spec joins the shim's own user
//! namespace by path fails (`setns` refuses to re-enter the caller's user namespace).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, setresgid, setresuid};

use super::error::InitError;
use super::protocol::{FromInit, ToInit, recv_msg, send_msg};
use crate::plan::{InitPlan, NamespaceKind};
use crate::sys;

/// Joins and creates the plan's namespaces. `sock`: the connection to the shim (used for
/// the id-map handshake).
pub(super) fn enter(plan: &InitPlan, sock: BorrowedFd<'_>) -> Result<(), InitError> {
    let joins = open_namespace_files(plan)?;
    // The user namespace first: it decides which capabilities the other joins have.
    for (kind, fd) in joins.iter().filter(|(k, _)| *k == NamespaceKind::User) {
        setns(fd, kind.clone_flag())
            .map_err(InitError::sys("join user namespace", path_of(plan, *kind)))?;
        become_root("joined user namespace")?;
    }
    for (kind, fd) in joins.iter().filter(|(k, _)| *k != NamespaceKind::User) {
        setns(fd, kind.clone_flag()).map_err(InitError::sys(
            format!("join {} namespace", kind.name()),
            path_of(plan, *kind),
        ))?;
    }
    if plan.creates_namespace(NamespaceKind::User) {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(InitError::sys("unshare", "user namespace"))?;
        wait_for_id_maps(sock)?;
        become_root("new user namespace")?;
    }
    let flags = plan
        .namespaces
        .iter()
        .filter(|n| n.path.is_none() && n.kind != NamespaceKind::User)
        .fold(CloneFlags::empty(), |acc, n| acc | n.kind.clone_flag());
    if !flags.is_empty() {
        unshare(flags).map_err(InitError::sys("unshare", format!("namespaces {flags:?}")))?;
    }
    Ok(())
}

/// Joins every namespace of the container init behind `init` (a pidfd), per
/// [`InitPlan::exec_namespaces`]. The new pid namespace applies to the child forked next.
pub(super) fn join(plan: &InitPlan, init: OwnedFd) -> Result<(), InitError> {
    let flags = plan
        .exec_namespaces()
        .into_iter()
        .fold(CloneFlags::empty(), |acc, kind| acc | kind.clone_flag());
    match setns(&init, flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::ESRCH) => Err(init_exited()),
        Err(e) => Err(InitError::sys(
            "join the namespaces of the container init",
            format!("{flags:?}"),
        )(e)),
    }
}

/// The container init is gone: there is nothing to exec into.
pub(super) fn init_exited() -> InitError {
    InitError::Classified {
        kind: crate::launch::ErrorKind::FailedPrecondition,
        message: "the container's init process has exited".into(),
    }
}

fn path_of(plan: &InitPlan, kind: NamespaceKind) -> String {
    plan.namespace(kind)
        .and_then(|n| n.path.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn open_namespace_files(plan: &InitPlan) -> Result<Vec<(NamespaceKind, OwnedFd)>, InitError> {
    let mut out = Vec::new();
    for ns in &plan.namespaces {
        let Some(path) = &ns.path else { continue };
        let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
            if e == nix::errno::Errno::ENOENT {
                InitError::NotFound(format!(
                    "linux.namespaces: {} namespace path {} does not exist",
                    ns.kind.name(),
                    path.display()
                ))
            } else {
                InitError::sys(format!("open {} namespace", ns.kind.name()), path.display())(e)
            }
        })?;
        let actual = sys::namespace_type(fd.as_fd()).map_err(|e| {
            InitError::Invalid(format!(
                "linux.namespaces: {} is not a namespace file: {e}",
                path.display()
            ))
        })?;
        if i64::from(actual) != i64::from(ns.kind.clone_flag().bits()) {
            return Err(InitError::Invalid(format!(
                "linux.namespaces: {} is not a {} namespace",
                path.display(),
                ns.kind.name()
            )));
        }
        out.push((ns.kind, fd));
    }
    Ok(out)
}

fn wait_for_id_maps(sock: BorrowedFd<'_>) -> Result<(), InitError> {
    send_msg(sock, &FromInit::NeedIdMaps).map_err(|source| InitError::Protocol {
        what: "ask the shim for id maps",
        source,
    })?;
    match recv_msg::<ToInit>(sock) {
        Ok(Some(ToInit::IdMapsWritten)) => Ok(()),
        Ok(other) => Err(InitError::Protocol {
            what: "wait for id maps",
            source: std::io::Error::other(format!("unexpected message {other:?}")),
        }),
        Err(source) => Err(InitError::Protocol {
            what: "wait for id maps",
            source,
        }),
    }
}

fn become_root(which: &str) -> Result<(), InitError> {
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    setresgid(root_gid, root_gid, root_gid).map_err(InitError::sys(
        "setresgid(0) in",
        format!("{which} (is gid 0 mapped?)"),
    ))?;
    setresuid(root_uid, root_uid, root_uid).map_err(InitError::sys(
        "setresuid(0) in",
        format!("{which} (is uid 0 mapped?)"),
    ))?;
    Ok(())
}
