//! Wakes long-polling syncs: a watch channel of the newest committed positions of every sync
//! stream. Writers poke it after their batch is committed; a waiting `/sync` subscribes before
//! it reads the streams, so no change between its read and its wait is missed.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// The newest committed position of each stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamPositions {
    /// Room events (the rooms service's stream positions).
    pub events: u64,
    /// Account data changes (their own counter).
    pub account_data: u64,
}

pub struct Notifier {
    sender: watch::Sender<StreamPositions>,
    shutting_down: AtomicBool,
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Notifier {
    pub fn new() -> Self {
        Self { sender: watch::Sender::new(StreamPositions::default()), shutting_down: AtomicBool::new(false) }
    }

    /// A receiver that sees every change made after this call.
    pub fn subscribe(&self) -> watch::Receiver<StreamPositions> {
        self.sender.subscribe()
    }

    /// The server is stopping: wakes every waiting sync, and no sync waits from now on, so
    /// long-polls do not hold the graceful shutdown.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.sender.send_modify(|_| {});
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Wakes waiting syncs after a change to a stream that is not tracked here (to-device
    /// messages, device keys): they read every stream again.
    pub fn poke(&self) {
        self.sender.send_modify(|_| {});
    }

    /// Records that room events up to `position` are committed.
    pub fn events_committed(&self, position: u64) {
        self.sender.send_if_modified(|positions| {
            let newer = position > positions.events;
            if newer {
                positions.events = position;
            }
            newer
        });
    }

    /// Records that account data changes up to `position` are committed.
    pub fn account_data_committed(&self, position: u64) {
        self.sender.send_if_modified(|positions| {
            let newer = position > positions.account_data;
            if newer {
                positions.account_data = position;
            }
            newer
        });
    }
}
