//! Labels Kuma computes when a resource is written through the API or
//! registered by kuma-dp on a standalone universal control plane (a zone
//! named `default`).

use kuma_crds::resource::{MESH_LABEL, ORIGIN_LABEL, Resource, ResourceType, Scope, ZONE_LABEL};

/// The zone of a standalone control plane.
pub const ZONE: &str = "default";
/// The environment label.
pub const ENV_LABEL: &str = "kuma.io/env";
/// The proxy type label of Dataplanes.
pub const PROXY_TYPE_LABEL: &str = "kuma.io/proxy-type";

/// Whether a kind is "provided by a zone" (gets origin and zone labels).
fn zone_provided(t: ResourceType) -> bool {
    t.is_policy()
        || matches!(
            t,
            ResourceType::Dataplane | ResourceType::MeshService | ResourceType::MeshExternalService
        )
}

/// Adds the computed labels (keeping the user's).
pub fn compute(r: &mut Resource) {
    let t = r.resource_type();
    let labels = &mut r.meta.labels;
    if t.descriptor().scope == Scope::Mesh
        && let Some(mesh) = &r.meta.mesh
    {
        labels.insert(MESH_LABEL.into(), mesh.clone());
    }
    if zone_provided(t) {
        labels.entry(ORIGIN_LABEL.into()).or_insert_with(|| "zone".into());
        labels.entry(ZONE_LABEL.into()).or_insert_with(|| ZONE.into());
        labels.insert(ENV_LABEL.into(), "universal".into());
    }
    if let kuma_crds::resource::Spec::Dataplane(dp) = &r.spec {
        let kind = if dp.networking().gateway.is_some() {
            "gateway"
        } else {
            "sidecar"
        };
        labels.insert(PROXY_TYPE_LABEL.into(), kind.into());
    }
}

/// Labels users may not change once set, with why.
pub fn immutable_violations(old: &Resource, new: &Resource) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in [ORIGIN_LABEL, ZONE_LABEL, kuma_crds::resource::DISPLAY_NAME_LABEL] {
        match (old.meta.labels.get(key), new.meta.labels.get(key)) {
            (Some(a), Some(b)) if a != b => out.push((
                format!("labels[\"{key}\"]"),
                format!("is immutable, cannot be changed from \"{a}\" to \"{b}\""),
            )),
            (Some(a), None) => out.push((
                format!("labels[\"{key}\"]"),
                format!("is immutable, cannot be removed (was \"{a}\")"),
            )),
            _ => {}
        }
    }
    out
}

/// Kuma's resource identifier:
/// `kri_<short>_<mesh>_<zone>_<namespace>_<name>_<section>`.
pub fn kri(r: &Resource) -> Option<String> {
    let t = r.resource_type();
    if matches!(t, ResourceType::Secret | ResourceType::GlobalSecret) {
        return None;
    }
    let d = t.descriptor();
    let l = &r.meta.labels;
    let get = |k: &str| l.get(k).cloned().unwrap_or_default();
    Some(format!(
        "kri_{}_{}_{}_{}_{}_",
        d.short_name,
        r.meta.mesh.clone().unwrap_or_default(),
        get(ZONE_LABEL),
        get(kuma_crds::resource::NAMESPACE_LABEL),
        l.get(kuma_crds::resource::DISPLAY_NAME_LABEL)
            .cloned()
            .unwrap_or_else(|| r.meta.name.clone()),
    ))
}
