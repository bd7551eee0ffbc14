//! The properties of one REST request through the real router, for the
//! `api_request` fuzz target and its corpus replay: whatever the method,
//! path, query and body, the API answers (never panics, never a 500), an
//! error is Kuma's JSON error body, a refused request leaves the store
//! exactly as it was (no partial write), and whatever an accepted one
//! stored still validates.
//!
//! An input is the request line (`PUT /meshes/default/meshtimeouts/t?x=1`)
//! and, after the first newline, the body.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use kuma_crds::format::parse;
use kuma_crds::resource::{Form, Resource, ResourceType};
use tower::ServiceExt;

use super::{ApiState, router};
use crate::config::Config;
use crate::insights::Insights;
use crate::store::{ResourceKey, Store};
use crate::tokens::Tokens;

/// What the store holds: every resource's spec, labels and version.
type Contents = BTreeMap<ResourceKey, String>;

/// The resources every request meets, beside the token signing keys.
const SEED: &[&str] = &[
    "type: Mesh\nname: default",
    "type: Dataplane\nmesh: default\nname: web\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 8080\n      servicePort: 80\n      tags:\n        kuma.io/service: web\n",
    "type: MeshTimeout\nmesh: default\nname: t\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 10s\n",
];

/// Checks one request; `Err` says which property broke.
pub fn check_request(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let (line, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
    let Ok(method) = Method::from_bytes(method.trim().as_bytes()) else {
        return Ok(());
    };
    let target = format!("/{}", target.trim().trim_start_matches('/'));
    let Ok(request) = Request::builder()
        .method(method.clone())
        .uri(target.as_str())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
    else {
        // Not a request hyper would hand to the router.
        return Ok(());
    };
    let template = template()?;
    let runtime = runtime()?;
    runtime.block_on(check(template, method, &target, request))
}

/// A single-threaded runtime for one property check (shared with the token
/// verification check).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// What every request meets: [`SEED`], the signing keys of dataplane and
/// user tokens and the admin token, and the Envoy admin client. Made once:
/// their keys take seconds in a debug build.
struct Template {
    resources: Vec<Resource>,
    envoy_admin: crate::envoy_admin::EnvoyAdmin,
}

fn template() -> Result<&'static Template, String> {
    static TEMPLATE: std::sync::OnceLock<Result<Template, String>> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            runtime()?.block_on(async {
                let store = Store::memory();
                for yaml in SEED {
                    let r = parse(yaml).map_err(|e| e.to_string())?;
                    store.create(r).await.map_err(|e| e.to_string())?;
                }
                let tokens = Tokens::new(store.clone());
                tokens.signing_key("default").await.map_err(|e| e.to_string())?;
                tokens.bootstrap_admin_token().await.map_err(|e| e.to_string())?;
                let mut resources = Vec::new();
                // Meshes first: everything else lives in one.
                for t in std::iter::once(ResourceType::Mesh).chain(
                    ResourceType::ALL
                        .iter()
                        .copied()
                        .filter(|t| *t != ResourceType::Mesh),
                ) {
                    resources.extend(store.list(t, None).await.map_err(|e| e.to_string())?);
                }
                let admin_ca = kuma_xds::admin_tls::generate_ca().map_err(|e| e.to_string())?;
                let envoy_admin =
                    crate::envoy_admin::EnvoyAdmin::new(&admin_ca).map_err(|e| e.to_string())?;
                Ok(Template {
                    resources,
                    envoy_admin,
                })
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

async fn check(
    template: &Template,
    method: Method,
    target: &str,
    mut request: Request<Body>,
) -> Result<(), String> {
    let store = Store::memory();
    for r in &template.resources {
        store.create(r.clone()).await.map_err(|e| e.to_string())?;
    }
    let state = Arc::new(ApiState {
        store: store.clone(),
        tokens: Tokens::new(store.clone()),
        insights: Arc::new(Insights::new(None, 2)),
        snapshots: Arc::new(kuma_xds::snapshot::SnapshotCache::new()),
        config: Config::default(),
        instance_id: "fuzz".into(),
        cluster_id: "fuzz".into(),
        admission: kuma_crds::admission::Context::new(kuma_crds::admission::Environment::Universal),
        envoy_admin: template.envoy_admin.clone(),
    });
    // A loopback caller: an admin, who may do everything a request can.
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let before = contents(&store).await?;
    let response = router(state)
        .oneshot(request)
        .await
        .map_err(|e| format!("{method} {target}: {e}"))?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .map_err(|e| format!("{method} {target}: the body: {e}"))?;
    let said = || {
        String::from_utf8_lossy(&body)
            .chars()
            .take(300)
            .collect::<String>()
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        return Err(format!("{method} {target}: 500 {}", said()));
    }
    let after = contents(&store).await?;
    if !status.is_success() {
        if after != before {
            return Err(format!(
                "{method} {target}: refused with {status} but the store changed"
            ));
        }
        // Kuma's error body, for what a client can do about it.
        if status.is_client_error()
            && status != StatusCode::NOT_FOUND
            && status != StatusCode::METHOD_NOT_ALLOWED
        {
            let error: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|_| format!("{method} {target}: {status} {}", said()))?;
            if !error["title"].is_string() || !error["detail"].is_string() {
                return Err(format!(
                    "{method} {target}: {status} without title and detail: {}",
                    said()
                ));
            }
        }
        return Ok(());
    }
    for (key, _) in after.iter().filter(|(k, v)| before.get(*k) != Some(*v)) {
        let stored = store.get(key).await.map_err(|e| e.to_string())?;
        if let Err(e) = stored.validate(Form::Universal) {
            return Err(format!(
                "{method} {target}: stored {key:?}, which does not validate: {e}"
            ));
        }
    }
    Ok(())
}

async fn contents(store: &Store) -> Result<Contents, String> {
    let mut all = Contents::new();
    for t in ResourceType::ALL.iter().copied() {
        for r in store.list(t, None).await.map_err(|e| e.to_string())? {
            all.insert(ResourceKey::of(&r), describe(&r));
        }
    }
    Ok(all)
}

fn describe(r: &Resource) -> String {
    format!(
        "{}|{:?}|{:?}|{:?}",
        r.spec.to_value(),
        r.meta.labels,
        r.meta.annotations,
        r.meta.version
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_of_each_kind_keep_the_properties() {
        for input in [
            "GET /meshes/default/dataplanes/_overview",
            "PUT /meshes/default/meshtimeouts/t2\n{\"type\":\"MeshTimeout\",\"mesh\":\"default\",\"name\":\"t2\",\"spec\":{\"targetRef\":{\"kind\":\"Mesh\"},\"to\":[{\"targetRef\":{\"kind\":\"Mesh\"},\"default\":{\"idleTimeout\":\"5s\"}}]}}",
            "PUT /meshes/default/meshtimeouts/t2\n{\"type\":\"MeshTimeout\",\"mesh\":\"default\",\"name\":\"t2\",\"spec\":{\"to\":[{\"default\":{\"idleTimeout\":\"ten\"}}]}}",
            "DELETE /meshes/default",
            "POST /tokens/dataplane\n{\"name\":\"web\",\"mesh\":\"default\"}",
            "GET /meshes/default/dataplanes?size=-1",
        ] {
            assert_eq!(check_request(input.as_bytes()), Ok(()), "{input}");
        }
    }
}
