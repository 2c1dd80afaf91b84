//! Task events, forwarded to containerd strictly in order.
//!
//! One queue per shim and one task draining it: each event is sent with
//! `containerd.services.events.ttrpc.v1.Events/Forward` and retried in place (with a
//! reconnect) before the next one goes, so a transient failure never reorders
//! TaskStart and TaskExit. [`Events::flush`] lets the server wait until everything
//! queued has been delivered before it exits (containerd sends Shutdown right after
//! Delete; TaskDelete must not die with the process).

use std::time::Duration;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use containerd_shim::protos::ttrpc::context;
use containerd_shim::util::convert_to_any;
use tokio::sync::{mpsc, oneshot};

const ATTEMPTS: u32 = 5;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

enum Msg {
    Event(&'static str, Box<dyn MessageDyn>, Timestamp),
    Flush(oneshot::Sender<()>),
}

/// An event as a test receives it from [`Events::for_test`]: topic and message.
#[cfg(test)]
pub type Published = (&'static str, Box<dyn MessageDyn>);

#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Msg>,
}

struct Forwarder {
    address: String,
    namespace: String,
    client: Option<EventsClient>,
}

impl Forwarder {
    async fn forward(&mut self, req: &ForwardRequest) -> Result<(), String> {
        if self.client.is_none() {
            let client = Client::connect(&self.address)
                .await
                .map_err(|e| format!("connect {}: {e}", self.address))?;
            self.client = Some(EventsClient::new(client));
        }
        let client = self.client.as_ref().ok_or("no client")?;
        let ctx = context::with_timeout(FORWARD_TIMEOUT.as_nanos() as i64);
        client.forward(ctx, req).await.map(|_| ()).map_err(|e| {
            self.client = None;
            e.to_string()
        })
    }

    async fn publish(&mut self, topic: &str, event: Box<dyn MessageDyn>, at: Timestamp) {
        let event = match convert_to_any(event) {
            Ok(any) => any,
            Err(e) => {
                log::warn!("event {topic}: encode: {e}");
                return;
            }
        };
        let req = ForwardRequest {
            envelope: Some(Envelope {
                timestamp: Some(at).into(),
                namespace: self.namespace.clone(),
                topic: topic.to_string(),
                event: Some(event).into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        for attempt in 1..=ATTEMPTS {
            match self.forward(&req).await {
                Ok(()) => return,
                Err(e) if attempt == ATTEMPTS => {
                    log::warn!("event {topic} dropped after {attempt} attempts: {e}");
                }
                Err(e) => {
                    log::debug!("event {topic}: attempt {attempt}: {e}");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
    }
}

impl Events {
    /// Starts the forwarder towards containerd's ttrpc address (`TTRPC_ADDRESS`);
    /// events are published in the containerd namespace `namespace`.
    pub fn start(ttrpc_address: &str, namespace: String) -> Self {
        let address = if ttrpc_address.contains("://") {
            ttrpc_address.to_string()
        } else {
            format!("unix://{ttrpc_address}")
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let mut forwarder = Forwarder {
            address,
            namespace,
            client: None,
        };
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Event(topic, event, at) => forwarder.publish(topic, event, at).await,
                    Msg::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Events { tx }
    }

    /// Queues an event, stamped now.
    pub fn send(&self, topic: &'static str, event: impl MessageDyn) {
        let msg = Msg::Event(topic, Box::new(event), crate::reaper::now());
        if self.tx.send(msg).is_err() {
            log::warn!("event {topic} dropped: forwarder stopped");
        }
    }

    /// An `Events` whose queue ends in the returned receiver instead of containerd, for
    /// tests of what gets published. Needs a tokio runtime.
    #[cfg(test)]
    pub fn for_test() -> (Self, mpsc::UnboundedReceiver<Published>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let (out, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Event(topic, event, _) => {
                        let _ = out.send((topic, event));
                    }
                    Msg::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        (Events { tx }, received)
    }

    /// Waits (at most `timeout`) until every event queued so far has been forwarded.
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok()
            && tokio::time::timeout(timeout, wait).await.is_err()
        {
            log::warn!("events not flushed within {timeout:?}");
        }
    }
}
