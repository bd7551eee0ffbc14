//! Replays the committed inputs of the `dns_reply` fuzz target (its corpus
//! and any regression input) through the property it checks, so CI gates
//! on them deterministically; `scripts/fuzz.sh SECONDS` explores.

use std::path::{Path, PathBuf};

fn inputs(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".keep"))
        .collect();
    files.sort();
    files
}

#[test]
fn committed_inputs_keep_the_property() {
    let table = kuma_dp::dns_answer::fuzz_table();
    let mut files = inputs("fuzz/corpus/dns_reply");
    assert!(!files.is_empty(), "the corpus is committed");
    files.extend(inputs("fuzz/regressions/dns_reply"));
    for file in files {
        let data = std::fs::read(&file).expect("readable input");
        if let Err(broken) = kuma_dp::dns_answer::check_reply(&data, &table) {
            panic!("{}: {broken}", file.display());
        }
    }
}
