//! MeshProxyPatch: direct edits of the generated resources, applied last
//! and in order — add, remove and patch clusters, listeners, network and
//! HTTP filters and virtual hosts.
//!
//! Patches work on Envoy's JSON form: `value` (YAML) is merged the way
//! protobuf merges messages (objects field by field, lists appended,
//! scalars replaced) and `jsonPatches` are RFC 6902 patches. A modification
//! that cannot be applied is skipped and reported, never half-applied.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener};
use envoy_types::pb::envoy::config::route::v3::VirtualHost;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager,
};
use kuma_crds::policies::mesh_proxy_patch::{
    Conf, FilterMod, FilterOperation, JsonPatchBlock, Modification, ResourceOperation,
};
use kuma_crds::resource::ResourceType;
use serde_json::Value;

use crate::envoy;
use crate::generate::Policies;
use crate::proto;
use crate::resources::{Origin, Resource, ResourceSet, XdsType};

const T: ResourceType = ResourceType::MeshProxyPatch;

/// Why a modification could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The value is not valid YAML of the expected Envoy message.
    #[error("invalid value: {0}")]
    Value(String),
    /// A JSON patch failed.
    #[error("JSON patch failed: {0}")]
    JsonPatch(String),
}

/// Merges `src` into `dst` the way protobuf merges messages.
pub fn merge_json(dst: &mut Value, src: &Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(k) {
                    Some(existing) if k != "@type" => merge_json(existing, v),
                    _ => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(d), Value::Array(s)) => d.extend(s.iter().cloned()),
        (d, s) => *d = s.clone(),
    }
}

fn apply_json_patches(value: &mut Value, blocks: &[JsonPatchBlock]) -> Result<(), PatchError> {
    let ops: Vec<Value> = blocks
        .iter()
        .map(|b| {
            let mut op = serde_json::json!({"op": serde_json::to_value(b.op).unwrap_or_default(), "path": b.path.clone().unwrap_or_default()});
            if let Some(v) = &b.value {
                op["value"] = v.clone();
            }
            if let Some(f) = &b.from {
                op["from"] = Value::String(f.clone());
            }
            op
        })
        .collect();
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).map_err(|e| PatchError::JsonPatch(e.to_string()))?;
    json_patch::patch(value, &patch).map_err(|e| PatchError::JsonPatch(e.to_string()))
}

fn parse_value(text: &str) -> Result<Value, PatchError> {
    let y: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| PatchError::Value(e.to_string()))?;
    serde_json::to_value(y).map_err(|e| PatchError::Value(e.to_string()))
}

/// Edits a message through its JSON form.
fn edit<M: prost::Message + prost::Name + Default>(
    message: &M,
    value: &Option<String>,
    patches: &Option<Vec<JsonPatchBlock>>,
) -> Result<M, PatchError> {
    let mut json = proto::to_json(message).map_err(|e| PatchError::Value(e.to_string()))?;
    match (patches.as_ref().filter(|p| !p.is_empty()), value) {
        (Some(p), _) => apply_json_patches(&mut json, p)?,
        (None, Some(v)) => merge_json(&mut json, &parse_value(v)?),
        (None, None) => {}
    }
    proto::from_json(&json).map_err(|e| PatchError::Value(e.to_string()))
}

fn new_message<M: prost::Message + prost::Name + Default>(value: &Option<String>) -> Result<M, PatchError> {
    let json = parse_value(value.as_deref().unwrap_or(""))?;
    proto::from_json(&json).map_err(|e| PatchError::Value(e.to_string()))
}

fn origin_matches(wanted: &Option<String>, origin: Origin) -> bool {
    wanted.as_deref().is_none_or(|o| o == origin.as_str())
}

fn listener_tags_match(l: &Listener, tags: &Option<std::collections::BTreeMap<String, String>>) -> bool {
    let Some(tags) = tags else { return true };
    let Some(meta) = l
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get("io.kuma.tags"))
    else {
        return tags.is_empty();
    };
    tags.iter().all(|(k, v)| {
        matches!(meta.fields.get(k).and_then(|f| f.kind.as_ref()),
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) if s == v)
    })
}

fn apply_filter_list<F: Clone>(
    list: &mut Vec<F>,
    name_of: impl Fn(&F) -> &str,
    m: &FilterMod,
    parse: impl Fn() -> Result<F, PatchError>,
    patch: impl Fn(&F) -> Result<F, PatchError>,
) -> Result<(), PatchError> {
    let wanted = m.match_.as_ref().and_then(|mm| mm.name.as_deref());
    let matches = |f: &F| wanted.is_none_or(|w| w == name_of(f));
    match m.operation {
        FilterOperation::AddFirst => list.insert(0, parse()?),
        FilterOperation::AddLast => list.push(parse()?),
        FilterOperation::AddBefore | FilterOperation::AddAfter => {
            if let Some(i) = list.iter().position(|f| wanted == Some(name_of(f))) {
                let at = if m.operation == FilterOperation::AddBefore {
                    i
                } else {
                    i + 1
                };
                list.insert(at, parse()?);
            }
        }
        FilterOperation::Remove => list.retain(|f| !matches(f)),
        FilterOperation::Patch => {
            for f in list.iter_mut() {
                if matches(f) {
                    *f = patch(f)?;
                }
            }
        }
    }
    Ok(())
}

/// Patches a filter's typed config (patch paths are relative to it).
fn patch_typed_config<F: prost::Message + prost::Name + Default>(
    filter: &F,
    m: &FilterMod,
) -> Result<F, PatchError> {
    let mut json = proto::to_json(filter).map_err(|e| PatchError::Value(e.to_string()))?;
    let config = json
        .get_mut("typedConfig")
        .ok_or_else(|| PatchError::Value("filter has no typed config".into()))?;
    match (m.json_patches.as_ref().filter(|p| !p.is_empty()), &m.value) {
        (Some(p), _) => apply_json_patches(config, p)?,
        (None, Some(v)) => {
            let value = parse_value(v)?;
            merge_json(config, value.get("typedConfig").unwrap_or(&value));
        }
        (None, None) => {}
    }
    proto::from_json(&json).map_err(|e| PatchError::Value(e.to_string()))
}

fn for_each_hcm(
    l: &mut Listener,
    mut f: impl FnMut(&mut HttpConnectionManager) -> Result<(), PatchError>,
) -> Result<(), PatchError> {
    let mut result = Ok(());
    envoy::edit_hcms(l, |hcm| {
        if result.is_ok() {
            result = f(hcm);
        }
    });
    result
}

fn apply_one(m: &Modification, rs: &mut ResourceSet) -> Result<(), PatchError> {
    // Work on a copy so a failing modification changes nothing.
    let mut next = rs.clone();
    if let Some(c) = &m.cluster {
        let wanted = c.match_.clone().unwrap_or_default();
        match c.operation {
            ResourceOperation::Add => next.add(
                Origin::ProxyTemplateModifications,
                Resource::Cluster(new_message::<Cluster>(&c.value)?),
            ),
            ResourceOperation::Remove | ResourceOperation::Patch => {
                let mut result = Ok(());
                let hit = |origin: Origin, r: &Resource| {
                    matches!(r, Resource::Cluster(cl) if wanted.name.as_deref().is_none_or(|n| n == cl.name))
                        && origin_matches(&wanted.origin, origin)
                };
                if c.operation == ResourceOperation::Remove {
                    next.retain(|g| !hit(g.origin(), g.resource()));
                } else {
                    for mut g in next.iter_mut() {
                        if !hit(g.origin(), g.resource()) || result.is_err() {
                            continue;
                        }
                        if let Resource::Cluster(cl) = g.resource_mut() {
                            match edit(cl, &c.value, &c.json_patches) {
                                Ok(new) => *cl = new,
                                Err(e) => result = Err(e),
                            }
                        }
                    }
                }
                result?;
            }
        }
    }
    if let Some(lm) = &m.listener {
        let wanted = lm.match_.clone().unwrap_or_default();
        match lm.operation {
            ResourceOperation::Add => next.add(
                Origin::MeshProxyPatch,
                Resource::Listener(new_message::<Listener>(&lm.value)?),
            ),
            op => {
                let mut result = Ok(());
                let hit = |origin: Origin, r: &Resource| match r {
                    Resource::Listener(l) => {
                        wanted.name.as_deref().is_none_or(|n| n == l.name)
                            && origin_matches(&wanted.origin, origin)
                            && listener_tags_match(l, &wanted.tags)
                    }
                    _ => false,
                };
                if op == ResourceOperation::Remove {
                    next.retain(|g| !hit(g.origin(), g.resource()));
                } else {
                    for mut g in next.iter_mut() {
                        if hit(g.origin(), g.resource())
                            && result.is_ok()
                            && let Resource::Listener(l) = g.resource_mut()
                        {
                            match edit(l, &lm.value, &lm.json_patches) {
                                Ok(new) => *l = new,
                                Err(e) => result = Err(e),
                            }
                        }
                    }
                }
                result?;
            }
        }
    }
    for (fm, http) in [(&m.network_filter, false), (&m.http_filter, true)] {
        let Some(fm) = fm else { continue };
        let wanted = fm.match_.clone().unwrap_or_default();
        for mut g in next.iter_mut() {
            let selected = match g.resource() {
                Resource::Listener(l) => {
                    origin_matches(&wanted.origin, g.origin())
                        && wanted.listener_name.as_deref().is_none_or(|n| n == l.name)
                        && listener_tags_match(l, &wanted.listener_tags)
                }
                _ => false,
            };
            if !selected {
                continue;
            }
            let Resource::Listener(l) = g.resource_mut() else {
                continue;
            };
            if http {
                for_each_hcm(l, |hcm| {
                    apply_filter_list(
                        &mut hcm.http_filters,
                        |f: &HttpFilter| f.name.as_str(),
                        fm,
                        || new_message::<HttpFilter>(&fm.value),
                        |f| patch_typed_config(f, fm),
                    )
                })?;
            } else {
                for chain in &mut l.filter_chains {
                    apply_filter_list(
                        &mut chain.filters,
                        |f: &Filter| f.name.as_str(),
                        fm,
                        || new_message::<Filter>(&fm.value),
                        |f| patch_typed_config(f, fm),
                    )?;
                }
            }
        }
    }
    if let Some(vm) = &m.virtual_host {
        let wanted = &vm.match_;
        for mut g in next.iter_mut() {
            if !matches!(g.resource(), Resource::Listener(_)) || !origin_matches(&wanted.origin, g.origin()) {
                continue;
            }
            let Resource::Listener(l) = g.resource_mut() else {
                continue;
            };
            for_each_hcm(l, |hcm| {
                let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = &mut hcm.route_specifier
                else {
                    return Ok(());
                };
                if wanted
                    .route_configuration_name
                    .as_deref()
                    .is_some_and(|n| n != rc.name)
                {
                    return Ok(());
                }
                let hit = |vh: &VirtualHost| wanted.name.as_deref().is_none_or(|n| n == vh.name);
                match vm.operation {
                    ResourceOperation::Add => rc.virtual_hosts.push(new_message::<VirtualHost>(&vm.value)?),
                    ResourceOperation::Remove => rc.virtual_hosts.retain(|vh| !hit(vh)),
                    ResourceOperation::Patch => {
                        for vh in rc.virtual_hosts.iter_mut() {
                            if hit(vh) {
                                *vh = edit(vh, &vm.value, &vm.json_patches)?;
                            }
                        }
                    }
                }
                Ok(())
            })?;
        }
    }
    *rs = next;
    Ok(())
}

/// One modification under any input, as the `proxy_patch` fuzz target
/// (`xds/fuzz`) drives it: `text` is read as the YAML of a modification
/// and applied to a small proxy (an EDS and a static cluster, an HTTP
/// listener with an inline route configuration, a TCP listener). A
/// modification that fails leaves the resources exactly as they were; one
/// that succeeds adds one resource for an `Add`, leaves none that matches a
/// `Remove`, and touches no resource type it is not about.
pub fn check_modification(text: &str) -> Result<(), String> {
    let Ok(m) = serde_yaml::from_str::<Modification>(text) else {
        return Ok(());
    };
    let mut rs = check_base();
    let before = rs.to_yaml();
    let count = |rs: &ResourceSet, t: XdsType| rs.of_type(t).count();
    let (clusters, listeners) = (count(&rs, XdsType::Cluster), count(&rs, XdsType::Listener));
    let of_type = |rs: &ResourceSet, t: XdsType| {
        rs.of_type(t)
            .map(|g| (g.origin(), g.resource().encode()))
            .collect::<Vec<_>>()
    };
    let (clusters_before, listeners_before) =
        (of_type(&rs, XdsType::Cluster), of_type(&rs, XdsType::Listener));
    if apply_one(&m, &mut rs).is_err() {
        return if rs.to_yaml() == before {
            Ok(())
        } else {
            Err("a failed modification changed the resources".into())
        };
    }
    let only_clusters = m.listener.is_none()
        && m.network_filter.is_none()
        && m.http_filter.is_none()
        && m.virtual_host.is_none();
    let only_listeners = m.cluster.is_none();
    if only_clusters && of_type(&rs, XdsType::Listener) != listeners_before {
        return Err("a cluster modification changed listeners".into());
    }
    if only_listeners && of_type(&rs, XdsType::Cluster) != clusters_before {
        return Err("a listener modification changed clusters".into());
    }
    if let Some(c) = &m.cluster {
        let wanted = c.match_.clone().unwrap_or_default();
        match c.operation {
            ResourceOperation::Add if only_clusters && count(&rs, XdsType::Cluster) != clusters + 1 => {
                return Err("a cluster Add did not add one cluster".into());
            }
            ResourceOperation::Remove
                if rs.of_type(XdsType::Cluster).any(|g| {
                    origin_matches(&wanted.origin, g.origin())
                        && wanted.name.as_deref().is_none_or(|n| n == g.resource().name())
                }) =>
            {
                return Err("a removed cluster is still there".into());
            }
            _ => {}
        }
    }
    if let Some(l) = &m.listener {
        let wanted = l.match_.clone().unwrap_or_default();
        match l.operation {
            ResourceOperation::Add if m.network_filter.is_none() && m.http_filter.is_none() && m.virtual_host.is_none() && count(&rs, XdsType::Listener) != listeners + 1 => {
                return Err("a listener Add did not add one listener".into());
            }
            ResourceOperation::Remove
                if rs.of_type(XdsType::Listener).any(|g| {
                    origin_matches(&wanted.origin, g.origin())
                        && wanted.name.as_deref().is_none_or(|n| n == g.resource().name())
                        && matches!(g.resource(), Resource::Listener(l) if listener_tags_match(l, &wanted.tags))
                }) =>
            {
                return Err("a removed listener is still there".into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// The proxy [`check_modification`] patches.
fn check_base() -> ResourceSet {
    use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
    use envoy_types::pb::envoy::config::listener::v3::FilterChain;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
    let mut rs = ResourceSet::new();
    rs.add(Origin::Outbound, Resource::Cluster(envoy::eds_cluster("backend")));
    rs.add(
        Origin::Inbound,
        Resource::Cluster(envoy::static_cluster(
            "localhost:8080",
            &[("127.0.0.1".to_string(), 8080)],
            envoy::seconds(5),
        )),
    );
    let hcm = HttpConnectionManager {
        stat_prefix: "web".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: "inbound:web".into(),
                virtual_hosts: vec![VirtualHost {
                    name: "web".into(),
                    domains: vec!["*".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters: envoy::base_http_filters(false),
        ..Default::default()
    };
    let chain = |filter: Filter| FilterChain {
        filters: vec![filter],
        ..Default::default()
    };
    rs.add(
        Origin::Inbound,
        Resource::Listener(envoy::listener(
            "inbound:10.0.0.1:80",
            "10.0.0.1",
            80,
            TrafficDirection::Inbound,
            vec![chain(envoy::network_filter(
                "envoy.filters.network.http_connection_manager",
                &hcm,
            ))],
        )),
    );
    let tcp = TcpProxy {
        stat_prefix: "backend".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("backend".into())),
        ..Default::default()
    };
    rs.add(
        Origin::Outbound,
        Resource::Listener(envoy::listener(
            "outbound:127.0.0.1:10001",
            "127.0.0.1",
            10001,
            TrafficDirection::Outbound,
            vec![chain(envoy::network_filter(
                "envoy.filters.network.tcp_proxy",
                &tcp,
            ))],
        )),
    );
    rs
}

/// Applies the merged modifications, in order; returns the ones skipped.
pub fn apply(policies: &Policies, rs: &mut ResourceSet) -> Vec<(usize, PatchError)> {
    let Some(conf) = policies.single_typed::<Conf>(T) else {
        return Vec::new();
    };
    let mut skipped = Vec::new();
    for (i, m) in conf.append_modifications.iter().flatten().enumerate() {
        if let Err(e) = apply_one(m, rs) {
            tracing::warn!(modification = i, error = %e, "MeshProxyPatch modification skipped");
            skipped.push((i, e));
        }
    }
    let _ = XdsType::ALL;
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's seeds reach the patching code, not just the parser.
    #[test]
    fn the_checked_proxy_takes_typical_modifications() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/proxy_patch");
        for (seed, applies) in [
            ("cluster-add", true),
            ("cluster-patch", true),
            ("listener-json-patch", true),
            ("http-filter-add-before", true),
            ("network-filter-remove", true),
            ("virtual-host-patch", true),
            ("cluster-remove", true),
            ("listener-add", true),
            ("listener-remove-bad-patch", false),
            ("cluster-patch-invalid-value", false),
        ] {
            let text = std::fs::read_to_string(dir.join(seed)).expect("seed");
            let m: Modification = serde_yaml::from_str(&text).expect(seed);
            let mut rs = check_base();
            let before = rs.to_yaml();
            assert_eq!(apply_one(&m, &mut rs).is_ok(), applies, "{seed}");
            assert_eq!(
                rs.to_yaml() != before,
                applies,
                "{seed} changes the proxy when it applies"
            );
            assert_eq!(check_modification(&text), Ok(()), "{seed}");
        }
    }
}
