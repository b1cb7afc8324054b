//! In-memory fan-out of committed events to watchers, with a window of recent events for
//! replay. Publishing never blocks: a watcher whose buffer is full is dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use super::{Event, StoreError};

struct Subscriber {
    prefix: String,
    tx: mpsc::Sender<Event>,
    dropped: Arc<AtomicBool>,
}

/// Recent events and live subscribers.
pub struct Hub {
    window: VecDeque<Event>,
    window_size: usize,
    subs: Vec<Subscriber>,
    buffer: usize,
    closed: bool,
}

/// A stream of events for one watcher.
pub struct Watch {
    replay: VecDeque<Event>,
    rx: mpsc::Receiver<Event>,
    dropped: Arc<AtomicBool>,
    ended: bool,
    /// Applied to every event before it is handed out (a layer over the store, such as
    /// encryption at rest, sees its values through it).
    map: Option<EventMap>,
}

/// A change applied to each event of a [`Watch`].
pub type EventMap = Arc<dyn Fn(&mut Event) + Send + Sync>;

impl Watch {
    /// This watch with `f` applied to each event it yields.
    pub fn map_events(mut self, f: EventMap) -> Watch {
        self.map = Some(f);
        self
    }

    /// The next event; `None` after the store closed, an error if the watcher was too slow.
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        let mut event = self.next_raw().await;
        if let (Some(Ok(e)), Some(f)) = (&mut event, &self.map) {
            f(e);
        }
        event
    }

    async fn next_raw(&mut self) -> Option<Result<Event, StoreError>> {
        if let Some(e) = self.replay.pop_front() {
            return Some(Ok(e));
        }
        if self.ended {
            return None;
        }
        match self.rx.recv().await {
            Some(e) => Some(Ok(e)),
            None => {
                self.ended = true;
                if self.dropped.load(Ordering::Acquire) { Some(Err(StoreError::WatcherTooSlow)) } else { None }
            }
        }
    }
}

impl Hub {
    pub fn new(window_size: usize, buffer: usize) -> Self {
        Hub { window: VecDeque::new(), window_size, subs: Vec::new(), buffer: buffer.max(1), closed: false }
    }

    /// The oldest revision the memory window can replay after (events > it are all held).
    pub fn window_start(&self) -> Option<u64> {
        self.window.front().map(|e| e.revision.saturating_sub(1))
    }

    /// Publishes committed events in revision order.
    pub fn publish(&mut self, events: &[Event]) {
        for e in events {
            self.subs.retain(|s| {
                if !e.kv.key.starts_with(&s.prefix) {
                    return !s.tx.is_closed();
                }
                match s.tx.try_send(e.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.dropped.store(true, Ordering::Release);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            self.window.push_back(e.clone());
            while self.window.len() > self.window_size {
                self.window.pop_front();
            }
        }
    }

    /// Registers a watcher that first replays `replay` (events after its start revision that
    /// are older than the window), then the window's events after `after`, then live events.
    pub fn subscribe(&mut self, prefix: &str, after: u64, mut replay: VecDeque<Event>) -> Watch {
        let last_replayed = replay.back().map(|e| e.revision).unwrap_or(after).max(after);
        for e in &self.window {
            if e.revision > last_replayed && e.kv.key.starts_with(prefix) {
                replay.push_back(e.clone());
            }
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let dropped = Arc::new(AtomicBool::new(false));
        if !self.closed {
            self.subs.push(Subscriber { prefix: prefix.to_string(), tx, dropped: dropped.clone() });
        }
        Watch { replay, rx, dropped, ended: false, map: None }
    }

    /// Ends every watch.
    pub fn close(&mut self) {
        self.closed = true;
        self.subs.clear();
    }
}
