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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

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
/// view is read once, not once per dataplane, and what a selection merges
/// to is built once for every dataplane selected alike
/// ([`PolicyIndex::match_shared`]).
#[derive(Debug, Default)]
pub struct PolicyIndex {
    policies: Vec<(Resource, PolicyView)>,
    routes: Vec<Resource>,
    /// What each distinct selection matched to. Bounded by the distinct
    /// ways the mesh's dataplanes are selected (roughly its services times
    /// the policy types), and gone with the index when a policy changes.
    shared: Mutex<HashMap<SelectionKey, Arc<MatchedPolicies>>>,
}

impl Clone for PolicyIndex {
    fn clone(&self) -> Self {
        PolicyIndex {
            policies: self.policies.clone(),
            routes: self.routes.clone(),
            shared: Mutex::default(),
        }
    }
}

/// Everything [`MatchedPolicies`] is built from besides the indexed
/// policies: which of them selected the dataplane and how, which failed,
/// and how many inbounds it has. Dataplanes with equal keys get equal
/// results.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SelectionKey {
    resource_type: ResourceType,
    inbounds: usize,
    /// `(policy index, selected inbounds)` of every selecting policy.
    selected: Vec<(usize, Vec<usize>)>,
    /// `(policy index, warning)` of every policy that could not be matched.
    failed: Vec<(usize, String)>,
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
            shared: Mutex::default(),
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

    /// [`PolicyIndex::match_policies`] with default options, shared with
    /// every dataplane the policies select alike: selecting is cheap, and
    /// building the rules once per distinct selection instead of once per
    /// dataplane is most of matching a mesh's proxies, in time and in the
    /// memory of holding the results.
    pub fn match_shared(&self, resource_type: ResourceType, dataplane: &Resource) -> Arc<MatchedPolicies> {
        let Spec::Dataplane(dp) = &dataplane.spec else {
            return Arc::new(self.match_policies(resource_type, dataplane, MatchOptions::default()));
        };
        let routes: Vec<&Resource> = self.routes.iter().collect();
        let mesh = dataplane.meta.mesh_or_default();
        let mut key = SelectionKey {
            resource_type,
            inbounds: dp.inbounds().len(),
            selected: Vec::new(),
            failed: Vec::new(),
        };
        for (i, (policy, view)) in self.policies.iter().enumerate() {
            if policy.resource_type() != resource_type || !selectable(policy, mesh, MatchOptions::default()) {
                continue;
            }
            match select(policy, &view.top, dataplane, dp, &routes) {
                Ok(Some(selection)) => key.selected.push((i, selection.inbounds)),
                Ok(None) => {}
                Err(e) => key
                    .failed
                    .push((i, format!("policy {:?}: {e}", policy.meta.core_name()))),
            }
        }
        if let Some(matched) = self.lock().get(&key) {
            return matched.clone();
        }
        let selected = key.selected.iter().map(|(i, inbounds)| {
            let (policy, view) = &self.policies[*i];
            (
                policy,
                view,
                Selection {
                    inbounds: inbounds.clone(),
                },
            )
        });
        let warnings = key.failed.iter().map(|(_, w)| w.clone()).collect();
        let matched = Arc::new(build_matched(resource_type, dp, selected, warnings, &routes));
        self.lock().entry(key).or_insert(matched).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SelectionKey, Arc<MatchedPolicies>>> {
        // Every mutation is one insert: a panic cannot leave the map torn.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a policy may select a dataplane of `mesh` at all.
fn selectable(policy: &Resource, mesh: &str, options: MatchOptions) -> bool {
    policy.meta.mesh_or_default() == mesh
        && (options.include_shadow || policy.meta.labels.get(EFFECT_LABEL).is_none_or(|e| e != "shadow"))
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
    if let Spec::Dataplane(dp) = &dataplane.spec {
        let mesh = dataplane.meta.mesh_or_default();
        let mut selected = Vec::new();
        for (policy, view) in candidates {
            if !selectable(policy, mesh, options) {
                continue;
            }
            match select(policy, &view.top, dataplane, dp, routes) {
                Ok(Some(selection)) => selected.push((policy, view, selection)),
                Ok(None) => {}
                Err(e) => warnings.push(format!("policy {:?}: {e}", policy.meta.core_name())),
            }
        }
        return build_matched(resource_type, dp, selected.into_iter(), warnings, routes);
    }
    warnings.push(format!("{:?} is not a Dataplane", dataplane.meta.core_name()));
    MatchedPolicies {
        resource_type,
        policies: Vec::new(),
        to: ToRules::default(),
        inbounds: BTreeMap::new(),
        single: None,
        warnings,
    }
}

/// Ranks the policies that selected a dataplane and builds their rules.
fn build_matched<'a>(
    resource_type: ResourceType,
    dp: &crate::dataplane::DataplaneSpec,
    selected: impl Iterator<Item = (&'a Resource, &'a PolicyView, Selection)>,
    warnings: Vec<String>,
    routes: &[&Resource],
) -> MatchedPolicies {
    let mut policies: Vec<MatchedPolicy> = selected
        .map(|(policy, view, selection)| MatchedPolicy {
            resource: policy.clone(),
            view: view.clone(),
            selection,
            precedence: Precedence::of(policy, &view.top),
        })
        .collect();
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
    MatchedPolicies {
        resource_type,
        policies,
        to,
        inbounds,
        single,
        warnings,
    }
}
