//! Kuma's REST API (port 5681): resources by mesh and type, dataplane
//! overviews with insights, inspection (matched policies, generated config,
//! selected dataplanes), dataplane and user tokens, with Kuma's paths, JSON
//! and error bodies.

mod envoy_admin;
mod errors;
mod inspect;
mod mesh_insights;
pub mod request_check;
mod resources;

pub use errors::ApiError;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::insights::Insights;
use crate::store::Store;
use crate::tokens::Tokens;

/// The product version reported (the Kuma release this is compatible with).
pub const KUMA_VERSION: &str = "2.14.3";

/// What handlers share.
pub struct ApiState {
    /// The store.
    pub store: Store,
    /// Token issuing.
    pub tokens: Tokens,
    /// Connection insights.
    pub insights: Arc<Insights>,
    /// What each connected proxy was sent.
    pub snapshots: Arc<kuma_xds::snapshot::SnapshotCache>,
    /// The effective configuration.
    pub config: Config,
    /// This instance.
    pub instance_id: String,
    /// The cluster (store) id.
    pub cluster_id: String,
    /// Where the control plane runs: how writes are admitted, and whether
    /// the API may write resources at all (not on Kubernetes).
    pub admission: kuma_crds::admission::Context,
    /// Asks proxies' Envoy admins (the `stats`, `clusters` and `xds`
    /// inspect endpoints).
    pub envoy_admin: crate::envoy_admin::EnvoyAdmin,
}

/// The admin user: loopback clients (with `localhostIsAdmin`) and holders
/// of the bootstrapped admin token.
pub const ADMIN_USER: &str = "mesh-system:admin";
/// The group of admins: may read and write secrets and issue tokens.
pub const ADMIN_GROUP: &str = "mesh-system:admin";
/// Every caller that presented a valid user token is in this group.
pub const AUTHENTICATED_GROUP: &str = "mesh-system:authenticated";

/// Who is calling: a user name and groups, as Kuma's static access
/// control sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The user name.
    pub name: String,
    /// The user's groups.
    pub groups: Vec<String>,
}

impl Caller {
    /// A loopback client (with `localhostIsAdmin`): authenticated, as
    /// Kuma's localhost admin is.
    pub fn admin() -> Self {
        Caller {
            name: ADMIN_USER.into(),
            groups: vec![ADMIN_GROUP.into(), AUTHENTICATED_GROUP.into()],
        }
    }

    /// A caller without credentials: may manage ordinary resources, not
    /// secrets or tokens.
    pub fn anonymous() -> Self {
        Caller {
            name: "mesh-system:anonymous".into(),
            groups: vec!["mesh-system:unauthenticated".into()],
        }
    }

    /// 403 unless `rule` (an `access.static` list) allows the caller;
    /// `what` completes "cannot access …".
    pub fn require(&self, rule: &crate::config::UsersAndGroups, what: &str) -> Result<(), ApiError> {
        if rule.allows(&self.name, &self.groups) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Access Denied",
            format!("user \"{self}\" cannot access {what}"),
        ))
    }
}

/// Kuma's `name/group1,group2`.
impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.groups.join(","))
    }
}

/// The API routes.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    let router = axum::Router::new()
        .route("/", get(index))
        .route("/config", get(effective_config))
        .route("/tokens/dataplane", post(inspect::dataplane_token))
        .route("/tokens/user", post(inspect::user_token))
        .route("/who-am-i", get(who_am_i))
        .route("/meshes", get(resources::list_meshes))
        .route(
            "/meshes/{mesh}",
            get(resources::get_mesh)
                .put(resources::put_mesh)
                .delete(resources::delete_mesh),
        )
        .route(
            "/meshes/{mesh}/service-insights",
            get(mesh_insights::list_services),
        )
        .route(
            "/meshes/{mesh}/service-insights/{name}",
            get(mesh_insights::one_service),
        )
        .route("/meshes/{mesh}/{kind}", get(resources::list_in_mesh))
        .route(
            "/meshes/{mesh}/{kind}/{name}",
            get(resources::get_in_mesh)
                .put(resources::put_in_mesh)
                .delete(resources::delete_in_mesh),
        )
        .route("/meshes/{mesh}/{kind}/{name}/{sub}", get(inspect::sub_resource))
        .route(
            "/meshes/{mesh}/{kind}/{name}/{sub}/{sub2}",
            get(inspect::sub_sub_resource),
        )
        .route("/mesh-insights", get(mesh_insights::list))
        .route("/mesh-insights/{mesh}", get(mesh_insights::one))
        .route("/{kind}", get(resources::list_all))
        .route(
            "/{kind}/{name}",
            get(resources::get_global)
                .put(resources::put_global)
                .delete(resources::delete_global),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), identify))
        .layer(axum::middleware::from_fn(errors_as_json));
    let allowed = state.config.api_server.cors_allowed_domains.clone();
    let router = if allowed.is_empty() {
        router
    } else {
        router.layer(cors(allowed))
    };
    router.with_state(state)
}

/// Requests refused before a handler ran (a path that is not UTF-8, a body
/// that is not JSON) get axum's plain-text answer; Kuma's clients read an
/// error as its JSON body, so they get that, with the same status and
/// text. Unknown paths and methods (404, 405) stay as they are.
async fn errors_as_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let plain = !response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !plain
        || !(status.is_client_error() || status.is_server_error())
        || matches!(status, StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let title = status.canonical_reason().unwrap_or("Error");
    let json = ApiError::new(status, title, String::from_utf8_lossy(&text).trim()).into_response();
    let (json_parts, json_body) = json.into_parts();
    // Keep the other headers (e.g. `WWW-Authenticate`).
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &json_parts.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, json_body)
}

/// Browsers may call the API from the origins in
/// `apiServer.corsAllowedDomains` (exact origins; `*` or `.*` for any).
fn cors(allowed: Vec<String>) -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = AllowOrigin::predicate(move |origin, _| {
        let origin = origin.to_str().unwrap_or_default();
        allowed.iter().any(|a| a == "*" || a == ".*" || a == origin)
    });
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
}

/// Marks the request with its [`Caller`]: loopback peers that did not come
/// through a proxy or a browser are admin, like Kuma's `localhostIsAdmin`;
/// otherwise a `Bearer` user token names the caller, and a bad one is
/// refused (401) rather than downgraded to anonymous.
async fn identify(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let caller = if state.config.api_server.authn.localhost_is_admin
        && peer.is_some_and(|p| p.ip().is_loopback())
        && is_direct_local(request.headers())
    {
        Caller::admin()
    } else if let Some(token) = bearer {
        match state.tokens.verify_user(&token).await {
            Ok(claims) => {
                let mut groups = claims.groups;
                groups.push(AUTHENTICATED_GROUP.into());
                Caller {
                    name: claims.name,
                    groups,
                }
            }
            Err(crate::tokens::TokenError::Store(e)) => {
                return ApiError::store("Could not authenticate", e).into_response();
            }
            Err(e) => {
                tracing::info!(reason = %e, "API authentication rejected");
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Invalid authentication data",
                    "Unauthenticated",
                )
                .into_response();
            }
        }
    } else {
        Caller::anonymous()
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// `GET /who-am-i`.
async fn who_am_i(axum::Extension(caller): axum::Extension<Caller>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({"name": caller.name, "groups": caller.groups}),
    )
}

fn is_direct_local(headers: &HeaderMap) -> bool {
    let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    let browser_cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !matches!(v, "same-origin" | "none"));
    let host_local = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            let host = h
                .rsplit_once(':')
                .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
                .map_or(h, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        })
        .unwrap_or(true);
    !forwarded && !browser_cross_site && host_local
}

/// Kuma's JSON: one-space indentation, a trailing newline.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    if body.serialize(&mut ser).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    out.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], out).into_response()
}

async fn index(axum::extract::State(state): axum::extract::State<Arc<ApiState>>) -> Response {
    let hostname = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "clusterId": state.cluster_id,
            "gui": "",
            "hostname": hostname,
            "instanceId": state.instance_id,
            "product": "Kuma",
            "version": KUMA_VERSION,
            "basedOnKuma": KUMA_VERSION,
        }),
    )
}

async fn effective_config(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Response {
    if let Err(e) = caller.require(
        &state.config.access.static_lists.control_plane_metadata,
        "control plane metadata",
    ) {
        return e.into_response();
    }
    let mut config = serde_json::to_value(&state.config).unwrap_or(Value::Null);
    if let Some(pg) = config.pointer_mut("/store/postgres/password") {
        *pg = Value::String("*****".into());
    }
    json_response(StatusCode::OK, &config)
}
