//! Content negotiation: which representation a client asked for in `Accept`, and what a
//! request body's `Content-Type` is.
//!
//! Protobuf is not served; a client that also accepts JSON gets JSON, one that accepts only
//! protobuf gets 406 (client-go then retries with JSON where it can).

use crate::api::status::ApiError;

use super::codec::BodyFormat;

/// The response representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// `as=Table;g=meta.k8s.io;v=v1` (or v1beta1).
    Table {
        v1beta1: bool,
    },
    /// `as=PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata {
        v1beta1: bool,
    },
}

struct MediaRange<'a> {
    essence: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

fn media_ranges(accept: &str) -> Vec<MediaRange<'_>> {
    accept
        .split(',')
        .map(|part| {
            let mut it = part.split(';');
            let essence = it.next().unwrap_or("").trim();
            let params =
                it.filter_map(|p| p.split_once('=')).map(|(k, v)| (k.trim(), v.trim().trim_matches('"'))).collect();
            MediaRange { essence, params }
        })
        .collect()
}

/// Picks the first acceptable representation in the client's order.
pub fn choose_output(accept: Option<&str>) -> Result<Output, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    for r in media_ranges(accept) {
        let param = |k: &str| r.params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
        let json_like = matches!(r.essence, "application/json" | "*/*" | "application/*");
        match (json_like, param("as")) {
            (true, None) => return Ok(Output::Json),
            (true, Some(kind)) => {
                let g = param("g").unwrap_or("");
                let v = param("v").unwrap_or("");
                let ok_version = g == "meta.k8s.io" && (v == "v1" || v == "v1beta1");
                if !ok_version {
                    continue;
                }
                match kind {
                    "Table" => return Ok(Output::Table { v1beta1: v == "v1beta1" }),
                    "PartialObjectMetadata" | "PartialObjectMetadataList" => {
                        return Ok(Output::Metadata { v1beta1: v == "v1beta1" });
                    }
                    _ => continue,
                }
            }
            (false, _) if matches!(r.essence, "application/yaml" | "application/x-yaml" | "text/yaml") => {
                return Ok(Output::Yaml);
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(
        "only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io, application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
    ))
}

/// The body format of a create or update from its `Content-Type`.
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, ApiError> {
    let essence = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match essence.as_deref() {
        None | Some("") | Some("application/json") | Some("*/*") => Ok(BodyFormat::Json),
        Some("application/yaml") | Some("application/x-yaml") | Some("text/yaml") => Ok(BodyFormat::Yaml),
        Some(other) => Err(ApiError::unsupported_media_type(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_asks_for_tables() {
        let a = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(choose_output(Some(a)).unwrap(), Output::Table { v1beta1: false });
    }

    #[test]
    fn protobuf_falls_back_or_is_refused() {
        assert_eq!(choose_output(Some("application/vnd.kubernetes.protobuf, application/json")).unwrap(), Output::Json);
        assert_eq!(choose_output(Some("application/vnd.kubernetes.protobuf")).unwrap_err().code, 406);
        assert_eq!(choose_output(None).unwrap(), Output::Json);
        assert_eq!(choose_output(Some("application/yaml")).unwrap(), Output::Yaml);
    }

    #[test]
    fn body_types() {
        assert_eq!(body_format(Some("application/json; charset=utf-8")).unwrap(), BodyFormat::Json);
        assert_eq!(body_format(Some("application/yaml")).unwrap(), BodyFormat::Yaml);
        assert_eq!(body_format(Some("application/vnd.kubernetes.protobuf")).unwrap_err().code, 415);
    }
}
