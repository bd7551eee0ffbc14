//! Replays the committed inputs of the xDS fuzz targets (`ads_sequence`,
//! `bootstrap_request`, `proxy_patch`: their corpora, and the regression inputs of any
//! crash they found) through the same checks the targets run. Deterministic: this is how CI gates on the
//! fuzzer's findings; `scripts/fuzz.sh SECONDS` explores for new ones.

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

fn replay(dir: &str, check: fn(&[u8]) -> Result<(), String>) -> usize {
    let files = inputs(dir);
    for file in &files {
        let data = std::fs::read(file).expect("readable input");
        if let Err(broken) = check(&data) {
            panic!("{}: {broken}", file.display());
        }
    }
    files.len()
}

#[test]
fn ads_sequence_corpus_and_regressions_keep_the_rules() {
    let check = kuma_xds::server::sequence::check_sequence;
    assert!(
        replay("fuzz/corpus/ads_sequence", check) > 0,
        "the corpus is committed"
    );
    replay("fuzz/regressions/ads_sequence", check);
}

#[test]
fn bootstrap_request_corpus_and_regressions_keep_the_properties() {
    let check = kuma_xds::bootstrap::check_bootstrap;
    assert!(
        replay("fuzz/corpus/bootstrap_request", check) > 0,
        "the corpus is committed"
    );
    // Empty until the fuzzer finds a crash (kept by .gitkeep).
    replay("fuzz/regressions/bootstrap_request", check);
}

fn check_modification(data: &[u8]) -> Result<(), String> {
    match std::str::from_utf8(data) {
        Ok(text) => kuma_xds::plugins::mesh_proxy_patch::check_modification(text),
        Err(_) => Ok(()),
    }
}

#[test]
fn proxy_patch_corpus_and_regressions_keep_the_properties() {
    assert!(
        replay("fuzz/corpus/proxy_patch", check_modification) > 0,
        "the corpus is committed"
    );
    // Empty until the fuzzer finds a crash (kept by .gitkeep).
    replay("fuzz/regressions/proxy_patch", check_modification);
}
