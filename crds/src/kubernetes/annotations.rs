//! Kuma's Pod, Namespace and Service labels and annotations (Kuma's
//! `pkg/plugins/runtime/k8s/metadata/annotations.go` names).

/// Namespace or Pod label turning injection on or off.
pub const SIDECAR_INJECTION: &str = "kuma.io/sidecar-injection";
/// Set by the injector on Pods it injected.
pub const SIDECAR_INJECTED: &str = "kuma.io/sidecar-injected";
/// The UID kuma-dp runs as (written by the injector, legacy tproxy mode).
pub const SIDECAR_UID: &str = "kuma.io/sidecar-uid";
/// Envoy's admin port.
pub const ENVOY_ADMIN_PORT: &str = "kuma.io/envoy-admin-port";
/// `enabled` when traffic is redirected into Envoy.
pub const TRANSPARENT_PROXYING: &str = "kuma.io/transparent-proxying";
/// The port inbound traffic is redirected to.
pub const TRANSPARENT_PROXYING_INBOUND_PORT: &str = "kuma.io/transparent-proxying-inbound-port";
/// The port outbound traffic is redirected to.
pub const TRANSPARENT_PROXYING_OUTBOUND_PORT: &str = "kuma.io/transparent-proxying-outbound-port";
/// `dualstack` or `ipv4`.
pub const TRANSPARENT_PROXYING_IP_FAMILY_MODE: &str = "kuma.io/transparent-proxying-ip-family-mode";
/// Services reached with direct access (comma-separated, `*` for all).
pub const DIRECT_ACCESS_SERVICES: &str = "kuma.io/direct-access-services";
/// The only `kuma.io/service`s the proxy reaches (comma-separated).
pub const REACHABLE_SERVICES: &str = "kuma.io/transparent-proxying-reachable-services";
/// The only backends the proxy reaches (YAML `refs`).
pub const REACHABLE_BACKENDS: &str = "kuma.io/reachable-backends";
/// The transparent proxy configuration as JSON (ConfigMap mode).
pub const TRANSPARENT_PROXY_CONFIG: &str = "traffic.kuma.io/transparent-proxy-config";
/// Prometheus metrics port of the proxy.
pub const METRICS_PORT: &str = "prometheus.metrics.kuma.io/port";
/// Prometheus metrics path of the proxy.
pub const METRICS_PATH: &str = "prometheus.metrics.kuma.io/path";
/// `enabled` for virtual probes.
pub const VIRTUAL_PROBES: &str = "kuma.io/virtual-probes";
/// The virtual probes port.
pub const VIRTUAL_PROBES_PORT: &str = "kuma.io/virtual-probes-port";
/// The application probe proxy port (0 turns it off).
pub const APPLICATION_PROBE_PROXY_PORT: &str = "kuma.io/application-probe-proxy-port";
/// The services a Pod serves as, written by the injector.
pub const SERVICE: &str = "kuma.io/service";
/// Service annotation: `<port>.service.kuma.io/protocol`.
pub const SERVICE_PROTOCOL_SUFFIX: &str = ".service.kuma.io/protocol";
/// Computed Dataplane label: the Pod's ServiceAccount.
pub const SERVICE_ACCOUNT_LABEL: &str = "k8s.kuma.io/service-account";
/// Inbound tag: the Service's name.
pub const SERVICE_NAME_TAG: &str = "k8s.kuma.io/service-name";
/// Inbound tag: the Service's port.
pub const SERVICE_PORT_TAG: &str = "k8s.kuma.io/service-port";
/// The label of objects the control plane manages.
pub const MANAGED_BY_LABEL: &str = "kuma.io/managed-by";
