//! The serviceaccount controller: a `default` ServiceAccount in every active namespace,
//! recreated when deleted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::per_namespace::keep_in_every_namespace;

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    keep_in_every_namespace::<ServiceAccount>(
        ctx,
        cancel,
        "serviceaccount-controller",
        "default",
        |ns| ServiceAccount {
            metadata: ObjectMeta { name: Some("default".into()), namespace: Some(ns.into()), ..Default::default() },
            ..Default::default()
        },
        |_| false,
    )
    .await
}
