//! `GET /mesh-insights[/{mesh}]` and `GET /meshes/{mesh}/service-insights[/{name}]`:
//! Kuma's MeshInsight and ServiceInsights, computed on request from the
//! store and the live proxy insights (the computation
//! is `kuma_crds::mesh_insight`; this file only gathers its input).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kuma_crds::insight::DataplaneInsightSpec;
use kuma_crds::mesh_insight::{DataplaneState, counted, mesh_insight, service_insights};
use kuma_crds::resource::{Resource, ResourceType, Spec};
use serde_json::Value;

use super::resources::{page, page_named};
use super::{ApiError, ApiState, json_response};
use crate::store::ResourceKey;

type ApiResult = Result<Response, ApiError>;

/// A mesh's dataplanes, each with its insight (stored and live, merged).
async fn dataplanes_of(
    state: &ApiState,
    mesh: &str,
) -> Result<(Vec<Resource>, Vec<Option<DataplaneInsightSpec>>), ApiError> {
    let failed = |e| ApiError::store("Could not retrieve resources", e);
    let dataplanes = state
        .store
        .list(ResourceType::Dataplane, Some(mesh))
        .await
        .map_err(failed)?;
    let stored: BTreeMap<String, Resource> = state
        .store
        .list(ResourceType::DataplaneInsight, Some(mesh))
        .await
        .map_err(failed)?
        .into_iter()
        .map(|r| (r.meta.core_name(), r))
        .collect();
    let insights = dataplanes
        .iter()
        .map(|dp| {
            let core = dp.meta.core_name();
            let stored = stored.get(&core).and_then(crate::insights::insight_spec).cloned();
            state.insights.merged(&format!("{mesh}.{core}"), stored)
        })
        .collect();
    Ok((dataplanes, insights))
}

fn states<'a>(
    dataplanes: &'a [Resource],
    insights: &'a [Option<DataplaneInsightSpec>],
) -> Vec<DataplaneState<'a>> {
    dataplanes
        .iter()
        .zip(insights)
        .filter_map(|(dp, insight)| match &dp.spec {
            Spec::Dataplane(spec) => Some(DataplaneState {
                spec,
                insight: insight.as_ref(),
            }),
            _ => None,
        })
        .collect()
}

async fn insight_of(state: &ApiState, mesh: &Resource) -> Result<Value, ApiError> {
    let name = mesh.meta.name.as_str();
    let mut counts = BTreeMap::new();
    for t in ResourceType::ALL.iter().copied().filter(|t| counted(*t)) {
        let listed = state
            .store
            .list(t, Some(name))
            .await
            .map_err(|e| ApiError::store("Could not retrieve resources", e))?;
        counts.insert(t, listed.len());
    }
    let (dataplanes, insights) = dataplanes_of(state, name).await?;
    Ok(mesh_insight(mesh, &states(&dataplanes, &insights), &counts))
}

/// `GET /mesh-insights`, paged and filtered as every list.
pub async fn list(State(s): State<Arc<ApiState>>, RawQuery(q): RawQuery, headers: HeaderMap) -> ApiResult {
    let meshes = s
        .store
        .list(ResourceType::Mesh, None)
        .await
        .map_err(|e| ApiError::store("Could not retrieve resources", e))?;
    let mut by_mesh = BTreeMap::new();
    for mesh in &meshes {
        by_mesh.insert(mesh.meta.name.clone(), insight_of(&s, mesh).await?);
    }
    let show = |m: &Resource| by_mesh.get(&m.meta.name).cloned().unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &page(&meshes, show, q, &headers, "/mesh-insights")?,
    ))
}

/// `GET /mesh-insights/{mesh}`.
pub async fn one(State(s): State<Arc<ApiState>>, Path(mesh): Path<String>) -> ApiResult {
    let mesh = s
        .store
        .get(&ResourceKey::new(ResourceType::Mesh, "", &mesh))
        .await
        .map_err(|e| ApiError::store("Could not retrieve a resource", e))?;
    Ok(json_response(StatusCode::OK, &insight_of(&s, &mesh).await?))
}

/// `GET /meshes/{mesh}/service-insights`: one item per service, filtered
/// by `name` and paged.
pub async fn list_services(
    State(s): State<Arc<ApiState>>,
    Path(mesh): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    super::resources::require_mesh(&s, &mesh).await?;
    let (dataplanes, insights) = dataplanes_of(&s, &mesh).await?;
    let items = service_insights(&mesh, &states(&dataplanes, &insights));
    Ok(json_response(
        StatusCode::OK,
        &page_named(
            items.into_iter().collect(),
            q,
            &headers,
            &format!("/meshes/{mesh}/service-insights"),
        )?,
    ))
}

/// `GET /meshes/{mesh}/service-insights/{name}`: a service nobody provides
/// has empty counts, as in Kuma.
pub async fn one_service(
    State(s): State<Arc<ApiState>>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult {
    super::resources::require_mesh(&s, &mesh).await?;
    let (dataplanes, insights) = dataplanes_of(&s, &mesh).await?;
    let mut items = service_insights(&mesh, &states(&dataplanes, &insights));
    let item = items.remove(&name).unwrap_or_else(|| {
        serde_json::json!({
            "type": "ServiceInsight", "mesh": mesh, "name": name,
            "dataplanes": {}, "addressPort": format!("{name}.mesh:80")
        })
    });
    Ok(json_response(StatusCode::OK, &item))
}
