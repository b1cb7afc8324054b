//! The CRI calls pod workers make, each turning a gRPC error into one line: what the runtime
//! holds for a pod (its sandboxes and containers, found by the pod-uid label), starting and
//! stopping them, and tearing a pod down completely.

use std::collections::HashMap;
use std::time::Duration;

use crate::cri::CriClient;
use crate::cri::proto;

use super::spec::{LABEL_MANAGED, LABEL_POD_UID};

/// What the runtime holds for one pod.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Newest first.
    pub sandboxes: Vec<proto::PodSandbox>,
    /// Newest first.
    pub containers: Vec<proto::Container>,
}

impl Observed {
    /// The newest sandbox, if it is ready.
    pub fn ready_sandbox(&self) -> Option<&proto::PodSandbox> {
        self.sandboxes.first().filter(|s| s.state == proto::PodSandboxState::SandboxReady as i32)
    }

    /// The instances of container `name`, newest first, in sandbox `sandbox` (or in any).
    pub fn instances<'a>(
        &'a self,
        name: &'a str,
        sandbox: Option<&'a str>,
    ) -> impl Iterator<Item = &'a proto::Container> + 'a {
        self.containers.iter().filter(move |c| {
            c.metadata.as_ref().is_some_and(|m| m.name == name) && sandbox.is_none_or(|s| c.pod_sandbox_id == s)
        })
    }
}

/// The sandboxes and containers carrying `label=value`, newest first.
async fn list_labelled(cri: &CriClient, label: &str, value: &str) -> Result<Observed, String> {
    let selector: HashMap<String, String> = [(label.to_string(), value.to_string())].into_iter().collect();
    let mut rt = cri.runtime();
    let sandboxes = rt
        .list_pod_sandbox(proto::ListPodSandboxRequest {
            filter: Some(proto::PodSandboxFilter { label_selector: selector.clone(), ..Default::default() }),
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner()
        .items;
    let containers = rt
        .list_containers(proto::ListContainersRequest {
            filter: Some(proto::ContainerFilter { label_selector: selector, ..Default::default() }),
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner()
        .containers;
    let mut o = Observed { sandboxes, containers };
    o.sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    o.containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(o)
}

/// Reads the pod's sandboxes and containers.
pub async fn observe(cri: &CriClient, uid: &str) -> Result<Observed, String> {
    list_labelled(cri, LABEL_POD_UID, uid).await
}

/// Every sandbox and container the agent made, on this runtime.
pub async fn everything(cri: &CriClient) -> Result<Observed, String> {
    list_labelled(cri, LABEL_MANAGED, "true").await
}

/// A container's full status.
pub async fn container_status(cri: &CriClient, id: &str) -> Result<proto::ContainerStatus, String> {
    cri.runtime()
        .container_status(proto::ContainerStatusRequest { container_id: id.to_string(), verbose: false })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner()
        .status
        .ok_or_else(|| format!("no status for container {id}"))
}

/// The sandbox as a listing shows it, with its IP addresses, from one status call.
pub async fn sandbox(cri: &CriClient, id: &str) -> Result<(proto::PodSandbox, Vec<String>), String> {
    let st = cri
        .runtime()
        .pod_sandbox_status(proto::PodSandboxStatusRequest { pod_sandbox_id: id.to_string(), verbose: false })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner()
        .status
        .ok_or_else(|| format!("no status for sandbox {id}"))?;
    let mut ips = Vec::new();
    if let Some(net) = st.network {
        if !net.ip.is_empty() {
            ips.push(net.ip);
        }
        ips.extend(net.additional_ips.into_iter().map(|i| i.ip));
    }
    let sandbox = proto::PodSandbox {
        id: st.id,
        metadata: st.metadata,
        state: st.state,
        created_at: st.created_at,
        labels: st.labels,
        annotations: st.annotations,
        runtime_handler: st.runtime_handler,
    };
    Ok((sandbox, ips))
}

/// The sandbox's IP addresses (none when its status cannot be read).
pub async fn sandbox_ips(cri: &CriClient, id: &str) -> Vec<String> {
    sandbox(cri, id).await.map(|(_, ips)| ips).unwrap_or_default()
}

/// Stops a container, giving it `grace` to exit after SIGTERM.
pub async fn stop_container(cri: &CriClient, id: &str, grace: Duration) -> Result<(), String> {
    // The call itself waits out the grace period; allow for it.
    let mut req = tonic::Request::new(proto::StopContainerRequest {
        container_id: id.to_string(),
        timeout: grace.as_secs() as i64,
    });
    req.set_timeout(grace + Duration::from_secs(30));
    cri.runtime().stop_container(req).await.map(|_| ()).map_err(|e| e.message().to_string())
}

/// Removes a container (it must be stopped).
pub async fn remove_container(cri: &CriClient, id: &str) -> Result<(), String> {
    cri.runtime()
        .remove_container(proto::RemoveContainerRequest { container_id: id.to_string() })
        .await
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// Stops and removes a sandbox and everything in it.
pub async fn remove_sandbox(cri: &CriClient, id: &str) -> Result<(), String> {
    let mut rt = cri.runtime();
    rt.stop_pod_sandbox(proto::StopPodSandboxRequest { pod_sandbox_id: id.to_string() })
        .await
        .map_err(|e| e.message().to_string())?;
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest { pod_sandbox_id: id.to_string() })
        .await
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// Stops a sandbox (its network goes, its containers are killed) but keeps it for status.
pub async fn stop_sandbox(cri: &CriClient, id: &str) -> Result<(), String> {
    cri.runtime()
        .stop_pod_sandbox(proto::StopPodSandboxRequest { pod_sandbox_id: id.to_string() })
        .await
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// Whether the image is on the node; its image id if so.
pub async fn image_present(cri: &CriClient, image: &str) -> Result<Option<String>, String> {
    let resp = cri
        .images()
        .image_status(proto::ImageStatusRequest {
            image: Some(proto::ImageSpec { image: image.to_string(), ..Default::default() }),
            verbose: false,
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(resp.image.map(|i| i.id))
}

/// Pulls an image through the runtime, giving up after `timeout`.
pub async fn pull(cri: &CriClient, image: &str, timeout: Duration) -> Result<String, String> {
    let mut req = tonic::Request::new(proto::PullImageRequest {
        image: Some(proto::ImageSpec { image: image.to_string(), ..Default::default() }),
        auth: None,
        sandbox_config: None,
    });
    req.set_timeout(timeout);
    cri.images().pull_image(req).await.map(|r| r.into_inner().image_ref).map_err(|e| e.message().to_string())
}

/// Runs a command in a container and waits for it (hooks and exec probes).
pub async fn exec_sync(
    cri: &CriClient,
    id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<(i32, Vec<u8>), String> {
    let line = cmd.join(" ");
    let mut req = tonic::Request::new(proto::ExecSyncRequest {
        container_id: id.to_string(),
        cmd,
        timeout: timeout.as_secs().max(1) as i64,
    });
    req.set_timeout(timeout + Duration::from_secs(5));
    let r = cri
        .runtime()
        .exec_sync(req)
        .await
        .map_err(|e| match e.code() {
            // Upstream's wording for an exec probe that outlives its timeout.
            tonic::Code::DeadlineExceeded => format!("command {line:?} timed out"),
            _ => e.message().to_string(),
        })?
        .into_inner();
    let mut out = r.stdout;
    out.extend(r.stderr);
    Ok((r.exit_code, out))
}
