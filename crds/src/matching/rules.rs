//! Rules built from matched policies: per destination (`to`), per inbound
//! (`from`/`rules`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{MatchedPolicy, Merged, Source, merge, merge_routes, tags_match};
use crate::common::{RuleMatch, SpiffeIdMatchType, TargetRef, TargetRefKind};
use crate::dataplane::SERVICE_TAG;
use crate::resource::{Resource, ResourceType};

/// A destination an outbound configuration is computed for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The `kuma.io/service` value (or MeshService name).
    pub service: String,
    /// Tags narrowing the destination (e.g. a subset's `version`), plus
    /// `kuma.io/service`.
    pub tags: BTreeMap<String, String>,
    /// Labels of the destination resource, when it is one.
    pub labels: BTreeMap<String, String>,
    /// The destination port (its sectionName is the port name or number).
    pub port: Option<u32>,
    /// The port's name.
    pub port_name: Option<String>,
    /// Whether the destination is a MeshExternalService.
    pub external: bool,
    /// The MeshHTTPRoute the traffic matched, if the configuration is per route.
    pub route: Option<String>,
    /// The Kubernetes namespace of the destination resource, if any.
    pub namespace: Option<String>,
}

impl Destination {
    /// A destination by `kuma.io/service` value.
    pub fn service(name: &str) -> Self {
        Destination {
            service: name.to_string(),
            tags: BTreeMap::from([(SERVICE_TAG.to_string(), name.to_string())]),
            ..Default::default()
        }
    }

    /// The same destination, through one route.
    pub fn with_route(mut self, route: &str) -> Self {
        self.route = Some(route.to_string());
        self
    }

    /// The same destination, narrowed by tags.
    pub fn with_tags(mut self, tags: &BTreeMap<String, String>) -> Self {
        self.tags.extend(tags.clone());
        self
    }
}

/// One `to[]` entry of one matched policy.
#[derive(Clone, Debug, PartialEq)]
pub struct ToEntry {
    /// The destination target.
    pub target: TargetRef,
    /// The route the policy's top-level target names, if any: the entry then
    /// only applies to traffic of that route.
    pub route_scope: Option<String>,
    /// The configuration.
    pub conf: Value,
    /// Where it came from.
    pub source: Source,
}

impl ToEntry {
    /// Whether the entry applies to `destination` (its target covers it,
    /// and its route scope, if any, is the destination's route).
    pub fn applies_to(&self, destination: &Destination) -> bool {
        ToRules::covers(&self.target, destination)
            && self
                .route_scope
                .as_deref()
                .is_none_or(|r| destination.route.as_deref() == Some(r))
    }
}

/// Outbound configuration: every `to[]` entry of the matched policies in
/// precedence order, merged on demand per destination.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToRules {
    resource_type: Option<ResourceType>,
    /// The entries, from least to most specific.
    pub entries: Vec<ToEntry>,
}

fn to_kind_rank(t: &TargetRef) -> (u8, bool) {
    (
        t.kind.specificity(),
        t.kind == TargetRefKind::MeshService && t.section_name.is_some(),
    )
}

impl ToRules {
    /// Collects and orders the `to[]` entries of `policies` (already sorted).
    pub fn build(resource_type: ResourceType, policies: &[MatchedPolicy], routes: &[&Resource]) -> Self {
        // (policy index, the entry's own kind rank, entry)
        let mut keyed: Vec<(usize, (u8, bool), ToEntry)> = Vec::new();
        for (n, p) in policies.iter().enumerate() {
            let route_scope = (p.view.top.kind == TargetRefKind::MeshHTTPRoute).then(|| {
                let name = p.view.top.name_or_empty();
                routes
                    .iter()
                    .find(|r| r.meta.display_name() == name)
                    .map(|r| r.meta.core_name())
                    .unwrap_or_else(|| name.to_string())
            });
            for (i, entry) in p.view.to.iter().enumerate() {
                let mesh = p.resource.meta.mesh_or_default();
                let source = Source::new(resource_type, mesh, &p.name(), format!("to[{i}]"));
                let entry = ToEntry {
                    target: entry.target.clone(),
                    route_scope: route_scope.clone(),
                    conf: entry.conf.clone(),
                    source,
                };
                keyed.push((n, to_kind_rank(&entry.target), entry));
            }
        }
        // Stable, so entries of one policy keep their written order.
        keyed.sort_by(|(a, ra, _), (b, rb, _)| {
            let (pa, pb) = (&policies[*a].precedence, &policies[*b].precedence);
            pa.cmp_attributes(pb)
                .then_with(|| ra.cmp(rb))
                .then_with(|| pa.name.cmp(&pb.name))
        });
        ToRules {
            resource_type: Some(resource_type),
            entries: keyed.into_iter().map(|(_, _, e)| e).collect(),
        }
    }

    /// Whether `target` covers `destination`.
    pub fn covers(target: &TargetRef, destination: &Destination) -> bool {
        let labels_ok = |t: &TargetRef| {
            t.labels_or_empty()
                .iter()
                .all(|(k, v)| destination.labels.get(k) == Some(v))
        };
        let section_ok = |t: &TargetRef| match t.section_name.as_deref() {
            None | Some("") => true,
            Some(s) => {
                destination.port_name.as_deref() == Some(s)
                    || destination.port.map(|p| p.to_string()).as_deref() == Some(s)
            }
        };
        match target.kind {
            TargetRefKind::Mesh => true,
            TargetRefKind::MeshService => {
                !destination.external
                    && (target.name.is_none() || target.name_or_empty() == destination.service)
                    && target
                        .namespace
                        .as_deref()
                        .filter(|ns| !ns.is_empty())
                        .is_none_or(|ns| destination.namespace.as_deref() == Some(ns))
                    && (target.name.is_some() || !target.labels_or_empty().is_empty())
                    && labels_ok(target)
                    && section_ok(target)
            }
            TargetRefKind::MeshServiceSubset => {
                !destination.external
                    && target.name_or_empty() == destination.service
                    && tags_match(target.tags_or_empty(), &destination.tags)
            }
            TargetRefKind::MeshSubset => tags_match(target.tags_or_empty(), &destination.tags),
            TargetRefKind::MeshExternalService => {
                destination.external
                    && (target.name.is_none() || target.name_or_empty() == destination.service)
                    && labels_ok(target)
            }
            TargetRefKind::MeshHTTPRoute => {
                destination
                    .route
                    .as_deref()
                    .is_some_and(|r| target.name.is_none() || target.name_or_empty() == r)
                    && labels_ok(target)
            }
            TargetRefKind::Dataplane | TargetRefKind::MeshGateway | TargetRefKind::MeshMultiZoneService => {
                false
            }
        }
    }

    /// The entries that apply to `destination`, least specific first.
    pub fn relevant<'a>(&'a self, destination: &'a Destination) -> impl Iterator<Item = &'a ToEntry> + 'a {
        self.entries.iter().filter(move |e| e.applies_to(destination))
    }

    /// The merged configuration for `destination`, or `None` when no entry applies.
    pub fn conf(&self, destination: &Destination) -> Option<Merged> {
        let contributions: Vec<(Source, Value)> = self
            .relevant(destination)
            .map(|e| (e.source.clone(), e.conf.clone()))
            .collect();
        if contributions.is_empty() {
            return None;
        }
        Some(match self.resource_type {
            Some(ResourceType::MeshHTTPRoute) => merge_routes(contributions),
            _ => merge(contributions),
        })
    }

    /// The distinct targets named by the entries.
    pub fn targets(&self) -> Vec<&TargetRef> {
        let mut out: Vec<&TargetRef> = Vec::new();
        for e in &self.entries {
            if !out.contains(&&e.target) {
                out.push(&e.target);
            }
        }
        out
    }
}

/// One inbound rule: an optional client match and its configuration.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct InboundRule {
    /// The client match; `None` matches every client.
    pub matches: Option<RuleMatch>,
    /// The configuration (one contribution).
    pub conf: Merged,
}

/// A tag condition on clients: `key` equals `value`, or with `not` differs
/// from it (which includes the tag being absent).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Tag {
    /// The tag name.
    pub key: String,
    /// The value.
    pub value: String,
    /// Whether the condition is negated.
    pub not: bool,
}

/// A region of client tags and the merge of every `from` entry covering it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SourceRule {
    /// The conditions, all of which must hold.
    pub subset: Vec<Tag>,
    /// The merged configuration.
    pub conf: Merged,
}

impl SourceRule {
    /// Whether a client with `tags` is in this region.
    pub fn contains(&self, tags: &BTreeMap<String, String>) -> bool {
        self.subset.iter().all(|t| match tags.get(&t.key) {
            Some(v) => (v == &t.value) != t.not,
            None => t.not,
        })
    }
}

/// Inbound configuration of one inbound.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct InboundRules {
    /// Rules from `rules[]` (and from-as-rules `from[]`), most specific match
    /// first; within equal matches, least specific policy first.
    pub rules: Vec<InboundRule>,
    /// The merge of every rule without a match.
    pub catch_all: Option<Merged>,
    /// Client-tag regions from `from[]`, most specific first.
    pub source_rules: Vec<SourceRule>,
}

/// More regions than this means the `from` targets are unreasonably many;
/// only their own subsets become rules then.
const MAX_REGIONS: usize = 4096;

fn match_rank(m: &Option<RuleMatch>) -> (u8, bool) {
    let spiffe = match m.as_ref().and_then(|m| m.spiffe_id.as_ref()) {
        Some(id) => match id.match_type {
            Some(SpiffeIdMatchType::Exact) => 3,
            Some(SpiffeIdMatchType::Prefix) => 2,
            None => 1,
        },
        None => 0,
    };
    (spiffe, m.as_ref().is_some_and(|m| m.sni.is_some()))
}

fn subset_of(target: &TargetRef) -> Option<Vec<Tag>> {
    let tag = |k: &str, v: &str| Tag {
        key: k.to_string(),
        value: v.to_string(),
        not: false,
    };
    match target.kind {
        TargetRefKind::Mesh => Some(Vec::new()),
        TargetRefKind::MeshSubset => Some(target.tags_or_empty().iter().map(|(k, v)| tag(k, v)).collect()),
        TargetRefKind::MeshService => Some(vec![tag(SERVICE_TAG, target.name_or_empty())]),
        TargetRefKind::MeshServiceSubset => {
            let mut s = vec![tag(SERVICE_TAG, target.name_or_empty())];
            s.extend(
                target
                    .tags_or_empty()
                    .iter()
                    .filter(|(k, _)| *k != SERVICE_TAG)
                    .map(|(k, v)| tag(k, v)),
            );
            Some(s)
        }
        _ => None,
    }
}

impl InboundRules {
    /// Whether nothing applies to the inbound.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.source_rules.is_empty()
    }

    /// Builds the rules of inbound `inbound` from the policies that selected it.
    pub fn build(resource_type: ResourceType, policies: &[MatchedPolicy], inbound: usize) -> Self {
        let d = resource_type.descriptor();
        let selecting: Vec<&MatchedPolicy> = policies
            .iter()
            .filter(|p| p.selection.inbounds.contains(&inbound))
            .collect();
        let mut rules = Vec::new();
        for p in &selecting {
            let mesh = p.resource.meta.mesh_or_default();
            let name = p.name();
            if !p.view.rules.is_empty() {
                for (i, r) in p.view.rules.iter().enumerate() {
                    let source = Source::new(resource_type, mesh, &name, format!("rules[{i}]"));
                    let conf = merge(vec![(source, r.conf.clone())]);
                    if r.matches.is_empty() {
                        rules.push(InboundRule { matches: None, conf });
                    } else {
                        for m in &r.matches {
                            rules.push(InboundRule {
                                matches: Some(m.clone()),
                                conf: conf.clone(),
                            });
                        }
                    }
                }
            } else if d.is_from_as_rules {
                for (i, f) in p.view.from.iter().enumerate() {
                    let source = Source::new(resource_type, mesh, &name, format!("from[{i}]"));
                    rules.push(InboundRule {
                        matches: None,
                        conf: merge(vec![(source, f.conf.clone())]),
                    });
                }
            }
        }
        // Stable: equal matches keep least-specific-policy-first order.
        rules.sort_by_key(|r| Reverse(match_rank(&r.matches)));
        let catch_all_parts: Vec<(Source, Value)> = rules
            .iter()
            .filter(|r| r.matches.is_none())
            .flat_map(|r| {
                r.conf
                    .sources
                    .iter()
                    .cloned()
                    .zip(std::iter::once(r.conf.value.clone()))
            })
            .collect();
        let catch_all = (!catch_all_parts.is_empty()).then(|| merge(catch_all_parts));

        let mut items: Vec<(Vec<Tag>, Source, Value)> = Vec::new();
        for p in &selecting {
            for (i, f) in p.view.from.iter().enumerate() {
                if let Some(subset) = subset_of(&f.target) {
                    let source = Source::new(
                        resource_type,
                        p.resource.meta.mesh_or_default(),
                        &p.name(),
                        format!("from[{i}]"),
                    );
                    items.push((subset, source, f.conf.clone()));
                }
            }
        }
        let source_rules = build_source_rules(&items);
        InboundRules {
            rules,
            catch_all,
            source_rules,
        }
    }

    /// The configuration for a client with `tags` from the `from` regions.
    pub fn for_client_tags(&self, tags: &BTreeMap<String, String>) -> Option<&Merged> {
        self.source_rules
            .iter()
            .find(|r| r.contains(tags))
            .map(|r| &r.conf)
    }
}

/// Splits client-tag space into regions by the values the entries name and
/// merges, for each region, every entry that covers it (in entry order).
fn build_source_rules(items: &[(Vec<Tag>, Source, Value)]) -> Vec<SourceRule> {
    if items.is_empty() {
        return Vec::new();
    }
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (subset, _, _) in items {
        for t in subset {
            values.entry(&t.key).or_default().insert(&t.value);
        }
    }
    let keys: Vec<(&str, Vec<&str>)> = values
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect();
    let region_count = keys
        .iter()
        .try_fold(1usize, |acc, (_, v)| acc.checked_mul(v.len() + 1));
    let regions: Vec<Vec<Tag>> = match region_count {
        Some(n) if n <= MAX_REGIONS => {
            let mut regions = vec![Vec::new()];
            for (key, vals) in &keys {
                let mut next = Vec::with_capacity(regions.len() * (vals.len() + 1));
                for region in &regions {
                    for v in vals {
                        let mut r: Vec<Tag> = region.clone();
                        r.push(Tag {
                            key: key.to_string(),
                            value: v.to_string(),
                            not: false,
                        });
                        next.push(r);
                    }
                    let mut r: Vec<Tag> = region.clone();
                    r.extend(vals.iter().map(|v| Tag {
                        key: key.to_string(),
                        value: v.to_string(),
                        not: true,
                    }));
                    next.push(r);
                }
                regions = next;
            }
            regions
        }
        _ => {
            let mut distinct: Vec<Vec<Tag>> = Vec::new();
            for (s, _, _) in items {
                if !distinct.contains(s) {
                    distinct.push(s.clone());
                }
            }
            distinct
        }
    };
    let mut rules: Vec<SourceRule> = regions
        .into_iter()
        .filter_map(|region| {
            let covering: Vec<(Source, Value)> = items
                .iter()
                .filter(|(subset, _, _)| {
                    subset.iter().all(|t| {
                        region
                            .iter()
                            .any(|r| !r.not && r.key == t.key && r.value == t.value)
                    })
                })
                .map(|(_, s, c)| (s.clone(), c.clone()))
                .collect();
            (!covering.is_empty()).then(|| SourceRule {
                conf: merge(covering),
                subset: region,
            })
        })
        .collect();
    // Regions partition the client space, so order only matters for
    // readers: the most specific (most positive conditions) first.
    rules.sort_by_key(|r| Reverse(r.subset.iter().filter(|t| !t.not).count()));
    rules
}
