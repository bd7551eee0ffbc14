//! Kuma's dataplane inspect endpoints answered by the proxy's own Envoy
//! (`GET /meshes/{mesh}/dataplanes/{name}/stats|clusters|xds`, what
//! `kumactl inspect dataplane --type stats|clusters|config-dump` prints),
//! through [`crate::envoy_admin`].

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kuma_crds::resource::{ResourceType, Spec};
use kuma_xds::bootstrap::admin_port_or_default;
use kuma_xds::generate::admin_port_sent;

use super::{ApiError, ApiState, Caller};
use crate::envoy_admin::{EnvoyAdminError, sanitize_config_dump};
use crate::store::ResourceKey;

/// What is asked of the proxy's admin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminView {
    /// `/stats` (`usedonly` unless `usedonly=false`, as Kuma).
    Stats,
    /// `/clusters`.
    Clusters,
    /// `/config_dump`, credentials redacted.
    ConfigDump,
}

impl AdminView {
    /// The view a path segment names.
    pub fn of(segment: &str) -> Option<Self> {
        match segment {
            "stats" => Some(AdminView::Stats),
            "clusters" => Some(AdminView::Clusters),
            "xds" => Some(AdminView::ConfigDump),
            _ => None,
        }
    }
}

fn admin_error(e: EnvoyAdminError) -> ApiError {
    match e {
        EnvoyAdminError::Unreachable { .. } | EnvoyAdminError::Status { .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "Could not execute admin operation",
            e.to_string(),
        ),
        EnvoyAdminError::Store(e) => ApiError::store("Could not execute admin operation", e),
        EnvoyAdminError::Ca(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not execute admin operation",
            e.to_string(),
        ),
    }
}

/// The query's value of `name`, if given.
fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `GET /meshes/{mesh}/dataplanes/{name}/{stats|clusters|xds}`.
pub async fn inspect(
    state: &ApiState,
    caller: &Caller,
    mesh: &str,
    name: &str,
    view: AdminView,
    raw_query: Option<&str>,
) -> Result<Response, ApiError> {
    let access = &state.config.access.static_lists;
    match view {
        AdminView::Stats => caller.require(&access.view_stats, "the stats")?,
        AdminView::Clusters => caller.require(&access.view_clusters, "the clusters")?,
        AdminView::ConfigDump => caller.require(&access.view_config_dump, "the config dump")?,
    }
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(raw_query.unwrap_or_default()).unwrap_or_default();
    let dp = state
        .store
        .get(&ResourceKey::new(ResourceType::Dataplane, mesh, name))
        .await
        .map_err(|e| ApiError::store("Could not get dataplane resource", e))?;
    let Spec::Dataplane(spec) = &dp.spec else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Not Found",
            "not a dataplane",
        ));
    };
    let networking = spec.networking();
    let address = networking.address.as_deref().unwrap_or("127.0.0.1");
    // The port the proxy's Envoy really uses when it is connected here,
    // else the Dataplane's (as Kuma).
    let port = state
        .snapshots
        .get(&format!("{mesh}.{name}"))
        .and_then(|s| admin_port_sent(&s))
        .unwrap_or_else(|| admin_port_or_default(networking.admin.as_ref().and_then(|a| a.port)));
    let json = param(&query, "format") == Some("json");
    let (path, mut args): (&str, Vec<(&str, &str)>) = match view {
        AdminView::Stats => {
            let used_only = param(&query, "usedonly").is_none_or(|v| v != "false");
            ("stats", if used_only { vec![("usedonly", "")] } else { vec![] })
        }
        AdminView::Clusters => ("clusters", vec![]),
        AdminView::ConfigDump => {
            let include_eds = param(&query, "include_eds") == Some("true");
            (
                "config_dump",
                if include_eds {
                    vec![("include_eds", "true")]
                } else {
                    vec![]
                },
            )
        }
    };
    if json && view != AdminView::ConfigDump {
        args.push(("format", "json"));
    }
    let body = state
        .envoy_admin
        .get(address, port, path, &args)
        .await
        .map_err(admin_error)?;
    let (body, content_type) = match view {
        AdminView::ConfigDump => {
            let clean = sanitize_config_dump(&body).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "Could not execute admin operation",
                    format!("the proxy's config dump is not JSON: {e}"),
                )
            })?;
            (clean, "application/json")
        }
        _ if json => (body, "application/json"),
        _ => (body, "text/plain"),
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
