//! A container's environment as upstream's kubelet builds it: `envFrom` first, then `env`
//! (values with `$(VAR)` expanded against what came before and the service variables,
//! fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef), then the service variables
//! the container did not set itself ([`service_vars`]).
//!
//! Errors are upstream's `CreateContainerConfigError` messages.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ResourceFieldSelector, Secret, Service};
use kube::{Api, Client};

use crate::cri::proto::KeyValue;

/// The value of a pod field a fieldRef names.
pub fn field_value(pod: &Pod, path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let in_map = |map: &Option<std::collections::BTreeMap<String, String>>, key: &str| {
        map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default()
    };
    let bracket = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['").or_else(|| r.strip_prefix("[\"")))
            .and_then(|r| r.strip_suffix("']").or_else(|| r.strip_suffix("\"]")))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.hostIPs" => status
            .and_then(|s| s.host_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.podIPs" => status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        _ => {
            if let Some(k) = bracket("metadata.labels") {
                in_map(&m.labels, &k)
            } else if let Some(k) = bracket("metadata.annotations") {
                in_map(&m.annotations, &k)
            } else {
                return Err(format!("unsupported fieldPath: {path}"));
            }
        }
    })
}

/// The value a resourceFieldRef names: the container's limit (falling back to the node's
/// allocatable as upstream does, here the host's) or request, divided by the divisor.
pub fn resource_value(pod: &Pod, r: &ResourceFieldSelector) -> Result<String, String> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
    let c = match &r.container_name {
        Some(n) if !n.is_empty() => containers.into_iter().find(|c| &c.name == n),
        _ => pod.spec.as_ref().and_then(|s| s.containers.first()),
    }
    .ok_or_else(|| format!("container for resourceFieldRef {} not found", r.resource))?;
    container_resource(c, r)
}

fn container_resource(c: &Container, r: &ResourceFieldSelector) -> Result<String, String> {
    let parse = |s: &str| crate::api::quantity::parse_milli(s).map_err(|e| e.to_string());
    let (kind, name) = r.resource.split_once('.').ok_or_else(|| format!("unsupported resource: {}", r.resource))?;
    let res = c.resources.as_ref();
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource: {}", r.resource)),
    };
    let value = match map.and_then(|m| m.get(name)) {
        Some(q) => parse(&q.0)?,
        None if kind == "limits" => {
            let info = crate::agent::host::system_info();
            match name {
                "cpu" => info.cpus as i128 * 1000,
                "memory" => info.memory_bytes as i128 * 1000,
                "ephemeral-storage" => 0,
                _ => return Err(format!("unsupported resource: {}", r.resource)),
            }
        }
        None => 0,
    };
    let divisor = match &r.divisor {
        Some(d) => parse(&d.0)?,
        None => 1000,
    };
    if divisor <= 0 {
        return Err(format!("invalid divisor for {}", r.resource));
    }
    // Upstream rounds up (a 250m CPU limit with divisor 1 is "1").
    Ok(((value + divisor - 1) / divisor).to_string())
}

/// Upstream's name for a service in a variable: upper case, `-` as `_`.
fn var_name(s: &str) -> String {
    s.to_uppercase().replace('-', "_")
}

/// The Docker-link-style variables of services, as upstream's kubelet sets them:
/// `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (the first port), `<NAME>_SERVICE_PORT_<PORT
/// NAME>` for named ports, `<NAME>_PORT` and `<NAME>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}`.
/// Services without a cluster IP (headless, ExternalName) or ports have none.
pub fn service_vars<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        let ports = spec.ports.as_deref().unwrap_or(&[]);
        if ip.is_empty() || ip == "None" || ports.is_empty() {
            continue;
        }
        let prefix = var_name(svc.metadata.name.as_deref().unwrap_or(""));
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string()));
        for p in ports {
            if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{prefix}_SERVICE_PORT_{}", var_name(n)), p.port.to_string()));
            }
        }
        let host_port = |port: i32| {
            if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
        };
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let url = format!("{}://{}", proto.to_lowercase(), host_port(p.port));
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((format!("{pp}_PROTO"), proto.to_lowercase()));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.to_string()));
            out.push((pp, url));
        }
    }
    out
}

/// The container's environment, resolved. `services` are the service variables (see
/// [`service_vars`]): `$(VAR)` may name them, and those the container does not set come last.
pub async fn resolve(
    client: &Client,
    pod: &Pod,
    c: &Container,
    services: Vec<(String, String)>,
) -> Result<Vec<KeyValue>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut cms: HashMap<String, Option<ConfigMap>> = HashMap::new();
    let mut secrets: HashMap<String, Option<Secret>> = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = out.iter_mut().find(|(key, _)| *key == k) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(client, ns, &r.name, &mut cms).await? {
                Some(cm) => {
                    for (k, v) in cm.data.clone().unwrap_or_default() {
                        set(&mut out, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(client, ns, &r.name, &mut secrets).await? {
                Some(s) => {
                    for (k, v) in s.data.clone().unwrap_or_default() {
                        set(&mut out, format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let known: HashMap<&str, &str> =
                services.iter().chain(out.iter()).map(|(k, v)| (k.as_str(), v.as_str())).collect();
            super::spec::expand(v, &known)
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field_value(pod, &f.field_path)?
            } else if let Some(r) = &src.resource_field_ref {
                let mut r = r.clone();
                if r.container_name.as_deref().unwrap_or("").is_empty() {
                    r.container_name = Some(c.name.clone());
                }
                container_resource(c, &r)?
            } else if let Some(k) = &src.config_map_key_ref {
                let optional = k.optional.unwrap_or(false);
                match config_map(client, ns, &k.name, &mut cms).await? {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&k.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", k.key, k.name)),
                    },
                    None if optional => continue,
                    None => return Err(format!("configmap \"{}\" not found", k.name)),
                }
            } else if let Some(k) = &src.secret_key_ref {
                let optional = k.optional.unwrap_or(false);
                match secret(client, ns, &k.name, &mut secrets).await? {
                    Some(s) => match s.data.as_ref().and_then(|d| d.get(&k.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => return Err(format!("couldn't find key {} in Secret {ns}/{}", k.key, k.name)),
                    },
                    None if optional => continue,
                    None => return Err(format!("secret \"{}\" not found", k.name)),
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut out, e.name.clone(), value);
    }
    for (k, v) in services {
        if !out.iter().any(|(key, _)| *key == k) {
            out.push((k, v));
        }
    }
    Ok(out.into_iter().map(|(key, value)| KeyValue { key, value }).collect())
}

async fn config_map<'a>(
    client: &Client,
    ns: &str,
    name: &str,
    cache: &'a mut HashMap<String, Option<ConfigMap>>,
) -> Result<&'a Option<ConfigMap>, String> {
    if !cache.contains_key(name) {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let v = api.get_opt(name).await.map_err(|e| e.to_string())?;
        cache.insert(name.to_string(), v);
    }
    Ok(cache.get(name).unwrap_or(&None))
}

async fn secret<'a>(
    client: &Client,
    ns: &str,
    name: &str,
    cache: &'a mut HashMap<String, Option<Secret>>,
) -> Result<&'a Option<Secret>, String> {
    if !cache.contains_key(name) {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let v = api.get_opt(name).await.map_err(|e| e.to_string())?;
        cache.insert(name.to_string(), v);
    }
    Ok(cache.get(name).unwrap_or(&None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: a, namespace: n, labels: {app: web}}\nspec: {nodeName: pi, containers: [{name: c}]}\nstatus: {podIP: 10.42.0.5}",
        )
        .unwrap();
        assert_eq!(field_value(&pod, "metadata.name").unwrap(), "a");
        assert_eq!(field_value(&pod, "metadata.labels['app']").unwrap(), "web");
        assert_eq!(field_value(&pod, "spec.nodeName").unwrap(), "pi");
        assert_eq!(field_value(&pod, "status.podIP").unwrap(), "10.42.0.5");
        assert_eq!(field_value(&pod, "spec.x").unwrap_err(), "unsupported fieldPath: spec.x");
    }

    #[test]
    fn service_variables_as_upstream_names_them() {
        let svc: Service = serde_yaml::from_str(
            "metadata: {name: my-web}\nspec: {clusterIP: 10.43.0.20, ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]}",
        )
        .unwrap();
        let headless: Service =
            serde_yaml::from_str("metadata: {name: h}\nspec: {clusterIP: None, ports: [{port: 80}]}").unwrap();
        let vars: HashMap<String, String> = service_vars([&svc, &headless]).into_iter().collect();
        let want = [
            ("MY_WEB_SERVICE_HOST", "10.43.0.20"),
            ("MY_WEB_SERVICE_PORT", "80"),
            ("MY_WEB_SERVICE_PORT_HTTP", "80"),
            ("MY_WEB_SERVICE_PORT_DNS", "53"),
            ("MY_WEB_PORT", "tcp://10.43.0.20:80"),
            ("MY_WEB_PORT_80_TCP", "tcp://10.43.0.20:80"),
            ("MY_WEB_PORT_80_TCP_PROTO", "tcp"),
            ("MY_WEB_PORT_80_TCP_PORT", "80"),
            ("MY_WEB_PORT_80_TCP_ADDR", "10.43.0.20"),
            ("MY_WEB_PORT_53_UDP", "udp://10.43.0.20:53"),
            ("MY_WEB_PORT_53_UDP_PROTO", "udp"),
            ("MY_WEB_PORT_53_UDP_PORT", "53"),
            ("MY_WEB_PORT_53_UDP_ADDR", "10.43.0.20"),
        ];
        assert_eq!(vars.len(), want.len(), "{vars:?}");
        for (k, v) in want {
            assert_eq!(vars.get(k).map(String::as_str), Some(v), "{k}");
        }
    }

    #[test]
    fn resource_fields_round_up_by_the_divisor() {
        let c: Container = serde_yaml::from_str("{name: c, resources: {limits: {cpu: 250m, memory: 64Mi}}}").unwrap();
        let sel = |res: &str, div: Option<&str>| ResourceFieldSelector {
            container_name: None,
            resource: res.into(),
            divisor: div.map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
        };
        assert_eq!(container_resource(&c, &sel("limits.cpu", None)).unwrap(), "1");
        assert_eq!(container_resource(&c, &sel("limits.cpu", Some("1m"))).unwrap(), "250");
        assert_eq!(container_resource(&c, &sel("limits.memory", Some("1Mi"))).unwrap(), "64");
    }
}
