//! Shared by the xds integration tests: loading fixture files and finding
//! the real Envoy binary.

#![allow(dead_code)]

pub mod cp;
pub mod http;
pub mod load;

use std::path::{Path, PathBuf};

use kuma_crds::format::parse_documents;
use kuma_crds::mesh::MeshSpec;
use kuma_crds::resource::{Resource, Spec};
use kuma_xds::context::{MeshContext, Proxy, ProxyMetadata};
use kuma_xds::generate::{OutboundCache, Policies, generate, generate_cached};
use kuma_xds::resources::ResourceSet;

pub use kuma_e2e::envoy_bin;

/// A fixture: a multi-document universal YAML file holding an optional
/// Mesh, then Dataplanes (the first is the proxy under test) and policies.
pub struct Fixture {
    pub mesh_name: String,
    pub mesh: MeshSpec,
    pub resources: Vec<Resource>,
    /// Feature flags every proxy announces (`#! feature <name>` lines).
    pub features: Vec<String>,
    /// The proxies' kuma-dp work directory (a `#! workdir <path>` line).
    pub workdir: Option<String>,
    /// Whether the control plane has an Envoy admin CA (a `#! admin-tls`
    /// line): golden files show placeholders for its certificates.
    pub admin_tls: bool,
}

impl Fixture {
    /// Loads a fixture file, expanding `#! include <path>` lines (relative
    /// to the file) so that cases share their base mesh.
    pub fn load(path: &Path) -> Fixture {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut expanded = String::new();
        for line in text.lines() {
            match line.strip_prefix("#! include ") {
                Some(rel) => {
                    let included = path.parent().expect("file has a dir").join(rel.trim());
                    let body = std::fs::read_to_string(&included).unwrap_or_else(|e| {
                        panic!("{}: include {}: {e}", path.display(), included.display())
                    });
                    expanded.push_str(&body);
                    expanded.push_str("\n---\n");
                }
                None => {
                    expanded.push_str(line);
                    expanded.push('\n');
                }
            }
        }
        let mut fixture = Fixture::parse(&expanded).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for line in text.lines() {
            if let Some(f) = line.strip_prefix("#! feature ") {
                fixture.features.push(f.trim().to_string());
            }
            if let Some(w) = line.strip_prefix("#! workdir ") {
                fixture.workdir = Some(w.trim().to_string());
            }
            if line.trim() == "#! admin-tls" {
                fixture.admin_tls = true;
            }
        }
        fixture
    }

    /// Parses fixture text; the error names the failing document.
    pub fn parse(text: &str) -> Result<Fixture, String> {
        let mut mesh_name = "default".to_string();
        let mut mesh = MeshSpec::default();
        let mut resources = Vec::new();
        for (i, doc) in parse_documents(text).into_iter().enumerate() {
            let r = doc.map_err(|e| format!("document {i}: {e}"))?;
            match &r.spec {
                Spec::Mesh(m) => {
                    mesh_name = r.meta.name.clone();
                    mesh = m.clone();
                }
                _ => resources.push(r),
            }
        }
        Ok(Fixture {
            mesh_name,
            mesh,
            resources,
            features: Vec::new(),
            workdir: None,
            admin_tls: false,
        })
    }

    /// The proxy under test: the first Dataplane.
    pub fn proxy_resource(&self) -> &Resource {
        self.resources
            .iter()
            .find(|r| matches!(r.spec, Spec::Dataplane(_)))
            .expect("fixture has a Dataplane")
    }

    /// What a proxy of the fixture tells the control plane at bootstrap.
    pub fn metadata(&self, dp: &kuma_crds::dataplane::DataplaneSpec) -> ProxyMetadata {
        let mut metadata = ProxyMetadata::for_dataplane(dp);
        metadata.features.extend(self.features.iter().cloned());
        metadata.workdir = self.workdir.clone();
        metadata
    }

    /// The mesh digest.
    pub fn mesh_context(&self) -> MeshContext {
        MeshContext::build(&self.mesh_name, &self.mesh, &self.resources)
    }

    /// The generated config of every Dataplane of the fixture, sharing
    /// outbound resources through `cache` when given.
    pub fn generate_all(&self, cache: Option<&OutboundCache>) -> Vec<(String, ResourceSet)> {
        let mesh = self.mesh_context();
        self.resources
            .iter()
            .filter_map(|r| {
                let Spec::Dataplane(dp) = &r.spec else { return None };
                let proxy = Proxy::new(r, self.metadata(dp))?;
                let policies = Policies::compute(&proxy, &mesh);
                Some((proxy.id(), generate_cached(&proxy, &mesh, &policies, cache)))
            })
            .collect()
    }

    /// The generated config of the proxy under test, with an identity
    /// certificate when the mesh has mTLS (so that Envoy can load it; the
    /// certificate differs on every run).
    pub fn generate_with_identity(&self) -> (String, ResourceSet) {
        let resource = self.proxy_resource();
        let Spec::Dataplane(dp) = &resource.spec else {
            unreachable!()
        };
        let mesh = self.mesh_context();
        let mut proxy = Proxy::new(resource, self.metadata(dp)).expect("a dataplane");
        if let Some(mtls) = &mesh.mtls {
            let sans = kuma_xds::mtls::proxy_sans(&mesh.name, &proxy.tag_set());
            let identity = kuma_xds::mtls::issue(mtls, &sans, std::time::SystemTime::now()).expect("issue");
            proxy = proxy.with_identity(Some(std::sync::Arc::new(identity)));
        }
        if self.admin_tls {
            let ca = kuma_xds::admin_tls::generate_ca().expect("admin CA");
            let admin = kuma_xds::admin_tls::issue_server(&ca, proxy.address()).expect("admin certificate");
            proxy = proxy.with_admin_tls(Some(std::sync::Arc::new(admin)));
        }
        (proxy.id(), generate(&proxy, &mesh))
    }

    /// The generated config of the proxy under test.
    pub fn generate(&self) -> (String, ResourceSet) {
        let resource = self.proxy_resource();
        let Spec::Dataplane(dp) = &resource.spec else {
            unreachable!()
        };
        let mut proxy = Proxy::new(resource, self.metadata(dp)).expect("a dataplane");
        if self.admin_tls {
            let placeholder = kuma_xds::admin_tls::AdminTls {
                ca_pem: "<admin CA>".into(),
                cert_pem: "<admin certificate>".into(),
                key_pem: "<admin key>".into(),
                address: proxy.address().to_string(),
            };
            proxy = proxy.with_admin_tls(Some(std::sync::Arc::new(placeholder)));
        }
        (proxy.id(), generate(&proxy, &self.mesh_context()))
    }
}

/// Every file under `dir` (recursively) whose name ends with `suffix`, sorted.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
