//! Building HTTP responses: JSON/YAML bodies, `Status` errors, warnings, and streamed bodies.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde_json::Value;

use crate::api::status::ApiError;

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A response with a body and content type.
pub fn with_body(status: u16, content_type: &str, bytes: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(bytes));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response.
pub fn json(status: u16, v: &Value) -> Response<Body> {
    with_body(status, "application/json", serde_json::to_vec(v).unwrap_or_default())
}

/// A `Status` error response.
pub fn error(e: &ApiError) -> Response<Body> {
    let mut r = json(e.code, &e.to_status());
    if let Some(s) = e.details.as_ref().and_then(|d| d.retry_after_seconds)
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Plain text.
pub fn text(status: u16, s: impl Into<String>) -> Response<Body> {
    with_body(status, "text/plain; charset=utf-8", s.into())
}

/// Adds `Warning: 299 - "..."` headers.
pub fn add_warnings(r: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
}

/// Renders a JSON value as YAML bytes.
pub fn yaml_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_yaml::to_string(v).unwrap_or_default())
}
