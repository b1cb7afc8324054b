//! Objects every cluster has: the four system namespaces, the `default/kubernetes` Service with
//! its Endpoints and EndpointSlice pointing at the API server, and `kube-system/kube-dns`, which
//! holds the cluster DNS address (every node answers on it itself, so it selects no pods).
//!
//! Runs at every start and converges: missing objects are created, a moved advertise address
//! or port is updated, nothing else is touched.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::api::registry;
use crate::api::status::ApiError;

use super::auth::{MASTERS, UserInfo};
use super::objects::{FieldValidation, Objects, WriteCtx};

/// Namespaces created at start.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The API server's own identity for the objects it writes at start.
pub(crate) fn system_ctx() -> WriteCtx {
    WriteCtx {
        user: UserInfo { name: "system:apiserver".into(), groups: vec![MASTERS.into()], ..Default::default() },
        dry_run: false,
        field_manager: "skiff-apiserver".into(),
        validation: FieldValidation::Ignore,
        warnings: Vec::new(),
        apply: None,
        body: Default::default(),
    }
}

async fn ensure(
    objects: &Objects,
    plural: &str,
    group: &str,
    ns: &str,
    obj: Value,
    reconcile: &[&str],
) -> Result<(), ApiError> {
    let info = registry::RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .ok_or_else(|| ApiError::internal(format!("no resource {plural}")))?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    match objects.get(info, ns, &name).await {
        Ok(current) => {
            let stale = reconcile.iter().any(|f| current.get(*f) != obj.get(*f));
            if stale {
                let mut c = system_ctx();
                let fields: Vec<String> = reconcile.iter().map(|s| s.to_string()).collect();
                objects
                    .update_with(info, ns, &name, "", &mut c, |cur, _| {
                        let mut next = cur.clone();
                        for f in &fields {
                            if let Some(v) = obj.get(f.as_str()) {
                                next[f.as_str()] = v.clone();
                            }
                        }
                        crate::api::meta::meta_mut(&mut next).remove("resourceVersion");
                        Ok(next)
                    })
                    .await?;
            }
            Ok(())
        }
        Err(e) if e.code == 404 => {
            let mut c = system_ctx();
            match objects.create(info, ns, obj, &mut c).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Creates or repairs the bootstrap objects.
pub async fn run(
    objects: &Objects,
    service_ip: IpAddr,
    advertise: IpAddr,
    port: u16,
    cluster_dns: IpAddr,
) -> Result<(), ApiError> {
    for ns in SYSTEM_NAMESPACES {
        ensure(
            objects,
            "namespaces",
            "",
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            &[],
        )
        .await?;
    }
    // The two system priority classes upstream creates, for critical add-ons.
    for (name, value, description) in [
        (
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ] {
        ensure(
            objects,
            "priorityclasses",
            "scheduling.k8s.io",
            "",
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                "value": value, "description": description, "preemptionPolicy": "PreemptLowerPriority"}),
            &[],
        )
        .await?;
    }
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    ensure(
        objects,
        "services",
        "",
        "default",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": service_ip.to_string(),
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
                "sessionAffinity": "None",
            },
        }),
        &[],
    )
    .await?;
    let family = if advertise.is_ipv4() { "IPv4" } else { "IPv6" };
    ensure(
        objects,
        "endpoints",
        "",
        "default",
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": advertise.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        }),
        &["subsets"],
    )
    .await?;
    ensure(
        objects,
        "endpointslices",
        "discovery.k8s.io",
        "default",
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": family,
            "endpoints": [{"addresses": [advertise.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }),
        &["endpoints", "ports", "addressType"],
    )
    .await?;
    // The cluster DNS address, reserved by the Service clients look for (`k8s-app=kube-dns`).
    let dns = ensure(
        objects,
        "services",
        "",
        "kube-system",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {
                "k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "KubeDNS"}},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": cluster_dns.to_string(),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        }),
        &[],
    )
    .await;
    if let Err(e) = dns {
        // Another Service holds the address (created before this one existed): DNS still works,
        // but that Service is not proxied. Say so rather than refuse to start.
        tracing::warn!(error = %e.message, "cannot create kube-system/kube-dns for the cluster DNS address");
    }
    Ok(())
}

/// Marks every stored Service's addresses and ports as taken.
pub async fn restore_allocations(objects: &Objects) -> Result<(), ApiError> {
    let info = registry::lookup("", "v1", "services").ok_or_else(|| ApiError::internal("no services"))?;
    let r = objects.store.range(&info.prefix(None), None, 0, None).await.map_err(ApiError::internal)?;
    for kv in r.kvs {
        if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
            objects.alloc.restore(&v);
        }
    }
    Ok(())
}
