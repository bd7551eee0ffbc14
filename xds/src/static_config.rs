//! A proxy's generated resources folded into one static Envoy bootstrap:
//! route configurations inlined into their listeners, EDS clusters turned
//! into static clusters carrying their load assignments, secrets listed
//! statically.
//!
//! `envoy --mode validate` checks such a bootstrap completely without a
//! control plane, which is how every golden file is proven loadable.

use serde_json::{Map, Value, json};

use crate::resources::{ResourceSet, XdsType};

/// The static bootstrap of `resources` for node `node_id`.
pub fn static_bootstrap(resources: &ResourceSet, node_id: &str) -> Value {
    let routes: Map<String, Value> = resources
        .of_type(XdsType::Route)
        .map(|g| (g.resource().name().to_string(), g.resource().to_json()))
        .collect();
    let assignments: Map<String, Value> = resources
        .of_type(XdsType::Endpoints)
        .map(|g| (g.resource().name().to_string(), g.resource().to_json()))
        .collect();
    let secrets: Vec<Value> = resources
        .of_type(XdsType::Secret)
        .map(|g| g.resource().to_json())
        .collect();
    let clusters: Vec<Value> = resources
        .of_type(XdsType::Cluster)
        .map(|g| {
            let mut cluster = g.resource().to_json();
            inline_assignment(&mut cluster, &assignments);
            inline_secrets(&mut cluster);
            cluster
        })
        .collect();
    let listeners: Vec<Value> = resources
        .of_type(XdsType::Listener)
        .map(|g| {
            let mut listener = g.resource().to_json();
            inline_routes(&mut listener, &routes);
            inline_secrets(&mut listener);
            listener
        })
        .collect();
    json!({
        "node": {"id": node_id, "cluster": node_id.split('.').nth(1).unwrap_or(node_id)},
        "admin": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 0}}},
        "staticResources": {"clusters": clusters, "listeners": listeners, "secrets": secrets},
    })
}

/// An EDS cluster becomes a static cluster with its load assignment.
fn inline_assignment(cluster: &mut Value, assignments: &Map<String, Value>) {
    let Some(obj) = cluster.as_object_mut() else {
        return;
    };
    if obj.get("type").and_then(Value::as_str) != Some("EDS") {
        return;
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let service = obj
        .get("edsClusterConfig")
        .and_then(|e| e.get("serviceName"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or(name.clone());
    obj.remove("edsClusterConfig");
    obj.insert("type".into(), "STATIC".into());
    let assignment = assignments
        .get(&service)
        .cloned()
        .unwrap_or_else(|| json!({"clusterName": name}));
    obj.insert("loadAssignment".into(), assignment);
}

/// Every `rds` of an HTTP connection manager becomes its `routeConfig`.
fn inline_routes(value: &mut Value, routes: &Map<String, Value>) {
    match value {
        Value::Object(obj) => {
            if let Some(rds) = obj.get("rds") {
                let name = rds
                    .get("routeConfigName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let route = routes.get(name).cloned().unwrap_or_else(|| json!({"name": name}));
                obj.remove("rds");
                obj.insert("routeConfig".into(), route);
            }
            for v in obj.values_mut() {
                inline_routes(v, routes);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| inline_routes(v, routes)),
        _ => {}
    }
}

/// SDS references drop their config source so they name static secrets.
fn inline_secrets(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            if obj.contains_key("sdsConfig") && obj.contains_key("name") {
                obj.remove("sdsConfig");
            }
            for v in obj.values_mut() {
                inline_secrets(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(inline_secrets),
        _ => {}
    }
}
