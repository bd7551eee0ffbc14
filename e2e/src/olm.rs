//! Real OLM against the test cluster (`../shared` harness recipe): its
//! CRDs, the olm and catalog operators as processes, and `opm serve` of a
//! file-based catalog rendered from bundle directories (no images: `opm
//! render` inlines every manifest, so OLM installs without unpacking).
//!
//! olm and catalog listen on :8080 and :8443 of every interface (no flag
//! moves them): one OLM per machine, so tests using it live in one test
//! binary and run one after another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::k8s::Cluster;
use crate::process::Proc;
use crate::{free_port, temp_dir};

/// The OLM binaries' directory (built on first use); its parent holds
/// OLM's CRDs (`crds/`).
pub fn olm_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| crate::tool_dir("OLM_BIN_DIR", "scripts/install-olm.sh"))
        .clone()
}

/// Runs an OLM tool; (success, stdout, stderr).
pub fn tool(name: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(olm_bin_dir().join(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn tool_ok(name: &str, args: &[&str]) -> String {
    let (ok, out, err) = tool(name, args);
    assert!(ok, "{name} {}: {err}\n{out}", args.join(" "));
    out
}

/// A file-based catalog of package `package` with the bundles in
/// `bundles` (directories), in channel `stable` in that order, each
/// replacing the one before.
pub fn render_catalog(dir: &Path, package: &str, bundles: &[(&str, &Path)]) {
    let pkg = dir.join(package);
    std::fs::create_dir_all(&pkg).expect("catalog dir");
    let mut index = tool_ok(
        "opm",
        &["init", package, "--default-channel=stable", "--output=yaml"],
    );
    let mut entries = String::new();
    let mut previous: Option<&str> = None;
    for (name, bundle) in bundles {
        index.push_str("---\n");
        index.push_str(&tool_ok(
            "opm",
            &["render", &bundle.display().to_string(), "--output=yaml"],
        ));
        entries.push_str(&format!("- name: {name}\n"));
        if let Some(p) = previous {
            entries.push_str(&format!("  replaces: {p}\n"));
        }
        previous = Some(name);
    }
    index.push_str(&format!(
        "---\nschema: olm.channel\npackage: {package}\nname: stable\nentries:\n{entries}"
    ));
    std::fs::write(pkg.join("index.yaml"), index).expect("index.yaml");
    tool_ok("opm", &["validate", &dir.display().to_string()]);
}

/// OLM running against a cluster.
pub struct Olm {
    pub catalog_port: u16,
    dir: PathBuf,
    opm: Option<Proc>,
    _operators: Vec<Proc>,
}

impl Olm {
    /// Installs OLM's CRDs and `OLMConfig`, and starts olm and catalog.
    pub fn start(cluster: &Cluster) -> Olm {
        let crds = olm_bin_dir().parent().expect("OLM base").join("crds");
        cluster.apply_crds(&["-f", &crds.display().to_string()], None);
        cluster.kubectl_ok(&["create", "namespace", "olm"], None);
        cluster.apply("apiVersion: operators.coreos.com/v1\nkind: OLMConfig\nmetadata:\n  name: cluster\n");
        let dir = temp_dir("olm");
        // catalog needs serving TLS (else it takes olm's :8080 too).
        let tls = crate::certs::self_signed(&crate::certs::Spec {
            common_name: "olm-catalog",
            names: &["localhost", "127.0.0.1"],
            is_ca: true,
            expired: false,
        });
        let (cert, key) = (dir.join("catalog.crt"), dir.join("catalog.key"));
        std::fs::write(&cert, &tls.cert_pem).expect("catalog.crt");
        std::fs::write(&key, &tls.key_pem).expect("catalog.key");
        let mut env = BTreeMap::new();
        env.insert("KUBECONFIG".to_string(), cluster.kubeconfig.display().to_string());
        env.insert("OPERATOR_NAMESPACE".to_string(), "olm".to_string());
        env.insert("OPERATOR_NAME".to_string(), "olm-operator".to_string());
        let olm = Proc::start(
            "olm",
            &olm_bin_dir().join("olm"),
            &[
                "--namespace".into(),
                "olm".into(),
                "--writeStatusName".into(),
                String::new(),
                "--writePackageServerStatusName".into(),
                String::new(),
            ],
            &env,
            &dir,
        );
        let catalog = Proc::start(
            "catalog",
            &olm_bin_dir().join("catalog"),
            &[
                "--namespace".into(),
                "olm".into(),
                "--writeStatusName".into(),
                String::new(),
                "--kubeconfig".into(),
                cluster.kubeconfig.display().to_string(),
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
                "--client-ca".into(),
                cert.display().to_string(),
            ],
            &env,
            &dir,
        );
        Olm {
            catalog_port: free_port("127.0.0.1"),
            dir,
            opm: None,
            _operators: vec![olm, catalog],
        }
    }

    /// (Re)starts `opm serve` of `catalog` on the catalog port.
    pub fn serve(&mut self, catalog: &Path) {
        self.opm = None;
        let pprof = free_port("127.0.0.1");
        self.opm = Some(Proc::start(
            "opm-serve",
            &olm_bin_dir().join("opm"),
            &[
                "serve".into(),
                catalog.display().to_string(),
                "-p".into(),
                self.catalog_port.to_string(),
                "--pprof-addr".into(),
                format!("127.0.0.1:{pprof}"),
            ],
            &BTreeMap::new(),
            &self.dir,
        ));
    }

    /// A CatalogSource in `olm` for the served catalog.
    pub fn catalog_source(&self, name: &str) -> String {
        format!(
            "apiVersion: operators.coreos.com/v1alpha1\nkind: CatalogSource\nmetadata:\n  name: {name}\n  namespace: olm\nspec:\n  sourceType: grpc\n  address: 127.0.0.1:{}\n  displayName: kuma-rs (test)\n  publisher: kuma-rs\n",
            self.catalog_port
        )
    }
}
