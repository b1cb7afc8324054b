//! The node agent: a kubelet that runs the pods bound to this node through CRI.
//!
//! Invariant: an API client only (a [`kube::Client`], in-process inside `skiff server`, over
//! HTTPS in `skiff agent`); it never sees the store. It speaks to containers only through the
//! [`crate::cri`] room.
pub mod kubelet_api;
