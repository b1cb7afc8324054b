//! Reading collections: list with selectors, pagination and resourceVersion semantics, and
//! watch streams with initial events, selector transitions, bookmarks and timeouts.
//!
//! Both read the store only; encoding of what is read is the handlers' business.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::api::field_selector::FieldSelector;
use crate::api::registry::ResourceInfo;
use crate::api::selector::LabelSelector;
use crate::api::status::ApiError;
use crate::server::store::{Datastore, EventKind};

use super::codec;
use super::objects::store_error;
use super::request::Query;

/// Parsed list/watch query parameters.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    pub limit: usize,
    pub continue_token: Option<ContinueToken>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub allow_bookmarks: bool,
    pub timeout: Option<Duration>,
    pub send_initial_events: Option<bool>,
    /// The client wants plain JSON (set by the handler from content negotiation, not parsed).
    pub plain_json: bool,
    /// The client wants only metadata (`PartialObjectMetadata`; set by the handler).
    pub metadata_only: bool,
}

/// Position in a paginated list: the revision it is consistent at and the last key returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinueToken {
    pub revision: u64,
    pub after_key: String,
}

impl ContinueToken {
    pub fn encode(&self) -> String {
        let raw = json!({"v": "meta.k8s.io/v1", "rv": self.revision, "start": self.after_key}).to_string();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(s: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::bad_request(
                "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            )
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| ApiError::bad_request("continue key is not valid: illegal base64 data"))?;
        let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
        if v.get("v").and_then(|x| x.as_str()) != Some("meta.k8s.io/v1") {
            return Err(bad());
        }
        let revision = v.get("rv").and_then(|x| x.as_u64()).ok_or_else(bad)?;
        let after_key = v.get("start").and_then(|x| x.as_str()).ok_or_else(bad)?.to_string();
        Ok(ContinueToken { revision, after_key })
    }
}

impl ListOptions {
    /// Parses and checks list/watch parameters for a resource.
    pub fn parse(q: &Query, info: &ResourceInfo) -> Result<Self, ApiError> {
        let labels = match q.get("labelSelector") {
            Some(s) => Some(
                LabelSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            ),
            None => None,
        };
        let fields = match q.get("fieldSelector") {
            Some(s) => {
                let f = FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                f.validate_for(info.group, info.plural).map_err(|e| ApiError::bad_request(e.to_string()))?;
                Some(f)
            }
            None => None,
        };
        let limit = match q.get("limit") {
            Some(l) => {
                l.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?.max(0) as usize
            }
            None => 0,
        };
        let continue_token = q.get("continue").map(ContinueToken::decode).transpose()?;
        let resource_version = q.get("resourceVersion").map(String::from);
        if let Some(rv) = &resource_version {
            codec::parse_resource_version(rv)?;
        }
        let resource_version_match = q.get("resourceVersionMatch").map(String::from);
        if let Some(m) = &resource_version_match {
            if !matches!(m.as_str(), "Exact" | "NotOlderThan") {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
            if resource_version.is_none() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if m == "Exact" && resource_version.as_deref() == Some("0") {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if continue_token.is_some() && resource_version.as_deref().is_some_and(|r| r != "0") {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        let timeout = match q.get("timeoutSeconds") {
            Some(t) => Some(Duration::from_secs(
                t.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?,
            )),
            None => None,
        };
        let send_initial_events = match q.get("sendInitialEvents") {
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(o) => return Err(ApiError::bad_request(format!("invalid sendInitialEvents: {o:?}"))),
            None => None,
        };
        Ok(ListOptions {
            labels,
            fields,
            limit,
            continue_token,
            resource_version,
            resource_version_match,
            allow_bookmarks: q.flag("allowWatchBookmarks"),
            timeout,
            send_initial_events,
            plain_json: false,
            metadata_only: false,
        })
    }

    /// The store prefix to read: `prefix` narrowed to one object's key when the selectors pin
    /// its name and the prefix pins its namespace (keys that merely start with the name are
    /// filtered out by the selector afterwards).
    pub fn read_prefix(&self, info: &ResourceInfo, prefix: &str, name: Option<&str>) -> String {
        let name = name.or_else(|| self.fields.as_ref().and_then(|f| f.exact_name()));
        match name {
            Some(n) if !info.namespaced => info.key("", n),
            Some(n) if prefix != info.prefix(None) => format!("{prefix}{n}"),
            _ => prefix.to_string(),
        }
    }

    fn has_selectors(&self) -> bool {
        self.labels.as_ref().is_some_and(|l| !l.is_empty()) || self.fields.is_some()
    }

    /// Whether an object (decoded) passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(l) = &self.labels
            && !l.matches(crate::api::meta::labels(obj))
        {
            return false;
        }
        if let Some(f) = &self.fields
            && !f.matches(obj)
        {
            return false;
        }
        true
    }
}

/// One object read from the store.
#[derive(Debug, Clone)]
pub struct Item {
    pub stored: Bytes,
    pub revision: u64,
}

impl Item {
    /// The object as clients of `info`'s version see it.
    pub fn decode(&self, info: &ResourceInfo) -> Result<Value, ApiError> {
        codec::decode_stored_as(info, &self.stored, self.revision)
    }
}

/// A page of a list.
#[derive(Debug, Default)]
pub struct ListPage {
    pub items: Vec<Item>,
    pub revision: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// How long a list with a future resourceVersion waits for the store to catch up.
const FUTURE_RV_WAIT: Duration = Duration::from_secs(3);

async fn wait_for_revision(store: &Arc<dyn Datastore>, rv: u64) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + FUTURE_RV_WAIT;
    while store.current_revision() < rv {
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {rv}, current: {}",
                store.current_revision()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Lists objects under `prefix` per the options.
pub async fn list(
    store: &Arc<dyn Datastore>,
    info: &ResourceInfo,
    prefix: &str,
    opts: &ListOptions,
) -> Result<ListPage, ApiError> {
    let (mut at, mut after) = match &opts.continue_token {
        Some(t) => {
            if !t.after_key.starts_with(prefix) && !t.after_key.is_empty() {
                return Err(ApiError::bad_request(
                    "continue key is not valid: the continue token does not belong to this list",
                ));
            }
            (Some(t.revision), Some(t.after_key.clone()))
        }
        None => (None, None),
    };
    if opts.continue_token.is_none()
        && let Some(rv) = &opts.resource_version
        && rv != "0"
    {
        let rv = codec::parse_resource_version(rv)?;
        if opts.resource_version_match.as_deref() == Some("Exact") {
            at = Some(rv);
        } else {
            wait_for_revision(store, rv).await?;
        }
    }
    let selectors = opts.has_selectors();
    let read_prefix = opts.read_prefix(info, prefix, None);
    let mut page = ListPage::default();
    loop {
        let want = if opts.limit == 0 { 0 } else { opts.limit - page.items.len() };
        let fetch = if selectors && want > 0 { want.max(64) } else { want };
        let r = store.range(&read_prefix, after.as_deref(), fetch, at).await.map_err(|e| match e {
            crate::server::store::StoreError::Compacted { .. } if opts.continue_token.is_some() => ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ),
            other => store_error(info, "", other),
        })?;
        at = Some(r.revision);
        page.revision = r.revision;
        let mut last_key = None;
        let mut stopped_early = false;
        for kv in r.kvs {
            if opts.limit > 0 && page.items.len() >= opts.limit {
                stopped_early = true;
                break;
            }
            last_key = Some(kv.key.clone());
            let item = Item { stored: kv.value, revision: kv.mod_revision };
            if selectors {
                let v = item.decode(info)?;
                if !opts.matches(&v) {
                    continue;
                }
            }
            page.items.push(item);
        }
        let more = r.more || stopped_early;
        if let Some(k) = last_key {
            after = Some(k);
        }
        if !more {
            break;
        }
        if opts.limit > 0 && page.items.len() >= opts.limit {
            page.continue_token = after.clone().map(|k| ContinueToken { revision: r.revision, after_key: k }.encode());
            if !selectors {
                page.remaining = Some(r.remaining);
            }
            break;
        }
        if opts.limit == 0 {
            continue;
        }
    }
    Ok(page)
}

/// Objects read per store range while a watch sends its initial events.
const INITIAL_EVENTS_PAGE: usize = 500;

/// What a watch sends.
#[derive(Debug, Clone)]
pub enum WatchFrame {
    Event {
        kind: &'static str,
        object: Value,
    },
    /// An event whose object is the stored JSON as is, its resourceVersion spliced in while
    /// the frame is written: for watchers that want plain JSON of the storage version and
    /// filter nothing, which is most of them, so the hot path never parses, re-encodes or
    /// copies an object twice.
    Raw {
        kind: &'static str,
        stored: Bytes,
        revision: u64,
    },
    Bookmark {
        revision: u64,
        initial_events_end: bool,
    },
    Error(ApiError),
}

/// Where a watch's frames go: each is encoded by `encode` and sent on `tx` (a response body).
pub struct WatchOut<E> {
    pub tx: tokio::sync::mpsc::Sender<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>,
    pub encode: E,
}

/// Streams watch frames for objects under `prefix` into `out` until the client goes away, the
/// timeout passes or `cancel` fires.
pub async fn watch(
    store: Arc<dyn Datastore>,
    info: &'static ResourceInfo,
    prefix: String,
    name_filter: Option<String>,
    opts: ListOptions,
    out: WatchOut<impl Fn(WatchFrame) -> bytes::Bytes>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let WatchOut { tx, encode } = out;
    let filtering = name_filter.is_some() || opts.has_selectors();
    let raw = opts.plain_json && !filtering && !crate::api::convert::converts(info);
    // A metadata watcher (the garbage collector watches every resource so) is sent nothing
    // else, so nothing else is decoded unless a field selector needs it.
    let metadata_only = opts.metadata_only && opts.fields.is_none();
    let decode = |stored: &[u8], revision: u64| {
        if metadata_only {
            codec::decode_stored_metadata(stored, revision)
        } else {
            codec::decode_stored_as(info, stored, revision)
        }
    };
    let timeout = opts.timeout.unwrap_or_else(|| {
        // Upstream ends watches after a random 30-60 minutes so load spreads over servers.
        let jitter = uuid::Uuid::new_v4().as_u128() % 1800;
        Duration::from_secs(1800 + jitter as u64)
    });
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let send = |f: WatchFrame| {
        let (tx, line) = (tx.clone(), encode(f));
        async move { tx.send(Ok(http_body::Frame::data(line))).await.is_ok() }
    };
    let matches = |v: &Value| -> bool {
        if let Some(n) = &name_filter
            && crate::api::meta::name(v) != n
        {
            return false;
        }
        opts.matches(v)
    };
    // Where the event stream starts, and whether to send the current state first.
    let rv = opts.resource_version.clone().unwrap_or_default();
    let initial = match opts.send_initial_events {
        Some(b) => b,
        None => rv.is_empty() || rv == "0",
    };
    let mut start = if rv.is_empty() || rv == "0" {
        store.current_revision()
    } else {
        match codec::parse_resource_version(&rv) {
            Ok(r) => r,
            Err(e) => {
                let _ = send(WatchFrame::Error(e)).await;
                return;
            }
        }
    };
    if initial {
        let mut at = if rv.is_empty() || rv == "0" { None } else { Some(start) };
        let read_prefix = opts.read_prefix(info, &prefix, name_filter.as_deref());
        // Pages keep the memory of many concurrent watch starts bounded.
        let mut after: Option<String> = None;
        loop {
            let r = match store.range(&read_prefix, after.as_deref(), INITIAL_EVENTS_PAGE, at).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = send(WatchFrame::Error(store_error(info, "", e))).await;
                    return;
                }
            };
            start = r.revision;
            at = Some(r.revision);
            after = r.kvs.last().map(|kv| kv.key.clone());
            for kv in r.kvs {
                if raw {
                    if !send(WatchFrame::Raw { kind: "ADDED", stored: kv.value, revision: kv.mod_revision }).await {
                        return;
                    }
                    continue;
                }
                let Ok(v) = decode(&kv.value, kv.mod_revision) else { continue };
                if !matches(&v) {
                    continue;
                }
                if !send(WatchFrame::Event { kind: "ADDED", object: v }).await {
                    return;
                }
            }
            if !r.more || after.is_none() {
                break;
            }
        }
        if opts.send_initial_events == Some(true)
            && !send(WatchFrame::Bookmark { revision: start, initial_events_end: true }).await
        {
            return;
        }
    }
    let mut events = match store.watch(&prefix, start).await {
        Ok(w) => w,
        Err(e) => {
            let _ = send(WatchFrame::Error(store_error(info, "", e))).await;
            return;
        }
    };
    let mut last_rev = start;
    let mut bookmarks = tokio::time::interval(Duration::from_secs(60));
    bookmarks.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            _ = bookmarks.tick(), if opts.allow_bookmarks => {
                if !send(WatchFrame::Bookmark { revision: last_rev, initial_events_end: false }).await {
                    return;
                }
            }
            ev = events.next() => {
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => {
                        let _ = send(WatchFrame::Error(store_error(info, "", e))).await;
                        return;
                    }
                    None => return,
                };
                last_rev = ev.revision;
                if raw {
                    let kind = match ev.kind {
                        EventKind::Created => "ADDED",
                        EventKind::Updated => "MODIFIED",
                        EventKind::Deleted => "DELETED",
                    };
                    if !send(WatchFrame::Raw { kind, stored: ev.kv.value, revision: ev.kv.mod_revision }).await {
                        return;
                    }
                    continue;
                }
                let Ok(cur) = decode(&ev.kv.value, ev.kv.mod_revision) else { continue };
                let now_match = matches(&cur);
                // Without a filter every object matches; the previous state needs no decoding.
                let was_match = if filtering {
                    let prev =
                        ev.prev.as_ref().and_then(|p| decode(&p.value, p.mod_revision).ok());
                    prev.as_ref().map(&matches).unwrap_or(false)
                } else {
                    true
                };
                let frame = match ev.kind {
                    EventKind::Created if now_match => Some(("ADDED", cur)),
                    EventKind::Updated if now_match && was_match => Some(("MODIFIED", cur)),
                    EventKind::Updated if now_match => Some(("ADDED", cur)),
                    EventKind::Updated if was_match => Some(("DELETED", cur)),
                    EventKind::Deleted if now_match || was_match => Some(("DELETED", cur)),
                    _ => None,
                };
                if let Some((kind, object)) = frame
                    && !send(WatchFrame::Event { kind, object }).await
                {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = ContinueToken { revision: 42, after_key: "/core/pods/default/web-1".into() };
        assert_eq!(ContinueToken::decode(&t.encode()).unwrap(), t);
        assert_eq!(ContinueToken::decode("!!!").unwrap_err().code, 400);
        let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("{\"v\":\"x\"}");
        assert_eq!(ContinueToken::decode(&other).unwrap_err().code, 400);
    }
}
