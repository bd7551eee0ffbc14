//! Policy matching and merging, case by case.

use std::collections::BTreeMap;
use std::sync::Arc;

use kuma_crds::format::parse;
use kuma_crds::matching::{Destination, MatchOptions, MatchedPolicies, PolicyIndex, match_policies};
use kuma_crds::resource::{Resource, ResourceType};
use serde_json::{Value, json};

/// A dataplane fixture, built step by step.
struct Dp {
    name: String,
    mesh: String,
    labels: BTreeMap<String, String>,
    inbounds: Vec<Value>,
    gateway: bool,
    namespace: Option<String>,
}

impl Dp {
    fn new(name: &str) -> Self {
        Dp {
            name: name.into(),
            mesh: "default".into(),
            labels: BTreeMap::new(),
            inbounds: Vec::new(),
            gateway: false,
            namespace: None,
        }
    }
    fn mesh(mut self, mesh: &str) -> Self {
        self.mesh = mesh.into();
        self
    }
    fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    fn inbound(mut self, service: &str, port: u32) -> Self {
        self.inbounds
            .push(json!({"port": port, "tags": {"kuma.io/service": service}}));
        self
    }
    fn inbound_tags(mut self, port: u32, name: &str, tags: Value) -> Self {
        self.inbounds
            .push(json!({"port": port, "name": name, "tags": tags}));
        self
    }
    fn gateway(mut self) -> Self {
        self.gateway = true;
        self
    }
    fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.into());
        self.labels.insert("k8s.kuma.io/namespace".into(), ns.into());
        self
    }
    fn build(self) -> Resource {
        let mut networking = json!({"address": "10.0.0.1"});
        if self.gateway {
            networking["gateway"] = json!({"tags": {"kuma.io/service": "edge"}});
        } else {
            networking["inbound"] = Value::Array(self.inbounds);
        }
        let doc = json!({"type": "Dataplane", "name": self.name, "mesh": self.mesh, "labels": self.labels, "networking": networking});
        let mut r = kuma_crds::format::parse_value(doc).expect("fixture dataplane is valid");
        r.meta.namespace = self.namespace;
        r
    }
}

fn policies(yaml: &str) -> Vec<Resource> {
    yaml.split("\n---\n")
        .map(|d| parse(d).unwrap_or_else(|e| panic!("fixture policy invalid: {e}\n{d}")))
        .collect()
}

/// Matches through both paths, which must agree: [`match_policies`] and a
/// [`PolicyIndex`]'s shared results (built, then found again).
fn matched(rt: ResourceType, dp: &Resource, resources: &[Resource]) -> MatchedPolicies {
    let direct = match_policies(rt, dp, resources, MatchOptions::default());
    let index = PolicyIndex::new(resources);
    let built = index.match_shared(rt, dp);
    assert_eq!(*built, direct, "the index's shared result is what matching gives");
    assert!(
        Arc::ptr_eq(&built, &index.match_shared(rt, dp)),
        "found again, not rebuilt"
    );
    direct
}

#[test]
fn dataplanes_selected_alike_share_one_result() {
    let ps = policies(
        &[
            timeout(
                "all",
                "{kind: Mesh}",
                "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]",
            ),
            timeout(
                "backend",
                "{kind: MeshService, name: backend}",
                "[{targetRef: {kind: Mesh}, default: {idleTimeout: 2s}}]",
            ),
        ]
        .join("\n---\n"),
    );
    let index = PolicyIndex::new(&ps);
    let shared = |dp: &Resource| index.match_shared(MT, dp);
    let backend_1 = shared(&Dp::new("b1").inbound("backend", 80).build());
    let backend_2 = shared(&Dp::new("b2").label("team", "x").inbound("backend", 8080).build());
    let web = shared(&Dp::new("w").inbound("web", 80).build());
    let web_two_inbounds = shared(&Dp::new("w2").inbound("web", 80).inbound("admin", 81).build());
    assert!(
        Arc::ptr_eq(&backend_1, &backend_2),
        "same policies, same inbounds"
    );
    assert_eq!(names(&backend_1), vec!["all", "backend"]);
    assert_eq!(names(&web), vec!["all"]);
    assert!(
        !Arc::ptr_eq(&web, &web_two_inbounds),
        "inbound rules are per inbound"
    );
}

fn names(m: &MatchedPolicies) -> Vec<String> {
    m.policies.iter().map(|p| p.name()).collect()
}

fn to_conf(m: &MatchedPolicies, service: &str) -> Value {
    m.to.conf(&Destination::service(service))
        .map(|c| c.value)
        .unwrap_or(Value::Null)
}

fn timeout(name: &str, top: &str, to: &str) -> String {
    format!("type: MeshTimeout\nname: {name}\nspec:\n  targetRef: {top}\n  to: {to}")
}

const MT: ResourceType = ResourceType::MeshTimeout;

#[test]
fn c01_mesh_policy_selects_every_sidecar() {
    let dp = Dp::new("dp").inbound("backend", 80).build();
    let ps = policies(&timeout(
        "p",
        "{kind: Mesh}",
        "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]",
    ));
    assert_eq!(names(&matched(MT, &dp, &ps)), vec!["p"]);
}

#[test]
fn c02_proxy_types_narrow_mesh_selection() {
    let sidecar = Dp::new("dp").inbound("backend", 80).build();
    let gateway = Dp::new("gw").gateway().build();
    let ps = policies(&timeout(
        "p",
        "{kind: Mesh, proxyTypes: [Gateway]}",
        "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]",
    ));
    assert!(matched(MT, &sidecar, &ps).is_empty());
    assert_eq!(names(&matched(MT, &gateway, &ps)), vec!["p"]);
}

#[test]
fn c03_mesh_service_selects_by_service_tag() {
    let backend = Dp::new("b").inbound("backend", 80).build();
    let web = Dp::new("w").inbound("web", 80).build();
    let ps = policies(&timeout(
        "p",
        "{kind: MeshService, name: backend}",
        "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]",
    ));
    assert_eq!(names(&matched(MT, &backend, &ps)), vec!["p"]);
    assert!(
        matched(MT, &web, &ps).is_empty(),
        "a policy that selects nothing yields nothing"
    );
}

#[test]
fn c04_mesh_subset_selects_inbounds_by_tags() {
    let dp = Dp::new("d")
        .inbound_tags(80, "http", json!({"kuma.io/service": "a", "version": "v1"}))
        .inbound_tags(81, "admin", json!({"kuma.io/service": "a", "version": "v2"}))
        .build();
    let ps = policies(
        "type: MeshTimeout\nname: p\nspec:\n  targetRef: {kind: MeshSubset, tags: {version: v2}}\n  from: [{targetRef: {kind: Mesh}, default: {idleTimeout: 3s}}]",
    );
    let m = matched(MT, &dp, &ps);
    assert_eq!(m.policies[0].selection.inbounds, vec![1]);
    assert!(!m.inbounds.contains_key(&0));
    assert_eq!(
        m.inbounds[&1].catch_all.as_ref().unwrap().value,
        json!({"idleTimeout": "3s"})
    );
}

#[test]
fn c05_dataplane_by_labels_and_by_name() {
    let dp = Dp::new("dp-1").label("app", "web").inbound("web", 80).build();
    let by_labels = policies(&timeout(
        "l",
        "{kind: Dataplane, labels: {app: web}}",
        "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]",
    ));
    let by_other_labels = policies(&timeout(
        "o",
        "{kind: Dataplane, labels: {app: db}}",
        "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]",
    ));
    let by_name = policies(&timeout(
        "n",
        "{kind: Dataplane, name: dp-1}",
        "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]",
    ));
    assert_eq!(names(&matched(MT, &dp, &by_labels)), vec!["l"]);
    assert!(matched(MT, &dp, &by_other_labels).is_empty());
    assert_eq!(names(&matched(MT, &dp, &by_name)), vec!["n"]);
}

#[test]
fn c06_section_name_selects_one_inbound() {
    let dp = Dp::new("d")
        .inbound_tags(80, "http", json!({"kuma.io/service": "a"}))
        .inbound_tags(90, "metrics", json!({"kuma.io/service": "a"}))
        .build();
    let ps = policies(
        "type: MeshTimeout\nname: p\nspec:\n  targetRef: {kind: Dataplane, sectionName: metrics}\n  from: [{targetRef: {kind: Mesh}, default: {idleTimeout: 9s}}]",
    );
    let m = matched(MT, &dp, &ps);
    assert_eq!(m.inbounds.keys().copied().collect::<Vec<_>>(), vec![1]);
}

#[test]
fn c07_other_meshes_are_ignored() {
    let dp = Dp::new("d").mesh("other").inbound("a", 80).build();
    let ps = policies(&timeout(
        "p",
        "{kind: Mesh}",
        "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]",
    ));
    assert!(matched(MT, &dp, &ps).is_empty());
}

#[test]
fn c08_shadow_policies_only_when_asked() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(
        "type: MeshTimeout\nname: s\nlabels: {kuma.io/effect: shadow}\nspec:\n  to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]",
    );
    assert!(matched(MT, &dp, &ps).is_empty());
    let with_shadow = match_policies(MT, &dp, &ps, MatchOptions { include_shadow: true });
    assert_eq!(names(&with_shadow), vec!["s"]);
}

#[test]
fn c09_consumer_policies_stay_in_their_namespace() {
    let here = Dp::new("d").namespace("app").inbound("a", 80).build();
    let there = Dp::new("e").namespace("other").inbound("a", 80).build();
    let ps = policies(
        "apiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmetadata: {name: c, namespace: app, labels: {kuma.io/policy-role: consumer, k8s.kuma.io/namespace: app}}\nspec:\n  to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]",
    );
    assert_eq!(names(&matched(MT, &here, &ps)), vec!["c.app"]);
    assert!(matched(MT, &there, &ps).is_empty());
}

#[test]
fn c10_route_targets_resolve_through_the_route() {
    let frontend = Dp::new("f")
        .label("app", "frontend")
        .inbound("frontend", 80)
        .build();
    let other = Dp::new("o").label("app", "other").inbound("other", 80).build();
    let mut ps = policies(
        "type: MeshHTTPRoute\nname: r\nspec:\n  targetRef: {kind: Dataplane, labels: {app: frontend}}\n  to: [{targetRef: {kind: MeshService, name: backend}, rules: [{matches: [{path: {type: PathPrefix, value: /a}}], default: {}}]}]",
    );
    ps.extend(policies("type: MeshTimeout\nname: t\nspec:\n  targetRef: {kind: MeshHTTPRoute, name: r}\n  to: [{targetRef: {kind: Mesh}, default: {http: {requestTimeout: 3s}}}]"));
    let m = matched(MT, &frontend, &ps);
    assert_eq!(names(&m), vec!["t"]);
    assert!(matched(MT, &other, &ps).is_empty());
    // Scoped to the route: plain traffic to backend is not affected.
    assert!(m.to.conf(&Destination::service("backend")).is_none());
    assert_eq!(
        m.to.conf(&Destination::service("backend").with_route("r"))
            .unwrap()
            .value,
        json!({"http": {"requestTimeout": "3s"}})
    );
}

#[test]
fn c11_missing_route_is_a_warning_not_a_failure() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(
        "type: MeshTimeout\nname: t\nspec:\n  targetRef: {kind: MeshHTTPRoute, name: nope}\n  to: [{targetRef: {kind: Mesh}, default: {http: {requestTimeout: 3s}}}]",
    );
    let m = matched(MT, &dp, &ps);
    assert!(m.is_empty());
    assert_eq!(
        m.warnings,
        vec!["policy \"t\": couldn't resolve MeshHTTPRoute targetRef with name 'nope'"]
    );
}

#[test]
fn c12_more_specific_top_level_kind_wins() {
    let dp = Dp::new("d").inbound("backend", 80).build();
    let ps = policies(&format!(
        "{}\n---\n{}",
        timeout(
            "a-mesh",
            "{kind: Mesh}",
            "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]"
        ),
        timeout(
            "z-service",
            "{kind: MeshService, name: backend}",
            "[{targetRef: {kind: Mesh}, default: {idleTimeout: 2s}}]"
        )
    ));
    let m = matched(MT, &dp, &ps);
    assert_eq!(names(&m), vec!["a-mesh", "z-service"]);
    assert_eq!(to_conf(&m, "x"), json!({"idleTimeout": "2s"}));
}

#[test]
fn c13_name_tie_break_smallest_name_wins() {
    let dp = Dp::new("d").inbound("backend", 80).build();
    let ps = policies(&format!(
        "{}\n---\n{}",
        timeout(
            "aaa",
            "{kind: Mesh}",
            "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]"
        ),
        timeout(
            "bbb",
            "{kind: Mesh}",
            "[{targetRef: {kind: Mesh}, default: {idleTimeout: 2s}}]"
        )
    ));
    let m = matched(MT, &dp, &ps);
    assert_eq!(names(&m), vec!["bbb", "aaa"]);
    let conf = m.to.conf(&Destination::service("x")).unwrap();
    assert_eq!(conf.value, json!({"idleTimeout": "1s"}));
    assert_eq!(conf.source_of("/idleTimeout").unwrap().name, "aaa");
}

#[test]
fn c14_zone_origin_beats_global_origin() {
    let dp = Dp::new("d").inbound("backend", 80).build();
    let ps = policies(
        "type: MeshTimeout\nname: a\nlabels: {kuma.io/origin: zone}\nspec:\n  to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]\n---\ntype: MeshTimeout\nname: b\nlabels: {kuma.io/origin: global}\nspec:\n  to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 2s}}]",
    );
    assert_eq!(to_conf(&matched(MT, &dp, &ps), "x"), json!({"idleTimeout": "1s"}));
}

#[test]
fn c15_roles_rank_system_producer_consumer_owner() {
    let dp = Dp::new("d").namespace("ns").inbound("backend", 80).build();
    let mk = |name: &str, role: &str, t: &str| {
        format!(
            "apiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmetadata: {{name: {name}, namespace: ns, labels: {{kuma.io/policy-role: {role}, k8s.kuma.io/namespace: ns}}}}\nspec:\n  to: [{{targetRef: {{kind: Mesh}}, default: {{idleTimeout: {t}}}}}]"
        )
    };
    let ps = policies(
        &[
            mk("a", "consumer", "3s"),
            mk("b", "system", "1s"),
            mk("c", "producer", "2s"),
        ]
        .join("\n---\n"),
    );
    let m = matched(MT, &dp, &ps);
    assert_eq!(names(&m), vec!["b.ns", "c.ns", "a.ns"]);
    assert_eq!(to_conf(&m, "x"), json!({"idleTimeout": "3s"}));
}

#[test]
fn c16_dataplane_name_beats_labels() {
    let dp = Dp::new("dp-1").label("app", "x").inbound("a", 80).build();
    let ps = policies(&format!(
        "{}\n---\n{}",
        timeout(
            "a",
            "{kind: Dataplane, name: dp-1}",
            "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]"
        ),
        timeout(
            "b",
            "{kind: Dataplane, labels: {app: x}}",
            "[{targetRef: {kind: Mesh}, default: {idleTimeout: 2s}}]"
        )
    ));
    assert_eq!(to_conf(&matched(MT, &dp, &ps), "x"), json!({"idleTimeout": "1s"}));
}

#[test]
fn c17_nested_objects_merge_field_by_field() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(&format!(
        "{}\n---\n{}",
        timeout(
            "base",
            "{kind: Mesh}",
            "[{targetRef: {kind: Mesh}, default: {idleTimeout: 20s, connectionTimeout: 2s, http: {requestTimeout: 10s}}}]"
        ),
        timeout(
            "override",
            "{kind: MeshService, name: a}",
            "[{targetRef: {kind: MeshService, name: foo}, default: {http: {requestTimeout: 15s}}}, {targetRef: {kind: MeshService, name: bar}, default: {http: {requestTimeout: 20s}}}]"
        )
    ));
    let m = matched(MT, &dp, &ps);
    assert_eq!(
        to_conf(&m, "foo"),
        json!({"idleTimeout": "20s", "connectionTimeout": "2s", "http": {"requestTimeout": "15s"}})
    );
    assert_eq!(
        to_conf(&m, "bar"),
        json!({"idleTimeout": "20s", "connectionTimeout": "2s", "http": {"requestTimeout": "20s"}})
    );
    assert_eq!(
        to_conf(&m, "other"),
        json!({"idleTimeout": "20s", "connectionTimeout": "2s", "http": {"requestTimeout": "10s"}})
    );
}

#[test]
fn c18_lists_are_replaced_wholesale() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(
        "type: MeshAccessLog\nname: a\nspec:\n  to: [{targetRef: {kind: Mesh}, default: {backends: [{type: File, file: {path: /a}}, {type: File, file: {path: /b}}]}}]\n---\ntype: MeshAccessLog\nname: b\nspec:\n  targetRef: {kind: MeshService, name: a}\n  to: [{targetRef: {kind: Mesh}, default: {backends: [{type: File, file: {path: /c}}]}}]",
    );
    let m = matched(ResourceType::MeshAccessLog, &dp, &ps);
    assert_eq!(
        to_conf(&m, "x"),
        json!({"backends": [{"type": "File", "file": {"path": "/c"}}]})
    );
}

#[test]
fn c19_append_lists_are_concatenated_in_order() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(
        "type: MeshProxyPatch\nname: first\nspec:\n  default: {appendModifications: [{cluster: {operation: Remove, match: {name: x}}}]}\n---\ntype: MeshProxyPatch\nname: second\nspec:\n  targetRef: {kind: MeshService, name: a}\n  default: {appendModifications: [{cluster: {operation: Remove, match: {name: y}}}]}",
    );
    let m = matched(ResourceType::MeshProxyPatch, &dp, &ps);
    let single = m.single.unwrap();
    let mods = single.value["appendModifications"].as_array().unwrap();
    assert_eq!(mods.len(), 2);
    assert_eq!(mods[0]["cluster"]["match"]["name"], "x");
    assert_eq!(mods[1]["cluster"]["match"]["name"], "y");
    assert_eq!(
        single
            .source_of("/appendModifications/1/cluster/match/name")
            .unwrap()
            .name,
        "second"
    );
}

#[test]
fn c20_append_match_of_mesh_passthrough() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(
        "type: MeshPassthrough\nname: a\nspec:\n  default: {passthroughMode: All, appendMatch: [{type: IP, value: 1.1.1.1}]}\n---\ntype: MeshPassthrough\nname: b\nspec:\n  targetRef: {kind: Dataplane}\n  default: {passthroughMode: Matched, appendMatch: [{type: IP, value: 2.2.2.2}]}",
    );
    let m = matched(ResourceType::MeshPassthrough, &dp, &ps);
    let v = m.single.unwrap().value;
    assert_eq!(v["passthroughMode"], "Matched");
    assert_eq!(v["appendMatch"].as_array().unwrap().len(), 2);
}

#[test]
fn c21_http_route_rules_merge_per_matches() {
    let dp = Dp::new("d").inbound("frontend", 80).build();
    let rule = |path: &str, backend: &str| {
        format!(
            "{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], default: {{backendRefs: [{{kind: MeshService, name: {backend}}}]}}}}"
        )
    };
    let ps = policies(&format!(
        "type: MeshHTTPRoute\nname: p1\nspec:\n  to: [{{targetRef: {{kind: MeshService, name: backend}}, rules: [{}, {}]}}]\n---\ntype: MeshHTTPRoute\nname: p2\nspec:\n  targetRef: {{kind: MeshService, name: frontend}}\n  to: [{{targetRef: {{kind: MeshService, name: backend}}, rules: [{}, {}]}}]",
        rule("/a", "a1"),
        rule("/b", "b1"),
        rule("/c", "c2"),
        rule("/a", "a2"),
    ));
    let m = matched(ResourceType::MeshHTTPRoute, &dp, &ps);
    let conf = m.to.conf(&Destination::service("backend")).unwrap();
    let order: Vec<&str> = conf.value["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["matches"][0]["path"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(order, vec!["/c", "/a", "/b"]);
    assert_eq!(conf.value["rules"][1]["default"]["backendRefs"][0]["name"], "a2");
    assert_eq!(conf.source_of("/rules/1/default/backendRefs").unwrap().name, "p2");
    assert!(m.to.conf(&Destination::service("other")).is_none());
}

#[test]
fn c22_entry_kind_breaks_ties_before_names() {
    // Kuma issue #9151: with equal policy ranks the name used to decide, so
    // a Mesh entry of policy "a" overrode a MeshService entry of policy "b".
    let dp = Dp::new("d").inbound("x", 80).build();
    let ps = policies(&format!(
        "{}\n---\n{}",
        timeout(
            "a",
            "{kind: Mesh}",
            "[{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]"
        ),
        timeout(
            "b",
            "{kind: Mesh}",
            "[{targetRef: {kind: MeshService, name: backend}, default: {idleTimeout: 2s}}]"
        )
    ));
    let m = matched(MT, &dp, &ps);
    assert_eq!(to_conf(&m, "backend"), json!({"idleTimeout": "2s"}));
    assert_eq!(to_conf(&m, "web"), json!({"idleTimeout": "1s"}));
}

#[test]
fn c23_service_subsets_cover_tagged_destinations_only() {
    let dp = Dp::new("d").inbound("x", 80).build();
    let ps = policies(
        "type: MeshHTTPRoute\nname: r\nspec:\n  to: [{targetRef: {kind: MeshService, name: backend}, rules: [{matches: [{path: {type: PathPrefix, value: /}}], default: {}}]}]\n---\ntype: MeshLoadBalancingStrategy\nname: l\nspec:\n  to: [{targetRef: {kind: MeshService, name: backend}, default: {loadBalancer: {type: Random}}}]",
    );
    let m = matched(ResourceType::MeshLoadBalancingStrategy, &dp, &ps);
    assert!(m.to.conf(&Destination::service("backend")).is_some());
    assert!(m.to.conf(&Destination::service("backend-other")).is_none());
}

#[test]
fn c24_single_item_merge_with_provenance() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(
        "type: MeshTrace\nname: base\nspec:\n  default: {backends: [{type: Zipkin, zipkin: {url: 'http://z:9411/api/v2/spans'}}], sampling: {overall: 10}}\n---\ntype: MeshTrace\nname: tuned\nspec:\n  targetRef: {kind: MeshService, name: a}\n  default: {backends: [{type: Zipkin, zipkin: {url: 'http://z:9411/api/v2/spans'}}], sampling: {overall: 90, client: 5}}",
    );
    let m = matched(ResourceType::MeshTrace, &dp, &ps);
    let single = m.single.unwrap();
    assert_eq!(single.value["sampling"], json!({"overall": 90, "client": 5}));
    assert_eq!(single.source_of("/sampling/overall").unwrap().name, "tuned");
    let conf: kuma_crds::policies::mesh_trace::Conf = single.conf().unwrap();
    assert_eq!(conf.backends.unwrap().len(), 1);
}

#[test]
fn c25_from_entries_act_as_catch_all_rules() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(
        "type: MeshTimeout\nname: mt-aaaaaa\nspec:\n  rules: [{default: {idleTimeout: 10s}}]\n---\ntype: MeshTimeout\nname: mt-bbbbbb\nspec:\n  from: [{targetRef: {kind: Mesh}, default: {idleTimeout: 100s, connectionTimeout: 101s}}]\n---\ntype: MeshTimeout\nname: mt-cccccc\nspec:\n  rules: [{default: {idleTimeout: 200s, http: {requestTimeout: 202s}}}]",
    );
    let m = matched(MT, &dp, &ps);
    let catch_all = m.inbounds[&0].catch_all.clone().unwrap();
    assert_eq!(
        catch_all.value,
        json!({"idleTimeout": "10s", "connectionTimeout": "101s", "http": {"requestTimeout": "202s"}})
    );
    assert_eq!(
        catch_all.source_of("/connectionTimeout").unwrap().name,
        "mt-bbbbbb"
    );
}

#[test]
fn c26_rules_sorted_by_match_specificity() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(
        "type: MeshTimeout\nname: t\nspec:\n  rules:\n    - default: {http: {requestTimeout: 1s}}\n    - matches: [{spiffeID: {type: Prefix, value: 'spiffe://default/'}}]\n      default: {http: {requestTimeout: 2s}}\n    - matches: [{spiffeID: {type: Exact, value: 'spiffe://default/web'}}]\n      default: {http: {requestTimeout: 3s}}",
    );
    let rules = &matched(MT, &dp, &ps).inbounds[&0].rules;
    let timeouts: Vec<&str> = rules
        .iter()
        .map(|r| r.conf.value["http"]["requestTimeout"].as_str().unwrap())
        .collect();
    assert_eq!(timeouts, vec!["3s", "2s", "1s"]);
}

#[test]
fn c27_rules_take_precedence_over_from_within_a_policy() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies("type: MeshTimeout\nname: t\nspec:\n  rules: [{default: {idleTimeout: 1s}}]");
    let m = matched(MT, &dp, &ps);
    assert_eq!(m.inbounds[&0].rules.len(), 1);
    assert_eq!(m.inbounds[&0].rules[0].conf.sources[0].entry, "rules[0]");
}

#[test]
fn c28_client_tag_regions_for_from_entries() {
    let dp = Dp::new("d").inbound("backend", 80).build();
    let ps = policies(
        "type: MeshTrafficPermission\nname: p\nspec:\n  targetRef: {kind: MeshService, name: backend}\n  from:\n    - {targetRef: {kind: Mesh}, default: {action: Allow}}\n    - {targetRef: {kind: MeshService, name: frontend}, default: {action: Deny}}",
    );
    let m = matched(ResourceType::MeshTrafficPermission, &dp, &ps);
    let rules = &m.inbounds[&0];
    let client = |svc: &str| BTreeMap::from([("kuma.io/service".to_string(), svc.to_string())]);
    assert_eq!(
        rules.for_client_tags(&client("frontend")).unwrap().value,
        json!({"action": "Deny"})
    );
    assert_eq!(
        rules.for_client_tags(&client("web")).unwrap().value,
        json!({"action": "Allow"})
    );
}

#[test]
fn c29_overlapping_subsets_merge_every_covering_entry() {
    // Kuma's worked example: the later entries apply on top of earlier ones
    // wherever their subsets overlap.
    let dp = Dp::new("d").inbound("backend", 80).build();
    let ps = policies(
        "type: MeshTrafficPermission\nname: p\nspec:\n  from:\n    - {targetRef: {kind: Mesh}, default: {action: Allow}}\n    - {targetRef: {kind: MeshSubset, tags: {zone: us-east}}, default: {action: Deny}}\n    - {targetRef: {kind: MeshSubset, tags: {env: dev}}, default: {action: Allow}}\n    - {targetRef: {kind: MeshSubset, tags: {env: prod}}, default: {action: Allow}}",
    );
    let m = matched(ResourceType::MeshTrafficPermission, &dp, &ps);
    let rules = &m.inbounds[&0];
    let client = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let action =
        |pairs: &[(&str, &str)]| rules.for_client_tags(&client(pairs)).unwrap().value["action"].clone();
    assert_eq!(action(&[("env", "dev"), ("zone", "us-east")]), "Allow");
    assert_eq!(action(&[("zone", "us-east")]), "Deny");
    assert_eq!(action(&[("env", "prod"), ("zone", "us-west")]), "Allow");
    assert_eq!(action(&[]), "Allow");
}

#[test]
fn c30_tcp_route_without_rules_routes_to_its_target() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps =
        policies("type: MeshTCPRoute\nname: r\nspec:\n  to: [{targetRef: {kind: MeshService, name: redis}}]");
    let m = matched(ResourceType::MeshTCPRoute, &dp, &ps);
    assert_eq!(
        m.to.conf(&Destination::service("redis")).unwrap().value,
        json!({"backendRefs": [{"kind": "MeshService", "name": "redis", "weight": 1}]})
    );
}

#[test]
fn c31_explain_lists_every_leaf_with_its_policy() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(&format!(
        "{}\n---\n{}",
        timeout(
            "base",
            "{kind: Mesh}",
            "[{targetRef: {kind: Mesh}, default: {idleTimeout: 20s, http: {requestTimeout: 1s}}}]"
        ),
        timeout(
            "special",
            "{kind: MeshService, name: a}",
            "[{targetRef: {kind: MeshService, name: b}, default: {http: {requestTimeout: 9s}}}]"
        )
    ));
    let conf = matched(MT, &dp, &ps).to.conf(&Destination::service("b")).unwrap();
    let explained: Vec<(String, String, String)> = conf
        .explain()
        .into_iter()
        .map(|(p, s)| (p, s.name.clone(), s.entry.clone()))
        .collect();
    assert_eq!(
        explained,
        vec![
            (
                "/http/requestTimeout".to_string(),
                "special".to_string(),
                "to[0]".to_string()
            ),
            (
                "/idleTimeout".to_string(),
                "base".to_string(),
                "to[0]".to_string()
            ),
        ]
    );
}

#[test]
fn c32_typed_conf_from_merge() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(&timeout(
        "p",
        "{kind: Mesh}",
        "[{targetRef: {kind: Mesh}, default: {connectionTimeout: 3s}}]",
    ));
    let conf: kuma_crds::policies::mesh_timeout::Conf = matched(MT, &dp, &ps)
        .to
        .conf(&Destination::service("z"))
        .unwrap()
        .conf()
        .unwrap();
    assert_eq!(
        conf.connection_timeout.unwrap().to_std(),
        Some(std::time::Duration::from_secs(3))
    );
}

#[test]
fn c33_external_services_are_distinct_destinations() {
    let dp = Dp::new("d").inbound("a", 80).build();
    let ps = policies(&timeout(
        "p",
        "{kind: Mesh}",
        "[{targetRef: {kind: MeshExternalService, name: httpbin}, default: {idleTimeout: 5s}}]",
    ));
    let m = matched(MT, &dp, &ps);
    let external = Destination {
        external: true,
        ..Destination::service("httpbin")
    };
    assert_eq!(m.to.conf(&external).unwrap().value, json!({"idleTimeout": "5s"}));
    assert!(m.to.conf(&Destination::service("httpbin")).is_none());
}

#[test]
fn c34_mesh_service_entries_name_the_resource_its_namespace_and_port() {
    // A MeshService port as policies see it: by name, namespace, labels and
    // port (sectionName: the port's name or number).
    let dp = Dp::new("d").inbound("x", 80).build();
    let ps = policies(&format!(
        "{}\n---\n{}",
        timeout(
            "a",
            "{kind: Mesh}",
            "[{targetRef: {kind: MeshService, name: web, namespace: shop, sectionName: http}, default: {idleTimeout: 1s}}]"
        ),
        timeout(
            "b",
            "{kind: Mesh}",
            "[{targetRef: {kind: MeshService, labels: {team: a}}, default: {idleTimeout: 2s}}]"
        )
    ));
    let m = matched(MT, &dp, &ps);
    let web = |namespace: &str, port_name: &str| Destination {
        service: "web".into(),
        namespace: Some(namespace.into()),
        port: Some(80),
        port_name: Some(port_name.into()),
        ..Default::default()
    };
    assert_eq!(
        m.to.conf(&web("shop", "http")).unwrap().value,
        json!({"idleTimeout": "1s"})
    );
    assert!(m.to.conf(&web("other", "http")).is_none());
    assert!(m.to.conf(&web("shop", "admin")).is_none());
    let labelled = Destination {
        labels: [("team".to_string(), "a".to_string())].into(),
        ..web("other", "admin")
    };
    assert_eq!(m.to.conf(&labelled).unwrap().value, json!({"idleTimeout": "2s"}));
    // A `kuma.io/service` has no namespace: a namespaced entry is not for it.
    assert!(m.to.conf(&Destination::service("web")).is_none());
}
