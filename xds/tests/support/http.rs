//! A minimal HTTP/1.1 client over loopback, for driving traffic through
//! Envoy and reading its admin API without another dependency.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpResponse> {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse(&raw)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request timed out",
            ))
        })
}

pub async fn get(addr: &str, path: &str) -> std::io::Result<HttpResponse> {
    request(addr, "GET", path, &[], "").await
}

fn parse(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

/// An HTTP/1.1 client that keeps its connection open between requests,
/// as pooled clients do: requests on an old connection are the ones a
/// listener update leaves on the draining filter chain.
#[derive(Default)]
pub struct KeepAlive {
    conn: Option<tokio::io::BufReader<TcpStream>>,
}

impl KeepAlive {
    /// `GET path` on the open connection (opening one when needed). A
    /// connection the server closed while idle is reopened once, as
    /// clients retry idempotent requests.
    pub async fn get(&mut self, addr: &str, path: &str) -> std::io::Result<HttpResponse> {
        let reused = self.conn.is_some();
        match self.try_get(addr, path).await {
            Err(e) if reused && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.conn = None;
                self.try_get(addr, path).await
            }
            other => other,
        }
    }

    async fn try_get(&mut self, addr: &str, path: &str) -> std::io::Result<HttpResponse> {
        use tokio::io::AsyncBufReadExt;
        let fut = async {
            if self.conn.is_none() {
                self.conn = Some(tokio::io::BufReader::new(TcpStream::connect(addr).await?));
            }
            let conn = self.conn.as_mut().expect("connected");
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            conn.get_mut().write_all(req.as_bytes()).await?;
            let mut head = Vec::new();
            loop {
                let mut line = Vec::new();
                if conn.read_until(b'\n', &mut line).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed",
                    ));
                }
                head.extend_from_slice(&line);
                if line == b"\r\n" {
                    break;
                }
            }
            let mut response = parse(&head)?;
            let length: usize = response
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no content-length"))?;
            let mut body = vec![0; length];
            conn.read_exact(&mut body).await?;
            response.body = String::from_utf8_lossy(&body).to_string();
            if response
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            {
                self.conn = None;
            }
            Ok(response)
        };
        let result = tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request timed out",
                ))
            });
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}
