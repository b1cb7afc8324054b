//! Server settings: the flags as clap sees them and the validated, defaulted `ServerConfig`.
//!
//! Every flag has a `SKIFF_*` variable and a config-file key of the same long name. Validation
//! here turns every bad value into one line that names the flag.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use ipnet::IpNet;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `skiff server` flags as parsed; `None` means "not given".
#[derive(Args, Debug, Default, Clone)]
pub struct ServerFlags {
    /// Config file (YAML; keys are the long flag names) [default: /etc/skiff/config.yaml]
    #[arg(short = 'c', long, env = "SKIFF_CONFIG_FILE", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder for all state [default: /var/lib/skiff, or ~/.skiff when not root]
    #[arg(short = 'd', long, env = "SKIFF_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the API server listens on [default: 0.0.0.0]
    #[arg(long, env = "SKIFF_BIND_ADDRESS", value_name = "IP")]
    pub bind_address: Option<IpAddr>,
    /// HTTPS port of the API server [default: 6443]
    #[arg(long, env = "SKIFF_HTTPS_LISTEN_PORT", value_name = "PORT")]
    pub https_listen_port: Option<u16>,
    /// Address advertised to clients and in the kubernetes Service [default: the host's primary IP]
    #[arg(long, env = "SKIFF_ADVERTISE_ADDRESS", value_name = "IP")]
    pub advertise_address: Option<IpAddr>,
    /// Extra hostname or IP in the serving certificate (repeatable)
    #[arg(long = "tls-san", env = "SKIFF_TLS_SAN", value_name = "NAME", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Pod network [default: 10.42.0.0/16]
    #[arg(long, env = "SKIFF_CLUSTER_CIDR", value_name = "CIDR")]
    pub cluster_cidr: Option<String>,
    /// Service network; its first address is the kubernetes Service [default: 10.43.0.0/16]
    #[arg(long, env = "SKIFF_SERVICE_CIDR", value_name = "CIDR")]
    pub service_cidr: Option<String>,
    /// Cluster DNS service address [default: 10.43.0.10]
    #[arg(long, env = "SKIFF_CLUSTER_DNS", value_name = "IP")]
    pub cluster_dns: Option<IpAddr>,
    /// Cluster domain [default: cluster.local]
    #[arg(long, env = "SKIFF_CLUSTER_DOMAIN", value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// NodePort range [default: 30000-32767]
    #[arg(long, env = "SKIFF_SERVICE_NODE_PORT_RANGE", value_name = "FROM-TO")]
    pub service_node_port_range: Option<String>,
    /// Where to write the admin kubeconfig [default: /etc/skiff/skiff.yaml, or ~/.skiff/skiff.yaml when not root]
    #[arg(short = 'o', long, env = "SKIFF_KUBECONFIG_OUTPUT", value_name = "FILE")]
    pub write_kubeconfig: Option<PathBuf>,
    /// File mode of the admin kubeconfig, octal [default: 0600]
    #[arg(long, env = "SKIFF_KUBECONFIG_MODE", value_name = "MODE")]
    pub write_kubeconfig_mode: Option<String>,
    /// Shared secret for joining nodes [default: generated on first start]
    #[arg(short = 't', long, env = "SKIFF_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Secret that joins agents only, never servers [default: none; the token joins agents]
    #[arg(long, env = "SKIFF_AGENT_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,
    /// Lifetime of the certificates the cluster signs for CSRs, e.g. 8760h [default: 8760h]
    #[arg(long, env = "SKIFF_CLUSTER_SIGNING_DURATION", value_name = "DURATION", hide = true)]
    pub cluster_signing_duration: Option<String>,
    /// Log format [default: text]
    #[arg(long, env = "SKIFF_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Revisions of history the store keeps for paging and watch replay [default: 10000]
    #[arg(long, env = "SKIFF_STORE_HISTORY_WINDOW", value_name = "REVISIONS", hide = true, value_parser = clap::value_parser!(u64).range(10..))]
    pub store_history_window: Option<u64>,
    /// Seconds between store compactions [default: 60]
    #[arg(long, env = "SKIFF_STORE_COMPACT_INTERVAL", value_name = "SECONDS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub store_compact_interval: Option<u64>,
    /// Do not run the scheduler
    #[arg(long, env = "SKIFF_DISABLE_SCHEDULER")]
    pub disable_scheduler: bool,
    /// Encrypt Secrets at rest (AES-GCM, key in <data-dir>/server/cred/encryption-config.json)
    #[arg(long, env = "SKIFF_SECRETS_ENCRYPTION")]
    pub secrets_encryption: bool,
    /// Do not run this controller (repeatable; see ARCHITECTURE.md for the names)
    #[arg(long = "disable-controller", env = "SKIFF_DISABLE_CONTROLLER", value_name = "NAME", value_delimiter = ',')]
    pub disable_controller: Vec<String>,
    /// Prefix length of each node's pod range within the cluster CIDR [default: 24]
    #[arg(long, env = "SKIFF_NODE_CIDR_MASK_SIZE", value_name = "BITS")]
    pub node_cidr_mask_size: Option<u8>,
    /// Seconds without a heartbeat before a node is NotReady [default: 40]
    #[arg(long, env = "SKIFF_NODE_MONITOR_GRACE_PERIOD", value_name = "SECONDS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub node_monitor_grace_period: Option<u64>,
    /// Terminated pods kept before the oldest are deleted; 0 keeps them all [default: 12500]
    #[arg(long, env = "SKIFF_TERMINATED_POD_GC_THRESHOLD", value_name = "PODS")]
    pub terminated_pod_gc_threshold: Option<usize>,
    /// Log verbosity, 0-10 [default: 0]
    #[arg(short = 'v', env = "SKIFF_V", value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub v: Option<u8>,
    /// Run the control plane only: no agent, so this box runs no pods
    #[arg(long, env = "SKIFF_DISABLE_AGENT")]
    pub disable_agent: bool,
    #[command(flatten)]
    pub node: crate::agent::config::NodeFlags,
}

/// Validated server settings with defaults applied.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub https_listen_port: u16,
    pub advertise_address: IpAddr,
    pub tls_san: Vec<String>,
    pub cluster_cidr: IpNet,
    pub service_cidr: IpNet,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    pub node_port_range: (u16, u16),
    pub write_kubeconfig: PathBuf,
    pub write_kubeconfig_mode: u32,
    pub token: Option<String>,
    pub agent_token: Option<String>,
    /// Lifetime of certificates signed for CSRs (`--cluster-signing-duration`).
    pub cluster_signing_duration: std::time::Duration,
    pub log_format: LogFormat,
    pub verbosity: u8,
    pub store_history_window: u64,
    pub store_compact_interval: std::time::Duration,
    pub disable_scheduler: bool,
    pub secrets_encryption: bool,
    pub disable_controllers: Vec<String>,
    pub node_cidr_mask_size: u8,
    pub node_monitor_grace_period: std::time::Duration,
    pub terminated_pod_gc_threshold: usize,
    /// The agent beside the control plane; `None` with `--disable-agent`.
    pub agent: Option<crate::agent::config::AgentConfig>,
}

/// `/etc/skiff/skiff.yaml` for root, `~/.skiff/skiff.yaml` otherwise.
pub fn default_kubeconfig_path(root: bool) -> PathBuf {
    if root { PathBuf::from("/etc/skiff/skiff.yaml") } else { home().join(".skiff").join("skiff.yaml") }
}

/// `/var/lib/skiff` for root, `~/.skiff` otherwise.
pub fn default_data_dir(root: bool) -> PathBuf {
    if root { PathBuf::from("/var/lib/skiff") } else { home().join(".skiff") }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

fn parse_cidr(flag: &str, s: &str) -> Result<IpNet, String> {
    let net: IpNet = s.parse().map_err(|_| format!("invalid value \"{s}\" for --{flag}: not a CIDR"))?;
    if net.trunc() != net {
        return Err(format!("invalid value \"{s}\" for --{flag}: host bits are set (did you mean {}?)", net.trunc()));
    }
    Ok(net)
}

/// Parses `30000-32767`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid value \"{s}\" for --service-node-port-range: expected FROM-TO, e.g. 30000-32767");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let from: u16 = a.trim().parse().map_err(|_| bad())?;
    let to: u16 = b.trim().parse().map_err(|_| bad())?;
    if from == 0 || from > to {
        return Err(bad());
    }
    Ok((from, to))
}

impl ServerConfig {
    /// Applies defaults and checks every value; errors name the flag.
    pub fn from_flags(f: ServerFlags) -> Result<ServerConfig, String> {
        let root = nix::unistd::geteuid().is_root();
        let data_dir = f.data_dir.unwrap_or_else(|| default_data_dir(root));
        let cluster_cidr = parse_cidr("cluster-cidr", f.cluster_cidr.as_deref().unwrap_or("10.42.0.0/16"))?;
        let service_cidr = parse_cidr("service-cidr", f.service_cidr.as_deref().unwrap_or("10.43.0.0/16"))?;
        if service_cidr.prefix_len() + 20 < service_cidr.max_prefix_len() {
            return Err(format!(
                "invalid value \"{service_cidr}\" for --service-cidr: larger than a /{} (at most 2^20 addresses)",
                service_cidr.max_prefix_len() - 20
            ));
        }
        if service_cidr.hosts().nth(1).is_none() {
            return Err(format!("invalid value \"{service_cidr}\" for --service-cidr: too small"));
        }
        let cluster_dns = f.cluster_dns.unwrap_or_else(|| "10.43.0.10".parse().expect("literal"));
        if !service_cidr.contains(&cluster_dns) {
            return Err(format!(
                "invalid value \"{cluster_dns}\" for --cluster-dns: not inside --service-cidr {service_cidr}"
            ));
        }
        let cluster_domain = f.cluster_domain.unwrap_or_else(|| "cluster.local".into());
        if cluster_domain.is_empty()
            || !cluster_domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
        {
            return Err(format!("invalid value \"{cluster_domain}\" for --cluster-domain: not a DNS domain"));
        }
        let node_port_range = parse_port_range(f.service_node_port_range.as_deref().unwrap_or("30000-32767"))?;
        let mode_text = f.write_kubeconfig_mode.unwrap_or_else(|| "0600".into());
        let write_kubeconfig_mode = u32::from_str_radix(mode_text.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| format!("invalid value \"{mode_text}\" for --write-kubeconfig-mode: expected an octal file mode such as 0600"))?;
        let advertise_address = match f.advertise_address {
            Some(a) => a,
            None => primary_ip().unwrap_or_else(|| "127.0.0.1".parse().expect("literal")),
        };
        for san in &f.tls_san {
            if san.is_empty() || san.contains(char::is_whitespace) {
                return Err(format!("invalid value \"{san}\" for --tls-san: expected a hostname or IP"));
            }
        }
        if let Some(t) = &f.token
            && t.trim().is_empty()
        {
            return Err("invalid value \"\" for --token: must not be empty".into());
        }
        if let Some(t) = &f.agent_token
            && t.trim().is_empty()
        {
            return Err("invalid value \"\" for --agent-token: must not be empty".into());
        }
        let cluster_signing_duration = match &f.cluster_signing_duration {
            None => std::time::Duration::from_secs(365 * 86_400),
            Some(text) => crate::api::cron::go_duration(text)
                .ok()
                .and_then(|ns| u64::try_from(ns).ok())
                .map(std::time::Duration::from_nanos)
                .filter(|d| d.as_secs() >= 10)
                .ok_or_else(|| {
                    format!("invalid value \"{text}\" for --cluster-signing-duration: expected a duration of at least 10s, such as 8760h")
                })?,
        };
        for name in &f.disable_controller {
            if !crate::server::controllers::NAMES.contains(&name.as_str()) {
                return Err(format!(
                    "invalid value \"{name}\" for --disable-controller: not a controller; known: {}",
                    crate::server::controllers::NAMES.join(", ")
                ));
            }
        }
        let prefix = cluster_cidr.prefix_len();
        let max_len = cluster_cidr.max_prefix_len();
        let node_cidr_mask_size = f.node_cidr_mask_size.unwrap_or(if max_len == 32 { 24 } else { 64 });
        if node_cidr_mask_size < prefix || node_cidr_mask_size > max_len.saturating_sub(2) {
            return Err(format!(
                "invalid value \"{node_cidr_mask_size}\" for --node-cidr-mask-size: must be between {prefix} (the cluster CIDR's) and {}",
                max_len.saturating_sub(2)
            ));
        }
        let agent = if f.disable_agent {
            None
        } else {
            Some(f.node.to_config(crate::agent::config::NodeDefaults {
                data_dir: data_dir.clone(),
                node_ip: Some(advertise_address),
                cluster_dns,
                cluster_domain: cluster_domain.clone(),
            })?)
        };
        Ok(ServerConfig {
            agent,
            data_dir,
            bind_address: f.bind_address.unwrap_or_else(|| "0.0.0.0".parse().expect("literal")),
            https_listen_port: f.https_listen_port.unwrap_or(6443),
            advertise_address,
            tls_san: f.tls_san,
            cluster_cidr,
            service_cidr,
            cluster_dns,
            cluster_domain,
            node_port_range,
            write_kubeconfig: f.write_kubeconfig.unwrap_or_else(|| default_kubeconfig_path(root)),
            write_kubeconfig_mode,
            token: f.token,
            agent_token: f.agent_token,
            cluster_signing_duration,
            log_format: f.log_format.unwrap_or(LogFormat::Text),
            verbosity: f.v.unwrap_or(0),
            store_history_window: f.store_history_window.unwrap_or(10_000),
            store_compact_interval: std::time::Duration::from_secs(f.store_compact_interval.unwrap_or(60)),
            disable_scheduler: f.disable_scheduler,
            secrets_encryption: f.secrets_encryption,
            disable_controllers: f.disable_controller,
            node_cidr_mask_size,
            node_monitor_grace_period: std::time::Duration::from_secs(f.node_monitor_grace_period.unwrap_or(40)),
            terminated_pod_gc_threshold: f.terminated_pod_gc_threshold.unwrap_or(12_500),
        })
    }

    /// `<data-dir>/server`.
    pub fn server_dir(&self) -> PathBuf {
        self.data_dir.join("server")
    }

    /// The first address of the service network: the `kubernetes` Service's ClusterIP.
    pub fn first_service_ip(&self) -> IpAddr {
        self.service_cidr.hosts().next().unwrap_or(self.service_cidr.network())
    }
}

/// The source address the kernel would use for an outbound route (no packet is sent).
pub fn primary_ip() -> Option<IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // connect() on UDP only selects a route; nothing leaves the machine.
    sock.connect("192.0.2.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    if ip.is_unspecified() { None } else { Some(ip) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_k3s() {
        let c = ServerConfig::from_flags(ServerFlags {
            advertise_address: Some("10.0.0.5".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.https_listen_port, 6443);
        assert_eq!(c.service_cidr.to_string(), "10.43.0.0/16");
        assert_eq!(c.first_service_ip().to_string(), "10.43.0.1");
        assert_eq!(c.cluster_dns.to_string(), "10.43.0.10");
        assert_eq!(c.node_port_range, (30000, 32767));
        assert_eq!(c.write_kubeconfig_mode, 0o600);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e =
            ServerConfig::from_flags(ServerFlags { service_cidr: Some("10.43.0.1/16".into()), ..Default::default() })
                .unwrap_err();
        assert_eq!(
            e,
            "invalid value \"10.43.0.1/16\" for --service-cidr: host bits are set (did you mean 10.43.0.0/16?)"
        );
        let e =
            ServerConfig::from_flags(ServerFlags { service_node_port_range: Some("5-1".into()), ..Default::default() })
                .unwrap_err();
        assert!(e.starts_with("invalid value \"5-1\" for --service-node-port-range"), "{e}");
        let e =
            ServerConfig::from_flags(ServerFlags { write_kubeconfig_mode: Some("999".into()), ..Default::default() })
                .unwrap_err();
        assert!(e.contains("--write-kubeconfig-mode"), "{e}");
        let e = ServerConfig::from_flags(ServerFlags {
            cluster_dns: Some("10.44.0.10".parse().unwrap()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("not inside --service-cidr"), "{e}");
    }
}
