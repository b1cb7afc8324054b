//! Expectations, as upstream's controllers keep them: after creating or deleting objects, a
//! controller does not act on its (possibly stale) cache again until the cache shows those
//! writes, so a lagging watch never makes it create or delete twice. Unlike upstream, what is
//! expected is a set of names, checked against the cache itself when the owner is reconciled.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::runtime::Key;

/// After this long, unmet expectations are dropped (a watch event may have been lost).
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Pending {
    adds: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Outstanding creations and deletions per owner.
#[derive(Default)]
pub struct Expectations {
    owners: Mutex<HashMap<Key, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Pending>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a creation by `owner` of the object `name`.
    pub fn created(&self, owner: &Key, name: &str) {
        let mut o = self.lock();
        let p = o.entry(owner.clone()).or_default();
        p.adds.insert(name.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    /// Records a deletion by `owner` of the object `name`.
    pub fn deleted(&self, owner: &Key, name: &str) {
        let mut o = self.lock();
        let p = o.entry(owner.clone()).or_default();
        p.deletes.insert(name.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    /// Whether the cache shows every write of `owner`; `seen(name)` says whether the cache has
    /// the object (and it is not being deleted).
    pub fn satisfied(&self, owner: &Key, seen: impl Fn(&str) -> bool) -> bool {
        let mut o = self.lock();
        let Some(p) = o.get_mut(owner) else { return true };
        p.adds.retain(|n| !seen(n));
        p.deletes.retain(|n| seen(n));
        let expired = p.since.is_some_and(|s| s.elapsed() > TIMEOUT);
        if (p.adds.is_empty() && p.deletes.is_empty()) || expired {
            o.remove(owner);
            return true;
        }
        false
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &Key) {
        self.lock().remove(owner);
    }
}
