//! Turning a Pod into CRI requests: the sandbox config (metadata, DNS, host ports, namespaces,
//! cgroup parent) and each container's config (image, command, environment, mounts, resources,
//! security context), with the labels and annotations by which the agent finds them again
//! after a restart.
//!
//! Pure functions of the pod and what was already resolved (environment values, volume paths);
//! nothing here calls CRI or the API.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};

use crate::cri::config::CgroupDriver;
use crate::cri::proto;

/// Labels the agent puts on sandboxes and containers, as upstream's kubelet names them.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Annotation: the container's restart count, so it survives an agent restart.
pub const ANNOTATION_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Annotation: the grace period the container gets when stopped.
pub const ANNOTATION_GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Annotation: where the container's termination message is written.
pub const ANNOTATION_TERMINATION_PATH: &str = "io.kubernetes.container.terminationMessagePath";
/// Annotation: the container's `terminationMessagePolicy`.
pub const ANNOTATION_TERMINATION_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
/// Label marking objects the agent created, so cleanup never touches anyone else's.
pub const LABEL_MANAGED: &str = "io.skiff.managed";

/// The pod's namespace, name and uid.
pub fn ids(pod: &Pod) -> (&str, &str, &str) {
    let m = &pod.metadata;
    (m.namespace.as_deref().unwrap_or("default"), m.name.as_deref().unwrap_or(""), m.uid.as_deref().unwrap_or(""))
}

/// The pod's QoS class, as upstream computes it.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else { return "BestEffort" };
    let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.as_ref();
        let requests = r.and_then(|r| r.requests.as_ref());
        let limits = r.and_then(|r| r.limits.as_ref());
        for res in ["cpu", "memory"] {
            let req = requests.and_then(|m| m.get(res));
            let lim = limits.and_then(|m| m.get(res));
            if req.is_some() || lim.is_some() {
                any = true;
            }
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if quantity(&q.0) != quantity(&l.0) => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn quantity(s: &str) -> i128 {
    crate::api::quantity::parse_milli(s).unwrap_or(0)
}

/// The pod's cgroup parent under the host's driver.
pub fn cgroup_parent(pod: &Pod, driver: CgroupDriver) -> String {
    let uid = ids(pod).2;
    let qos = qos_class(pod);
    match driver {
        CgroupDriver::Cgroupfs => match qos {
            "Guaranteed" => format!("/kubepods/pod{uid}"),
            other => format!("/kubepods/{}/pod{uid}", other.to_lowercase()),
        },
        CgroupDriver::Systemd => {
            let uid = uid.replace('-', "_");
            match qos {
                "Guaranteed" => format!("kubepods-pod{uid}.slice"),
                other => format!("kubepods-{}-pod{uid}.slice", other.to_lowercase()),
            }
        }
    }
}

/// DNS of the pod as its `dnsPolicy` and `dnsConfig` say.
pub fn dns_config(pod: &Pod, cluster_dns: IpAddr, cluster_domain: &str, host_resolv: &str) -> proto::DnsConfig {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let ns = ids(pod).0;
    let (mut servers, mut searches, mut options) = match policy {
        "ClusterFirst" if !host_network => cluster(cluster_dns, cluster_domain, ns),
        "ClusterFirstWithHostNet" => cluster(cluster_dns, cluster_domain, ns),
        "None" => (Vec::new(), Vec::new(), Vec::new()),
        // Default, and ClusterFirst on the host network: the host's resolver configuration.
        _ => host(host_resolv),
    };
    if let Some(c) = spec.and_then(|s| s.dns_config.as_ref()) {
        servers.extend(c.nameservers.iter().flatten().cloned());
        searches.extend(c.searches.iter().flatten().cloned());
        for o in c.options.iter().flatten() {
            let Some(name) = &o.name else { continue };
            options.retain(|existing: &String| existing.split(':').next() != Some(name.as_str()));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            });
        }
    }
    searches.dedup();
    searches.truncate(32);
    proto::DnsConfig { servers, searches, options }
}

fn cluster(dns: IpAddr, domain: &str, ns: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    (
        vec![dns.to_string()],
        vec![format!("{ns}.svc.{domain}"), format!("svc.{domain}"), domain.to_string()],
        vec!["ndots:5".to_string()],
    )
}

/// Name servers, search domains and options of a resolv.conf, skipping loopback name servers
/// (a host's stub resolver is not reachable from a pod).
pub fn host(resolv: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut servers = Vec::new();
    let mut searches = Vec::new();
    let mut options = Vec::new();
    for line in resolv.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(s) = words.next()
                    && !s.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
                {
                    servers.push(s.to_string());
                }
            }
            Some("search") | Some("domain") => {
                searches = words.map(str::to_string).collect();
            }
            Some("options") => options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// The sandbox config for `attempt` of the pod.
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    log_directory: &Path,
    dns: proto::DnsConfig,
    driver: CgroupDriver,
) -> proto::PodSandboxConfig {
    let (ns, name, uid) = ids(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let mut labels: HashMap<String, String> = pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    labels.insert(LABEL_POD_NAME.into(), name.into());
    labels.insert(LABEL_POD_NAMESPACE.into(), ns.into());
    labels.insert(LABEL_POD_UID.into(), uid.into());
    labels.insert(LABEL_MANAGED.into(), "true".into());
    let mut annotations: HashMap<String, String> =
        pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect();
    annotations.insert(ANNOTATION_GRACE.into(), grace_seconds(pod).to_string());
    let host_network = spec.host_network.unwrap_or(false);
    let mut port_mappings = Vec::new();
    if !host_network {
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                let Some(host_port) = p.host_port.filter(|h| *h > 0) else { continue };
                port_mappings.push(proto::PortMapping {
                    protocol: protocol(p.protocol.as_deref()) as i32,
                    container_port: p.container_port,
                    host_port,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    // A host-network pod shares the node's UTS namespace, so it has the node's hostname and
    // sets none (runc refuses a hostname without a private UTS namespace), as upstream's
    // kubelet leaves it empty.
    let hostname = if host_network { String::new() } else { spec.hostname.clone().unwrap_or_else(|| name.to_string()) };
    let psc = spec.security_context.clone().unwrap_or_default();
    let mode = |host: Option<bool>| {
        if host.unwrap_or(false) { proto::NamespaceMode::Node as i32 } else { proto::NamespaceMode::Pod as i32 }
    };
    let pid = if spec.share_process_namespace.unwrap_or(false) {
        proto::NamespaceMode::Pod as i32
    } else if spec.host_pid.unwrap_or(false) {
        proto::NamespaceMode::Node as i32
    } else {
        proto::NamespaceMode::Container as i32
    };
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.security_context.as_ref().and_then(|s| s.privileged).unwrap_or(false));
    let sysctls = psc.sysctls.iter().flatten().map(|s| (s.name.clone(), s.value.clone())).collect::<HashMap<_, _>>();
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata { name: name.into(), uid: uid.into(), namespace: ns.into(), attempt }),
        hostname,
        log_directory: log_directory.to_string_lossy().into_owned(),
        dns_config: Some(dns),
        port_mappings,
        labels,
        annotations,
        linux: Some(proto::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(pod, driver),
            security_context: Some(proto::LinuxSandboxSecurityContext {
                namespace_options: Some(proto::NamespaceOption {
                    network: mode(spec.host_network),
                    pid,
                    ipc: mode(spec.host_ipc),
                    ..Default::default()
                }),
                run_as_user: psc.run_as_user.map(|v| proto::Int64Value { value: v }),
                run_as_group: psc.run_as_group.map(|v| proto::Int64Value { value: v }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                privileged,
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        windows: None,
    }
}

fn protocol(p: Option<&str>) -> proto::Protocol {
    match p {
        Some("UDP") => proto::Protocol::Udp,
        Some("SCTP") => proto::Protocol::Sctp,
        _ => proto::Protocol::Tcp,
    }
}

/// The pod's termination grace period in seconds (deletion's, if it is being deleted).
pub fn grace_seconds(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30)
        .max(0)
}

/// cgroup limits of a container, as upstream's kubelet derives them.
pub fn resources(r: Option<&ResourceRequirements>) -> proto::LinuxContainerResources {
    const PERIOD: i64 = 100_000;
    let get = |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, k: &str| {
        m.and_then(|m| m.get(k)).map(|q| quantity(&q.0))
    };
    let limits = r.and_then(|r| r.limits.as_ref());
    let requests = r.and_then(|r| r.requests.as_ref());
    let cpu_request = get(requests, "cpu").or(get(limits, "cpu"));
    let cpu_limit = get(limits, "cpu");
    let memory_limit = get(limits, "memory").map(|m| (m / 1000) as i64);
    let shares = match cpu_request {
        // Upstream's minimum of 2 shares; 1024 per CPU.
        Some(milli) => ((milli * 1024) / 1000).max(2) as i64,
        None => 2,
    };
    let quota = cpu_limit.map(|milli| ((milli * PERIOD as i128) / 1000).max(1000) as i64).unwrap_or(0);
    proto::LinuxContainerResources {
        cpu_period: if quota > 0 { PERIOD } else { 0 },
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory_limit.unwrap_or(0),
        ..Default::default()
    }
}

/// Everything a container's config needs besides the pod.
pub struct ContainerInputs<'a> {
    pub container: &'a Container,
    pub attempt: u32,
    pub image: String,
    pub envs: Vec<proto::KeyValue>,
    pub mounts: Vec<proto::Mount>,
    pub log_path: String,
}

/// The CRI config of one container instance.
pub fn container_config(pod: &Pod, inputs: ContainerInputs<'_>) -> proto::ContainerConfig {
    let (ns, name, uid) = ids(pod);
    let c = inputs.container;
    let env_map: HashMap<&str, &str> = inputs.envs.iter().map(|kv| (kv.key.as_str(), kv.value.as_str())).collect();
    let expand_all = |v: &Option<Vec<String>>| v.iter().flatten().map(|s| expand(s, &env_map)).collect::<Vec<String>>();
    let labels: HashMap<String, String> = [
        (LABEL_POD_NAME, name),
        (LABEL_POD_NAMESPACE, ns),
        (LABEL_POD_UID, uid),
        (LABEL_CONTAINER_NAME, c.name.as_str()),
        (LABEL_MANAGED, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: HashMap<String, String> = [
        (ANNOTATION_RESTART_COUNT, inputs.attempt.to_string()),
        (ANNOTATION_GRACE, grace_seconds(pod).to_string()),
        (
            ANNOTATION_TERMINATION_PATH,
            c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into()),
        ),
        (ANNOTATION_TERMINATION_POLICY, c.termination_message_policy.clone().unwrap_or_else(|| "File".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let security = proto::LinuxContainerSecurityContext {
        capabilities: Some(proto::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged,
        namespace_options: None,
        run_as_user: sc.run_as_user.or(pod_sc.run_as_user).map(|v| proto::Int64Value { value: v }),
        run_as_group: sc.run_as_group.or(pod_sc.run_as_group).map(|v| proto::Int64Value { value: v }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: pod_sc.supplemental_groups.clone().unwrap_or_default(),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        ..Default::default()
    };
    proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata { name: c.name.clone(), attempt: inputs.attempt }),
        image: Some(proto::ImageSpec {
            image: inputs.image,
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: inputs.envs,
        mounts: inputs.mounts,
        labels,
        annotations,
        log_path: inputs.log_path,
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(proto::LinuxContainerConfig {
            resources: Some(resources(c.resources.as_ref())),
            security_context: Some(security),
        }),
        ..Default::default()
    }
}

/// Expands `$(VAR)` references as upstream does: `$$` escapes, unknown references stay as
/// written.
pub fn expand(s: &str, env: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                let name = &s[i + 2..i + 2 + end];
                match env.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&s[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn qos_classes_as_upstream() {
        let be = pod("metadata: {name: a}\nspec: {containers: [{name: c}]}");
        assert_eq!(qos_class(&be), "BestEffort");
        let g =
            pod("metadata: {name: a}\nspec: {containers: [{name: c, resources: {limits: {cpu: 500m, memory: 64Mi}}}]}");
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = pod("metadata: {name: a}\nspec: {containers: [{name: c, resources: {requests: {cpu: 100m}}}]}");
        assert_eq!(qos_class(&b), "Burstable");
        assert_eq!(cgroup_parent(&b, CgroupDriver::Cgroupfs), "/kubepods/burstable/pod");
    }

    #[test]
    fn a_host_network_sandbox_sets_no_hostname() {
        let cfg = |yaml: &str| {
            sandbox_config(&pod(yaml), 0, Path::new("/l"), proto::DnsConfig::default(), CgroupDriver::Cgroupfs)
        };
        let host = cfg("metadata: {name: a}\nspec: {hostNetwork: true, containers: [{name: c}]}");
        let ns = host.linux.and_then(|l| l.security_context).and_then(|s| s.namespace_options).unwrap_or_default();
        assert_eq!((host.hostname.as_str(), ns.network), ("", proto::NamespaceMode::Node as i32));
        assert_eq!(cfg("metadata: {name: a}\nspec: {containers: [{name: c}]}").hostname, "a");
        assert_eq!(cfg("metadata: {name: a}\nspec: {hostname: web-0, containers: [{name: c}]}").hostname, "web-0");
    }

    #[test]
    fn expansion_follows_upstream_rules() {
        let env: HashMap<&str, &str> = [("A", "x"), ("B", "y")].into_iter().collect();
        assert_eq!(expand("$(A)-$(B)", &env), "x-y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(C) $A", &env), "$(C) $A");
        assert_eq!(expand("ü$(A", &env), "ü$(A");
    }

    #[test]
    fn cpu_and_memory_limits_become_cgroup_values() {
        let c: Container =
            serde_yaml::from_str("{name: c, resources: {limits: {cpu: 250m, memory: 64Mi}, requests: {cpu: 100m}}}")
                .unwrap();
        let r = resources(c.resources.as_ref());
        assert_eq!((r.cpu_period, r.cpu_quota, r.cpu_shares), (100_000, 25_000, 102));
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
    }

    #[test]
    fn dns_policies() {
        let p = pod("metadata: {name: a, namespace: web}\nspec: {containers: [{name: c}]}");
        let d = dns_config(
            &p,
            "10.43.0.10".parse().unwrap(),
            "cluster.local",
            "nameserver 127.0.0.53\nnameserver 1.1.1.1\n",
        );
        assert_eq!(d.servers, vec!["10.43.0.10"]);
        assert_eq!(d.searches, vec!["web.svc.cluster.local", "svc.cluster.local", "cluster.local"]);
        assert_eq!(d.options, vec!["ndots:5"]);
        let p = pod("metadata: {name: a}\nspec: {dnsPolicy: Default, containers: [{name: c}]}");
        let d = dns_config(
            &p,
            "10.43.0.10".parse().unwrap(),
            "cluster.local",
            "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch lan\n",
        );
        assert_eq!(d.servers, vec!["192.0.2.53"], "loopback stub resolvers are skipped");
        assert_eq!(d.searches, vec!["lan"]);
    }
}
