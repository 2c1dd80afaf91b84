//! One ordered queue of task events per shim, forwarded to containerd by one task, so
//! events leave in the order the state machine produced them.

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;
use tokio::sync::mpsc;

type Item = (&'static str, Box<dyn MessageDyn>);

#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Item>,
}

impl Events {
    /// Starts the forwarder; events are published in the containerd namespace `namespace`.
    pub fn start(publisher: RemotePublisher, namespace: String) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
        tokio::spawn(async move {
            while let Some((topic, event)) = rx.recv().await {
                if let Err(e) = publisher
                    .publish(Context::default(), topic, &namespace, event)
                    .await
                {
                    log::warn!("publish {topic}: {e}");
                }
            }
        });
        Events { tx }
    }

    pub fn send(&self, topic: &'static str, event: impl MessageDyn) {
        if self.tx.send((topic, Box::new(event))).is_err() {
            log::warn!("event {topic} dropped: publisher stopped");
        }
    }
}
