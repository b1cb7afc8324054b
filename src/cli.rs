//! Command line: subcommands, flags, the config file and `SKIFF_*` environment variables.
//!
//! Precedence, as k3s does it: the config file's keys become flags placed *before* the real
//! command line, so a flag given on the command line wins over the file, and the file wins over
//! `SKIFF_*` variables (clap reads a variable only for a flag that is absent). This module turns
//! text into a typed [`ServerConfig`](crate::server::config::ServerConfig) and dispatches; it
//! holds no server logic.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::server::config::{LogFormat, ServerConfig, ServerFlags};

/// Default config file read when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/skiff/config.yaml";

/// Version string: version, commit and target triple.
pub const LONG_VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SKIFF_COMMIT"), ", target ", env!("SKIFF_TARGET"), ")");

#[derive(Parser, Debug)]
#[command(name = "skiff", version = LONG_VERSION, about = "A single-binary Kubernetes distribution for edge boxes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane (API server and its store).
    #[command(args_override_self = true)]
    Server(Box<ServerFlags>),
    /// Run the node part only (the kubelet and its container runtime) against an API server.
    Agent(Box<crate::agent::config::AgentFlags>),
    /// Run simulated nodes (no containers) against a cluster, for tests and benchmarks.
    Sim(Box<crate::sim::config::SimFlags>),
    /// Import and list container images through the node's CRI socket.
    Images(Box<crate::cri::images_cli::ImagesFlags>),
    /// Check that this box's kernel and userspace can run a skiff node (one line per check).
    CheckConfig(crate::checkconfig::cli::CheckConfigFlags),
    /// Create, list and delete bootstrap tokens for joining agents.
    Token(Box<crate::server::token_cli::TokenFlags>),
    /// Show or rotate the keys that encrypt Secrets at rest.
    SecretsEncrypt(Box<crate::server::secrets_encryption::SecretsEncryptFlags>),
    /// Run the kubectl found on PATH with KUBECONFIG set to skiff's admin kubeconfig.
    #[command(disable_help_flag = true)]
    Kubectl {
        /// Arguments passed to kubectl unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, action = ArgAction::Append)]
        args: Vec<OsString>,
    },
    /// Write the manual pages (skiff.1 and one per subcommand) into DIR; used by packaging.
    #[command(hide = true)]
    Man {
        /// Directory to write the pages into (created if missing).
        dir: PathBuf,
    },
}

/// Errors of the command line, each printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("config file {path}: {message}")]
    ConfigFile { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Entry point called by `main`; returns the process exit code.
pub fn run() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    match parse(args) {
        Ok(Parsed::Server(cfg)) => crate::server::run_blocking(*cfg),
        Ok(Parsed::Kubectl(args)) => run_kubectl(args),
        Ok(Parsed::Sim(flags)) => crate::sim::config::run_blocking(*flags),
        Ok(Parsed::Agent(flags)) => crate::agent::cli::run_blocking(*flags),
        Ok(Parsed::Images(flags)) => crate::cri::images_cli::run_blocking(*flags),
        Ok(Parsed::CheckConfig(flags)) => crate::checkconfig::cli::run_blocking(flags),
        Ok(Parsed::Token(flags)) => crate::server::token_cli::run_blocking(*flags),
        Ok(Parsed::SecretsEncrypt(flags)) => crate::server::secrets_encryption::run_blocking(*flags),
        Ok(Parsed::Man(dir)) => match write_man_pages(&dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("skiff: writing manual pages to {}: {e}", dir.display());
                1
            }
        },
        Ok(Parsed::Exit(code)) => code,
        Err(e) => {
            eprintln!("skiff: {e}");
            1
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    Server(Box<ServerConfig>),
    Kubectl(Vec<OsString>),
    Sim(Box<crate::sim::config::SimFlags>),
    Agent(Box<crate::agent::config::AgentFlags>),
    Images(Box<crate::cri::images_cli::ImagesFlags>),
    CheckConfig(crate::checkconfig::cli::CheckConfigFlags),
    Token(Box<crate::server::token_cli::TokenFlags>),
    SecretsEncrypt(Box<crate::server::secrets_encryption::SecretsEncryptFlags>),
    /// Write the manual pages into this directory.
    Man(PathBuf),
    /// `--help` or `--version` was printed.
    Exit(i32),
}

/// Parses argv (with the program name first) including the config file.
pub fn parse(args: Vec<OsString>) -> Result<Parsed, CliError> {
    // The config file is read only for `server` and `agent`; find `--config` first without
    // clap so the file's flags can be placed ahead of the command line.
    let mode = args.get(1).and_then(|a| a.to_str()).filter(|a| *a == "server" || *a == "agent").map(str::to_string);
    let mut full = args.clone();
    if let Some(mode) = mode {
        let (path, explicit) = config_path(&args[2..]);
        let file_args = match std::fs::read_to_string(&path) {
            Ok(text) => config_file_args_for(&mode, &text, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Vec::new(),
            Err(e) => {
                return Err(CliError::ConfigFile { path: path.display().to_string(), message: e.to_string() });
            }
        };
        full = args[..2].to_vec();
        full.extend(file_args.into_iter().map(OsString::from));
        full.extend(args[2..].iter().cloned());
    }
    let matches = match Cli::command().try_get_matches_from(full) {
        Ok(m) => m,
        Err(e) => return clap_error(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return clap_error(e),
    };
    match cli.command {
        Command::Server(flags) => {
            let cfg = ServerConfig::from_flags(*flags).map_err(CliError::Invalid)?;
            Ok(Parsed::Server(Box::new(cfg)))
        }
        Command::Kubectl { args } => Ok(Parsed::Kubectl(args)),
        Command::Sim(flags) => Ok(Parsed::Sim(flags)),
        Command::Agent(flags) => Ok(Parsed::Agent(flags)),
        Command::Images(flags) => Ok(Parsed::Images(flags)),
        Command::CheckConfig(flags) => Ok(Parsed::CheckConfig(flags)),
        Command::Token(flags) => Ok(Parsed::Token(flags)),
        Command::SecretsEncrypt(flags) => Ok(Parsed::SecretsEncrypt(flags)),
        Command::Man { dir } => Ok(Parsed::Man(dir)),
    }
}

fn clap_error(e: clap::Error) -> Result<Parsed, CliError> {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let code = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { 1 } else { 0 };
            let _ = e.print();
            Ok(Parsed::Exit(code))
        }
        _ => {
            // clap renders several lines (tips, usage); the first names the problem and the flag.
            let rendered = e.render().to_string();
            let first = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            Err(CliError::Usage(first.trim_start_matches("error: ").to_string()))
        }
    }
}

/// Returns the config file path and whether it was named explicitly.
fn config_path(args: &[OsString]) -> (PathBuf, bool) {
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        let s = a.to_string_lossy();
        if s == "--config" || s == "-c" {
            if let Some(v) = iter.next() {
                return (PathBuf::from(v), true);
            }
        } else if let Some(v) = s.strip_prefix("--config=") {
            return (PathBuf::from(v), true);
        }
    }
    if let Some(v) = std::env::var_os("SKIFF_CONFIG_FILE") {
        return (PathBuf::from(v), true);
    }
    (PathBuf::from(DEFAULT_CONFIG_FILE), false)
}

/// Turns the YAML config file into `--key=value` flags of `skiff server`, rejecting keys no
/// flag has.
pub fn config_file_args(text: &str, path: &str) -> Result<Vec<String>, CliError> {
    config_file_args_for("server", text, path)
}

/// The same for the `server` or `agent` subcommand.
pub fn config_file_args_for(mode: &str, text: &str, path: &str) -> Result<Vec<String>, CliError> {
    let err = |message: String| CliError::ConfigFile { path: path.to_string(), message };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| err(format!("not valid YAML: {e}")))?;
    let map = match value {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => return Ok(Vec::new()),
        _ => return Err(err("must be a mapping of flag names to values".into())),
    };
    let cmd = if mode == "agent" {
        <crate::agent::config::AgentFlags as clap::Args>::augment_args(clap::Command::new("agent"))
    } else {
        <ServerFlags as clap::Args>::augment_args(clap::Command::new("server"))
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let key = match k {
            serde_yaml::Value::String(s) => s,
            other => return Err(err(format!("key {} is not a string", yaml_scalar(&other).unwrap_or_default()))),
        };
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| err(format!("unknown key \"{key}\"")))?;
        let takes_value = arg.get_action().takes_values();
        let values: Vec<serde_yaml::Value> = match v {
            serde_yaml::Value::Sequence(seq) => seq,
            other => vec![other],
        };
        for item in values {
            if !takes_value {
                match item {
                    serde_yaml::Value::Bool(true) => out.push(format!("--{key}")),
                    serde_yaml::Value::Bool(false) => {}
                    _ => return Err(err(format!("invalid value for \"{key}\": expected true or false"))),
                }
                continue;
            }
            let s = yaml_scalar(&item).ok_or_else(|| err(format!("invalid value for \"{key}\": expected a scalar")))?;
            out.push(format!("--{key}={s}"));
        }
    }
    Ok(out)
}

fn yaml_scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Renders the manual pages from the command line's own definition, so they never disagree
/// with `--help`: `skiff.1` and one page per visible subcommand (`skiff-server.1`, ...).
pub fn write_man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}

/// The admin kubeconfig `skiff kubectl` uses when `KUBECONFIG` is unset.
fn default_kubeconfig() -> PathBuf {
    crate::server::config::default_kubeconfig_path(nix::unistd::geteuid().is_root())
}

fn run_kubectl(args: Vec<OsString>) -> i32 {
    let Some(kubectl) = find_kubectl() else {
        eprintln!(
            "skiff: kubectl not found on PATH; install it (Debian: apt-get install kubectl, or copy a kubectl binary into /usr/local/bin) or use {} from a workstation",
            default_kubeconfig().display()
        );
        return 1;
    };
    let mut cmd = std::process::Command::new(&kubectl);
    cmd.args(&args);
    if std::env::var_os("KUBECONFIG").is_none() {
        cmd.env("KUBECONFIG", default_kubeconfig());
    }
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    eprintln!("skiff: cannot run {}: {err}", kubectl.display());
    1
}

/// Finds `kubectl` on PATH, skipping this binary itself (it may be linked as kubectl).
fn find_kubectl() -> Option<PathBuf> {
    let me = std::env::current_exe().ok().and_then(|p| p.canonicalize().ok());
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|candidate| is_executable(candidate) && candidate.canonicalize().ok().as_deref() != me.as_deref())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Sets up `tracing` output for the chosen format and verbosity.
pub fn init_logging(format: LogFormat, verbosity: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbosity {
        0 => "info",
        1..=3 => "info,skiff=debug",
        _ => "debug,skiff=trace",
    };
    let filter = EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_keys_become_flags() {
        let args =
            config_file_args("https-listen-port: 7443\ntls-san:\n  - a.example\n  - 10.0.0.1\n", "c.yaml").unwrap();
        assert_eq!(args, vec!["--https-listen-port=7443", "--tls-san=a.example", "--tls-san=10.0.0.1"]);
    }

    #[test]
    fn later_flags_win_and_lists_accumulate() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let Parsed::Server(cfg) = parse(args(&[
            "skiff",
            "server",
            "--config",
            "/dev/null",
            "--cluster-domain",
            "a.local",
            "--cluster-domain",
            "b.local",
            "--tls-san",
            "x",
            "--tls-san",
            "y",
            "--advertise-address",
            "10.0.0.1",
        ]))
        .unwrap() else {
            panic!("not a server command")
        };
        assert_eq!(cfg.cluster_domain, "b.local");
        assert_eq!(cfg.tls_san, vec!["x", "y"]);
    }

    #[test]
    fn unknown_config_key_is_named() {
        let e = config_file_args("bogus: 1\n", "/etc/skiff/config.yaml").unwrap_err();
        assert_eq!(e.to_string(), "config file /etc/skiff/config.yaml: unknown key \"bogus\"");
    }

    #[test]
    fn non_mapping_config_is_rejected() {
        let e = config_file_args("- a\n- b\n", "c.yaml").unwrap_err();
        assert_eq!(e.to_string(), "config file c.yaml: must be a mapping of flag names to values");
    }
}
