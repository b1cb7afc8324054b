//! The service manager's readiness protocol (`sd_notify`): when systemd starts skiff with
//! `Type=notify` it sets `NOTIFY_SOCKET`, and the unit counts as started only once skiff sends
//! `READY=1` there: the server once its API serves, the agent once its node is registered.
//! Without `NOTIFY_SOCKET` (a terminal, a test) every call does nothing.

/// Sends `READY=1` to the service manager, if there is one.
pub fn notify_ready() {
    notify("READY=1\n");
}

/// Sends `STOPPING=1`: shutdown has begun.
pub fn notify_stopping() {
    notify("STOPPING=1\n");
}

fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
