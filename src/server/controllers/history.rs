//! ControllerRevisions, as upstream's controller history: the snapshots of a pod template that
//! the daemonset and statefulset controllers keep, so `kubectl rollout history` lists them and
//! `kubectl rollout undo` patches one back.
//!
//! A revision's `data` is upstream's patch `{"spec":{"template":{...,"$patch":"replace"}}}`
//! (a strategic merge patch restoring the template), its name `<owner>-<hash>` with the hash
//! also in the `controller-revision-hash` label, and its `revision` number one above every
//! other revision of the owner when its template became the owner's current one.
//!
//! Invariant: an owner never keeps two revisions with equal data; a template coming back
//! reuses its old revision with the next number.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource};
use serde_json::{Value, json};

use super::pods::{adopt, controller_of, controller_ref, release};
use crate::runtime::Informer;
use crate::runtime::matching::selector_matches;

/// The label naming a revision's hash, on revisions and on the pods made from them.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// Upstream's revision data: a patch replacing `spec.template` with `template`.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// Whether `rev` holds `data` (compared as JSON values, so key order does not matter).
pub fn holds(rev: &ControllerRevision, data: &Value) -> bool {
    rev.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// The template `rev` restores, if its data is a template patch.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// Renders a 32-bit hash in upstream's alphabet (consonants and digits, never a word).
pub fn safe_encode(n: u32) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    n.to_string().bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

/// Upstream's `HashControllerRevision`: FNV-1 over the data, then the collision count in
/// decimal.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = h.wrapping_mul(0x01000193);
            h ^= *b as u32;
        }
    };
    feed(&serde_json::to_vec(data).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(c.to_string().as_bytes());
    }
    safe_encode(h)
}

/// `<owner>-<hash>`, the owner's name cut so the whole stays a valid name.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let mut cut = owner.len().min(223);
    while !owner.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &owner[..cut])
}

/// Upstream's order: by revision number, then creation time, then name.
pub fn by_revision(a: &ControllerRevision, b: &ControllerRevision) -> Ordering {
    let created = |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    a.revision
        .cmp(&b.revision)
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// One above the highest revision number (1 for none).
pub fn next_revision(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// A revision of `owner` holding `data`, labelled with `labels` (the template's) plus the hash
/// label, and named after the hash once [`create`] picks one.
pub fn new_revision<K: Resource<DynamicType = ()>>(
    owner: &K,
    labels: BTreeMap<String, String>,
    data: Value,
    revision: i64,
) -> ControllerRevision {
    ControllerRevision {
        metadata: ObjectMeta {
            namespace: owner.meta().namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![controller_of(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// Creates `rev` for the owner named `owner`, named by [`hash`] of its data and
/// `collision_count`; a different revision already holding that name bumps the count and the
/// next name is tried (upstream's `CreateControllerRevision`). An equal one is returned as is.
pub async fn create(
    api: &Api<ControllerRevision>,
    owner: &str,
    mut rev: ControllerRevision,
    collision_count: &mut i32,
) -> Result<ControllerRevision, kube::Error> {
    let data = rev.data.as_ref().map(|d| d.0.clone()).unwrap_or(Value::Null);
    loop {
        let h = hash(&data, Some(*collision_count));
        let name = revision_name(owner, &h);
        rev.metadata.name = Some(name.clone());
        rev.metadata.labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), h);
        match api.create(&PostParams::default(), &rev).await {
            Ok(r) => return Ok(r),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = api.get(&name).await?;
                if holds(&existing, &data) {
                    return Ok(existing);
                }
                *collision_count += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Gives `rev` the revision number `revision` (a template coming back).
pub async fn renumber(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
    revision: i64,
) -> Result<ControllerRevision, kube::Error> {
    let patch = json!({"metadata": {"uid": rev.metadata.uid}, "revision": revision});
    api.patch(rev.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch)).await
}

/// Deletes `rev` (this very object: a UID precondition); gone already is fine.
pub async fn delete(api: &Api<ControllerRevision>, rev: &ControllerRevision) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: rev.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(rev.metadata.name.as_deref().unwrap_or(""), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The revisions `owner` controls, after releasing those its selector no longer matches and
/// adopting orphans it matches (upstream's `ClaimControllerRevisions`).
pub async fn claim<K: Resource<DynamicType = ()>>(
    api: &Api<ControllerRevision>,
    revisions: &Informer<ControllerRevision>,
    owner: &K,
    selector: &LabelSelector,
) -> Result<Vec<Arc<ControllerRevision>>, kube::Error> {
    let meta = owner.meta();
    let uid = meta.uid.clone().unwrap_or_default();
    let ns = meta.namespace.clone().unwrap_or_default();
    let labels_of = |r: &ControllerRevision| r.metadata.labels.clone().unwrap_or_default();
    let mut mine = Vec::new();
    for r in revisions.controlled_by(&uid) {
        if selector_matches(selector, &labels_of(&r)) {
            mine.push(r);
        } else {
            release(api, r.as_ref(), &uid).await?;
        }
    }
    if meta.deletion_timestamp.is_none() {
        for r in revisions.orphans_in(&ns) {
            if controller_ref(&r.metadata).is_none()
                && r.metadata.deletion_timestamp.is_none()
                && selector_matches(selector, &labels_of(&r))
                && let Some(adopted) = adopt(api, r.as_ref(), controller_of(owner)).await?
            {
                mine.push(Arc::new(adopted));
            }
        }
    }
    Ok(mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}))
        .unwrap()
    }

    #[test]
    fn data_restores_the_template_and_hashes_follow_it() {
        let t = template("a");
        let data = template_patch(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let rev = ControllerRevision { data: Some(RawExtension(data.clone())), ..Default::default() };
        assert!(holds(&rev, &data));
        assert_eq!(template_of(&rev), Some(t));
        assert!(!holds(&rev, &template_patch(&template("b"))));

        let h = hash(&data, Some(0));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_eq!(h, hash(&data, Some(0)));
        assert_ne!(h, hash(&data, Some(1)));
        assert_ne!(h, hash(&template_patch(&template("b")), Some(0)));
    }

    #[test]
    fn names_and_order() {
        assert_eq!(revision_name("web", "abc"), "web-abc");
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), 225);
        let r = |n: i64, name: &str| ControllerRevision {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            revision: n,
            ..Default::default()
        };
        let mut revs = vec![r(3, "c"), r(1, "b"), r(1, "a")];
        revs.sort_by(by_revision);
        let names: Vec<_> = revs.iter().map(|r| r.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let arcs: Vec<_> = revs.into_iter().map(Arc::new).collect();
        assert_eq!(next_revision(&arcs), 4);
        assert_eq!(next_revision(&[]), 1);
    }
}
