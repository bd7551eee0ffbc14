//! Replays the committed inputs of the REST API and token fuzz targets
//! (`api_request`, `token_verify`: their corpora, and the regression inputs
//! of any crash they found) through the same checks the targets run.
//! Deterministic: this is how CI gates on the fuzzer's findings; `scripts/fuzz.sh SECONDS` explores for new ones.

use std::path::{Path, PathBuf};

use kuma_operator::api::request_check::check_request;
use kuma_operator::tokens::check::check_token;

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

/// Runs `check` on every committed input of `target`.
fn replay(target: &str, check: fn(&[u8]) -> Result<(), String>) {
    let corpus = inputs(&format!("fuzz/corpus/{target}"));
    assert!(!corpus.is_empty(), "the corpus is committed");
    for file in corpus
        .iter()
        .chain(&inputs(&format!("fuzz/regressions/{target}")))
    {
        let data = std::fs::read(file).expect("readable input");
        if let Err(broken) = check(&data) {
            panic!("{}: {broken}", file.display());
        }
    }
}

#[test]
fn api_request_corpus_and_regressions_keep_the_properties() {
    replay("api_request", check_request);
}

#[test]
fn token_verify_corpus_and_regressions_keep_the_properties() {
    replay("token_verify", check_token);
}
