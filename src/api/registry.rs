//! The resource registry: every kind the API server serves, as data.
//!
//! One row per (group, version, resource): names, scope, verbs, short names, categories,
//! subresources, the storage key prefix and the OpenAPI definition of the kind. Everything that
//! needs to know "what exists" (routing, discovery, OpenAPI, kubectl's `api-resources`) reads
//! this table; nothing here knows about HTTP or the store.

/// Returns a `$ref` schema for the kind, registering its definitions in the generator. Only
/// the tests generate schemas: the binary carries them as data (`api::schema`).
#[cfg(test)]
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;
/// The kind's typed decode (unknown field paths, or the error), which the tests hold
/// [`crate::api::decode::check`] to.
#[cfg(test)]
pub type TypedFn = fn(&serde_json::Value) -> Result<Vec<String>, String>;

/// The full verb set of an ordinary stored resource.
pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
/// Namespaces cannot be deleted as a collection upstream.
const NS_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
const CREATE_ONLY: &[&str] = &["create"];
const READ_ONLY: &[&str] = &["get", "list"];

/// How requests for a resource are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Objects are kept in the store under `storage_prefix`.
    Stored,
    /// Nothing is stored: a create is answered by a handler (reviews, bindings).
    Virtual,
}

/// A subresource such as `status` or `scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// Kind of the subresource's body (`Scale` for scale, the parent's kind for status).
    pub kind: &'static str,
    /// Group/version of that kind when it differs from the parent (`autoscaling/v1` for Scale).
    pub group: &'static str,
    pub version: &'static str,
    pub verbs: &'static [&'static str],
}

/// One served resource.
#[derive(Clone, Copy)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural used in URLs, e.g. `deployments`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    pub storage: Storage,
    /// Key prefix in the store: `/<group or core>/<plural>`. Versions of one resource share it.
    pub storage_prefix: &'static str,
    /// The OpenAPI definition name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub definition: &'static str,
    #[cfg(test)]
    pub schema: SchemaFn,
    #[cfg(test)]
    pub typed: TypedFn,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResourceInfo({}/{} {})", self.group, self.version, self.plural)
    }
}

impl ResourceInfo {
    /// `v1` for core, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }
    /// `deployments.apps` or `pods`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
    /// The `List` kind returned by list calls.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
    /// Store key of one object. `namespace` is empty for cluster-scoped resources.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        format!("{}/{}/{}", self.storage_prefix, namespace, name)
    }
    /// Store prefix of all objects in a namespace, or of all objects when `namespace` is None.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}/{}/", self.storage_prefix, ns),
            _ => format!("{}/", self.storage_prefix),
        }
    }
}

macro_rules! sub {
    ($name:literal, $kind:literal) => {
        Subresource { name: $name, kind: $kind, group: "", version: "", verbs: &["get", "patch", "update"] }
    };
    ($name:literal, $kind:literal, $group:literal, $version:literal, $verbs:expr) => {
        Subresource { name: $name, kind: $kind, group: $group, version: $version, verbs: $verbs }
    };
}

const STATUS: Subresource = sub!("status", "");
const SCALE: Subresource = sub!("scale", "Scale", "autoscaling", "v1", &["get", "patch", "update"]);

macro_rules! res {
    (
        $group:literal, $version:literal, $kind:literal, $plural:literal, $singular:literal,
        namespaced: $ns:expr, verbs: $verbs:expr, short: [$($short:literal),*], categories: [$($cat:literal),*],
        subresources: [$($sub:expr),*], storage: $storage:expr, prefix: $prefix:literal,
        ty: $ty:ty, def: $def:literal
    ) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            verbs: $verbs,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
            storage: $storage,
            storage_prefix: $prefix,
            definition: $def,
            #[cfg(test)]
            schema: |g: &mut schemars::SchemaGenerator| g.subschema_for::<$ty>(),
            #[cfg(test)]
            typed: |v: &serde_json::Value| crate::api::decode::typed::<$ty>(v),
        }
    };
}

#[cfg(test)]
use k8s_openapi::api as k;

/// Every served resource, in the order discovery lists them.
pub static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    res!("", "v1", "Binding", "bindings", "binding", namespaced: true, verbs: CREATE_ONLY, short: [], categories: [],
        subresources: [], storage: Storage::Virtual, prefix: "/core/bindings", ty: k::core::v1::Binding, def: "io.k8s.api.core.v1.Binding"),
    res!("", "v1", "ComponentStatus", "componentstatuses", "componentstatus", namespaced: false, verbs: READ_ONLY, short: ["cs"], categories: [],
        subresources: [], storage: Storage::Virtual, prefix: "/core/componentstatuses", ty: k::core::v1::ComponentStatus, def: "io.k8s.api.core.v1.ComponentStatus"),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", namespaced: true, verbs: ALL_VERBS, short: ["cm"], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/core/configmaps", ty: k::core::v1::ConfigMap, def: "io.k8s.api.core.v1.ConfigMap"),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", namespaced: true, verbs: ALL_VERBS, short: ["ep"], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/core/endpoints", ty: k::core::v1::Endpoints, def: "io.k8s.api.core.v1.Endpoints"),
    res!("", "v1", "Event", "events", "event", namespaced: true, verbs: ALL_VERBS, short: ["ev"], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/core/events", ty: k::core::v1::Event, def: "io.k8s.api.core.v1.Event"),
    res!("", "v1", "LimitRange", "limitranges", "limitrange", namespaced: true, verbs: ALL_VERBS, short: ["limits"], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/core/limitranges", ty: k::core::v1::LimitRange, def: "io.k8s.api.core.v1.LimitRange"),
    res!("", "v1", "Namespace", "namespaces", "namespace", namespaced: false, verbs: NS_VERBS, short: ["ns"], categories: [],
        subresources: [STATUS, sub!("finalize", "", "", "", &["update"])], storage: Storage::Stored, prefix: "/core/namespaces", ty: k::core::v1::Namespace, def: "io.k8s.api.core.v1.Namespace"),
    res!("", "v1", "Node", "nodes", "node", namespaced: false, verbs: ALL_VERBS, short: ["no"], categories: [],
        subresources: [STATUS, sub!("proxy", "NodeProxyOptions", "", "", &["create", "delete", "get", "patch", "update"])], storage: Storage::Stored, prefix: "/core/nodes", ty: k::core::v1::Node, def: "io.k8s.api.core.v1.Node"),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", namespaced: true, verbs: ALL_VERBS, short: ["pvc"], categories: [],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/core/persistentvolumeclaims", ty: k::core::v1::PersistentVolumeClaim, def: "io.k8s.api.core.v1.PersistentVolumeClaim"),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", namespaced: false, verbs: ALL_VERBS, short: ["pv"], categories: [],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/core/persistentvolumes", ty: k::core::v1::PersistentVolume, def: "io.k8s.api.core.v1.PersistentVolume"),
    res!("", "v1", "Pod", "pods", "pod", namespaced: true, verbs: ALL_VERBS, short: ["po"], categories: ["all"],
        subresources: [
            sub!("attach", "PodAttachOptions", "", "", &["create", "get"]),
            sub!("binding", "Binding", "", "", &["create"]),
            sub!("ephemeralcontainers", "Pod", "", "", &["get", "patch", "update"]),
            sub!("eviction", "Eviction", "policy", "v1", &["create"]),
            sub!("exec", "PodExecOptions", "", "", &["create", "get"]),
            sub!("log", "Pod", "", "", &["get"]),
            sub!("portforward", "PodPortForwardOptions", "", "", &["create", "get"]),
            sub!("proxy", "PodProxyOptions", "", "", &["create", "delete", "get", "patch", "update"]),
            STATUS
        ], storage: Storage::Stored, prefix: "/core/pods", ty: k::core::v1::Pod, def: "io.k8s.api.core.v1.Pod"),
    res!("", "v1", "PodTemplate", "podtemplates", "podtemplate", namespaced: true, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/core/podtemplates", ty: k::core::v1::PodTemplate, def: "io.k8s.api.core.v1.PodTemplate"),
    res!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", namespaced: true, verbs: ALL_VERBS, short: ["rc"], categories: ["all"],
        subresources: [SCALE, STATUS], storage: Storage::Stored, prefix: "/core/replicationcontrollers", ty: k::core::v1::ReplicationController, def: "io.k8s.api.core.v1.ReplicationController"),
    res!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", namespaced: true, verbs: ALL_VERBS, short: ["quota"], categories: [],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/core/resourcequotas", ty: k::core::v1::ResourceQuota, def: "io.k8s.api.core.v1.ResourceQuota"),
    res!("", "v1", "Secret", "secrets", "secret", namespaced: true, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/core/secrets", ty: k::core::v1::Secret, def: "io.k8s.api.core.v1.Secret"),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", namespaced: true, verbs: ALL_VERBS, short: ["sa"], categories: [],
        subresources: [sub!("token", "TokenRequest", "authentication.k8s.io", "v1", &["create"])], storage: Storage::Stored, prefix: "/core/serviceaccounts", ty: k::core::v1::ServiceAccount, def: "io.k8s.api.core.v1.ServiceAccount"),
    res!("", "v1", "Service", "services", "service", namespaced: true, verbs: ALL_VERBS, short: ["svc"], categories: ["all"],
        subresources: [sub!("proxy", "ServiceProxyOptions", "", "", &["create", "delete", "get", "patch", "update"]), STATUS], storage: Storage::Stored, prefix: "/core/services", ty: k::core::v1::Service, def: "io.k8s.api.core.v1.Service"),
    // admissionregistration.k8s.io/v1
    res!("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", "mutatingwebhookconfiguration", namespaced: false, verbs: ALL_VERBS, short: [], categories: ["api-extensions"],
        subresources: [], storage: Storage::Stored, prefix: "/admissionregistration.k8s.io/mutatingwebhookconfigurations", ty: k::admissionregistration::v1::MutatingWebhookConfiguration, def: "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration"),
    res!("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", "validatingadmissionpolicy", namespaced: false, verbs: ALL_VERBS, short: [], categories: ["api-extensions"],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/admissionregistration.k8s.io/validatingadmissionpolicies", ty: k::admissionregistration::v1::ValidatingAdmissionPolicy, def: "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicy"),
    res!("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", namespaced: false, verbs: ALL_VERBS, short: [], categories: ["api-extensions"],
        subresources: [], storage: Storage::Stored, prefix: "/admissionregistration.k8s.io/validatingadmissionpolicybindings", ty: k::admissionregistration::v1::ValidatingAdmissionPolicyBinding, def: "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBinding"),
    res!("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", "validatingwebhookconfiguration", namespaced: false, verbs: ALL_VERBS, short: [], categories: ["api-extensions"],
        subresources: [], storage: Storage::Stored, prefix: "/admissionregistration.k8s.io/validatingwebhookconfigurations", ty: k::admissionregistration::v1::ValidatingWebhookConfiguration, def: "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration"),
    // apps/v1
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", namespaced: true, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/apps/controllerrevisions", ty: k::apps::v1::ControllerRevision, def: "io.k8s.api.apps.v1.ControllerRevision"),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", namespaced: true, verbs: ALL_VERBS, short: ["ds"], categories: ["all"],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/apps/daemonsets", ty: k::apps::v1::DaemonSet, def: "io.k8s.api.apps.v1.DaemonSet"),
    res!("apps", "v1", "Deployment", "deployments", "deployment", namespaced: true, verbs: ALL_VERBS, short: ["deploy"], categories: ["all"],
        subresources: [SCALE, STATUS], storage: Storage::Stored, prefix: "/apps/deployments", ty: k::apps::v1::Deployment, def: "io.k8s.api.apps.v1.Deployment"),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", namespaced: true, verbs: ALL_VERBS, short: ["rs"], categories: ["all"],
        subresources: [SCALE, STATUS], storage: Storage::Stored, prefix: "/apps/replicasets", ty: k::apps::v1::ReplicaSet, def: "io.k8s.api.apps.v1.ReplicaSet"),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", namespaced: true, verbs: ALL_VERBS, short: ["sts"], categories: ["all"],
        subresources: [SCALE, STATUS], storage: Storage::Stored, prefix: "/apps/statefulsets", ty: k::apps::v1::StatefulSet, def: "io.k8s.api.apps.v1.StatefulSet"),
    // authentication.k8s.io/v1
    res!("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", namespaced: false, verbs: CREATE_ONLY, short: [], categories: [],
        subresources: [], storage: Storage::Virtual, prefix: "/authentication.k8s.io/selfsubjectreviews", ty: k::authentication::v1::SelfSubjectReview, def: "io.k8s.api.authentication.v1.SelfSubjectReview"),
    res!("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", "tokenreview", namespaced: false, verbs: CREATE_ONLY, short: [], categories: [],
        subresources: [], storage: Storage::Virtual, prefix: "/authentication.k8s.io/tokenreviews", ty: k::authentication::v1::TokenReview, def: "io.k8s.api.authentication.v1.TokenReview"),
    // authorization.k8s.io/v1
    res!("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", "localsubjectaccessreview", namespaced: true, verbs: CREATE_ONLY, short: [], categories: [],
        subresources: [], storage: Storage::Virtual, prefix: "/authorization.k8s.io/localsubjectaccessreviews", ty: k::authorization::v1::LocalSubjectAccessReview, def: "io.k8s.api.authorization.v1.LocalSubjectAccessReview"),
    res!("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", "selfsubjectaccessreview", namespaced: false, verbs: CREATE_ONLY, short: [], categories: [],
        subresources: [], storage: Storage::Virtual, prefix: "/authorization.k8s.io/selfsubjectaccessreviews", ty: k::authorization::v1::SelfSubjectAccessReview, def: "io.k8s.api.authorization.v1.SelfSubjectAccessReview"),
    res!("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", "selfsubjectrulesreview", namespaced: false, verbs: CREATE_ONLY, short: [], categories: [],
        subresources: [], storage: Storage::Virtual, prefix: "/authorization.k8s.io/selfsubjectrulesreviews", ty: k::authorization::v1::SelfSubjectRulesReview, def: "io.k8s.api.authorization.v1.SelfSubjectRulesReview"),
    res!("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", "subjectaccessreview", namespaced: false, verbs: CREATE_ONLY, short: [], categories: [],
        subresources: [], storage: Storage::Virtual, prefix: "/authorization.k8s.io/subjectaccessreviews", ty: k::authorization::v1::SubjectAccessReview, def: "io.k8s.api.authorization.v1.SubjectAccessReview"),
    // autoscaling/v2 (preferred) and v1. Upstream serves one set of objects in both versions,
    // converting between them; until that conversion exists here, each version keeps its own
    // objects so neither ever answers with the other's shape.
    res!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", namespaced: true, verbs: ALL_VERBS, short: ["hpa"], categories: ["all"],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/autoscaling/horizontalpodautoscalers", ty: k::autoscaling::v2::HorizontalPodAutoscaler, def: "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"),
    res!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", namespaced: true, verbs: ALL_VERBS, short: ["hpa"], categories: ["all"],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/autoscaling/horizontalpodautoscalers", ty: k::autoscaling::v1::HorizontalPodAutoscaler, def: "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler"),
    // batch/v1
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", namespaced: true, verbs: ALL_VERBS, short: ["cj"], categories: ["all"],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/batch/cronjobs", ty: k::batch::v1::CronJob, def: "io.k8s.api.batch.v1.CronJob"),
    res!("batch", "v1", "Job", "jobs", "job", namespaced: true, verbs: ALL_VERBS, short: [], categories: ["all"],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/batch/jobs", ty: k::batch::v1::Job, def: "io.k8s.api.batch.v1.Job"),
    // certificates.k8s.io/v1
    res!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", namespaced: false, verbs: ALL_VERBS, short: ["csr"], categories: [],
        subresources: [sub!("approval", ""), STATUS], storage: Storage::Stored, prefix: "/certificates.k8s.io/certificatesigningrequests", ty: k::certificates::v1::CertificateSigningRequest, def: "io.k8s.api.certificates.v1.CertificateSigningRequest"),
    // coordination.k8s.io/v1
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", namespaced: true, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/coordination.k8s.io/leases", ty: k::coordination::v1::Lease, def: "io.k8s.api.coordination.v1.Lease"),
    // discovery.k8s.io/v1
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", namespaced: true, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/discovery.k8s.io/endpointslices", ty: k::discovery::v1::EndpointSlice, def: "io.k8s.api.discovery.v1.EndpointSlice"),
    // events.k8s.io/v1
    res!("events.k8s.io", "v1", "Event", "events", "event", namespaced: true, verbs: ALL_VERBS, short: ["ev"], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/core/events", ty: k::events::v1::Event, def: "io.k8s.api.events.v1.Event"),
    // networking.k8s.io/v1
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", namespaced: false, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/networking.k8s.io/ingressclasses", ty: k::networking::v1::IngressClass, def: "io.k8s.api.networking.v1.IngressClass"),
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", namespaced: true, verbs: ALL_VERBS, short: ["ing"], categories: [],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/networking.k8s.io/ingresses", ty: k::networking::v1::Ingress, def: "io.k8s.api.networking.v1.Ingress"),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", namespaced: true, verbs: ALL_VERBS, short: ["netpol"], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/networking.k8s.io/networkpolicies", ty: k::networking::v1::NetworkPolicy, def: "io.k8s.api.networking.v1.NetworkPolicy"),
    // node.k8s.io/v1
    res!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", namespaced: false, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/node.k8s.io/runtimeclasses", ty: k::node::v1::RuntimeClass, def: "io.k8s.api.node.v1.RuntimeClass"),
    // policy/v1
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", namespaced: true, verbs: ALL_VERBS, short: ["pdb"], categories: [],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/policy/poddisruptionbudgets", ty: k::policy::v1::PodDisruptionBudget, def: "io.k8s.api.policy.v1.PodDisruptionBudget"),
    // rbac.authorization.k8s.io/v1
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", namespaced: false, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/rbac.authorization.k8s.io/clusterrolebindings", ty: k::rbac::v1::ClusterRoleBinding, def: "io.k8s.api.rbac.v1.ClusterRoleBinding"),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", namespaced: false, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/rbac.authorization.k8s.io/clusterroles", ty: k::rbac::v1::ClusterRole, def: "io.k8s.api.rbac.v1.ClusterRole"),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", namespaced: true, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/rbac.authorization.k8s.io/rolebindings", ty: k::rbac::v1::RoleBinding, def: "io.k8s.api.rbac.v1.RoleBinding"),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", namespaced: true, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/rbac.authorization.k8s.io/roles", ty: k::rbac::v1::Role, def: "io.k8s.api.rbac.v1.Role"),
    // scheduling.k8s.io/v1
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", namespaced: false, verbs: ALL_VERBS, short: ["pc"], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/scheduling.k8s.io/priorityclasses", ty: k::scheduling::v1::PriorityClass, def: "io.k8s.api.scheduling.v1.PriorityClass"),
    // storage.k8s.io/v1
    res!("storage.k8s.io", "v1", "CSIDriver", "csidrivers", "csidriver", namespaced: false, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/storage.k8s.io/csidrivers", ty: k::storage::v1::CSIDriver, def: "io.k8s.api.storage.v1.CSIDriver"),
    res!("storage.k8s.io", "v1", "CSINode", "csinodes", "csinode", namespaced: false, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/storage.k8s.io/csinodes", ty: k::storage::v1::CSINode, def: "io.k8s.api.storage.v1.CSINode"),
    res!("storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities", "csistoragecapacity", namespaced: true, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/storage.k8s.io/csistoragecapacities", ty: k::storage::v1::CSIStorageCapacity, def: "io.k8s.api.storage.v1.CSIStorageCapacity"),
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", namespaced: false, verbs: ALL_VERBS, short: ["sc"], categories: [],
        subresources: [], storage: Storage::Stored, prefix: "/storage.k8s.io/storageclasses", ty: k::storage::v1::StorageClass, def: "io.k8s.api.storage.v1.StorageClass"),
    res!("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", "volumeattachment", namespaced: false, verbs: ALL_VERBS, short: [], categories: [],
        subresources: [STATUS], storage: Storage::Stored, prefix: "/storage.k8s.io/volumeattachments", ty: k::storage::v1::VolumeAttachment, def: "io.k8s.api.storage.v1.VolumeAttachment"),
];

/// An API group with its served versions, preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: &'static str,
    pub versions: Vec<&'static str>,
}

/// Groups in discovery order (core excluded), each with its versions, preferred first.
pub fn groups() -> Vec<GroupInfo> {
    let mut out: Vec<GroupInfo> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|g| g.name == r.group) {
            Some(g) => {
                if !g.versions.contains(&r.version) {
                    g.versions.push(r.version);
                }
            }
            None => out.push(GroupInfo { name: r.group, versions: vec![r.version] }),
        }
    }
    out
}

/// The resources of one group/version.
pub fn resources_in(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    let (group, version) = (group.to_string(), version.to_string());
    RESOURCES.iter().filter(move |r| r.group == group && r.version == version)
}

/// Looks up a resource by group, version and plural.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks up the preferred version's entry by group and Kind.
pub fn lookup_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

/// Whether a group/version is served at all.
pub fn serves_group_version(group: &str, version: &str) -> bool {
    RESOURCES.iter().any(|r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_unique_per_group_version() {
        let mut seen = std::collections::HashSet::new();
        for r in RESOURCES {
            assert!(seen.insert((r.group, r.version, r.plural)), "duplicate {r:?}");
            assert!(r.storage_prefix.ends_with(r.plural), "{r:?}");
        }
    }

    #[test]
    fn versions_share_storage_only_through_conversion() {
        for a in RESOURCES.iter().filter(|r| r.storage == Storage::Stored) {
            let sharing: Vec<_> = RESOURCES.iter().filter(|b| b.storage_prefix == a.storage_prefix).collect();
            let stored_as = crate::api::convert::storage_version(a).unwrap_or(a);
            for b in sharing {
                let b_stored_as = crate::api::convert::storage_version(b).unwrap_or(b);
                assert!(std::ptr::eq(stored_as, b_stored_as), "{a:?} and {b:?} share storage without conversion");
            }
        }
    }

    #[test]
    fn autoscaling_prefers_v2() {
        let g = groups().into_iter().find(|g| g.name == "autoscaling").unwrap();
        assert_eq!(g.versions, vec!["v2", "v1"]);
    }

    #[test]
    fn keys() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!(pods.key("default", "web"), "/core/pods/default/web");
        assert_eq!(pods.prefix(Some("default")), "/core/pods/default/");
        let nodes = lookup("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key("", "n1"), "/core/nodes//n1");
        assert_eq!(nodes.prefix(Some("default")), "/core/nodes/");
    }
}
