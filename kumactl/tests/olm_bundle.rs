//! The committed OLM bundle (`config/olm/`) is exactly what
//! `kumactl install olm-bundle` renders from `config/` and the model crate,
//! with no file left over. Regenerate with `kumactl install olm-bundle`
//! (or `UPDATE_OLM=1 cargo test -p kumactl --test olm_bundle`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kumactl::olm::{BundleOptions, render_bundle};

fn olm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/olm")
}

fn files_under(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, base, out);
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.insert(rel.display().to_string());
        }
    }
}

#[test]
fn the_committed_bundle_is_what_kumactl_renders() {
    let options = BundleOptions {
        version: env!("CARGO_PKG_VERSION").to_string(),
        replaces: None,
        registry: "ghcr.io/kuma-rs".into(),
    };
    let files = render_bundle(&options).expect("the bundle renders");
    let update = std::env::var_os("UPDATE_OLM").is_some();
    let mut stale = Vec::new();
    for (path, text) in &files {
        let full = olm_dir().join(path);
        if update {
            std::fs::create_dir_all(full.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&full, text).expect("write");
        } else if std::fs::read_to_string(&full).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.clone());
        }
    }
    let mut present = BTreeSet::new();
    files_under(&olm_dir(), &olm_dir(), &mut present);
    let expected: BTreeSet<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let extra: Vec<&String> = present.difference(&expected).collect();
    assert!(
        stale.is_empty() && extra.is_empty(),
        "config/olm is stale (run `cargo run -p kumactl -- install olm-bundle`): changed {stale:?}, not rendered {extra:?}"
    );
}
