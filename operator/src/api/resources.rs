//! CRUD of resources: `/meshes`, `/meshes/{mesh}/{kind}[/{name}]`,
//! `/{kind}[/{name}]` for global kinds and lists across meshes.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kuma_crds::admission::{Environment, Operation, admit};
use kuma_crds::format::{FieldValidation, parse_value_with, to_universal};
use kuma_crds::resource::{Resource, ResourceType, Scope};
use serde_json::{Value, json};

use super::{ApiError, ApiState, Caller, json_response};
use crate::store::{ResourceKey, StoreError};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The JSON of a resource as Kuma's API returns it (`kri` after `labels`).
pub fn resource_json(r: &Resource) -> Value {
    let Value::Object(universal) = to_universal(r) else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    let kri = crate::labels::kri(r);
    let mut kri_done = false;
    for (k, v) in universal {
        let after_meta = !matches!(
            k.as_str(),
            "type" | "mesh" | "name" | "creationTime" | "modificationTime" | "labels"
        );
        if after_meta && !kri_done {
            if let Some(kri) = &kri {
                out.insert("kri".into(), kri.clone().into());
            }
            kri_done = true;
        }
        out.insert(k, v);
    }
    if !kri_done && let Some(kri) = kri {
        out.insert("kri".into(), kri.into());
    }
    Value::Object(out)
}

/// The kind of a URL segment (Kuma's plural path names).
pub fn kind(segment: &str) -> Result<ResourceType, ApiError> {
    ResourceType::ALL
        .iter()
        .copied()
        .find(|t| t.descriptor().plural == segment)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "Not Found",
                format!("unknown resource type {segment:?}"),
            )
        })
}

/// Refuses Secrets and GlobalSecrets to callers `access.static.adminResources`
/// does not list.
pub fn check_access(state: &ApiState, t: ResourceType, caller: &Caller) -> Result<(), ApiError> {
    if matches!(t, ResourceType::Secret | ResourceType::GlobalSecret) {
        caller.require(
            &state.config.access.static_lists.admin_resources,
            &format!("the resource of type \"{t}\""),
        )?;
    }
    Ok(())
}

/// Refuses writes to kinds only control planes write (insights).
pub fn check_writable(t: ResourceType) -> Result<(), ApiError> {
    if t.is_read_only() {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            format!("{t} is read-only: control planes write it"),
        ));
    }
    Ok(())
}

/// 404 unless the mesh exists.
pub async fn require_mesh(state: &ApiState, mesh: &str) -> Result<(), ApiError> {
    state
        .store
        .get(&ResourceKey::new(ResourceType::Mesh, "", mesh))
        .await
        .map(|_| ())
        .map_err(|e| ApiError::store("Failed to retrieve Mesh", e))
}

/// Parsed list query: paging and filters.
struct ListQuery {
    pairs: Vec<(String, String)>,
    size: usize,
    offset: usize,
}

fn list_query(raw: Option<String>) -> Result<ListQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "Bad Request", e.to_string()))?;
    let get = |k: &str| pairs.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
    let size = match get("size") {
        None => DEFAULT_PAGE,
        Some(s) => {
            let bad = |reason: String| ApiError {
                status: StatusCode::BAD_REQUEST,
                title: "Could not retrieve resources".into(),
                detail: "Invalid page size".into(),
                params: vec![("size".into(), reason)],
            };
            let n: i64 = s.parse().map_err(|_| bad("invalid format".into()))?;
            if n <= 0 {
                return Err(bad("must be greater than 0".into()));
            }
            if n as usize > MAX_PAGE {
                return Err(bad(format!(
                    "invalid page size of {n}. Maximum page size is {MAX_PAGE}"
                )));
            }
            n as usize
        }
    };
    let offset = match get("offset") {
        None => 0,
        Some(o) => o.parse().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "Could not retrieve resources",
                format!("invalid: invalid offset: strconv.Atoi: parsing {o:?}: {e}"),
            )
        })?,
    };
    Ok(ListQuery { pairs, size, offset })
}

fn matches_filters(r: &Resource, q: &ListQuery) -> Result<bool, ApiError> {
    for (k, v) in &q.pairs {
        if k == "name" {
            if !r.meta.core_name().contains(v.as_str()) {
                return Ok(false);
            }
        } else if let Some(label) = k.strip_prefix("filter[labels.").and_then(|s| s.strip_suffix(']')) {
            if r.meta.labels.get(label) != Some(v) {
                return Ok(false);
            }
        } else if k.starts_with("filter[") {
            return Err(ApiError::fields(
                "Could not retrieve resources",
                vec![(k.clone(), "filters are only supported on labels".into())],
            ));
        } else if k == "tag" {
            let (tk, tv) = v.split_once(':').unwrap_or((v.as_str(), ""));
            let kuma_crds::resource::Spec::Dataplane(dp) = &r.spec else {
                continue;
            };
            let found = dp
                .inbounds()
                .iter()
                .filter_map(|i| i.tags.as_ref())
                .any(|tags| tags.get(tk).is_some_and(|x| tv.is_empty() || x == tv));
            if !found {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A page of items and Kuma's `{total, items, next}`.
/// The page of `resources` the query asks for (its `name`, label and
/// `tag` filters, then `offset` and `size`), each shown by `show`.
pub fn page(
    resources: &[Resource],
    show: impl Fn(&Resource) -> Value,
    q_raw: Option<String>,
    headers: &HeaderMap,
    path: &str,
) -> Result<Value, ApiError> {
    let q = list_query(q_raw)?;
    let mut items = Vec::new();
    for r in resources {
        if matches_filters(r, &q)? {
            items.push(show(r));
        }
    }
    Ok(paged(items, &q, headers, path))
}

/// [`page`] for items that are not stored resources, by name: filtered by
/// `name` (a substring, as every list) and paged.
pub fn page_named(
    items: Vec<(String, Value)>,
    q_raw: Option<String>,
    headers: &HeaderMap,
    path: &str,
) -> Result<Value, ApiError> {
    let q = list_query(q_raw)?;
    let filter = q.pairs.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone());
    let items = items
        .into_iter()
        .filter(|(name, _)| filter.as_ref().is_none_or(|f| name.contains(f.as_str())))
        .map(|(_, v)| v)
        .collect();
    Ok(paged(items, &q, headers, path))
}

fn paged(items: Vec<Value>, q: &ListQuery, headers: &HeaderMap, path: &str) -> Value {
    let total = items.len();
    let items: Vec<Value> = items.into_iter().skip(q.offset).take(q.size).collect();
    let next = if q.offset + q.size < total {
        let mut pairs: Vec<(String, String)> = q
            .pairs
            .iter()
            .filter(|(k, _)| k != "offset" && k != "size")
            .cloned()
            .collect();
        pairs.push(("offset".into(), (q.offset + q.size).to_string()));
        pairs.push(("size".into(), q.size.to_string()));
        pairs.sort();
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        Value::String(format!("http://{host}{path}?{query}"))
    } else {
        Value::Null
    };
    json!({"total": total, "items": items, "next": next})
}

async fn list(
    state: &ApiState,
    t: ResourceType,
    mesh: Option<&str>,
    raw: Option<String>,
    headers: &HeaderMap,
    path: &str,
) -> Result<Response, ApiError> {
    let resources = state
        .store
        .list(t, mesh)
        .await
        .map_err(|e| ApiError::store("Could not retrieve resources", e))?;
    let body = page(&resources, resource_json, raw, headers, path)?;
    Ok(json_response(StatusCode::OK, &body))
}

async fn get_one(state: &ApiState, key: ResourceKey) -> Result<Response, ApiError> {
    let r = state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::store("Could not retrieve a resource", e))?;
    Ok(json_response(StatusCode::OK, &resource_json(&r)))
}

/// Kuma's answer to writes on Kubernetes, where resources are objects of
/// the cluster, changed with kubectl.
const KUBERNETES_READ_ONLY: &str = "On Kubernetes you cannot change the state of Kuma resources with 'kumactl apply' or via the HTTP API. As a best practice, you should always be using 'kubectl apply' instead. You can still use 'kumactl' or the HTTP API to make read-only operations. On Universal this limitation does not apply.\n";

/// 405 (as Kuma, in plain text) when the API may not write resources.
fn check_api_writes(state: &ApiState) -> Result<(), Box<Response>> {
    use axum::response::IntoResponse;
    if state.admission.environment == Environment::Kubernetes {
        return Err(Box::new(
            (StatusCode::METHOD_NOT_ALLOWED, KUBERNETES_READ_ONLY).into_response(),
        ));
    }
    Ok(())
}

fn violations(title: &str, v: Vec<kuma_crds::validation::Violation>) -> ApiError {
    ApiError::fields(title, v.into_iter().map(|v| (v.field, v.message)).collect())
}

/// `PUT`: create or replace, with Kuma's checks and the admission module's
/// computed labels and rules.
async fn put(
    state: &ApiState,
    t: ResourceType,
    mesh: Option<&str>,
    name: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let title = "Could not process a resource";
    let mode = field_validation(query)?;
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            format!("invalid {t} object: {e}"),
        )
    })?;
    let parsed = parse_value_with(value, mode).map_err(|e| ApiError::invalid(title, &e))?;
    let resource = parsed.resource;
    let mut mismatches = Vec::new();
    if resource.meta.core_name() != name {
        mismatches.push((
            "name".to_string(),
            "name from the URL has to be the same as in body".to_string(),
        ));
    }
    if resource.resource_type() != t {
        mismatches.push((
            "type".to_string(),
            "type from the URL has to be the same as in body".to_string(),
        ));
    }
    if t.descriptor().scope == Scope::Mesh && resource.meta.mesh.as_deref() != mesh {
        mismatches.push((
            "mesh".to_string(),
            "mesh from the URL has to be the same as in body".to_string(),
        ));
    }
    if !mismatches.is_empty() {
        return Err(ApiError::fields(title, mismatches));
    }
    let key = ResourceKey::of(&resource);
    match state.store.get(&key).await {
        Ok(current) => {
            let update = Operation::Update {
                old: &current,
                new: &resource,
            };
            let Some(mut stored) = admit(&state.admission, update).map_err(|v| violations(title, v))? else {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    title,
                    "nothing to store",
                ));
            };
            stored.meta.version = current.meta.version.clone();
            stored.meta.annotations = current.meta.annotations.clone();
            state
                .store
                .update(stored)
                .await
                .map_err(|e| ApiError::store("Could not update a resource", e))?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &json!({})),
                &parsed.warnings,
            ))
        }
        Err(StoreError::NotFound(_)) => {
            let Some(stored) =
                admit(&state.admission, Operation::Create(&resource)).map_err(|v| violations(title, v))?
            else {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    title,
                    "nothing to store",
                ));
            };
            state
                .store
                .create(stored)
                .await
                .map_err(|e| ApiError::store("Failed to create a resource", e))?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &json!({})),
                &parsed.warnings,
            ))
        }
        Err(e) => Err(ApiError::store(title, e)),
    }
}

/// `?fieldValidation=Strict|Warn` (Kubernetes' parameter); Warn when absent,
/// as the Kubernetes API server does, so documents written for Kuma, which
/// drops fields it does not know, still apply.
fn field_validation(query: Option<&str>) -> Result<FieldValidation, ApiError> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "fieldValidation")
        .map(|(_, v)| v);
    match value {
        None => Ok(FieldValidation::Warn),
        Some(v) => v.parse().map_err(|e: String| {
            ApiError::fields(
                "Could not process a resource",
                vec![("fieldValidation".to_string(), e)],
            )
        }),
    }
}

/// One `Warning` header per dropped field, in Kubernetes' form
/// (`299 - "text"`), which kubectl and our kumactl print.
fn with_warnings(mut response: Response, warnings: &[kuma_crds::validation::Violation]) -> Response {
    for w in warnings {
        let text = format!("{w}").replace('"', "'");
        if let Ok(value) = axum::http::HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            response.headers_mut().append(axum::http::header::WARNING, value);
        }
    }
    response
}

async fn delete(state: &ApiState, key: ResourceKey) -> Result<Response, ApiError> {
    let title = "Could not delete a resource";
    let current = state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::store(title, e))?;
    let dataplanes_in_mesh = if key.resource_type == ResourceType::Mesh {
        state
            .store
            .list(ResourceType::Dataplane, Some(&key.name))
            .await
            .map_err(|e| ApiError::store(title, e))?
            .len()
    } else {
        0
    };
    admit(
        &state.admission,
        Operation::Delete {
            old: &current,
            dataplanes_in_mesh,
        },
    )
    .map_err(|v| violations(title, v))?;
    state
        .store
        .delete(&key)
        .await
        .map_err(|e| ApiError::store(title, e))?;
    Ok(json_response(StatusCode::OK, &json!({})))
}

type ApiResult = Result<Response, ApiError>;

/// `GET /meshes`.
pub async fn list_meshes(
    State(s): State<Arc<ApiState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    list(&s, ResourceType::Mesh, None, q, &headers, "/meshes").await
}

/// `GET /meshes/{mesh}`.
pub async fn get_mesh(State(s): State<Arc<ApiState>>, Path(mesh): Path<String>) -> ApiResult {
    get_one(&s, ResourceKey::new(ResourceType::Mesh, "", &mesh)).await
}

/// `PUT /meshes/{mesh}`.
pub async fn put_mesh(
    State(s): State<Arc<ApiState>>,
    Path(mesh): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> ApiResult {
    if let Err(refused) = check_api_writes(&s) {
        return Ok(*refused);
    }
    put(&s, ResourceType::Mesh, None, &mesh, q.as_deref(), &body).await
}

/// `DELETE /meshes/{mesh}` (with everything in it).
pub async fn delete_mesh(State(s): State<Arc<ApiState>>, Path(mesh): Path<String>) -> ApiResult {
    if let Err(refused) = check_api_writes(&s) {
        return Ok(*refused);
    }
    delete(&s, ResourceKey::new(ResourceType::Mesh, "", &mesh)).await
}

/// `GET /meshes/{mesh}/{kind}`.
pub async fn list_in_mesh(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((mesh, segment)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    require_mesh(&s, &mesh).await?;
    if segment == "dataplanes+insights" {
        return super::inspect::overview_list(&s, &mesh, q, &headers, &format!("/meshes/{mesh}/{segment}"))
            .await;
    }
    let t = kind(&segment)?;
    check_access(&s, t, &caller)?;
    list(
        &s,
        t,
        Some(&mesh),
        q,
        &headers,
        &format!("/meshes/{mesh}/{segment}"),
    )
    .await
}

/// `GET /meshes/{mesh}/{kind}/{name}`.
pub async fn get_in_mesh(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((mesh, segment, name)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    require_mesh(&s, &mesh).await?;
    if segment == "dataplanes+insights" {
        return super::inspect::overview_one(&s, &mesh, &name).await;
    }
    if segment == "dataplanes" && name == "_overview" {
        return super::inspect::overview_list(
            &s,
            &mesh,
            q,
            &headers,
            &format!("/meshes/{mesh}/dataplanes/_overview"),
        )
        .await;
    }
    let t = kind(&segment)?;
    check_access(&s, t, &caller)?;
    get_one(&s, ResourceKey::new(t, &mesh, &name)).await
}

/// `PUT /meshes/{mesh}/{kind}/{name}`.
pub async fn put_in_mesh(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((mesh, segment, name)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> ApiResult {
    require_mesh(&s, &mesh).await?;
    let t = kind(&segment)?;
    check_access(&s, t, &caller)?;
    check_writable(t)?;
    if let Err(refused) = check_api_writes(&s) {
        return Ok(*refused);
    }
    put(&s, t, Some(&mesh), &name, q.as_deref(), &body).await
}

/// `DELETE /meshes/{mesh}/{kind}/{name}`.
pub async fn delete_in_mesh(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((mesh, segment, name)): Path<(String, String, String)>,
) -> ApiResult {
    require_mesh(&s, &mesh).await?;
    let t = kind(&segment)?;
    check_access(&s, t, &caller)?;
    check_writable(t)?;
    if let Err(refused) = check_api_writes(&s) {
        return Ok(*refused);
    }
    delete(&s, ResourceKey::new(t, &mesh, &name)).await
}

/// `GET /{kind}`: a global kind, or a mesh-scoped kind across all meshes.
pub async fn list_all(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(segment): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let t = kind(&segment)?;
    check_access(&s, t, &caller)?;
    list(&s, t, None, q, &headers, &format!("/{segment}")).await
}

fn global_kind(segment: &str) -> Result<ResourceType, ApiError> {
    let t = kind(segment)?;
    if t.descriptor().scope != Scope::Global || t == ResourceType::Mesh {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Not Found",
            format!("{t} is not a global resource"),
        ));
    }
    Ok(t)
}

/// `GET /{kind}/{name}` of a global kind.
pub async fn get_global(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((segment, name)): Path<(String, String)>,
) -> ApiResult {
    let t = global_kind(&segment)?;
    check_access(&s, t, &caller)?;
    get_one(&s, ResourceKey::new(t, "", &name)).await
}

/// `PUT /{kind}/{name}` of a global kind.
pub async fn put_global(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((segment, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> ApiResult {
    let t = global_kind(&segment)?;
    check_access(&s, t, &caller)?;
    if let Err(refused) = check_api_writes(&s) {
        return Ok(*refused);
    }
    put(&s, t, None, &name, q.as_deref(), &body).await
}

/// `DELETE /{kind}/{name}` of a global kind.
pub async fn delete_global(
    State(s): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((segment, name)): Path<(String, String)>,
) -> ApiResult {
    let t = global_kind(&segment)?;
    check_access(&s, t, &caller)?;
    if let Err(refused) = check_api_writes(&s) {
        return Ok(*refused);
    }
    delete(&s, ResourceKey::new(t, "", &name)).await
}
