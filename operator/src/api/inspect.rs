//! Dataplane overviews with insights, inspection endpoints and tokens.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kuma_crds::insight::DataplaneInsightSpec;
use kuma_crds::matching::{MatchOptions, PolicyView, select};
use kuma_crds::resource::{Resource, ResourceType, Spec};
use kuma_xds::context::{MeshContext, Proxy, ProxyMetadata};
use kuma_xds::generate::generate;
use kuma_xds::resources::XdsType;
use serde_json::{Value, json};

use super::envoy_admin::AdminView;
use super::resources::{kind, page, require_mesh, resource_json};
use super::{ApiError, ApiState, Caller, json_response};
use crate::store::ResourceKey;

type ApiResult = Result<Response, ApiError>;

/// One xDS type as sent: its version and its resources (JSON, by name).
struct Sent {
    xds_type: XdsType,
    resources: Vec<(String, Value)>,
}

fn node_id(mesh: &str, name: &str) -> String {
    format!("{mesh}.{name}")
}

/// Kuma's DataplaneOverview item: meta, `dataplane` (the spec) and
/// `dataplaneInsight` when the proxy was ever seen.
fn overview(state: &ApiState, dp: &Resource, stored: Option<&Resource>, patches: &[Resource]) -> Value {
    let Value::Object(full) = resource_json(dp) else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    let mut spec = serde_json::Map::new();
    for (k, v) in full {
        match k.as_str() {
            "type" => {
                out.insert(k, "DataplaneOverview".into());
            }
            "mesh" | "name" | "creationTime" | "modificationTime" | "labels" | "kri" => {
                out.insert(k, v);
            }
            _ => {
                spec.insert(k, v);
            }
        }
    }
    out.insert("dataplane".into(), Value::Object(spec));
    let stored = stored.and_then(crate::insights::insight_spec).cloned();
    if let Some(mut insight) = state
        .insights
        .merged(&node_id(dp.meta.mesh_or_default(), &dp.meta.core_name()), stored)
    {
        name_suspects(&mut insight, dp, patches);
        out.insert(
            "dataplaneInsight".into(),
            serde_json::to_value(insight).unwrap_or_default(),
        );
    }
    Value::Object(out)
}

/// Names, in each configuration the proxy refuses, the MeshProxyPatches
/// that select it and change that type of resource: every other policy is
/// validated into what Envoy accepts, so a patch is what Envoy can refuse.
fn name_suspects(insight: &mut DataplaneInsightSpec, dp: &Resource, patches: &[Resource]) {
    let Spec::Dataplane(spec) = &dp.spec else { return };
    for rejections in insight.subscriptions.iter_mut().map(|s| &mut s.rejections) {
        for (short, rejection) in rejections.iter_mut() {
            rejection.policies = patches
                .iter()
                .filter(|p| {
                    let Spec::MeshProxyPatch(patch) = &p.spec else {
                        return false;
                    };
                    patch.changes_xds_type(short)
                        && PolicyView::of(&p.spec)
                            .is_some_and(|v| matches!(select(p, &v.top, dp, spec, &[]), Ok(Some(_))))
                })
                .map(|p| format!("MeshProxyPatch/{}", p.meta.core_name()))
                .collect();
        }
    }
}

/// The MeshProxyPatches of a mesh, to name what a proxy refuses.
async fn patches(state: &ApiState, mesh: &str) -> Result<Vec<Resource>, ApiError> {
    state
        .store
        .list(ResourceType::MeshProxyPatch, Some(mesh))
        .await
        .map_err(|e| ApiError::store("Could not retrieve resources", e))
}

/// Kuma's dataplane overviews of a mesh (`_overview`, `dataplanes+insights`), filtered and paged.
pub async fn overview_list(
    state: &ApiState,
    mesh: &str,
    q: Option<String>,
    headers: &HeaderMap,
    path: &str,
) -> ApiResult {
    let dps = state
        .store
        .list(ResourceType::Dataplane, Some(mesh))
        .await
        .map_err(|e| ApiError::store("Could not retrieve resources", e))?;
    let insights: BTreeMap<String, Resource> = state
        .store
        .list(ResourceType::DataplaneInsight, Some(mesh))
        .await
        .map_err(|e| ApiError::store("Could not retrieve resources", e))?
        .into_iter()
        .map(|r| (r.meta.core_name(), r))
        .collect();
    let patches = patches(state, mesh).await?;
    let show = |d: &Resource| overview(state, d, insights.get(&d.meta.core_name()), &patches);
    Ok(json_response(
        StatusCode::OK,
        &page(&dps, show, q, headers, path)?,
    ))
}

/// One dataplane's overview.
pub async fn overview_one(state: &ApiState, mesh: &str, name: &str) -> ApiResult {
    let dp = state
        .store
        .get(&ResourceKey::new(ResourceType::Dataplane, mesh, name))
        .await
        .map_err(|e| ApiError::store("Could not retrieve a resource", e))?;
    let stored = match state
        .store
        .get(&ResourceKey::new(ResourceType::DataplaneInsight, mesh, name))
        .await
    {
        Ok(r) => Some(r),
        Err(crate::store::StoreError::NotFound(_)) => None,
        Err(e) => return Err(ApiError::store("Could not retrieve a resource", e)),
    };
    Ok(json_response(
        StatusCode::OK,
        &overview(state, &dp, stored.as_ref(), &patches(state, mesh).await?),
    ))
}

/// Every resource of a mesh that config generation reads.
async fn mesh_resources(state: &ApiState, mesh: &str) -> Result<Vec<Resource>, ApiError> {
    let mut all = Vec::new();
    // Mesh Secrets hold the mesh's CAs, which decide its mTLS listeners.
    for t in ResourceType::ALL
        .iter()
        .copied()
        .filter(|t| !t.is_read_only() && !matches!(t, ResourceType::GlobalSecret | ResourceType::Mesh))
    {
        all.extend(
            state
                .store
                .list(t, Some(mesh))
                .await
                .map_err(|e| ApiError::store("Could not retrieve resources", e))?,
        );
    }
    Ok(all)
}

/// `GET /meshes/{mesh}/{kind}/{name}/{sub}`.
pub async fn sub_resource(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((mesh, segment, name, sub)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    require_mesh(&state, &mesh).await?;
    let t = kind(&segment)?;
    if let (ResourceType::Dataplane, Some(view)) = (t, AdminView::of(&sub)) {
        return super::envoy_admin::inspect(&state, &caller, &mesh, &name, view, q.as_deref()).await;
    }
    match (t, sub.as_str()) {
        (ResourceType::Dataplane, "_overview") => overview_one(&state, &mesh, &name).await,
        (ResourceType::Dataplane, "_config") => {
            caller.require(
                &state.config.access.static_lists.view_config_dump,
                "the config dump",
            )?;
            dataplane_config(&state, &mesh, &name).await
        }
        (ResourceType::Dataplane, "_policies") => dataplane_policies(&state, &mesh, &name).await,
        (ResourceType::Dataplane, "policies") => dataplane_policies_legacy(&state, &mesh, &name).await,
        (t, "dataplanes") if t.is_policy() => policy_dataplanes(&state, &mesh, t, &name).await,
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Not Found",
            format!("unknown endpoint {sub:?}"),
        )),
    }
}

/// `GET /meshes/{mesh}/{kind}/{name}/{sub}/{sub2}`.
pub async fn sub_sub_resource(
    State(state): State<Arc<ApiState>>,
    Path((mesh, segment, name, sub, sub2)): Path<(String, String, String, String, String)>,
) -> ApiResult {
    require_mesh(&state, &mesh).await?;
    let t = kind(&segment)?;
    match (sub.as_str(), sub2.as_str()) {
        ("_resources", "dataplanes") if t.is_policy() => policy_dataplanes(&state, &mesh, t, &name).await,
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Not Found",
            format!("unknown endpoint {sub}/{sub2}"),
        )),
    }
}

async fn dataplane_with_mesh(
    state: &ApiState,
    mesh: &str,
    name: &str,
) -> Result<(Resource, MeshContext), ApiError> {
    let dp = state
        .store
        .get(&ResourceKey::new(ResourceType::Dataplane, mesh, name))
        .await
        .map_err(|e| ApiError::store("Could not retrieve a resource", e))?;
    let mesh_resource = state
        .store
        .get(&ResourceKey::new(ResourceType::Mesh, "", mesh))
        .await
        .map_err(|e| ApiError::store("Failed to retrieve Mesh", e))?;
    let Spec::Mesh(spec) = &mesh_resource.spec else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "not a mesh",
        ));
    };
    let resources = mesh_resources(state, mesh).await?;
    Ok((dp, MeshContext::build(mesh, spec, &resources)))
}

/// The dataplane's Envoy configuration by type: for a connected proxy
/// exactly what it was sent (the snapshot), otherwise what it would get.
/// Private keys are never shown.
async fn sent_config(state: &ApiState, mesh: &str, name: &str) -> Result<Vec<Sent>, ApiError> {
    if let Some(snapshot) = state.snapshots.get(&node_id(mesh, name)) {
        return Ok(XdsType::ALL
            .into_iter()
            .map(|t| {
                let typed = snapshot.get(t);
                Sent {
                    xds_type: t,
                    resources: typed
                        .resources
                        .iter()
                        .map(|(resource_name, r)| {
                            let json = kuma_xds::proto::bytes_to_json(t.message_name(), r.encoded.bytes())
                                .unwrap_or(Value::Null);
                            (resource_name.to_string(), redact_private_keys(json))
                        })
                        .collect(),
                }
            })
            .collect());
    }
    let (dp, context) = dataplane_with_mesh(state, mesh, name).await?;
    let Spec::Dataplane(spec) = &dp.spec else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Not Found", ""));
    };
    let proxy = Proxy::new(&dp, ProxyMetadata::for_dataplane(spec))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Not Found", "not a dataplane"))?;
    let resources = generate(&proxy, &context);
    let mut by_type: BTreeMap<XdsType, Vec<(String, Value)>> = BTreeMap::new();
    for g in resources.iter() {
        by_type.entry(g.resource().xds_type()).or_default().push((
            g.resource().name().to_string(),
            redact_private_keys(g.resource().to_json()),
        ));
    }
    Ok(by_type
        .into_iter()
        .map(|(xds_type, resources)| Sent { xds_type, resources })
        .collect())
}

/// The Envoy configuration of the dataplane, as Kuma's `_config`:
/// `{"xds": {<type URL>: {<name>: <resource>}}}`.
async fn dataplane_config(state: &ApiState, mesh: &str, name: &str) -> ApiResult {
    let mut xds: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for sent in sent_config(state, mesh, name).await? {
        let entry = xds.entry(sent.xds_type.type_url().to_string()).or_default();
        for (resource_name, json) in sent.resources {
            entry.insert(resource_name, json);
        }
    }
    xds.retain(|_, m| !m.is_empty());
    Ok(json_response(StatusCode::OK, &json!({ "xds": xds })))
}

/// Replaces every private key in an Envoy resource.
fn redact_private_keys(mut json: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if k == "privateKey" || k == "private_key" {
                        *child = json!({"inlineString": "[redacted]"});
                    } else {
                        walk(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut json);
    json
}

/// The services (with their outbound tags) a dataplane sends to: its
/// outbounds, and with transparent proxying every service of the mesh.
fn destinations_of(dp: &Resource, context: &MeshContext) -> BTreeMap<String, BTreeMap<String, String>> {
    let Spec::Dataplane(spec) = &dp.spec else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for o in spec.outbounds() {
        if let Some(service) = o
            .tags
            .as_ref()
            .and_then(|t| t.get(kuma_crds::dataplane::SERVICE_TAG))
        {
            out.insert(service.clone(), o.tags.clone().unwrap_or_default());
        }
    }
    let transparent = spec
        .networking
        .as_ref()
        .is_some_and(|n| n.transparent_proxying.is_some());
    if transparent {
        for service in context.services.keys() {
            out.entry(service.clone()).or_insert_with(|| {
                BTreeMap::from([(kuma_crds::dataplane::SERVICE_TAG.to_string(), service.clone())])
            });
        }
    }
    out
}

/// Which policies select the dataplane and what they merge to, per type:
/// the proxy-wide conf, the `to` rules and their result per outbound, and
/// the result per inbound.
async fn dataplane_policies(state: &ApiState, mesh: &str, name: &str) -> ApiResult {
    let (dp, context) = dataplane_with_mesh(state, mesh, name).await?;
    let destinations = destinations_of(&dp, &context);
    let mut policies = Vec::new();
    for t in ResourceType::policies() {
        let matched = context
            .policy_index
            .match_policies(t, &dp, MatchOptions::default());
        if matched.is_empty() {
            continue;
        }
        let origins: Vec<Value> = matched
            .policies
            .iter()
            .map(|p| json!({"kri": crate::labels::kri(&p.resource), "name": p.name()}))
            .collect();
        let mut entry = serde_json::Map::new();
        entry.insert("kind".into(), t.name().into());
        entry.insert("origins".into(), origins.into());
        if let Some(single) = &matched.single {
            entry.insert("conf".into(), single.value.clone());
        }
        let to: Vec<Value> = matched
            .to
            .entries
            .iter()
            .map(|e| json!({"targetRef": e.target, "conf": e.conf, "origin": e.source.name}))
            .collect();
        if !to.is_empty() {
            entry.insert("to".into(), to.into());
            // What the rules come to for each destination the proxy reaches.
            let outbounds: Vec<Value> = destinations
                .iter()
                .filter_map(|(service, tags)| {
                    let merged = matched
                        .to
                        .conf(&kuma_crds::matching::Destination::service(service).with_tags(tags))?;
                    let origins: Vec<&str> = merged.sources.iter().map(|s| s.name.as_str()).collect();
                    Some(json!({"service": service, "tags": tags, "conf": merged.value, "origins": origins}))
                })
                .collect();
            if !outbounds.is_empty() {
                entry.insert("outbounds".into(), outbounds.into());
            }
        }
        let inbounds: Vec<Value> = matched
            .inbounds
            .iter()
            .map(|(i, rules)| {
                let port = match &dp.spec {
                    Spec::Dataplane(d) => d.inbounds().get(*i).map(|x| x.port).unwrap_or_default(),
                    _ => 0,
                };
                json!({"port": port, "conf": rules.catch_all.as_ref().map(|m| m.value.clone())})
            })
            .collect();
        if !inbounds.is_empty() {
            entry.insert("inbounds".into(), inbounds.into());
        }
        if !matched.warnings.is_empty() {
            entry.insert("warnings".into(), json!(matched.warnings));
        }
        policies.push(Value::Object(entry));
    }
    Ok(json_response(StatusCode::OK, &json!({ "policies": policies })))
}

/// Kuma's deprecated `GET .../dataplanes/{name}/policies` (still called by
/// Kuma's GUI): the policies whose top-level target selects the proxy, by
/// type, under one `dataplane` attachment, each as its resource meta.
async fn dataplane_policies_legacy(state: &ApiState, mesh: &str, name: &str) -> ApiResult {
    let (dp, context) = dataplane_with_mesh(state, mesh, name).await?;
    let mut matched_policies = serde_json::Map::new();
    for t in ResourceType::policies() {
        let matched = context
            .policy_index
            .match_policies(t, &dp, MatchOptions::default());
        let metas: Vec<Value> = matched
            .policies
            .iter()
            .map(|p| {
                let full = resource_json(&p.resource);
                let mut meta = serde_json::Map::new();
                for key in [
                    "type",
                    "mesh",
                    "name",
                    "creationTime",
                    "modificationTime",
                    "labels",
                    "kri",
                ] {
                    if let Some(v) = full.get(key) {
                        meta.insert(key.into(), v.clone());
                    }
                }
                Value::Object(meta)
            })
            .collect();
        if !metas.is_empty() {
            matched_policies.insert(t.name().into(), metas.into());
        }
    }
    let items: Vec<Value> = if matched_policies.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "dataplane", "matchedPolicies": matched_policies})]
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "SidecarDataplane", "total": items.len(), "items": items}),
    ))
}

/// The dataplanes a policy's top-level target selects.
async fn policy_dataplanes(state: &ApiState, mesh: &str, t: ResourceType, name: &str) -> ApiResult {
    let policy = state
        .store
        .get(&ResourceKey::new(t, mesh, name))
        .await
        .map_err(|e| ApiError::store("Could not retrieve policy", e))?;
    let Some(view) = PolicyView::of(&policy.spec) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            format!("{t} is not a policy"),
        ));
    };
    let routes: Vec<Resource> = state
        .store
        .list(ResourceType::MeshHTTPRoute, Some(mesh))
        .await
        .map_err(|e| ApiError::store("Could not retrieve resources", e))?;
    let route_refs: Vec<&Resource> = routes.iter().collect();
    let mut items = Vec::new();
    for dp in state
        .store
        .list(ResourceType::Dataplane, Some(mesh))
        .await
        .map_err(|e| ApiError::store("Could not retrieve resources", e))?
    {
        let Spec::Dataplane(spec) = &dp.spec else { continue };
        if matches!(select(&policy, &view.top, &dp, spec, &route_refs), Ok(Some(_))) {
            items.push(json!({
                "labels": dp.meta.labels,
                "mesh": mesh,
                "name": dp.meta.core_name(),
                "type": "Dataplane",
            }));
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "total": items.len()}),
    ))
}

/// `POST /tokens/dataplane` (admin only): the token as plain text.
pub async fn dataplane_token(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult {
    caller.require(
        &state.config.access.static_lists.generate_dp_token,
        "generate dataplane token",
    )?;
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct TokenRequest {
        name: String,
        mesh: String,
        tags: BTreeMap<String, Vec<String>>,
        #[serde(rename = "type")]
        proxy_type: String,
        valid_for: String,
    }
    let request: TokenRequest = token_request(&body)?;
    if request.mesh.is_empty() {
        return Err(ApiError::fields(
            "Invalid request",
            vec![("mesh".into(), "cannot be empty".into())],
        ));
    }
    let valid_for = if request.valid_for.is_empty() {
        None
    } else {
        Some(humantime::parse_duration(&request.valid_for).map_err(|e| {
            ApiError::fields(
                "Invalid request",
                vec![("validFor".into(), format!("is invalid: {e}"))],
            )
        })?)
    };
    require_mesh(&state, &request.mesh).await?;
    let token = state
        .tokens
        .issue(
            &request.mesh,
            &request.name,
            request.tags,
            &request.proxy_type,
            valid_for,
        )
        .await;
    token_response(token)
}

/// An issued token as Kuma answers it (plain text), or why it was not.
fn token_response(token: Result<String, crate::tokens::TokenError>) -> ApiResult {
    let token = token.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not issue a token",
            e.to_string(),
        )
    })?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], token).into_response())
}

/// The JSON body of a token request.
fn token_request<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            format!("invalid token request: {e}"),
        )
    })
}

/// `POST /tokens/user` `{name, groups, validFor}`: a user token (admins
/// only), as text.
pub async fn user_token(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult {
    caller.require(
        &state.config.access.static_lists.generate_user_token,
        "generate user token",
    )?;
    if !state.config.api_server.authn.tokens.enable_issuer {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Could not issue a token",
            "issuing tokens using the control plane is disabled (apiServer.authn.tokens.enableIssuer)",
        ));
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct TokenRequest {
        name: String,
        groups: Vec<String>,
        valid_for: String,
    }
    let request: TokenRequest = token_request(&body)?;
    let mut violations = Vec::new();
    if request.name.is_empty() {
        violations.push(("name".to_string(), "cannot be empty".to_string()));
    }
    let valid_for = match humantime::parse_duration(&request.valid_for) {
        _ if request.valid_for.is_empty() => {
            violations.push(("validFor".into(), "cannot be empty".into()));
            None
        }
        Ok(d) if d.is_zero() => {
            violations.push(("validFor".into(), "cannot be empty or nil".into()));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            violations.push(("validFor".into(), format!("is invalid: {e}")));
            None
        }
    };
    let Some(valid_for) = valid_for.filter(|_| violations.is_empty()) else {
        return Err(ApiError::fields("Invalid request", violations));
    };
    let token = state
        .tokens
        .issue_user(&request.name, &request.groups, valid_for)
        .await;
    token_response(token)
}
