//! `skiff check-config`: whether this box's kernel and userspace can run a skiff node, one
//! line per check with the fix for each failure.
//!
//! Every check reads the host through the [`Host`] trait and returns a [`Check`] (name,
//! [`Status`], detail, fix); [`render`] turns one into its line. [`all`] is the list
//! `skiff check-config` prints, in order; [`node_checks`] is the part the agent runs before it
//! starts, refusing to start on any failure ([`NodeUnfit`]) with the very lines check-config
//! prints, instead of failing obscurely later.
//!
//! Invariant: reads only. Nothing here changes the host (no module is loaded, no file
//! written, no setting changed); a fix is advice for the user. The rooms the checks look at
//! (cgroups, kernel, runtime binaries, CNI plugins, ports, clock) each have a file:
//! [`cgroups`], [`kernel`], [`userspace`], [`system`].

pub mod cgroups;
pub mod cli;
pub mod host;
pub mod kernel;
pub mod system;
pub mod userspace;

use std::fmt;

pub use host::{Host, PortState, RootedHost};

/// Environment variable naming another root for the checks' reads (a fixture tree); for tests.
pub const ROOT_ENV: &str = "SKIFF_CHECK_ROOT";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, or may work, but something is worth knowing (or could not be told).
    Warn,
    /// A node will not work until it is fixed.
    Fail,
}

impl Status {
    /// The word at the start of the line: `pass`, `warn`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, stable across releases (`cgroup memory controller`).
    pub name: String,
    pub status: Status,
    /// What was found (may be empty).
    pub detail: String,
    /// What to do about it, for warnings and failures.
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), status: Status::Pass, detail: detail.into(), fix: None }
    }

    /// A warning, with advice when there is some.
    pub fn warn(name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Check {
        Check { name: name.into(), status: Status::Warn, detail: detail.into(), fix }
    }

    /// A failure and its fix.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name: name.into(), status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// The line of a check: `<status>  <name>[: <detail>][; <fix>]`, status one of `pass`,
/// `warn`, `FAIL`.
pub fn render(check: &Check) -> String {
    let mut line = format!("{}  {}", check.status.label(), check.name);
    if !check.detail.is_empty() {
        line.push_str(": ");
        line.push_str(&check.detail);
    }
    if let Some(fix) = &check.fix {
        line.push_str("; ");
        line.push_str(fix);
    }
    line
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(self))
    }
}

/// Every check of `skiff check-config`, in the order printed.
pub fn all(host: &dyn Host) -> Vec<Check> {
    let cg = cgroups::Cgroups::read(host);
    let k = kernel::Kernel::read(host);
    let mut out = vec![cg.hierarchy()];
    out.extend(cgroups::CONTROLLERS.iter().map(|c| cg.controller(host, c)));
    out.push(kernel::namespaces(host));
    out.push(k.config_check());
    out.push(kernel::overlayfs(host, &k));
    out.push(kernel::netfilter(&k));
    out.push(userspace::nftables(host, &k));
    out.push(userspace::iptables(host));
    out.push(kernel::br_netfilter(host, &k));
    out.push(kernel::vxlan(&k));
    out.push(kernel::bridge_and_veth(&k));
    out.push(userspace::containerd(host));
    out.push(userspace::runc(host));
    out.push(userspace::cni_plugins(host));
    out.extend(system::PORTS.iter().map(|(port, what)| system::port(host, *port, what)));
    out.push(system::clock(host));
    out
}

/// The checks without which the agent cannot run a single pod: the memory, cpu and pids
/// cgroup controllers, namespaces, overlayfs and, when the agent runs its own containerd
/// (`own_containerd`), containerd and runc. The same checks, and lines, as in [`all`].
pub fn node_checks(host: &dyn Host, own_containerd: bool) -> Vec<Check> {
    let cg = cgroups::Cgroups::read(host);
    let k = kernel::Kernel::read(host);
    let mut out: Vec<Check> = cgroups::FATAL_CONTROLLERS.iter().map(|c| cg.controller(host, c)).collect();
    out.push(kernel::namespaces(host));
    out.push(kernel::overlayfs(host, &k));
    if own_containerd {
        out.push(userspace::containerd(host));
        out.push(userspace::runc(host));
    }
    out
}

/// The agent refuses to start: these checks failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(render).collect::<Vec<_>>().join("\n"))]
pub struct NodeUnfit(pub Vec<Check>);

impl NodeUnfit {
    /// Prints the failed checks' lines on stderr, each after `skiff: `.
    pub fn print(&self) {
        for c in &self.0 {
            eprintln!("skiff: {c}");
        }
    }
}

/// Runs [`node_checks`] on the host (or under [`ROOT_ENV`] when set); the failures, if any.
pub fn ensure_node_fit(own_containerd: bool) -> Result<(), NodeUnfit> {
    let host = match std::env::var_os(ROOT_ENV) {
        Some(root) => RootedHost::at(root.into()),
        None => RootedHost::real(),
    };
    let failed: Vec<Check> =
        node_checks(&host, own_containerd).into_iter().filter(|c| c.status == Status::Fail).collect();
    if failed.is_empty() { Ok(()) } else { Err(NodeUnfit(failed)) }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_status_name_detail_and_fix() {
        assert_eq!(render(&Check::pass("clock", "")), "pass  clock");
        assert_eq!(render(&Check::pass("runc", "1.1.5 (/usr/sbin/runc)")), "pass  runc: 1.1.5 (/usr/sbin/runc)");
        assert_eq!(
            render(&Check::warn("vxlan", "module vxlan not loaded", Some("run \"modprobe vxlan\"".into()))),
            "warn  vxlan: module vxlan not loaded; run \"modprobe vxlan\""
        );
        assert_eq!(
            render(&Check::fail("containerd", "not found on PATH", "install it")),
            "FAIL  containerd: not found on PATH; install it"
        );
    }

    #[test]
    fn the_refusal_is_the_failed_lines() {
        let e = NodeUnfit(vec![Check::fail("a", "b", "c"), Check::fail("d", "", "e")]);
        assert_eq!(e.to_string(), "FAIL  a: b; c\nFAIL  d; e");
    }
}
