//! The test app image (`nginx`, `kuma-e2e/echo` in pod templates): an HTTP
//! server answering every request with `<pod name> <method> <path>`, on
//! every port given (default 80), and `/ready` for probes.

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut ports: Vec<u16> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if ports.is_empty() {
        ports.push(80);
    }
    let name = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "echo".into());
    let mut tasks = Vec::new();
    for port in ports {
        let name = name.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let name = name.clone();
            async move { format!("{name} {} {}", req.method(), req.uri().path()) }
        });
        // Both families (`::` takes IPv4 too) where the host has IPv6.
        let mut any = "::";
        let listener = loop {
            match tokio::net::TcpListener::bind((any, port)).await {
                Ok(l) => break l,
                Err(e) if any == "::" && e.kind() != std::io::ErrorKind::AddrInUse => any = "0.0.0.0",
                Err(e) => {
                    eprintln!("bind :{port}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        tasks.push(tokio::spawn(async move { axum::serve(listener, app).await }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
