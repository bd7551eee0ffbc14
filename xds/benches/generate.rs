//! Generation benchmark: a mesh of 1,000 proxies, 200 services and 50
//! policies, all behind transparent proxies (every proxy reaches every
//! service). Prints figures; asserts nothing. Run: `cargo bench -p kuma-xds`.

use std::time::{Duration, Instant};

use kuma_crds::format::parse;
use kuma_crds::mesh::MeshSpec;
use kuma_crds::resource::{Resource, Spec};
use kuma_xds::context::{MeshContext, Proxy, ProxyMetadata};

const SERVICES: usize = 200;
const PROXIES: usize = 1000;
const POLICIES: usize = 50;

fn dataplane(i: usize) -> Resource {
    let service = i % SERVICES;
    let protocol = if service % 4 == 3 { "tcp" } else { "http" };
    let text = format!(
        "type: Dataplane\nmesh: default\nname: dp-{i}\nnetworking:\n  address: 10.{}.{}.{}\n  inbound:\n    - port: 8080\n      servicePort: 18080\n      tags:\n        kuma.io/service: svc-{service}\n        kuma.io/protocol: {protocol}\n        kuma.io/zone: zone-{}\n        version: v{}\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n",
        i / 65536,
        (i / 256) % 256,
        i % 256,
        i % 3,
        i % 2
    );
    parse(&text).expect("valid dataplane")
}

fn policy(i: usize) -> Resource {
    let target = if i.is_multiple_of(5) {
        "kind: Mesh".to_string()
    } else {
        format!("kind: MeshService\n    name: svc-{}", i * 4 % SERVICES)
    };
    let to = format!("kind: MeshService\n        name: svc-{}", (i * 7) % SERVICES);
    let text = match i % 5 {
        0 => format!(
            "type: MeshTimeout\nmesh: default\nname: p-{i}\nspec:\n  targetRef:\n    {target}\n  to:\n    - targetRef:\n        {to}\n      default:\n        idleTimeout: {}s\n        http:\n          requestTimeout: 5s\n",
            10 + i
        ),
        1 => format!(
            "type: MeshRetry\nmesh: default\nname: p-{i}\nspec:\n  targetRef:\n    {target}\n  to:\n    - targetRef:\n        {to}\n      default:\n        http:\n          numRetries: {}\n",
            1 + i % 4
        ),
        2 => format!(
            "type: MeshCircuitBreaker\nmesh: default\nname: p-{i}\nspec:\n  targetRef:\n    {target}\n  to:\n    - targetRef:\n        {to}\n      default:\n        connectionLimits:\n          maxConnections: {}\n",
            100 + i
        ),
        3 => format!(
            "type: MeshHTTPRoute\nmesh: default\nname: p-{i}\nspec:\n  targetRef:\n    {target}\n  to:\n    - targetRef:\n        {to}\n      rules:\n        - matches:\n            - path:\n                type: PathPrefix\n                value: /v1\n          default:\n            backendRefs:\n              - kind: MeshServiceSubset\n                name: svc-{}\n                tags:\n                  version: v1\n                weight: 100\n",
            (i * 7) % SERVICES
        ),
        _ => format!(
            "type: MeshHealthCheck\nmesh: default\nname: p-{i}\nspec:\n  targetRef:\n    {target}\n  to:\n    - targetRef:\n        {to}\n      default:\n        interval: 10s\n        timeout: 2s\n        unhealthyThreshold: 3\n        healthyThreshold: 1\n        http:\n          path: /health\n"
        ),
    };
    parse(&text).unwrap_or_else(|e| panic!("policy {i}: {e}\n{text}"))
}

fn per_proxy(d: Duration, n: usize) -> String {
    format!("{:.3} ms/proxy", d.as_secs_f64() * 1000.0 / n as f64)
}

fn main() {
    let mut resources: Vec<Resource> = (0..PROXIES).map(dataplane).collect();
    resources.extend((0..POLICIES).map(policy));
    let start = Instant::now();
    let mesh = MeshContext::build("default", &MeshSpec::default(), &resources);
    println!("mesh context: {:?}", start.elapsed());

    let proxies: Vec<Proxy<'_>> = resources
        .iter()
        .take(PROXIES)
        .map(|r| {
            let Spec::Dataplane(dp) = &r.spec else {
                unreachable!()
            };
            Proxy::new(r, ProxyMetadata::for_dataplane(dp)).expect("dataplane")
        })
        .collect();
    let start = Instant::now();
    let policies: Vec<_> = proxies
        .iter()
        .map(|p| kuma_xds::generate::Policies::compute(p, &mesh))
        .collect();
    println!("matching: {:?}", start.elapsed());
    let cache = kuma_xds::generate::OutboundCache::new();
    let start = Instant::now();
    let mut total = 0;
    for (p, pol) in proxies.iter().zip(&policies) {
        let set = kuma_xds::generate::generate_cached(p, &mesh, pol, Some(&cache));
        total += set.len();
        std::hint::black_box(set.encode());
    }
    println!(
        "cached generation+encoding: {:?} {:?}",
        start.elapsed(),
        cache.stats()
    );
    let start = Instant::now();
    for (p, pol) in proxies.iter().zip(&policies) {
        let set = kuma_xds::generate::generate_cached(p, &mesh, pol, Some(&cache));
        std::hint::black_box(set.encode());
    }
    println!(
        "warm cached generation+encoding: {:?} {:?}",
        start.elapsed(),
        cache.stats()
    );
    let elapsed = start.elapsed();
    println!(
        "full generation of {PROXIES} proxies ({SERVICES} services, {POLICIES} policies): {elapsed:?} ({}), {total} resources",
        per_proxy(elapsed, PROXIES)
    );
}
