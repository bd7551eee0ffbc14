//! Kuma's resource identifiers (the computed labels are the admission
//! module's: `kuma_crds::admission`).

use kuma_crds::resource::{Resource, ResourceType, ZONE_LABEL};

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
