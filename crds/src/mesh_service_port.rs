//! MeshService ports as destinations of the mesh: what a client's outbound
//! to a MeshService port is generated from (its legacy name, VIP, host names,
//! protocol, the inbounds that serve it and the identities they present).
//! Pure: the control plane digests the mesh's MeshServices and Dataplanes
//! through these functions.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::common::IntOrString;
use crate::dataplane::{Inbound, SERVICE_TAG};
use crate::dns::is_dns_name;
use crate::mesh::MeshServicesMode;
use crate::mesh_service::{IdentityType, MeshServiceSpec, MeshServiceStatus, Selector};
use crate::resource::{Meta, NAMESPACE_LABEL, ZONE_LABEL};

/// The domain of the host names Kuma's default generator gives MeshServices
/// of a Universal zone (`local-universal-mesh-service`:
/// `{{ .DisplayName }}.svc.mesh.local`).
pub const UNIVERSAL_SUFFIX: &str = "svc.mesh.local";

/// One port of a MeshService.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshServicePort {
    /// Kuma's legacy name of its clusters: `<mesh>_<name>_<namespace>_<zone>_msvc_<port>`.
    pub name: String,
    /// The port clients call.
    pub port: u32,
    /// Which inbound serves it: a port number or an inbound name.
    pub target_port: Option<IntOrString>,
    /// `appProtocol`, `tcp` when absent.
    pub protocol: String,
    /// The VIP from the status (Kubernetes: the Service's ClusterIP).
    pub vip: Option<Ipv4Addr>,
    /// The names clients resolve to the VIP.
    pub hostnames: Vec<String>,
    /// The `kuma.io/service` identities its proxies present; empty when the
    /// MeshService names none (then those of the inbounds that serve it).
    pub identities: Vec<String>,
    /// Which dataplanes serve it.
    pub selector: Selector,
    /// The MeshService's name as policies name it (`kuma.io/display-name`).
    pub service_name: String,
    /// Its Kubernetes namespace, if any.
    pub namespace: Option<String>,
    /// Its labels (policies select MeshServices by them).
    pub labels: BTreeMap<String, String>,
    /// The port's name (a policy's `sectionName` names it, or the number).
    pub port_name: Option<String>,
}

/// Whether a mesh in this mode has outbounds to its MeshServices.
pub fn mode_uses_mesh_services(mode: Option<MeshServicesMode>) -> bool {
    matches!(
        mode,
        Some(MeshServicesMode::Everywhere | MeshServicesMode::Exclusive)
    )
}

/// Whether `kuma.io/service` outbounds are generated in this mode (not
/// when MeshServices replace them).
pub fn mode_uses_service_tags(mode: Option<MeshServicesMode>) -> bool {
    mode != Some(MeshServicesMode::Exclusive)
}

/// The destinations of one MeshService, one per port.
pub fn ports_of(meta: &Meta, spec: &MeshServiceSpec, status: Option<&Value>) -> Vec<MeshServicePort> {
    let Some(selector) = spec.selector.clone() else {
        return Vec::new();
    };
    let status: MeshServiceStatus = status
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let vip = status
        .vips
        .iter()
        .flatten()
        .find_map(|v| v.ip.parse::<Ipv4Addr>().ok());
    let hostnames = hostnames(meta, &status);
    let identities: Vec<String> = spec
        .identities
        .iter()
        .flatten()
        .filter(|i| i.identity_type == IdentityType::ServiceTag)
        .map(|i| i.value.clone())
        .collect();
    let mesh = meta.mesh_or_default();
    let namespace = meta
        .namespace
        .clone()
        .or_else(|| meta.labels.get(NAMESPACE_LABEL).cloned())
        .unwrap_or_default();
    let zone = meta.labels.get(ZONE_LABEL).cloned().unwrap_or_default();
    spec.ports
        .iter()
        .flatten()
        .map(|p| MeshServicePort {
            name: format!(
                "{mesh}_{}_{namespace}_{zone}_msvc_{}",
                meta.display_name(),
                p.port
            ),
            port: p.port,
            target_port: p.target_port.clone(),
            protocol: p.app_protocol.clone().unwrap_or_else(|| "tcp".into()),
            vip,
            hostnames: hostnames.clone(),
            identities: identities.clone(),
            selector: selector.clone(),
            service_name: meta.display_name().to_string(),
            namespace: (!namespace.is_empty()).then(|| namespace.clone()),
            labels: meta.labels.clone(),
            port_name: p.name.clone(),
        })
        .collect()
}

/// The host names of a MeshService: those its status lists (written by a
/// HostnameGenerator) or, when none, what Kuma's default generators give:
/// `<name>.svc.mesh.local` in a Universal zone; on Kubernetes the
/// Service's cluster names (`<name>.<namespace>.svc.cluster.local`, and
/// `<name>.<namespace>.svc`, `<name>.<namespace>` as a pod resolves them).
fn hostnames(meta: &Meta, status: &MeshServiceStatus) -> Vec<String> {
    let listed: Vec<String> = status
        .addresses
        .iter()
        .flatten()
        .filter_map(|a| a.hostname.clone())
        .collect();
    let name = meta.display_name();
    let names = if !listed.is_empty() {
        listed
    } else if let Some(ns) = meta
        .namespace
        .as_deref()
        .or(meta.labels.get(NAMESPACE_LABEL).map(String::as_str))
    {
        vec![
            format!("{name}.{ns}.svc.cluster.local"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}"),
        ]
    } else {
        vec![format!("{name}.{UNIVERSAL_SUFFIX}")]
    };
    names.into_iter().filter(|n| is_dns_name(n)).collect()
}

impl MeshServicePort {
    /// Whether `inbound` of a dataplane (its name and labels) serves this
    /// port: the dataplane is selected and the inbound is the target port
    /// (by number or name; the first inbound when none is given).
    pub fn served_by(
        &self,
        dataplane_name: &str,
        dataplane_labels: &BTreeMap<String, String>,
        inbound: &Inbound,
        first: bool,
    ) -> bool {
        let tags = inbound.tags.as_ref();
        let selected = if let Some(wanted) = &self.selector.dataplane_tags {
            tags.is_some_and(|t| wanted.iter().all(|(k, v)| t.get(k) == Some(v)))
        } else if let Some(r) = &self.selector.dataplane_ref {
            r.name == dataplane_name
        } else if let Some(labels) = &self.selector.dataplane_labels {
            labels
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| dataplane_labels.get(k) == Some(v))
        } else {
            false
        };
        selected
            && match &self.target_port {
                Some(IntOrString::Int(p)) => i64::from(inbound.port) == *p,
                Some(IntOrString::String(name)) => inbound.name.as_deref() == Some(name.as_str()),
                None => first,
            }
    }

    /// The identities clients require of its endpoints: the ones it names,
    /// else the `kuma.io/service` of each serving inbound.
    pub fn required_identities<'a>(&self, serving: impl IntoIterator<Item = &'a Inbound>) -> Vec<String> {
        if !self.identities.is_empty() {
            return self.identities.clone();
        }
        let mut out: Vec<String> = serving
            .into_iter()
            .filter_map(|i| i.tags.as_ref()?.get(SERVICE_TAG).cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format;
    use crate::resource::Spec;

    fn parse(yaml: &str) -> Vec<MeshServicePort> {
        let r = format::parse(yaml).expect("valid");
        let Spec::MeshService(spec) = &r.spec else {
            panic!("not a MeshService")
        };
        ports_of(&r.meta, spec, r.status.as_ref())
    }

    #[test]
    fn a_universal_mesh_service_gets_the_default_host_name_and_legacy_names() {
        let d = parse(
            "type: MeshService\nname: backend\nmesh: default\nspec:\n  selector:\n    dataplaneTags:\n      kuma.io/service: backend\n  ports:\n    - port: 80\n      targetPort: 8080\n      appProtocol: http\n    - port: 9090\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "default_backend___msvc_80");
        assert_eq!(d[0].hostnames, vec!["backend.svc.mesh.local"]);
        assert_eq!(d[0].protocol, "http");
        assert_eq!(d[1].protocol, "tcp");
        assert_eq!(d[0].vip, None);
    }

    #[test]
    fn status_host_names_and_vips_win() {
        let d = parse(
            "type: MeshService\nname: backend\nmesh: default\nlabels:\n  kuma.io/zone: zone-1\nspec:\n  selector:\n    dataplaneTags:\n      app: b\n  ports:\n    - port: 80\n  identities:\n    - type: ServiceTag\n      value: backend\nstatus:\n  addresses:\n    - hostname: backend.mesh\n  vips:\n    - ip: 241.0.0.7\n",
        );
        assert_eq!(d[0].name, "default_backend__zone-1_msvc_80");
        assert_eq!(d[0].hostnames, vec!["backend.mesh"]);
        assert_eq!(d[0].vip, Some(Ipv4Addr::new(241, 0, 0, 7)));
        assert_eq!(d[0].identities, vec!["backend"]);
    }

    #[test]
    fn inbounds_serve_by_port_number_or_name() {
        let d = parse(
            "type: MeshService\nname: backend\nmesh: default\nspec:\n  selector:\n    dataplaneTags:\n      app: b\n  ports:\n    - port: 80\n      targetPort: 8080\n    - port: 81\n      targetPort: admin\n",
        );
        let inbound = |port: u32, name: Option<&str>, app: &str| Inbound {
            port,
            name: name.map(String::from),
            tags: Some(BTreeMap::from([
                ("app".to_string(), app.to_string()),
                (SERVICE_TAG.to_string(), "b_svc".to_string()),
            ])),
            ..Default::default()
        };
        let none = BTreeMap::new();
        assert!(d[0].served_by("dp", &none, &inbound(8080, None, "b"), true));
        assert!(!d[0].served_by("dp", &none, &inbound(8081, None, "b"), true));
        assert!(!d[0].served_by("dp", &none, &inbound(8080, None, "c"), true));
        assert!(d[1].served_by("dp", &none, &inbound(9000, Some("admin"), "b"), false));
        assert_eq!(
            d[0].required_identities([&inbound(8080, None, "b")]),
            vec!["b_svc"]
        );
    }
}
