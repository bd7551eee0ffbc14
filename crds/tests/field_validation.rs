//! Fields nobody knows: refused field by field in Strict mode, dropped with
//! one warning each in Warn mode; server-owned fields that Kuma's clients
//! send back (`status`, `kri`, `snis`, times) are never unknown.

use kuma_crds::format::{FieldValidation, parse_with, to_universal};

/// `(document, Strict's violations, Warn's warnings)`; an empty Strict list
/// means accepted in both modes.
type Case = (&'static str, &'static [&'static str], &'static [&'static str]);

const CASES: &[Case] = &[
    (
        // What Kuma's kumactl sends for a MeshAccessLog read from Kuma.
        "type: MeshAccessLog\nname: log\nmesh: default\nkri: kri_mal_default___log_\ncreationTime: \"2026-01-01T00:00:00Z\"\nmodificationTime: \"2026-01-01T00:00:00Z\"\nspec:\n  targetRef:\n    kind: Mesh\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        backends:\n          - type: File\n            file:\n              path: /dev/stdout\nstatus: {}\n",
        &[],
        &[],
    ),
    (
        "type: MeshService\nname: backend\nmesh: default\nsnis: []\nspec:\n  selector:\n    dataplaneTags:\n      app: backend\n  ports:\n    - port: 80\n      targetPort: 8080\n      appProtocol: http\nstatus: {}\n",
        &[],
        &[],
    ),
    (
        "type: MeshTimeout\nname: t\nmesh: default\nowner: team-a\nspec:\n  targetRef:\n    kind: Mesh\n    sectionName: \"\"\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 20s\n        retries: 3\n",
        &[
            "owner: unknown field (allowed: type, name, mesh, labels, spec)",
            "spec.to[0].default.retries: unknown field (allowed: connectionTimeout, http, idleTimeout)",
        ],
        &[
            "owner: unknown field (allowed: type, name, mesh, labels, spec)",
            "spec.to[0].default.retries: unknown field (allowed: connectionTimeout, http, idleTimeout)",
        ],
    ),
    (
        "apiVersion: kuma.io/v1alpha1\nkind: MeshTimeout\nmetadata:\n  name: t\n  namespace: kuma-system\n  shard: 3\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 20s\nextra: true\nstatus: {}\n",
        &[
            "metadata.shard: unknown field (allowed: annotations, creationTimestamp, deletionGracePeriodSeconds, deletionTimestamp, finalizers, generateName, generation, labels, managedFields, name, namespace, ownerReferences, resourceVersion, selfLink, uid)",
            "extra: unknown field (allowed: apiVersion, kind, metadata, spec)",
        ],
        &[
            "metadata.shard: unknown field (allowed: annotations, creationTimestamp, deletionGracePeriodSeconds, deletionTimestamp, finalizers, generateName, generation, labels, managedFields, name, namespace, ownerReferences, resourceVersion, selfLink, uid)",
            "extra: unknown field (allowed: apiVersion, kind, metadata, spec)",
        ],
    ),
];

#[test]
fn strict_refuses_and_warn_drops_unknown_fields_but_never_server_owned_ones() {
    let mut failures = Vec::new();
    for (i, (doc, strict, warned)) in CASES.iter().enumerate() {
        let got_strict: Vec<String> = match parse_with(doc, FieldValidation::Strict) {
            Ok(_) => vec![],
            Err(e) => e.violations().iter().map(ToString::to_string).collect(),
        };
        let got_warn: Vec<String> = match parse_with(doc, FieldValidation::Warn) {
            Ok(p) => p.warnings.iter().map(ToString::to_string).collect(),
            Err(e) => vec![format!("<refused: {e}>")],
        };
        if got_strict != *strict || got_warn != *warned {
            failures.push(format!("case {i}:\nstrict: {got_strict:#?}\nwarn: {got_warn:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn warn_keeps_every_known_field_and_only_those() {
    let doc = CASES[2].0;
    let parsed = parse_with(doc, FieldValidation::Warn).expect("accepted");
    let written = serde_yaml::to_string(&to_universal(&parsed.resource)).expect("yaml");
    assert!(written.contains("idleTimeout: 20s"), "{written}");
    assert!(
        !written.contains("retries") && !written.contains("owner"),
        "{written}"
    );
}

#[test]
fn warn_still_refuses_everything_else_and_names_every_problem() {
    let doc = "type: MeshTimeout\nname: t\nmesh: default\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: soon\n        unknown: 1\n";
    let e = parse_with(doc, FieldValidation::Warn).expect_err("refused");
    let got: Vec<String> = e.violations().iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "spec.to[0].default.unknown: unknown field (allowed: connectionTimeout, http, idleTimeout)",
            "spec.to[0].default.idleTimeout: must be a valid duration, e.g. 10s (\"soon\" has a unit without a number)",
        ],
        "a refused document names its unknown fields too: {got:?}"
    );
}
