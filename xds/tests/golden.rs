//! Golden files of generated Envoy config, one per case: every
//! `tests/golden/<policy>/<case>.input.yaml` generates the config of its
//! first Dataplane, compared with `<case>.golden.yaml`. `UPDATE_GOLDEN=1`
//! rewrites the golden files (review the diff).
//!
//! Every golden file is also loaded by the real Envoy in validate mode.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use kuma_xds::generate::OutboundCache;
use kuma_xds::static_config::static_bootstrap;
use support::{Fixture, envoy_bin, files_with_suffix};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn cases() -> Vec<(String, PathBuf)> {
    let cases: Vec<(String, PathBuf)> = files_with_suffix(&golden_dir(), ".input.yaml")
        .into_iter()
        .map(|p| {
            let name = p
                .strip_prefix(golden_dir())
                .unwrap_or(&p)
                .to_string_lossy()
                .replace(".input.yaml", "");
            (name, p)
        })
        .collect();
    assert!(!cases.is_empty(), "no golden cases found");
    cases
}

fn fixture(path: &Path) -> Fixture {
    Fixture::load(path)
}

#[test]
fn generated_config_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (name, input) in cases() {
        let (_, resources) = fixture(&input).generate();
        let actual = resources.to_yaml();
        let golden = input.with_file_name(
            input
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".input.", ".golden."),
        );
        if update {
            std::fs::write(&golden, &actual).expect("write golden file");
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: differs from golden file\n{}",
                first_difference(&expected, &actual)
            )),
            Err(_) => failures.push(format!("{name}: no golden file (run with UPDATE_GOLDEN=1)")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Endpoints carry what the clusters read: no cluster picks its transport
/// socket by endpoint metadata (`transport_socket_matches`), so no endpoint
/// carries the `envoy.transport_socket_match` copy of its tags that Kuma
/// sends (it was nearly half of an endpoint's bytes).
#[test]
fn endpoints_carry_no_transport_socket_match_metadata() {
    use kuma_xds::resources::Resource;
    for (name, input) in cases() {
        for (proxy, resources) in fixture(&input).generate_all(None) {
            for generated in resources.iter() {
                match generated.resource() {
                    Resource::Cluster(c) => assert!(
                        c.transport_socket_matches.is_empty(),
                        "{name} {proxy}: cluster {} selects transport sockets by endpoint metadata",
                        c.name
                    ),
                    Resource::Endpoints(cla) => {
                        for e in cla.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
                            let Some(metadata) = &e.metadata else { continue };
                            assert!(
                                !metadata
                                    .filter_metadata
                                    .contains_key("envoy.transport_socket_match"),
                                "{name} {proxy}: {} carries envoy.transport_socket_match",
                                cla.cluster_name
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Sharing outbound resources between proxies changes nothing: every proxy
/// of every case gets the same config with a shared cache as without one,
/// also when generated a second time from the warm cache.
#[test]
fn shared_outbound_cache_changes_no_output() {
    let mut shared_between_policies = 0;
    for (name, input) in cases() {
        let fixture = fixture(&input);
        let alone = fixture.generate_all(None);
        let cache = OutboundCache::new();
        for round in 0..2 {
            let shared = fixture.generate_all(Some(&cache));
            for ((id, a), (_, b)) in alone.iter().zip(&shared) {
                assert_eq!(
                    a.to_yaml(),
                    b.to_yaml(),
                    "{name}: proxy {id} differs with the cache (round {round})"
                );
                // Map fields encode in hash order, so compare content hashes.
                let hashes = |set: &kuma_xds::resources::ResourceSet| -> Vec<(String, u64)> {
                    set.encode()
                        .iter()
                        .map(|e| (e.name.to_string(), e.hash))
                        .collect()
                };
                assert_eq!(
                    hashes(a),
                    hashes(b),
                    "{name}: proxy {id} hashes differently with the cache"
                );
            }
        }
        let stats = cache.stats();
        assert!(
            stats.hits > 0,
            "{name}: the second round must be served from the cache: {stats:?}"
        );
        shared_between_policies += stats.shared;
    }
    // Some cases have proxies whose policies differ only where an outbound
    // does not look: they share its bundle, and the output stays the same.
    assert!(shared_between_policies > 0);
}

fn first_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let line = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    format!(
        "  line {}:\n  - {}\n  + {}",
        line + 1,
        e.get(line).copied().unwrap_or("<end>"),
        a.get(line).copied().unwrap_or("<end>")
    )
}

#[test]
fn real_envoy_accepts_every_golden_config() {
    let envoy = envoy_bin();
    let dir = std::env::temp_dir().join(format!("kuma-xds-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cases = cases();
    let jobs: Vec<(String, PathBuf)> = cases
        .iter()
        .map(|(name, input)| {
            let (node, resources) = fixture(input).generate_with_identity();
            let file = dir.join(format!("{}.json", name.replace('/', "__")));
            let bootstrap = static_bootstrap(&resources, &node);
            std::fs::write(&file, serde_json::to_vec_pretty(&bootstrap).expect("json"))
                .expect("write bootstrap");
            (name.clone(), file)
        })
        .collect();
    // Two at a time: Envoy's validate mode is single-threaded and quick.
    let failures: Vec<String> = std::thread::scope(|s| {
        let chunks: Vec<_> = jobs.chunks(jobs.len().div_ceil(2)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let envoy = &envoy;
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|(name, file)| {
                            let out = Command::new(envoy)
                                .args(["--mode", "validate", "--log-level", "error", "-c"])
                                .arg(file)
                                .output()
                                .expect("run envoy");
                            (!out.status.success()).then(|| {
                                format!(
                                    "{name} ({}): {}{}",
                                    file.display(),
                                    String::from_utf8_lossy(&out.stdout),
                                    String::from_utf8_lossy(&out.stderr)
                                )
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("validator thread"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "Envoy rejected {} of {} configs:\n{}",
        failures.len(),
        jobs.len(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
