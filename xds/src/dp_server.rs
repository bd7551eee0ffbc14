//! The dp-server: one port (5678 in Kuma) serving both the ADS gRPC
//! service and kuma-dp's `POST /bootstrap`, told apart by route.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::bootstrap::{BootstrapParams, BootstrapRequest, response};
use crate::server::{AdsServer, Limits};

/// Why a bootstrap request was refused.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The request is malformed (missing mesh or name, invalid Dataplane).
    #[error("{0}")]
    Invalid(String),
    /// The token is missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// The Dataplane does not exist (yet); kuma-dp retries on this.
    #[error("{0}")]
    NotFound(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for BootstrapError {
    fn into_response(self) -> Response {
        let status = match &self {
            BootstrapError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            BootstrapError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            BootstrapError::NotFound(_) => StatusCode::NOT_FOUND,
            BootstrapError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, self.to_string()).into_response()
    }
}

/// How the control plane answers a bootstrap request: it finds (or, in
/// universal mode, registers) the Dataplane and checks the token.
pub trait BootstrapSource: Send + Sync + 'static {
    /// The parameters of the bootstrap for `request`; `host` is the host
    /// kuma-dp dialled (from the `Host` header).
    fn resolve(
        &self,
        request: &BootstrapRequest,
        host: &str,
    ) -> impl Future<Output = Result<BootstrapParams, BootstrapError>> + Send;
}

/// The dp-server routes: the ADS service plus `POST /bootstrap`.
pub fn router<S: BootstrapSource>(ads: AdsServer, limits: &Limits, source: Arc<S>) -> axum::Router {
    let grpc = tonic::service::Routes::new(ads.into_service(limits)).into_axum_router();
    let http = axum::Router::new()
        .route("/bootstrap", post(bootstrap::<S>))
        .with_state(source);
    grpc.merge(http)
}

async fn bootstrap<S: BootstrapSource>(
    State(source): State<Arc<S>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<crate::bootstrap::BootstrapResponse>, BootstrapError> {
    let request: BootstrapRequest = serde_json::from_slice(&body)
        .map_err(|e| BootstrapError::Invalid(format!("invalid bootstrap request: {e}")))?;
    if request.mesh.is_empty() {
        return Err(BootstrapError::Invalid("mesh: must not be empty".into()));
    }
    if request.name.is_empty() {
        return Err(BootstrapError::Invalid("name: must not be empty".into()));
    }
    // HTTP/1.1 names the host in `Host`, HTTP/2 in `:authority`.
    let host = crate::bootstrap::xds_host(
        headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok()),
        uri.host(),
    );
    let params = source.resolve(&request, &host).await?;
    Ok(Json(response(&request, &params)))
}
