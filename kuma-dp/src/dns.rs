//! kuma-dp's DNS proxy (Kuma's embedded `dnsproxy`): A and AAAA questions
//! for names of the mesh's DNS table are answered with their VIPs; every
//! other question goes, unchanged, to the host's resolver (the first
//! `nameserver` of `/etc/resolv.conf`), whose answer is relayed. With
//! `kumactl install transparent-proxy --redirect-dns` the app's DNS
//! traffic lands here; kuma-dp's own (UID 5678) is not redirected, so
//! forwarding does not loop.
//!
//! The table comes from the control plane through Envoy: `GET /dns` on the
//! `_kuma:dynamicconfig` Unix socket, polled every second with the ETag of
//! the table held (304 while unchanged), so a name added to or removed
//! from the mesh is answered, or not, within a poll.
//!
//! [`reply`] is the whole decision, a pure function of the question and
//! the table; the rest moves bytes.
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kuma_crds::dns::{DNS_PATH, DnsTable};
use kuma_dp::dns_answer::{Lookup, Reply, reply, server_failure, upstream_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type SharedLookup = Arc<RwLock<Arc<Lookup>>>;

fn current(table: &SharedLookup) -> Arc<Lookup> {
    table.read().unwrap_or_else(|e| e.into_inner()).clone()
}

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

async fn forward_udp(query: &[u8], upstream: Option<SocketAddr>) -> Option<Vec<u8>> {
    let upstream = upstream?;
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

async fn forward_tcp(query: &[u8], upstream: Option<SocketAddr>) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(upstream?).await.ok()?;
        stream.write_all(&(query.len() as u16).to_be_bytes()).await.ok()?;
        stream.write_all(query).await.ok()?;
        let len = stream.read_u16().await.ok()?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await.ok()?
}

/// Serves DNS over UDP on `socket`.
pub async fn serve_udp(socket: tokio::net::UdpSocket, table: SharedLookup, upstream: Option<SocketAddr>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = buf[..n].to_vec();
        match reply(&query, &current(&table)) {
            Reply::Answer(bytes) => {
                let _ = socket.send_to(&bytes, peer).await;
            }
            Reply::Drop => {}
            Reply::Forward => {
                let socket = socket.clone();
                tokio::spawn(async move {
                    let answer = match forward_udp(&query, upstream).await {
                        Some(a) => Some(a),
                        None => server_failure(&query),
                    };
                    if let Some(bytes) = answer {
                        let _ = socket.send_to(&bytes, peer).await;
                    }
                });
            }
        }
    }
}

/// Serves DNS over TCP on `listener` (length-prefixed messages).
pub async fn serve_tcp(listener: tokio::net::TcpListener, table: SharedLookup, upstream: Option<SocketAddr>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let table = table.clone();
        tokio::spawn(async move {
            loop {
                let Ok(len) = stream.read_u16().await else { return };
                let mut query = vec![0u8; usize::from(len)];
                if stream.read_exact(&mut query).await.is_err() {
                    return;
                }
                let answer = match reply(&query, &current(&table)) {
                    Reply::Answer(bytes) => Some(bytes),
                    Reply::Drop => return,
                    Reply::Forward => match forward_tcp(&query, upstream).await {
                        Some(a) => Some(a),
                        None => server_failure(&query),
                    },
                };
                let Some(bytes) = answer else { return };
                let framed = [&(bytes.len() as u16).to_be_bytes()[..], &bytes].concat();
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Binds UDP and TCP on each address and serves them.
pub async fn start(addresses: &[IpAddr], port: u16, table: SharedLookup) -> anyhow::Result<()> {
    let upstream = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .as_deref()
        .and_then(upstream_of);
    for ip in addresses {
        let address = SocketAddr::new(*ip, port);
        let udp = match tokio::net::UdpSocket::bind(address).await {
            Ok(s) => s,
            // No IPv6 loopback here: serve IPv4 alone.
            Err(e) if ip.is_ipv6() => {
                tracing::warn!(%address, error = %e, "DNS proxy not listening on IPv6");
                continue;
            }
            Err(e) => return Err(anyhow::anyhow!("DNS proxy cannot listen on {address}: {e}")),
        };
        let tcp = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("DNS proxy cannot listen on {address}/tcp: {e}"))?;
        tracing::info!(%address, ?upstream, "DNS proxy listening");
        tokio::spawn(serve_udp(udp, table.clone(), upstream));
        tokio::spawn(serve_tcp(tcp, table.clone(), upstream));
    }
    Ok(())
}

/// What one poll of the table found.
#[derive(Debug)]
enum Fetched {
    Changed(DnsTable, String),
    Unchanged,
}

/// `GET /dns` over the Unix socket, with the ETag held.
async fn fetch(socket: &Path, etag: &str) -> anyhow::Result<Fetched> {
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(DNS_PATH)
        .header("host", "localhost")
        .header("if-none-match", etag)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    match response.status().as_u16() {
        304 | 404 => Ok(Fetched::Unchanged),
        200 => {
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = response.into_body().collect().await?.to_bytes();
            let table: DnsTable = serde_json::from_slice(&body)?;
            Ok(Fetched::Changed(table, etag))
        }
        status => anyhow::bail!("GET {DNS_PATH}: {status}"),
    }
}

/// Polls the table from Envoy every `interval` and installs each new one.
/// Until Envoy has the listener the socket does not exist: not an error.
pub async fn keep_table(socket: PathBuf, interval: Duration, table: SharedLookup) {
    let mut etag = String::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !socket.exists() {
            continue;
        }
        match fetch(&socket, &etag).await {
            Ok(Fetched::Changed(fresh, tag)) => {
                tracing::info!(names = fresh.records.len(), "DNS table updated");
                *table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Lookup::from(&fresh));
                etag = tag;
            }
            Ok(Fetched::Unchanged) => {}
            Err(e) => tracing::debug!(error = %e, "cannot fetch the DNS table"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    fn table() -> Lookup {
        let table = DnsTable::new(vec![kuma_crds::dns::DnsRecord {
            name: "backend.mesh".into(),
            ips: vec!["240.0.0.1".into(), "::ffff:f000:1".into()],
        }]);
        Lookup::from(&table)
    }

    fn question(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        let mut q = Query::new();
        q.set_name(Name::from_ascii(name).unwrap_or_else(|e| panic!("{e}")));
        q.set_query_type(t);
        m.add_query(q);
        m.to_vec().unwrap_or_default()
    }

    /// A question for a name that is not the mesh's reaches the upstream
    /// (here a stub on loopback) and its answer comes back unchanged; a
    /// silent upstream gives SERVFAIL.
    #[tokio::test]
    async fn forwarded_questions_come_back_from_upstream() {
        let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let upstream_addr = upstream.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            while let Ok((n, peer)) = upstream.recv_from(&mut buf).await {
                let mut m = Message::from_vec(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
                m.metadata.message_type = MessageType::Response;
                let q = m.queries[0].name().clone();
                m.add_answer(Record::from_rdata(q, 60, RData::A(A([93, 184, 216, 34].into()))));
                let _ = upstream.send_to(&m.to_vec().unwrap_or_default(), peer).await;
            }
        });
        let shared: SharedLookup = Arc::new(RwLock::new(Arc::new(table())));
        let proxy = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let proxy_addr = proxy.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(serve_udp(proxy, shared.clone(), Some(upstream_addr)));
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ask = |name: &'static str| {
            let client = &client;
            async move {
                client
                    .send_to(&question(name, RecordType::A), proxy_addr)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut buf = vec![0u8; 512];
                let (n, _) = tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .unwrap_or_else(|e| panic!("{e}"));
                Message::from_vec(&buf[..n]).unwrap_or_else(|e| panic!("{e}"))
            }
        };
        let forwarded = ask("example.com.").await;
        assert_eq!(forwarded.answers.len(), 1);
        assert_eq!(forwarded.answers[0].ttl, 60);
        let local = ask("backend.mesh.").await;
        assert_eq!(local.answers[0].ttl, 30);

        // A table without the name: it goes upstream too.
        *shared.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Lookup::default());
        let now_forwarded = ask("backend.mesh.").await;
        assert_eq!(now_forwarded.answers[0].ttl, 60);
    }
}
