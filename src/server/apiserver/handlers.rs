//! Resource request handlers: one function per verb, turning HTTP requests into calls on the
//! object layer and its results into the representation the client asked for.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Response, header};
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Map, Value, json};

use crate::api::meta;
use crate::api::patch::{self, PatchKind};
use crate::api::registry::ResourceInfo;
use crate::api::status::{ApiError, success_status};
use crate::api::table::{self, IncludeObject};

use super::ApiServer;
use super::auth::UserInfo;
use super::codec::{self, BodyFormat};
use super::listing::{self, ListOptions, WatchFrame};
use super::negotiate::{self, Output};
use super::objects::{DeleteOpts, Deleted, FieldValidation, WriteCtx};
use super::request::{Query, RequestInfo};
use super::response::{self, Body};
use super::subresources;

/// Everything a resource handler needs from the request.
pub struct Call<'a> {
    pub server: &'a Arc<ApiServer>,
    pub info: &'static ResourceInfo,
    pub req: &'a RequestInfo,
    pub query: &'a Query,
    pub user: &'a UserInfo,
    pub output: Output,
    pub content_type: Option<String>,
    pub user_agent: String,
    pub body: Bytes,
    /// A joining box's node password (CSR creation with a join token).
    pub node_password: Option<String>,
}

impl Call<'_> {
    fn namespace(&self) -> &str {
        &self.req.namespace
    }

    fn include(&self) -> Result<IncludeObject, ApiError> {
        IncludeObject::parse(self.query.get("includeObject"))
    }

    /// Encodes one object in the negotiated representation.
    pub fn object_response(&self, status: u16, obj: &Value) -> Result<Response<Body>, ApiError> {
        match self.output {
            Output::Json => Ok(response::json(status, obj)),
            Output::Yaml => Ok(response::with_body(status, "application/yaml", response::yaml_bytes(obj))),
            Output::Table { v1beta1 } => {
                let mut t = table::table(
                    self.info,
                    std::slice::from_ref(obj),
                    json!({"resourceVersion": meta::resource_version(obj)}),
                    self.include()?,
                    chrono::Utc::now(),
                );
                if v1beta1 {
                    t["apiVersion"] = json!("meta.k8s.io/v1beta1");
                }
                Ok(response::json(status, &t))
            }
            Output::Metadata { v1beta1 } => {
                Ok(response::json(status, &partial_metadata(obj.get("metadata").cloned(), v1beta1)))
            }
        }
    }

    /// Write options from the query: dryRun, fieldManager, fieldValidation.
    pub fn write_ctx(&self) -> Result<WriteCtx, ApiError> {
        let dry_run = match self.query.get("dryRun") {
            None => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun: Unsupported value: {other:?}: supported values: \"All\""
                )));
            }
        };
        let field_manager = match self.query.get("fieldManager") {
            Some(m) if m.len() > 128 => {
                return Err(ApiError::bad_request("fieldManager: Too long: may not be more than 128 bytes"));
            }
            Some(m) => m.to_string(),
            None => default_manager(&self.user_agent),
        };
        Ok(WriteCtx {
            user: self.user.clone(),
            dry_run,
            field_manager,
            validation: FieldValidation::parse(self.query.get("fieldValidation"))?,
            warnings: Vec::new(),
            apply: None,
            body: self.body.clone(),
        })
    }

    /// Duplicate keys in a JSON body: an error under `fieldValidation=Strict`, a warning under
    /// `Warn` (the last value wins, as upstream).
    fn check_duplicates(&self, ctx: &mut WriteCtx) -> Result<(), ApiError> {
        if ctx.validation == FieldValidation::Ignore
            || negotiate::body_format(self.content_type.as_deref()).ok() != Some(BodyFormat::Json)
        {
            return Ok(());
        }
        let dups = crate::api::duplicates::duplicate_fields(&self.body);
        if dups.is_empty() {
            return Ok(());
        }
        if ctx.validation == FieldValidation::Strict {
            let list: Vec<String> = dups.iter().map(|d| format!("duplicate field \"{d}\"")).collect();
            return Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", "))));
        }
        ctx.warnings.extend(dups.iter().map(|d| format!("duplicate field \"{d}\"")));
        Ok(())
    }

    fn decode_body(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the body of the request was empty"));
        }
        if self.content_type.as_deref().is_some_and(|c| c.starts_with(super::protobuf::MEDIA_TYPE)) {
            if self.body.len() > codec::MAX_BODY {
                return Err(ApiError::too_large(codec::MAX_BODY));
            }
            return super::protobuf::decode(&self.body, self.info.definition);
        }
        let format = negotiate::body_format(self.content_type.as_deref())?;
        codec::decode_body(&self.body, format)
    }
}

/// Upstream derives the field manager from the user agent's program name.
fn default_manager(user_agent: &str) -> String {
    let prog = user_agent.split('/').next().unwrap_or("").trim();
    if prog.is_empty() { "unknown".into() } else { prog.chars().take(128).collect() }
}

/// `PartialObjectMetadata` around an object's metadata. Built as a map: a `json!` with a
/// value inside serializes that value afresh.
fn partial_metadata(metadata: Option<Value>, v1beta1: bool) -> Value {
    let metadata = metadata.unwrap_or_else(|| Value::Object(Map::new()));
    let mut m = Map::new();
    m.insert("kind".into(), "PartialObjectMetadata".into());
    m.insert("apiVersion".into(), if v1beta1 { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" }.into());
    m.insert("metadata".into(), metadata);
    Value::Object(m)
}

/// A list object around `items`, which are moved in.
fn list_object(kind: String, api_version: String, metadata: Value, items: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), kind.into());
    m.insert("apiVersion".into(), api_version.into());
    m.insert("metadata".into(), metadata);
    m.insert("items".into(), Value::Array(items));
    Value::Object(m)
}

/// GET of one object.
pub async fn get(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    if c.output == Output::Json {
        let raw = c.server.objects.get_raw(c.info, c.namespace(), &c.req.name).await?;
        return Ok(response::with_body(200, "application/json", raw));
    }
    let obj = c.server.objects.get(c.info, c.namespace(), &c.req.name).await?;
    c.object_response(200, &obj)
}

fn list_prefix(c: &Call<'_>) -> String {
    if c.info.namespaced && !c.namespace().is_empty() {
        c.info.prefix(Some(c.namespace()))
    } else {
        c.info.prefix(None)
    }
}

/// GET of a collection.
pub async fn list(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let opts = ListOptions::parse(c.query, c.info)?;
    let page = listing::list(&c.server.objects.store, c.info, &list_prefix(c), &opts).await?;
    let mut list_meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(t) = &page.continue_token {
        list_meta["continue"] = json!(t);
    }
    if let Some(n) = page.remaining {
        list_meta["remainingItemCount"] = json!(n);
    }
    match c.output {
        Output::Json => {
            // Build the list by splicing stored objects: no parse for the common case.
            let mut out = BytesMut::with_capacity(64 + page.items.iter().map(|i| i.stored.len() + 32).sum::<usize>());
            out.put_slice(
                format!(
                    "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                    c.info.list_kind(),
                    c.info.api_version(),
                    list_meta
                )
                .as_bytes(),
            );
            let converts = crate::api::convert::converts(c.info);
            for (i, item) in page.items.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                if converts {
                    let v = item.decode(c.info)?;
                    serde_json::to_writer((&mut out).writer(), &v).map_err(ApiError::internal)?;
                } else {
                    codec::splice_into(&mut out, &item.stored, item.revision);
                }
            }
            out.put_slice(b"]}");
            Ok(response::with_body(200, "application/json", out.freeze()))
        }
        _ => {
            let items = page.items.iter().map(|i| i.decode(c.info)).collect::<Result<Vec<_>, _>>()?;
            match c.output {
                Output::Table { v1beta1 } => {
                    let mut t = table::table(c.info, &items, list_meta, c.include()?, chrono::Utc::now());
                    if v1beta1 {
                        t["apiVersion"] = json!("meta.k8s.io/v1beta1");
                    }
                    Ok(response::json(200, &t))
                }
                Output::Metadata { v1beta1 } => {
                    let items: Vec<Value> = items
                        .into_iter()
                        .map(|mut o| partial_metadata(o.get_mut("metadata").map(Value::take), v1beta1))
                        .collect();
                    let api_version = if v1beta1 { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" };
                    let list = list_object("PartialObjectMetadataList".into(), api_version.into(), list_meta, items);
                    Ok(response::json(200, &list))
                }
                _ => {
                    let v = list_object(c.info.list_kind(), c.info.api_version(), list_meta, items);
                    Ok(response::with_body(200, "application/yaml", response::yaml_bytes(&v)))
                }
            }
        }
    }
}

/// Encoded watch events buffered per response: what a watcher's reader may lag behind
/// before its stream stops taking events from the store (~3.5 KiB each for pods).
const WATCH_FRAMES: usize = 1024;

/// GET with `watch=true`: a chunked stream of watch events.
pub async fn watch(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let mut opts = ListOptions::parse(c.query, c.info)?;
    opts.plain_json = c.output == Output::Json;
    opts.metadata_only = matches!(c.output, Output::Metadata { .. });
    let name_filter = if c.req.name.is_empty() { None } else { Some(c.req.name.clone()) };
    let store = c.server.objects.store.clone();
    let cancel = c.server.shutdown.child_token();
    let info = c.info;
    let output = c.output;
    let include = c.include()?;
    let (btx, brx) = tokio::sync::mpsc::channel(WATCH_FRAMES);
    let encode = move |frame| encode_watch_frame(info, output, include, frame);
    // One task takes the store's events to the response, encoding on the way, and reads
    // outside tokio's cooperative budget: under load (hundreds of requests runnable) a
    // budgeted task moves a few dozen events per turn through the run queue, and a watcher
    // that falls 10,000 events behind is dropped and relists (BENCHMARKS.md, control plane).
    // Each turn ends when the store has nothing more or the response buffer is full.
    let out = listing::WatchOut { tx: btx, encode };
    let watch = listing::watch(store, c.info, list_prefix(c), name_filter, opts, out, cancel);
    tokio::spawn(tokio::task::unconstrained(watch));
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(brx)).boxed();
    let content_type = if output == Output::Yaml { "application/yaml" } else { "application/json" };
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache, private"));
    Ok(r)
}

fn encode_watch_frame(info: &ResourceInfo, output: Output, include: IncludeObject, frame: WatchFrame) -> Bytes {
    let (kind, object) = match frame {
        WatchFrame::Raw { kind, stored, revision } => {
            let mut line = BytesMut::with_capacity(stored.len() + 64);
            line.put_slice(b"{\"type\":\"");
            line.put_slice(kind.as_bytes());
            line.put_slice(b"\",\"object\":");
            codec::splice_into(&mut line, &stored, revision);
            line.put_slice(b"}\n");
            return line.freeze();
        }
        WatchFrame::Event { kind, object } => {
            let object = match output {
                Output::Table { v1beta1 } => {
                    let mut t = table::table(
                        info,
                        std::slice::from_ref(&object),
                        json!({"resourceVersion": meta::resource_version(&object)}),
                        include,
                        chrono::Utc::now(),
                    );
                    if v1beta1 {
                        t["apiVersion"] = json!("meta.k8s.io/v1beta1");
                    }
                    t
                }
                Output::Metadata { v1beta1 } => {
                    let mut object = object;
                    partial_metadata(object.get_mut("metadata").map(Value::take), v1beta1)
                }
                _ => object,
            };
            (kind, object)
        }
        WatchFrame::Bookmark { revision, initial_events_end } => {
            let mut m = json!({"resourceVersion": revision.to_string()});
            if initial_events_end {
                m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            let (kind, api_version) = match output {
                Output::Table { .. } => ("Table".to_string(), "meta.k8s.io/v1".to_string()),
                Output::Metadata { .. } => ("PartialObjectMetadata".to_string(), "meta.k8s.io/v1".to_string()),
                _ => (info.kind.to_string(), info.api_version()),
            };
            ("BOOKMARK", json!({"kind": kind, "apiVersion": api_version, "metadata": m}))
        }
        WatchFrame::Error(e) => ("ERROR", e.to_status()),
    };
    // Written around the object rather than through `json!`, which would copy it first.
    let mut line = Vec::with_capacity(512);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    if serde_json::to_writer(&mut line, &object).is_err() {
        line.extend_from_slice(b"null");
    }
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// POST of a new object.
pub async fn create(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let mut ctx = c.write_ctx()?;
    let mut obj = c.decode_body()?;
    c.check_duplicates(&mut ctx)?;
    c.server.objects.check_body(c.info, &mut obj, &mut ctx)?;
    if c.info.group == "certificates.k8s.io" && c.info.plural == "certificatesigningrequests" {
        c.server.admit_csr(c.user, &mut obj, c.node_password.as_deref(), ctx.dry_run).await?;
    }
    let created = c.server.objects.create(c.info, c.namespace(), obj, &mut ctx).await?;
    let mut r = c.object_response(201, &created)?;
    response::add_warnings(&mut r, &ctx.warnings);
    Ok(r)
}

/// PUT of an object or its status.
pub async fn update(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let mut ctx = c.write_ctx()?;
    let mut obj = c.decode_body()?;
    c.check_duplicates(&mut ctx)?;
    c.server.objects.check_body(c.info, &mut obj, &mut ctx)?;
    let sub = c.req.subresource.as_str();
    let updated = c.server.objects.update(c.info, c.namespace(), &c.req.name, sub, obj, &mut ctx).await?;
    let mut r = c.object_response(200, &updated)?;
    response::add_warnings(&mut r, &ctx.warnings);
    Ok(r)
}

/// PATCH of an object or its status.
pub async fn patch(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let content_type = c.content_type.clone().unwrap_or_default();
    let kind =
        PatchKind::from_content_type(&content_type).ok_or_else(|| ApiError::unsupported_media_type(&content_type))?;
    let mut ctx = c.write_ctx()?;
    if c.body.len() > codec::MAX_BODY {
        return Err(ApiError::too_large(codec::MAX_BODY));
    }
    if kind == PatchKind::Apply {
        return subresources::apply(c, &mut ctx).await;
    }
    if kind != PatchKind::Json && c.body.is_empty() {
        return Err(ApiError::bad_request("the body of the request was empty"));
    }
    let info = c.info;
    let body = c.body.clone();
    let patch_value: Option<Value> = match kind {
        PatchKind::Json => None,
        _ => Some(
            serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        ),
    };
    if let Some(p) = &patch_value
        && !p.is_object()
    {
        return Err(ApiError::bad_request("the patch is not a JSON object"));
    }
    let sub = c.req.subresource.as_str();
    let server = c.server.clone();
    let updated = server
        .objects
        .update_with(info, c.namespace(), &c.req.name, sub, &mut ctx, |current, ctx| {
            let patched = match (kind, &patch_value) {
                (PatchKind::Json, _) => patch::json_patch(current, &body).map_err(ApiError::from)?,
                (PatchKind::Merge, Some(p)) => patch::merge_patch(current, p),
                (PatchKind::StrategicMerge, Some(p)) => {
                    patch::strategic_merge_patch(current, p, info.definition).map_err(ApiError::from)?
                }
                _ => return Err(ApiError::bad_request("unsupported patch")),
            };
            let mut patched = patched;
            // A patch that does not set resourceVersion must not act as a precondition.
            let patch_sets_rv = match &patch_value {
                Some(p) => p.pointer("/metadata/resourceVersion").is_some(),
                None => meta::resource_version(&patched) != meta::resource_version(current),
            };
            if !patch_sets_rv {
                meta::meta_mut(&mut patched).remove("resourceVersion");
            }
            server.objects.check_body(info, &mut patched, ctx)?;
            Ok(patched)
        })
        .await?;
    let mut r = c.object_response(200, &updated)?;
    response::add_warnings(&mut r, &ctx.warnings);
    Ok(r)
}

/// Reads `DeleteOptions` from the body and query.
fn delete_opts(c: &Call<'_>) -> Result<DeleteOpts, ApiError> {
    let mut o = DeleteOpts::default();
    if !c.body.is_empty() {
        let v: Value = codec::decode_body(&c.body, BodyFormat::Json)?;
        if let Some(k) = v.get("kind").and_then(|k| k.as_str())
            && k != "DeleteOptions"
        {
            return Err(ApiError::bad_request(format!("the body of a delete must be DeleteOptions, got {k}")));
        }
        o.grace_period_seconds = v.get("gracePeriodSeconds").and_then(|g| g.as_i64());
        o.propagation_policy = v.get("propagationPolicy").and_then(|g| g.as_str()).map(String::from);
        if o.propagation_policy.is_none()
            && let Some(orphan) = v.get("orphanDependents").and_then(|b| b.as_bool())
        {
            o.propagation_policy = Some(if orphan { "Orphan" } else { "Background" }.into());
        }
        o.precondition_uid = v.pointer("/preconditions/uid").and_then(|g| g.as_str()).map(String::from);
        o.precondition_rv = v.pointer("/preconditions/resourceVersion").and_then(|g| g.as_str()).map(String::from);
    }
    if let Some(g) = c.query.get("gracePeriodSeconds") {
        o.grace_period_seconds =
            Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g:?}")))?);
    }
    if let Some(p) = c.query.get("propagationPolicy") {
        o.propagation_policy = Some(p.to_string());
    }
    if let Some(orphan) = c.query.get("orphanDependents") {
        o.propagation_policy.get_or_insert_with(|| if orphan == "true" { "Orphan" } else { "Background" }.into());
    }
    Ok(o)
}

/// DELETE of one object.
pub async fn delete(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let opts = delete_opts(c)?;
    let ctx = c.write_ctx()?;
    match c.server.objects.delete(c.info, c.namespace(), &c.req.name, &opts, &ctx).await? {
        Deleted::Pending(obj) => c.object_response(202, &obj).map(|mut r| {
            *r.status_mut() = http::StatusCode::OK;
            r
        }),
        Deleted::Gone(obj) => {
            if super::objects::returns_deleted_object(c.info) {
                c.object_response(200, &obj)
            } else {
                Ok(response::json(200, &success_status(c.info.group, c.info.plural, &c.req.name, meta::uid(&obj))))
            }
        }
    }
}

/// DELETE of a collection: every object the selectors match.
pub async fn delete_collection(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let opts = delete_opts(c)?;
    let ctx = c.write_ctx()?;
    let list_opts = ListOptions::parse(c.query, c.info)?;
    let page = listing::list(
        &c.server.objects.store,
        c.info,
        &list_prefix(c),
        &ListOptions { limit: 0, continue_token: None, ..list_opts },
    )
    .await?;
    let mut deleted = Vec::new();
    for item in &page.items {
        let obj = item.decode(c.info)?;
        let ns = meta::namespace(&obj).to_string();
        match c.server.objects.delete(c.info, &ns, meta::name(&obj), &opts, &ctx).await {
            Ok(Deleted::Gone(o)) | Ok(Deleted::Pending(o)) => deleted.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let metadata = json!({"resourceVersion": c.server.objects.store.current_revision().to_string()});
    let list = list_object(c.info.list_kind(), c.info.api_version(), metadata, deleted);
    Ok(response::json(200, &list))
}

/// Collects a request body up to the limit.
pub async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, codec::MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(ApiError::too_large(codec::MAX_BODY))
            } else {
                Err(ApiError::bad_request(format!("error reading request body: {e}")))
            }
        }
    }
}
