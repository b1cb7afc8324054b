//! RBAC through the real binary and the real kubectl: the default policy, authorization of
//! service accounts and certificate users by their bindings, escalation prevention, and what
//! `kubectl auth can-i` answers. Expected messages and listings are upstream's.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Server;

fn out(o: &std::process::Output) -> (bool, String, String) {
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok_as(s: &Server, kc: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = out(&s.kubectl_as(kc, args));
    assert!(ok, "kubectl {args:?} failed: {stderr}");
    stdout
}

fn fails_as(s: &Server, kc: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = out(&s.kubectl_as(kc, args));
    assert!(!ok, "kubectl {args:?} unexpectedly succeeded: {stdout}");
    stderr
}

fn apply_as(s: &Server, kc: &Path, manifest: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(common::KUBECTL)
        .args(["create", "-f", "-"])
        .env("KUBECONFIG", kc)
        .env("HOME", s.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn rule_lines(json: &serde_json::Value) -> Vec<String> {
    json["rules"].as_array().cloned().unwrap_or_default().iter().map(|r| r.to_string()).collect()
}

#[test]
fn default_policy_exists_and_aggregates() {
    let s = Server::start();
    for role in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:node-proxier",
        "system:node-bootstrapper",
        "system:kube-scheduler",
        "system:volume-scheduler",
        "system:kube-controller-manager",
        "system:controller:deployment-controller",
        "system:controller:replicaset-controller",
        "system:controller:generic-garbage-collector",
        "system:controller:clusterrole-aggregation-controller",
        "system:aggregate-to-view",
    ] {
        let r = s.get_json(&["clusterrole", role]);
        assert_eq!(r["metadata"]["labels"]["kubernetes.io/bootstrapping"], "rbac-defaults", "{role}");
        assert_eq!(r["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"], "true", "{role}");
    }
    for (binding, subject) in [
        ("cluster-admin", "system:masters"),
        ("system:basic-user", "system:authenticated"),
        ("system:discovery", "system:authenticated"),
        ("system:public-info-viewer", "system:unauthenticated"),
        ("system:kube-scheduler", "system:kube-scheduler"),
        ("system:controller:job-controller", "job-controller"),
    ] {
        let b = s.get_json(&["clusterrolebinding", binding]);
        assert!(b["subjects"].as_array().unwrap().iter().any(|x| x["name"] == subject), "{binding}: {b}");
    }
    let lock = s.get_json(&["rolebinding", "-n", "kube-system", "system::leader-locking-kube-scheduler"]);
    assert_eq!(lock["roleRef"]["kind"], "Role");
    let public = s.get_json(&["role", "-n", "kube-public", "system:controller:bootstrap-signer"]);
    assert_eq!(public["rules"][1]["resourceNames"], serde_json::json!(["cluster-info"]));

    // view gathers system:aggregate-to-view; edit gathers view; admin gathers edit.
    let has = |role: &str, rule: &str| rule_lines(&s.get_json(&["clusterrole", role])).iter().any(|l| l == rule);
    let pods_read = r#"{"apiGroups":[""],"resources":["configmaps","endpoints","persistentvolumeclaims","persistentvolumeclaims/status","pods","replicationcontrollers","replicationcontrollers/scale","serviceaccounts","services","services/status"],"verbs":["get","list","watch"]}"#;
    s.wait_for("view to aggregate", Duration::from_secs(10), || has("view", pods_read));
    s.wait_for("admin to aggregate view through edit", Duration::from_secs(10), || has("admin", pods_read));
    let local_reviews =
        r#"{"apiGroups":["authorization.k8s.io"],"resources":["localsubjectaccessreviews"],"verbs":["create"]}"#;
    assert!(has("admin", local_reviews));
    assert!(!has("edit", local_reviews));

    // A role labelled to join view is aggregated; the label removed, it leaves again.
    s.apply(
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}]}"#,
    );
    let widgets = r#"{"apiGroups":["example.com"],"resources":["widgets"],"verbs":["get"]}"#;
    s.wait_for("view to gather widgets", Duration::from_secs(10), || has("view", widgets));
    s.wait_for("admin to gather widgets", Duration::from_secs(10), || has("admin", widgets));
    s.ok(&["label", "clusterrole", "widgets-view", "rbac.authorization.k8s.io/aggregate-to-view-"]);
    s.wait_for("view to drop widgets", Duration::from_secs(10), || !has("view", widgets));

    // A restart reconciles: a deleted default comes back, a user's addition stays.
    s.ok(&["delete", "clusterrole", "system:heapster"]);
    s.ok(&["patch", "clusterrolebinding", "system:discovery", "--type=json",
        "-p", r#"[{"op": "add", "path": "/subjects/-", "value": {"kind": "User", "name": "extra", "apiGroup": "rbac.authorization.k8s.io"}}]"#]);
    let mut s = s;
    s.terminate();
    s.launch();
    s.ok(&["get", "clusterrole", "system:heapster"]);
    let b = s.get_json(&["clusterrolebinding", "system:discovery"]);
    assert_eq!(b["subjects"].as_array().unwrap().len(), 2, "{b}");
}

#[test]
fn service_account_with_view_reads_and_cannot_write() {
    let s = Server::start();
    s.ok(&["create", "namespace", "shop"]);
    s.ok(&["create", "serviceaccount", "robot", "-n", "shop"]);
    s.ok(&["create", "rolebinding", "robot-view", "--clusterrole=view", "--serviceaccount=shop:robot", "-n", "shop"]);
    s.ok(&["create", "configmap", "settings", "-n", "shop", "--from-literal=a=b"]);
    let token = s.ok(&["create", "token", "robot", "-n", "shop"]);
    let kc = s.token_kubeconfig("robot", &token);
    s.wait_for("view to aggregate", Duration::from_secs(10), || {
        s.kubectl_as(&kc, &["get", "configmaps", "-n", "shop"]).status.success()
    });
    assert!(ok_as(&s, &kc, &["get", "configmaps", "-n", "shop"]).contains("settings"));
    ok_as(&s, &kc, &["get", "pods", "-n", "shop"]);
    let err = fails_as(&s, &kc, &["run", "web", "--image=busybox", "--restart=Never", "-n", "shop"]);
    assert!(
        err.contains(r#"Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:shop:robot" cannot create resource "pods" in API group "" in the namespace "shop""#),
        "{err}"
    );
    // view grants nothing outside its namespace, and no secrets inside it.
    let err = fails_as(&s, &kc, &["get", "pods", "-n", "default"]);
    assert!(
        err.contains(r#"Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:shop:robot" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{err}"
    );
    let err = fails_as(&s, &kc, &["get", "secrets", "-n", "shop"]);
    assert!(err.contains(r#"cannot list resource "secrets" in API group "" in the namespace "shop""#), "{err}");
    assert_eq!(ok_as(&s, &kc, &["auth", "can-i", "watch", "deployments.apps", "-n", "shop"]).trim(), "yes");
    let no = s.kubectl_as(&kc, &["auth", "can-i", "delete", "pods", "-n", "shop"]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    // Deleting the binding takes the access away at once.
    s.ok(&["delete", "rolebinding", "robot-view", "-n", "shop"]);
    fails_as(&s, &kc, &["get", "configmaps", "-n", "shop"]);
}

#[test]
fn escalation_needs_held_permissions_or_bind_and_escalate() {
    let s = Server::start();
    s.ok(&["create", "namespace", "team"]);
    s.ok(&["create", "rolebinding", "erin-edit", "--clusterrole=edit", "--user=erin", "-n", "team"]);
    let erin = s.user_kubeconfig("erin", &[]);
    s.wait_for("edit to aggregate", Duration::from_secs(10), || {
        s.kubectl_as(&erin, &["get", "deployments", "-n", "team"]).status.success()
    });
    // edit may not touch RBAC at all.
    let err = fails_as(
        &s,
        &erin,
        &["create", "rolebinding", "mine", "--clusterrole=cluster-admin", "--user=erin", "-n", "team"],
    );
    assert!(
        err.contains(r#"rolebindings.rbac.authorization.k8s.io is forbidden: User "erin" cannot create resource "rolebindings" in API group "rbac.authorization.k8s.io" in the namespace "team""#),
        "{err}"
    );
    let err =
        fails_as(&s, &erin, &["create", "clusterrolebinding", "mine", "--clusterrole=cluster-admin", "--user=erin"]);
    assert!(
        err.contains(r#"clusterrolebindings.rbac.authorization.k8s.io is forbidden: User "erin" cannot create resource "clusterrolebindings" in API group "rbac.authorization.k8s.io" at the cluster scope"#),
        "{err}"
    );

    // With admin in the namespace erin may write roles and bindings, but only for what she holds.
    s.ok(&["create", "rolebinding", "erin-admin", "--clusterrole=admin", "--user=erin", "-n", "team"]);
    s.wait_for("admin to aggregate", Duration::from_secs(10), || {
        s.kubectl_as(&erin, &["get", "rolebindings", "-n", "team"]).status.success()
    });
    let binding = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "erin-root", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "erin", "apiGroup": "rbac.authorization.k8s.io"}]}"#;
    let (ok, _, err) = out(&apply_as(&s, &erin, binding));
    assert!(!ok);
    assert!(
        err.contains("rolebindings.rbac.authorization.k8s.io \"erin-root\" is forbidden: user \"erin\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}\n{NonResourceURLs:[\"*\"], Verbs:[\"*\"]}"),
        "{err}"
    );
    let role = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "node-peek", "namespace": "team"},
        "rules": [{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list"]}]}"#;
    let (ok, _, err) = out(&apply_as(&s, &erin, role));
    assert!(!ok);
    assert!(
        err.contains("roles.rbac.authorization.k8s.io \"node-peek\" is forbidden: user \"erin\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\" \"list\"]}"),
        "{err}"
    );
    // What she holds she may grant.
    ok_as(&s, &erin, &["create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", "team"]);
    ok_as(&s, &erin, &["create", "rolebinding", "friend", "--role=pod-reader", "--user=frank", "-n", "team"]);

    // `bind` on cluster-admin lets her bind it; `escalate` on roles lets her write any role.
    s.apply(
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "bind-cluster-admin"},
            "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["cluster-admin"]},
                      {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]}]}"#,
    );
    s.ok(&["create", "rolebinding", "erin-bind", "--clusterrole=bind-cluster-admin", "--user=erin", "-n", "team"]);
    let (ok, _, err) = out(&apply_as(&s, &erin, binding));
    assert!(ok, "{err}");
    let (ok, _, err) = out(&apply_as(&s, &erin, role));
    assert!(ok, "{err}");
    assert_eq!(ok_as(&s, &erin, &["auth", "can-i", "delete", "secrets", "-n", "team"]).trim(), "yes");

    // An aggregationRule needs full authority.
    let agg = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "gatherer"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}}"#;
    s.ok(&["create", "clusterrolebinding", "erin-cr", "--clusterrole=erin-cr-writer", "--user=erin"]);
    s.apply(
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "erin-cr-writer"},
            "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["create"]}]}"#,
    );
    let (ok, _, err) = out(&apply_as(&s, &erin, agg));
    assert!(!ok);
    assert!(
        err.contains(r#"clusterroles.rbac.authorization.k8s.io "gatherer" is forbidden: must have cluster-admin privileges to use the aggregationRule"#),
        "{err}"
    );
}

#[test]
fn bindings_to_missing_roles_grant_nothing() {
    let s = Server::start();
    s.ok(&["create", "rolebinding", "dangling", "--clusterrole=no-such-role", "--user=dan"]);
    let dan = s.user_kubeconfig("dan", &[]);
    let err = fails_as(&s, &dan, &["get", "pods"]);
    assert!(
        err.contains(r#"Error from server (Forbidden): pods is forbidden: User "dan" cannot list resource "pods" in API group "" in the namespace "default": RBAC: clusterrole.rbac.authorization.k8s.io "no-such-role" not found"#),
        "{err}"
    );
    // Once the role exists, the binding grants it.
    s.ok(&["create", "clusterrole", "no-such-role", "--verb=list", "--resource=pods"]);
    ok_as(&s, &dan, &["get", "pods"]);
}

#[test]
fn resource_names_subresources_and_urls_decide_as_upstream() {
    let s = Server::start();
    s.ok(&["create", "configmap", "open", "--from-literal=a=b"]);
    s.ok(&["create", "configmap", "closed", "--from-literal=a=b"]);
    s.ok(&["create", "deployment", "web", "--image=busybox"]);
    s.ok(&["create", "role", "narrow", "--verb=get", "--resource=configmaps", "--resource-name=open"]);
    s.apply(
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "scaler", "namespace": "default"},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]}]}"#,
    );
    s.ok(&["create", "rolebinding", "rita-narrow", "--role=narrow", "--user=rita"]);
    s.ok(&["create", "rolebinding", "rita-scale", "--role=scaler", "--user=rita"]);
    let rita = s.user_kubeconfig("rita", &["testers"]);

    ok_as(&s, &rita, &["get", "configmap", "open"]);
    let err = fails_as(&s, &rita, &["get", "configmap", "closed"]);
    assert!(
        err.contains(r#"Error from server (Forbidden): configmaps "closed" is forbidden: User "rita" cannot get resource "configmaps" in API group "" in the namespace "default""#),
        "{err}"
    );
    let err = fails_as(&s, &rita, &["get", "configmaps"]);
    assert!(
        err.contains(r#"User "rita" cannot list resource "configmaps" in API group "" in the namespace "default""#),
        "{err}"
    );

    // A subresource rule grants the subresource only.
    let scale = ok_as(&s, &rita, &["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/web/scale"]);
    assert!(scale.contains("\"kind\":\"Scale\""), "{scale}");
    let err = fails_as(&s, &rita, &["get", "deployment", "web"]);
    assert!(
        err.contains(r#"deployments.apps "web" is forbidden: User "rita" cannot get resource "deployments" in API group "apps" in the namespace "default""#),
        "{err}"
    );
    let can = |args: &[&str]| String::from_utf8_lossy(&s.kubectl_as(&rita, args).stdout).trim().to_string();
    assert_eq!(can(&["auth", "can-i", "get", "deployments.apps", "--subresource=scale"]), "yes");
    assert_eq!(can(&["auth", "can-i", "get", "statefulsets.apps", "--subresource=scale"]), "no");
    // `*/scale` covers every resource's scale subresource, in the group named.
    s.apply(
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "any-scale"},
            "rules": [{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]},
                      {"nonResourceURLs": ["/healthz/*"], "verbs": ["get"]}]}"#,
    );
    s.ok(&["create", "clusterrolebinding", "testers-scale", "--clusterrole=any-scale", "--group=testers"]);
    assert_eq!(can(&["auth", "can-i", "get", "statefulsets.apps", "--subresource=scale"]), "yes");
    assert_eq!(can(&["auth", "can-i", "get", "statefulsets.apps"]), "no");

    // Non-resource URLs: exact paths, and prefixes ending in `*`.
    ok_as(&s, &rita, &["get", "--raw", "/healthz"]);
    ok_as(&s, &rita, &["get", "--raw", "/healthz/ping"]);
    let err = fails_as(&s, &rita, &["get", "--raw", "/livez/ping"]);
    assert!(
        err.contains(r#"Error from server (Forbidden): forbidden: User "rita" cannot get path "/livez/ping""#),
        "{err}"
    );
}

/// Lays rows out as kubectl's tab writer does (cells padded to the widest plus three spaces,
/// the last column unpadded).
fn tabulate(rows: &[[String; 4]]) -> String {
    let widths: Vec<usize> = (0..3).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0) + 3).collect();
    let mut out = String::new();
    for r in rows {
        for c in 0..3 {
            out.push_str(&format!("{:<w$}", r[c], w = widths[c]));
        }
        out.push_str(&r[3]);
        out.push('\n');
    }
    out
}

fn row(resource: &str, urls: &str, names: &str, verbs: &str) -> [String; 4] {
    [resource.to_string(), urls.to_string(), names.to_string(), verbs.to_string()]
}

#[test]
fn can_i_list_matches_upstream() {
    let s = Server::start();
    s.ok(&["create", "namespace", "apps"]);
    s.wait_for("the default service account", Duration::from_secs(10), || {
        s.kubectl(&["get", "serviceaccount", "default", "-n", "apps"]).status.success()
    });
    let token = s.ok(&["create", "token", "default", "-n", "apps"]);
    let sa = s.token_kubeconfig("default-sa", &token);
    // Upstream's rules for a service account without bindings: system:basic-user,
    // system:discovery, system:public-info-viewer and system:service-account-issuer-discovery,
    // broken down, compacted and sorted as kubectl does (duplicate URLs stay).
    let mut expected = vec![
        row("Resources", "Non-Resource URLs", "Resource Names", "Verbs"),
        row("selfsubjectreviews.authentication.k8s.io", "[]", "[]", "[create]"),
        row("selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]"),
        row("selfsubjectrulesreviews.authorization.k8s.io", "[]", "[]", "[create]"),
    ];
    for url in [
        "/.well-known/openid-configuration",
        "/api/*",
        "/api",
        "/apis/*",
        "/apis",
        "/healthz",
        "/healthz",
        "/livez",
        "/livez",
        "/openapi/*",
        "/openapi",
        "/openid/v1/jwks",
        "/readyz",
        "/readyz",
        "/version/",
        "/version/",
        "/version",
        "/version",
    ] {
        expected.push(row("", &format!("[{url}]"), "[]", "[get]"));
    }
    assert_eq!(ok_as(&s, &sa, &["auth", "can-i", "--list", "-n", "apps"]), tabulate(&expected));

    // An edit user: view's and edit's aggregated rules, verbs merged per resource in the order
    // the roles list them (system:aggregate-to-edit before view).
    s.ok(&["create", "rolebinding", "ed-edit", "--clusterrole=edit", "--user=ed", "-n", "apps"]);
    let ed = s.user_kubeconfig("ed", &[]);
    s.wait_for("edit to aggregate", Duration::from_secs(10), || {
        s.kubectl_as(&ed, &["auth", "can-i", "list", "pods", "-n", "apps"]).status.success()
    });
    let listing = ok_as(&s, &ed, &["auth", "can-i", "--list", "-n", "apps"]);
    let lines: Vec<Vec<&str>> = listing.lines().map(|l| l.split_whitespace().collect()).collect();
    for want in [
        vec!["pods", "[]", "[]", "[create", "delete", "deletecollection", "patch", "update", "get", "list", "watch]"],
        vec![
            "secrets",
            "[]",
            "[]",
            "[get",
            "list",
            "watch",
            "create",
            "delete",
            "deletecollection",
            "patch",
            "update]",
        ],
        vec![
            "deployments.apps",
            "[]",
            "[]",
            "[create",
            "delete",
            "deletecollection",
            "patch",
            "update",
            "get",
            "list",
            "watch]",
        ],
        vec![
            "leases.coordination.k8s.io",
            "[]",
            "[]",
            "[create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch]",
        ],
        vec![
            "serviceaccounts",
            "[]",
            "[]",
            "[impersonate",
            "create",
            "delete",
            "deletecollection",
            "patch",
            "update",
            "get",
            "list",
            "watch]",
        ],
        vec!["pods/log", "[]", "[]", "[get", "list", "watch]"],
        vec!["namespaces", "[]", "[]", "[get", "list", "watch]"],
    ] {
        assert!(lines.contains(&want), "missing {want:?} in\n{listing}");
    }
    assert!(!listing.contains("localsubjectaccessreviews"), "{listing}");
    assert!(!listing.contains("rolebindings"), "{listing}");
}

/// The claims of a JWT, unverified (the test reads what the server put in).
fn jwt_part(token: &str, i: usize) -> serde_json::Value {
    use base64::Engine;
    let part = token.trim().split('.').nth(i).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

fn token_review(s: &Server, token: &str, audiences: &[&str]) -> serde_json::Value {
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token.trim(), "audiences": audiences},
    });
    let out = s.apply_stdin(
        &["create", "--raw", "/apis/authentication.k8s.io/v1/tokenreviews", "-f", "-"],
        &review.to_string(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("review")["status"].clone()
}

#[test]
fn pods_get_their_account_and_bound_tokens_die_with_their_pod() {
    let s = Server::start();
    s.ok(&["create", "namespace", "shop"]);
    s.ok(&["create", "serviceaccount", "robot", "-n", "shop"]);
    // ServiceAccount admission: the account must exist; `default` is the default and is
    // waited for while its controller creates it in a new namespace.
    let out = s.apply_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q", "namespace": "shop"},
            "spec": {"serviceAccountName": "ghost", "containers": [{"name": "c", "image": "busybox"}]}}"#,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        r#"Error from server (Forbidden): error when creating "STDIN": pods "q" is forbidden: service account shop/ghost was not found, retry after the service account is created"#
    );
    s.ok(&["run", "plain", "-n", "shop", "--image=busybox", "--restart=Never"]);
    let plain = s.get_json(&["pod", "plain", "-n", "shop"]);
    assert_eq!(plain["spec"]["serviceAccountName"], "default");
    let volume = &plain["spec"]["volumes"][0];
    let name = volume["name"].as_str().unwrap_or("");
    assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5, "{volume}");
    assert_eq!(
        volume["projected"]["sources"],
        serde_json::json!([
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ])
    );
    assert_eq!(
        plain["spec"]["containers"][0]["volumeMounts"],
        serde_json::json!([{"name": name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}])
    );
    s.apply(
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quiet", "namespace": "shop"},
            "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox"}]}}"#,
    );
    assert_eq!(s.get_json(&["pod", "quiet", "-n", "shop"])["spec"].get("volumes"), None);

    // A token bound to a pod names the pod and stops working once the pod is gone.
    s.apply(
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"serviceAccountName": "robot", "containers": [{"name": "c", "image": "busybox"}]}}"#,
    );
    let pod_uid = s.ok(&["get", "pod", "p", "-n", "shop", "-o", "jsonpath={.metadata.uid}"]);
    let token = s.ok(&["create", "token", "robot", "-n", "shop", "--bound-object-kind=Pod", "--bound-object-name=p"]);
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["kubernetes.io"]["pod"], serde_json::json!({"name": "p", "uid": pod_uid}));
    assert_eq!(claims["iss"], "https://kubernetes.default.svc.cluster.local");
    let kc = s.token_kubeconfig("robot-p", &token);
    let me: serde_json::Value = serde_json::from_str(&ok_as(&s, &kc, &["auth", "whoami", "-o", "json"])).unwrap();
    let info = &me["status"]["userInfo"];
    assert_eq!(info["username"], "system:serviceaccount:shop:robot");
    assert_eq!(info["extra"]["authentication.kubernetes.io/pod-name"], serde_json::json!(["p"]));
    assert_eq!(info["extra"]["authentication.kubernetes.io/pod-uid"], serde_json::json!([pod_uid]));
    let jti = claims["jti"].as_str().expect("jti");
    assert_eq!(info["extra"]["authentication.kubernetes.io/credential-id"], serde_json::json!([format!("JTI={jti}")]));
    let review = token_review(&s, &token, &[]);
    assert_eq!((&review["authenticated"], &review["user"]["username"]), (&serde_json::json!(true), &info["username"]));
    s.ok(&["delete", "pod", "p", "-n", "shop", "--grace-period=0", "--force"]);
    let err = fails_as(&s, &kc, &["auth", "whoami"]);
    assert_eq!(err.trim(), "error: You must be logged in to the server (Unauthorized)");
    let review = token_review(&s, &token, &[]);
    assert_eq!(review["authenticated"], false);
    assert_eq!(review["error"], "[invalid bearer token, service account token has been invalidated]");

    // Binding to what cannot be bound, or to an object recreated under the same name.
    let raw = |body: serde_json::Value| {
        s.apply_stdin(
            &["create", "--raw", "/api/v1/namespaces/shop/serviceaccounts/robot/token", "-f", "-"],
            &body.to_string(),
        )
    };
    s.ok(&["create", "configmap", "settings", "-n", "shop"]);
    let bind = |kind: &str, name: &str, uid: &str| {
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": kind, "name": name, "uid": uid}}})
    };
    let out = raw(bind("ConfigMap", "settings", ""));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot bind token to object of type /v1, Kind=ConfigMap"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.ok(&["create", "secret", "generic", "robot-key", "-n", "shop"]);
    let out = raw(bind("Secret", "robot-key", "not-the-uid"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the UID in the bound object reference (not-the-uid) does not match the UID in record. The object might have been deleted and then recreated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = raw(
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 599}}),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("may not specify a duration less than 10 minutes"));

    // Audiences: a token for another audience is no good here, but a TokenReview for that
    // audience accepts it.
    let vault = s.ok(&["create", "token", "robot", "-n", "shop", "--audience=vault"]);
    let err = fails_as(&s, &s.token_kubeconfig("robot-vault", &vault), &["auth", "whoami"]);
    assert_eq!(err.trim(), "error: You must be logged in to the server (Unauthorized)");
    let review = token_review(&s, &vault, &["vault", "other"]);
    assert_eq!(
        (&review["authenticated"], &review["audiences"]),
        (&serde_json::json!(true), &serde_json::json!(["vault"]))
    );
    let review = token_review(&s, &vault, &[]);
    assert_eq!(
        review["error"],
        r#"[invalid bearer token, token audiences ["vault"] is invalid for the target audiences ["https://kubernetes.default.svc.cluster.local"]]"#
    );
    // Garbage, a forged `alg: none` token, a token whose signature was altered and an expired
    // one are refused with a bare 401.
    let (signed, signature) = token.trim().rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { "B" } else { "A" };
    let altered = format!("{signed}.{first}{}", &signature[1..]);
    // The same claims signed with the server's own key, but expired ten minutes ago (beyond
    // the minute of clock skew a verifier allows, as upstream).
    let tls = s.data_dir().join("server").join("tls");
    let key = skiff::pki::ServiceAccountKey::load_or_create(&tls.join("service.key"), &tls.join("service.pub"))
        .expect("the server's signing key");
    let mut claims = jwt_part(&s.ok(&["create", "token", "robot", "-n", "shop"]), 1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    claims["exp"] = serde_json::json!(now - 600);
    claims["iat"] = serde_json::json!(now - 3600);
    claims["nbf"] = serde_json::json!(now - 3600);
    let expired = key.sign(&claims).expect("sign");
    claims["exp"] = serde_json::json!(now + 600);
    let fresh = key.sign(&claims).expect("sign");
    // (The same claims unexpired are accepted: only the expiry differs.)
    ok_as(&s, &s.token_kubeconfig("fresh", &fresh), &["auth", "whoami"]);
    for bad in
        ["garbage", &format!("eyJhbGciOiJub25lIn0.{}.", token.trim().split('.').nth(1).unwrap()), &altered, &expired]
    {
        let err = fails_as(&s, &s.token_kubeconfig("bad", bad), &["get", "pods"]);
        assert_eq!(err.trim(), "error: You must be logged in to the server (Unauthorized)", "{bad}");
    }

    // The OIDC discovery documents, readable by every service account, name the key that
    // signs the tokens.
    let plain_token = s.ok(&["create", "token", "robot", "-n", "shop"]);
    let kc = s.token_kubeconfig("robot", &plain_token);
    let config: serde_json::Value =
        serde_json::from_str(&ok_as(&s, &kc, &["get", "--raw", "/.well-known/openid-configuration"])).unwrap();
    assert_eq!(config["issuer"], "https://kubernetes.default.svc.cluster.local");
    assert!(config["jwks_uri"].as_str().unwrap_or("").ends_with("/openid/v1/jwks"), "{config}");
    assert_eq!(config["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    let jwks: serde_json::Value = serde_json::from_str(&ok_as(&s, &kc, &["get", "--raw", "/openid/v1/jwks"])).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], jwt_part(&plain_token, 0)["kid"]);
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    // Deleting the account ends its tokens.
    s.ok(&["delete", "serviceaccount", "robot", "-n", "shop"]);
    let err = fails_as(&s, &kc, &["auth", "whoami"]);
    assert_eq!(err.trim(), "error: You must be logged in to the server (Unauthorized)");
}

#[test]
fn impersonation_needs_the_impersonate_verb_for_each_part() {
    let s = Server::start();
    // An administrator may act as anyone; the API then sees only the impersonated identity.
    let me: serde_json::Value =
        serde_json::from_str(&s.ok(&["auth", "whoami", "--as=bob", "--as-group=devs", "--as-uid=b-1", "-o", "json"]))
            .unwrap();
    assert_eq!(
        me["status"]["userInfo"],
        serde_json::json!({"username": "bob", "uid": "b-1", "groups": ["devs", "system:authenticated"]})
    );
    let err = s.fails(&["get", "pods", "--as=bob"]);
    assert!(
        err.contains(r#"Error from server (Forbidden): pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{err}"
    );
    s.ok(&["create", "namespace", "shop"]);
    let err = s.fails(&["get", "pods", "-n", "shop", "--as=system:serviceaccount:shop:robot"]);
    assert!(err.contains(r#"User "system:serviceaccount:shop:robot" cannot list resource "pods""#), "{err}");

    // alice may impersonate bob and nobody else, and no group.
    s.ok(&["create", "clusterrole", "as-bob", "--verb=impersonate", "--resource=users", "--resource-name=bob"]);
    s.ok(&["create", "clusterrolebinding", "alice-as-bob", "--clusterrole=as-bob", "--user=alice"]);
    s.ok(&["create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob", "-n", "shop"]);
    let alice = s.user_kubeconfig("alice", &[]);
    s.wait_for("alice to act as bob", Duration::from_secs(10), || {
        s.kubectl_as(&alice, &["get", "pods", "-n", "shop", "--as=bob"]).status.success()
    });
    let err = fails_as(&s, &alice, &["get", "pods", "-n", "shop"]);
    assert!(err.contains(r#"User "alice" cannot list resource "pods""#), "{err}");
    let err = fails_as(&s, &alice, &["get", "pods", "-n", "shop", "--as=carol"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (Forbidden): users "carol" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
    );
    let err = fails_as(&s, &alice, &["get", "pods", "-n", "shop", "--as=bob", "--as-group=system:masters"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (Forbidden): groups "system:masters" is forbidden: User "alice" cannot impersonate resource "groups" in API group "" at the cluster scope"#
    );
    // can-i answers for the impersonated user.
    assert_eq!(ok_as(&s, &alice, &["auth", "can-i", "list", "pods", "-n", "shop", "--as=bob"]).trim(), "yes");
    let no = s.kubectl_as(&alice, &["auth", "can-i", "create", "pods", "-n", "shop", "--as=bob"]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
}

/// The scheduler and the controllers act as their own users with upstream's roles, not as
/// `system:masters`: without its binding each stops getting its work done, and with the binding
/// back it catches up.
#[test]
fn the_scheduler_and_controllers_need_their_own_bindings() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "1"]);
    let t = Duration::from_secs(30);
    s.ok(&["delete", "clusterrolebinding", "system:kube-scheduler", "system:controller:deployment-controller"]);
    s.apply(
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}"#,
    );
    s.apply(
        r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}"#,
    );
    // As system:masters both would be done well within this time.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        s.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"]),
        "",
        "bound without the scheduler's binding"
    );
    assert_eq!(s.ok(&["get", "replicasets", "-o", "name"]), "", "a ReplicaSet without the controller's binding");
    s.ok(&[
        "create",
        "clusterrolebinding",
        "system:kube-scheduler",
        "--clusterrole=system:kube-scheduler",
        "--user=system:kube-scheduler",
    ]);
    s.ok(&[
        "create",
        "clusterrolebinding",
        "system:controller:deployment-controller",
        "--clusterrole=system:controller:deployment-controller",
        "--serviceaccount=kube-system:deployment-controller",
    ]);
    s.wait_for("the pod bound", t, || !s.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"]).is_empty());
    s.wait_for("the Deployment's ReplicaSet", t, || !s.ok(&["get", "replicasets", "-o", "name"]).is_empty());
}
