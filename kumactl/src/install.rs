//! `kumactl install control-plane`: the manifests of `config/` (the CRDs,
//! RBAC, the kuma-cp Deployment and Service, the webhooks) with Kuma's
//! flags applied, plus the `kuma-tls-cert` Secret the replicas share,
//! generated unless the user names their own. Rendering is a pure function
//! of the options and the certificate; the sources are the same files
//! `kubectl apply -k config/default` uses, compiled in.

use serde_yaml::Value;

/// The files of `config/` the control plane is made of (CRDs aside).
const SOURCES: &[(&str, &str)] = &[
    (
        "manager/namespace.yaml",
        include_str!("../../config/manager/namespace.yaml"),
    ),
    (
        "rbac/service_account.yaml",
        include_str!("../../config/rbac/service_account.yaml"),
    ),
    (
        "rbac/cluster_role.yaml",
        include_str!("../../config/rbac/cluster_role.yaml"),
    ),
    (
        "rbac/cluster_role_binding.yaml",
        include_str!("../../config/rbac/cluster_role_binding.yaml"),
    ),
    ("rbac/role.yaml", include_str!("../../config/rbac/role.yaml")),
    (
        "rbac/role_binding.yaml",
        include_str!("../../config/rbac/role_binding.yaml"),
    ),
    (
        "manager/deployment.yaml",
        include_str!("../../config/manager/deployment.yaml"),
    ),
    (
        "manager/service.yaml",
        include_str!("../../config/manager/service.yaml"),
    ),
    (
        "manager/pod_disruption_budget.yaml",
        include_str!("../../config/manager/pod_disruption_budget.yaml"),
    ),
    (
        "webhook/mutating.yaml",
        include_str!("../../config/webhook/mutating.yaml"),
    ),
    (
        "webhook/validating.yaml",
        include_str!("../../config/webhook/validating.yaml"),
    ),
];

/// A file of `config/` compiled in (e.g. `rbac/role.yaml`).
pub(crate) fn source(file: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(f, _)| *f == file).map(|(_, text)| *text)
}

/// The namespace the sources are written for.
const SOURCE_NAMESPACE: &str = "kuma-system";
/// The Secret holding the dp-server certificate and the CA proxies trust.
pub const TLS_SECRET: &str = "kuma-tls-cert";

/// What the user asked for (Kuma's flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPlaneOptions {
    /// `--namespace`.
    pub namespace: String,
    /// `--control-plane-replicas`.
    pub replicas: u32,
    /// `--control-plane-registry`, `--control-plane-repository`, `--control-plane-version`.
    pub control_plane_image: String,
    /// `--dataplane-registry`, `--dataplane-repository` (and the version).
    pub dataplane_image: String,
    /// `--dataplane-init-registry`, `--dataplane-init-repository` (and the version).
    pub init_image: String,
    /// `--injector-failure-policy`: `Fail` or `Ignore`.
    pub injector_failure_policy: String,
    /// `--tls-general-secret`: a Secret of the user's (tls.crt, tls.key,
    /// ca.crt) instead of a generated one.
    pub tls_secret: Option<String>,
    /// `--tls-general-ca-bundle`: the base64 of that Secret's CA. Given
    /// with the Secret (as Kuma requires), kuma-cp serves its webhooks
    /// with the Secret's certificate and the webhooks trust this CA.
    pub tls_ca_bundle: Option<String>,
}

/// Where the Deployment mounts the dp-server (general) certificate.
const TLS_MOUNT: &str = "/var/run/secrets/kuma.io/tls-cert";

/// A certificate for the control plane's Service names: (ca, cert, key) PEM.
pub type GeneratedTls = (String, String, String);

fn rename_namespace(value: &mut Value, namespace: &str) {
    match value {
        Value::String(s) => {
            if s == SOURCE_NAMESPACE {
                *s = namespace.to_string();
            } else if s.contains(":kuma-system:") {
                *s = s.replace(":kuma-system:", &format!(":{namespace}:"));
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| rename_namespace(v, namespace)),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| rename_namespace(v, namespace)),
        _ => {}
    }
}

fn set_env(container: &mut Value, name: &str, value: &str) {
    if let Some(env) = container.get_mut("env").and_then(Value::as_sequence_mut) {
        for var in env {
            if var.get("name").and_then(Value::as_str) == Some(name) {
                var["value"] = value.into();
            }
        }
    }
}

/// The manifests, as one multi-document YAML stream.
pub fn render_control_plane(
    options: &ControlPlaneOptions,
    tls: Option<&GeneratedTls>,
) -> Result<String, String> {
    if !matches!(options.injector_failure_policy.as_str(), "Fail" | "Ignore") {
        return Err(format!(
            "--injector-failure-policy: {:?} is not one of Fail, Ignore",
            options.injector_failure_policy
        ));
    }
    if options.replicas == 0 {
        return Err("--control-plane-replicas: must be at least 1".into());
    }
    match (&options.tls_secret, &options.tls_ca_bundle) {
        (Some(_), None) => {
            return Err(
                "--tls-general-ca-bundle: required with --tls-general-secret (the base64 of its ca.crt)"
                    .into(),
            );
        }
        (None, Some(_)) => {
            return Err("--tls-general-ca-bundle: only with --tls-general-secret".into());
        }
        (Some(_), Some(bundle)) => {
            use base64::Engine as _;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(bundle.trim())
                .map_err(|e| format!("--tls-general-ca-bundle: not base64: {e}"))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err("--tls-general-ca-bundle: not a base64-encoded PEM certificate".into());
            }
        }
        (None, None) => {}
    }
    let mut docs: Vec<Value> = Vec::new();
    for (file, text) in SOURCES {
        let mut doc: Value = serde_yaml::from_str(text).map_err(|e| format!("config/{file}: {e}"))?;
        rename_namespace(&mut doc, &options.namespace);
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "Deployment" => {
                doc["spec"]["replicas"] = options.replicas.into();
                let secret = options
                    .tls_secret
                    .clone()
                    .unwrap_or_else(|| TLS_SECRET.to_string());
                if let Some(volumes) = doc["spec"]["template"]["spec"]["volumes"].as_sequence_mut() {
                    for v in volumes {
                        if v.get("name").and_then(Value::as_str) == Some("tls-cert") {
                            v["secret"]["secretName"] = secret.clone().into();
                        }
                    }
                }
                if let Some(containers) = doc["spec"]["template"]["spec"]["containers"].as_sequence_mut() {
                    for c in containers {
                        c["image"] = options.control_plane_image.clone().into();
                        set_env(
                            c,
                            "KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_IMAGE",
                            &options.dataplane_image,
                        );
                        set_env(c, "KUMA_INJECTOR_INIT_CONTAINER_IMAGE", &options.init_image);
                        if options.tls_ca_bundle.is_some()
                            && let Some(env) = c["env"].as_sequence_mut()
                        {
                            // The webhooks are served with the user's certificate.
                            let mut var = serde_yaml::Mapping::new();
                            var.insert(
                                "name".into(),
                                "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR".into(),
                            );
                            var.insert("value".into(), TLS_MOUNT.into());
                            env.push(Value::Mapping(var));
                        }
                    }
                }
            }
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
                if let Some(hooks) = doc["webhooks"].as_sequence_mut() {
                    for hook in hooks {
                        if let Some(bundle) = &options.tls_ca_bundle {
                            hook["clientConfig"]["caBundle"] = bundle.trim().into();
                        }
                        let injector = hook
                            .get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.contains("kuma-injector"));
                        if injector {
                            hook["failurePolicy"] = options.injector_failure_policy.clone().into();
                        }
                    }
                }
            }
            _ => {}
        }
        docs.push(doc);
    }
    if options.tls_secret.is_none() {
        let (ca, cert, key) =
            tls.ok_or("a certificate must be generated when --tls-general-secret is not given")?;
        let secret: Value = serde_yaml::from_str(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {TLS_SECRET}\n  namespace: {}\n  labels:\n    app: kuma-control-plane\ntype: kubernetes.io/tls\n",
            options.namespace
        ))
        .map_err(|e| e.to_string())?;
        let mut secret = secret;
        let mut data = serde_yaml::Mapping::new();
        data.insert("ca.crt".into(), ca.clone().into());
        data.insert("tls.crt".into(), cert.clone().into());
        data.insert("tls.key".into(), key.clone().into());
        secret["stringData"] = Value::Mapping(data);
        // After the Namespace, before the Deployment that mounts it.
        docs.insert(1, secret);
    }
    let mut out = String::new();
    for crd in kuma_crds::crd::all_crds() {
        out.push_str(&kuma_crds::crd::to_yaml(&crd));
    }
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&doc).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// A CA and a dp-server certificate for `kuma-control-plane.<namespace>`.
pub fn generate_tls(namespace: &str) -> Result<GeneratedTls, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "kuma-ca");
    ca.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(e)?;
    let mut params = CertificateParams::new(vec![
        "kuma-control-plane".to_string(),
        format!("kuma-control-plane.{namespace}"),
        format!("kuma-control-plane.{namespace}.svc"),
        format!("kuma-control-plane.{namespace}.svc.cluster.local"),
        "localhost".to_string(),
    ])
    .map_err(e)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kuma-control-plane");
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.signed_by(&key, &issuer).map_err(e)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ControlPlaneOptions {
        ControlPlaneOptions {
            namespace: "mesh-system".into(),
            replicas: 3,
            control_plane_image: "registry.example/kuma-cp:1.2".into(),
            dataplane_image: "registry.example/kuma-dp:1.2".into(),
            init_image: "registry.example/kuma-init:1.2".into(),
            injector_failure_policy: "Ignore".into(),
            tls_secret: None,
            tls_ca_bundle: None,
        }
    }

    fn docs(text: &str) -> Vec<Value> {
        text.split("\n---\n")
            .filter_map(|d| serde_yaml::from_str::<Value>(d).ok())
            .filter(|v| v.get("kind").is_some())
            .collect()
    }

    fn tls() -> GeneratedTls {
        ("CA".into(), "CERT".into(), "KEY".into())
    }

    #[test]
    fn flags_reach_every_object() {
        let out = render_control_plane(&options(), Some(&tls())).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !out.contains("kuma-system"),
            "the namespace is renamed everywhere"
        );
        let docs = docs(&out);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "CustomResourceDefinition").count(),
            21
        );
        for kind in [
            "Namespace",
            "Secret",
            "ServiceAccount",
            "ClusterRole",
            "Role",
            "Deployment",
            "Service",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
        }
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .unwrap_or_else(|| panic!("no Deployment"));
        assert_eq!(deployment["spec"]["replicas"], 3);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example/kuma-cp:1.2");
        let env = serde_yaml::to_string(&container["env"]).unwrap_or_default();
        assert!(
            env.contains("registry.example/kuma-dp:1.2") && env.contains("registry.example/kuma-init:1.2"),
            "{env}"
        );
        assert!(
            env.contains("system:serviceaccount:mesh-system:kuma-control-plane"),
            "{env}"
        );
        let mutating = docs
            .iter()
            .find(|d| d["kind"] == "MutatingWebhookConfiguration")
            .unwrap_or_else(|| panic!("none"));
        for hook in mutating["webhooks"].as_sequence().into_iter().flatten() {
            let name = hook["name"].as_str().unwrap_or_default();
            let expected = if name.contains("kuma-injector") {
                "Ignore"
            } else {
                "Fail"
            };
            assert_eq!(hook["failurePolicy"], expected, "{name}");
            assert_eq!(hook["clientConfig"]["service"]["namespace"], "mesh-system");
        }
        let secret = docs
            .iter()
            .find(|d| d["kind"] == "Secret")
            .unwrap_or_else(|| panic!("none"));
        assert_eq!(secret["stringData"]["tls.crt"], "CERT");
    }

    #[test]
    fn a_given_secret_is_mounted_and_none_generated() {
        let mut o = options();
        o.tls_secret = Some("my-cert".into());
        let (ca, _, _) = generate_tls("mesh-system").unwrap_or_else(|e| panic!("{e}"));
        use base64::Engine as _;
        let bundle = base64::engine::general_purpose::STANDARD.encode(ca);
        o.tls_ca_bundle = Some(bundle.clone());
        let out = render_control_plane(&o, None).unwrap_or_else(|e| panic!("{e}"));
        let docs = docs(&out);
        assert!(!docs.iter().any(|d| d["kind"] == "Secret"));
        assert!(out.contains("secretName: my-cert"));
        // The webhooks trust the given CA, and kuma-cp serves them with the
        // Secret's certificate.
        let hooks: Vec<Value> = docs
            .iter()
            .filter(|d| {
                d["kind"]
                    .as_str()
                    .is_some_and(|k| k.ends_with("WebhookConfiguration"))
            })
            .flat_map(|d| d["webhooks"].as_sequence().cloned().unwrap_or_default())
            .collect();
        assert_eq!(hooks.len(), 5);
        assert!(
            hooks
                .iter()
                .all(|h| h["clientConfig"]["caBundle"] == bundle.as_str())
        );
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .unwrap_or_else(|| panic!("no Deployment"));
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        assert!(env.iter().any(
            |v| v["name"] == "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR" && v["value"] == TLS_MOUNT
        ));
    }

    #[test]
    fn bad_flags_are_named() {
        let mut o = options();
        o.injector_failure_policy = "Sometimes".into();
        assert!(
            render_control_plane(&o, Some(&tls()))
                .unwrap_err()
                .starts_with("--injector-failure-policy")
        );
        let mut o = options();
        o.tls_secret = Some("my-cert".into());
        assert!(
            render_control_plane(&o, None)
                .unwrap_err()
                .starts_with("--tls-general-ca-bundle: required")
        );
        o.tls_ca_bundle = Some("bm90IGEgY2VydA==".into());
        assert_eq!(
            render_control_plane(&o, None).unwrap_err(),
            "--tls-general-ca-bundle: not a base64-encoded PEM certificate"
        );
        let mut o = options();
        o.replicas = 0;
        assert!(
            render_control_plane(&o, Some(&tls()))
                .unwrap_err()
                .starts_with("--control-plane-replicas")
        );
    }

    #[test]
    fn the_certificate_names_the_service() {
        let (ca, cert, key) = generate_tls("mesh-system").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ca.contains("BEGIN CERTIFICATE")
                && cert.contains("BEGIN CERTIFICATE")
                && key.contains("PRIVATE KEY")
        );
    }
}
