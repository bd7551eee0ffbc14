//! The Kubernetes-form corpus of invalid documents
//! (`testdata/invalid-kubernetes.yaml`, also applied with kubectl through
//! the validating webhook by `e2e/tests/kubernetes_admission.rs`): each is
//! refused by the model's own validation with the message it names, except
//! the few marked as refused by the Kubernetes rules (a missing mesh, a
//! kind outside the system namespace), which only the cluster can judge;
//! every policy kind has at least one case.

use std::collections::BTreeSet;

use kuma_crds::format::parse;
use kuma_crds::resource::ResourceType;

/// The marker of documents only the Kubernetes rules refuse.
const CLUSTER_RULE: &str = "# refused by the Kubernetes rules";

#[test]
fn every_invalid_document_is_refused_with_its_message() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/testdata/invalid-kubernetes.yaml"
    ))
    .expect("corpus");
    let mut failures = Vec::new();
    let mut kinds = BTreeSet::new();
    for doc in text.split("\n---\n") {
        let expect = doc
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("no `# expect:` line in\n{doc}"));
        if let Some(kind) = doc.lines().find_map(|l| l.strip_prefix("kind: ")) {
            kinds.insert(kind.trim().to_string());
        }
        match (parse(doc), doc.contains(CLUSTER_RULE)) {
            (Ok(_), true) => {}
            (Ok(_), false) => failures.push(format!("accepted:\n{doc}")),
            (Err(e), true) => failures.push(format!("refused by the model ({e}), not the cluster:\n{doc}")),
            (Err(e), false) => {
                let got: Vec<String> = e.violations().iter().map(|v| v.to_string()).collect();
                if !got.iter().any(|v| v.contains(expect)) {
                    failures.push(format!("expected {expect:?}, got {got:#?}:\n{doc}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let missing: Vec<&str> = ResourceType::ALL
        .iter()
        .filter(|t| t.is_policy())
        .map(|t| t.name())
        .filter(|name| !kinds.contains(*name))
        .collect();
    assert!(missing.is_empty(), "no invalid example of {missing:?}");
}
