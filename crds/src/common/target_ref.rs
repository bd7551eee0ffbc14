//! `targetRef`: how a policy names the proxies it configures (top level), the
//! destinations it applies to (`to`) and the clients it applies to (`from`).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{FieldPath, Violations};

/// The kind of thing a `targetRef` points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
pub enum TargetRefKind {
    /// Every proxy (or destination, or client) of the mesh.
    #[default]
    Mesh,
    /// Proxies whose inbound tags include the given tags (deprecated by Kuma).
    MeshSubset,
    /// A builtin gateway, optionally narrowed to listeners by tags.
    MeshGateway,
    /// A service, by its `kuma.io/service` name or a MeshService resource.
    MeshService,
    /// A MeshExternalService resource.
    MeshExternalService,
    /// A MeshMultiZoneService resource.
    MeshMultiZoneService,
    /// A service narrowed by extra tags (deprecated by Kuma).
    MeshServiceSubset,
    /// A MeshHTTPRoute, to configure traffic that one route carries.
    MeshHTTPRoute,
    /// Dataplanes by name or labels.
    Dataplane,
}

impl TargetRefKind {
    /// Every kind, in the order Kuma lists them in its schemas.
    pub const ALL: [TargetRefKind; 9] = [
        TargetRefKind::Mesh,
        TargetRefKind::MeshSubset,
        TargetRefKind::MeshGateway,
        TargetRefKind::MeshService,
        TargetRefKind::MeshExternalService,
        TargetRefKind::MeshMultiZoneService,
        TargetRefKind::MeshServiceSubset,
        TargetRefKind::MeshHTTPRoute,
        TargetRefKind::Dataplane,
    ];

    /// How specific a selection of this kind is; a more specific policy
    /// overrides a less specific one. This is Kuma's order and it differs from
    /// declaration order: `Dataplane` is only a little more specific than
    /// `Mesh` because it usually selects by labels.
    pub fn specificity(self) -> u8 {
        match self {
            TargetRefKind::Mesh => 1,
            TargetRefKind::Dataplane => 2,
            TargetRefKind::MeshSubset => 3,
            TargetRefKind::MeshGateway => 4,
            TargetRefKind::MeshService => 5,
            TargetRefKind::MeshExternalService => 6,
            TargetRefKind::MeshMultiZoneService => 7,
            TargetRefKind::MeshServiceSubset => 8,
            TargetRefKind::MeshHTTPRoute => 9,
        }
    }

    /// The kind's name as written in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetRefKind::Mesh => "Mesh",
            TargetRefKind::MeshSubset => "MeshSubset",
            TargetRefKind::MeshGateway => "MeshGateway",
            TargetRefKind::MeshService => "MeshService",
            TargetRefKind::MeshExternalService => "MeshExternalService",
            TargetRefKind::MeshMultiZoneService => "MeshMultiZoneService",
            TargetRefKind::MeshServiceSubset => "MeshServiceSubset",
            TargetRefKind::MeshHTTPRoute => "MeshHTTPRoute",
            TargetRefKind::Dataplane => "Dataplane",
        }
    }
}

impl PartialOrd for TargetRefKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TargetRefKind {
    /// By specificity, so sorted lists go from least to most specific.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.specificity().cmp(&other.specificity())
    }
}

impl fmt::Display for TargetRefKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which proxies a `Mesh`/`MeshSubset` target covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum ProxyType {
    /// Sidecar proxies next to a workload.
    Sidecar,
    /// Gateway proxies (builtin or delegated).
    Gateway,
}

/// A reference to the proxies, destinations or clients a policy applies to.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// The kind of the referenced thing.
    pub kind: TargetRefKind,
    /// The referenced resource's name (for `MeshService`, a `kuma.io/service` value).
    pub name: Option<String>,
    /// Tags to match (`MeshSubset`, `MeshServiceSubset`, gateway listeners).
    pub tags: Option<BTreeMap<String, String>>,
    /// Reserved by Kuma; must not be set.
    pub mesh: Option<String>,
    /// Proxy types a `Mesh`/`MeshSubset` target covers; all when absent.
    pub proxy_types: Option<Vec<ProxyType>>,
    /// The referenced resource's namespace (Kubernetes).
    pub namespace: Option<String>,
    /// Labels that select resources of `kind`.
    pub labels: Option<BTreeMap<String, String>>,
    /// A port name of a MeshService, or an inbound of a Dataplane.
    pub section_name: Option<String>,
}

impl TargetRef {
    /// `{kind: Mesh}`, what an omitted top-level targetRef means.
    pub fn mesh() -> Self {
        TargetRef {
            kind: TargetRefKind::Mesh,
            ..Default::default()
        }
    }

    /// A reference of `kind` with a name.
    pub fn named(kind: TargetRefKind, name: &str) -> Self {
        TargetRef {
            kind,
            name: Some(name.to_string()),
            ..Default::default()
        }
    }

    /// The name, or `""` when absent.
    pub fn name_or_empty(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The tags, empty when absent.
    pub fn tags_or_empty(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.tags.as_ref().unwrap_or(&EMPTY)
    }

    /// The labels, empty when absent.
    pub fn labels_or_empty(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// Whether this top-level target can select gateway proxies, which
    /// decides whether some policies use `to` (gateways) or `from`/`rules`.
    pub fn includes_gateways(&self) -> bool {
        match self.kind {
            TargetRefKind::MeshGateway | TargetRefKind::MeshHTTPRoute => true,
            TargetRefKind::Mesh | TargetRefKind::MeshSubset => match &self.proxy_types {
                None => true,
                Some(types) => types.is_empty() || types.contains(&ProxyType::Gateway),
            },
            _ => false,
        }
    }

    /// Kuma's ordering of two targets by specificity: the kind first, then
    /// for `Dataplane` a name beats labels and a `sectionName` beats none.
    pub fn compare_specificity(&self, other: &TargetRef) -> Ordering {
        self.kind
            .specificity()
            .cmp(&other.kind.specificity())
            .then_with(|| {
                if self.kind == TargetRefKind::Dataplane && other.kind == TargetRefKind::Dataplane {
                    let by_name = |t: &TargetRef| !t.name_or_empty().is_empty();
                    let by_section = |t: &TargetRef| t.section_name.as_deref().is_some_and(|s| !s.is_empty());
                    by_name(self)
                        .cmp(&by_name(other))
                        .then(by_section(self).cmp(&by_section(other)))
                } else {
                    Ordering::Equal
                }
            })
    }
}

/// What a position in a policy accepts in a `targetRef`.
#[derive(Clone, Copy, Debug)]
pub struct TargetRefRules<'a> {
    /// The kinds allowed at this position.
    pub kinds: &'a [TargetRefKind],
    /// Whether a `MeshGateway` target may narrow to listeners with `tags`.
    pub gateway_listener_tags: bool,
    /// Names exempt from the name character check.
    pub allowed_invalid_names: &'a [&'a str],
    /// Whether the policy configures inbound traffic (`from` or `rules`),
    /// which is what lets a `Dataplane` target name an inbound with `sectionName`.
    pub inbound_policy: bool,
}

impl<'a> TargetRefRules<'a> {
    /// Rules accepting `kinds`, with every option off.
    pub const fn kinds(kinds: &'a [TargetRefKind]) -> Self {
        TargetRefRules {
            kinds,
            gateway_listener_tags: false,
            allowed_invalid_names: &[],
            inbound_policy: false,
        }
    }

    /// The same rules, allowing gateway listener tags.
    pub const fn with_gateway_listener_tags(mut self, allowed: bool) -> Self {
        self.gateway_listener_tags = allowed;
        self
    }

    /// The same rules, for a policy that configures inbound traffic or not.
    pub const fn inbound(mut self, inbound: bool) -> Self {
        self.inbound_policy = inbound;
        self
    }

    /// The same rules, exempting `names` from the name character check.
    pub const fn allowing_names(mut self, names: &'a [&'a str]) -> Self {
        self.allowed_invalid_names = names;
        self
    }
}

fn is_set_str(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

fn is_set_map(m: &Option<BTreeMap<String, String>>) -> bool {
    m.as_ref().is_some_and(|m| !m.is_empty())
}

impl TargetRef {
    /// Checks this reference against what its position accepts.
    pub fn validate(&self, rules: &TargetRefRules<'_>, path: &FieldPath, v: &mut Violations) {
        let kind = self.kind;
        if !rules.kinds.contains(&kind) {
            v.add(&path.field("kind"), format!("value '{kind}' is not supported"));
            return;
        }
        let forbid = |set: bool, field: &str, v: &mut Violations| {
            if set {
                v.add(&path.field(field), format!("must not be set with kind {kind}"));
            }
        };
        let name_set = is_set_str(&self.name);
        let labels_set = is_set_map(&self.labels);
        let check_name = |v: &mut Violations| {
            if let Some(name) = &self.name {
                let valid = name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
                if !valid && !rules.allowed_invalid_names.contains(&name.as_str()) {
                    v.add(
                        &path.field("name"),
                        "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'.",
                    );
                }
            }
        };
        let empty_proxy_types = |v: &mut Violations| {
            if self.proxy_types.as_ref().is_some_and(Vec::is_empty) {
                v.add(
                    &path.field("proxyTypes"),
                    "must be undefined or have at least one element",
                );
            }
        };
        match kind {
            TargetRefKind::Mesh => {
                if name_set {
                    v.add(
                        &path.field("name"),
                        "using name with kind Mesh is not yet supported",
                    );
                }
                forbid(is_set_str(&self.mesh), "mesh", v);
                forbid(is_set_map(&self.tags), "tags", v);
                forbid(labels_set, "labels", v);
                forbid(is_set_str(&self.namespace), "namespace", v);
                forbid(is_set_str(&self.section_name), "sectionName", v);
                empty_proxy_types(v);
            }
            TargetRefKind::Dataplane => {
                forbid(is_set_map(&self.tags), "tags", v);
                forbid(is_set_str(&self.mesh), "mesh", v);
                forbid(
                    self.proxy_types.as_ref().is_some_and(|p| !p.is_empty()),
                    "proxyTypes",
                    v,
                );
                if labels_set && (name_set || is_set_str(&self.namespace)) {
                    v.add(
                        &path.field("labels"),
                        "either labels or name and namespace must be specified",
                    );
                }
                if is_set_str(&self.section_name) && !rules.inbound_policy {
                    v.add(
                        &path.field("sectionName"),
                        "can only be used with inbound policies",
                    );
                }
            }
            TargetRefKind::MeshSubset => {
                forbid(name_set, "name", v);
                forbid(is_set_str(&self.mesh), "mesh", v);
                validate_tags(self.tags_or_empty(), TagValues::Plain, &path.field("tags"), v);
                forbid(labels_set, "labels", v);
                forbid(is_set_str(&self.namespace), "namespace", v);
                forbid(is_set_str(&self.section_name), "sectionName", v);
                empty_proxy_types(v);
            }
            TargetRefKind::MeshService
            | TargetRefKind::MeshHTTPRoute
            | TargetRefKind::MeshExternalService => {
                check_name(v);
                forbid(is_set_str(&self.mesh), "mesh", v);
                forbid(is_set_map(&self.tags), "tags", v);
                forbid(
                    self.proxy_types.as_ref().is_some_and(|p| !p.is_empty()),
                    "proxyTypes",
                    v,
                );
                if !labels_set && !name_set {
                    v.add(path, format!("name or labels must be set when kind is {kind}"));
                }
                if labels_set && (name_set || is_set_str(&self.namespace)) {
                    let msg = if kind == TargetRefKind::MeshExternalService {
                        "either labels or name must be specified"
                    } else {
                        "either labels or name and namespace must be specified"
                    };
                    v.add(&path.field("labels"), msg);
                }
                if kind != TargetRefKind::MeshService {
                    forbid(is_set_str(&self.section_name), "sectionName", v);
                }
            }
            TargetRefKind::MeshServiceSubset | TargetRefKind::MeshGateway => {
                if !name_set {
                    v.add(&path.field("name"), format!("must be set when kind is {kind}"));
                }
                check_name(v);
                forbid(is_set_str(&self.mesh), "mesh", v);
                forbid(
                    self.proxy_types.as_ref().is_some_and(|p| !p.is_empty()),
                    "proxyTypes",
                    v,
                );
                validate_tags(self.tags_or_empty(), TagValues::Selector, &path.field("tags"), v);
                if kind == TargetRefKind::MeshGateway
                    && is_set_map(&self.tags)
                    && !rules.gateway_listener_tags
                {
                    v.add(&path.field("tags"), "must not be set with kind MeshGateway");
                }
                forbid(labels_set, "labels", v);
                forbid(is_set_str(&self.namespace), "namespace", v);
                forbid(is_set_str(&self.section_name), "sectionName", v);
            }
            TargetRefKind::MeshMultiZoneService => {
                forbid(is_set_str(&self.mesh), "mesh", v);
                forbid(is_set_map(&self.tags), "tags", v);
            }
        }
    }
}

/// Which tag values a tag map accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagValues {
    /// Concrete values only.
    Plain,
    /// Concrete values or `*` (any value).
    Selector,
}

/// Checks tag names and values of a selector or subset.
pub fn validate_tags(
    tags: &BTreeMap<String, String>,
    values: TagValues,
    path: &FieldPath,
    v: &mut Violations,
) {
    let name_ok = |c: char| c.is_ascii_alphanumeric() || ".-_:/".contains(c);
    for (key, value) in tags {
        if key.is_empty() {
            v.add(path, "tag name must be non-empty");
            continue;
        }
        let entry = path.key(key);
        if !key.chars().all(name_ok) {
            v.add(
                &entry,
                "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores",
            );
        }
        if value.is_empty() {
            v.add(&entry, "tag value must be non-empty");
            continue;
        }
        match values {
            TagValues::Plain => {
                if !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
                {
                    v.add(
                        &entry,
                        "tag value must consist of alphanumeric characters, dots, dashes and underscores",
                    );
                }
            }
            TagValues::Selector => {
                if value != "*" && !value.chars().all(name_ok) {
                    v.add(
                        &entry,
                        "tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be \"*\"",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TargetRefKind::*;

    fn errors(t: &TargetRef, rules: TargetRefRules<'_>) -> Vec<String> {
        let mut v = Violations::new();
        t.validate(&rules, &FieldPath::new("spec").field("targetRef"), &mut v);
        v.into_vec().into_iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn kind_not_allowed() {
        let t = TargetRef::named(MeshHTTPRoute, "r");
        assert_eq!(
            errors(&t, TargetRefRules::kinds(&[Mesh])),
            vec!["spec.targetRef.kind: value 'MeshHTTPRoute' is not supported"]
        );
    }

    #[test]
    fn mesh_with_extras() {
        let t = TargetRef {
            kind: Mesh,
            name: Some("x".into()),
            section_name: Some("a".into()),
            proxy_types: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(
            errors(&t, TargetRefRules::kinds(&[Mesh])),
            vec![
                "spec.targetRef.name: using name with kind Mesh is not yet supported",
                "spec.targetRef.sectionName: must not be set with kind Mesh",
                "spec.targetRef.proxyTypes: must be undefined or have at least one element",
            ]
        );
    }

    #[test]
    fn service_needs_name_or_labels() {
        let t = TargetRef {
            kind: MeshService,
            ..Default::default()
        };
        assert_eq!(
            errors(&t, TargetRefRules::kinds(&[MeshService])),
            vec!["spec.targetRef: name or labels must be set when kind is MeshService"]
        );
        let bad = TargetRef::named(MeshService, "Backend!");
        assert_eq!(errors(&bad, TargetRefRules::kinds(&[MeshService])).len(), 1);
    }

    #[test]
    fn dataplane_section_name_only_for_inbound_policies() {
        let t = TargetRef {
            kind: Dataplane,
            section_name: Some("http".into()),
            ..Default::default()
        };
        assert_eq!(
            errors(&t, TargetRefRules::kinds(&[Dataplane])),
            vec!["spec.targetRef.sectionName: can only be used with inbound policies"]
        );
        assert!(errors(&t, TargetRefRules::kinds(&[Dataplane]).inbound(true)).is_empty());
    }

    #[test]
    fn specificity_order() {
        let mesh = TargetRef::mesh();
        let dp_labels = TargetRef {
            kind: Dataplane,
            labels: Some([("app".to_string(), "x".to_string())].into()),
            ..Default::default()
        };
        let dp_name = TargetRef::named(Dataplane, "dp-1");
        let svc = TargetRef::named(MeshService, "backend");
        assert_eq!(mesh.compare_specificity(&dp_labels), Ordering::Less);
        assert_eq!(dp_labels.compare_specificity(&dp_name), Ordering::Less);
        assert_eq!(dp_name.compare_specificity(&svc), Ordering::Less);
    }

    #[test]
    fn includes_gateways() {
        assert!(TargetRef::mesh().includes_gateways());
        let sidecars = TargetRef {
            proxy_types: Some(vec![ProxyType::Sidecar]),
            ..TargetRef::mesh()
        };
        assert!(!sidecars.includes_gateways());
        assert!(!TargetRef::named(Dataplane, "x").includes_gateways());
    }
}
