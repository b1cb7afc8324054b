//! Names outside the cluster: which servers to ask ([`upstream_servers`], from a resolv.conf as
//! the kubelet chooses it), and the [`Forwarder`] that asks them and caches their answers.
//!
//! A question goes to the first server over UDP with a fresh message id and source port; an
//! answer that does not match the id and question is ignored, a truncated one is asked again
//! over TCP, and a server that stays silent for the timeout (or answers SERVFAIL, REFUSED,
//! NOTIMP or garbage) passes the question to the next one. Positive answers are cached for
//! their smallest TTL (at most [`MAX_TTL`]), NXDOMAIN and NODATA for their SOA's minimum (at most
//! [`MAX_NEGATIVE_TTL`]); the cache holds at most [`CACHE_ENTRIES`] questions.
//!
//! Invariants: no server is ever made up (no usable resolv.conf means no upstream, and every
//! outside name is SERVFAIL); at most [`MAX_IN_FLIGHT`] questions are upstream at once; nothing
//! an upstream sends can panic the process or grow memory past these bounds.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::DnsError;

/// The host's resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of the real servers behind its loopback stub.
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
/// Servers used from a resolv.conf (the C library's limit).
pub const MAX_SERVERS: usize = 3;
/// How long one server has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Questions whose answers the cache holds.
pub const CACHE_ENTRIES: usize = 10_000;
/// The longest a positive answer is cached, in seconds.
pub const MAX_TTL: u32 = 300;
/// The longest an NXDOMAIN or NODATA answer is cached, in seconds.
pub const MAX_NEGATIVE_TTL: u32 = 30;
/// Questions upstream at once; beyond this a question is answered SERVFAIL at once.
pub const MAX_IN_FLIGHT: usize = 512;
/// The UDP payload size offered to upstream servers (the size that avoids fragmentation).
const UPSTREAM_PAYLOAD: u16 = 1232;

/// The `nameserver` addresses of a resolv.conf text, in order, at most [`MAX_SERVERS`].
/// Addresses with an interface scope (`fe80::1%eth0`) and other unparsable ones are skipped.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok())
            && !ip.is_unspecified()
        {
            servers.push(ip);
        }
        if servers.len() == MAX_SERVERS {
            break;
        }
    }
    servers
}

/// The servers of `/etc/resolv.conf` (`etc`), unless they are all loopback stubs (as
/// systemd-resolved's 127.0.0.53) and systemd-resolved's own list (`systemd`) names real ones.
pub fn choose_servers(etc: Option<&str>, systemd: impl FnOnce() -> Option<String>) -> Vec<IpAddr> {
    let servers = etc.map(parse_resolv_conf).unwrap_or_default();
    if servers.iter().any(|ip| !ip.is_loopback()) {
        return servers;
    }
    let real: Vec<IpAddr> = systemd()
        .map(|t| parse_resolv_conf(&t).into_iter().filter(|ip| !ip.is_loopback()).collect())
        .unwrap_or_default();
    if real.is_empty() { servers } else { real }
}

/// The upstream servers (port 53): those of `explicit` as it stands, else as
/// [`choose_servers`] picks them from the host's files. Missing host files mean no servers; a
/// missing explicit file is an error.
pub fn upstream_servers(explicit: Option<&Path>) -> Result<Vec<SocketAddr>, DnsError> {
    let ips = match explicit {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| DnsError::ResolvConf { path: path.to_path_buf(), source })?;
            parse_resolv_conf(&text)
        }
        None => {
            let etc = std::fs::read_to_string(RESOLV_CONF).ok();
            choose_servers(etc.as_deref(), || std::fs::read_to_string(SYSTEMD_RESOLV_CONF).ok())
        }
    };
    Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect())
}

/// An upstream answer: its code and sections (the EDNS record is not kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

impl Resolved {
    /// How long the answer may be cached, in seconds (0: not at all).
    fn cache_ttl(&self) -> u32 {
        let negative =
            self.rcode == ResponseCode::NXDomain || (self.rcode == ResponseCode::NoError && self.answers.is_empty());
        if negative {
            let soa = self.authority.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            });
            soa.unwrap_or(0).min(MAX_NEGATIVE_TTL)
        } else if self.rcode == ResponseCode::NoError {
            self.answers.iter().map(|r| r.ttl).min().unwrap_or(0).min(MAX_TTL)
        } else {
            0
        }
    }
}

struct Entry {
    resolved: Resolved,
    stored: Instant,
    ttl: u32,
}

/// A permission to send one question upstream ([`Forwarder::permit`]).
pub struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

/// Asks the upstream servers and caches their answers.
pub struct Forwarder {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    cache: Mutex<HashMap<Query, Entry>>,
    in_flight: Arc<Semaphore>,
    ids: std::hash::RandomState,
    sent: AtomicU64,
}

impl Forwarder {
    /// A forwarder to `servers`, tried in order; none means every question fails.
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        Forwarder {
            servers,
            timeout: TIMEOUT,
            cache: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            ids: std::hash::RandomState::new(),
            sent: AtomicU64::new(0),
        }
    }

    /// The same with another per-server timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// An unpredictable message id, so that an off-path sender cannot guess it.
    fn next_id(&self) -> u16 {
        (self.ids.hash_one(self.sent.fetch_add(1, Ordering::Relaxed)) & 0xffff) as u16
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Query, Entry>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached answer to `query`, its TTLs lowered by the time it has been cached.
    pub fn cached(&self, query: &Query) -> Option<Resolved> {
        let mut cache = self.cache();
        let entry = cache.get(query)?;
        let age = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= entry.ttl {
            cache.remove(query);
            return None;
        }
        let mut r = entry.resolved.clone();
        for rec in r.answers.iter_mut().chain(r.authority.iter_mut()).chain(r.additional.iter_mut()) {
            rec.ttl = rec.ttl.saturating_sub(age);
        }
        Some(r)
    }

    fn store(&self, query: &Query, resolved: &Resolved) {
        let ttl = resolved.cache_ttl();
        if ttl == 0 {
            return;
        }
        let mut cache = self.cache();
        if cache.len() >= CACHE_ENTRIES && !cache.contains_key(query) {
            cache.retain(|_, e| e.stored.elapsed().as_secs() < u64::from(e.ttl));
            if cache.len() >= CACHE_ENTRIES {
                // Still full of live answers: drop a tenth, whichever they are.
                let drop: Vec<Query> = cache.keys().take(CACHE_ENTRIES / 10).cloned().collect();
                drop.iter().for_each(|q| {
                    cache.remove(q);
                });
            }
        }
        cache.insert(query.clone(), Entry { resolved: resolved.clone(), stored: Instant::now(), ttl });
    }

    /// A place among the questions upstream, or `None` when [`MAX_IN_FLIGHT`] are.
    pub fn permit(&self) -> Option<Permit> {
        self.in_flight.clone().try_acquire_owned().ok().map(Permit)
    }

    /// The answer to `query` from the cache or the servers.
    pub async fn resolve(&self, query: &Query) -> Result<Resolved, DnsError> {
        if let Some(r) = self.cached(query) {
            return Ok(r);
        }
        let permit = self.permit().ok_or(DnsError::Busy)?;
        self.resolve_with(query, permit).await
    }

    /// The answer to `query` from the cache or the servers, within a place already taken.
    pub async fn resolve_with(&self, query: &Query, _permit: Permit) -> Result<Resolved, DnsError> {
        if let Some(r) = self.cached(query) {
            return Ok(r);
        }
        let mut last = DnsError::NoUpstream;
        for &server in &self.servers {
            match self.exchange(server, query).await {
                Ok(reply) => {
                    let resolved = Resolved {
                        rcode: reply.metadata.response_code,
                        answers: reply.answers,
                        authority: reply.authorities,
                        additional: reply.additionals,
                    };
                    self.store(query, &resolved);
                    return Ok(resolved);
                }
                Err(e) => {
                    tracing::debug!(%server, name = %query.name, error = %e, "upstream DNS server failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// One question to one server: UDP, then TCP when the answer is truncated.
    async fn exchange(&self, server: SocketAddr, query: &Query) -> Result<Message, DnsError> {
        let fail = |reason: String| DnsError::Upstream { server, reason };
        let id = self.next_id();
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(UPSTREAM_PAYLOAD);
        m.set_edns(edns);
        let bytes = m.to_vec().map_err(|e| fail(e.to_string()))?;
        let timed_out = |_| fail("timed out".into());
        let mut reply =
            tokio::time::timeout(self.timeout, udp_exchange(server, &bytes, id, query)).await.map_err(timed_out)??;
        if reply.metadata.truncation {
            reply = tokio::time::timeout(self.timeout, tcp_exchange(server, &bytes, id, query))
                .await
                .map_err(timed_out)??;
        }
        match reply.metadata.response_code {
            ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp | ResponseCode::FormErr => {
                Err(fail(format!("answered {}", reply.metadata.response_code)))
            }
            _ => Ok(reply),
        }
    }
}

/// Whether `bytes` is the answer to message `id` asking `query`.
fn answer_to(bytes: &[u8], id: u16, query: &Query) -> Option<Message> {
    let m = Message::from_vec(bytes).ok()?;
    let matches = m.metadata.message_type == MessageType::Response
        && m.metadata.id == id
        && m.queries.len() == 1
        && m.queries[0] == *query;
    matches.then_some(m)
}

async fn udp_exchange(server: SocketAddr, bytes: &[u8], id: u16, query: &Query) -> Result<Message, DnsError> {
    let fail = |e: std::io::Error| DnsError::Upstream { server, reason: e.to_string() };
    let local: SocketAddr =
        if server.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(local).await.map_err(fail)?;
    socket.connect(server).await.map_err(fail)?;
    socket.send(bytes).await.map_err(fail)?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(fail)?;
        // Anything else on the socket (late or forged) is ignored until the timeout.
        if let Some(m) = answer_to(&buf[..n], id, query) {
            return Ok(m);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, bytes: &[u8], id: u16, query: &Query) -> Result<Message, DnsError> {
    let fail = |e: std::io::Error| DnsError::Upstream { server, reason: e.to_string() };
    let mut stream = TcpStream::connect(server).await.map_err(fail)?;
    let len = u16::try_from(bytes.len()).map_err(|_| DnsError::Upstream { server, reason: "query too long".into() })?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(fail)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(fail)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.map_err(fail)?;
    answer_to(&buf, id, query).ok_or(DnsError::Upstream { server, reason: "an answer to another question".into() })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RecordType};
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn resolv_conf_name_servers_in_order_at_most_three() {
        let text = "# comment\nsearch lan\nnameserver 192.168.1.1\n  nameserver   fd00::53  \n\
                    nameserver fe80::1%eth0\nnameserver bogus\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        assert_eq!(
            parse_resolv_conf(text),
            ["192.168.1.1".parse::<IpAddr>().unwrap(), "fd00::53".parse().unwrap(), "10.0.0.2".parse().unwrap()]
        );
        assert!(parse_resolv_conf("options ndots:5\n").is_empty());
    }

    #[test]
    fn a_loopback_stub_gives_way_to_systemd_resolveds_servers() {
        let stub = "nameserver 127.0.0.53\noptions edns0\n";
        let real = || Some("nameserver 192.168.1.1\nnameserver 127.0.0.1\n".to_string());
        assert_eq!(choose_servers(Some(stub), real), ["192.168.1.1".parse::<IpAddr>().unwrap()]);
        // Without real ones the stub stays (the agent runs on the host's network).
        assert_eq!(choose_servers(Some(stub), || None), ["127.0.0.53".parse::<IpAddr>().unwrap()]);
        // A real server in /etc/resolv.conf wins.
        let mixed = "nameserver 127.0.0.1\nnameserver 10.0.0.2\n";
        let got = choose_servers(Some(mixed), || panic!("not read"));
        assert_eq!(got, ["127.0.0.1".parse::<IpAddr>().unwrap(), "10.0.0.2".parse().unwrap()]);
        assert_eq!(choose_servers(None, real), ["192.168.1.1".parse::<IpAddr>().unwrap()]);
        assert!(choose_servers(None, || None).is_empty());
    }

    #[test]
    fn an_explicit_resolv_conf_is_read_as_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 127.0.0.53\nnameserver ::1\n").unwrap();
        let got = upstream_servers(Some(&path)).unwrap();
        assert_eq!(got, ["127.0.0.53:53".parse::<SocketAddr>().unwrap(), "[::1]:53".parse().unwrap()]);
        let missing = dir.path().join("missing");
        assert!(matches!(upstream_servers(Some(&missing)), Err(DnsError::ResolvConf { .. })));
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let n = Name::from_ascii("example.com.").unwrap();
        Record::from_rdata(n.clone(), ttl, RData::SOA(SOA::new(n.clone(), n, 1, 2, 3, 4, minimum)))
    }

    #[test]
    fn cache_lifetimes_follow_ttls_and_soa_minimums() {
        let a =
            |ttl| Record::from_rdata(Name::from_ascii("a.example.com.").unwrap(), ttl, RData::A(A::new(1, 2, 3, 4)));
        let r = |rcode, answers, authority| Resolved { rcode, answers, authority, additional: vec![] };
        assert_eq!(r(ResponseCode::NoError, vec![a(60), a(20)], vec![]).cache_ttl(), 20);
        assert_eq!(r(ResponseCode::NoError, vec![a(86400)], vec![]).cache_ttl(), 300);
        assert_eq!(r(ResponseCode::NoError, vec![a(0)], vec![]).cache_ttl(), 0);
        assert_eq!(r(ResponseCode::NXDomain, vec![], vec![soa(3600, 10)]).cache_ttl(), 10);
        assert_eq!(r(ResponseCode::NoError, vec![], vec![soa(3600, 900)]).cache_ttl(), 30);
        assert_eq!(r(ResponseCode::NXDomain, vec![], vec![]).cache_ttl(), 0);
        assert_eq!(r(ResponseCode::ServFail, vec![], vec![]).cache_ttl(), 0);
    }

    /// How a stub server answers one question.
    #[derive(Clone, Copy, PartialEq, Debug)]
    pub(crate) enum Behaviour {
        /// A for every name: 192.0.2.1, TTL 60.
        Answer,
        /// NXDOMAIN with an SOA (minimum 10).
        NxDomain,
        /// Truncated over UDP, the full answer over TCP.
        TruncateUdp,
        /// Garbage bytes, then nothing.
        Garbage,
        /// Nothing at all.
        Silent,
    }

    /// A DNS server on 127.0.0.1 (UDP and TCP on one port) that counts the questions it gets.
    pub(crate) struct Stub {
        pub addr: SocketAddr,
        pub udp_queries: Arc<AtomicUsize>,
        pub tcp_queries: Arc<AtomicUsize>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Drop for Stub {
        fn drop(&mut self) {
            self.tasks.iter().for_each(|t| t.abort());
        }
    }

    fn stub_answer(bytes: &[u8], behaviour: Behaviour, tcp: bool) -> Option<Vec<u8>> {
        let q = Message::from_vec(bytes).ok()?;
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        m.metadata.recursion_available = true;
        m.add_queries(q.queries.clone());
        let name = q.queries.first()?.name.clone();
        match behaviour {
            Behaviour::Answer => {
                m.add_answer(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 1))));
            }
            Behaviour::NxDomain => {
                m.metadata.response_code = ResponseCode::NXDomain;
                m.add_authority(soa(3600, 10));
            }
            Behaviour::TruncateUdp if !tcp => m.metadata.truncation = true,
            Behaviour::TruncateUdp => {
                for i in 1..=40 {
                    m.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A::new(192, 0, 2, i))));
                }
            }
            Behaviour::Garbage => return Some(vec![0xde, 0xad, 0xbe, 0xef]),
            Behaviour::Silent => return None,
        }
        m.to_vec().ok()
    }

    impl Stub {
        pub(crate) async fn start(behaviour: Behaviour) -> Stub {
            let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let addr = udp.local_addr().unwrap();
            let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
            let (udp_queries, tcp_queries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let counted = udp_queries.clone();
            let u = tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    if let Some(reply) = stub_answer(&buf[..n], behaviour, false) {
                        let _ = udp.send_to(&reply, peer).await;
                    }
                }
            });
            let counted = tcp_queries.clone();
            let t = tokio::spawn(async move {
                while let Ok((mut s, _)) = tcp.accept().await {
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).await.is_err() {
                        continue;
                    }
                    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut buf).await.is_err() {
                        continue;
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    if let Some(reply) = stub_answer(&buf, behaviour, true) {
                        let _ = s.write_all(&(reply.len() as u16).to_be_bytes()).await;
                        let _ = s.write_all(&reply).await;
                    }
                }
            });
            Stub { addr, udp_queries, tcp_queries, tasks: vec![u, t] }
        }

        pub(crate) fn udp(&self) -> usize {
            self.udp_queries.load(Ordering::SeqCst)
        }

        pub(crate) fn tcp(&self) -> usize {
            self.tcp_queries.load(Ordering::SeqCst)
        }
    }

    fn query(name: &str) -> Query {
        Query::query(Name::from_ascii(name).unwrap(), RecordType::A)
    }

    #[tokio::test]
    async fn answers_come_from_the_upstream_and_then_from_the_cache() {
        let stub = Stub::start(Behaviour::Answer).await;
        let f = Forwarder::new(vec![stub.addr]);
        let r = f.resolve(&query("example.com.")).await.unwrap();
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::A(A::new(192, 0, 2, 1)));
        assert_eq!(r.answers[0].ttl, 60);
        // Cached: the same question in another case does not reach the upstream again.
        let again = f.resolve(&query("EXAMPLE.com.")).await.unwrap();
        assert_eq!(again.answers, r.answers);
        assert_eq!(stub.udp(), 1);
        f.resolve(&query("other.example.com.")).await.unwrap();
        assert_eq!(stub.udp(), 2);
    }

    #[tokio::test]
    async fn nxdomain_is_cached_by_the_soa_minimum() {
        let stub = Stub::start(Behaviour::NxDomain).await;
        let f = Forwarder::new(vec![stub.addr]);
        let r = f.resolve(&query("nope.example.com.")).await.unwrap();
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert_eq!(r.authority.len(), 1);
        let r = f.resolve(&query("nope.example.com.")).await.unwrap();
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert_eq!(stub.udp(), 1);
        assert_eq!(f.cache().get(&query("nope.example.com.")).map(|e| e.ttl), Some(10));
    }

    #[tokio::test]
    async fn a_truncated_answer_is_asked_again_over_tcp() {
        let stub = Stub::start(Behaviour::TruncateUdp).await;
        let f = Forwarder::new(vec![stub.addr]);
        let r = f.resolve(&query("big.example.com.")).await.unwrap();
        assert_eq!(r.answers.len(), 40);
        assert_eq!(r.answers[39].data, RData::A(A::new(192, 0, 2, 40)));
        assert_eq!((stub.udp(), stub.tcp()), (1, 1));
    }

    #[tokio::test]
    async fn a_silent_or_garbled_server_passes_the_question_on() {
        let silent = Stub::start(Behaviour::Silent).await;
        let garbage = Stub::start(Behaviour::Garbage).await;
        let good = Stub::start(Behaviour::Answer).await;
        let f = Forwarder::new(vec![silent.addr, garbage.addr, good.addr]).with_timeout(Duration::from_millis(200));
        let r = f.resolve(&query("example.com.")).await.unwrap();
        assert_eq!(r.answers[0].data, RData::A(A::new(192, 0, 2, 1)));
        assert_eq!((silent.udp(), garbage.udp(), good.udp()), (1, 1, 1));
        let f = Forwarder::new(vec![silent.addr]).with_timeout(Duration::from_millis(100));
        assert!(matches!(f.resolve(&query("example.com.")).await, Err(DnsError::Upstream { .. })));
    }

    #[tokio::test]
    async fn no_servers_means_no_answer() {
        let f = Forwarder::new(vec![]);
        assert!(matches!(f.resolve(&query("example.com.")).await, Err(DnsError::NoUpstream)));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let f = Forwarder::new(vec![]);
        let a = |q: &Query| Resolved {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(q.name.clone(), 60, RData::A(A::new(1, 2, 3, 4)))],
            authority: vec![],
            additional: vec![],
        };
        for i in 0..CACHE_ENTRIES + 50 {
            let q = query(&format!("n{i}.example.com."));
            f.store(&q, &a(&q));
        }
        assert!(f.cache().len() <= CACHE_ENTRIES);
        let last = query(&format!("n{}.example.com.", CACHE_ENTRIES + 49));
        assert!(f.cached(&last).is_some());
    }
}
