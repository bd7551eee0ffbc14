//! The annotations the injector writes and the two containers it adds,
//! field by field as Kuma's injector builds them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use kuma_crds::kubernetes::annotations as a;
use serde_json::{Value, json};

use super::config::{InjectorConfig, ProbeTimings, Resources};
use super::{InjectError, parse_enabled};

const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const BUILTIN_DNS: &str = "kuma.io/builtin-dns";
const BUILTIN_DNS_PORT: &str = "kuma.io/builtin-dns-port";
const BUILTIN_DNS_LOGGING: &str = "kuma.io/builtin-dns-logging";
const EXCLUDE_INBOUND_PORTS: &str = "traffic.kuma.io/exclude-inbound-ports";
const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.kuma.io/exclude-outbound-ports";
const EXCLUDE_INBOUND_IPS: &str = "traffic.kuma.io/exclude-inbound-ips";
const EXCLUDE_OUTBOUND_IPS: &str = "traffic.kuma.io/exclude-outbound-ips";
const EXCLUDE_OUTBOUND_PORTS_FOR_UIDS: &str = "traffic.kuma.io/exclude-outbound-ports-for-uids";
const GATEWAY: &str = "kuma.io/gateway";

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether an annotation holding a Kuma boolean is on.
fn enabled(annotations: &BTreeMap<String, String>, key: &str) -> Result<Option<bool>, InjectError> {
    annotations.get(key).map(|v| parse_enabled(key, v)).transpose()
}

/// The annotations the injector writes (they replace the Pod's own).
pub fn annotations(
    existing: &BTreeMap<String, String>,
    config: &InjectorConfig,
) -> Result<BTreeMap<String, String>, InjectError> {
    let mut out = BTreeMap::new();
    out.insert(a::SIDECAR_INJECTED.to_string(), "true".to_string());
    out.insert(a::TRANSPARENT_PROXYING.into(), "enabled".into());
    out.insert(a::SIDECAR_UID.into(), config.uid.to_string());
    out.insert(
        a::TRANSPARENT_PROXYING_INBOUND_PORT.into(),
        config.redirect_port_inbound.to_string(),
    );
    out.insert(
        a::TRANSPARENT_PROXYING_OUTBOUND_PORT.into(),
        config.redirect_port_outbound.to_string(),
    );
    out.insert(
        a::TRANSPARENT_PROXYING_IP_FAMILY_MODE.into(),
        existing
            .get(a::TRANSPARENT_PROXYING_IP_FAMILY_MODE)
            .cloned()
            .unwrap_or_else(|| config.ip_family_mode.clone()),
    );
    let admin_port = match existing.get(a::ENVOY_ADMIN_PORT) {
        Some(p) => p.parse::<u16>().map_err(|e| InjectError::Annotation {
            key: a::ENVOY_ADMIN_PORT.into(),
            reason: e.to_string(),
        })?,
        None => config.admin_port,
    };
    out.insert(a::ENVOY_ADMIN_PORT.into(), admin_port.to_string());
    let gateway = existing.contains_key(GATEWAY);
    let probe_proxy = if gateway {
        "0".to_string()
    } else {
        existing
            .get(a::APPLICATION_PROBE_PROXY_PORT)
            .cloned()
            .unwrap_or_else(|| config.application_probe_proxy_port.to_string())
    };
    if probe_proxy.parse::<u16>().is_err() {
        return Err(InjectError::Annotation {
            key: a::APPLICATION_PROBE_PROXY_PORT.into(),
            reason: format!("{probe_proxy:?} is not a port"),
        });
    }
    // Virtual probes (Kuma's older way, deprecated there) only where the
    // application probe proxy is off, and never on a gateway, which serves
    // no inbound to probe.
    let virtual_probes = probe_proxy == "0"
        && !gateway
        && enabled(existing, a::VIRTUAL_PROBES)?.unwrap_or(config.virtual_probes_enabled);
    out.insert(
        a::VIRTUAL_PROBES.into(),
        if virtual_probes { "enabled" } else { "disabled" }.into(),
    );
    let virtual_port = existing
        .get(a::VIRTUAL_PROBES_PORT)
        .cloned()
        .unwrap_or_else(|| config.virtual_probes_port.to_string());
    if virtual_port.parse::<u16>().is_err() {
        return Err(InjectError::Annotation {
            key: a::VIRTUAL_PROBES_PORT.into(),
            reason: format!("{virtual_port:?} is not a port"),
        });
    }
    out.insert(a::VIRTUAL_PROBES_PORT.into(), virtual_port);
    out.insert(a::APPLICATION_PROBE_PROXY_PORT.into(), probe_proxy);
    if enabled(existing, BUILTIN_DNS)?.unwrap_or(config.builtin_dns) {
        out.insert(BUILTIN_DNS.into(), "enabled".into());
        out.insert(
            BUILTIN_DNS_PORT.into(),
            existing
                .get(BUILTIN_DNS_PORT)
                .cloned()
                .unwrap_or_else(|| config.builtin_dns_port.to_string()),
        );
        out.insert(
            BUILTIN_DNS_LOGGING.into(),
            existing
                .get(BUILTIN_DNS_LOGGING)
                .cloned()
                .unwrap_or_else(|| config.builtin_dns_logging.to_string()),
        );
    }
    let mut inbound_ports = existing
        .get(EXCLUDE_INBOUND_PORTS)
        .cloned()
        .unwrap_or_else(|| join(&config.exclude_inbound_ports));
    if config.admin_unix_socket {
        let readiness = config.readiness_port.to_string();
        if !inbound_ports.split(',').any(|p| p.trim() == readiness) {
            if !inbound_ports.is_empty() {
                inbound_ports.push(',');
            }
            inbound_ports.push_str(&readiness);
        }
    }
    if !inbound_ports.is_empty() {
        out.insert(EXCLUDE_INBOUND_PORTS.into(), inbound_ports);
    }
    for (key, default) in [
        (EXCLUDE_OUTBOUND_PORTS, join(&config.exclude_outbound_ports)),
        (EXCLUDE_OUTBOUND_IPS, config.exclude_outbound_ips.join(",")),
        (EXCLUDE_INBOUND_IPS, config.exclude_inbound_ips.join(",")),
    ] {
        let value = existing.get(key).cloned().unwrap_or(default);
        if !value.is_empty() {
            out.insert(key.into(), value);
        }
    }
    Ok(out)
}

fn resources(r: &Resources, ephemeral: Option<(&str, &str)>) -> Value {
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if let Some(v) = &r.requests_cpu {
        requests.insert("cpu".into(), v.clone().into());
    }
    if let Some(v) = &r.requests_memory {
        requests.insert("memory".into(), v.clone().into());
    }
    if let Some(v) = r.limits_cpu.as_ref().filter(|v| v.as_str() != "0") {
        limits.insert("cpu".into(), v.clone().into());
    }
    if let Some(v) = &r.limits_memory {
        limits.insert("memory".into(), v.clone().into());
    }
    if let Some((request, limit)) = ephemeral {
        requests.insert("ephemeral-storage".into(), request.into());
        limits.insert("ephemeral-storage".into(), limit.into());
    }
    json!({"requests": requests, "limits": limits})
}

fn probe(t: &ProbeTimings, port: u16, success_threshold: Option<i32>) -> Value {
    json!({
        "httpGet": {"path": "/ready", "port": port},
        "initialDelaySeconds": t.initial_delay_seconds,
        "timeoutSeconds": t.timeout_seconds,
        "periodSeconds": t.period_seconds,
        "successThreshold": success_threshold.unwrap_or(1),
        "failureThreshold": t.failure_threshold,
    })
}

/// A duration as Go writes it (`30s`, `1m30s`, `1h0m0s`).
fn go_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

fn field_ref(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}})
}

/// The `kuma-sidecar` container.
pub fn sidecar(
    spec: &PodSpec,
    annotations: &BTreeMap<String, String>,
    mesh: &str,
    config: &InjectorConfig,
) -> Result<Container, InjectError> {
    let mut args = vec!["run".to_string(), "--log-level=info".to_string()];
    if let Some(c) = annotations.get("kuma.io/sidecar-proxy-concurrency") {
        let n: u32 = c
            .parse()
            .map_err(|e: std::num::ParseIntError| InjectError::Annotation {
                key: "kuma.io/sidecar-proxy-concurrency".into(),
                reason: e.to_string(),
            })?;
        if n > 0 {
            args.push(format!("--concurrency={n}"));
        }
    }
    let drain_time = match annotations.get("kuma.io/sidecar-drain-time") {
        Some(d) => go_duration(humantime_like(d).ok_or_else(|| InjectError::Annotation {
            key: "kuma.io/sidecar-drain-time".into(),
            reason: format!("{d:?} is not a duration"),
        })?),
        None => go_duration(config.drain_time),
    };
    let admin_port: u16 = annotations
        .get(a::ENVOY_ADMIN_PORT)
        .and_then(|p| p.parse().ok())
        .unwrap_or(config.admin_port);
    // Kuma's variables, sorted by name; the field references come first so
    // that KUMA_DATAPLANE_NAME can refer to them (Kubernetes expands only
    // variables defined before).
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let probe_proxy = annotations
        .get(a::APPLICATION_PROBE_PROXY_PORT)
        .cloned()
        .unwrap_or_else(|| config.application_probe_proxy_port.to_string());
    values.insert("KUMA_APPLICATION_PROBE_PROXY_PORT".into(), probe_proxy);
    values.insert("KUMA_CONTROL_PLANE_CA_CERT".into(), config.ca_cert_pem.clone());
    values.insert("KUMA_CONTROL_PLANE_URL".into(), config.control_plane_url.clone());
    values.insert("KUMA_DATAPLANE_DRAIN_TIME".into(), drain_time);
    values.insert("KUMA_DATAPLANE_MESH".into(), mesh.into());
    values.insert(
        "KUMA_DATAPLANE_NAME".into(),
        "$(POD_NAME).$(POD_NAMESPACE)".into(),
    );
    values.insert(
        "KUMA_DATAPLANE_RUNTIME_TOKEN_PATH".into(),
        format!("{TOKEN_PATH}/token"),
    );
    values.insert("KUMA_DNS_ENABLED".into(), config.builtin_dns.to_string());
    if config.builtin_dns {
        values.insert(
            "KUMA_DNS_ENABLE_LOGGING".into(),
            config.builtin_dns_logging.to_string(),
        );
        values.insert("KUMA_DNS_PROXY_PORT".into(), config.builtin_dns_port.to_string());
    }
    if config.delta_xds {
        values.insert(
            "KUMA_DATAPLANE_RUNTIME_ENVOY_XDS_TRANSPORT_PROTOCOL_VARIANT".into(),
            "DELTA_GRPC".into(),
        );
    }
    if let Some(v) = annotations.get("kuma.io/xds-transport-protocol-variant") {
        values.insert(
            "KUMA_DATAPLANE_RUNTIME_ENVOY_XDS_TRANSPORT_PROTOCOL_VARIANT".into(),
            v.clone(),
        );
    }
    if let Some(v) = annotations.get("kuma.io/envoy-log-level") {
        values.insert("KUMA_DATAPLANE_RUNTIME_ENVOY_LOG_LEVEL".into(), v.clone());
    }
    if let Some(v) = annotations.get("kuma.io/envoy-component-log-level") {
        values.insert(
            "KUMA_DATAPLANE_RUNTIME_ENVOY_COMPONENT_LOG_LEVEL".into(),
            v.clone(),
        );
    }
    values.extend(config.env_vars.clone());
    if let Some(extra) = annotations.get("kuma.io/sidecar-env-vars") {
        for pair in extra.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=').filter(|(_, v)| !v.contains('=')) else {
                return Err(InjectError::Annotation {
                    key: "kuma.io/sidecar-env-vars".into(),
                    reason: format!("{pair:?} is not KEY=VALUE"),
                });
            };
            values.insert(k.into(), v.into());
        }
    }
    let mut env = vec![
        field_ref("HOST_IP", "status.hostIP"),
        field_ref("INSTANCE_IP", "status.podIP"),
        field_ref("POD_NAME", "metadata.name"),
        field_ref("POD_NAMESPACE", "metadata.namespace"),
    ];
    env.extend(
        values
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value})),
    );

    let probe_port = config.probe_port(admin_port);
    let mut volume_mounts = vec![json!({"name": "kuma-sidecar-tmp", "mountPath": "/tmp"})];
    if let Some(volume) = annotations.get("kuma.io/service-account-token-volume") {
        let exists = spec.volumes.iter().flatten().any(|v| &v.name == volume);
        if !exists {
            return Err(InjectError::Annotation {
                key: "kuma.io/service-account-token-volume".into(),
                reason: format!(
                    "volume ({volume}) specified for kuma.io/service-account-token-volume but volume does not exist in pod spec"
                ),
            });
        }
        volume_mounts.push(json!({"name": volume, "mountPath": TOKEN_PATH, "readOnly": true}));
    } else if let Some(mount) = spec
        .containers
        .iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .find(|m| m.mount_path == TOKEN_PATH)
    {
        volume_mounts.push(serde_json::to_value(mount).unwrap_or_default());
    }
    let mut container = json!({
        "name": kuma_crds::kubernetes::SIDECAR_CONTAINER,
        "image": config.sidecar_image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": env,
        "securityContext": {
            "runAsUser": config.uid,
            "runAsGroup": config.gid,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
        },
        "resources": resources(&config.sidecar_resources, Some(("50M", "1G"))),
        "livenessProbe": probe(&config.liveness_probe, probe_port, None),
        "readinessProbe": probe(&config.readiness_probe, probe_port, Some(config.readiness_probe.success_threshold)),
        "volumeMounts": volume_mounts,
    });
    let wait = match annotations.get("kuma.io/wait-for-dataplane-ready") {
        Some(v) => parse_enabled("kuma.io/wait-for-dataplane-ready", v)?,
        None => config.wait_for_dataplane_ready,
    };
    if config.native_sidecar {
        container["restartPolicy"] = "Always".into();
        container["startupProbe"] = probe(&config.startup_probe, probe_port, None);
        container["lifecycle"] = json!({"preStop": {"exec": {"command": ["killall", "-USR2", "kuma-dp"]}}});
    } else if wait {
        container["lifecycle"] = json!({"postStart": {"exec": {"command": [
            "kuma-dp", "wait", "--url", format!("http://localhost:{probe_port}/ready"),
        ]}}});
    }
    serde_json::from_value(container).map_err(|e| InjectError::Probe(e.to_string()))
}

/// Durations as Kuma's annotations write them (`30s`, `1m`, `1m30s`, `500ms`).
fn humantime_like(text: &str) -> Option<std::time::Duration> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let n: u64 = number.parse().ok()?;
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        total += match unit {
            "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n * 60),
            "h" => std::time::Duration::from_secs(n * 3600),
            _ => return None,
        };
        rest = next;
    }
    Some(total)
}

/// The `kuma-init` container: `kumactl install transparent-proxy` with the
/// Pod's (final) annotations turned into flags, in Kuma's order.
pub fn init(annotations: &BTreeMap<String, String>, config: &InjectorConfig) -> Container {
    let get = |k: &str| annotations.get(k).map(String::as_str).unwrap_or_default();
    let mut args: Vec<String> = Vec::new();
    let uid = get(a::SIDECAR_UID);
    if !uid.is_empty() && uid != "5678" {
        args.push(format!("--kuma-dp-user={uid}"));
    }
    let family = get(a::TRANSPARENT_PROXYING_IP_FAMILY_MODE);
    if !family.is_empty() && family != "dualstack" {
        args.push(format!("--ip-family-mode={family}"));
    }
    let outbound = get(a::TRANSPARENT_PROXYING_OUTBOUND_PORT);
    if !outbound.is_empty() && outbound != "15001" {
        args.push(format!("--redirect-outbound-port={outbound}"));
    }
    if !get(EXCLUDE_OUTBOUND_PORTS).is_empty() {
        args.push(format!(
            "--exclude-outbound-ports={}",
            get(EXCLUDE_OUTBOUND_PORTS)
        ));
    }
    let outbound_ips: Vec<&str> = get(EXCLUDE_OUTBOUND_IPS)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !outbound_ips.is_empty() {
        args.push(format!("--exclude-outbound-ips={}", outbound_ips.join(",")));
    }
    for item in get(EXCLUDE_OUTBOUND_PORTS_FOR_UIDS)
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        args.push(format!("--exclude-outbound-ports-for-uids={item}"));
    }
    let gateway = annotations
        .get(GATEWAY)
        .is_some_and(|v| parse_enabled(GATEWAY, v).unwrap_or(false));
    if gateway {
        args.push("--redirect-inbound=false".into());
    } else {
        let inbound = get(a::TRANSPARENT_PROXYING_INBOUND_PORT);
        if !inbound.is_empty() && inbound != "15006" {
            args.push(format!("--redirect-inbound-port={inbound}"));
        }
        let mut excluded = get(EXCLUDE_INBOUND_PORTS).to_string();
        let probe_proxy = get(a::APPLICATION_PROBE_PROXY_PORT);
        if !probe_proxy.is_empty() && probe_proxy != "0" {
            if !excluded.is_empty() {
                excluded.push(',');
            }
            excluded.push_str(probe_proxy);
        }
        if !excluded.is_empty() {
            args.push(format!("--exclude-inbound-ports={excluded}"));
        }
        let inbound_ips: Vec<&str> = get(EXCLUDE_INBOUND_IPS)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if !inbound_ips.is_empty() {
            args.push(format!("--exclude-inbound-ips={}", inbound_ips.join(",")));
        }
    }
    if get(BUILTIN_DNS) == "enabled" {
        args.push("--redirect-all-dns-traffic".into());
        let port = get(BUILTIN_DNS_PORT);
        if !port.is_empty() && port != "15053" {
            args.push(format!("--redirect-dns-port={port}"));
        }
    }
    if matches!(get("traffic.kuma.io/drop-invalid-packets"), "true" | "yes") {
        args.push("--drop-invalid-packets".into());
    }
    if matches!(get("traffic.kuma.io/iptables-logs"), "true" | "yes") {
        args.push("--iptables-logs".into());
    }
    args.push("--verbose".into());
    let container = json!({
        "name": kuma_crds::kubernetes::INIT_CONTAINER,
        "image": config.init_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/bin/kumactl", "install", "transparent-proxy"],
        "args": args,
        "env": [{"name": "XTABLES_LOCKFILE", "value": "/tmp/xtables.lock"}],
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
        },
        "resources": resources(&config.init_resources, None),
        "volumeMounts": [{"name": "kuma-init-tmp", "mountPath": "/tmp"}],
    });
    serde_json::from_value(container).unwrap_or_default()
}
