//! Typed decoding checks: does a JSON object fit the Go type upstream would decode it into?
//!
//! The registry holds, per kind, a function that deserializes the value into the matching
//! k8s-openapi type while recording every field the type does not know. Type mismatches become
//! upstream's "cannot be handled as a ..." 400; unknown fields feed `fieldValidation`.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Outcome of decoding a value as a typed kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecodeReport {
    /// Paths of unknown fields, upstream-style (`spec.template.spec.containers[0].foo`).
    pub unknown: Vec<String>,
}

/// Deserializes `v` as `T`, collecting unknown field paths; a type error is `Err(message)`.
pub fn check<T: DeserializeOwned>(v: &Value) -> Result<DecodeReport, String> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = serde_ignored::deserialize(v, |path| unknown.push(render(&path)));
    match result {
        Ok(_) => Ok(DecodeReport { unknown }),
        Err(e) => Err(e.to_string()),
    }
}

fn render(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render(parent)),
        Path::Map { parent, key } => {
            let p = render(parent);
            if p.is_empty() { key.clone() } else { format!("{p}.{key}") }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => render(parent),
    }
}

/// Removes the field at an upstream-style path (used to drop unknown fields when not strict).
pub fn remove_path(v: &mut Value, path: &str) {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            segments.push(Seg::Key(rest[..i].to_string()));
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse::<usize>() {
                    segments.push(Seg::Index(n));
                }
                rest = &rest[end + 1..];
            }
        } else {
            segments.push(Seg::Key(rest.to_string()));
        }
    }
    let Some((last, parents)) = segments.split_last() else { return };
    let mut cur = v;
    for s in parents {
        let next = match s {
            Seg::Key(k) => cur.get_mut(k.as_str()),
            Seg::Index(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let (Seg::Key(k), Some(m)) = (last, cur.as_object_mut()) {
        m.remove(k);
    }
}

enum Seg {
    Key(String),
    Index(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    #[test]
    fn unknown_fields_have_upstream_paths() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "bogus": 1},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "a", "imagee": "x"}]}}}});
        let r = check::<Deployment>(&d).unwrap();
        assert_eq!(r.unknown, vec!["metadata.bogus", "spec.template.spec.containers[0].imagee"]);
        let mut d2 = d.clone();
        for p in &r.unknown {
            remove_path(&mut d2, p);
        }
        assert_eq!(check::<Deployment>(&d2).unwrap().unknown, Vec::<String>::new());
    }

    #[test]
    fn type_errors() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "three", "selector": {}, "template": {}}});
        assert!(check::<Deployment>(&d).unwrap_err().contains("invalid type: string \"three\""));
    }
}
