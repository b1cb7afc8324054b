//! The statefulset controller: pods with stable names and storage, as upstream's.
//!
//! A StatefulSet `web` with `replicas: 3` owns pods `web-0`, `web-1`, `web-2` (from
//! `spec.ordinals.start`), each with hostname = its name, subdomain = `spec.serviceName`, the
//! labels `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
//! `controller-revision-hash` (the revision's name), and one PersistentVolumeClaim
//! `<claim>-web-<ordinal>` per `volumeClaimTemplates` entry, created before the pod and owned
//! as `persistentVolumeClaimRetentionPolicy` says (Retain/Retain: not owned, never deleted).
//!
//! `OrderedReady` creates pods in ordinal order, each only once every lower one is Running
//! and Ready, and deletes surplus pods from the highest ordinal down, one at a time; `Parallel`
//! does both at once. A failed or deleted pod is recreated with the same name. Templates are
//! snapshotted in ControllerRevisions (see [`super::history`]); `RollingUpdate` replaces pods
//! whose revision is not the update revision from the highest ordinal down to `partition`,
//! one at a time, waiting for each to be Ready; `OnDelete` waits for pods to be deleted.
//!
//! Invariant: at most one pod per ordinal, and in `OrderedReady` no pod is created, updated or
//! deleted while a lower ordinal is not Running and Ready; writes pods, claims, revisions and
//! the StatefulSet's status.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::history::{self, HASH_LABEL};
use super::pods::{
    adopt, controller_of, controller_ref, from_template, is_available, is_ready, queue_controller_of, release,
};
use crate::runtime::events::{EventType, Recorder};
use crate::runtime::informer::next_change;
use crate::runtime::matching::{selector_is_empty, selector_matches};
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};

const COMPONENT: &str = "statefulset-controller";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Why a pass failed: an API error, or a claim the pod needs is being deleted.
#[derive(Debug)]
enum Error {
    Kube(kube::Error),
    Claim(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Kube(e) => write!(f, "{}", api_message(e)),
            Error::Claim(m) => f.write_str(m),
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

struct Controller {
    client: kube::Client,
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    revisions: Arc<Informer<ControllerRevision>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    recorder: Recorder,
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let sets = ctx.informers.get::<StatefulSet>();
    let pods = ctx.informers.get::<Pod>();
    let revisions = ctx.informers.get::<ControllerRevision>();
    let claims = ctx.informers.get::<PersistentVolumeClaim>();
    let mut set_changes = sets.subscribe();
    let mut pod_changes = pods.subscribe();
    let mut rev_changes = revisions.subscribe();
    sets.synced().await;
    pods.synced().await;
    revisions.synced().await;
    claims.synced().await;
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        sets,
        pods,
        revisions,
        claims,
        recorder: ctx.recorder(COMPONENT),
    });
    let queue = WorkQueue::<Key>::new();
    let all = |queue: &WorkQueue<Key>| c.sets.list().iter().for_each(|s| queue.add(Key::of(s.as_ref())));
    all(&queue);
    let workers = {
        let c = c.clone();
        tokio::spawn(run_workers(COMPONENT, queue.clone(), 4, cancel.clone(), move |key: Key| {
            let c = c.clone();
            async move { c.reconcile(&key).await }
        }))
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut set_changes) => match ch {
                Some(Change::Applied(s)) | Some(Change::Deleted(s)) => queue.add(Key::of(s.as_ref())),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut pod_changes) => match ch {
                Some(Change::Applied(p)) | Some(Change::Deleted(p)) => queue_controller_of(&p.metadata, "StatefulSet", &c.sets, |o| o.spec.as_ref().map(|s| s.selector.clone()), &queue),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut rev_changes) => match ch {
                Some(Change::Applied(r)) | Some(Change::Deleted(r)) => {
                    if let Some(o) = controller_ref(&r.metadata).filter(|o| o.kind == "StatefulSet") {
                        queue.add(Key::new(r.metadata.namespace.as_deref().unwrap_or(""), &o.name));
                    }
                }
                Some(Change::Resync) => all(&queue),
                None => break,
            },
        }
    }
    let _ = workers.await;
}

/// The parent name and ordinal in a pod name `<parent>-<ordinal>`.
fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ord) = name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

/// The pod's ordinal, -1 when its name has none.
fn ordinal(pod: &Pod) -> i32 {
    pod.metadata.name.as_deref().and_then(parent_and_ordinal).map(|(_, o)| o).unwrap_or(-1)
}

fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or("")
}

fn is_member(set: &StatefulSet, pod: &Pod) -> bool {
    pod.metadata.name.as_deref().and_then(parent_and_ordinal).is_some_and(|(p, _)| p == set_name(set))
}

fn replicas_of(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.ordinals.as_ref()).and_then(|o| o.start).unwrap_or(0)
}

fn in_range(set: &StatefulSet, pod: &Pod) -> bool {
    let o = ordinal(pod);
    let start = start_ordinal(set);
    o >= start && o < start + replicas_of(set)
}

fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set_name(set))
}

fn claim_name(template: &str, set: &StatefulSet, ordinal: i32) -> String {
    format!("{template}-{}-{ordinal}", set_name(set))
}

fn name_of(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

fn revision_of(pod: &Pod) -> &str {
    pod.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).map(String::as_str).unwrap_or("")
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod)
}

fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !terminating(pod)
}

fn unavailable(pod: &Pod, min_ready: i32) -> bool {
    !healthy(pod) || !is_available(pod, min_ready, Utc::now())
}

fn is_rolling(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `Some(partition)` when the strategy has a `rollingUpdate` (the partition defaults to 0).
fn partition(set: &StatefulSet) -> Option<i32> {
    let ru = set.spec.as_ref()?.update_strategy.as_ref()?.rolling_update.as_ref()?;
    Some(ru.partition.unwrap_or(0))
}

/// (whenDeleted, whenScaled), each `Retain` or `Delete`.
fn retention(set: &StatefulSet) -> (String, String) {
    let p = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let get = |v: Option<&String>| v.cloned().unwrap_or_else(|| "Retain".into());
    (get(p.and_then(|p| p.when_deleted.as_ref())), get(p.and_then(|p| p.when_scaled.as_ref())))
}

fn identity_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let o = ordinal(pod);
    o >= 0
        && is_member(set, pod)
        && name_of(pod) == pod_name(set, o)
        && pod.metadata.namespace == set.metadata.namespace
        && pod.metadata.labels.as_ref().and_then(|l| l.get(POD_NAME_LABEL)).map(String::as_str) == Some(name_of(pod))
}

fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let o = ordinal(pod);
    if o < 0 {
        return false;
    }
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or(&[]);
    set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_deref()).unwrap_or(&[]).iter().all(|t| {
        let name = t.metadata.name.as_deref().unwrap_or("");
        volumes.iter().find(|v| v.name == name).and_then(|v| v.persistent_volume_claim.as_ref()).map(|c| &c.claim_name)
            == Some(&claim_name(name, set, o))
    })
}

/// The claims of the pod with `ordinal`, keyed by template name: the template named
/// `<claim>-<set>-<ordinal>`, labelled with the template's labels and the selector's.
fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let spec = set.spec.as_ref();
    let selector_labels = spec.and_then(|s| s.selector.match_labels.clone()).unwrap_or_default();
    spec.and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            let template = c.metadata.name.clone().unwrap_or_default();
            c.metadata.name = Some(claim_name(&template, set, ordinal));
            c.metadata.namespace = set.metadata.namespace.clone();
            let labels = c.metadata.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(selector_labels.clone());
            c.status = None;
            (template, c)
        })
        .collect()
}

/// A new pod of `set` at `ordinal` from `template`: identity, storage and revision label.
fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let mut pod = from_template(template, &ns, &format!("{}-", set_name(set)), controller_of(set));
    let name = pod_name(set, ordinal);
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    spec.subdomain = set.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty());
    let claims = claims_for(set, ordinal);
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(template, c)| Volume {
            name: template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: c.metadata.name.clone().unwrap_or_default(),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    for v in spec.volumes.take().unwrap_or_default() {
        if !claims.iter().any(|(t, _)| *t == v.name) {
            volumes.push(v);
        }
    }
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    pod
}

/// The owner references a claim should have under the retention policy (upstream's
/// `updateClaimOwnerRefForSetAndPod`): the set owns it when deleting the set deletes claims,
/// the pod when scaling down deletes them and the pod is beyond the replicas.
fn wanted_claim_owners(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &Pod) -> Vec<OwnerReference> {
    let (when_deleted, when_scaled) = retention(set);
    let scaled_down = !in_range(set, pod);
    let (set_owns, pod_owns) = match (when_deleted.as_str(), when_scaled.as_str()) {
        ("Delete", "Retain") => (true, false),
        ("Retain", "Delete") => (false, scaled_down),
        ("Delete", "Delete") => (!scaled_down, scaled_down),
        _ => (false, false),
    };
    let set_uid = set.metadata.uid.clone().unwrap_or_default();
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut refs: Vec<OwnerReference> = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != set_uid && r.uid != pod_uid)
        .cloned()
        .collect();
    if set_owns {
        let kept = claim.metadata.owner_references.iter().flatten().find(|r| r.uid == set_uid);
        refs.push(kept.cloned().unwrap_or_else(|| controller_of(set)));
    }
    if pod_owns && !pod_uid.is_empty() {
        let kept = claim.metadata.owner_references.iter().flatten().find(|r| r.uid == pod_uid);
        refs.push(kept.cloned().unwrap_or_else(|| OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: name_of(pod).to_string(),
            uid: pod_uid.clone(),
            controller: None,
            block_owner_deletion: None,
        }));
    }
    refs
}

fn same_owners(a: &[OwnerReference], b: &[OwnerReference]) -> bool {
    let uids = |r: &[OwnerReference]| r.iter().map(|o| o.uid.clone()).collect::<HashSet<_>>();
    uids(a) == uids(b)
}

/// What the pass leaves in `status`.
#[derive(Default)]
struct Status {
    replicas: i32,
    ready: i32,
    available: i32,
    current: i32,
    updated: i32,
    current_revision: String,
    update_revision: String,
    collision_count: i32,
}

/// One ordinal in range: its pod, or the pod to create.
struct Slot {
    pod: Arc<Pod>,
    created: bool,
}

impl Controller {
    fn pod_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn reconcile(&self, key: &Key) -> Result<Next, Error> {
        let Some(set) = self.sets.get(&key.namespace, &key.name) else { return Ok(Next::Done) };
        let Some(spec) = set.spec.as_ref() else { return Ok(Next::Done) };
        // Validation requires a selector; one selecting everything would take every pod.
        if selector_is_empty(&spec.selector) {
            return Ok(Next::Done);
        }
        let rev_api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut revisions = history::claim(&rev_api, &self.revisions, set.as_ref(), &spec.selector).await?;
        revisions.sort_by(|a, b| history::by_revision(a, b));
        let pods = self.claim_pods(&set, &spec.selector).await?;

        let (current, update, collision_count) = self.revisions_of(&set, &revisions).await?;
        let (mut status, result) = self.update_pods(&set, &current, &update, collision_count, &pods).await;
        let written = self.write_status(&set, &mut status).await;
        let truncated = self.truncate_history(&set, &revisions, &current, &update).await;
        result?;
        written?;
        truncated?;
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        if min_ready > 0 && status.available != replicas_of(&set) {
            return Ok(Next::After(Duration::from_secs(min_ready as u64)));
        }
        Ok(Next::Done)
    }

    /// The set's pods, after releasing those that stopped matching (selector or name) and
    /// adopting orphans named after it that its selector matches.
    async fn claim_pods(&self, set: &StatefulSet, selector: &LabelSelector) -> Result<Vec<Arc<Pod>>, kube::Error> {
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        let api = self.pod_api(&ns);
        let matches =
            |p: &Pod| is_member(set, p) && selector_matches(selector, &p.metadata.labels.clone().unwrap_or_default());
        let deleting = set.metadata.deletion_timestamp.is_some();
        let mut mine = Vec::new();
        for p in self.pods.controlled_by(&uid) {
            if matches(&p) || deleting {
                mine.push(p);
            } else {
                release(&api, p.as_ref(), &uid).await?;
            }
        }
        if !deleting {
            for p in self.pods.orphans_in(&ns) {
                if controller_ref(&p.metadata).is_none()
                    && !terminating(&p)
                    && matches(&p)
                    && let Some(adopted) = adopt(&api, p.as_ref(), controller_of(set)).await?
                {
                    mine.push(Arc::new(adopted));
                }
            }
        }
        Ok(mine)
    }

    /// Upstream's `getStatefulSetRevisions`: the current revision (from status), the update
    /// revision (the template's: the last one, an older equal one renumbered, or a new one)
    /// and the collision count used to name it.
    async fn revisions_of(
        &self,
        set: &StatefulSet,
        revisions: &[Arc<ControllerRevision>],
    ) -> Result<(Arc<ControllerRevision>, Arc<ControllerRevision>, i32), kube::Error> {
        let api: Api<ControllerRevision> =
            Api::namespaced(self.client.clone(), set.metadata.namespace.as_deref().unwrap_or(""));
        let spec = set.spec.clone().unwrap_or_default();
        let mut collision_count = set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let data = history::template_patch(&spec.template);
        let next = history::next_revision(revisions);
        let equal = revisions.iter().rfind(|r| history::holds(r, &data));
        let update = match equal {
            Some(eq) if revisions.last().map(|l| &l.metadata.name) == Some(&eq.metadata.name) => eq.clone(),
            Some(eq) => Arc::new(history::renumber(&api, eq, next).await?),
            None => {
                let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
                let rev = history::new_revision(set, labels, data, next);
                Arc::new(history::create(&api, set_name(set), rev, &mut collision_count).await?)
            }
        };
        let current_name = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let current = revisions
            .iter()
            .find(|r| r.metadata.name.is_some() && r.metadata.name == current_name)
            .cloned()
            .unwrap_or_else(|| update.clone());
        Ok((current, update, collision_count))
    }

    /// Upstream's `updateStatefulSet`: brings the pods towards the spec and returns the status
    /// to record, with the first error.
    async fn update_pods(
        &self,
        set: &StatefulSet,
        current: &ControllerRevision,
        update: &ControllerRevision,
        collision_count: i32,
        pods: &[Arc<Pod>],
    ) -> (Status, Result<(), Error>) {
        let spec = set.spec.clone().unwrap_or_default();
        let current_template = history::template_of(current).unwrap_or_else(|| spec.template.clone());
        let update_template = history::template_of(update).unwrap_or_else(|| spec.template.clone());
        let current_name = current.metadata.name.clone().unwrap_or_default();
        let update_name = update.metadata.name.clone().unwrap_or_default();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let start = start_ordinal(set);
        let count = replicas_of(set) as usize;

        let mut in_range: Vec<Option<Arc<Pod>>> = vec![None; count];
        let mut condemned: Vec<Arc<Pod>> = Vec::new();
        for p in pods {
            let o = ordinal(p);
            if o >= start && ((o - start) as usize) < count {
                in_range[(o - start) as usize] = Some(p.clone());
            } else if o >= 0 {
                condemned.push(p.clone());
            }
        }
        condemned.sort_by_key(|p| std::cmp::Reverse(ordinal(p)));
        // Pods to create take the current revision below the partition, else the update one.
        let current_replicas = set.status.as_ref().and_then(|s| s.current_replicas).unwrap_or(0);
        let slots: Vec<Slot> = in_range
            .into_iter()
            .enumerate()
            .map(|(i, p)| match p {
                Some(pod) => Slot { pod, created: true },
                None => {
                    let ord = start + i as i32;
                    let use_current = (is_rolling(set) && partition(set).is_none() && ord < start + current_replicas)
                        || partition(set).is_some_and(|p| ord < start + p);
                    let pod = if use_current {
                        new_pod(set, &current_template, ord, &current_name)
                    } else {
                        new_pod(set, &update_template, ord, &update_name)
                    };
                    Slot { pod: Arc::new(pod), created: false }
                }
            })
            .collect();

        let mut status = Status {
            current_revision: current_name.clone(),
            update_revision: update_name.clone(),
            collision_count,
            ..Default::default()
        };
        let now = Utc::now();
        for p in slots.iter().filter(|s| s.created).map(|s| &s.pod).chain(condemned.iter()) {
            status.replicas += 1;
            if running_and_ready(p) {
                status.ready += 1;
                if is_available(p, min_ready, now) {
                    status.available += 1;
                }
            }
            if !terminating(p) {
                if revision_of(p) == current_name {
                    status.current += 1;
                }
                if revision_of(p) == update_name {
                    status.updated += 1;
                }
            }
        }
        let first_unavailable: Option<String> = slots
            .iter()
            .map(|s| &s.pod)
            .chain(condemned.iter().rev())
            .find(|p| unavailable(p, min_ready))
            .map(|p| name_of(p).to_string());

        if set.metadata.deletion_timestamp.is_some() {
            return (status, Ok(()));
        }
        let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");

        let mut first_error: Option<Error> = None;
        for slot in &slots {
            match self.process_replica(set, monotonic, slot, min_ready).await {
                Ok(true) if monotonic => return (status, Ok(())),
                Ok(_) => {}
                Err(e) if monotonic => return (status, Err(e)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return (status, Err(e));
        }
        // Claims of condemned pods follow the scale-down policy.
        for p in &condemned {
            if let Err(e) = self.fix_claim_owners(set, p).await {
                return (status, Err(e.into()));
            }
        }
        for p in &condemned {
            if terminating(p) {
                if monotonic {
                    return (status, Ok(()));
                }
                continue;
            }
            let first = first_unavailable.as_deref() == Some(name_of(p));
            if monotonic && !first && unavailable(p, min_ready) {
                return (status, Ok(()));
            }
            let r = self.delete_pod(set, p).await;
            if monotonic {
                return (status, r.map_err(Error::from));
            }
            if let Err(e) = r {
                first_error.get_or_insert(e.into());
            }
        }
        if let Some(e) = first_error {
            return (status, Err(e));
        }
        if !is_rolling(set) {
            return (status, Ok(()));
        }
        // From the highest ordinal down to the partition: one pod at a time to the update
        // revision, each Ready before the next.
        let update_min = partition(set).unwrap_or(0).max(0) as usize;
        for slot in slots.iter().skip(update_min).rev() {
            let p = &slot.pod;
            if slot.created && revision_of(p) != update_name && !terminating(p) {
                let r = self.delete_pod(set, p).await;
                status.current -= 1;
                return (status, r.map_err(Error::from));
            }
            if unavailable(p, min_ready) {
                return (status, Ok(()));
            }
        }
        (status, Ok(()))
    }

    /// Upstream's `processReplica`; `Ok(true)` means an OrderedReady set must stop here.
    async fn process_replica(
        &self,
        set: &StatefulSet,
        monotonic: bool,
        slot: &Slot,
        min_ready: i32,
    ) -> Result<bool, Error> {
        let pod = &slot.pod;
        if slot.created && matches!(phase(pod), "Failed" | "Succeeded") {
            // Recreated under the same name once it is gone.
            if !terminating(pod) {
                self.delete_pod(set, pod).await?;
            }
            return Ok(true);
        }
        if !slot.created {
            return match self.create_pod(set, pod).await? {
                // Already there: the cache has not shown it yet.
                false => Ok(true),
                true => Ok(monotonic),
            };
        }
        if phase(pod) == "Pending" {
            self.create_claims(set, pod).await?;
        }
        if monotonic && (terminating(pod) || !running_and_ready(pod) || !is_available(pod, min_ready, Utc::now())) {
            return Ok(true);
        }
        let claims_ok = self.claims_match(set, pod);
        if identity_matches(set, pod) && storage_matches(set, pod) && claims_ok {
            return Ok(false);
        }
        self.update_pod(set, pod).await?;
        Ok(false)
    }

    /// Creates the pod's claims that do not exist yet; fails while one is being deleted.
    async fn create_claims(&self, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let mut failure: Option<Error> = None;
        for (_, claim) in claims_for(set, ordinal(pod)) {
            let name = claim.metadata.name.clone().unwrap_or_default();
            match self.claims.get(&ns, &name) {
                Some(c) if c.metadata.deletion_timestamp.is_some() => {
                    failure.get_or_insert(Error::Claim(format!("pvc {name} is being deleted")));
                }
                Some(_) => {}
                None => match api.create(&PostParams::default(), &claim).await {
                    Ok(_) => self.recorder.record(
                        set,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("create Claim {name} Pod {} in StatefulSet {} success", name_of(pod), set_name(set)),
                    ),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => {
                        self.recorder.record(
                            set,
                            EventType::Warning,
                            "FailedCreate",
                            format!(
                                "create Claim {name} for Pod {} in StatefulSet {} failed error: {}",
                                name_of(pod),
                                set_name(set),
                                api_message(&e)
                            ),
                        );
                        failure.get_or_insert(e.into());
                    }
                },
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Creates the claims, then the pod; `false` when the pod exists already.
    async fn create_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<bool, Error> {
        if let Err(e) = self.create_claims(set, pod).await {
            self.pod_event(set, pod, "create", Some(&e.to_string()));
            return Err(e);
        }
        let api = self.pod_api(set.metadata.namespace.as_deref().unwrap_or(""));
        match api.create(&PostParams::default(), pod).await {
            Ok(created) => {
                self.pod_event(set, pod, "create", None);
                self.fix_claim_owners(set, &created).await?;
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => {
                self.pod_event(set, pod, "create", Some(&api_message(&e)));
                Err(e.into())
            }
        }
    }

    /// Deletes this very pod (a UID precondition, so a recreated one is never hit).
    async fn delete_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), kube::Error> {
        let api = self.pod_api(set.metadata.namespace.as_deref().unwrap_or(""));
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(name_of(pod), &dp).await {
            Ok(_) => {
                self.pod_event(set, pod, "delete", None);
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => {
                self.pod_event(set, pod, "delete", Some(&api_message(&e)));
                Err(e)
            }
        }
    }

    /// Restores the pod's identity labels, creates missing claims and fixes claim owners.
    async fn update_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
        if !storage_matches(set, pod)
            && let Err(e) = self.create_claims(set, pod).await
        {
            self.pod_event(set, pod, "update", Some(&e.to_string()));
            return Err(e);
        }
        if let Err(e) = self.fix_claim_owners(set, pod).await {
            self.pod_event(set, pod, "update", Some(&api_message(&e)));
            return Err(e.into());
        }
        if identity_matches(set, pod) {
            return Ok(());
        }
        let patch = json!({"metadata": {
            "uid": pod.metadata.uid,
            "labels": {POD_NAME_LABEL: name_of(pod), POD_INDEX_LABEL: ordinal(pod).to_string()},
        }});
        let api = self.pod_api(set.metadata.namespace.as_deref().unwrap_or(""));
        match api.patch(name_of(pod), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                self.pod_event(set, pod, "update", None);
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => {
                self.pod_event(set, pod, "update", Some(&api_message(&e)));
                Err(e.into())
            }
        }
    }

    /// Whether every existing claim of the pod has the owners the retention policy wants.
    fn claims_match(&self, set: &StatefulSet, pod: &Pod) -> bool {
        let ns = set.metadata.namespace.as_deref().unwrap_or("");
        claims_for(set, ordinal(pod)).iter().all(|(_, c)| {
            match self.claims.get(ns, c.metadata.name.as_deref().unwrap_or("")) {
                Some(existing) => same_owners(
                    existing.metadata.owner_references.as_deref().unwrap_or(&[]),
                    &wanted_claim_owners(&existing, set, pod),
                ),
                None => true,
            }
        })
    }

    /// Gives the pod's existing claims the owners the retention policy wants.
    async fn fix_claim_owners(&self, set: &StatefulSet, pod: &Pod) -> Result<(), kube::Error> {
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        for (_, c) in claims_for(set, ordinal(pod)) {
            let Some(existing) = self.claims.get(&ns, c.metadata.name.as_deref().unwrap_or("")) else { continue };
            let have = existing.metadata.owner_references.clone().unwrap_or_default();
            let want = wanted_claim_owners(&existing, set, pod);
            if same_owners(&have, &want) {
                continue;
            }
            let refs = if want.is_empty() { Value::Null } else { json!(want) };
            let patch =
                json!({"metadata": {"ownerReferences": refs, "resourceVersion": existing.metadata.resource_version}});
            match api
                .patch(existing.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Upstream's pod events: `Successful<Verb>`/`Failed<Verb>`.
    fn pod_event(&self, set: &StatefulSet, pod: &Pod, verb: &str, error: Option<&str>) {
        let title = format!("{}{}", verb[..1].to_uppercase(), &verb[1..]);
        match error {
            None => self.recorder.record(
                set,
                EventType::Normal,
                &format!("Successful{title}"),
                format!("{verb} Pod {} in StatefulSet {} successful", name_of(pod), set_name(set)),
            ),
            Some(e) => self.recorder.record(
                set,
                EventType::Warning,
                &format!("Failed{title}"),
                format!("{verb} Pod {} in StatefulSet {} failed error: {e}", name_of(pod), set_name(set)),
            ),
        }
    }

    /// Records `status` unless the set's status already says the same (a finished rolling
    /// update first makes the update revision current).
    async fn write_status(&self, set: &StatefulSet, status: &mut Status) -> Result<(), kube::Error> {
        if is_rolling(set) && status.updated == status.replicas && status.ready == status.replicas {
            status.current = status.updated;
            status.current_revision = status.update_revision.clone();
        }
        let old = set.status.clone().unwrap_or_default();
        let generation = set.metadata.generation.unwrap_or(0);
        let consistent = old.observed_generation.unwrap_or(0) >= generation
            && old.replicas == status.replicas
            && old.current_replicas.unwrap_or(0) == status.current
            && old.ready_replicas.unwrap_or(0) == status.ready
            && old.updated_replicas.unwrap_or(0) == status.updated
            && old.available_replicas.unwrap_or(0) == status.available
            && old.current_revision.as_deref().unwrap_or("") == status.current_revision
            && old.update_revision.as_deref().unwrap_or("") == status.update_revision
            && old.collision_count.unwrap_or(0) == status.collision_count;
        if consistent {
            return Ok(());
        }
        let nz = |n: i32| if n == 0 { Value::Null } else { json!(n) };
        let ns = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
        let body = json!({"status": {
            "observedGeneration": set.metadata.generation,
            "replicas": status.replicas,
            "readyReplicas": nz(status.ready),
            "currentReplicas": nz(status.current),
            "updatedReplicas": nz(status.updated),
            "currentRevision": ns(&status.current_revision),
            "updateRevision": ns(&status.update_revision),
            "collisionCount": status.collision_count,
            "availableReplicas": status.available,
        }});
        let api: Api<StatefulSet> =
            Api::namespaced(self.client.clone(), set.metadata.namespace.as_deref().unwrap_or(""));
        match api.patch_status(set_name(set), &PatchParams::default(), &Patch::Merge(&body)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the oldest revisions that neither the status nor a pod uses, beyond
    /// `revisionHistoryLimit`.
    async fn truncate_history(
        &self,
        set: &StatefulSet,
        revisions: &[Arc<ControllerRevision>],
        current: &ControllerRevision,
        update: &ControllerRevision,
    ) -> Result<(), kube::Error> {
        let limit = set.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10);
        if limit < 0 {
            return Ok(());
        }
        let mut live: HashSet<String> =
            [&current.metadata.name, &update.metadata.name].into_iter().flatten().cloned().collect();
        let uid = set.metadata.uid.as_deref().unwrap_or("");
        live.extend(self.pods.controlled_by(uid).iter().map(|p| revision_of(p).to_string()));
        let old: Vec<&Arc<ControllerRevision>> =
            revisions.iter().filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or(""))).collect();
        if old.len() <= limit as usize {
            return Ok(());
        }
        let api: Api<ControllerRevision> =
            Api::namespaced(self.client.clone(), set.metadata.namespace.as_deref().unwrap_or(""));
        for r in &old[..old.len() - limit as usize] {
            history::delete(&api, r).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(extra: Value) -> StatefulSet {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "n", "uid": "set-uid"},
            "spec": {"replicas": 3, "serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}],
                        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "db"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]},
        });
        if let (Some(spec), Some(e)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(e.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(parent_and_ordinal("web-12"), Some(("web", 12)));
        assert_eq!(parent_and_ordinal("my-web-0"), Some(("my-web", 0)));
        assert_eq!(parent_and_ordinal("web-x"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web-99999999999"), None);
    }

    #[test]
    fn new_pods_have_identity_storage_and_revision() {
        let s = set(json!({}));
        let pod = new_pod(&s, &s.spec.as_ref().unwrap().template, 1, "web-abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-1"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-1");
        assert_eq!(labels[POD_INDEX_LABEL], "1");
        assert_eq!(labels[HASH_LABEL], "web-abc");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(vols.len(), 2, "the template's own data volume is replaced by the claim");
        assert_eq!(vols[0].persistent_volume_claim.as_ref().unwrap().claim_name, "data-web-1");
        assert!(identity_matches(&s, &pod) && storage_matches(&s, &pod));
        let claims = claims_for(&s, 1);
        let labels = claims[0].1.metadata.labels.as_ref().unwrap();
        assert_eq!((labels["tier"].as_str(), labels["app"].as_str()), ("db", "web"));
    }

    #[test]
    fn claim_owners_follow_the_retention_policy() {
        let pod_at = |ord: i32| Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(format!("web-{ord}")),
                uid: Some(format!("pod-{ord}")),
                ..Default::default()
            },
            ..Default::default()
        };
        let claim = PersistentVolumeClaim::default();
        let uids = |refs: Vec<OwnerReference>| refs.into_iter().map(|r| r.uid).collect::<Vec<_>>();
        let retain = set(json!({}));
        assert!(wanted_claim_owners(&claim, &retain, &pod_at(0)).is_empty());
        let both =
            set(json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}));
        assert_eq!(uids(wanted_claim_owners(&claim, &both, &pod_at(0))), ["set-uid"]);
        assert_eq!(uids(wanted_claim_owners(&claim, &both, &pod_at(5))), ["pod-5"]);
        let scaled =
            set(json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"}}));
        assert!(wanted_claim_owners(&claim, &scaled, &pod_at(2)).is_empty());
        assert_eq!(uids(wanted_claim_owners(&claim, &scaled, &pod_at(3))), ["pod-3"]);
    }
}
