//! Replays the committed inputs of the AdmissionReview fuzz target
//! (`admission_review`: its corpus, and the regression inputs of any crash
//! it found) through the same check the target runs. Deterministic: this is
//! how CI gates on the fuzzer's findings; `scripts/fuzz.sh SECONDS`
//! explores for new ones.

use std::path::{Path, PathBuf};

use kuma_webhook::review_check::check_review;

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

#[test]
fn admission_review_corpus_and_regressions_keep_the_properties() {
    let corpus = inputs("fuzz/corpus/admission_review");
    assert!(!corpus.is_empty(), "the corpus is committed");
    for file in corpus.iter().chain(&inputs("fuzz/regressions/admission_review")) {
        let data = std::fs::read(file).expect("readable input");
        if let Err(broken) = check_review(&data) {
            panic!("{}: {broken}", file.display());
        }
    }
}
