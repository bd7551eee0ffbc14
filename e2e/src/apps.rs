//! Apps behind the proxies: an HTTP server answering its name.

use std::time::Duration;

/// Serves `GET /*` with `name` on `ip`; returns the port.
pub async fn http_app(ip: &str, name: &'static str) -> u16 {
    let app = axum::Router::new().fallback(move || async move { name });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind app");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A plain HTTP client for traffic through the proxies.
pub fn client() -> reqwest::Client {
    crate::install_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// `GET url`: `"<status> <body>"`, or the error.
pub async fn get(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.text().await.map_err(|e| e.to_string())?;
    Ok(format!("{status} {body}"))
}
