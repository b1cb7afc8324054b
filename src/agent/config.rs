//! Agent settings: the node flags `skiff server` and `skiff agent` share, the flags only
//! `skiff agent` has, and their validation into an [`AgentConfig`].
//!
//! Every error is one line naming the flag, like the server's.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use k8s_openapi::api::core::v1::Taint;

use crate::server::config::LogFormat;

/// Node flags of both `skiff server` and `skiff agent`, named as k3s names them.
#[derive(Args, Debug, Default, Clone)]
pub struct NodeFlags {
    /// Node name [default: the host name, lower case]
    #[arg(long, env = "SKIFF_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// IP address of the node, published as its InternalIP (repeatable) [default: the host's primary IP]
    #[arg(long, env = "SKIFF_NODE_IP", value_name = "IP", value_delimiter = ',')]
    pub node_ip: Vec<IpAddr>,
    /// External IP address of the node, published as its ExternalIP (repeatable)
    #[arg(long, env = "SKIFF_NODE_EXTERNAL_IP", value_name = "IP", value_delimiter = ',')]
    pub node_external_ip: Vec<IpAddr>,
    /// Label the node registers with, KEY=VALUE (repeatable)
    #[arg(long = "node-label", env = "SKIFF_NODE_LABEL", value_name = "KEY=VALUE", value_delimiter = ',')]
    pub node_label: Vec<String>,
    /// Taint the node registers with, KEY[=VALUE]:EFFECT (repeatable)
    #[arg(long = "node-taint", env = "SKIFF_NODE_TAINT", value_name = "TAINT", value_delimiter = ',')]
    pub node_taint: Vec<String>,
    /// Kubelet setting KEY=VALUE (repeatable): max-pods, port, eviction-hard, image-gc-high-threshold, image-gc-low-threshold, minimum-image-ttl-duration
    #[arg(long = "kubelet-arg", env = "SKIFF_KUBELET_ARG", value_name = "KEY=VALUE")]
    pub kubelet_arg: Vec<String>,
    /// CRI socket of an existing container runtime, instead of the containerd skiff runs (PATH or unix://PATH)
    #[arg(long, env = "SKIFF_CONTAINER_RUNTIME_ENDPOINT", value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,
    /// Run no service proxy on this node (another proxy serves Services here)
    #[arg(long, env = "SKIFF_DISABLE_KUBE_PROXY")]
    pub disable_kube_proxy: bool,
    /// How the service proxy programs the kernel: auto (nftables when it works, else iptables), nftables or iptables [default: auto]
    #[arg(long, env = "SKIFF_PROXY_MODE", value_name = "MODE")]
    pub proxy_mode: Option<crate::netproxy::Mode>,
    /// How pod traffic crosses between nodes: vxlan, host-gw (all nodes on one L2 segment) or none [default: vxlan]
    #[arg(long, env = "SKIFF_OVERLAY", value_name = "BACKEND")]
    pub overlay: Option<crate::agent::overlay::Backend>,
    /// Resolver configuration naming the upstream DNS servers, for the cluster DNS and for pods with dnsPolicy Default [default: /etc/resolv.conf]
    #[arg(long, env = "SKIFF_RESOLV_CONF", value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
}

/// `skiff agent` flags as parsed.
#[derive(Args, Debug, Default, Clone)]
pub struct AgentFlags {
    /// Config file (YAML; keys are the long flag names) [default: /etc/skiff/config.yaml]
    #[arg(short = 'c', long, env = "SKIFF_CONFIG_FILE", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// API server URL, https://HOST:PORT [default: the kubeconfig's]
    #[arg(short = 's', long, env = "SKIFF_URL", value_name = "URL")]
    pub server: Option<String>,
    /// Join token: K10<ca-hash>::<credentials>, a bootstrap token, or a bare secret
    #[arg(short = 't', long, env = "SKIFF_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Kubeconfig with this node's credentials, instead of joining with --token
    #[arg(long, env = "SKIFF_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Folder for all state [default: /var/lib/skiff]
    #[arg(short = 'd', long, env = "SKIFF_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cluster DNS service address written into pods' resolv.conf [default: 10.43.0.10]
    #[arg(long, env = "SKIFF_CLUSTER_DNS", value_name = "IP")]
    pub cluster_dns: Option<IpAddr>,
    /// Cluster domain [default: cluster.local]
    #[arg(long, env = "SKIFF_CLUSTER_DOMAIN", value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// Log format [default: text]
    #[arg(long, env = "SKIFF_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log verbosity, 0-10 [default: 0]
    #[arg(short = 'v', env = "SKIFF_V", value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub v: Option<u8>,
    /// Remove the service proxy's rules from this host and exit
    #[arg(long)]
    pub cleanup: bool,
    #[command(flatten)]
    pub node: NodeFlags,
}

/// One hard eviction threshold: a signal and the level below which the node is under
/// pressure (`memory.available<100Mi`, `nodefs.available<10%`).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub below: Level,
}

/// The eviction signals the agent measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    PidAvailable,
}

/// A threshold level: an absolute amount or a share of the capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    Amount(u64),
    Percent(f64),
}

impl Level {
    /// Whether `available` out of `capacity` is below this level.
    pub fn crossed(self, available: u64, capacity: u64) -> bool {
        match self {
            Level::Amount(a) => available < a,
            Level::Percent(p) => (available as f64) < capacity as f64 * p / 100.0,
        }
    }
}

/// Kubelet settings from `--kubelet-arg`.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletSettings {
    pub max_pods: u32,
    /// Port of the kubelet HTTPS API.
    pub port: u16,
    pub eviction_hard: Vec<Threshold>,
    /// Disk use (percent) at which unused images are removed.
    pub image_gc_high_threshold: u8,
    /// Disk use (percent) image removal brings the disk down to.
    pub image_gc_low_threshold: u8,
    /// Images younger than this are never removed.
    pub image_minimum_gc_age: std::time::Duration,
}

impl Default for KubeletSettings {
    fn default() -> Self {
        KubeletSettings {
            max_pods: 110,
            port: 10250,
            eviction_hard: parse_eviction(
                "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%",
            )
            .expect("the default thresholds parse"),
            image_gc_high_threshold: 85,
            image_gc_low_threshold: 80,
            image_minimum_gc_age: std::time::Duration::from_secs(120),
        }
    }
}

/// Validated agent settings with defaults applied.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `<data-dir>`; the agent keeps its state in `<data-dir>/agent`.
    pub data_dir: PathBuf,
    pub node_name: String,
    pub node_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    /// Labels given with `--node-label` (the agent adds the well-known ones itself).
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    /// An existing CRI socket; `None` runs containerd.
    pub runtime_endpoint: Option<PathBuf>,
    pub kubelet: KubeletSettings,
    /// Run the service proxy.
    pub proxy: bool,
    /// How the service proxy programs the kernel.
    pub proxy_mode: crate::netproxy::Mode,
    /// `--resolv-conf`: the upstream resolvers' file, if not the host's.
    pub resolv_conf: Option<PathBuf>,
    /// `--overlay`.
    pub overlay: crate::agent::overlay::Backend,
}

impl AgentConfig {
    /// `<data-dir>/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }

    /// The names the kubelet's serving certificate is valid for: the node's name and
    /// addresses, and loopback.
    pub fn serving_names(&self) -> Vec<String> {
        let mut names = vec![self.node_name.clone(), "localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(self.node_ips.iter().chain(&self.external_ips).map(|ip| ip.to_string()));
        names
    }

    /// Where the kubelet API listens.
    pub fn kubelet_listen(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::from([0, 0, 0, 0]), self.kubelet.port)
    }
}

/// What the node flags leave to the caller: the server passes its own address and settings.
pub struct NodeDefaults {
    pub data_dir: PathBuf,
    pub node_ip: Option<IpAddr>,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
}

impl NodeFlags {
    /// Validates the node flags into a config; every error names its flag.
    pub fn to_config(&self, d: NodeDefaults) -> Result<AgentConfig, String> {
        let node_name = match &self.node_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .map(|h| h.to_lowercase())
                .unwrap_or_else(|| "localhost".into()),
        };
        if !is_dns_subdomain(&node_name) {
            return Err(format!(
                "invalid value \"{node_name}\" for --node-name: must be a lower-case DNS subdomain (letters, digits, '-' and '.')"
            ));
        }
        let mut node_ips = self.node_ip.clone();
        if node_ips.is_empty() {
            node_ips.push(
                d.node_ip.or_else(crate::server::config::primary_ip).unwrap_or_else(|| IpAddr::from([127, 0, 0, 1])),
            );
        }
        let mut labels = BTreeMap::new();
        for l in &self.node_label {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| format!("invalid value \"{l}\" for --node-label: expected KEY=VALUE"))?;
            if k.is_empty() {
                return Err(format!("invalid value \"{l}\" for --node-label: expected KEY=VALUE"));
            }
            if crate::api::node_labels::restricted(k) {
                return Err(format!(
                    "invalid value \"{l}\" for --node-label: a node may not give itself labels under node-restriction.kubernetes.io/ or kubernetes.io labels other than its own (kubelet.kubernetes.io/, node.kubernetes.io/, kubernetes.io/hostname, ...); set it with kubectl label node"
                ));
            }
            labels.insert(k.to_string(), v.to_string());
        }
        let taints =
            self.node_taint.iter().map(|t| crate::sim::config::parse_taint(t)).collect::<Result<Vec<_>, _>>()?;
        let runtime_endpoint = match &self.container_runtime_endpoint {
            Some(e) => Some(crate::cri::images_cli::parse_endpoint(e)?),
            None => None,
        };
        Ok(AgentConfig {
            data_dir: d.data_dir,
            node_name,
            node_ips,
            external_ips: self.node_external_ip.clone(),
            labels,
            taints,
            cluster_dns: d.cluster_dns,
            cluster_domain: d.cluster_domain,
            runtime_endpoint,
            kubelet: parse_kubelet_args(&self.kubelet_arg)?,
            proxy: !self.disable_kube_proxy,
            proxy_mode: self.proxy_mode.unwrap_or(crate::netproxy::Mode::Auto),
            resolv_conf: self.resolv_conf.clone(),
            overlay: self.overlay.unwrap_or(crate::agent::overlay::Backend::Vxlan),
        })
    }
}

/// Parses the `--kubelet-arg` values over the defaults.
pub fn parse_kubelet_args(args: &[String]) -> Result<KubeletSettings, String> {
    let mut s = KubeletSettings::default();
    for arg in args {
        let arg = arg.trim_start_matches("--");
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("invalid value \"{arg}\" for --kubelet-arg: expected KEY=VALUE"))?;
        let bad = |what: &str| format!("invalid value \"{arg}\" for --kubelet-arg: {what}");
        match key {
            "max-pods" => {
                s.max_pods = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| bad("expected a positive number"))?
            }
            "port" => s.port = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| bad("expected a port number"))?,
            "eviction-hard" => s.eviction_hard = parse_eviction(value).map_err(|e| bad(&e))?,
            "image-gc-high-threshold" => {
                s.image_gc_high_threshold =
                    value.parse().ok().filter(|n| *n <= 100).ok_or_else(|| bad("expected a percentage, 0-100"))?
            }
            "image-gc-low-threshold" => {
                s.image_gc_low_threshold =
                    value.parse().ok().filter(|n| *n <= 100).ok_or_else(|| bad("expected a percentage, 0-100"))?
            }
            "minimum-image-ttl-duration" => {
                let ns = crate::api::cron::go_duration(value).map_err(|e| bad(&e))?;
                s.image_minimum_gc_age =
                    std::time::Duration::from_nanos(u64::try_from(ns).map_err(|_| bad("must not be negative"))?)
            }
            _ => {
                return Err(bad(
                    "unknown setting; known: max-pods, port, eviction-hard, image-gc-high-threshold, image-gc-low-threshold, minimum-image-ttl-duration",
                ));
            }
        }
    }
    if s.image_gc_low_threshold > s.image_gc_high_threshold {
        return Err(format!(
            "invalid --kubelet-arg: image-gc-low-threshold ({}) is above image-gc-high-threshold ({})",
            s.image_gc_low_threshold, s.image_gc_high_threshold
        ));
    }
    Ok(s)
}

/// Parses `memory.available<100Mi,nodefs.available<10%` as the kubelet's `--eviction-hard`.
pub fn parse_eviction(text: &str) -> Result<Vec<Threshold>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, level) =
            item.split_once('<').ok_or_else(|| format!("eviction threshold \"{item}\" must be SIGNAL<QUANTITY"))?;
        let signal = match name {
            "memory.available" => Signal::MemoryAvailable,
            "nodefs.available" => Signal::NodefsAvailable,
            "nodefs.inodesFree" => Signal::NodefsInodesFree,
            "imagefs.available" => Signal::ImagefsAvailable,
            "pid.available" => Signal::PidAvailable,
            _ => return Err(format!("unknown eviction signal \"{name}\"")),
        };
        let below = if let Some(p) = level.strip_suffix('%') {
            let p: f64 = p.parse().map_err(|_| format!("invalid percentage in \"{item}\""))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("invalid percentage in \"{item}\""));
            }
            Level::Percent(p)
        } else {
            let milli =
                crate::api::quantity::parse_milli(level).map_err(|e| format!("invalid quantity in \"{item}\": {e}"))?;
            Level::Amount((milli / 1000).max(0) as u64)
        };
        out.push(Threshold { signal, below });
    }
    Ok(out)
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl AgentFlags {
    /// Validates `skiff agent`'s flags.
    pub fn to_config(&self) -> Result<AgentConfig, String> {
        if let Some(t) = &self.token
            && t.trim().is_empty()
        {
            return Err("invalid value \"\" for --token: must not be empty".into());
        }
        if let Some(url) = &self.server {
            super::bootstrap::cacerts::endpoint(url)?;
        }
        let root = nix::unistd::geteuid().is_root();
        self.node.to_config(NodeDefaults {
            data_dir: self.data_dir.clone().unwrap_or_else(|| crate::server::config::default_data_dir(root)),
            node_ip: None,
            cluster_dns: self.cluster_dns.unwrap_or_else(|| IpAddr::from([10, 43, 0, 10])),
            cluster_domain: self.cluster_domain.clone().unwrap_or_else(|| "cluster.local".into()),
        })
    }

    /// The client `--kubeconfig` (and `--server`) name.
    pub async fn client(&self) -> Result<(kube::Client, Option<String>), String> {
        let path = self.kubeconfig.as_ref().ok_or("--kubeconfig is required")?;
        let kubeconfig = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| format!("invalid kubeconfig {}: {e}", path.display()))?;
        if let Some(url) = &self.server {
            config.cluster_url = url.parse().map_err(|_| format!("invalid value \"{url}\" for --server: not a URL"))?;
        }
        let ca = config.root_cert.as_ref().and_then(|certs| certs.first()).map(|der| der_to_pem(der));
        let client = kube::Client::try_from(config).map_err(|e| format!("cannot build an API client: {e}"))?;
        Ok((client, ca))
    }
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> NodeDefaults {
        NodeDefaults {
            data_dir: PathBuf::from("/d"),
            node_ip: Some(IpAddr::from([10, 0, 0, 5])),
            cluster_dns: IpAddr::from([10, 43, 0, 10]),
            cluster_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn kubelet_defaults_are_upstreams() {
        let s = KubeletSettings::default();
        assert_eq!(s.max_pods, 110);
        assert_eq!(s.port, 10250);
        assert_eq!(s.eviction_hard[0], Threshold { signal: Signal::MemoryAvailable, below: Level::Amount(100 << 20) });
        assert_eq!(s.eviction_hard[1], Threshold { signal: Signal::NodefsAvailable, below: Level::Percent(10.0) });
        assert_eq!((s.image_gc_high_threshold, s.image_gc_low_threshold), (85, 80));
    }

    #[test]
    fn kubelet_args_override_and_bad_ones_are_named() {
        let s = parse_kubelet_args(&["max-pods=20".into(), "eviction-hard=memory.available<1Gi".into()]).unwrap();
        assert_eq!(s.max_pods, 20);
        assert_eq!(s.eviction_hard, vec![Threshold { signal: Signal::MemoryAvailable, below: Level::Amount(1 << 30) }]);
        assert_eq!(
            parse_kubelet_args(&["max-pods=x".into()]).unwrap_err(),
            "invalid value \"max-pods=x\" for --kubelet-arg: expected a positive number"
        );
        assert_eq!(
            parse_kubelet_args(&["eviction-hard=cpu<1".into()]).unwrap_err(),
            "invalid value \"eviction-hard=cpu<1\" for --kubelet-arg: unknown eviction signal \"cpu\""
        );
        assert!(parse_kubelet_args(&["fail-swap-on=false".into()]).unwrap_err().contains("unknown setting"));
        assert!(
            parse_kubelet_args(&["image-gc-low-threshold=90".into()]).unwrap_err().contains("is above image-gc-high")
        );
    }

    #[test]
    fn node_flags_validate() {
        let f = NodeFlags {
            node_name: Some("pi-1".into()),
            node_label: vec!["zone=a".into()],
            node_taint: vec!["dedicated=edge:NoSchedule".into()],
            ..Default::default()
        };
        let c = f.to_config(defaults()).unwrap();
        assert_eq!(c.node_ips, vec![IpAddr::from([10, 0, 0, 5])]);
        assert_eq!(c.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(c.taints[0].effect, "NoSchedule");
        let e = NodeFlags { node_name: Some("Pi_1".into()), ..Default::default() }.to_config(defaults()).unwrap_err();
        assert!(e.starts_with("invalid value \"Pi_1\" for --node-name"), "{e}");
        let e = NodeFlags { node_label: vec!["x".into()], ..Default::default() }.to_config(defaults()).unwrap_err();
        assert_eq!(e, "invalid value \"x\" for --node-label: expected KEY=VALUE");
        let e = NodeFlags { node_label: vec!["node-role.kubernetes.io/worker=true".into()], ..Default::default() }
            .to_config(defaults())
            .unwrap_err();
        assert!(
            e.starts_with("invalid value \"node-role.kubernetes.io/worker=true\" for --node-label: a node may not"),
            "{e}"
        );
    }

    #[test]
    fn percent_and_amount_levels() {
        assert!(Level::Percent(10.0).crossed(9, 100));
        assert!(!Level::Percent(10.0).crossed(10, 100));
        assert!(Level::Amount(100).crossed(99, 1000));
    }
}
