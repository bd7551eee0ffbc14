//! Writes the generated CRDs to a directory (default: the workspace's
//! `config/crds/`, the kustomize base every install path uses), one file
//! per kind, and the directory's `kustomization.yaml`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/crds"));
    std::fs::create_dir_all(&dir)?;
    for crd in kuma_crds::crd::all_crds() {
        let path = dir.join(kuma_crds::crd::file_name(&crd));
        std::fs::write(&path, kuma_crds::crd::to_yaml(&crd))?;
        println!("{}", path.display());
    }
    let crds = kuma_crds::crd::all_crds();
    std::fs::write(
        dir.join("kustomization.yaml"),
        kuma_crds::crd::kustomization(&crds),
    )?;
    Ok(())
}
