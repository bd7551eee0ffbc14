//! The REST client: Kuma's paths, and its error body turned into the
//! messages kumactl prints.

use std::time::Duration;

use reqwest::blocking::{Client, Response};
use serde_json::Value;

use crate::config::ApiServer;

/// A client of one control plane.
pub struct Api {
    base: String,
    client: Client,
    token: Option<String>,
}

/// An error answered by the API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The error body (Kuma's format) or the raw text.
    pub body: Value,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let title = self.body.get("title").and_then(Value::as_str).unwrap_or("");
        let detail = self.body.get("detail").and_then(Value::as_str).unwrap_or("");
        if title.is_empty() && detail.is_empty() {
            return write!(f, "the control plane answered {}: {}", self.status, self.body);
        }
        write!(f, "{title} ({detail})")?;
        for p in self
            .body
            .get("invalid_parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = p.get("field").and_then(Value::as_str).unwrap_or("");
            let reason = p.get("reason").and_then(Value::as_str).unwrap_or("");
            write!(f, "\n* {field}: {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Trusts only the CA the control plane was added with (or nothing, when
/// verification is explicitly skipped).
fn with_tls(
    builder: reqwest::blocking::ClientBuilder,
    server: &ApiServer,
) -> anyhow::Result<reqwest::blocking::ClientBuilder> {
    if server.skip_verify {
        eprintln!("WARNING: the control plane's certificate is not verified (skipVerify)");
        return Ok(builder.danger_accept_invalid_certs(true));
    }
    if server.ca_cert_file.is_empty() {
        anyhow::bail!("an https control plane needs --ca-cert-file (or --skip-verify, explicitly)");
    }
    let pem = std::fs::read(&server.ca_cert_file)?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)?;
    Ok(builder.tls_certs_only(roots))
}

impl Api {
    /// A client of `server`.
    pub fn new(server: &ApiServer) -> anyhow::Result<Self> {
        let mut builder = Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(format!("kumactl/{} (Kuma)", crate::VERSION));
        if server.url.starts_with("https://") {
            builder = with_tls(builder, server)?;
        }
        let token = (server.auth_type == "tokens")
            .then(|| server.auth_conf.get("token").cloned())
            .flatten();
        Ok(Api {
            base: server.url.trim_end_matches('/').to_string(),
            client: builder.build()?,
            token,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/json");
        if let Some(t) = &self.token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r
    }

    fn finish(response: reqwest::Result<Response>) -> anyhow::Result<Response> {
        let response = response.map_err(|e| anyhow::anyhow!("cannot reach the control plane: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Err(ApiError {
            status: status.as_u16(),
            body,
        }
        .into())
    }

    /// `GET` returning JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(Self::finish(self.request(reqwest::Method::GET, path).send())?.json()?)
    }

    /// `GET` returning the body as it is (text or JSON).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(Self::finish(self.request(reqwest::Method::GET, path).send())?.text()?)
    }

    /// `GET` a list page: the whole answer and its items. `query` holds
    /// `key=value` pairs.
    pub fn list(&self, path: &str, query: &[String]) -> anyhow::Result<(Value, Vec<Value>)> {
        let path = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", query.join("&"))
        };
        let list = self.get(&path)?;
        let items = list
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok((list, items))
    }

    /// `PUT` a JSON body; returns the status and the server's warnings
    /// (`Warning` headers, their text).
    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Vec<String>)> {
        let r = self
            .request(reqwest::Method::PUT, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send();
        let response = Self::finish(r)?;
        let warnings = response
            .headers()
            .get_all(reqwest::header::WARNING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(warning_text)
            .collect();
        Ok((response.status().as_u16(), warnings))
    }

    /// `DELETE`.
    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        Self::finish(self.request(reqwest::Method::DELETE, path).send()).map(|_| ())
    }

    /// `POST` a JSON body, returning text.
    pub fn post_text(&self, path: &str, body: &Value) -> anyhow::Result<String> {
        let r = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send();
        Ok(Self::finish(r)?.text()?)
    }
}

/// The text of a `Warning` header (`299 - "text"`), as kubectl prints it.
fn warning_text(header: &str) -> String {
    header
        .strip_prefix("299 - ")
        .map(|t| t.trim_matches('"'))
        .unwrap_or(header)
        .to_string()
}

/// Whether an error is the API's 404.
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>().is_some_and(|a| a.status == 404)
}
