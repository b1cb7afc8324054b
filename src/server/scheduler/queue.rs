//! The scheduling queue, as upstream's: an *active* heap ordered by priority then arrival, a
//! *backoff* set of pods waiting out a delay that doubles with each failed attempt (1 s to
//! 10 s), and an *unschedulable* set of pods that wait for the cluster to change (or five
//! minutes) before they are tried again.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::runtime::Key;

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried after this long even without a cluster change.
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(300);

#[derive(PartialEq, Eq)]
struct Entry {
    priority: i32,
    seq: u64,
    key: Key,
}

impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority.cmp(&o.priority).then_with(|| o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff(Instant, u64),
    Unschedulable,
}

/// Pods waiting to be scheduled.
#[derive(Default)]
pub struct SchedulingQueue {
    active: BinaryHeap<Entry>,
    backoff: BTreeMap<(Instant, u64), Key>,
    unschedulable: HashMap<Key, Instant>,
    place: HashMap<Key, Where>,
    priority: HashMap<Key, i32>,
    attempts: HashMap<Key, u32>,
    seq: u64,
}

impl SchedulingQueue {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push_active(&mut self, key: Key) {
        let priority = self.priority.get(&key).copied().unwrap_or(0);
        let seq = self.next_seq();
        self.place.insert(key.clone(), Where::Active);
        self.active.push(Entry { priority, seq, key });
    }

    fn backoff_for(&self, key: &Key) -> Duration {
        let n = self.attempts.get(key).copied().unwrap_or(1).max(1);
        INITIAL_BACKOFF.saturating_mul(1 << (n - 1).min(8)).min(MAX_BACKOFF)
    }

    fn take_out(&mut self, key: &Key) {
        match self.place.remove(key) {
            Some(Where::Backoff(at, seq)) => {
                self.backoff.remove(&(at, seq));
            }
            Some(Where::Unschedulable) => {
                self.unschedulable.remove(key);
            }
            // Stale heap entries are skipped when popped.
            Some(Where::Active) | None => {}
        }
    }

    /// A new or changed pending pod: it goes to the active heap unless already waiting there.
    pub fn add(&mut self, key: Key, priority: i32) {
        self.priority.insert(key.clone(), priority);
        if self.place.get(&key) == Some(&Where::Active) {
            return;
        }
        self.take_out(&key);
        self.push_active(key);
    }

    /// Whether the pod waits anywhere in the queue.
    pub fn contains(&self, key: &Key) -> bool {
        self.place.contains_key(key)
    }

    /// The pod is gone or bound: forget it.
    pub fn remove(&mut self, key: &Key) {
        self.take_out(key);
        self.priority.remove(key);
        self.attempts.remove(key);
    }

    /// An attempt found no node: wait for a cluster change.
    pub fn unschedulable(&mut self, key: Key) {
        *self.attempts.entry(key.clone()).or_default() += 1;
        self.take_out(&key);
        self.place.insert(key.clone(), Where::Unschedulable);
        self.unschedulable.insert(key, Instant::now());
    }

    /// An attempt failed for another reason (e.g. binding): retry after the backoff.
    pub fn retry(&mut self, key: Key) {
        *self.attempts.entry(key.clone()).or_default() += 1;
        self.take_out(&key);
        let at = Instant::now() + self.backoff_for(&key);
        let seq = self.next_seq();
        self.place.insert(key.clone(), Where::Backoff(at, seq));
        self.backoff.insert((at, seq), key);
    }

    /// The cluster changed in a way that may help: unschedulable pods move on, to the active
    /// heap when their backoff has passed, to the backoff set otherwise.
    pub fn cluster_changed(&mut self) {
        let keys: Vec<(Key, Instant)> = self.unschedulable.drain().collect();
        for (key, since) in keys {
            self.place.remove(&key);
            let at = since + self.backoff_for(&key);
            if at <= Instant::now() {
                self.push_active(key);
            } else {
                let seq = self.next_seq();
                self.place.insert(key.clone(), Where::Backoff(at, seq));
                self.backoff.insert((at, seq), key);
            }
        }
    }

    /// The next pod to try, after moving expired backoffs and stale unschedulable pods.
    pub fn pop(&mut self) -> Option<Key> {
        let now = Instant::now();
        while let Some(((at, seq), _)) = self.backoff.first_key_value() {
            if *at > now {
                break;
            }
            let (at, seq) = (*at, *seq);
            if let Some(key) = self.backoff.remove(&(at, seq)) {
                self.place.remove(&key);
                self.push_active(key);
            }
        }
        let stale: Vec<Key> = self
            .unschedulable
            .iter()
            .filter(|(_, t)| t.elapsed() >= UNSCHEDULABLE_FLUSH)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.unschedulable.remove(&key);
            self.place.remove(&key);
            self.push_active(key);
        }
        while let Some(e) = self.active.pop() {
            if self.place.get(&e.key) == Some(&Where::Active) {
                self.place.remove(&e.key);
                return Some(e.key);
            }
        }
        None
    }

    /// When the earliest backoff ends.
    pub fn next_wake(&self) -> Option<Instant> {
        self.backoff.first_key_value().map(|((at, _), _)| *at)
    }

    /// Pods waiting: (active, backoff, unschedulable).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let active = self.place.values().filter(|w| **w == Where::Active).count();
        (active, self.backoff.len(), self.unschedulable.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_then_arrival() {
        let mut q = SchedulingQueue::default();
        q.add(Key::new("a", "low"), 0);
        q.add(Key::new("a", "high"), 10);
        q.add(Key::new("a", "low2"), 0);
        q.add(Key::new("a", "low"), 0);
        assert_eq!(q.pop(), Some(Key::new("a", "high")));
        assert_eq!(q.pop(), Some(Key::new("a", "low")));
        assert_eq!(q.pop(), Some(Key::new("a", "low2")));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn unschedulable_pods_wait_for_a_change_and_their_backoff() {
        let mut q = SchedulingQueue::default();
        q.add(Key::new("a", "p"), 0);
        let k = q.pop().unwrap();
        q.unschedulable(k.clone());
        assert_eq!(q.pop(), None);
        q.cluster_changed();
        assert_eq!(q.sizes(), (0, 1, 0), "backoff of 1 s has not passed");
        assert!(q.next_wake().is_some());
        q.remove(&k);
        assert_eq!(q.sizes(), (0, 0, 0));
    }
}
