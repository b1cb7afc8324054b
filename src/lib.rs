//! skiff: a single-binary Kubernetes distribution for edge boxes.
//!
//! Start at [`cli`] (argument parsing and mode dispatch), then [`server`] for the control
//! plane. [`api`] holds the object machinery shared by every component; [`pki`] the cluster's
//! certificates and tokens. [`cri`] runs containerd and speaks CRI v1 to it for the node
//! agent. [`checkconfig`] tells whether a box can be a node; [`systemd`] tells the service
//! manager when skiff is ready.

pub mod agent;
pub mod api;
pub mod checkconfig;
pub mod cli;
pub mod cri;
pub mod netproxy;
pub mod pki;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod systemd;
