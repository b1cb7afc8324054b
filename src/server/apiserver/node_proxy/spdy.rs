//! A small SPDY/3.1 client: what exec and attach need to drive a kubelet's remote-command
//! session.
