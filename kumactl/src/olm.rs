//! `kumactl install olm-bundle`: the Operator Lifecycle Manager bundle of
//! the control plane (`config/olm/`), rendered from the same sources as
//! `kubectl apply -k config/default` and `kumactl install control-plane`:
//! the CRDs from the model crate, the install strategy's Deployment and
//! permissions from `config/manager` and `config/rbac`, the webhook
//! definitions from `config/webhook`, and `alm-examples` from the project's
//! validated example resources. A pure function of the options, so the
//! committed bundle is drift-checked and a version bump (`--version`,
//! `--replaces`) gives the next bundle.

use serde_json::{Value as Json, json};
use serde_yaml::Value;

use crate::install::source;

/// The OLM package (and the CSV name's stem).
pub const PACKAGE: &str = "kuma-operator";
/// The only channel.
pub const CHANNEL: &str = "stable";
/// Where OLM mounts the webhook certificate it manages.
const OLM_WEBHOOK_CERT_DIR: &str = "/tmp/k8s-webhook-server/serving-certs";
/// The project's example resources, each validated by the model crate's
/// tests (`crds/tests/roundtrip.rs`).
const EXAMPLES: &str = include_str!("../../crds/tests/testdata/kubernetes.yaml");

/// What differs between bundles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleOptions {
    /// The operator's version (semver, no `v`).
    pub version: String,
    /// The version this bundle upgrades (`spec.replaces`), if any.
    pub replaces: Option<String>,
    /// The registry of the kuma-cp, kuma-dp, kuma-init and bundle images.
    pub registry: String,
}

/// One generated file: its path under `config/olm/` and its text.
pub type BundleFile = (String, String);

/// The display name and description of each owned kind.
const KINDS: &[(&str, &str, &str)] = &[
    (
        "Mesh",
        "Mesh",
        "A service mesh: mTLS backends, MeshService mode, networking defaults.",
    ),
    (
        "Dataplane",
        "Dataplane",
        "A proxy's inbounds and outbounds; kuma-cp makes one per injected Pod.",
    ),
    (
        "DataplaneInsight",
        "Dataplane Insight",
        "A proxy's xDS subscriptions and certificate, written by kuma-cp.",
    ),
    (
        "MeshService",
        "Mesh Service",
        "A service of the mesh with its ports, VIPs and hostnames.",
    ),
    (
        "MeshExternalService",
        "Mesh External Service",
        "A service outside the mesh reached through it.",
    ),
    (
        "MeshAccessLog",
        "Mesh Access Log",
        "Access logging of proxies' traffic.",
    ),
    (
        "MeshCircuitBreaker",
        "Mesh Circuit Breaker",
        "Connection limits and outlier detection.",
    ),
    (
        "MeshFaultInjection",
        "Mesh Fault Injection",
        "Delays, aborts and bandwidth limits for testing.",
    ),
    (
        "MeshHealthCheck",
        "Mesh Health Check",
        "Active health checking of upstream endpoints.",
    ),
    (
        "MeshHTTPRoute",
        "Mesh HTTP Route",
        "HTTP routing: matches, filters and weighted backends.",
    ),
    (
        "MeshLoadBalancingStrategy",
        "Mesh Load Balancing Strategy",
        "Load balancing and locality awareness.",
    ),
    ("MeshMetric", "Mesh Metric", "Proxy metrics exposure."),
    (
        "MeshPassthrough",
        "Mesh Passthrough",
        "Which traffic leaves the mesh unproxied.",
    ),
    (
        "MeshProxyPatch",
        "Mesh Proxy Patch",
        "Direct modifications of the generated Envoy configuration.",
    ),
    (
        "MeshRateLimit",
        "Mesh Rate Limit",
        "Local HTTP and TCP rate limits.",
    ),
    (
        "MeshRetry",
        "Mesh Retry",
        "Retries of HTTP, gRPC and TCP requests.",
    ),
    (
        "MeshTCPRoute",
        "Mesh TCP Route",
        "TCP routing to weighted backends.",
    ),
    (
        "MeshTimeout",
        "Mesh Timeout",
        "Connection, idle and request timeouts.",
    ),
    (
        "MeshTLS",
        "Mesh TLS",
        "TLS versions, ciphers and mode between proxies.",
    ),
    (
        "MeshTrace",
        "Mesh Trace",
        "Distributed tracing backends and sampling.",
    ),
    (
        "MeshTrafficPermission",
        "Mesh Traffic Permission",
        "Which clients may reach a service (mTLS identities).",
    ),
];

/// The kinds kuma-cp writes itself: no example to offer.
const SYSTEM_KINDS: &[&str] = &["Dataplane", "DataplaneInsight"];

const DESCRIPTION: &str = "A Kuma-compatible service mesh control plane written in Rust.\n\n\
Apply the same `kuma.io` resources you use with Kuma (Mesh, the targetRef policies, MeshService) \
and label a namespace `kuma.io/sidecar-injection: enabled`: the operator injects `kuma-sidecar` \
(kuma-dp and Envoy) and `kuma-init` into its Pods, turns them into Dataplanes and serves every \
proxy its Envoy configuration over xDS, with mutual TLS from the Mesh's builtin CA.\n\n\
The operator watches all namespaces. Its admission webhooks (sidecar injection, validation and \
defaulting of `kuma.io` resources) use the certificate OLM manages.";

/// A small icon (an SVG), base64 in the CSV.
const ICON_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="32" cy="32" r="30" fill="#290b53"/><circle cx="20" cy="24" r="6" fill="#fff"/><circle cx="44" cy="24" r="6" fill="#fff"/><circle cx="32" cy="44" r="6" fill="#fff"/><path d="M20 24L44 24L32 44Z" fill="none" stroke="#fff" stroke-width="3"/></svg>"##;

fn yaml(text: &str, file: &str) -> Result<Value, String> {
    serde_yaml::from_str(text).map_err(|e| format!("config/{file}: {e}"))
}

fn to_json(value: &Value) -> Result<Json, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

fn config(file: &str) -> Result<Value, String> {
    let text = source(file).ok_or_else(|| format!("config/{file} is not compiled in"))?;
    yaml(text, file)
}

fn csv_name(version: &str) -> String {
    format!("{PACKAGE}.v{version}")
}

/// The Deployment's spec as OLM runs it: the namespace is wherever the
/// operator is installed (read from the Pod), the dp-server certificate is
/// the one kuma-cp generates and shares through a Secret (a bundle cannot
/// ship one), and the webhook certificate is OLM's.
fn deployment_spec(options: &BundleOptions) -> Result<Json, String> {
    let mut deployment = config("manager/deployment.yaml")?;
    let image = |name: &str| format!("{}/{name}:{}", options.registry, options.version);
    let spec = &mut deployment["spec"]["template"]["spec"];
    if let Some(volumes) = spec["volumes"].as_sequence_mut() {
        volumes.retain(|v| v.get("name").and_then(Value::as_str) != Some("tls-cert"));
    }
    let containers = spec["containers"]
        .as_sequence_mut()
        .ok_or("config/manager/deployment.yaml: no containers")?;
    for c in containers {
        c["image"] = image("kuma-cp").into();
        if let Some(mounts) = c["volumeMounts"].as_sequence_mut() {
            mounts.retain(|m| m.get("name").and_then(Value::as_str) != Some("tls-cert"));
        }
        let env = c["env"].as_sequence().cloned().unwrap_or_default();
        let mut out: Vec<Value> = Vec::new();
        // POD_NAMESPACE first: later values refer to it as $(POD_NAMESPACE).
        for var in env
            .iter()
            .filter(|v| matches!(v["name"].as_str(), Some("POD_NAME" | "POD_NAMESPACE")))
        {
            out.push(var.clone());
        }
        for var in env {
            let name = var["name"].as_str().unwrap_or_default().to_string();
            let value = |v: &str| -> Value {
                yaml(&format!("name: {name}\nvalue: \"{v}\""), "olm").unwrap_or_default()
            };
            match name.as_str() {
                "POD_NAME" | "POD_NAMESPACE" => {}
                "KUMA_GENERAL_TLS_CERT_FILE"
                | "KUMA_GENERAL_TLS_KEY_FILE"
                | "KUMA_RUNTIME_KUBERNETES_INJECTOR_CA_CERT_FILE" => {}
                "KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE" => out.push(value("$(POD_NAMESPACE)")),
                "KUMA_RUNTIME_KUBERNETES_ALLOWED_USERS" => {
                    out.push(value("system:serviceaccount:$(POD_NAMESPACE):kuma-control-plane"))
                }
                "KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_IMAGE" => {
                    out.push(value(&image("kuma-dp")))
                }
                "KUMA_INJECTOR_INIT_CONTAINER_IMAGE" => out.push(value(&image("kuma-init"))),
                _ => out.push(var),
            }
        }
        out.push(yaml(
            &format!(
                "name: KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR\nvalue: {OLM_WEBHOOK_CERT_DIR}"
            ),
            "olm",
        )?);
        c["env"] = Value::Sequence(out);
    }
    to_json(&deployment["spec"])
}

fn rules(file: &str) -> Result<Json, String> {
    to_json(&config(file)?["rules"])
}

/// `config/webhook`'s webhooks as OLM webhook definitions. OLM scopes them
/// to the OperatorGroup's namespaces (all), not by namespace label, so the
/// namespace-wide injector would see every Pod of the cluster, kuma-cp's
/// own included: it is `Ignore` here (the injector still injects only
/// into labelled namespaces; a Pod created while kuma-cp is unreachable
/// runs without a sidecar instead of every Pod creation failing). The
/// Pod-label injector keeps `Fail`: its object selector scopes it.
fn webhook_definitions() -> Result<Json, String> {
    let mut out = Vec::new();
    for (file, kind) in [
        ("webhook/mutating.yaml", "MutatingAdmissionWebhook"),
        ("webhook/validating.yaml", "ValidatingAdmissionWebhook"),
    ] {
        let doc = config(file)?;
        for hook in doc["webhooks"].as_sequence().into_iter().flatten() {
            let name = hook["name"].as_str().unwrap_or_default();
            let failure_policy = if name == "namespace-kuma-injector.kuma.io" {
                "Ignore"
            } else {
                hook["failurePolicy"].as_str().unwrap_or("Fail")
            };
            let mut def = json!({
                "type": kind,
                "generateName": name,
                "deploymentName": "kuma-control-plane",
                "containerPort": 443,
                "targetPort": 5443,
                "webhookPath": hook["clientConfig"]["service"]["path"],
                "admissionReviewVersions": to_json(&hook["admissionReviewVersions"])?,
                "sideEffects": to_json(&hook["sideEffects"])?,
                "failurePolicy": failure_policy,
                "rules": to_json(&hook["rules"])?,
            });
            if let Some(selector) = hook.get("objectSelector") {
                def["objectSelector"] = to_json(selector)?;
            }
            out.push(def);
        }
    }
    Ok(Json::Array(out))
}

/// One example per kind users write, from the project's examples.
fn alm_examples() -> Result<String, String> {
    let mut examples = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(EXAMPLES) {
        let value = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| format!("examples: {e}"))?;
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let owned = KINDS.iter().any(|(k, _, _)| *k == kind);
        if owned && !SYSTEM_KINDS.contains(&kind.as_str()) && seen.insert(kind) {
            // What a user writes: no status, no labels kuma-cp computes.
            let mut example = to_json(&value)?;
            if let Some(object) = example.as_object_mut() {
                object.remove("status");
            }
            if let Some(labels) = example["metadata"]["labels"].as_object_mut() {
                labels.retain(|k, _| k == "kuma.io/mesh");
            }
            examples.push(example);
        }
    }
    serde_json::to_string_pretty(&examples).map_err(|e| e.to_string())
}

fn owned_crds() -> Result<Json, String> {
    let mut owned = Vec::new();
    for crd in kuma_crds::crd::all_crds() {
        let kind = crd.spec.names.kind.clone();
        let (_, display, description) = KINDS
            .iter()
            .find(|(k, _, _)| *k == kind)
            .ok_or_else(|| format!("no display name for the CRD kind {kind}"))?;
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| v.storage)
            .map(|v| v.name.clone())
            .unwrap_or_default();
        let mut entry = json!({
            "name": crd.metadata.name,
            "version": version,
            "kind": kind,
            "displayName": display,
            "description": description,
        });
        let schema = crd.spec.versions.iter().find_map(|v| v.schema.clone());
        let spec_fields = schema
            .and_then(|s| s.open_api_v3_schema)
            .and_then(|s| s.properties)
            .and_then(|p| p.get("spec").cloned())
            .and_then(|s| s.properties)
            .unwrap_or_default();
        let descriptors: Vec<Json> = ["targetRef", "mtls", "meshServices", "networking"]
            .iter()
            .filter(|f| spec_fields.contains_key(**f))
            .map(|f| {
                json!({
                    "path": f,
                    "displayName": heading(f),
                    "description": spec_fields[*f].description.clone().unwrap_or_default(),
                })
            })
            .collect();
        if !descriptors.is_empty() {
            entry["specDescriptors"] = Json::Array(descriptors);
        }
        owned.push(entry);
    }
    Ok(Json::Array(owned))
}

/// `targetRef` → "Target Ref".
fn heading(field: &str) -> String {
    let mut out = String::new();
    for (i, ch) in field.chars().enumerate() {
        if i == 0 {
            out.extend(ch.to_uppercase());
        } else if ch.is_uppercase() {
            out.push(' ');
            out.push(ch);
        } else {
            out.push(ch);
        }
    }
    out
}

fn cluster_service_version(options: &BundleOptions) -> Result<Json, String> {
    use base64::Engine as _;
    let icon = base64::engine::general_purpose::STANDARD.encode(ICON_SVG);
    let mut csv = json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": csv_name(&options.version),
            "annotations": {
                "alm-examples": alm_examples()?,
                "capabilities": "Seamless Upgrades",
                "categories": "Networking,Security",
                "containerImage": format!("{}/kuma-cp:{}", options.registry, options.version),
                "description": "Kuma-compatible service mesh control plane: kuma.io resources, sidecar injection, Envoy over xDS.",
                "operatorframework.io/suggested-namespace": "kuma-system",
                "support": "kuma-rs",
            },
        },
        "spec": {
            "displayName": "Kuma (kuma-rs)",
            "description": DESCRIPTION,
            "version": options.version,
            "maturity": "alpha",
            "minKubeVersion": "1.30.0",
            "provider": {"name": "kuma-rs"},
            "maintainers": [{"name": "kuma-rs maintainers", "email": "maintainers@kuma-rs.example"}],
            "links": [
                {"name": "Kuma documentation", "url": "https://kuma.io/docs/"},
                {"name": "Envoy", "url": "https://www.envoyproxy.io/"},
            ],
            "keywords": ["service mesh", "kuma", "envoy", "mtls", "sidecar"],
            "icon": [{"base64data": icon, "mediatype": "image/svg+xml"}],
            "installModes": [
                {"type": "OwnNamespace", "supported": false},
                {"type": "SingleNamespace", "supported": false},
                {"type": "MultiNamespace", "supported": false},
                {"type": "AllNamespaces", "supported": true},
            ],
            "customresourcedefinitions": {"owned": owned_crds()?},
            "install": {
                "strategy": "deployment",
                "spec": {
                    "deployments": [{
                        "name": "kuma-control-plane",
                        "label": {"app": "kuma-control-plane"},
                        "spec": deployment_spec(options)?,
                    }],
                    "permissions": [{"serviceAccountName": "kuma-control-plane", "rules": rules("rbac/role.yaml")?}],
                    "clusterPermissions": [{"serviceAccountName": "kuma-control-plane", "rules": rules("rbac/cluster_role.yaml")?}],
                },
            },
            "webhookdefinitions": webhook_definitions()?,
        },
    });
    if let Some(previous) = &options.replaces {
        csv["spec"]["replaces"] = csv_name(previous).into();
    }
    Ok(csv)
}

/// A namespaced object of `config/` as a bundle manifest: OLM puts it in
/// the install namespace.
fn bundle_object(file: &str) -> Result<String, String> {
    let mut doc = config(file)?;
    if let Some(meta) = doc["metadata"].as_mapping_mut() {
        meta.remove("namespace");
    }
    to_yaml(&doc)
}

fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_yaml::to_string(value).map_err(|e| e.to_string())
}

const ANNOTATIONS: &[(&str, &str)] = &[
    (
        "operators.operatorframework.io.bundle.mediatype.v1",
        "registry+v1",
    ),
    ("operators.operatorframework.io.bundle.manifests.v1", "manifests/"),
    ("operators.operatorframework.io.bundle.metadata.v1", "metadata/"),
    ("operators.operatorframework.io.bundle.package.v1", PACKAGE),
    ("operators.operatorframework.io.bundle.channels.v1", CHANNEL),
    (
        "operators.operatorframework.io.bundle.channel.default.v1",
        CHANNEL,
    ),
];

/// Every file of `config/olm/`, sorted by path: the bundle (`bundle/`),
/// its Dockerfile, and a file-based catalog of the published bundle image.
pub fn render_bundle(options: &BundleOptions) -> Result<Vec<BundleFile>, String> {
    if options.version.is_empty() || options.version.starts_with('v') {
        return Err(format!(
            "--version: {:?} is not a version like 0.1.0",
            options.version
        ));
    }
    let header = "# Generated by `kumactl install olm-bundle`; do not edit.\n";
    let mut files: Vec<BundleFile> = Vec::new();
    files.push((
        format!("bundle/manifests/{PACKAGE}.clusterserviceversion.yaml"),
        format!("{header}{}", to_yaml(&cluster_service_version(options)?)?),
    ));
    for crd in kuma_crds::crd::all_crds() {
        // No leading `---`: the bundle loader would read an empty first document.
        files.push((
            format!("bundle/manifests/{}", kuma_crds::crd::file_name(&crd)),
            format!("{header}{}", to_yaml(&crd)?),
        ));
    }
    files.push((
        "bundle/manifests/kuma-control-plane_v1_service.yaml".into(),
        format!("{header}{}", bundle_object("manager/service.yaml")?),
    ));
    files.push((
        "bundle/manifests/kuma-control-plane_policy_v1_poddisruptionbudget.yaml".into(),
        format!("{header}{}", bundle_object("manager/pod_disruption_budget.yaml")?),
    ));
    let mut annotations = String::from(header);
    annotations.push_str("annotations:\n");
    let mut labels = String::new();
    for (k, v) in ANNOTATIONS {
        annotations.push_str(&format!("  {k}: {v}\n"));
        labels.push_str(&format!("LABEL {k}={v}\n"));
    }
    files.push(("bundle/metadata/annotations.yaml".into(), annotations));
    files.push((
        "bundle.Dockerfile".into(),
        format!(
            "{header}# The bundle image: `docker build -f config/olm/bundle.Dockerfile -t {registry}/{PACKAGE}-bundle:v{version} config/olm`.\nFROM scratch\n{labels}COPY bundle/manifests /manifests/\nCOPY bundle/metadata /metadata/\n",
            registry = options.registry,
            version = options.version,
        ),
    ));
    files.push((format!("catalog/{PACKAGE}/index.yaml"), catalog(options)?));
    files.sort();
    Ok(files)
}

/// The file-based catalog as published: the package, its channel and the
/// bundle image (`opm render` of the image fills in the rest when the
/// catalog image is built; tests render the bundle directory instead).
fn catalog(options: &BundleOptions) -> Result<String, String> {
    let name = csv_name(&options.version);
    let mut entry = json!({"name": name});
    if let Some(previous) = &options.replaces {
        entry["replaces"] = csv_name(previous).into();
    }
    let docs = [
        json!({"schema": "olm.package", "name": PACKAGE, "defaultChannel": CHANNEL}),
        json!({"schema": "olm.channel", "package": PACKAGE, "name": CHANNEL, "entries": [entry]}),
        json!({
            "schema": "olm.bundle",
            "name": name,
            "package": PACKAGE,
            "image": format!("{}/{PACKAGE}-bundle:v{}", options.registry, options.version),
            "properties": [
                {"type": "olm.package", "value": {"packageName": PACKAGE, "version": options.version}},
            ],
        }),
    ];
    // No `---` before the first document: opm reads an empty one.
    let mut out = String::from("# Generated by `kumactl install olm-bundle`; do not edit.\n");
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(doc)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> BundleOptions {
        BundleOptions {
            version: "0.2.0".into(),
            replaces: Some("0.1.0".into()),
            registry: "registry.example".into(),
        }
    }

    fn csv(files: &[BundleFile]) -> serde_yaml::Value {
        let (_, text) = files
            .iter()
            .find(|(p, _)| p.ends_with("clusterserviceversion.yaml"))
            .expect("a CSV");
        serde_yaml::from_str(text).expect("CSV YAML")
    }

    #[test]
    fn a_version_bump_replaces_the_previous_bundle() {
        let files = render_bundle(&options()).expect("bundle");
        let csv = csv(&files);
        assert_eq!(csv["metadata"]["name"], "kuma-operator.v0.2.0");
        assert_eq!(csv["spec"]["replaces"], "kuma-operator.v0.1.0");
        assert_eq!(csv["spec"]["version"], "0.2.0");
        let catalog = &files
            .iter()
            .find(|(p, _)| p.starts_with("catalog/"))
            .expect("catalog")
            .1;
        assert!(catalog.contains("replaces: kuma-operator.v0.1.0"), "{catalog}");
        assert!(
            catalog.contains("image: registry.example/kuma-operator-bundle:v0.2.0"),
            "{catalog}"
        );
    }

    #[test]
    fn the_install_strategy_comes_from_config() {
        let csv = csv(&render_bundle(&options()).expect("bundle"));
        let install = &csv["spec"]["install"]["spec"];
        let container = &install["deployments"][0]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example/kuma-cp:0.2.0");
        let env: Vec<(String, String)> = container["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or_default().to_string(),
                    v["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert_eq!(env[1].0, "POD_NAMESPACE", "{env:?}");
        assert!(env.contains(&(
            "KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE".into(),
            "$(POD_NAMESPACE)".into()
        )));
        assert!(env.contains(&(
            "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR".into(),
            OLM_WEBHOOK_CERT_DIR.into()
        )));
        assert!(
            !env.iter().any(|(k, _)| k.starts_with("KUMA_GENERAL_TLS")),
            "{env:?}"
        );
        let role = config("rbac/role.yaml").expect("role");
        assert_eq!(
            serde_json::to_value(&install["permissions"][0]["rules"]).expect("json"),
            serde_json::to_value(&role["rules"]).expect("json")
        );
        let defs = csv["spec"]["webhookdefinitions"].as_sequence().expect("webhooks");
        assert_eq!(defs.len(), 5);
        for d in defs {
            assert_eq!(d["deploymentName"], install["deployments"][0]["name"]);
        }
    }

    #[test]
    fn every_crd_is_owned_and_users_kinds_have_examples() {
        let files = render_bundle(&options()).expect("bundle");
        let csv = csv(&files);
        let owned = csv["spec"]["customresourcedefinitions"]["owned"]
            .as_sequence()
            .expect("owned");
        assert_eq!(owned.len(), kuma_crds::crd::all_crds().len());
        let examples: Vec<Json> = serde_json::from_str(
            csv["metadata"]["annotations"]["alm-examples"]
                .as_str()
                .expect("examples"),
        )
        .expect("examples JSON");
        assert_eq!(examples.len(), owned.len() - SYSTEM_KINDS.len());
        for (path, text) in &files {
            assert!(
                !text.lines().any(|l| l == "---") || path.starts_with("catalog/"),
                "{path}"
            );
        }
    }

    #[test]
    fn a_bad_version_is_named() {
        let mut o = options();
        o.version = "v1".into();
        assert_eq!(
            render_bundle(&o).unwrap_err(),
            "--version: \"v1\" is not a version like 0.1.0"
        );
    }
}
