//! Replays the committed inputs of the `parse_validate` fuzz target — its
//! corpus and the regression inputs of every crash it found — through the
//! same property the target checks. Deterministic: this is how CI gates on
//! the fuzzer's findings; `scripts/fuzz.sh SECONDS` explores for new ones.

use std::path::{Path, PathBuf};

fn inputs(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(files: &[PathBuf]) -> usize {
    for file in files {
        let data = std::fs::read(file).expect("readable input");
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        if let Err(broken) = kuma_crds::format::check_round_trip(text) {
            panic!("{}: {broken}", file.display());
        }
    }
    files.len()
}

#[test]
fn regression_inputs_keep_the_property() {
    let n = replay(&inputs("fuzz/regressions/parse_validate"));
    assert!(n > 0, "the regression inputs are committed");
}

#[test]
fn corpus_keeps_the_property() {
    let n = replay(&inputs("fuzz/corpus/parse_validate"));
    assert!(n > 0, "the corpus is committed");
}
