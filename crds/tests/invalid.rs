//! Invalid documents are refused with every violation, each at its exact
//! field path, through the full parse pipeline of both forms.

use kuma_crds::format::parse;

/// `(document, expected "field: message" lines)`.
type Case = (&'static str, &'static [&'static str]);

fn check(cases: &[Case]) {
    let owned: Vec<(String, Vec<&str>)> = cases.iter().map(|(d, e)| (d.to_string(), e.to_vec())).collect();
    check_owned(&owned);
}

fn check_owned(cases: &[(String, Vec<&str>)]) {
    let mut failures = Vec::new();
    for (i, (doc, expected)) in cases.iter().enumerate() {
        let got: Vec<String> = match parse(doc) {
            Ok(_) => vec!["<accepted>".to_string()],
            Err(e) => e.violations().iter().map(|v| v.to_string()).collect(),
        };
        let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        if got != expected {
            failures.push(format!(
                "case {i}:\n{doc}\nexpected: {expected:#?}\ngot: {got:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

const TIMEOUT_HEAD: &str = "type: MeshTimeout\nname: t\nmesh: default\n";

#[test]
fn document_shape() {
    check(&[
        (
            "name: x\nmesh: default",
            &["type: must be set (e.g. `type: MeshTimeout`)"],
        ),
        (
            "type: MeshTimeouts\nname: x",
            &["type: unknown resource type \"MeshTimeouts\""],
        ),
        ("type: 7\nname: x", &["type: must be a string"]),
        ("- a\n- b", &["must be an object with `type` and `name`"]),
        (
            "type: MeshTimeout\nname: UPPER\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &[
                "name: \"UPPER\" is invalid: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
            ],
        ),
        (
            "type: MeshTimeout\nname: ''\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &["name: must not be empty"],
        ),
        (
            "type: Mesh\nname: m\nmesh: other",
            &["mesh: must not be set for Mesh"],
        ),
        (
            "type: MeshTimeout\nname: t\nmesh: Bad_Mesh\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &[
                "mesh: \"Bad_Mesh\" is invalid: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
            ],
        ),
        (
            "type: MeshTimeout\nname: t\nmesh: a\nlabels: {kuma.io/mesh: b}\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &["labels[\"kuma.io/mesh\"]: kuma.io/mesh label must not differ from mesh set on resource"],
        ),
        (
            "type: MeshTimeout\nname: t\nlabels: {'bad key!': x, ok: '-bad'}\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &[
                "labels[\"bad key!\"]: label key \"bad key!\" is invalid: the name part must be 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
                "labels[\"ok\"]: label value \"-bad\" is invalid: at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
            ],
        ),
        (
            "type: MeshTimeout\nname: t\nlabels: {kuma.io/origin: mars}\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &["labels[\"kuma.io/origin\"]: unknown resource origin \"mars\""],
        ),
        (
            "type: MeshTimeout\nname: t\nextra: 1\nspec: {}",
            &[
                "extra: unknown field (allowed: type, name, mesh, labels, spec)",
                "spec: at least one of 'from', 'to' or 'rules' has to be defined",
            ],
        ),
        (
            // Unknown fields and semantic problems are reported together.
            "type: MeshTimeout\nname: t\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: ten, http: {requestTimeot: 1s}}}]}",
            &[
                "spec.to[0].default.http.requestTimeot: unknown field (did you mean \"requestTimeout\"?)",
                "spec.to[0].default.idleTimeout: must be a valid duration, e.g. 10s (\"ten\" has a unit without a number)",
                "spec.to[0].default.http: at least one timeout in this section should be configured",
            ],
        ),
        (
            "apiVersion: kuma.io/v1\nkind: MeshTimeout\nmetadata: {name: t, namespace: ns}\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &["apiVersion: must be kuma.io/v1alpha1"],
        ),
        (
            "apiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmetadata: {name: t, namespace: Bad_NS}\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &[
                "metadata.namespace: \"Bad_NS\" is not a valid namespace: use at most 63 lower-case letters, digits and '-'",
            ],
        ),
        (
            "apiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmesh: default\nmetadata: {name: t, namespace: ns}\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &["mesh: unknown field: MeshTimeout names its mesh with the kuma.io/mesh label"],
        ),
        (
            "apiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmetadata: {name: t, namespace: ns, labelz: {}}\nspec: {to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &["metadata.labelz: unknown field (did you mean \"labels\"?)"],
        ),
        (
            "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec: {mtls: {enabledBackend: x}}",
            &["spec.mtls.enabledBackend: has to be set to one of the backends in the mesh"],
        ),
    ]);
}

#[test]
fn yaml_syntax_errors_name_the_problem() {
    let err = parse("type: [").unwrap_err();
    assert_eq!(err.violations().len(), 1);
    assert!(err.violations()[0].message.starts_with("invalid YAML:"), "{err}");
}

#[test]
fn structure_against_the_schema() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("{TIMEOUT_HEAD}spec:\n  to:\n    - targetRef: {{kind: Mesh}}\n      default: {{idleTimeot: 1s, http: {{requestTimeout: 5}}}}"),
            vec![
                "spec.to[0].default.idleTimeot: unknown field (did you mean \"idleTimeout\"?)",
                "spec.to[0].default.http.requestTimeout: must be a string",
            ],
        ),
        (
            format!("{TIMEOUT_HEAD}spec:\n  to:\n    - targetRef: {{kind: MeshSrvice, name: x}}"),
            vec!["spec.to[0].targetRef.kind: \"MeshSrvice\" is not one of: Mesh, MeshSubset, MeshGateway, MeshService, MeshExternalService, MeshMultiZoneService, MeshServiceSubset, MeshHTTPRoute, Dataplane"],
        ),
        (
            format!("{TIMEOUT_HEAD}spec:\n  targetRef: {{kind: Mesh, proxyTypes: [Sidecars]}}\n  to: {{}}"),
            vec![
                "spec.targetRef.proxyTypes[0]: \"Sidecars\" is not one of: Sidecar, Gateway",
                "spec.to: must be a list",
            ],
        ),
        (
            "type: MeshHTTPRoute\nname: r\nspec:\n  to:\n    - targetRef: {kind: MeshService, name: b}\n      rules:\n        - matches: [{path: {type: Prefix, value: /}}]\n          default: {backendRefs: [{kind: MeshService, name: b, weight: -1}]}".to_string(),
            vec![
                "spec.to[0].rules[0].matches[0].path.type: \"Prefix\" is not one of: Exact, PathPrefix, RegularExpression",
                "spec.to[0].rules[0].default.backendRefs[0].weight: must be greater than or equal to 0",
            ],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 1.1.1.1, inbound: [{port: http}], gatway: {}}".to_string(),
            vec![
                "networking.inbound[0].port: must be an integer",
                "networking.gatway: unknown field (did you mean \"gateway\"?)",
            ],
        ),
        (
            "type: Mesh\nname: m\nmtls: {backends: [{name: a, type: builtin, mode: strict}]}\nnetworkin: {}".to_string(),
            vec![
                "mtls.backends[0].mode: \"strict\" is not one of: STRICT, PERMISSIVE",
                "networkin: unknown field (did you mean \"networking\"?)",
            ],
        ),
        (
            "type: MeshCircuitBreaker\nname: c\nspec:\n  to:\n    - targetRef: {kind: Mesh}\n      default: {outlierDetection: {detectors: {successRate: {standardDeviationFactor: [1]}}}}".to_string(),
            vec!["spec.to[0].default.outlierDetection.detectors.successRate.standardDeviationFactor: must be an integer or a string"],
        ),
        (
            "type: MeshTrace\nname: t\nspec: {default: {backends: [{type: Zipkin, zipkin: {url: 'http://z:9411', traceId128bit: maybe}}]}}".to_string(),
            vec!["spec.default.backends[0].zipkin.traceId128bit: must be true or false"],
        ),
    ];
    check_owned(&cases);
}

#[test]
fn dataplanes() {
    check(&[
        (
            "type: Dataplane\nname: d\nmesh: default",
            &["networking: must be defined"],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1}",
            &[
                "networking: must define at least one inbound or a gateway (or outbounds or transparentProxying for a client-only proxy)",
            ],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {inbound: [{port: 80, tags: {kuma.io/service: a}}]}",
            &["networking.address: address can't be empty"],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: '::', inbound: [{port: 80, tags: {kuma.io/service: a}}]}",
            &["networking.address: must not be 0.0.0.0 or ::"],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 'not an address', inbound: [{port: 80, tags: {kuma.io/service: a}}]}",
            &["networking.address: address has to be valid IP address or domain name"],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, inbound: [{port: 0, servicePort: 70000, tags: {kuma.io/service: a}}]}",
            &[
                "networking.inbound[0].port: must be in the range [1, 65535]",
                "networking.inbound[0].servicePort: must be in the range [1, 65535]",
            ],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, inbound: [{port: 80, tags: {version: v1}}]}",
            &["networking.inbound[0].tags[\"kuma.io/service\"]: tag has to exist"],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, inbound: [{port: 80, serviceAddress: 10.0.0.1, tags: {kuma.io/service: a}}]}",
            &[
                "networking.inbound[0].serviceAddress: serviceAddress and servicePort has to differ from address and port",
            ],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, inbound: [{port: 80, protocol: smtp, tags: {kuma.io/service: a}}]}",
            &[
                "networking.inbound[0].protocol: has an invalid value \"smtp\". Allowed values: tcp, tls, http, http2, grpc, kafka, mysql",
            ],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, inbound: [{port: 80, tags: {kuma.io/service: a}}, {port: 80, tags: {kuma.io/service: b}}]}",
            &["networking.inbound[1].name: name \"80\" must be unique across inbounds and listeners"],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, outbound: [{port: 80, tags: {version: v1}}]}",
            &["networking.outbound[0].tags: mandatory tag \"kuma.io/service\" is missing"],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, outbound: [{port: 80, backendRef: {kind: Service}}]}",
            &[
                "networking.outbound[0].backendRef.kind: invalid value. Available values are: MeshExternalService,MeshMultiZoneService,MeshService",
                "networking.outbound[0].backendRef: either 'name' or 'labels' should be specified",
                "networking.outbound[0].backendRef.port: must be defined",
            ],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, gateway: {tags: {version: v1}}, inbound: [{port: 80, tags: {kuma.io/service: a}}]}",
            &[
                "networking.inbound: inbound cannot be defined for delegated gateways",
                "networking.gateway.tags: mandatory tag \"kuma.io/service\" is missing",
            ],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, admin: {port: 80}, inbound: [{port: 80, tags: {kuma.io/service: a}}]}",
            &["networking.admin.port: must differ from inbound"],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, transparentProxying: {redirectPortInbound: 0, reachableBackends: {refs: [{kind: MeshService, namespace: x}]}}}",
            &[
                "networking.transparentProxying.redirectPortInbound: must be in the range [1, 65535]",
                "networking.transparentProxying.reachableBackends.refs[0].name: name is required, when namespace is defined",
            ],
        ),
        (
            "type: Dataplane\nname: d\nnetworking: {address: 10.0.0.1, inbound: [{port: 80, tags: {kuma.io/service: a}, serviceProbe: {interval: 0s, unhealthyThreshold: 0}}]}",
            &[
                "networking.inbound[0].serviceProbe.interval: must be greater than 0",
                "networking.inbound[0].serviceProbe.unhealthyThreshold: must have a positive value",
            ],
        ),
    ]);
}

#[test]
fn meshes_and_services() {
    check(&[
        (
            "type: Mesh\nname: m\nmtls: {enabledBackend: b, backends: [{name: a, type: builtin}]}",
            &["mtls.enabledBackend: has to be set to one of the backends in the mesh"],
        ),
        (
            "type: Mesh\nname: m\nmtls: {backends: [{name: a, type: builtin, conf: {caCert: {RSAbits: 1000}}}]}",
            &["mtls.backends[0].conf.caCert.RSAbits: must be 2048, 3072 or 4096"],
        ),
        (
            "type: Mesh\nname: m\nmtls: {backends: [{name: a, type: provided, conf: {cert: {file: /x}}}]}",
            &["mtls.backends[0].conf.key: has to be defined"],
        ),
        (
            "type: Mesh\nname: m\nlogging: {defaultBackend: x, backends: [{name: a, type: syslog}]}",
            &[
                "logging.backends[0].type: unknown backend type. Available backends: \"tcp\", \"file\"",
                "logging.defaultBackend: has to be set to one of the logging backends in the mesh",
            ],
        ),
        (
            "type: Mesh\nname: m\ntracing: {backends: [{name: z, type: zipkin, sampling: 120}]}",
            &["tracing.backends[0].sampling: has to be in [0.0 - 100.0] range"],
        ),
        (
            "type: Mesh\nname: m\nconstraints: {dataplaneProxy: {requirements: [{tags: {}}]}}",
            &["constraints.dataplaneProxy.requirements[0].tags: must have at least one tag"],
        ),
        (
            "type: Mesh\nname: m\nrouting: {zoneEgress: true}",
            &["mtls: has to be set when zoneEgress enabled"],
        ),
        (
            "type: MeshService\nname: s\nspec: {selector: {dataplaneTags: {a: b}, dataplaneLabels: {matchLabels: {a: b}}}, ports: [{port: 80, appProtocol: soap}]}",
            &[
                "spec.selector: must specify only one of: dataplaneTags, dataplaneRef, or dataplaneLabels",
                "spec.ports[0].appProtocol: has an invalid value \"soap\". Allowed values: tcp, tls, http, http2, grpc, kafka, mysql",
            ],
        ),
        (
            "type: MeshExternalService\nname: e\nspec: {match: {port: 0}}",
            &[
                "spec.match.port: must be in the range [1, 65535]",
                "spec.endpoints: must be defined when extension is not",
            ],
        ),
    ]);
}

#[test]
fn policies() {
    check(&[
        (
            "type: MeshTimeout\nname: t\nspec: {}",
            &["spec: at least one of 'from', 'to' or 'rules' has to be defined"],
        ),
        (
            "type: MeshTimeout\nname: t\nspec: {to: [{targetRef: {kind: Mesh}, default: {http: {requestTimeout: ten}}}]}",
            &[
                "spec.to[0].default.http.requestTimeout: must be a valid duration, e.g. 10s (\"ten\" has a unit without a number)",
            ],
        ),
        (
            "type: MeshTimeout\nname: t\nspec: {targetRef: {kind: Mesh, name: x}, to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &["spec.targetRef.name: using name with kind Mesh is not yet supported"],
        ),
        (
            "type: MeshTimeout\nname: t\nlabels: {kuma.io/policy-role: consumer}\nspec: {targetRef: {kind: MeshHTTPRoute, name: r}, to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &[
                "spec.targetRef.kind: value 'MeshHTTPRoute' is not supported",
                "spec.to[0].default.idleTimeout: can't be specified when top-level TargetRef is referencing MeshHTTPRoute",
            ],
        ),
        (
            "type: MeshTimeout\nname: t\nspec: {targetRef: {kind: MeshHTTPRoute, name: r}, to: [{targetRef: {kind: Mesh}, default: {idleTimeout: 1s}}]}",
            &[
                "spec.to[0].default.idleTimeout: can't be specified when top-level TargetRef is referencing MeshHTTPRoute",
            ],
        ),
        (
            "type: MeshRetry\nname: r\nspec: {to: [{targetRef: {kind: MeshSubset, tags: {a: b}}, default: {tcp: {maxConnectAttempt: 1}}}]}",
            &["spec.to[0].targetRef.kind: value 'MeshSubset' is not supported"],
        ),
        (
            "type: MeshRetry\nname: r\nspec: {to: [{targetRef: {kind: Mesh}, default: {http: {backOff: {baseInterval: 1s, maxInterval: 10ms}}}}]}",
            &["spec.to[0].default.http.backOff.maxInterval: must be greater than or equal to baseInterval"],
        ),
        (
            "type: MeshRetry\nname: r\nspec: {to: [{targetRef: {kind: Mesh}, default: {grpc: {numRetries: 1}, http: {retriableRequestHeaders: [{name: X-Bad}]}}}]}",
            &[
                "spec.to[0].default.http.retriableRequestHeaders[0].name: must be a lower-case HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
            ],
        ),
        (
            "type: MeshHealthCheck\nname: h\nspec: {to: [{targetRef: {kind: MeshHTTPRoute, name: r}, default: {tcp: {}}}]}",
            &["spec.to[0].targetRef.kind: value 'MeshHTTPRoute' is not supported"],
        ),
        (
            "type: MeshHealthCheck\nname: h\nspec: {to: [{targetRef: {kind: Mesh}, default: {tcp: {send: '!!!'}}}]}",
            &["spec.to[0].default.tcp.send: must be base64"],
        ),
        (
            "type: MeshCircuitBreaker\nname: c\nspec: {to: [{targetRef: {kind: Mesh}, default: {outlierDetection: {interval: 1s}}}]}",
            &["spec.to[0].default.outlierDetection.detectors: must be defined"],
        ),
        (
            "type: MeshCircuitBreaker\nname: c\nspec: {from: [{targetRef: {kind: MeshService, name: a}, default: {connectionLimits: {maxConnections: 1}}}]}",
            &["spec.from[0].targetRef.kind: value 'MeshService' is not supported"],
        ),
        (
            "type: MeshLoadBalancingStrategy\nname: l\nspec: {to: [{targetRef: {kind: Mesh}, default: {loadBalancer: {type: LeastRequest, leastRequest: {choiceCount: 1}}}}]}",
            &["spec.to[0].default.loadBalancer.leastRequest.choiceCount: must be greater than or equal to 2"],
        ),
        (
            // Envoy refuses a maglev table whose size is not prime.
            "type: MeshLoadBalancingStrategy\nname: l\nspec: {to: [{targetRef: {kind: Mesh}, default: {loadBalancer: {type: Maglev, maglev: {tableSize: 1000}}}}]}",
            &["spec.to[0].default.loadBalancer.maglev.tableSize: must be a prime number"],
        ),
        (
            "type: MeshLoadBalancingStrategy\nname: l\nspec: {to: [{targetRef: {kind: MeshHTTPRoute, name: r}, default: {loadBalancer: {type: Random}}}]}",
            &[
                "spec.to[0].default.loadBalancer: field is not allowed when targetRef.kind is MeshHTTPRoute, only hashPolicies is supported",
            ],
        ),
        (
            "type: MeshHTTPRoute\nname: r\nspec: {to: [{targetRef: {kind: MeshService, name: b}, rules: [{matches: [], default: {}}]}]}",
            &["spec.to[0].rules[0].matches: must have at least one element"],
        ),
        (
            "type: MeshHTTPRoute\nname: r\nspec: {to: [{targetRef: {kind: MeshService, name: b}, rules: [{matches: [{path: {type: RegularExpression, value: '(['}}], default: {}}]}]}",
            &["spec.to[0].rules[0].matches[0].path.value: must be a valid regular expression"],
        ),
        (
            "type: MeshHTTPRoute\nname: r\nspec: {to: [{targetRef: {kind: MeshService, name: b}, rules: [{matches: [{headers: [{type: Present, name: x, value: y}]}], default: {}}]}]}",
            &["spec.to[0].rules[0].matches[0].headers[0].value: must not be defined"],
        ),
        (
            "type: MeshHTTPRoute\nname: r\nspec: {to: [{targetRef: {kind: MeshService, name: b}, rules: [{matches: [{path: {type: PathPrefix, value: /}}], default: {filters: [{type: RequestRedirect, requestRedirect: {statusCode: 200}}]}}]}]}",
            &[
                "spec.to[0].rules[0].default.filters[0].requestRedirect.statusCode: must be one of: 301, 302, 303, 307, 308",
            ],
        ),
        (
            "type: MeshHTTPRoute\nname: r\nspec: {to: [{targetRef: {kind: MeshService, name: b}, rules: [{matches: [{path: {type: PathPrefix, value: /}}], default: {filters: [{type: RequestMirror, requestMirror: {percentage: 150, backendRef: {kind: Mesh}}}]}}]}]}",
            &[
                "spec.to[0].rules[0].default.filters[0].requestMirror.backendRef.kind: value 'Mesh' is not supported",
                "spec.to[0].rules[0].default.filters[0].requestMirror.percentage: must be in inclusive range [0.0, 100.0]",
            ],
        ),
        (
            "type: MeshTCPRoute\nname: r\nspec: {to: [{targetRef: {kind: MeshService, name: b}, rules: [{default: {backendRefs: [{kind: MeshService, name: a}]}}, {default: {backendRefs: [{kind: MeshService, name: c}]}}]}]}",
            &["spec.to[0].rules: must have at most one rule"],
        ),
        (
            "type: MeshFaultInjection\nname: f\nspec: {targetRef: {kind: Dataplane, labels: {a: b}}, rules: [{matches: [{spiffeID: {value: x}}], default: {http: []}}]}",
            &[
                "spec.rules[0].matches[0].spiffeID: must be a valid Spiffe ID: scheme is missing or invalid",
                "spec.rules[0].matches[0].spiffeID.type: must be set",
            ],
        ),
        (
            "type: MeshFaultInjection\nname: f\nspec: {targetRef: {kind: Dataplane, labels: {a: b}}, from: [{targetRef: {kind: Mesh}, default: {http: [{abort: {httpStatus: 99, percentage: 10}}]}}]}",
            &["spec.from[0].default.http[0].abort.httpStatus: must be in inclusive range [100, 599]"],
        ),
        (
            "type: MeshRateLimit\nname: r\nspec: {targetRef: {kind: Dataplane, labels: {a: b}}, from: [{targetRef: {kind: Mesh}, default: {local: {http: {onRateLimit: {status: 42}}}}}]}",
            &["spec.from[0].default.local.http.onRateLimit.status: must be in inclusive range [100, 599]"],
        ),
        (
            "type: MeshRateLimit\nname: r\nspec: {to: [{targetRef: {kind: MeshService, name: x}, default: {local: {tcp: {disabled: true}}}}]}",
            &["spec.to[0].targetRef.kind: value 'MeshService' is not supported"],
        ),
        (
            "type: MeshAccessLog\nname: a\nspec: {from: [{targetRef: {kind: Mesh}, default: {backends: [{type: File}]}}]}",
            &["spec.from[0].default.backends[0].file: must be defined"],
        ),
        (
            "type: MeshAccessLog\nname: a\nspec: {targetRef: {kind: MeshGateway, name: g}, to: [{targetRef: {kind: MeshService, name: s}, default: {backends: []}}]}",
            &["spec.to[0].targetRef.kind: value 'MeshService' is not supported"],
        ),
        (
            "type: MeshTrace\nname: t\nspec: {default: {backends: [{type: Zipkin, zipkin: {url: z}}, {type: Zipkin, zipkin: {url: y}}]}}",
            &["spec.default.backends: must have zero or one backend defined"],
        ),
        (
            "type: MeshTrace\nname: t\nspec: {default: {backends: [{type: Zipkin, zipkin: {url: 'zipkin:9411'}}]}}",
            &[
                "spec.default.backends[0].zipkin.url: must be a valid url, e.g. http://zipkin:9411/api/v2/spans",
            ],
        ),
        (
            "type: MeshMetric\nname: m\nspec: {default: {backends: [{type: OpenTelemetry}]}}",
            &["spec.default.backends[0].openTelemetry: must be defined"],
        ),
        (
            "type: MeshMetric\nname: m\nspec: {targetRef: {kind: Dataplane, sectionName: http}, default: {}}",
            &["spec.targetRef.sectionName: can only be used with inbound policies"],
        ),
        (
            "type: MeshProxyPatch\nname: p\nspec: {default: {}}",
            &["spec.default.appendModifications: must not be empty"],
        ),
        (
            "type: MeshProxyPatch\nname: p\nspec: {default: {appendModifications: [{cluster: {operation: Patch, value: 'a: 1', jsonPatches: [{op: remove, path: /x}]}}]}}",
            &[
                "spec.default.appendModifications[0].cluster: cluster must have only one type defined: value, jsonPatches",
            ],
        ),
        (
            "type: MeshTLS\nname: t\nspec: {targetRef: {kind: MeshService, name: x}, rules: [{default: {mode: Strict}}]}",
            &["spec.targetRef.kind: value 'MeshService' is not supported"],
        ),
        (
            "type: MeshTLS\nname: t\nspec: {from: [{targetRef: {kind: Mesh}, default: {}}], rules: [{default: {mode: Strict}}]}",
            &["spec: field 'from' must be empty when 'rules' is defined"],
        ),
        (
            "type: MeshPassthrough\nname: p\nspec: {default: {appendMatch: [{type: IP, value: 1.1.1.1, port: 0}]}}",
            &["spec.default.appendMatch[0].port: must be in the range [1, 65535]"],
        ),
        (
            "type: MeshTrafficPermission\nname: p\nspec: {from: [{targetRef: {kind: MeshServiceSubset, tags: {a: b}}, default: {action: Allow}}]}",
            &["spec.from[0].targetRef.name: must be set when kind is MeshServiceSubset"],
        ),
        (
            "type: MeshTrafficPermission\nname: p\nspec: {from: [{targetRef: {kind: MeshSubset, tags: {'': x, version: 'v/1'}}, default: {action: Deny}}]}",
            &[
                "spec.from[0].targetRef.tags: tag name must be non-empty",
                "spec.from[0].targetRef.tags[\"version\"]: tag value must consist of alphanumeric characters, dots, dashes and underscores",
            ],
        ),
    ]);
}

#[test]
fn at_least_sixty_distinct_paths_are_covered() {
    // Guards the coverage promise of this file: count distinct field paths
    // asserted above by parsing every case again.
    let source = include_str!("invalid.rs");
    let mut paths = std::collections::BTreeSet::new();
    for line in source.lines() {
        let line = line.trim().trim_start_matches("&[").trim_start_matches('"');
        if let Some((field, _)) = line.split_once(": ")
            && (field.starts_with("spec")
                || field.starts_with("networking")
                || field.starts_with("mtls")
                || field.starts_with("labels")
                || field.starts_with("metadata")
                || field.starts_with("logging")
                || field.starts_with("tracing")
                || field.starts_with("constraints")
                || field == "name"
                || field == "mesh"
                || field == "type"
                || field == "apiVersion"
                || field == "extra")
        {
            paths.insert(field.to_string());
        }
    }
    assert!(
        paths.len() >= 60,
        "only {} distinct paths: {paths:#?}",
        paths.len()
    );
}
