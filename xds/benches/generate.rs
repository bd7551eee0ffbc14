//! Generation benchmark: a mesh of 1,000 proxies, 200 services and 50
//! policies, all behind transparent proxies (every proxy reaches every
//! service: 200 outbound listeners, clusters and endpoint sets each).
//! Prints figures; asserts nothing. Run: `cargo bench -p kuma-xds`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kuma_crds::format::parse;
use kuma_crds::resource::Resource;
use kuma_xds::context::ProxyMetadata;
use kuma_xds::metrics::XdsMetrics;
use kuma_xds::snapshot::SnapshotCache;
use kuma_xds::sync::{Event, Generator};

const SERVICES: usize = 200;
const POLICIES: usize = 50;

/// 1,000 proxies unless `GENERATE_PROXIES` says otherwise (10,000 shows what
/// grows with the mesh rather than with the change).
fn proxies() -> usize {
    std::env::var("GENERATE_PROXIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn dataplane(i: usize) -> String {
    let service = i % SERVICES;
    let protocol = if service % 4 == 3 { "tcp" } else { "http" };
    format!(
        "type: Dataplane\nmesh: default\nname: dp-{i}\nnetworking:\n  address: 10.{}.{}.{}\n  inbound:\n    - port: 8080\n      servicePort: 18080\n      tags:\n        kuma.io/service: svc-{service}\n        kuma.io/protocol: {protocol}\n        kuma.io/zone: zone-{}\n        version: v{}\n        group: g{}\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n",
        i / 65536,
        (i / 256) % 256,
        i % 256,
        i % 3,
        i % 2,
        i % 10,
    )
}

fn policy(i: usize) -> String {
    let target = if i.is_multiple_of(5) {
        "kind: Mesh".to_string()
    } else {
        format!("kind: MeshService\n    name: svc-{}", i * 4 % SERVICES)
    };
    let to = format!("kind: MeshService\n        name: svc-{}", (i * 7) % SERVICES);
    match i % 5 {
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
    }
}

/// A policy selecting one tenth of the proxies (tag `group: g0`).
fn tenth_policy(round: usize) -> Event {
    let yaml = format!(
        "type: MeshTimeout\nmesh: default\nname: tenth\nspec:\n  targetRef:\n    kind: MeshSubset\n    tags:\n      group: g0\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: {}s\n",
        30 + round
    );
    upsert(&yaml)
}

/// A policy for every proxy's outbounds (`to` only), as an operator
/// changing a mesh-wide timeout writes it.
fn mesh_wide_policy(round: usize) -> Event {
    upsert(&format!(
        "type: MeshTimeout\nmesh: default\nname: mesh-wide\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        connectionTimeout: {}s\n",
        3 + round
    ))
}

fn upsert(yaml: &str) -> Event {
    let r: Resource = parse(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    Event::Upsert(Box::new(r))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let proxies = proxies();
    let snapshots = Arc::new(SnapshotCache::new());
    let mut generator = Generator::new(snapshots.clone(), Arc::new(XdsMetrics::default()));
    let mut events = vec![upsert("type: Mesh\nname: default")];
    events.extend((0..proxies).map(|i| upsert(&dataplane(i))));
    events.extend((0..POLICIES).map(|i| upsert(&policy(i))));
    events.extend((0..proxies).map(|i| Event::Connected {
        node: format!("default.dp-{i}"),
        metadata: ProxyMetadata {
            admin_port: 9901,
            readiness_port: 9902,
            ..Default::default()
        },
    }));

    let start = Instant::now();
    let report = generator.apply(events);
    let full = start.elapsed();
    let resources: usize = snapshots
        .nodes()
        .iter()
        .filter_map(|n| snapshots.get(n))
        .map(|s| s.len())
        .sum();
    println!(
        "full generation: {proxies} proxies, {SERVICES} services, {POLICIES} policies: {} ({} proxies, {resources} resources, {:.3} ms/proxy)",
        ms(full),
        report.regenerated.len(),
        full.as_secs_f64() * 1000.0 / proxies as f64,
    );
    println!(
        "outbound cache: {:?}",
        generator.cache_stats("default").unwrap_or_default()
    );

    let rounds = 5;
    let mut total = Duration::ZERO;
    let mut affected = 0;
    for round in 0..rounds {
        let start = Instant::now();
        let report = generator.apply(vec![tenth_policy(round)]);
        total += start.elapsed();
        affected = report.changed.len();
    }
    println!(
        "one policy change affecting 10% of proxies: {} per change ({affected} proxies changed)",
        ms(total / rounds as u32)
    );

    let mut total = Duration::ZERO;
    for round in 0..rounds {
        let start = Instant::now();
        let report = generator.apply(vec![mesh_wide_policy(round)]);
        total += start.elapsed();
        affected = report.changed.len();
    }
    println!(
        "one policy change for every proxy's outbounds: {} per change ({affected} proxies changed)",
        ms(total / rounds as u32)
    );

    let mut total = Duration::ZERO;
    for round in 0..rounds {
        let start = Instant::now();
        let report = generator.apply(vec![upsert(&dataplane(proxies + round * SERVICES))]);
        total += start.elapsed();
        affected = report.changed.len();
    }
    println!(
        "one new endpoint of a service every proxy reaches: {} per endpoint ({affected} proxies changed)",
        ms(total / rounds as u32)
    );

    let mut total = Duration::ZERO;
    for round in 0..rounds {
        let start = Instant::now();
        let report = generator.apply(vec![upsert(
            &policy(2).replace("maxConnections: 102", &format!("maxConnections: {}", 103 + round)),
        )]);
        total += start.elapsed();
        affected = report.changed.len();
    }
    println!(
        "one policy change for one service's proxies: {} per change ({affected} proxies changed)",
        ms(total / rounds as u32)
    );
}
