//! `GET /mesh-insights[/{mesh}]`: Kuma's MeshInsight of each mesh, computed
//! on request from the store and the live proxy insights (the computation
//! is `kuma_crds::mesh_insight`; this file only gathers its input).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kuma_crds::mesh_insight::{DataplaneState, counted, mesh_insight};
use kuma_crds::resource::{Resource, ResourceType, Spec};
use serde_json::Value;

use super::resources::page;
use super::{ApiError, ApiState, json_response};
use crate::store::ResourceKey;

type ApiResult = Result<Response, ApiError>;

async fn insight_of(state: &ApiState, mesh: &Resource) -> Result<Value, ApiError> {
    let name = mesh.meta.name.as_str();
    let failed = |e| ApiError::store("Could not retrieve resources", e);
    let mut counts = BTreeMap::new();
    for t in ResourceType::ALL.iter().copied().filter(|t| counted(*t)) {
        counts.insert(t, state.store.list(t, Some(name)).await.map_err(failed)?.len());
    }
    let dataplanes = state
        .store
        .list(ResourceType::Dataplane, Some(name))
        .await
        .map_err(failed)?;
    let stored: BTreeMap<String, Resource> = state
        .store
        .list(ResourceType::DataplaneInsight, Some(name))
        .await
        .map_err(failed)?
        .into_iter()
        .map(|r| (r.meta.core_name(), r))
        .collect();
    let insights: Vec<_> = dataplanes
        .iter()
        .map(|dp| {
            let core = dp.meta.core_name();
            let stored = stored.get(&core).and_then(crate::insights::insight_spec).cloned();
            state.insights.merged(&format!("{name}.{core}"), stored)
        })
        .collect();
    let states: Vec<DataplaneState<'_>> = dataplanes
        .iter()
        .zip(&insights)
        .filter_map(|(dp, insight)| match &dp.spec {
            Spec::Dataplane(spec) => Some(DataplaneState {
                spec,
                insight: insight.as_ref(),
            }),
            _ => None,
        })
        .collect();
    Ok(mesh_insight(mesh, &states, &counts))
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
