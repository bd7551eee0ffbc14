//! The application probe proxy (`KUMA_APPLICATION_PROBE_PROXY_PORT`, 9001
//! on Kubernetes): the injector rewrites the app's probes to ask kuma-dp,
//! which probes the app locally — with mTLS the kubelet could not reach it
//! through Envoy. `GET /<port>/<path>` probes HTTP (headers
//! `X-Kuma-Probes-Host`, `-Scheme`, `-Timeout`), `GET /tcp/<port>` and
//! `GET /grpc/<port>` open a connection.

use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;

fn timeout(req: &Request) -> Duration {
    req.headers()
        .get("x-kuma-probes-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1))
}

async fn probe(req: Request) -> StatusCode {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let (first, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
    let limit = timeout(&req);
    match first {
        "tcp" | "grpc" => {
            let Ok(port) = rest.trim_end_matches('/').parse::<u16>() else {
                return StatusCode::BAD_REQUEST;
            };
            match tokio::time::timeout(limit, tokio::net::TcpStream::connect(("127.0.0.1", port))).await {
                Ok(Ok(_)) => StatusCode::OK,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            }
        }
        port => {
            let Ok(port) = port.parse::<u16>() else {
                return StatusCode::BAD_REQUEST;
            };
            let https = req
                .headers()
                .get("x-kuma-probes-scheme")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
            let scheme = if https { "https" } else { "http" };
            let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            let url = format!("{scheme}://127.0.0.1:{port}/{rest}{query}");
            let Ok(client) = reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(limit)
                .build()
            else {
                return StatusCode::INTERNAL_SERVER_ERROR;
            };
            let mut request = client.get(url);
            for (name, value) in req.headers() {
                let name = name.as_str();
                if name == "x-kuma-probes-host" {
                    request = request.header("host", value.clone());
                } else if !name.starts_with("x-kuma-probes-") && name != "host" {
                    request = request.header(name, value.clone());
                }
            }
            match request.send().await {
                Ok(r) if r.status().is_success() || r.status().is_redirection() => StatusCode::OK,
                Ok(r) => StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                Err(_) => StatusCode::SERVICE_UNAVAILABLE,
            }
        }
    }
}

/// Serves the probe proxy on `port` of the Pod's address (INSTANCE_IP), or
/// of loopback elsewhere.
pub async fn serve(port: u16) {
    let address = std::env::var("INSTANCE_IP")
        .ok()
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .unwrap_or_else(|| "127.0.0.1".into());
    let app = axum::Router::new().fallback(probe);
    match tokio::net::TcpListener::bind((address.as_str(), port)).await {
        Ok(listener) => {
            tracing::info!(%address, port, "application probe proxy listening");
            let _ = axum::serve(listener, app).await;
        }
        Err(e) => tracing::warn!(port, error = %e, "cannot serve the application probe proxy"),
    }
}
