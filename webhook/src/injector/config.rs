//! What the injector is configured with: Kuma's `runtime.kubernetes.
//! injector.*` settings (images, ports, resources, probes, DNS, excluded
//! traffic) with Kuma's defaults, plus the control plane's address and CA.

use std::collections::BTreeMap;
use std::time::Duration;

/// Probe timings (`initialDelaySeconds`, `timeoutSeconds`, `periodSeconds`,
/// `successThreshold`, `failureThreshold`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTimings {
    /// Initial delay.
    pub initial_delay_seconds: i32,
    /// Timeout.
    pub timeout_seconds: i32,
    /// Period.
    pub period_seconds: i32,
    /// Successes needed.
    pub success_threshold: i32,
    /// Failures tolerated.
    pub failure_threshold: i32,
}

/// CPU and memory quantities of a container (`None`: not set).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Resources {
    /// Requested CPU.
    pub requests_cpu: Option<String>,
    /// Requested memory.
    pub requests_memory: Option<String>,
    /// CPU limit.
    pub limits_cpu: Option<String>,
    /// Memory limit.
    pub limits_memory: Option<String>,
}

/// The injector's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectorConfig {
    /// The kuma-dp image.
    pub sidecar_image: String,
    /// The kuma-init image.
    pub init_image: String,
    /// The UID and GID kuma-dp runs as.
    pub uid: i64,
    /// The GID kuma-dp runs as.
    pub gid: i64,
    /// How long kuma-dp drains on stop.
    pub drain_time: Duration,
    /// The dp-server URL proxies use (`https://kuma-control-plane.<ns>:5678`).
    pub control_plane_url: String,
    /// The CA the dp-server's certificate is verified with (PEM).
    pub ca_cert_pem: String,
    /// The sidecar is a native sidecar (an init container that keeps running).
    pub native_sidecar: bool,
    /// Envoy's admin port.
    pub admin_port: u16,
    /// kuma-dp's readiness port.
    pub readiness_port: u16,
    /// Envoy's admin is not on TCP: probes go to the readiness port, which
    /// is left out of inbound redirection.
    pub admin_unix_socket: bool,
    /// Envoy's inbound redirect port.
    pub redirect_port_inbound: u16,
    /// Envoy's outbound redirect port.
    pub redirect_port_outbound: u16,
    /// `dualstack` or `ipv4`.
    pub ip_family_mode: String,
    /// kuma-dp answers DNS (the init container redirects it).
    pub builtin_dns: bool,
    /// kuma-dp's DNS port.
    pub builtin_dns_port: u16,
    /// Log DNS queries.
    pub builtin_dns_logging: bool,
    /// The application probe proxy's port (0: off, virtual probes instead).
    pub application_probe_proxy_port: u16,
    /// Virtual probes when the application probe proxy is off (Kuma's
    /// `virtualProbesEnabled`; a Pod's `kuma.io/virtual-probes` decides).
    pub virtual_probes_enabled: bool,
    /// The virtual probes' port.
    pub virtual_probes_port: u16,
    /// Inbound ports never redirected.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports never redirected.
    pub exclude_outbound_ports: Vec<u16>,
    /// Sources never redirected.
    pub exclude_inbound_ips: Vec<String>,
    /// Destinations never redirected.
    pub exclude_outbound_ips: Vec<String>,
    /// Pods with these labels are never injected (`*`: any value).
    pub exception_labels: BTreeMap<String, String>,
    /// The sidecar's resources.
    pub sidecar_resources: Resources,
    /// The init container's resources.
    pub init_resources: Resources,
    /// Readiness probe timings.
    pub readiness_probe: ProbeTimings,
    /// Liveness probe timings.
    pub liveness_probe: ProbeTimings,
    /// Startup probe timings (native sidecars).
    pub startup_probe: ProbeTimings,
    /// Extra environment of the sidecar.
    pub env_vars: BTreeMap<String, String>,
    /// The app waits until the proxy is ready.
    pub wait_for_dataplane_ready: bool,
    /// Proxies use delta xDS.
    pub delta_xds: bool,
    /// The namespace the control plane runs in (never injected).
    pub system_namespace: String,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        InjectorConfig {
            sidecar_image: "kuma/kuma-dp:2.14.3".into(),
            init_image: "kuma/kuma-init:2.14.3".into(),
            uid: 5678,
            gid: 5678,
            drain_time: Duration::from_secs(30),
            control_plane_url: "https://kuma-control-plane.kuma-system:5678".into(),
            ca_cert_pem: String::new(),
            native_sidecar: true,
            admin_port: 9901,
            readiness_port: 9902,
            admin_unix_socket: true,
            redirect_port_inbound: 15006,
            redirect_port_outbound: 15001,
            ip_family_mode: "dualstack".into(),
            builtin_dns: true,
            builtin_dns_port: 15053,
            builtin_dns_logging: false,
            application_probe_proxy_port: 9001,
            virtual_probes_enabled: true,
            virtual_probes_port: 9000,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_inbound_ips: Vec::new(),
            exclude_outbound_ips: Vec::new(),
            exception_labels: [
                ("openshift.io/build.name".to_string(), "*".to_string()),
                ("openshift.io/deployer-pod-for.name".to_string(), "*".to_string()),
            ]
            .into_iter()
            .collect(),
            sidecar_resources: Resources {
                requests_cpu: Some("50m".into()),
                requests_memory: Some("64Mi".into()),
                limits_cpu: None,
                limits_memory: Some("512Mi".into()),
            },
            init_resources: Resources {
                requests_cpu: Some("20m".into()),
                requests_memory: Some("20M".into()),
                limits_cpu: None,
                limits_memory: Some("50M".into()),
            },
            readiness_probe: ProbeTimings {
                initial_delay_seconds: 1,
                timeout_seconds: 3,
                period_seconds: 5,
                success_threshold: 1,
                failure_threshold: 12,
            },
            liveness_probe: ProbeTimings {
                initial_delay_seconds: 60,
                timeout_seconds: 3,
                period_seconds: 5,
                success_threshold: 1,
                failure_threshold: 12,
            },
            startup_probe: ProbeTimings {
                initial_delay_seconds: 1,
                timeout_seconds: 3,
                period_seconds: 5,
                success_threshold: 1,
                failure_threshold: 12,
            },
            env_vars: BTreeMap::new(),
            wait_for_dataplane_ready: false,
            delta_xds: false,
            system_namespace: "kuma-system".into(),
        }
    }
}

impl InjectorConfig {
    /// The port the sidecar's probes use: the readiness port when Envoy's
    /// admin is on a Unix socket, else the admin port.
    pub fn probe_port(&self, admin_port: u16) -> u16 {
        if self.admin_unix_socket {
            self.readiness_port
        } else {
            admin_port
        }
    }
}
