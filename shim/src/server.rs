//! Server mode: the long-lived shim process containerd talks ttrpc to.
//!
//! Order matters: become a child subreaper and start the reaper before anything can
//! spawn; connect the event publisher; bind the socket (or find that a live shim already
//! serves this group and leave); register one Task implementation under both service
//! names; tell `start` we are up; serve until the last container is gone.

use std::collections::HashMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use containerd_shim::ExitSignal;
use containerd_shim::Flags;
use containerd_shim::protos::shim_async::{Task, create_task};
use containerd_shim::protos::ttrpc::r#async::transport::Listener;
use containerd_shim::protos::ttrpc::r#async::{Server, Service as TtrpcService};
use tokio::signal::unix::{SignalKind, signal};

use crate::error::{Error, Result};
use crate::image::ContainerdApi;
use crate::reaper;
use crate::service::Service;
use crate::task::{Events, Tasks};

const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";
/// containerd gives Shutdown 3 s; leave it time to see us go.
const EVENTS_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The Task service under both names containerd may call it by: v3 (containerd 2.x) and
/// v2 (containerd 1.6/1.7, and 2.x for shims that answered `start` with version 2).
pub fn task_services(task: Arc<dyn Task + Send + Sync>) -> HashMap<String, TtrpcService> {
    let mut services = create_task(task.clone());
    let v2 = create_task(task)
        .remove(TASK_V3)
        .map(|service| (TASK_V2.to_string(), service));
    services.extend(v2);
    services
}

pub fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// Binds the shim socket; `None` when a live shim already listens there (a grouped
/// container whose server is running).
fn bind(address: &str) -> Result<Option<UnixListener>> {
    let path = socket_path(address);
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir.display(), e))?;
    }
    match UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(path).map_err(|e| Error::io("remove stale socket", path, e))?;
            UnixListener::bind(path)
                .map(Some)
                .map_err(|e| Error::io("bind", path, e))
        }
        Err(e) => Err(Error::io("bind", path, e)),
    }
    .inspect(|l| {
        if l.is_some() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    })
}

/// Releases `start`, which copies our stdout until EOF: point stdout at stderr
/// (/dev/null) so the pipe closes.
fn signal_started() -> Result<()> {
    nix::unistd::dup2_stdout(std::io::stderr()).map_err(|e| Error::io("dup2", "stdout", e.into()))
}

pub async fn serve(flags: &Flags) -> Result<()> {
    if flags.socket.is_empty() {
        return Err(Error::InvalidArgument(
            "-socket is required in server mode".into(),
        ));
    }
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .map_err(|e| Error::io("open", "log fifo", std::io::Error::other(e)))?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::io("prctl", "PR_SET_CHILD_SUBREAPER", e.into()))?;
    let mut exits = reaper::start().map_err(|e| Error::io("watch", "SIGCHLD", e))?;

    let Some(listener) = bind(&flags.socket)? else {
        log::info!("a shim already serves {}", flags.socket);
        return signal_started();
    };

    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| {
        Error::InvalidArgument("TTRPC_ADDRESS is not set: cannot publish events".into())
    })?;
    let events = Events::start(&ttrpc_address, flags.namespace.clone());
    let containerd = ContainerdApi {
        address: flags.address.clone(),
        namespace: flags.namespace.clone(),
    };
    let tasks = Arc::new(Tasks::new(events.clone(), containerd));
    let reaped = tasks.clone();
    tokio::spawn(async move {
        while let Some(exit) = exits.recv().await {
            reaped.on_exit(exit);
        }
    });

    let exit = Arc::new(ExitSignal::default());
    let service = Service {
        tasks,
        exit: exit.clone(),
    };
    let listener =
        Listener::try_from(listener).map_err(|e| Error::io("listen", &flags.socket, e))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(task_services(Arc::new(service)));
    server
        .start()
        .await
        .map_err(|e| Error::io("serve", &flags.socket, std::io::Error::other(e)))?;
    signal_started()?;
    log::info!("amphi {} serving {}", crate::VERSION, flags.socket);

    let on_signal = exit.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut pipe)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::pipe()),
        ) else {
            log::warn!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                // Handled (and so ignored) rather than fatal: a closed FIFO must not kill us.
                _ = pipe.recv() => continue,
            }
        }
        log::info!("signalled, shutting down");
        on_signal.signal();
    });

    exit.wait().await;
    // TaskDelete of the last container is still queued when Shutdown arrives.
    events.flush(EVENTS_FLUSH_TIMEOUT).await;
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(socket_path(&flags.socket));
    Ok(())
}
