//! `/containerLogs/{ns}/{pod}/{container}`: a container's CRI log file as the text the
//! container wrote.
//!
//! containerd writes one record per line, `<RFC3339Nano time> <stdout|stderr> <P|F> <text>`,
//! where `P` marks a fragment of a longer line that goes on in the next record. Records are
//! joined back into lines here, filtered (`sinceSeconds`, `sinceTime`), cut (`tailLines`,
//! `limitBytes`) and prefixed with their time when asked (`timestamps`). With `follow` the file
//! is read on while CRI reports the container running, across rotations (a new file under
//! the same path), and the stream ends once it has exited and the file is drained.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Response, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Body, PodSource, query_get, query_pairs, text};
use crate::cri::CriClient;
use crate::cri::proto::{ContainerState, ContainerStatusRequest};

/// How often a followed file is looked at again once it is drained.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Output is sent in chunks of about this size.
const CHUNK: usize = 32 * 1024;

/// The `PodLogOptions` the kubelet honours.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub since: Option<DateTime<Utc>>,
    pub timestamps: bool,
    pub previous: bool,
    pub limit_bytes: Option<usize>,
}

/// Why a query is refused: upstream's kubelet answers these with fixed JSON-ish texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OptionsError {
    #[error(r#"{{"message": "Unable to decode query."}}"#)]
    Decode,
    #[error(r#"{{"message": "Invalid request."}}"#)]
    Invalid,
}

fn parse_bool(v: &str) -> Result<bool, OptionsError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" | "" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(OptionsError::Decode),
    }
}

fn parse_int(v: &str) -> Result<i64, OptionsError> {
    v.parse().map_err(|_| OptionsError::Decode)
}

/// Parses and validates the query as upstream's kubelet does (`ValidatePodLogOptions`).
pub(crate) fn parse_options(query: Option<&str>, now: DateTime<Utc>) -> Result<LogOptions, OptionsError> {
    let pairs = query_pairs(query);
    let get = |k: &str| query_get(&pairs, k);
    let mut o = LogOptions {
        follow: get("follow").map(parse_bool).transpose()?.unwrap_or(false),
        timestamps: get("timestamps").map(parse_bool).transpose()?.unwrap_or(false),
        previous: get("previous").map(parse_bool).transpose()?.unwrap_or(false),
        ..Default::default()
    };
    // `tail` is the kubelet's older name for tailLines; "all" means no limit.
    let tail = match (get("tailLines"), get("tail")) {
        (Some(t), _) => Some(parse_int(t)?),
        (None, Some("all")) | (None, Some("")) | (None, None) => None,
        (None, Some(t)) => Some(parse_int(t)?),
    };
    if let Some(t) = tail {
        o.tail_lines = Some(usize::try_from(t).map_err(|_| OptionsError::Invalid)?);
    }
    if let Some(l) = get("limitBytes") {
        let l = parse_int(l)?;
        if l < 1 {
            return Err(OptionsError::Invalid);
        }
        o.limit_bytes = Some(usize::try_from(l).unwrap_or(usize::MAX));
    }
    let since_seconds = get("sinceSeconds").map(parse_int).transpose()?;
    let since_time = get("sinceTime")
        .map(|t| DateTime::parse_from_rfc3339(t).map(|d| d.with_timezone(&Utc)).map_err(|_| OptionsError::Decode))
        .transpose()?;
    o.since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => return Err(OptionsError::Invalid),
        (Some(s), None) if s < 1 => return Err(OptionsError::Invalid),
        (Some(s), None) => Some(now - chrono::Duration::seconds(s)),
        (None, t) => t,
    };
    Ok(o)
}

/// One record of a CRI log file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub time: &'a str,
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses one record (without its newline); None for a malformed one, which is skipped.
pub(crate) fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let stream = fields.next()?;
    if stream != b"stdout" && stream != b"stderr" {
        return None;
    }
    let tag = fields.next()?;
    // Tags are `:`-separated; the first says whether the line is complete.
    let partial = tag.split(|b| *b == b':').next() == Some(b"P");
    Some(Record { time, partial, text: fields.next().unwrap_or(b"") })
}

/// Joins records into output lines.
#[derive(Debug, Default)]
pub(crate) struct Joiner {
    timestamps: bool,
    since: Option<DateTime<Utc>>,
    line: Vec<u8>,
    started: bool,
    skip: bool,
}

impl Joiner {
    pub(crate) fn new(opts: &LogOptions) -> Joiner {
        Joiner { timestamps: opts.timestamps, since: opts.since, ..Default::default() }
    }

    /// Adds a record; returns the line it completes, if it completes one that is wanted.
    pub(crate) fn push(&mut self, r: &Record<'_>) -> Option<Vec<u8>> {
        if !self.started {
            self.started = true;
            self.skip = self.since.is_some_and(|since| {
                DateTime::parse_from_rfc3339(r.time).map(|t| t.with_timezone(&Utc) < since).unwrap_or(false)
            });
            if self.timestamps {
                self.line.extend_from_slice(r.time.as_bytes());
                self.line.push(b' ');
            }
        }
        self.line.extend_from_slice(r.text);
        if r.partial {
            return None;
        }
        self.line.push(b'\n');
        self.started = false;
        let line = std::mem::take(&mut self.line);
        (!self.skip).then_some(line)
    }

    /// The unfinished line, if any (what a stream ends with when the file ends mid-line).
    pub(crate) fn rest(&mut self) -> Option<Vec<u8>> {
        let line = std::mem::take(&mut self.line);
        let wanted = self.started && !self.skip && !line.is_empty();
        self.started = false;
        wanted.then_some(line)
    }
}

/// The last `lines` lines of a CRI log file, at most `max_bytes` of them (cut at the front),
/// as upstream's kubelet reads a failed container's log for its termination message. Empty
/// when the file cannot be read.
pub fn log_tail(path: &std::path::Path, lines: usize, max_bytes: usize) -> String {
    let Ok(raw) = std::fs::read(path) else { return String::new() };
    let mut joiner = Joiner::new(&LogOptions::default());
    let mut out: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    for line in raw.split(|b| *b == b'\n') {
        if let Some(done) = parse_record(line).and_then(|r| joiner.push(&r)) {
            out.push_back(done);
            if out.len() > lines {
                out.pop_front();
            }
        }
    }
    let all: Vec<u8> = out.into_iter().flatten().collect();
    let start = all.len().saturating_sub(max_bytes);
    String::from_utf8_lossy(&all[start..]).into_owned()
}

/// Serves `/containerLogs/...`.
pub(super) async fn container_logs(
    cri: &CriClient,
    pods: &dyn PodSource,
    namespace: &str,
    pod: &str,
    container: &str,
    query: Option<&str>,
    cancel: &CancellationToken,
) -> Response<Body> {
    let opts = match parse_options(query, Utc::now()) {
        Ok(o) => o,
        Err(e @ OptionsError::Decode) => return text(400, e.to_string()),
        Err(e @ OptionsError::Invalid) => return text(422, e.to_string()),
    };
    let exists = pods
        .pods()
        .iter()
        .any(|p| p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.name.as_deref() == Some(pod));
    if !exists {
        return text(404, format!("pod {pod:?} does not exist"));
    }
    let Some(c) = pods.container(namespace, pod, container) else {
        return text(404, format!("container {container:?} not found in pod {pod:?}"));
    };
    let (path, follow_id) = if opts.previous {
        match c.previous_log_path {
            Some(p) => (p, None),
            None => return text(400, format!("previous terminated container {container:?} in pod {pod:?} not found")),
        }
    } else {
        (c.log_path, opts.follow.then_some(c.id))
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return text(400, format!("failed to open log file {:?}: {e}", path.display().to_string())),
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(8);
    let running = follow_id.map(|id| Running { cri: cri.clone(), id });
    let cancel = cancel.clone();
    let span = tracing::debug_span!("container logs", %namespace, %pod, %container);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            if let Err(e) = pump(file, path, opts, running, tx, cancel).await {
                tracing::debug!(error = %e, "log stream ended early");
            }
        },
        span,
    ));
    let mut r = Response::new(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed());
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

/// Whether a followed container still runs, as CRI says.
struct Running {
    cri: CriClient,
    id: String,
}

impl Running {
    async fn check(&self) -> bool {
        match self
            .cri
            .runtime()
            .container_status(ContainerStatusRequest { container_id: self.id.clone(), verbose: false })
            .await
        {
            Ok(r) => r.into_inner().status.is_some_and(|s| {
                s.state == ContainerState::ContainerRunning as i32 || s.state == ContainerState::ContainerCreated as i32
            }),
            Err(_) => false,
        }
    }
}

/// Where output goes: batches, `limitBytes`, and a closed client.
struct Sink {
    tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    buf: Vec<u8>,
    remaining: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
enum PumpError {
    #[error("client went away")]
    Closed,
    #[error("limitBytes reached")]
    Limit,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl Sink {
    async fn write(&mut self, line: &[u8]) -> Result<(), PumpError> {
        let take = match self.remaining {
            Some(r) => line.len().min(r),
            None => line.len(),
        };
        self.buf.extend_from_slice(&line[..take]);
        if let Some(r) = self.remaining.as_mut() {
            *r -= take;
            if *r == 0 {
                self.flush().await?;
                return Err(PumpError::Limit);
            }
        }
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PumpError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send(Ok(Frame::data(chunk))).await.map_err(|_| PumpError::Closed)
    }
}

async fn pump(
    file: tokio::fs::File,
    path: PathBuf,
    opts: LogOptions,
    running: Option<Running>,
    tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    cancel: CancellationToken,
) -> Result<(), PumpError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PumpError::Io { path, source }
    };
    let mut sink = Sink { tx, buf: Vec::new(), remaining: opts.limit_bytes };
    let mut joiner = Joiner::new(&opts);
    let mut ino = file.metadata().await.map_err(io(&path))?.ino();
    let mut reader = BufReader::new(file);
    let mut pos: u64 = 0;
    let mut raw = Vec::new();

    // The file as it is now: only the last tailLines lines are kept.
    let mut tail: VecDeque<Vec<u8>> = VecDeque::new();
    loop {
        let n = reader.read_until(b'\n', &mut raw).await.map_err(io(&path))?;
        if n == 0 || raw.last() != Some(&b'\n') {
            break;
        }
        pos += raw.len() as u64;
        if let Some(line) = parse_record(&raw[..raw.len() - 1]).and_then(|r| joiner.push(&r)) {
            match opts.tail_lines {
                Some(0) => {}
                Some(max) => {
                    if tail.len() == max {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
                None => sink.write(&line).await?,
            }
        }
        raw.clear();
    }
    for line in tail {
        sink.write(&line).await?;
    }
    let Some(running) = running else {
        // Not following: a record cut off by the end of the file still counts, and so
        // does a line whose last fragment is not written yet.
        if let Some(r) = parse_record(raw.strip_suffix(b"\n").unwrap_or(&raw)) {
            joiner.push(&r);
        }
        if let Some(rest) = joiner.rest() {
            sink.write(&rest).await?;
        }
        return sink.flush().await;
    };

    // Following: read on as the file grows, until the container has exited and the file is
    // drained.
    let mut exited = false;
    loop {
        let n = reader.read_until(b'\n', &mut raw).await.map_err(io(&path))?;
        if n > 0 && raw.last() == Some(&b'\n') {
            pos += raw.len() as u64;
            if let Some(line) = parse_record(&raw[..raw.len() - 1]).and_then(|r| joiner.push(&r)) {
                sink.write(&line).await?;
            }
            raw.clear();
            continue;
        }
        if n > 0 {
            // A record still being written: wait for its end.
            continue;
        }
        sink.flush().await?;
        if exited {
            return Ok(());
        }
        // Rotated (a new file under the path) or truncated: start on the new content.
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.ino() != ino => {
                if let Ok(f) = tokio::fs::File::open(&path).await {
                    ino = f.metadata().await.map(|m| m.ino()).unwrap_or(ino);
                    reader = BufReader::new(f);
                    pos = 0;
                    raw.clear();
                    continue;
                }
            }
            Ok(m) if m.len() < pos => {
                reader.seek(std::io::SeekFrom::Start(0)).await.map_err(io(&path))?;
                pos = 0;
                raw.clear();
                continue;
            }
            _ => {}
        }
        if !running.check().await {
            // One more pass: what the container wrote just before it exited.
            exited = true;
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = sink.tx.closed() => return Err(PumpError::Closed),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &str, opts: &LogOptions) -> String {
        let mut j = Joiner::new(opts);
        let mut out = Vec::new();
        for l in lines.lines() {
            if let Some(line) = parse_record(l.as_bytes()).and_then(|r| j.push(&r)) {
                out.extend(line);
            }
        }
        if let Some(rest) = j.rest() {
            out.extend(rest);
        }
        String::from_utf8(out).unwrap()
    }

    const LOG: &str = "2026-01-01T00:00:00.1Z stdout F one\n\
                       2026-01-01T00:00:01.2Z stderr P tw\n\
                       2026-01-01T00:00:01.3Z stderr F o\n\
                       2026-01-01T00:00:02Z stdout F \n\
                       garbage\n\
                       2026-01-01T00:00:03Z stdout P unfinished";

    #[test]
    fn log_tail_keeps_the_last_lines_and_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("2026-01-01T00:00:00Z stderr F line {i}\n"));
        }
        text.push_str("2026-01-01T00:00:01Z stdout P par\n2026-01-01T00:00:01Z stdout F tial\n");
        std::fs::write(&p, text).unwrap();
        let tail = log_tail(&p, 3, 2048);
        assert_eq!(tail, "line 98\nline 99\npartial\n");
        assert_eq!(log_tail(&p, 80, 8), "partial\n");
        assert_eq!(log_tail(&d.path().join("none"), 80, 2048), "");
    }

    #[test]
    fn records_are_joined_into_lines() {
        assert_eq!(run(LOG, &LogOptions::default()), "one\ntwo\n\nunfinished");
        let ts = LogOptions { timestamps: true, ..Default::default() };
        assert_eq!(
            run(LOG, &ts),
            "2026-01-01T00:00:00.1Z one\n2026-01-01T00:00:01.2Z two\n2026-01-01T00:00:02Z \n\
             2026-01-01T00:00:03Z unfinished"
        );
        let since = LogOptions { since: Some("2026-01-01T00:00:01Z".parse().unwrap()), ..Default::default() };
        assert_eq!(run(LOG, &since), "two\n\nunfinished");
        assert_eq!(parse_record(b"2026-01-01T00:00:00Z stdout F:x a b").unwrap().text, b"a b");
        assert_eq!(parse_record(b"2026-01-01T00:00:00Z stdin F a"), None);
    }

    #[test]
    fn options_as_upstream_validates_them() {
        let now: DateTime<Utc> = "2026-01-01T00:01:00Z".parse().unwrap();
        let o = parse_options(Some("follow=true&tailLines=2&timestamps=1&limitBytes=10&sinceSeconds=60"), now).unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                tail_lines: Some(2),
                since: Some("2026-01-01T00:00:00Z".parse().unwrap()),
                timestamps: true,
                previous: false,
                limit_bytes: Some(10)
            }
        );
        assert_eq!(parse_options(Some("tail=all"), now).unwrap().tail_lines, None);
        assert_eq!(parse_options(Some("tailLines=x"), now), Err(OptionsError::Decode));
        assert_eq!(parse_options(Some("tailLines=-1"), now), Err(OptionsError::Invalid));
        assert_eq!(parse_options(Some("limitBytes=0"), now), Err(OptionsError::Invalid));
        assert_eq!(
            parse_options(Some("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z"), now),
            Err(OptionsError::Invalid)
        );
        assert_eq!(OptionsError::Invalid.to_string(), r#"{"message": "Invalid request."}"#);
    }
}
