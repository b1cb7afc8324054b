//! Serving the OpenAPI documents: built once in the background after start (so start-up stays
//! fast), then answered from memory with ETags.

use std::sync::{Arc, OnceLock};

use http::{HeaderValue, Response, header};

use crate::api::status::ApiError;

use super::openapi::OpenApi;
use super::response::{self, Body};

/// The lazily built OpenAPI documents.
#[derive(Clone, Default)]
pub struct OpenApiCache {
    docs: Arc<OnceLock<OpenApi>>,
}

impl OpenApiCache {
    /// Starts building the documents on a blocking thread.
    pub fn spawn_build(&self) {
        let docs = self.docs.clone();
        tokio::task::spawn_blocking(move || {
            docs.get_or_init(OpenApi::build);
        });
    }

    fn get(&self) -> &OpenApi {
        self.docs.get_or_init(OpenApi::build)
    }

    /// `/openapi/v2` (JSON only; protobuf-only clients get 406).
    pub fn v2(&self, accept: Option<&str>, if_none_match: Option<&HeaderValue>) -> Result<Response<Body>, ApiError> {
        let accepts_json = accept
            .map(|a| {
                a.split(',').any(|p| {
                    matches!(
                        p.split(';').next().unwrap_or("").trim(),
                        "application/json" | "*/*" | "application/*" | ""
                    )
                })
            })
            .unwrap_or(true);
        if !accepts_json {
            return Err(ApiError::not_acceptable("only application/json is served for /openapi/v2"));
        }
        let docs = self.get();
        let etag = format!("\"{}\"", docs.etag_v2());
        if if_none_match.and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
            let mut r = response::with_body(304, "application/json", bytes::Bytes::new());
            if let Ok(v) = HeaderValue::from_str(&etag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            return Ok(r);
        }
        let mut r = response::with_body(200, "application/json", docs.v2().clone());
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        Ok(r)
    }

    /// `/openapi/v3`.
    pub fn v3_index(&self) -> Response<Body> {
        response::with_body(200, "application/json", self.get().v3_index().clone())
    }

    /// `/openapi/v3/<api/v1 | apis/g/v>`.
    pub fn v3_doc(&self, path: &str) -> Result<Response<Body>, ApiError> {
        let (bytes, hash) = self.get().v3_doc(path).ok_or_else(ApiError::path_not_found)?;
        let mut r = response::with_body(200, "application/json", bytes.clone());
        if let Ok(v) = HeaderValue::from_str(&format!("\"{hash}\"")) {
            r.headers_mut().insert(header::ETAG, v);
        }
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, immutable"));
        Ok(r)
    }
}
