//! The job, cronjob and ttl-after-finished controllers end to end: a real `skiff server`,
//! kubectl 1.32 and simulated nodes (`skiff sim`) on which pods of Jobs succeed after 1 s.
//!
//! The tests share one server and one simulator (started by the first test, stopped when no
//! running test holds them any more); each test works in a namespace of its own.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use common::{Server, Sim};
use serde_json::Value;

struct Cluster {
    server: Server,
    _sim: Sim,
}

static CLUSTER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// The shared cluster, started on first use, with `namespace` created in it.
fn cluster(namespace: &str) -> Arc<Cluster> {
    let c = {
        let mut shared = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        match shared.upgrade() {
            Some(c) => c,
            None => {
                let server = Server::start();
                let sim = server.sim(&["--nodes", "3", "--job-duration", "1s"]);
                let c = Arc::new(Cluster { server, _sim: sim });
                *shared = Arc::downgrade(&c);
                c
            }
        }
    };
    c.server.ok(&["create", "namespace", namespace]);
    c
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

fn is_true(obj: &Value, type_: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == "True")
}

fn job(s: &Server, ns: &str, name: &str) -> Value {
    s.get_json(&["job", name, "-n", ns])
}

/// Waits until the Job has the condition `type_` True, and returns it.
fn wait_condition(s: &Server, ns: &str, name: &str, type_: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    s.wait_for(&format!("job {ns}/{name} {type_}"), timeout, || {
        last = job(s, ns, name);
        is_true(&last, type_)
    });
    last
}

fn pods(s: &Server, ns: &str, selector: &str) -> Vec<Value> {
    s.get_json(&["pods", "-n", ns, "-l", selector])["items"].as_array().cloned().unwrap_or_default()
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn is_active(p: &Value) -> bool {
    !matches!(phase(p), "Succeeded" | "Failed") && p["metadata"]["deletionTimestamp"].is_null()
}

/// (reason, message) of the events about `name` in `ns`.
fn events(s: &Server, ns: &str, name: &str) -> Vec<(String, String)> {
    s.get_json(&["events", "-n", ns])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| (e["reason"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn has_event(s: &Server, ns: &str, name: &str, reason: &str, message_prefix: &str) -> bool {
    events(s, ns, name).iter().any(|(r, m)| r == reason && m.starts_with(message_prefix))
}

fn job_manifest(ns: &str, name: &str, spec: &str, annotations: &str) -> String {
    format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  namespace: {ns}
spec:
{spec}
  template:
    metadata:
      annotations: {{{annotations}}}
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
        command: ["sh", "-c", "echo working"]
"#
    )
}

#[test]
fn parallel_job_runs_at_most_parallelism_pods_until_completions() {
    let c = cluster("jobs-parallel");
    let s = &c.server;
    let ns = "jobs-parallel";
    // Each pod runs 3 s, so two running at once stay visible for seconds even when every
    // kubectl call below takes long on a loaded machine.
    s.apply(&job_manifest(ns, "five", "  completions: 5\n  parallelism: 2", "sim.skiff.io/run-for: 3s"));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut most_active = 0;
    loop {
        let active = pods(s, ns, "job-name=five").iter().filter(|p| is_active(p)).count();
        assert!(active <= 2, "{active} pods active at once, parallelism is 2");
        most_active = most_active.max(active);
        if is_true(&job(s, ns, "five"), "Complete") {
            break;
        }
        assert!(Instant::now() < deadline, "job five did not complete: {}", job(s, ns, "five"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(most_active, 2, "two pods ran at once at some point");

    let j = job(s, ns, "five");
    let st = &j["status"];
    assert_eq!(st["succeeded"], 5, "{st}");
    assert!(st["failed"].is_null() && st["active"].is_null(), "{st}");
    assert_eq!((st["ready"].clone(), st["terminating"].clone()), (0.into(), 0.into()), "{st}");
    assert_eq!(st["uncountedTerminatedPods"], serde_json::json!({}));
    assert!(st["startTime"].is_string() && st["completionTime"].is_string(), "{st}");
    let types: Vec<&str> = st["conditions"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    for t in types {
        let cond = condition(&j, t).unwrap();
        assert_eq!(cond["reason"], "CompletionsReached");
        assert_eq!(cond["message"], "Reached expected number of succeeded pods");
    }

    // The API defaulted the selector and the template labels the pods carry.
    let uid = j["metadata"]["uid"].as_str().unwrap();
    assert_eq!(j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid);
    let all = pods(s, ns, "job-name=five");
    assert_eq!(all.len(), 5);
    for p in &all {
        assert_eq!(phase(p), "Succeeded");
        let l = &p["metadata"]["labels"];
        assert_eq!(
            (l["controller-uid"].as_str(), l["batch.kubernetes.io/job-name"].as_str()),
            (Some(uid), Some("five"))
        );
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("five-"));
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
    }
    s.wait_for("events of job five", Duration::from_secs(10), || {
        has_event(s, ns, "five", "SuccessfulCreate", "Created pod: five-")
            && has_event(s, ns, "five", "Completed", "Job completed")
    });
}

#[test]
fn failing_job_stops_at_the_backoff_limit() {
    let c = cluster("jobs-failing");
    let s = &c.server;
    let ns = "jobs-failing";
    s.apply(&job_manifest(
        ns,
        "crash",
        "  backoffLimit: 2",
        r#"sim.skiff.io/exit-code: "1", sim.skiff.io/run-for: 1s"#,
    ));
    // Replacements wait 10 s, then 20 s (the pod failure backoff).
    let j = wait_condition(s, ns, "crash", "Failed", Duration::from_secs(100));
    let failed = condition(&j, "Failed").unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(failed["message"], "Job has reached the specified backoff limit");
    let target = condition(&j, "FailureTarget").expect("FailureTarget comes first");
    assert_eq!((target["reason"].clone(), target["status"].clone()), ("BackoffLimitExceeded".into(), "True".into()));
    assert_eq!(j["status"]["failed"], 3, "{}", j["status"]);
    assert!(j["status"]["succeeded"].is_null() && j["status"]["completionTime"].is_null());

    let mut all = pods(s, ns, "job-name=crash");
    assert_eq!(all.len(), 3, "one pod and two retries");
    assert!(all.iter().all(|p| phase(p) == "Failed"));
    let created = |p: &Value| {
        chrono::DateTime::parse_from_rfc3339(p["metadata"]["creationTimestamp"].as_str().unwrap()).unwrap().timestamp()
    };
    all.sort_by_key(created);
    let gaps: Vec<i64> = all.windows(2).map(|w| created(&w[1]) - created(&w[0])).collect();
    assert!(gaps[0] >= 10 && gaps[1] >= 20, "retries back off 10 s then 20 s: gaps {gaps:?}");
    s.wait_for("BackoffLimitExceeded event", Duration::from_secs(10), || {
        has_event(s, ns, "crash", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    });
}

#[test]
fn indexed_job_runs_each_index_once() {
    let c = cluster("jobs-indexed");
    let s = &c.server;
    let ns = "jobs-indexed";
    s.apply(&job_manifest(ns, "idx", "  completions: 3\n  parallelism: 3\n  completionMode: Indexed", ""));
    let j = wait_condition(s, ns, "idx", "Complete", Duration::from_secs(60));
    assert_eq!(j["status"]["completedIndexes"], "0-2");
    assert_eq!(j["status"]["succeeded"], 3);
    let all = pods(s, ns, "job-name=idx");
    let mut seen = BTreeSet::new();
    for p in &all {
        let m = &p["metadata"];
        let ix = m["annotations"]["batch.kubernetes.io/job-completion-index"].as_str().unwrap().to_string();
        assert_eq!(m["labels"]["batch.kubernetes.io/job-completion-index"].as_str(), Some(ix.as_str()));
        assert!(m["name"].as_str().unwrap().starts_with(&format!("idx-{ix}-")), "{}", m["name"]);
        assert_eq!(p["spec"]["hostname"].as_str(), Some(format!("idx-{ix}").as_str()));
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
        assert_eq!(
            env["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.labels['batch.kubernetes.io/job-completion-index']"
        );
        seen.insert(ix);
    }
    assert_eq!(all.len(), 3);
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["0", "1", "2"]);
}

#[test]
fn active_deadline_fails_the_job_and_stops_its_pods() {
    let c = cluster("jobs-deadline");
    let s = &c.server;
    let ns = "jobs-deadline";
    s.apply(&job_manifest(ns, "slow", "  activeDeadlineSeconds: 3", "sim.skiff.io/run-for: 600s"));
    let j = wait_condition(s, ns, "slow", "Failed", Duration::from_secs(30));
    let failed = condition(&j, "Failed").unwrap();
    assert_eq!(failed["reason"], "DeadlineExceeded");
    assert_eq!(failed["message"], "Job was active longer than specified deadline");
    assert_eq!(condition(&j, "FailureTarget").unwrap()["reason"], "DeadlineExceeded");
    assert!(j["status"]["active"].is_null(), "{}", j["status"]);
    assert_eq!(j["status"]["failed"], 1, "the running pod was stopped and counted as failed");
    s.wait_for("the running pod deleted", Duration::from_secs(10), || {
        pods(s, ns, "job-name=slow").iter().all(|p| !is_active(p))
    });
    s.wait_for("DeadlineExceeded event", Duration::from_secs(10), || {
        has_event(s, ns, "slow", "DeadlineExceeded", "Job was active longer than specified deadline")
    });
}

#[test]
fn suspended_job_waits_and_resumes() {
    let c = cluster("jobs-suspend");
    let s = &c.server;
    let ns = "jobs-suspend";
    s.apply(&job_manifest(ns, "later", "  suspend: true", ""));
    let j = wait_condition(s, ns, "later", "Suspended", Duration::from_secs(20));
    assert_eq!(condition(&j, "Suspended").unwrap()["reason"], "JobSuspended");
    assert!(j["status"]["startTime"].is_null(), "a suspended Job has not started");
    assert!(pods(s, ns, "job-name=later").is_empty());
    s.ok(&["patch", "job", "later", "-n", ns, "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    let j = wait_condition(s, ns, "later", "Complete", Duration::from_secs(30));
    let susp = condition(&j, "Suspended").unwrap();
    assert_eq!((susp["status"].clone(), susp["reason"].clone()), ("False".into(), "JobResumed".into()));
    s.wait_for("Suspended and Resumed events", Duration::from_secs(10), || {
        has_event(s, ns, "later", "Suspended", "Job suspended") && has_event(s, ns, "later", "Resumed", "Job resumed")
    });
}

#[test]
fn finished_job_is_deleted_after_its_ttl() {
    let c = cluster("jobs-ttl");
    let s = &c.server;
    let ns = "jobs-ttl";
    s.apply(&job_manifest(ns, "brief", "  ttlSecondsAfterFinished: 2", ""));
    let j = wait_condition(s, ns, "brief", "Complete", Duration::from_secs(30));
    let done = chrono::DateTime::parse_from_rfc3339(j["status"]["completionTime"].as_str().unwrap()).unwrap();
    s.wait_for("job brief deleted", Duration::from_secs(30), || {
        let out = s.kubectl(&["get", "job", "brief", "-n", ns]);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")
    });
    let waited = chrono::Utc::now().signed_duration_since(done);
    assert!(waited >= chrono::Duration::seconds(2), "deleted {waited} after it finished, TTL is 2 s");
    s.wait_for("its pods deleted", Duration::from_secs(20), || pods(s, ns, "job-name=brief").is_empty());
}

const CRONJOB: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
  namespace: jobs-cron
spec:
  schedule: "*/1 * * * *"
  suspend: true
  successfulJobsHistoryLimit: 1
  jobTemplate:
    metadata:
      labels: {app: tick}
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: tick
            image: busybox:1.36
            command: ["date"]
"#;

#[test]
fn cronjob_runs_on_schedule_and_keeps_its_history_short() {
    let c = cluster("jobs-cron");
    let s = &c.server;
    let ns = "jobs-cron";
    s.apply(CRONJOB);
    // A run by hand (kubectl builds it from the template client side), while suspended.
    s.ok(&["create", "job", "--from=cronjob/tick", "tick-manual", "-n", ns]);
    wait_condition(s, ns, "tick-manual", "Complete", Duration::from_secs(30));
    s.wait_for("lastSuccessfulTime from the manual run", Duration::from_secs(10), || {
        s.get_json(&["cronjob", "tick", "-n", ns])["status"]["lastSuccessfulTime"].is_string()
    });
    s.wait_for("UnexpectedJob event", Duration::from_secs(10), || {
        has_event(s, ns, "tick", "UnexpectedJob", "Saw a job that the controller did not create or forgot: tick-manual")
    });

    // Resumed, it runs at the next minute (or at once, for a minute missed while suspended).
    s.ok(&["patch", "cronjob", "tick", "-n", ns, "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    let mut scheduled = String::new();
    s.wait_for("a scheduled run", Duration::from_secs(75), || {
        let jobs = s.get_json(&["jobs", "-n", ns]);
        let found = jobs["items"].as_array().into_iter().flatten().find_map(|j| {
            let name = j["metadata"]["name"].as_str()?;
            (name != "tick-manual").then(|| name.to_string())
        });
        scheduled = found.unwrap_or_default();
        !scheduled.is_empty()
    });
    let minutes: i64 = scheduled.strip_prefix("tick-").and_then(|m| m.parse().ok()).expect("tick-<minutes>");
    let at = chrono::DateTime::from_timestamp(minutes * 60, 0).unwrap();
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let j = job(s, ns, &scheduled);
    assert_eq!(j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"], at.as_str());
    assert_eq!(j["metadata"]["labels"]["app"], "tick");
    assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    let cj = s.get_json(&["cronjob", "tick", "-n", ns]);
    assert_eq!(cj["status"]["lastScheduleTime"], at.as_str());

    // Once it completed: out of status.active, and the older success (the manual run) pruned.
    wait_condition(s, ns, &scheduled, "Complete", Duration::from_secs(30));
    s.wait_for("history pruned to one successful job", Duration::from_secs(20), || {
        let out = s.kubectl(&["get", "job", "tick-manual", "-n", ns]);
        let cj = s.get_json(&["cronjob", "tick", "-n", ns]);
        !out.status.success() && cj["status"]["active"].is_null()
    });
    assert_eq!(s.get_json(&["jobs", "-n", ns])["items"].as_array().unwrap().len(), 1);
    s.wait_for("events of cronjob tick", Duration::from_secs(10), || {
        has_event(s, ns, "tick", "SuccessfulCreate", &format!("Created job {scheduled}"))
            && has_event(s, ns, "tick", "SawCompletedJob", &format!("Saw completed job: {scheduled}, status: Complete"))
            && has_event(s, ns, "tick", "SuccessfulDelete", "Deleted job tick-manual")
    });
}

#[test]
fn cronjob_with_an_invalid_schedule_is_refused() {
    let c = cluster("jobs-badcron");
    let s = &c.server;
    let bad = CRONJOB.replace("jobs-cron", "jobs-badcron").replace("*/1 * * * *", "61 * * * *");
    let out = s.apply_stdin(&["apply", "-f", "-"], &bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"The CronJob "tick" is invalid: spec.schedule: Invalid value: "61 * * * *""#), "{err}");
    assert!(err.contains("end of range (61) above maximum (59): 61"), "{err}");
}
