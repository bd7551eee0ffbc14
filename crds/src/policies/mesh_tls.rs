//! MeshTLS: TLS versions, ciphers and mTLS mode of inbound traffic.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    DefaultRule, PolicyContext, PolicySpec, TargetItem, has_items, items, spec_path, top_ref, validate_top,
};
use crate::common::{TargetRef, TargetRefKind, TargetRefKind::*, TargetRefRules};
use crate::resource::ResourceType;
use crate::validation::{FieldPath, Violations};

/// MeshTLS spec.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kuma.io",
    version = "v1alpha1",
    kind = "MeshTLS",
    plural = "meshtlses",
    shortname = "mtls",
    category = "kuma",
    namespaced,
    printcolumn = r#"{"name":"TargetRef Kind","type":"string","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"TargetRef Name","type":"string","jsonPath":".spec.targetRef.name"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTLSSpec {
    /// The proxies whose inbound TLS is configured; `{kind: Mesh}` when absent.
    pub target_ref: Option<TargetRef>,
    /// Settings per client (deprecated in favour of `rules`).
    pub from: Option<Vec<TargetItem<Conf>>>,
    /// Settings for all inbound traffic.
    pub rules: Option<Vec<DefaultRule<Conf>>>,
}

/// TLS versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum TlsVersion {
    /// Envoy's default.
    TLSAuto,
    /// TLS 1.0.
    TLS10,
    /// TLS 1.1.
    TLS11,
    /// TLS 1.2.
    TLS12,
    /// TLS 1.3.
    TLS13,
}

/// A range of TLS versions.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Version {
    /// The lowest version accepted.
    pub min: Option<TlsVersion>,
    /// The highest version accepted.
    pub max: Option<TlsVersion>,
}

impl Version {
    /// Checks that `min` is not above `max`.
    pub fn validate(&self, path: &FieldPath, v: &mut Violations) {
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min != TlsVersion::TLSAuto
            && max != TlsVersion::TLSAuto
            && min > max
        {
            v.add(&path.field("min"), "min version must be lower than max");
        }
    }
}

/// TLS cipher suites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsCipher {
    /// ECDHE-ECDSA-AES128-GCM-SHA256.
    #[serde(rename = "ECDHE-ECDSA-AES128-GCM-SHA256")]
    EcdheEcdsaAes128GcmSha256,
    /// ECDHE-ECDSA-AES256-GCM-SHA384.
    #[serde(rename = "ECDHE-ECDSA-AES256-GCM-SHA384")]
    EcdheEcdsaAes256GcmSha384,
    /// ECDHE-ECDSA-CHACHA20-POLY1305.
    #[serde(rename = "ECDHE-ECDSA-CHACHA20-POLY1305")]
    EcdheEcdsaChacha20Poly1305,
    /// ECDHE-RSA-AES128-GCM-SHA256.
    #[serde(rename = "ECDHE-RSA-AES128-GCM-SHA256")]
    EcdheRsaAes128GcmSha256,
    /// ECDHE-RSA-AES256-GCM-SHA384.
    #[serde(rename = "ECDHE-RSA-AES256-GCM-SHA384")]
    EcdheRsaAes256GcmSha384,
    /// ECDHE-RSA-CHACHA20-POLY1305.
    #[serde(rename = "ECDHE-RSA-CHACHA20-POLY1305")]
    EcdheRsaChacha20Poly1305,
}

impl TlsCipher {
    /// The OpenSSL-style name Envoy expects.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsCipher::EcdheEcdsaAes128GcmSha256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
            TlsCipher::EcdheEcdsaAes256GcmSha384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
            TlsCipher::EcdheEcdsaChacha20Poly1305 => "ECDHE-ECDSA-CHACHA20-POLY1305",
            TlsCipher::EcdheRsaAes128GcmSha256 => "ECDHE-RSA-AES128-GCM-SHA256",
            TlsCipher::EcdheRsaAes256GcmSha384 => "ECDHE-RSA-AES256-GCM-SHA384",
            TlsCipher::EcdheRsaChacha20Poly1305 => "ECDHE-RSA-CHACHA20-POLY1305",
        }
    }
}

/// Whether plaintext is accepted beside mTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// mTLS only.
    Strict,
    /// mTLS and plaintext.
    Permissive,
}

/// MeshTLS configuration.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conf {
    /// Accepted TLS versions.
    pub tls_version: Option<Version>,
    /// Accepted cipher suites.
    pub tls_ciphers: Option<Vec<TlsCipher>>,
    /// mTLS mode.
    pub mode: Option<Mode>,
}

impl PolicySpec for MeshTLSSpec {
    const TYPE: ResourceType = ResourceType::MeshTLS;
    type Conf = Conf;

    fn validate(&self, _ctx: &PolicyContext, v: &mut Violations) {
        let spec = spec_path();
        validate_top(
            &self.target_ref,
            TargetRefRules::kinds(&[Mesh, MeshSubset, Dataplane])
                .inbound(has_items(&self.from) || has_items(&self.rules)),
            v,
        );
        let top_kind = top_ref(&self.target_ref).kind;
        if has_items(&self.rules) && has_items(&self.from) {
            v.add(&spec, "field 'from' must be empty when 'rules' is defined");
        }
        for (i, rule) in items(&self.rules) {
            validate_conf(
                rule.default.as_ref(),
                top_kind,
                &spec.field("rules").index(i).field("default"),
                v,
            );
        }
        for (i, item) in items(&self.from) {
            let p = spec.field("from").index(i);
            item.target_ref
                .validate(&TargetRefRules::kinds(&[Mesh]), &p.field("targetRef"), v);
            validate_conf(item.default.as_ref(), top_kind, &p.field("default"), v);
        }
    }
}

fn validate_conf(conf: Option<&Conf>, top_kind: TargetRefKind, path: &FieldPath, v: &mut Violations) {
    let Some(conf) = conf else { return };
    if conf.tls_ciphers.as_ref().is_some_and(|c| !c.is_empty()) && top_kind != Mesh {
        v.add(
            &path.field("tlsCiphers"),
            "tlsCiphers can only be defined with top level targetRef kind: Mesh",
        );
    }
    if let Some(version) = &conf.tls_version {
        if top_kind != Mesh {
            v.add(
                &path.field("tlsVersion"),
                "tlsVersion can only be defined with top level targetRef kind: Mesh",
            );
        } else {
            version.validate(&path.field("tlsVersion"), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violations;
    use super::*;

    #[test]
    fn ciphers_and_versions_need_mesh_scope() {
        let errs = violations::<MeshTLSSpec>(
            r#"
targetRef: {kind: Dataplane, labels: {app: x}}
rules:
  - default: {mode: Strict, tlsCiphers: [ECDHE-RSA-AES128-GCM-SHA256], tlsVersion: {min: TLS12}}
"#,
        );
        assert_eq!(
            errs,
            vec![
                "spec.rules[0].default.tlsCiphers: tlsCiphers can only be defined with top level targetRef kind: Mesh",
                "spec.rules[0].default.tlsVersion: tlsVersion can only be defined with top level targetRef kind: Mesh",
            ]
        );
        let errs = violations::<MeshTLSSpec>("rules:\n  - default: {tlsVersion: {min: TLS13, max: TLS12}}");
        assert_eq!(
            errs,
            vec!["spec.rules[0].default.tlsVersion.min: min version must be lower than max"]
        );
    }
}
