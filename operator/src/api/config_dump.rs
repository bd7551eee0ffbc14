//! The dataplane's configuration in the shape of Envoy's `/config_dump`
//! (what Kuma's `GET .../dataplanes/{name}/xds` and `kumactl inspect
//! dataplane --type config-dump` return), built from what this control
//! plane sent the proxy: Kuma asks the proxy's Envoy, which holds the same
//! configuration once it has acknowledged it.

use kuma_xds::resources::XdsType;
use serde_json::{Map, Value, json};

/// One xDS type as sent: its version and its resources (JSON, by name).
pub struct Sent {
    pub xds_type: XdsType,
    pub version: String,
    pub resources: Vec<(String, Value)>,
}

fn typed(type_url: &str, resource: Value) -> Value {
    let mut out = Map::new();
    out.insert("@type".into(), json!(type_url));
    if let Value::Object(fields) = resource {
        out.extend(fields);
    }
    Value::Object(out)
}

/// Envoy's `ConfigDump` of `sent`, endpoints only with `include_eds` (as
/// Envoy's `?include_eds`).
pub fn config_dump(sent: &[Sent], include_eds: bool) -> Value {
    const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";
    let mut configs = Vec::new();
    let order = [
        XdsType::Cluster,
        XdsType::Endpoints,
        XdsType::Listener,
        XdsType::Route,
        XdsType::Secret,
    ];
    for t in order {
        if t == XdsType::Endpoints && !include_eds {
            continue;
        }
        let Some(s) = sent.iter().find(|s| s.xds_type == t) else {
            continue;
        };
        let url = t.type_url();
        let entries: Vec<Value> = s
            .resources
            .iter()
            .map(|(name, r)| {
                let r = typed(url, r.clone());
                let v = &s.version;
                match t {
                    XdsType::Cluster => json!({"version_info": v, "cluster": r}),
                    XdsType::Endpoints => json!({"version_info": v, "endpoint_config": r}),
                    XdsType::Listener => {
                        json!({"name": name, "active_state": {"version_info": v, "listener": r}})
                    }
                    XdsType::Route => json!({"version_info": v, "route_config": r}),
                    XdsType::Secret => json!({"name": name, "version_info": v, "secret": r}),
                }
            })
            .collect();
        let (dump, key) = match t {
            XdsType::Cluster => ("ClustersConfigDump", "dynamic_active_clusters"),
            XdsType::Endpoints => ("EndpointsConfigDump", "dynamic_endpoint_configs"),
            XdsType::Listener => ("ListenersConfigDump", "dynamic_listeners"),
            XdsType::Route => ("RoutesConfigDump", "dynamic_route_configs"),
            XdsType::Secret => ("SecretsConfigDump", "dynamic_active_secrets"),
        };
        configs.push(json!({"@type": format!("{ADMIN}{dump}"), key: entries}));
    }
    json!({ "configs": configs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaped_as_envoys_config_dump() {
        let sent = [
            Sent {
                xds_type: XdsType::Listener,
                version: "v1".into(),
                resources: vec![(
                    "inbound:10.0.0.1:80".into(),
                    json!({"name": "inbound:10.0.0.1:80"}),
                )],
            },
            Sent {
                xds_type: XdsType::Cluster,
                version: "v2".into(),
                resources: vec![("web".into(), json!({"name": "web"}))],
            },
            Sent {
                xds_type: XdsType::Endpoints,
                version: "v3".into(),
                resources: vec![("web".into(), json!({"clusterName": "web"}))],
            },
        ];
        let dump = config_dump(&sent, false);
        assert_eq!(
            dump,
            json!({"configs": [
                {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                 "dynamic_active_clusters": [{"version_info": "v2", "cluster": {
                     "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "web"}}]},
                {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                 "dynamic_listeners": [{"name": "inbound:10.0.0.1:80", "active_state": {"version_info": "v1", "listener": {
                     "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "inbound:10.0.0.1:80"}}}]}
            ]})
        );
        let with_eds = config_dump(&sent, true);
        assert_eq!(
            with_eds["configs"][1]["dynamic_endpoint_configs"][0]["endpoint_config"]["clusterName"],
            "web"
        );
    }
}
