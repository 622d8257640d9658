//! The bounded event history and fan-out that watches replay from and listen to.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Event, Revision, StoreError, Subscription};

/// Recent events (at most `limit`) plus a broadcast channel for live ones.
#[derive(Debug)]
pub struct History {
    events: VecDeque<Arc<Event>>,
    limit: usize,
    tx: broadcast::Sender<Arc<Event>>,
    /// Revision at which this history started (nothing before it is replayable).
    start: Revision,
}

impl History {
    /// An empty history starting at revision `start`.
    pub fn new(limit: usize, start: Revision) -> Self {
        let (tx, _) = broadcast::channel(limit.max(16));
        History { events: VecDeque::new(), limit, tx, start }
    }

    /// Records and broadcasts an event.
    pub fn push(&mut self, event: Event) {
        let event = Arc::new(event);
        if self.events.len() >= self.limit {
            if let Some(old) = self.events.pop_front() {
                self.start = old.rev;
            }
        }
        self.events.push_back(event.clone());
        let _ = self.tx.send(event);
    }

    /// Subscribes after `from`: the events with rev > from under `prefix`, then live.
    pub fn subscribe(&self, prefix: &str, from: Revision, current: Revision) -> Result<Subscription, StoreError> {
        if from < self.start && from < current {
            return Err(StoreError::Expired { requested: from, oldest: self.start });
        }
        let backlog = self
            .events
            .iter()
            .filter(|e| e.rev > from && e.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok(Subscription { backlog, rx: self.tx.subscribe(), revision: current })
    }

    /// The oldest revision a list or watch can start from.
    pub fn start(&self) -> Revision {
        self.start
    }

    /// The kept events with a revision above `rev`, oldest first.
    pub fn after(&self, rev: Revision) -> impl DoubleEndedIterator<Item = &Arc<Event>> {
        self.events.iter().filter(move |e| e.rev > rev)
    }

    /// A live-only subscription (the caller supplies the backlog).
    pub fn receiver(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
