//! Writes the generated CRDs to a directory (default: this crate directory, `crds/`
//! next to `Cargo.toml`), one file per kind.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    std::fs::create_dir_all(&dir)?;
    for crd in kuma_crds::crd::all_crds() {
        let path = dir.join(kuma_crds::crd::file_name(&crd));
        std::fs::write(&path, kuma_crds::crd::to_yaml(&crd))?;
        println!("{}", path.display());
    }
    Ok(())
}
