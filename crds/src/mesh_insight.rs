//! Kuma's MeshInsight and ServiceInsights. MeshInsight: a mesh at a glance (dataplanes online, offline and
//! partially degraded, by type and by version; issued mTLS backends;
//! services; how many resources of each kind), computed from plain data as
//! Kuma computes it and shaped as its REST API returns it (`GET
//! /mesh-insights`): spec fields beside the metadata, zero counts and empty
//! maps left out, map keys sorted. ServiceInsight: each service's proxies
//! online and offline (`GET /meshes/{mesh}/service-insights`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::dataplane::{DataplaneSpec, GatewayType, InboundState};
use crate::insight::DataplaneInsightSpec;
use crate::resource::{Resource, ResourceType, Scope};

/// One dataplane of the mesh and what is known of its proxy.
pub struct DataplaneState<'a> {
    pub spec: &'a DataplaneSpec,
    /// Its insight (stored and live, merged), if the proxy was ever seen.
    pub insight: Option<&'a DataplaneInsightSpec>,
}

/// A dataplane's status as Kuma's insight resyncer decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Online,
    Offline,
    PartiallyDegraded,
}

impl DataplaneState<'_> {
    fn connected(&self) -> bool {
        self.insight.is_some_and(|i| {
            i.subscriptions
                .iter()
                .any(|s| s.connect_time.is_some() && s.disconnect_time.is_none())
        })
    }

    /// A gateway is online when connected; any other proxy needs every
    /// inbound ready (some ready: partially degraded; none, or no inbound
    /// at all: offline).
    pub fn status(&self) -> Status {
        let connected = self.connected();
        if self.spec.networking().gateway.is_some() {
            return if connected {
                Status::Online
            } else {
                Status::Offline
            };
        }
        let inbounds: Vec<_> = self
            .spec
            .inbounds()
            .iter()
            .filter(|i| i.state != Some(InboundState::Ignored))
            .collect();
        let ready = inbounds.iter().filter(|i| i.is_ready()).count();
        match (connected, ready) {
            (false, _) | (true, 0) => Status::Offline,
            (true, r) if r < inbounds.len() => Status::PartiallyDegraded,
            _ => Status::Online,
        }
    }

    /// The last stream's kuma-dp and Envoy versions ("unknown" when not
    /// reported).
    fn versions(&self) -> (String, String) {
        let version = self
            .insight
            .and_then(|i| i.subscriptions.last())
            .and_then(|s| s.version.as_ref());
        let of = |component: &str| {
            version
                .and_then(|v| v.pointer(&format!("/{component}/version")))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .unwrap_or("unknown")
                .to_string()
        };
        (of("kumaDp"), of("envoy"))
    }
}

/// Counts by status, in Kuma's JSON (zeros left out).
#[derive(Clone, Copy, Debug, Default)]
struct Stat {
    total: u64,
    online: u64,
    offline: u64,
    partially_degraded: u64,
}

impl Stat {
    /// Kuma counts every status; `total` follows what Kuma's resyncer
    /// adds (for versions and backends, online and offline only).
    fn add(&mut self, status: Status, count_degraded_in_total: bool) {
        match status {
            Status::Online => self.online += 1,
            Status::Offline => self.offline += 1,
            Status::PartiallyDegraded => self.partially_degraded += 1,
        }
        if status != Status::PartiallyDegraded || count_degraded_in_total {
            self.total += 1;
        }
    }

    fn json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("total", self.total),
            ("online", self.online),
            ("offline", self.offline),
            ("partiallyDegraded", self.partially_degraded),
        ] {
            if v > 0 {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }
}

fn stats_json(stats: &BTreeMap<String, Stat>) -> Value {
    Value::Object(stats.iter().map(|(k, s)| (k.clone(), s.json())).collect())
}

fn totals_json(counts: &BTreeMap<ResourceType, usize>, keep: impl Fn(ResourceType) -> bool) -> Option<Value> {
    let m: Map<String, Value> = counts
        .iter()
        .filter(|(t, n)| **n > 0 && keep(**t))
        .map(|(t, n)| (t.name().to_string(), json!({ "total": n })))
        .collect();
    (!m.is_empty()).then_some(Value::Object(m))
}

/// The kinds a MeshInsight counts: mesh-scoped, insights excluded.
pub fn counted(t: ResourceType) -> bool {
    t.descriptor().scope == Scope::Mesh && !t.name().ends_with("Insight")
}

/// The MeshInsight of `mesh`, from its dataplanes and the number of
/// resources of each [`counted`] kind in it.
pub fn mesh_insight(
    mesh: &Resource,
    dataplanes: &[DataplaneState<'_>],
    counts: &BTreeMap<ResourceType, usize>,
) -> Value {
    let mut all = Stat::default();
    let mut by_type: BTreeMap<&str, Stat> = ["standard", "gateway", "gatewayBuiltin", "gatewayDelegated"]
        .into_iter()
        .map(|k| (k, Stat::default()))
        .collect();
    let mut kuma_dp: BTreeMap<String, Stat> = BTreeMap::new();
    let mut envoy: BTreeMap<String, Stat> = BTreeMap::new();
    let mut issued: BTreeMap<String, Stat> = BTreeMap::new();
    let mut supported: BTreeMap<String, Stat> = BTreeMap::new();
    let mut services: BTreeSet<&str> = BTreeSet::new();
    for dp in dataplanes {
        let status = dp.status();
        all.add(status, true);
        match dp.spec.networking().gateway.as_ref() {
            None => by_type.entry("standard").or_default().add(status, true),
            Some(g) => {
                by_type.entry("gateway").or_default().add(status, true);
                let kind = match g.gateway_type.unwrap_or_default() {
                    GatewayType::BUILTIN => "gatewayBuiltin",
                    GatewayType::DELEGATED => "gatewayDelegated",
                };
                by_type.entry(kind).or_default().add(status, true);
                if let Some(s) = g.tags.as_ref().and_then(|t| t.get(crate::dataplane::SERVICE_TAG)) {
                    services.insert(s);
                }
            }
        }
        let (dp_version, envoy_version) = dp.versions();
        kuma_dp.entry(dp_version).or_default().add(status, false);
        envoy.entry(envoy_version).or_default().add(status, false);
        if let Some(mtls) = dp.insight.and_then(|i| i.mtls.as_ref()) {
            if !mtls.issued_backend.is_empty() {
                issued
                    .entry(mtls.issued_backend.clone())
                    .or_default()
                    .add(status, false);
            }
            for b in &mtls.supported_backends {
                supported.entry(b.clone()).or_default().add(status, false);
            }
        }
        for inbound in dp.spec.inbounds() {
            if inbound.state != Some(InboundState::Ignored)
                && let Some(s) = inbound.service()
            {
                services.insert(s);
            }
        }
    }

    let mut out = Map::new();
    out.insert("type".into(), json!("MeshInsight"));
    out.insert("name".into(), json!(mesh.meta.name));
    if let Some(t) = &mesh.meta.creation_time {
        out.insert("creationTime".into(), json!(t));
    }
    if let Some(t) = &mesh.meta.modification_time {
        out.insert("modificationTime".into(), json!(t));
    }
    out.insert("dataplanes".into(), all.json());
    if let Some(p) = totals_json(counts, ResourceType::is_policy) {
        out.insert("policies".into(), p);
    }
    let mut versions = Map::new();
    for (k, stats) in [("kumaDp", &kuma_dp), ("envoy", &envoy)] {
        if !stats.is_empty() {
            versions.insert(k.into(), stats_json(stats));
        }
    }
    out.insert("dpVersions".into(), Value::Object(versions));
    let mut mtls = Map::new();
    for (k, stats) in [("issuedBackends", &issued), ("supportedBackends", &supported)] {
        if !stats.is_empty() {
            mtls.insert(k.into(), stats_json(stats));
        }
    }
    out.insert("mTLS".into(), Value::Object(mtls));
    let internal = services.len();
    let mut svc = Map::new();
    if internal > 0 {
        svc.insert("total".into(), json!(internal));
        svc.insert("internal".into(), json!(internal));
    }
    out.insert("services".into(), Value::Object(svc));
    out.insert(
        "dataplanesByType".into(),
        Value::Object(by_type.iter().map(|(k, s)| (k.to_string(), s.json())).collect()),
    );
    if let Some(r) = totals_json(counts, |_| true) {
        out.insert("resources".into(), r);
    }
    Value::Object(out)
}

/// One service's counts while its insight is built.
#[derive(Default)]
struct ServiceCounts {
    online: u64,
    offline: u64,
    issued_backends: BTreeMap<String, u64>,
    service_type: Option<&'static str>,
    zones: BTreeSet<String>,
}

/// Kuma's ServiceInsight of every service of `mesh`, by name: a proxy
/// counts online only when fully online (partially degraded is offline
/// here, as in Kuma); a service is online when all its proxies are, offline
/// when none is.
pub fn service_insights(mesh: &str, dataplanes: &[DataplaneState<'_>]) -> BTreeMap<String, Value> {
    let mut services: BTreeMap<String, ServiceCounts> = BTreeMap::new();
    for dp in dataplanes {
        let online = dp.status() == Status::Online;
        let issued = dp
            .insight
            .and_then(|i| i.mtls.as_ref())
            .map(|m| m.issued_backend.clone())
            .filter(|b| !b.is_empty());
        let mut add = |name: &str, service_type: Option<&'static str>, zone: Option<&String>| {
            let c = services.entry(name.to_string()).or_default();
            if online {
                c.online += 1;
            } else {
                c.offline += 1;
            }
            if let Some(b) = &issued {
                *c.issued_backends.entry(b.clone()).or_default() += 1;
            }
            c.service_type = service_type;
            c.zones.extend(zone.cloned());
        };
        if let Some(g) = dp.spec.networking().gateway.as_ref() {
            let kind = match g.gateway_type.unwrap_or_default() {
                GatewayType::BUILTIN => "gateway_builtin",
                GatewayType::DELEGATED => "gateway_delegated",
            };
            if let Some(tags) = &g.tags
                && let Some(name) = tags.get(crate::dataplane::SERVICE_TAG)
            {
                add(name, Some(kind), tags.get(crate::dataplane::ZONE_TAG));
            }
        }
        for inbound in dp.spec.inbounds() {
            if inbound.state == Some(InboundState::Ignored) {
                continue;
            }
            if let Some(name) = inbound.service() {
                let zone = inbound
                    .tags
                    .as_ref()
                    .and_then(|t| t.get(crate::dataplane::ZONE_TAG));
                add(name, None, zone);
            }
        }
    }
    services
        .into_iter()
        .map(|(name, c)| {
            let status = match (c.online, c.offline) {
                (0, _) => "offline",
                (_, 0) => "online",
                _ => "partially_degraded",
            };
            let mut out = Map::new();
            out.insert("type".into(), json!("ServiceInsight"));
            out.insert("mesh".into(), json!(mesh));
            out.insert("name".into(), json!(name));
            out.insert("status".into(), json!(status));
            out.insert(
                "dataplanes".into(),
                Stat {
                    total: c.online + c.offline,
                    online: c.online,
                    offline: c.offline,
                    partially_degraded: 0,
                }
                .json(),
            );
            if !c.issued_backends.is_empty() {
                out.insert("issuedBackends".into(), json!(c.issued_backends));
            }
            match c.service_type {
                Some(t) => {
                    out.insert("serviceType".into(), json!(t));
                }
                None => {
                    out.insert("addressPort".into(), json!(format!("{name}.mesh:80")));
                }
            }
            if !c.zones.is_empty() {
                out.insert("zones".into(), json!(c.zones));
            }
            (name, Value::Object(out))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::parse;
    use crate::resource::Spec;

    fn dataplane(yaml: &str) -> DataplaneSpec {
        match parse(yaml).expect("dataplane").spec {
            Spec::Dataplane(d) => d,
            _ => panic!("a dataplane"),
        }
    }

    fn insight(connected: bool, kuma_dp: &str) -> DataplaneInsightSpec {
        serde_json::from_value(json!({
            "subscriptions": [{
                "id": "1",
                "controlPlaneInstanceId": "cp",
                "connectTime": "2026-01-01T00:00:00Z",
                "disconnectTime": if connected { Value::Null } else { json!("2026-01-01T00:01:00Z") },
                "status": {},
                "version": {"kumaDp": {"version": kuma_dp}, "envoy": {"version": "1.40.0"}}
            }],
            "mTLS": {"issuedBackend": "ca-1", "supportedBackends": ["ca-1"]}
        }))
        .expect("insight")
    }

    #[test]
    fn counts_as_kuma_does() {
        let mesh = parse("type: Mesh\nname: default\n").expect("mesh");
        let two_inbounds = "type: Dataplane\nmesh: default\nname: web\nnetworking:\n  address: 10.0.0.1\n  inbound:\n    - port: 80\n      tags:\n        kuma.io/service: web\n    - port: 81\n      state: NotReady\n      tags:\n        kuma.io/service: web-admin\n";
        let one_inbound = "type: Dataplane\nmesh: default\nname: db\nnetworking:\n  address: 10.0.0.2\n  inbound:\n    - port: 5432\n      tags:\n        kuma.io/service: db\n";
        let gateway = "type: Dataplane\nmesh: default\nname: edge\nnetworking:\n  address: 10.0.0.3\n  gateway:\n    tags:\n      kuma.io/service: edge\n";
        let (web, db, edge) = (
            dataplane(two_inbounds),
            dataplane(one_inbound),
            dataplane(gateway),
        );
        let (up, down) = (insight(true, "2.14.3"), insight(false, ""));
        let states = [
            DataplaneState {
                spec: &web,
                insight: Some(&up),
            },
            DataplaneState {
                spec: &db,
                insight: Some(&up),
            },
            DataplaneState {
                spec: &db,
                insight: Some(&down),
            },
            DataplaneState {
                spec: &edge,
                insight: None,
            },
        ];
        let statuses: Vec<Status> = states.iter().map(DataplaneState::status).collect();
        assert_eq!(
            statuses,
            [
                Status::PartiallyDegraded,
                Status::Online,
                Status::Offline,
                Status::Offline
            ]
        );
        let counts = BTreeMap::from([
            (ResourceType::Dataplane, 4),
            (ResourceType::MeshTimeout, 2),
            (ResourceType::MeshService, 0),
        ]);
        let got = mesh_insight(&mesh, &states, &counts);
        let expected = json!({
            "type": "MeshInsight",
            "name": "default",
            "dataplanes": {"total": 4, "online": 1, "offline": 2, "partiallyDegraded": 1},
            "policies": {"MeshTimeout": {"total": 2}},
            "dpVersions": {
                "kumaDp": {
                    "2.14.3": {"total": 1, "online": 1, "partiallyDegraded": 1},
                    "unknown": {"total": 2, "offline": 2}
                },
                "envoy": {
                    "1.40.0": {"total": 2, "online": 1, "offline": 1, "partiallyDegraded": 1},
                    "unknown": {"total": 1, "offline": 1}
                }
            },
            "mTLS": {
                "issuedBackends": {"ca-1": {"total": 2, "online": 1, "offline": 1, "partiallyDegraded": 1}},
                "supportedBackends": {"ca-1": {"total": 2, "online": 1, "offline": 1, "partiallyDegraded": 1}}
            },
            "services": {"total": 4, "internal": 4},
            "dataplanesByType": {
                "standard": {"total": 3, "online": 1, "offline": 1, "partiallyDegraded": 1},
                "gateway": {"total": 1, "offline": 1},
                "gatewayBuiltin": {},
                "gatewayDelegated": {"total": 1, "offline": 1}
            },
            "resources": {"Dataplane": {"total": 4}, "MeshTimeout": {"total": 2}}
        });
        assert_eq!(
            got,
            expected,
            "{}",
            serde_json::to_string_pretty(&got).unwrap_or_default()
        );

        let services = service_insights("default", &states);
        assert_eq!(
            services.keys().map(String::as_str).collect::<Vec<_>>(),
            ["db", "edge", "web", "web-admin"]
        );
        assert_eq!(
            services["db"],
            json!({
                "type": "ServiceInsight", "mesh": "default", "name": "db",
                "status": "partially_degraded",
                "dataplanes": {"total": 2, "online": 1, "offline": 1},
                "issuedBackends": {"ca-1": 2},
                "addressPort": "db.mesh:80"
            })
        );
        assert_eq!(
            services["web"]["status"], "offline",
            "a partially degraded proxy is offline here"
        );
        assert_eq!(services["edge"]["serviceType"], "gateway_delegated");
        assert!(services["edge"].get("addressPort").is_none());
    }
}
