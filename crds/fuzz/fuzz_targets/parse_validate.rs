//! Arbitrary text through the parser and validator must never panic, and
//! whatever is accepted must be written back and accepted again unchanged.

#![no_main]

use kuma_crds::format::{parse_documents, parse_value, to_kubernetes, to_universal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for resource in parse_documents(text).into_iter().flatten() {
        let universal = to_universal(&resource);
        let again = parse_value(universal).expect("a resource written back must parse again");
        assert_eq!(again.spec, resource.spec);
        let k8s = to_kubernetes(&resource, "kuma-system");
        let again = parse_value(k8s).expect("the Kubernetes form must parse again");
        assert_eq!(again.spec, resource.spec);
    }
});
