//! Probes through kuma-dp's application probe proxy (port 9001 by
//! default), as Kuma rewrites them: with mTLS the kubelet cannot reach the
//! app through Envoy, so it asks kuma-dp, which probes the app locally.
//! HTTP `GET /<port><path>` (headers kept, `Host` renamed
//! `X-Kuma-Probes-Host`, `X-Kuma-Probes-Scheme` and `-Timeout` added), TCP
//! `GET /tcp/<port>`, gRPC `GET /grpc/<port>`; exec probes are left alone.
//!
//! With the probe proxy off, Kuma's older virtual probes: HTTP probes go to
//! Envoy's probe listener (port 9000) as `GET /<port><path>`, which routes
//! them to the app; TCP, gRPC and HTTPS probes are left alone.

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::InjectError;

fn port_number(container: &Container, port: &IntOrString) -> Result<i32, InjectError> {
    match port {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| {
                InjectError::Probe(format!(
                    "container {:?} has no port named {name:?} for its probe",
                    container.name
                ))
            }),
    }
}

fn header(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

/// The port and absolute path an HTTP probe asks for; its port may not be
/// `reserved`, the port kuma-dp or Envoy answers probes on.
fn http_target(
    container: &Container,
    get: &HTTPGetAction,
    reserved: u16,
) -> Result<(i32, String), InjectError> {
    let port = port_number(container, &get.port)?;
    if port == i32::from(reserved) {
        return Err(InjectError::Probe(format!(
            "cannot override Pod's probes. Port for probe cannot be set to {reserved}. It is reserved for the dataplane that will serve pods without mTLS."
        )));
    }
    let path = get.path.clone().unwrap_or_default();
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    Ok((port, path))
}

/// The probe through the proxy on `proxy_port`; `None` to leave it.
fn rewritten(container: &Container, probe: &Probe, proxy_port: u16) -> Result<Option<Probe>, InjectError> {
    let timeout = probe.timeout_seconds.unwrap_or(1);
    let (path, mut headers) = if let Some(get) = &probe.http_get {
        let (port, path) = http_target(container, get, proxy_port)?;
        let mut headers: Vec<Value> = get
            .http_headers
            .iter()
            .flatten()
            .map(|h| {
                let name = if h.name.eq_ignore_ascii_case("host") {
                    "X-Kuma-Probes-Host"
                } else {
                    h.name.as_str()
                };
                header(name, &h.value)
            })
            .collect();
        if get
            .scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
        {
            headers.push(header("X-Kuma-Probes-Scheme", "HTTPS"));
        }
        (format!("/{port}{path}"), headers)
    } else if let Some(tcp) = &probe.tcp_socket {
        let port = port_number(container, &tcp.port)?;
        (format!("/tcp/{port}"), Vec::new())
    } else if let Some(grpc) = &probe.grpc {
        (format!("/grpc/{}", grpc.port), Vec::new())
    } else {
        return Ok(None);
    };
    if timeout > 1 {
        headers.push(header("X-Kuma-Probes-Timeout", &timeout.to_string()));
    }
    if let Some(service) = probe.grpc.as_ref().and_then(|g| g.service.clone()) {
        headers.push(header("X-Kuma-Probes-GRPC-Service", &service));
    }
    let mut value = serde_json::to_value(probe).map_err(|e| InjectError::Probe(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        obj.remove("tcpSocket");
        obj.remove("grpc");
        let mut get = json!({"path": path, "port": proxy_port});
        if !headers.is_empty() {
            get["httpHeaders"] = Value::Array(headers);
        }
        obj.insert("httpGet".into(), get);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| InjectError::Probe(e.to_string()))
}

/// Applies `edit` to every probe of the app containers and of the native
/// sidecars the app added (with the container as it was before).
fn each_app_probe(
    spec: &mut PodSpec,
    mut edit: impl FnMut(&Container, &mut Probe) -> Result<(), InjectError>,
) -> Result<(), InjectError> {
    let sidecars = spec
        .init_containers
        .iter_mut()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    for container in spec.containers.iter_mut().chain(sidecars) {
        let before = container.clone();
        for probe in [
            &mut container.liveness_probe,
            &mut container.readiness_probe,
            &mut container.startup_probe,
        ]
        .into_iter()
        .flatten()
        {
            edit(&before, probe)?;
        }
    }
    Ok(())
}

/// Rewrites the probes of the app containers (and of native sidecars the
/// app added) to go through the proxy on `proxy_port`.
pub fn rewrite(spec: &mut PodSpec, proxy_port: u16) -> Result<(), InjectError> {
    each_app_probe(spec, |container, probe| {
        if let Some(new) = rewritten(container, probe, proxy_port)? {
            *probe = new;
        }
        Ok(())
    })
}

/// The probes of the app containers (and of native sidecars the app
/// added) as virtual probes on `virtual_port`: each plain-HTTP `GET` goes
/// to `/<port><path>` there; other probes stay as written.
pub fn rewrite_virtual(spec: &mut PodSpec, virtual_port: u16) -> Result<(), InjectError> {
    each_app_probe(spec, |container, probe| {
        let Some(get) = probe.http_get.as_mut() else {
            return Ok(());
        };
        if get
            .scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
        {
            return Ok(());
        }
        let (port, path) = http_target(container, get, virtual_port)?;
        get.path = Some(format!("/{port}{path}"));
        get.port = IntOrString::Int(i32::from(virtual_port));
        Ok(())
    })
}
