//! A [`kube::Client`] whose requests go straight into [`ApiServer::handle`]: the scheduler and
//! controllers of `skiff server` use the API exactly as a remote client would (validation,
//! defaulting, admission, watch), minus TCP, TLS and authentication handshakes.
//!
//! Each client carries a fixed identity, the one the component would present in a certificate
//! or token (the scheduler's `system:kube-scheduler`, a controller's service account), and is
//! authorized like any other client.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::apiserver::ApiServer;
use super::apiserver::auth::{AUTHENTICATED, UserInfo};
use super::apiserver::response::Body;

/// The tower service behind an in-process client.
#[derive(Clone)]
struct InProcess {
    api: Arc<ApiServer>,
    user: UserInfo,
}

impl tower::Service<http::Request<kube::client::Body>> for InProcess {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let api = self.api.clone();
        let user = self.user.clone();
        Box::pin(async move { Ok(api.handle(Some(user), req).await) })
    }
}

/// A client acting as `user` (e.g. `system:kube-scheduler`).
pub fn client(api: Arc<ApiServer>, user: &str) -> kube::Client {
    client_in_groups(api, user, &[])
}

/// A client acting as `user`, member of `groups` besides `system:authenticated`.
pub fn client_in_groups(api: Arc<ApiServer>, user: &str, groups: &[&str]) -> kube::Client {
    let mut all: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    all.push(AUTHENTICATED.to_string());
    let user = UserInfo { name: user.to_string(), groups: all, ..Default::default() };
    kube::Client::new(InProcess { api, user }, "default")
}

/// A client acting as the service account `namespace/name` (user
/// `system:serviceaccount:<namespace>:<name>` in the service-account groups).
pub fn service_account_client(api: Arc<ApiServer>, namespace: &str, name: &str) -> kube::Client {
    use crate::server::auth::serviceaccount;
    let groups = serviceaccount::groups(namespace);
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    client_in_groups(api, &serviceaccount::user_name(namespace, name), &groups)
}
