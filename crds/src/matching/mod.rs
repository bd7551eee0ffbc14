//! Which policies configure a dataplane, and what they merge to.
//!
//! This is a pure function of one Dataplane and the policies of one type in
//! its mesh ([`match_policies`]); it follows Kuma 2.x:
//!
//! 1. **Select.** A policy applies when its top-level `targetRef` selects the
//!    proxy: `Mesh` (optionally narrowed by `proxyTypes`) selects every proxy,
//!    `Dataplane` selects all, by name (and namespace) or by labels,
//!    optionally one inbound by `sectionName`; `MeshService`,
//!    `MeshServiceSubset` and `MeshSubset` select the inbounds whose tags
//!    match; a top-level `MeshHTTPRoute` inherits the route's own target.
//!    Policies labelled `kuma.io/effect: shadow` are left out unless asked
//!    for; `consumer` and `workload-owner` policies only select dataplanes in
//!    their own namespace; zone-originated policies only their zone's.
//! 2. **Order** from least to most specific ([`Precedence`]): the top-level
//!    kind, then for `Dataplane` targets name over labels and sectionName over
//!    none, then origin (global < unset < zone), then role (system < producer
//!    < consumer < workload-owner), then name, where the alphabetically
//!    *smallest* name is the most specific.
//! 3. **Build rules and merge** `default`s in that order (see [`merge`]):
//!    - `to[]` ([`ToRules`]): per destination, the entries whose target covers
//!      it (Mesh covers everything). Entries are ordered by their policy's
//!      precedence, then — unlike Kuma's legacy rules, and as its newer
//!      resource rules do — by the entry's own kind, so a `MeshService` entry
//!      beats a `Mesh` entry of an equally ranked policy whatever the names
//!      (Kuma issue #9151), then by name;
//!    - `from[]`/`rules[]` ([`InboundRules`]), per inbound: `rules` entries
//!      (and, for policies that treat them so, `from` entries) become rules
//!      sorted by match specificity with a merged catch-all; `from` entries
//!      also become client-tag rules: the space of client tags is split into
//!      regions and each region gets the merge of every entry covering it;
//!    - single-item policies merge their `default`.
//!
//!    Lists are replaced, `append*` lists are concatenated and MeshHTTPRoute
//!    rules merge per `matches`. Every merged value records which policy
//!    entry set each field, so inspection can explain precedence.

mod merge;
mod rules;
mod select;
mod view;

pub use merge::*;
pub use rules::*;
pub use select::*;
pub use view::*;

use std::collections::BTreeMap;

use crate::resource::{EFFECT_LABEL, Resource, ResourceType, Spec};

/// Options of [`match_policies`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MatchOptions {
    /// Include `kuma.io/effect: shadow` policies (for inspection).
    pub include_shadow: bool,
}

/// A policy that selects the dataplane.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchedPolicy {
    /// The policy.
    pub resource: Resource,
    /// Its entries.
    pub view: PolicyView,
    /// What it selected.
    pub selection: Selection,
    /// Its rank.
    pub precedence: Precedence,
}

impl MatchedPolicy {
    /// The policy's core name.
    pub fn name(&self) -> String {
        self.resource.meta.core_name()
    }
}

/// Everything one policy type configures on one dataplane.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchedPolicies {
    /// The policy type.
    pub resource_type: ResourceType,
    /// The selecting policies, from least to most specific.
    pub policies: Vec<MatchedPolicy>,
    /// Outbound configuration per destination.
    pub to: ToRules,
    /// Inbound configuration per inbound (index into the dataplane's inbounds).
    pub inbounds: BTreeMap<usize, InboundRules>,
    /// The merged `default` of single-item policies.
    pub single: Option<Merged>,
    /// Problems found while matching (e.g. a route target that does not exist).
    pub warnings: Vec<String>,
}

impl MatchedPolicies {
    /// Whether nothing of this type applies.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// A mesh's policies prepared for matching many dataplanes: each policy's
/// view is read once, not once per dataplane.
#[derive(Clone, Debug, Default)]
pub struct PolicyIndex {
    policies: Vec<(Resource, PolicyView)>,
    routes: Vec<Resource>,
}

impl PolicyIndex {
    /// Indexes the policies among `resources` (other kinds are ignored).
    pub fn new(resources: &[Resource]) -> Self {
        PolicyIndex {
            policies: resources
                .iter()
                .filter_map(|r| PolicyView::of(&r.spec).map(|v| (r.clone(), v)))
                .collect(),
            routes: resources
                .iter()
                .filter(|r| r.resource_type() == ResourceType::MeshHTTPRoute)
                .cloned()
                .collect(),
        }
    }

    /// [`match_policies`] over the indexed policies.
    pub fn match_policies(
        &self,
        resource_type: ResourceType,
        dataplane: &Resource,
        options: MatchOptions,
    ) -> MatchedPolicies {
        let candidates = self
            .policies
            .iter()
            .filter(|(r, _)| r.resource_type() == resource_type)
            .map(|(r, v)| (r, v));
        let routes: Vec<&Resource> = self.routes.iter().collect();
        match_prepared(resource_type, dataplane, candidates, &routes, options)
    }
}

/// Matches the policies of one type in the dataplane's mesh against it.
///
/// `resources` may contain any resources of the mesh; those of type
/// `resource_type` are the candidates, and MeshHTTPRoutes are used to
/// resolve policies that target a route. `dataplane` must be a Dataplane.
/// To match many dataplanes against the same policies, use [`PolicyIndex`].
pub fn match_policies(
    resource_type: ResourceType,
    dataplane: &Resource,
    resources: &[Resource],
    options: MatchOptions,
) -> MatchedPolicies {
    let views: Vec<(&Resource, PolicyView)> = resources
        .iter()
        .filter(|r| r.resource_type() == resource_type)
        .filter_map(|r| PolicyView::of(&r.spec).map(|v| (r, v)))
        .collect();
    let routes: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.resource_type() == ResourceType::MeshHTTPRoute)
        .collect();
    match_prepared(
        resource_type,
        dataplane,
        views.iter().map(|(r, v)| (*r, v)),
        &routes,
        options,
    )
}

fn match_prepared<'a>(
    resource_type: ResourceType,
    dataplane: &Resource,
    candidates: impl Iterator<Item = (&'a Resource, &'a PolicyView)>,
    routes: &[&Resource],
    options: MatchOptions,
) -> MatchedPolicies {
    let mut warnings = Vec::new();
    let mut policies: Vec<MatchedPolicy> = Vec::new();
    if let Spec::Dataplane(dp) = &dataplane.spec {
        let mesh = dataplane.meta.mesh_or_default();
        for (policy, view) in candidates {
            if policy.meta.mesh_or_default() != mesh {
                continue;
            }
            if !options.include_shadow
                && policy
                    .meta
                    .labels
                    .get(EFFECT_LABEL)
                    .is_some_and(|e| e == "shadow")
            {
                continue;
            }
            match select(policy, &view.top, dataplane, dp, routes) {
                Ok(Some(selection)) => {
                    let precedence = Precedence::of(policy, &view.top);
                    policies.push(MatchedPolicy {
                        resource: policy.clone(),
                        view: view.clone(),
                        selection,
                        precedence,
                    });
                }
                Ok(None) => {}
                Err(e) => warnings.push(format!("policy {:?}: {e}", policy.meta.core_name())),
            }
        }
        policies.sort_by(|a, b| a.precedence.cmp(&b.precedence));
        let to = ToRules::build(resource_type, &policies, routes);
        let inbounds = (0..dp.inbounds().len())
            .filter_map(|i| {
                let rules = InboundRules::build(resource_type, &policies, i);
                (!rules.is_empty()).then_some((i, rules))
            })
            .collect();
        let single = resource_type.descriptor().single_item.then(|| {
            merge(
                policies
                    .iter()
                    .map(|p| {
                        let source = Source::new(
                            resource_type,
                            p.resource.meta.mesh_or_default(),
                            &p.name(),
                            "default",
                        );
                        (source, p.view.default.clone().unwrap_or(serde_json::Value::Null))
                    })
                    .collect(),
            )
        });
        let single = single.filter(|_| !policies.is_empty());
        return MatchedPolicies {
            resource_type,
            policies,
            to,
            inbounds,
            single,
            warnings,
        };
    }
    warnings.push(format!("{:?} is not a Dataplane", dataplane.meta.core_name()));
    MatchedPolicies {
        resource_type,
        policies,
        to: ToRules::default(),
        inbounds: BTreeMap::new(),
        single: None,
        warnings,
    }
}
