//! Finding duplicate keys in a JSON document (which `fieldValidation=Strict` rejects and
//! `Warn` reports), since a parsed `Value` silently keeps only the last one, and the order in
//! which the document names its fields, which a parsed `Value` (keys sorted) forgets.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

struct Walk<'a> {
    path: String,
    found: &'a mut Vec<String>,
    /// Every key's path in document order, when asked for.
    all: Option<&'a mut Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if !seen.insert(key) {
                self.found.push(path.clone());
            }
            if let Some(all) = self.all.as_deref_mut() {
                all.push(path.clone());
            }
            map.next_value_seed(Walk { path, found: self.found, all: self.all.as_deref_mut() })?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Walk {
                path: format!("{}[{i}]", self.path),
                found: self.found,
                all: self.all.as_deref_mut(),
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Paths of keys that appear more than once in their object (`metadata.name`), in order.
pub fn duplicate_fields(json: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(json);
    let walk = Walk { path: String::new(), found: &mut found, all: None };
    if walk.deserialize(&mut de).is_err() {
        return Vec::new();
    }
    found
}

/// Sorts field paths (as [`duplicate_fields`] writes them) by where `json` first names them;
/// paths it does not name, and every path when it is not JSON, keep their order at the end.
pub fn sort_by_document_order(paths: &mut [String], json: &[u8]) {
    let (mut found, mut all) = (Vec::new(), Vec::new());
    let mut de = serde_json::Deserializer::from_slice(json);
    if (Walk { path: String::new(), found: &mut found, all: Some(&mut all) }).deserialize(&mut de).is_err() {
        return;
    }
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(all.len());
    for (i, p) in all.iter().enumerate() {
        first.entry(p.as_str()).or_insert(i);
    }
    paths.sort_by_key(|p| first.get(p.as_str()).copied().unwrap_or(usize::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_duplicates() {
        let doc = br#"{"metadata":{"name":"a","name":"b"},"data":{"k":"1"},"items":[{"x":1,"x":2}],"data":{}}"#;
        assert_eq!(duplicate_fields(doc), ["metadata.name", "items[0].x", "data"]);
        assert!(duplicate_fields(b"{\"a\":1}").is_empty());
        assert!(duplicate_fields(b"{broken").is_empty());
    }

    #[test]
    fn sorts_paths_as_the_document_names_them() {
        let doc = br#"{"metadata":{"bogus":1,"name":"a"},"dataa":{},"spec":{"c":[{"z":1,"y":2}]}}"#;
        let mut paths: Vec<String> =
            ["dataa", "extra", "metadata.bogus", "spec.c[0].y", "spec.c[0].z"].map(String::from).into();
        sort_by_document_order(&mut paths, doc);
        assert_eq!(paths, ["metadata.bogus", "dataa", "spec.c[0].z", "spec.c[0].y", "extra"]);
        let mut paths: Vec<String> = ["b", "a"].map(String::from).into();
        sort_by_document_order(&mut paths, b"a: 1\nb: 2\n");
        assert_eq!(paths, ["b", "a"]);
    }
}
