//! skiff: a single-binary Kubernetes distribution for edge boxes.
//!
//! Start at [`cli`] (argument parsing and mode dispatch), then [`server`] for the control
//! plane. [`api`] holds the object machinery shared by every component; [`pki`] the cluster's
//! certificates and tokens.

pub mod api;
pub mod cli;
pub mod cri;
pub mod pki;
pub mod runtime;
pub mod server;
pub mod sim;
