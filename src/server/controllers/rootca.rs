//! The root-ca-cert-publisher: a `kube-root-ca.crt` ConfigMap with the cluster CA bundle in
//! every active namespace, so pods can verify the API server; restored when changed or deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::per_namespace::keep_in_every_namespace;

pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let ca = ctx.ca_pem.clone();
    let ca2 = ca.clone();
    keep_in_every_namespace::<ConfigMap>(
        ctx,
        cancel,
        "root-ca-cert-publisher",
        NAME,
        move |ns| ConfigMap {
            metadata: ObjectMeta {
                name: Some(NAME.into()),
                namespace: Some(ns.into()),
                annotations: Some(BTreeMap::from([("kubernetes.io/description".into(), DESCRIPTION.into())])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("ca.crt".to_string(), ca.clone())])),
            ..Default::default()
        },
        move |cm| cm.data.as_ref().and_then(|d| d.get("ca.crt")) != Some(&ca2),
    )
    .await
}
