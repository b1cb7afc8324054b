//! kube-rs as a client: a `watcher` sees every change in order and recovers through server
//! restarts and a `410 Gone` (by listing again).

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};

use common::Server;

async fn client(s: &Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"v": v}})).unwrap()
}

/// A compact description of a watcher event.
fn describe(e: &Event<ConfigMap>) -> String {
    let name = |c: &ConfigMap| c.metadata.name.clone().unwrap_or_default();
    let v = |c: &ConfigMap| c.data.as_ref().and_then(|d| d.get("v").cloned()).unwrap_or_default();
    match e {
        Event::Init => "init".into(),
        Event::InitApply(c) => format!("init-apply {}={}", name(c), v(c)),
        Event::InitDone => "init-done".into(),
        Event::Apply(c) => format!("apply {}={}", name(c), v(c)),
        Event::Delete(c) => format!("delete {}", name(c)),
    }
}

#[test]
fn watcher_sees_everything_and_recovers() {
    let mut s = Server::start_with(&[
        "--store-history-window",
        "50",
        "--store-compact-interval",
        "1",
        // The watched namespace must hold only what the test writes.
        "--disable-controller",
        "root-ca-cert-publisher",
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client(&s).await;
        let ns: Api<Namespace> = Api::all(c.clone());
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "w"}})).unwrap(),
        )
        .await
        .unwrap();
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "noise"}})).unwrap(),
        )
        .await
        .unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "w");
        let cfg = watcher::Config::default();
        let mut stream = watcher::watcher(cms.clone(), cfg).boxed();
        // Errors are part of the stream (a 410, a refused connection while the server restarts);
        // the watcher recovers on the next poll, as controllers rely on.
        let mut errors: Vec<String> = Vec::new();
        let mut next = async || -> String {
            loop {
                let e = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
                    .await
                    .expect("watcher event in time");
                match e {
                    Ok(Some(ev)) => return describe(&ev),
                    Ok(None) => panic!("watcher stream ended"),
                    Err(err) => {
                        errors.push(err.to_string());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        assert_eq!(next().await, "init");
        assert_eq!(next().await, "init-done");
        cms.create(&PostParams::default(), &cm("a", "1")).await.unwrap();
        cms.patch("a", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"v": "2"}}))).await.unwrap();
        cms.delete("a", &DeleteParams::default()).await.unwrap();
        assert_eq!(next().await, "apply a=1");
        assert_eq!(next().await, "apply a=2");
        assert_eq!(next().await, "delete a");

        // A restart: open watches end promptly, and the watcher reconnects from its last
        // resourceVersion.
        let took = s.terminate();
        assert!(took < Duration::from_secs(5), "SIGTERM with an open watch took {took:?}");
        s.launch();
        let c2 = client(&s).await;
        let cms2: Api<ConfigMap> = Api::namespaced(c2.clone(), "w");
        cms2.create(&PostParams::default(), &cm("b", "1")).await.unwrap();
        assert_eq!(next().await, "apply b=1");

        // Enough writes elsewhere that the watcher's revision is compacted away, then another
        // restart: resuming answers 410 Gone and the watcher lists again.
        let noise: Api<ConfigMap> = Api::namespaced(c2.clone(), "noise");
        for i in 0..120 {
            noise.create(&PostParams::default(), &cm(&format!("n{i}"), "x")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        s.terminate();
        s.launch();
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("init-done") {
            seen.push(next().await);
        }
        assert_eq!(seen, ["init", "init-apply b=1", "init-done"]);
        assert!(
            errors.iter().any(|e| e.contains("410") || e.contains("Expired")),
            "the resume hit 410 Gone: {errors:?}"
        );
    });
    assert!(s.log().contains("skiff API server is ready"));
}

/// A watch from resourceVersion 0 first sends every existing object once (read from the store
/// in pages), and a watch pinned to one name sees only that object.
#[test]
fn watch_initial_events_cover_every_object_once() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
        let total = 1_200;
        futures::stream::iter(0..total)
            .for_each_concurrent(32, |i| {
                let cms = cms.clone();
                async move {
                    cms.create(&PostParams::default(), &cm(&format!("cm-{i}"), "x")).await.unwrap();
                }
            })
            .await;
        let mut names = std::collections::HashSet::new();
        let mut stream = cms.watch(&kube::api::WatchParams::default().timeout(10), "0").await.unwrap().boxed();
        while names.len() < total {
            match stream.try_next().await.unwrap() {
                Some(kube::api::WatchEvent::Added(c)) => {
                    assert!(names.insert(c.metadata.name.unwrap()), "an object was sent twice");
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => panic!("watch ended after {} of {total} objects", names.len()),
            }
        }
        let pinned = kube::api::WatchParams::default().fields("metadata.name=cm-1").timeout(1);
        let events: Vec<String> = cms
            .watch(&pinned, "0")
            .await
            .unwrap()
            .map(|e| match e.unwrap() {
                kube::api::WatchEvent::Added(c) => c.metadata.name.unwrap(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
            .await;
        assert_eq!(events, ["cm-1"]);
    });
}
