//! The DNS server: UDP and TCP sockets, message framing, and the rules that turn a request
//! into a response (cluster names from [`Records`], the rest through the [`Forwarder`]).
//!
//! Each UDP socket has a few receive loops that answer cluster names inline; a question that
//! needs an upstream gets its own task, and at most [`MAX_IN_FLIGHT`] of those exist
//! (beyond that the answer is SERVFAIL at once). TCP connections carry any number of
//! length-prefixed questions, one after the other, and close after [`TCP_IDLE`] without one; at
//! most [`MAX_TCP_CONNECTIONS`] are open.
//!
//! Request rules: bytes without a header are dropped, as are responses; a header with an
//! unreadable rest is FORMERR; an opcode other than QUERY is NOTIMP; anything but one question
//! is FORMERR; EDNS versions above 0 are BADVERS; zone transfers are REFUSED, as is any class
//! but IN. Responses echo the question and, when the request had one, an OPT record. A UDP
//! response larger than 512 bytes, or than the size the request's OPT offers, goes out
//! without records and with TC set, so the client asks again over TCP.
//!
//! Invariant: nothing a client sends can panic the server, and memory is bounded by the
//! receive buffers, the connection limit and the in-flight limit.
//!
//! [`Records`]: super::records::Records
//! [`MAX_IN_FLIGHT`]: super::upstream::MAX_IN_FLIGHT

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::DnsError;
use super::records::{Answer, Lookup, SharedRecords};
use super::upstream::{Forwarder, Permit, Resolved};

/// How long a TCP connection may stay without a complete question.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections open at once; more are closed as soon as they are accepted.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// The UDP payload size the server offers in its OPT record, and the most it sends.
const MAX_UDP_PAYLOAD: u16 = 4096;
/// The UDP payload size without EDNS.
const PLAIN_UDP_PAYLOAD: u16 = 512;

/// The bound sockets of a server.
pub struct Sockets {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

impl Sockets {
    /// UDP and TCP on each address (a port 0 becomes the same free port for both).
    pub async fn bind(addrs: &[SocketAddr]) -> Result<Sockets, DnsError> {
        let mut sockets = Sockets { udp: Vec::new(), tcp: Vec::new() };
        for &addr in addrs {
            let udp = UdpSocket::bind(addr).await.map_err(|source| DnsError::Bind { addr, source })?;
            let bound = udp.local_addr().map_err(|source| DnsError::Bind { addr, source })?;
            let tcp = TcpListener::bind(bound).await.map_err(|source| DnsError::Bind { addr: bound, source })?;
            sockets.udp.push(udp);
            sockets.tcp.push(tcp);
        }
        Ok(sockets)
    }

    /// The addresses the sockets are bound to, in the order given to [`Sockets::bind`].
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|s| s.local_addr().ok()).collect()
    }
}

/// How a response travels, which bounds its size.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Udp,
    Tcp,
}

/// What to do with one request.
enum Step {
    Reply(Vec<u8>),
    Drop,
    /// The answer needs an upstream (a forwarded name, or an ExternalName's target).
    Resolve(Box<Pending>),
}

struct Pending {
    request: Message,
    /// The cluster's part of the answer (the CNAME of an ExternalName Service).
    local: Option<Answer>,
    query: Query,
    permit: Permit,
}

/// Answers requests.
struct Handler {
    records: SharedRecords,
    forwarder: Arc<Forwarder>,
}

/// The response skeleton for `request`: its id, opcode, RD and CD, RA set, its questions and
/// an OPT record when it had one.
fn response(request: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::response(request.metadata.id, request.metadata.op_code);
    m.metadata.recursion_desired = request.metadata.recursion_desired;
    m.metadata.checking_disabled = request.metadata.checking_disabled;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        m.set_edns(edns);
    }
    m
}

/// The largest response `request` may receive over `transport`.
fn size_limit(request: &Message, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => {
            let offered = request.edns.as_ref().map_or(PLAIN_UDP_PAYLOAD, Edns::max_payload);
            usize::from(offered.clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD))
        }
    }
}

/// The wire form of `m`, or of its records-less truncated form when it is larger than
/// `limit`; `None` if even that cannot be encoded.
fn encode(m: &Message, limit: usize) -> Option<Vec<u8>> {
    match m.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Some(bytes),
        Ok(_) => m.truncate().to_vec().ok().filter(|b| b.len() <= limit),
        Err(e) => {
            tracing::debug!(error = %e, "cannot encode a DNS response");
            let mut failed = m.truncate();
            failed.metadata.truncation = false;
            failed.metadata.response_code = ResponseCode::ServFail;
            failed.to_vec().ok().filter(|b| b.len() <= limit)
        }
    }
}

/// Gives records owned by the name asked (in another case) the case asked.
fn echo_case(records: &mut [Record], asked: &Query) {
    for r in records.iter_mut() {
        if r.name == asked.name {
            r.name = asked.name.clone();
        }
    }
}

impl Handler {
    fn start(&self, bytes: &[u8], transport: Transport) -> Step {
        let Ok(header) = Header::read(&mut BinDecoder::new(bytes)) else { return Step::Drop };
        if header.metadata.message_type != MessageType::Query {
            return Step::Drop;
        }
        let request = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(_) => {
                let mut m = Message::error_msg(header.metadata.id, header.metadata.op_code, ResponseCode::FormErr);
                m.metadata.recursion_desired = header.metadata.recursion_desired;
                m.metadata.recursion_available = true;
                return self.reply(&m, transport, None);
            }
        };
        let refuse = |rcode| {
            let mut m = response(&request, rcode);
            if rcode != ResponseCode::NotImp && request.queries.len() != 1 {
                m.queries.clear();
            }
            m
        };
        if request.metadata.op_code != OpCode::Query {
            return self.reply(&refuse(ResponseCode::NotImp), transport, Some(&request));
        }
        if request.queries.len() != 1 {
            return self.reply(&refuse(ResponseCode::FormErr), transport, Some(&request));
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return self.reply(&refuse(ResponseCode::BADVERS), transport, Some(&request));
        }
        let q = &request.queries[0];
        if matches!(q.query_type, RecordType::AXFR | RecordType::IXFR) || q.query_class != DNSClass::IN {
            return self.reply(&refuse(ResponseCode::Refused), transport, Some(&request));
        }
        match self.records.load().lookup(&q.name, q.query_type) {
            Lookup::Local(answer) => match answer.chase.clone() {
                None => self.reply(&local_response(&request, answer), transport, Some(&request)),
                Some(target) => {
                    let chase = Query::query(target, q.query_type);
                    match self.forwarder.cached(&chase) {
                        Some(r) => self.reply(&chased_response(&request, answer, Ok(r)), transport, Some(&request)),
                        None => self.pending(request.clone(), Some(answer), chase, transport),
                    }
                }
            },
            Lookup::Forward => match self.forwarder.cached(q) {
                Some(r) => self.reply(&forwarded_response(&request, Ok(r)), transport, Some(&request)),
                None => {
                    let query = q.clone();
                    self.pending(request, None, query, transport)
                }
            },
        }
    }

    fn pending(&self, request: Message, local: Option<Answer>, query: Query, transport: Transport) -> Step {
        match self.forwarder.permit() {
            Some(permit) => Step::Resolve(Box::new(Pending { request, local, query, permit })),
            None => {
                let m = match local {
                    Some(answer) => chased_response(&request, answer, Err(DnsError::Busy)),
                    None => forwarded_response(&request, Err(DnsError::Busy)),
                };
                self.reply(&m, transport, Some(&request))
            }
        }
    }

    fn reply(&self, m: &Message, transport: Transport, request: Option<&Message>) -> Step {
        let limit = match request {
            Some(r) => size_limit(r, transport),
            None if transport == Transport::Tcp => usize::from(u16::MAX),
            None => usize::from(PLAIN_UDP_PAYLOAD),
        };
        encode(m, limit).map_or(Step::Drop, Step::Reply)
    }

    async fn finish(&self, p: Pending, transport: Transport) -> Option<Vec<u8>> {
        let resolved = self.forwarder.resolve_with(&p.query, p.permit).await;
        let m = match p.local {
            Some(answer) => chased_response(&p.request, answer, resolved),
            None => forwarded_response(&p.request, resolved),
        };
        encode(&m, size_limit(&p.request, transport))
    }

    async fn handle(&self, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        match self.start(bytes, transport) {
            Step::Reply(b) => Some(b),
            Step::Drop => None,
            Step::Resolve(p) => self.finish(*p, transport).await,
        }
    }
}

fn local_response(request: &Message, answer: Answer) -> Message {
    let mut m = response(request, answer.rcode);
    m.metadata.authoritative = true;
    m.answers = answer.answers;
    m.authorities = answer.authority;
    m.additionals = answer.additional;
    m
}

fn forwarded_response(request: &Message, resolved: Result<Resolved, DnsError>) -> Message {
    match resolved {
        Ok(r) => {
            let mut m = response(request, r.rcode);
            m.answers = r.answers;
            m.authorities = r.authority;
            m.additionals = r.additional;
            if let Some(q) = request.queries.first() {
                echo_case(&mut m.answers, q);
            }
            m
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot resolve a name upstream");
            response(request, ResponseCode::ServFail)
        }
    }
}

/// The CNAME of an ExternalName Service followed by its target's records from upstream (or
/// the CNAME alone when the upstream has none).
fn chased_response(request: &Message, answer: Answer, resolved: Result<Resolved, DnsError>) -> Message {
    let mut m = local_response(request, answer);
    match resolved {
        Ok(r) if r.rcode == ResponseCode::NoError => m.answers.extend(r.answers),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot resolve an ExternalName target upstream"),
    }
    m
}

/// Serves DNS on `sockets` from `records` (read anew for every question) and `forwarder`,
/// until `cancel` fires.
pub async fn serve(sockets: Sockets, records: SharedRecords, forwarder: Arc<Forwarder>, cancel: CancellationToken) {
    let handler = Arc::new(Handler { records, forwarder });
    let loops = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for udp in sockets.udp {
        let udp = Arc::new(udp);
        for _ in 0..loops {
            tasks.spawn(udp_loop(udp.clone(), handler.clone(), cancel.clone()));
        }
    }
    for tcp in sockets.tcp {
        tasks.spawn(tcp_loop(tcp, handler.clone(), connections.clone(), cancel.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn udp_loop(socket: Arc<UdpSocket>, handler: Arc<Handler>, cancel: CancellationToken) {
    // Room for any datagram, so that an oversized one is read whole and answered FORMERR
    // rather than parsed cut.
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS receive failed");
                    tokio::task::yield_now().await;
                    continue;
                }
            },
        };
        match handler.start(&buf[..n], Transport::Udp) {
            Step::Reply(bytes) => {
                let _ = socket.send_to(&bytes, peer).await;
            }
            Step::Drop => {}
            Step::Resolve(pending) => {
                let (socket, handler) = (socket.clone(), handler.clone());
                tokio::spawn(async move {
                    if let Some(bytes) = handler.finish(*pending, Transport::Udp).await {
                        let _ = socket.send_to(&bytes, peer).await;
                    }
                });
            }
        }
    }
}

async fn tcp_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    connections: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (handler, cancel) = (handler.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tcp_connection(stream, &handler) => {}
            }
            drop(permit);
        });
    }
}

/// Answers the questions of one connection until it closes, idles or breaks framing.
async fn tcp_connection(mut stream: TcpStream, handler: &Handler) {
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        buf.resize(usize::from(u16::from_be_bytes(len)), 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = handler.handle(&buf, Transport::Tcp).await else { continue };
        let Ok(len) = u16::try_from(reply.len()) else { continue };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        match tokio::time::timeout(TCP_IDLE, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::dns::records::Records;
    use crate::agent::dns::upstream::tests::{Behaviour, Stub};
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData};
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() }
    }

    fn records() -> Records {
        let svc = |name: &str, ip: &str, ext: Option<&str>| {
            Arc::new(Service {
                metadata: meta("default", name),
                spec: Some(ServiceSpec {
                    cluster_ip: Some(ip.into()),
                    type_: ext.map(|_| "ExternalName".to_string()),
                    external_name: ext.map(str::to_string),
                    ports: Some(vec![ServicePort { name: Some("http".into()), port: 80, ..Default::default() }]),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let mut m = meta("default", "big-1");
        m.labels = Some(BTreeMap::from([("kubernetes.io/service-name".to_string(), "big".to_string())]));
        let big = Arc::new(EndpointSlice {
            metadata: m,
            address_type: "IPv4".into(),
            endpoints: (1..=60)
                .map(|i| Endpoint {
                    addresses: vec![format!("10.42.0.{i}")],
                    conditions: Some(EndpointConditions { ready: Some(true), ..Default::default() }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort { name: Some("http".into()), port: Some(8080), ..Default::default() }]),
        });
        Records::build(
            "cluster.local",
            &[svc("web", "10.43.0.20", None), svc("big", "None", None), svc("ext", "", Some("example.com"))],
            &[big],
            7,
        )
    }

    struct Running {
        addr: SocketAddr,
        records: SharedRecords,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        async fn stop(self) {
            self.cancel.cancel();
            tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap();
        }
    }

    async fn start(upstreams: Vec<SocketAddr>) -> Running {
        let sockets = Sockets::bind(&["127.0.0.1:0".parse().unwrap()]).await.unwrap();
        let addr = sockets.local_addrs()[0];
        let forwarder = Arc::new(Forwarder::new(upstreams).with_timeout(Duration::from_millis(300)));
        let cancel = CancellationToken::new();
        let shared = SharedRecords::new(records());
        let task = tokio::spawn(serve(sockets, shared.clone(), forwarder, cancel.clone()));
        Running { addr, records: shared, cancel, task }
    }

    fn query(id: u16, name: &str, t: RecordType) -> Message {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m
    }

    async fn udp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(bytes, addr).await.unwrap();
        let mut buf = vec![0u8; 65_535];
        match tokio::time::timeout(Duration::from_millis(300), s.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    async fn udp(addr: SocketAddr, m: &Message) -> Message {
        let bytes = udp_raw(addr, &m.to_vec().unwrap()).await.expect("no answer");
        Message::from_vec(&bytes).unwrap()
    }

    async fn tcp_many(addr: SocketAddr, ms: &[Message]) -> Vec<Message> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        for m in ms {
            let b = m.to_vec().unwrap();
            s.write_all(&(b.len() as u16).to_be_bytes()).await.unwrap();
            s.write_all(&b).await.unwrap();
        }
        let mut out = Vec::new();
        for _ in ms {
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await.unwrap();
            out.push(Message::from_vec(&buf).unwrap());
        }
        out
    }

    fn a_of(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    async fn still_answers(addr: SocketAddr) {
        let r = udp(addr, &query(999, "web.default.svc.cluster.local.", RecordType::A)).await;
        assert_eq!(r.metadata.id, 999);
        assert_eq!(a_of(&r), ["10.43.0.20"]);
    }

    #[tokio::test]
    async fn answers_cluster_names_over_udp_and_tcp() {
        let s = start(vec![]).await;
        let r = udp(s.addr, &query(4242, "Web.Default.svc.cluster.local.", RecordType::A)).await;
        assert_eq!(r.metadata.id, 4242);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative && r.metadata.recursion_available && r.metadata.recursion_desired);
        assert_eq!(r.queries, query(0, "web.default.svc.cluster.local.", RecordType::A).queries);
        assert_eq!(r.answers.len(), 1);
        assert!(r.answers[0].name.eq_case(&Name::from_ascii("Web.Default.svc.cluster.local.").unwrap()));
        assert_eq!(r.answers[0].data, RData::A(A::new(10, 43, 0, 20)));
        assert_eq!(r.answers[0].ttl, 5);
        assert!(r.edns.is_none());

        let rs = tcp_many(
            s.addr,
            &[
                query(1, "web.default.svc.cluster.local.", RecordType::A),
                query(2, "nope.default.svc.cluster.local.", RecordType::A),
                query(3, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
            ],
        )
        .await;
        assert_eq!(rs.iter().map(|m| m.metadata.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(a_of(&rs[0]), ["10.43.0.20"]);
        assert_eq!(rs[1].metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            rs[1].authorities.iter().map(|r| r.data.to_string()).collect::<Vec<_>>(),
            ["ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5"]
        );
        assert_eq!(a_of(&rs[2]), ["0 100 80 web.default.svc.cluster.local."]);
        s.stop().await;
    }

    #[tokio::test]
    async fn a_new_zone_is_answered_at_once() {
        let s = start(vec![]).await;
        still_answers(s.addr).await;
        let moved = Arc::new(Service {
            metadata: meta("default", "web"),
            spec: Some(ServiceSpec { cluster_ip: Some("10.43.0.99".into()), ..Default::default() }),
            ..Default::default()
        });
        s.records.store(Records::build("cluster.local", &[moved], &[], 8));
        let r = udp(s.addr, &query(61, "web.default.svc.cluster.local.", RecordType::A)).await;
        assert_eq!(a_of(&r), ["10.43.0.99"]);
        let r = udp(s.addr, &query(62, "big.default.svc.cluster.local.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        s.stop().await;
    }

    #[tokio::test]
    async fn large_udp_answers_are_truncated_and_whole_over_tcp() {
        let s = start(vec![]).await;
        let q = query(5, "big.default.svc.cluster.local.", RecordType::A);
        let r = udp(s.addr, &q).await;
        assert!(r.metadata.truncation);
        assert!(r.answers.is_empty());
        assert_eq!(r.queries.len(), 1);
        // Room offered through EDNS: it fits.
        let mut with_edns = q.clone();
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        with_edns.set_edns(edns);
        let r = udp(s.addr, &with_edns).await;
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);
        assert_eq!(r.edns.as_ref().map(|e| (e.version(), e.max_payload())), Some((0, 4096)));
        let r = tcp_many(s.addr, &[q]).await;
        assert!(!r[0].metadata.truncation);
        assert_eq!(r[0].answers.len(), 60);
        s.stop().await;
    }

    #[tokio::test]
    async fn bad_requests_get_errors_and_the_server_keeps_answering() {
        let s = start(vec![]).await;
        // Garbage shorter than a header, and a response: dropped.
        assert_eq!(udp_raw(s.addr, b"\x01\x02\x03").await, None);
        let mut resp = query(6, "web.default.svc.cluster.local.", RecordType::A);
        resp.metadata.message_type = MessageType::Response;
        assert_eq!(udp_raw(s.addr, &resp.to_vec().unwrap()).await, None);
        still_answers(s.addr).await;

        // A header promising a question that is not there: FORMERR with the id.
        let mut cut = query(7, "web.default.svc.cluster.local.", RecordType::A).to_vec().unwrap();
        cut.truncate(20);
        let r = Message::from_vec(&udp_raw(s.addr, &cut).await.unwrap()).unwrap();
        assert_eq!((r.metadata.id, r.metadata.response_code), (7, ResponseCode::FormErr));

        // A name of 100 labels of 3 bytes (over 255 bytes): FORMERR.
        let mut long = vec![0, 8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..100 {
            long.extend_from_slice(b"\x03abc");
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        let r = Message::from_vec(&udp_raw(s.addr, &long).await.unwrap()).unwrap();
        assert_eq!((r.metadata.id, r.metadata.response_code), (8, ResponseCode::FormErr));
        // 100 one-letter labels are a valid name (201 bytes): not in the zone.
        let labels = "a.".repeat(98);
        let r = udp(s.addr, &query(9, &format!("{labels}cluster.local."), RecordType::A)).await;
        assert_eq!((r.metadata.id, r.metadata.response_code), (9, ResponseCode::NXDomain));

        // An unknown type on a known name: NODATA with the SOA.
        let r = udp(s.addr, &query(10, "web.default.svc.cluster.local.", RecordType::Unknown(65280))).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities.len(), 1);

        // Two questions: FORMERR.
        let mut two = query(11, "web.default.svc.cluster.local.", RecordType::A);
        two.add_query(Query::query(Name::from_ascii("ext.default.svc.cluster.local.").unwrap(), RecordType::A));
        let r = udp(s.addr, &two).await;
        assert_eq!((r.metadata.id, r.metadata.response_code), (11, ResponseCode::FormErr));

        // Another opcode: NOTIMP; a zone transfer: REFUSED; EDNS version 1: BADVERS.
        let mut notify = query(12, "cluster.local.", RecordType::SOA);
        notify.metadata.op_code = OpCode::Notify;
        assert_eq!(udp(s.addr, &notify).await.metadata.response_code, ResponseCode::NotImp);
        let r = udp(s.addr, &query(13, "cluster.local.", RecordType::AXFR)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        let mut v1 = query(14, "web.default.svc.cluster.local.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_version(1);
        v1.set_edns(edns);
        // (BADVERS and BADSIG share the code 16; a decoder calls it BADSIG.)
        let code = udp(s.addr, &v1).await.metadata.response_code;
        assert_eq!(u16::from(code), u16::from(ResponseCode::BADVERS));

        // The same garbage over TCP, then a good question on the same connection.
        let mut conn = TcpStream::connect(s.addr).await.unwrap();
        conn.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
        let good = query(15, "web.default.svc.cluster.local.", RecordType::A).to_vec().unwrap();
        conn.write_all(&(good.len() as u16).to_be_bytes()).await.unwrap();
        conn.write_all(&good).await.unwrap();
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(Message::from_vec(&buf).unwrap().metadata.id, 15);

        // Random bytes of every length up to a header and beyond.
        let mut x: u32 = 12345;
        for len in 0..200 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8 & 0x7f
                })
                .collect();
            let s2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s2.send_to(&junk, s.addr).await.unwrap();
        }
        still_answers(s.addr).await;
        s.stop().await;
    }

    #[tokio::test]
    async fn other_names_are_forwarded_and_cached() {
        let stub = Stub::start(Behaviour::Answer).await;
        let s = start(vec![stub.addr]).await;
        let r = udp(s.addr, &query(21, "Example.COM.", RecordType::A)).await;
        assert_eq!((r.metadata.id, r.metadata.response_code), (21, ResponseCode::NoError));
        assert!(!r.metadata.authoritative);
        assert_eq!(a_of(&r), ["192.0.2.1"]);
        assert!(r.answers[0].name.eq_case(&Name::from_ascii("Example.COM.").unwrap()));
        let r = udp(s.addr, &query(22, "example.com.", RecordType::A)).await;
        assert_eq!((r.metadata.id, a_of(&r)), (22, vec!["192.0.2.1".to_string()]));
        assert!(r.answers[0].name.eq_case(&Name::from_ascii("example.com.").unwrap()));
        assert_eq!(stub.udp(), 1);
        // Over TCP too.
        let r = tcp_many(s.addr, &[query(23, "www.example.com.", RecordType::A)]).await;
        assert_eq!(a_of(&r[0]), ["192.0.2.1"]);
        assert_eq!(stub.udp(), 2);
        // An ExternalName's target is followed upstream for addresses.
        let r = udp(s.addr, &query(24, "ext.default.svc.cluster.local.", RecordType::A)).await;
        assert_eq!(r.answers.len(), 2);
        assert_eq!(r.answers[0].data, RData::CNAME(CNAME(Name::from_ascii("example.com.").unwrap())));
        assert_eq!(r.answers[1].data, RData::A(A::new(192, 0, 2, 1)));
        assert_eq!(stub.udp(), 2, "example.com was cached");
        s.stop().await;
    }

    #[tokio::test]
    async fn a_truncating_upstream_is_asked_over_tcp() {
        let stub = Stub::start(Behaviour::TruncateUdp).await;
        let s = start(vec![stub.addr]).await;
        let r = tcp_many(s.addr, &[query(31, "big.example.com.", RecordType::A)]).await;
        assert_eq!(r[0].answers.len(), 40);
        assert_eq!((stub.udp(), stub.tcp()), (1, 1));
        s.stop().await;
    }

    #[tokio::test]
    async fn without_upstream_other_names_are_servfail() {
        let s = start(vec![]).await;
        let r = udp(s.addr, &query(41, "example.com.", RecordType::A)).await;
        assert_eq!((r.metadata.id, r.metadata.response_code), (41, ResponseCode::ServFail));
        // ExternalName: the CNAME alone.
        let r = udp(s.addr, &query(42, "ext.default.svc.cluster.local.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_of(&r), ["example.com."]);
        still_answers(s.addr).await;
        s.stop().await;
    }

    #[tokio::test]
    async fn a_silent_upstream_is_servfail_after_the_timeout() {
        let stub = Stub::start(Behaviour::Silent).await;
        let s = start(vec![stub.addr]).await;
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&query(51, "example.com.", RecordType::A).to_vec().unwrap(), s.addr).await.unwrap();
        // Meanwhile cluster names are answered.
        still_answers(s.addr).await;
        let mut buf = vec![0u8; 1500];
        let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await.unwrap().unwrap();
        let r = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!((r.metadata.id, r.metadata.response_code), (51, ResponseCode::ServFail));
        s.stop().await;
    }

    #[tokio::test]
    async fn binding_a_taken_address_names_it() {
        let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        match Sockets::bind(&[addr]).await {
            Err(e @ DnsError::Bind { .. }) => assert!(e.to_string().contains(&addr.to_string()), "{e}"),
            other => panic!("{:?}", other.map(|s| s.local_addrs())),
        }
    }
}
