//! Replays the committed inputs of the `transparent_proxy_config` fuzz
//! target (its corpus, and the regression inputs of any crash it found)
//! through the same check the target runs. Deterministic: this is how CI
//! gates on the fuzzer's findings; `scripts/fuzz.sh SECONDS` explores for
//! new ones.

use std::path::{Path, PathBuf};

fn inputs(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

fn replay(dir: &str) -> usize {
    let files = inputs(dir);
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        if let Err(broken) = kumactl::transparent_proxy::rules::check_config_file(&text) {
            panic!("{}: {broken}", file.display());
        }
    }
    files.len()
}

#[test]
fn transparent_proxy_config_corpus_and_regressions_keep_the_properties() {
    assert!(
        replay("fuzz/corpus/transparent_proxy_config") > 0,
        "the corpus is committed"
    );
    // Empty until the fuzzer finds a crash (kept by .gitkeep).
    replay("fuzz/regressions/transparent_proxy_config");
}

/// The seeds reach the rules, not just the parser.
#[test]
fn the_seeds_are_configurations_kumactl_accepts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/transparent_proxy_config");
    for seed in ["full", "capture-all-dns-ipv4", "no-comments", "json"] {
        let text = std::fs::read_to_string(dir.join(seed)).expect("seed");
        let mut config = kumactl::transparent_proxy::config::Config::default();
        config.apply_file(&text).expect(seed);
        config.check().expect(seed);
    }
}
