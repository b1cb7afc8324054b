//! Matching rules shared by the scheduler and the controllers that place or pick pods: label
//! selectors, node selector terms, and taints against tolerations, over k8s-openapi types.
//! Pure functions; invalid selectors (rejected by API validation) match nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `sel`. An empty selector matches everything; use
/// [`selector_matches_opt`] where a missing selector must match nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &sel.match_labels
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or(&[]);
        let has = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => has.is_some_and(|v| values.contains(v)),
            "NotIn" => has.is_none_or(|v| !values.contains(v)),
            "Exists" => has.is_some(),
            "DoesNotExist" => has.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A missing selector matches nothing (how controllers treat a nil selector).
pub fn selector_matches_opt(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    sel.is_some_and(|s| selector_matches(s, labels))
}

/// Whether the selector selects nothing at all (an empty selector selects everything).
pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let has = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => has.is_some_and(|v| values.contains(v)),
        "NotIn" => has.is_none_or(|v| !values.contains(v)),
        "Exists" => has.is_some(),
        "DoesNotExist" => has.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (has.and_then(|v| v.parse::<i64>().ok()), values.first()) else {
                return false;
            };
            let Ok(bound) = bound.parse::<i64>() else { return false };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// Whether a node with `labels` and `name` matches one term (all its requirements). A term
/// with no requirements matches nothing, as upstream.
pub fn node_term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let node_fields: BTreeMap<String, String> = [("metadata.name".to_string(), name.to_string())].into();
    exprs.iter().all(|r| requirement_matches(r, labels)) && fields.iter().all(|r| requirement_matches(r, &node_fields))
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            if key.is_empty() {
                return false;
            }
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration], effects: &[&str]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| effects.contains(&t.effect.as_str()))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selector_matches(&sel, &labels(&[("app", "web")])));
        assert!(!selector_matches(&sel, &labels(&[("app", "web"), ("tier", "db")])));
        assert!(!selector_matches(&sel, &labels(&[("app", "api")])));
        assert!(selector_matches(&LabelSelector::default(), &labels(&[])));
        assert!(!selector_matches_opt(None, &labels(&[])));
    }

    #[test]
    fn node_terms_and_taints() {
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "cores".into(),
                operator: "Gt".into(),
                values: Some(vec!["4".into()]),
            }]),
            match_fields: None,
        };
        assert!(node_term_matches(&term, &labels(&[("cores", "8")]), "n"));
        assert!(!node_term_matches(&term, &labels(&[("cores", "2")]), "n"));
        assert!(!node_term_matches(&NodeSelectorTerm::default(), &labels(&[]), "n"));

        let taint =
            Taint { key: "dedicated".into(), value: Some("gpu".into()), effect: "NoSchedule".into(), time_added: None };
        let equal = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("gpu".into()),
            ..Default::default()
        };
        let exists_all = Toleration { operator: Some("Exists".into()), ..Default::default() };
        let other = Toleration { key: Some("dedicated".into()), value: Some("cpu".into()), ..Default::default() };
        assert!(tolerates(&equal, &taint));
        assert!(tolerates(&exists_all, &taint));
        assert!(!tolerates(&other, &taint));
        let taints = [taint];
        assert!(untolerated(&taints, &[other], &["NoSchedule"]).is_some());
        assert!(untolerated(&taints, &[], &["NoExecute"]).is_none());
    }
}
