//! Compiles Envoy's API protos (shipped inside the envoy-types crate) into a
//! descriptor set, so the control plane can render any Envoy message as JSON
//! (golden files, config dumps) and parse JSON/YAML into messages
//! (MeshProxyPatch). `ENVOY_PROTO_DIR` overrides where the protos are found.

use std::path::{Path, PathBuf};

/// The version of envoy-types in the lock file.
fn locked_envoy_types_version() -> String {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let lock = std::fs::read_to_string(manifest_dir.join("../Cargo.lock")).expect("Cargo.lock is committed");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"envoy-types\"" {
            let version = lines.next().unwrap_or_default();
            return version
                .trim_start_matches("version = \"")
                .trim_end_matches('"')
                .to_string();
        }
    }
    panic!("envoy-types is not in Cargo.lock");
}

/// envoy-types' `proto/` directory inside Cargo's registry sources.
fn envoy_types_proto_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ENVOY_PROTO_DIR") {
        return PathBuf::from(dir);
    }
    let crate_dir = format!("envoy-types-{}", locked_envoy_types_version());
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cargo"));
    let registry = cargo_home.join("registry/src");
    for entry in std::fs::read_dir(&registry).expect("cargo registry sources exist") {
        let candidate = entry.unwrap().path().join(&crate_dir).join("proto");
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!(
        "{crate_dir}/proto not found under {}; set ENVOY_PROTO_DIR",
        registry.display()
    );
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}

fn main() {
    let root = envoy_types_proto_dir();
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "opentelemetry-proto",
        "cel-spec/proto",
        "client_model",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    let mut files = Vec::new();
    collect(&root.join("data-plane-api/envoy"), &mut files);
    files.sort();
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(root.join("data-plane-api")).unwrap().to_path_buf())
        .collect();
    // Each file is compiled on its own: protox resolves relative names
    // against every file already loaded, so one shared compiler would see
    // packages the file does not import and mis-resolve names.
    let mut by_name = std::collections::BTreeMap::new();
    let mut skipped = 0;
    for file in &relative {
        let mut compiler = protox::Compiler::new(&includes).expect("include paths exist");
        compiler.include_imports(true);
        match compiler.open_file(file) {
            Ok(_) => {
                for fd in compiler.file_descriptor_set().file {
                    by_name.entry(fd.name().to_string()).or_insert(fd);
                }
            }
            Err(e) => {
                skipped += 1;
                if std::env::var_os("ENVOY_PROTO_DEBUG").is_some() {
                    println!("cargo:warning={}: {e}", file.display());
                }
            }
        }
    }
    // A couple of files need imports envoy-types does not ship.
    assert!(
        skipped < 10,
        "{skipped} Envoy protos failed to compile; set ENVOY_PROTO_DEBUG=1 to see why"
    );
    let descriptors = prost_types::FileDescriptorSet {
        file: by_name.into_values().collect(),
    };
    let bytes = prost::Message::encode_to_vec(&descriptors);
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("envoy_descriptors.bin");
    std::fs::write(out, bytes).unwrap();
    println!("cargo:rerun-if-env-changed=ENVOY_PROTO_DIR");
    println!("cargo:rerun-if-changed=build.rs");
}
