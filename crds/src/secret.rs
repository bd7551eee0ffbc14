//! Secrets: `Secret` (in a mesh: CA keys of `provided` mTLS backends, token
//! signing keys) and `GlobalSecret`. Universal form:
//! `type: Secret, mesh, name, data: <base64>`. On Kubernetes they are
//! `v1` Secrets of type `system.kuma.io/secret` / `system.kuma.io/global-secret`
//! holding the bytes under `data.value`.

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{FieldPath, Violations};

/// The Kubernetes Secret type of mesh secrets.
pub const K8S_SECRET_TYPE: &str = "system.kuma.io/secret";
/// The Kubernetes Secret type of global secrets.
pub const K8S_GLOBAL_SECRET_TYPE: &str = "system.kuma.io/global-secret";

/// The spec of a Secret or GlobalSecret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    /// The secret bytes, base64-encoded.
    #[serde(default)]
    pub data: String,
}

impl SecretSpec {
    /// A secret holding `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        SecretSpec {
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The decoded bytes (empty when not base64, which validation refuses).
    pub fn bytes(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .unwrap_or_default()
    }

    /// Checks that `data` is present and base64.
    pub fn validate(&self, root: &FieldPath, v: &mut Violations) {
        let path = root.field("data");
        if self.data.is_empty() {
            v.add(&path, "cannot be empty");
        } else if base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .is_err()
        {
            v.add(&path, "must be base64-encoded");
        }
    }
}
