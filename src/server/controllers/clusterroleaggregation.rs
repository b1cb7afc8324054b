//! The clusterrole-aggregation controller, as upstream's: a ClusterRole with an
//! `aggregationRule` gets as its rules the rules of every other ClusterRole its selectors
//! match (in name order, each rule once). This is how `admin`, `edit` and `view` gather the
//! `system:aggregate-to-*` roles and whatever a user labels to join them.
//!
//! Invariant: it writes only the `rules` of ClusterRoles that have an aggregationRule.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::runtime::informer::next_change;
use crate::runtime::matching::selector_matches;
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Informer, Key, WorkQueue};

const COMPONENT: &str = "clusterrole-aggregation";

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let roles = ctx.informers.get::<ClusterRole>();
    let mut changes = roles.subscribe();
    roles.synced().await;
    let queue = WorkQueue::<Key>::new();
    // Any change can alter what some aggregated role gathers.
    let queue_aggregated = |queue: &WorkQueue<Key>| {
        for r in roles.list().iter().filter(|r| r.aggregation_rule.is_some()) {
            queue.add(Key::of(r.as_ref()));
        }
    };
    queue_aggregated(&queue);
    let workers = {
        let (client, roles) = (ctx.client.clone(), roles.clone());
        tokio::spawn(run_workers(COMPONENT, queue.clone(), 1, cancel.clone(), move |key: Key| {
            let (client, roles) = (client.clone(), roles.clone());
            async move { process(&client, &roles, &key).await }
        }))
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut changes) => match ch {
                Some(_) => queue_aggregated(&queue),
                None => break,
            },
        }
    }
    let _ = workers.await;
}

/// The rules `role` aggregates from `all`.
pub fn aggregated_rules(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Vec<PolicyRule> {
    let selectors = role.aggregation_rule.as_ref().and_then(|a| a.cluster_role_selectors.clone()).unwrap_or_default();
    let mut sources: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.metadata.name != role.metadata.name)
        .filter(|r| {
            let labels = r.metadata.labels.clone().unwrap_or_default();
            selectors.iter().any(|s| selector_matches(s, &labels))
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out: Vec<PolicyRule> = Vec::new();
    for r in sources {
        for rule in r.rules.iter().flatten() {
            if !out.contains(rule) {
                out.push(rule.clone());
            }
        }
    }
    out
}

async fn process(client: &kube::Client, roles: &Informer<ClusterRole>, key: &Key) -> Result<Next, kube::Error> {
    let Some(role) = roles.get("", &key.name) else { return Ok(Next::Done) };
    if role.aggregation_rule.is_none() {
        return Ok(Next::Done);
    }
    let want = aggregated_rules(&role, &roles.list());
    if role.rules.as_deref().unwrap_or_default() == want.as_slice() {
        return Ok(Next::Done);
    }
    let mut next = (*role).clone();
    next.rules = Some(want);
    let api: Api<ClusterRole> = Api::all(client.clone());
    match api.replace(&key.name, &PostParams::default(), &next).await {
        Ok(_) => Ok(Next::Done),
        // A newer version is on its way through the informer, which queues the role again.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(Next::Done),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn role(name: &str, label: Option<&str>, verbs: &[&str]) -> Arc<ClusterRole> {
        Arc::new(ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: label.map(|l| [(l.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            rules: Some(
                verbs
                    .iter()
                    .map(|v| PolicyRule {
                        verbs: vec![v.to_string()],
                        api_groups: Some(vec!["".into()]),
                        resources: Some(vec!["pods".into()]),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        })
    }

    #[test]
    fn gathers_matching_roles_in_name_order_once() {
        let mut view = (*role("view", None, &[])).clone();
        view.aggregation_rule = Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some([("agg".to_string(), "true".to_string())].into()),
                ..Default::default()
            }]),
        });
        let all = vec![
            role("z-extra", Some("agg"), &["watch", "get"]),
            role("a-base", Some("agg"), &["get", "list"]),
            role("other", Some("nope"), &["delete"]),
            Arc::new(view.clone()),
        ];
        let verbs: Vec<String> = aggregated_rules(&view, &all).iter().map(|r| r.verbs[0].clone()).collect();
        assert_eq!(verbs, ["get", "list", "watch"]);
    }
}
