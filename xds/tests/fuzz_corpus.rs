//! Replays the committed inputs of the `ads_sequence` fuzz target (its
//! corpus, and the regression inputs of any crash it found) through the
//! same check the target runs. Deterministic: this is how CI gates on the
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

fn replay(dir: &str) -> usize {
    let files = inputs(dir);
    for file in &files {
        let data = std::fs::read(file).expect("readable input");
        if let Err(broken) = kuma_xds::server::sequence::check_sequence(&data) {
            panic!("{}: {broken}", file.display());
        }
    }
    files.len()
}

#[test]
fn ads_sequence_corpus_and_regressions_keep_the_rules() {
    assert!(replay("fuzz/corpus/ads_sequence") > 0, "the corpus is committed");
    // Empty until the fuzzer finds a crash (kept by .gitkeep).
    replay("fuzz/regressions/ads_sequence");
}
