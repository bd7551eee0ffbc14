//! Kuma's REST error body: `type`, `status`, `title`, `detail`,
//! `invalid_parameters[{field, reason}]`, and the deprecated `details` and
//! `causes[{field, message}]` kept for older clients.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kuma_crds::validation::ValidationError;
use serde_json::{Value, json};

use crate::store::{ResourceKey, StoreError};

/// An API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Kuma's title, e.g. `Could not process a resource`.
    pub title: String,
    /// Kuma's detail, e.g. `Resource is not valid`.
    pub detail: String,
    /// `(field, reason)` pairs.
    pub params: Vec<(String, String)>,
}

impl ApiError {
    /// An error without parameters.
    pub fn new(status: StatusCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            title: title.into(),
            detail: detail.into(),
            params: Vec::new(),
        }
    }

    /// A 400 listing every violation of a resource.
    pub fn invalid(title: &str, e: &ValidationError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            title: title.into(),
            detail: "Resource is not valid".into(),
            params: e
                .violations()
                .iter()
                .map(|v| (v.field.clone(), v.message.clone()))
                .collect(),
        }
    }

    /// A 400 with field violations.
    pub fn fields(title: &str, params: Vec<(String, String)>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            title: title.into(),
            detail: "Resource is not valid".into(),
            params,
        }
    }

    /// The store's error under `title`.
    pub fn store(title: &str, e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, title, "Not found"),
            StoreError::AlreadyExists(key) | StoreError::Conflict { key, .. } => {
                ApiError::new(StatusCode::CONFLICT, "Conflict", conflict_detail(&key))
            }
            StoreError::MeshNotFound(mesh) => ApiError {
                status: StatusCode::BAD_REQUEST,
                title: title.into(),
                detail: "Mesh is not found".into(),
                params: vec![("mesh".into(), format!("mesh of name {mesh} is not found"))],
            },
            StoreError::Unavailable(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                title,
                format!("the store is unavailable: {m}"),
            ),
            StoreError::Refused(m) => ApiError::new(StatusCode::BAD_REQUEST, title, m),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = serde_json::Map::new();
        body.insert("type".into(), "/std-errors".into());
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("title".into(), self.title.clone().into());
        body.insert("detail".into(), self.detail.clone().into());
        if !self.params.is_empty() {
            body.insert(
                "invalid_parameters".into(),
                self.params
                    .iter()
                    .map(|(f, r)| json!({"field": f, "reason": r}))
                    .collect(),
            );
        }
        body.insert("details".into(), self.detail.clone().into());
        if !self.params.is_empty() {
            body.insert(
                "causes".into(),
                self.params
                    .iter()
                    .map(|(f, r)| json!({"field": f, "message": r}))
                    .collect(),
            );
        }
        Value::Object(body)
    }
}

fn conflict_detail(key: &ResourceKey) -> String {
    format!(
        "resource conflict: type=\"{}\" name=\"{}\" mesh=\"{}\"",
        key.resource_type, key.name, key.mesh
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        super::json_response(self.status, &self.body())
    }
}
