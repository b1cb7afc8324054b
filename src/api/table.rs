//! Server-side printing: `meta.k8s.io/v1 Table` responses with upstream's columns.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::api::registry::ResourceInfo;
use crate::api::status::ApiError;

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (default Metadata).
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(o) => Err(ApiError::bad_request(format!(
                "includeObject: Unsupported value: {o:?}: supported values: \"Metadata\", \"None\", \"Object\""
            ))),
        }
    }
}

/// Column definitions of a resource.
pub fn column_definitions(_info: &ResourceInfo) -> Vec<Value> {
    vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
        json!({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}),
    ]
}

/// Upstream's short human duration (`5s`, `3m`, `2d`).
pub fn human_age(created: Option<&str>, now: DateTime<Utc>) -> String {
    let Some(t) = created.and_then(|c| DateTime::parse_from_rfc3339(c).ok()) else { return "<unknown>".into() };
    let secs = (now - t.with_timezone(&Utc)).num_seconds();
    if secs < 0 {
        return "<invalid>".into();
    }
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 60 * 10 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 3600 * 8 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s if s < 86400 * 8 => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
        s if s < 86400 * 365 * 2 => format!("{}d", s / 86400),
        s => format!("{}y{}d", s / (86400 * 365), (s % (86400 * 365)) / 86400),
    }
}

/// One row.
pub fn row(_info: &ResourceInfo, obj: &Value, include: IncludeObject, now: DateTime<Utc>) -> Value {
    let name = obj.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("");
    let age = human_age(obj.pointer("/metadata/creationTimestamp").and_then(|v| v.as_str()), now);
    let mut r = json!({"cells": [name, age]});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            r["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))});
        }
        IncludeObject::Object => r["object"] = obj.clone(),
    }
    r
}

/// A Table of objects.
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    list_metadata: Value,
    include: IncludeObject,
    now: DateTime<Utc>,
) -> Value {
    let rows: Vec<Value> = objects.iter().map(|o| row(info, o, include, now)).collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_metadata, "columnDefinitions": column_definitions(info), "rows": rows})
}
