//! Replays the committed inputs of kuma-dp's fuzz targets (`dns_reply`,
//! `cp_certificate`: their corpora and any regression input) through the
//! properties they check, so CI gates on them deterministically;
//! `scripts/fuzz.sh SECONDS` explores.

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

#[test]
fn committed_certificates_keep_the_property() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/certs");
    let bundle = std::fs::read(certs.join("bundle.pem")).expect("bundle");
    let leaf = std::fs::read(certs.join("leaf.pem")).expect("leaf");
    let accepted: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bundle)
        .take(1)
        .chain(CertificateDer::pem_slice_iter(&leaf))
        .collect::<Result<_, _>>()
        .expect("PEM");
    let mut files = inputs("fuzz/corpus/cp_certificate");
    assert!(files.len() >= 6, "the corpus is committed");
    files.extend(inputs("fuzz/regressions/cp_certificate"));
    let mut accepted_inputs = 0;
    for file in files {
        let data = std::fs::read(&file).expect("readable input");
        if let Err(broken) = kuma_dp::cp_tls::check_server_certificate(&data, &bundle, &accepted) {
            panic!("{}: {broken}", file.display());
        }
        accepted_inputs += usize::from(accepted.iter().any(|c| c.as_ref() == data.as_slice()));
    }
    assert_eq!(
        accepted_inputs, 2,
        "the named certificate and the signed leaf are in the corpus"
    );
}
