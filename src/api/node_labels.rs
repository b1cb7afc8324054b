//! Which Node labels a node may set on itself: upstream's kubelet-owned labels. The API
//! server's NodeRestriction admission refuses the others from node credentials, and the agent
//! refuses them in `--node-label` before it starts.

/// Labels a kubelet may set although they are in a kubernetes.io namespace (upstream's
/// `k8s.io/kubelet/pkg/apis` well-known labels).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label namespaces a kubelet owns (with their subdomains).
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn in_domain(namespace: &str, domain: &str) -> bool {
    namespace == domain || namespace.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// Whether a node may not add, change or remove the label `key` on its own Node: anything
/// under `node-restriction.kubernetes.io/`, and kubernetes.io or k8s.io labels a kubelet does
/// not own (`node-role.kubernetes.io/*` among them).
pub fn restricted(key: &str) -> bool {
    let ns = key.split_once('/').map(|(ns, _)| ns).unwrap_or("");
    if in_domain(ns, "node-restriction.kubernetes.io") {
        return true;
    }
    let kubernetes = in_domain(ns, "kubernetes.io") || in_domain(ns, "k8s.io");
    let kubelets = KUBELET_LABELS.contains(&key) || KUBELET_LABEL_NAMESPACES.iter().any(|d| in_domain(ns, d));
    kubernetes && !kubelets
}

#[cfg(test)]
mod tests {
    use super::restricted;

    #[test]
    fn kubelet_labels_and_the_rest() {
        for free in
            ["zone", "example.com/rack", "kubernetes.io/arch", "node.kubernetes.io/pool", "x.kubelet.kubernetes.io/y"]
        {
            assert!(!restricted(free), "{free}");
        }
        for key in [
            "node-role.kubernetes.io/worker",
            "node-restriction.kubernetes.io/pool",
            "a.node-restriction.kubernetes.io/pool",
            "tier.k8s.io/x",
            "kubernetes.io/role",
        ] {
            assert!(restricted(key), "{key}");
        }
        // A domain that merely ends in the same letters is someone else's.
        assert!(!restricted("notkubernetes.io/x"));
    }
}
