//! Harness of the end-to-end tests: the real `kuma-cp`, `kumactl` and
//! `kuma-dp` binaries, a PostgreSQL server of their own, the real Envoy and
//! small HTTP apps, all on loopback. Every wait is bounded.

#![allow(clippy::missing_panics_doc)]

pub mod ads;
pub mod apps;
pub mod certs;
pub mod in_cluster;
pub mod k8s;
pub mod kube_mesh;
pub mod netns;
pub mod node;
pub mod olm;
pub mod postgres;
pub mod process;
pub mod service_proxy;
pub mod volumes;
pub mod workloads;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// The directory of the binaries (built on first use): debug ones for the
/// tests, optimised ones for the benches, whose figures must not measure a
/// debug build.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        // What cargo sets for the running test (its package's manifest
        // directory and metadata) must not reach the build: ring's build
        // script reruns when `CARGO_MANIFEST_DIR` changes, and with it
        // everything above ring, once per test package.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_EXE_")
                || matches!(
                    name.as_ref(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_MANIFEST_LINKS"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                )
            {
                cargo.env_remove(name.as_ref());
            }
        }
        let status = cargo
            .args([
                "build",
                "--profile",
                if profile == "debug" { "dev" } else { "release" },
                "--bins",
                "-p",
                "kuma-operator",
                "-p",
                "kumactl",
                "-p",
                "kuma-dp",
                "-p",
                "kuma-e2e",
            ])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        target.join(profile)
    })
    .clone()
}

/// The real Envoy (installed by `scripts/install-envoy.sh` when needed).
pub fn envoy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("ENVOY_BIN") {
            return PathBuf::from(bin);
        }
        let out = Command::new("bash")
            .arg(workspace_root().join("scripts/install-envoy.sh"))
            .output()
            .expect("run scripts/install-envoy.sh");
        assert!(
            out.status.success(),
            "installing Envoy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A free TCP port on `ip`, picked at random from 10000–19999: outside
/// Linux's ephemeral range (32768–60999), so the source port of some
/// outgoing connection cannot take it between this call and the bind that
/// follows, and random, so test processes running at once rarely pick the
/// same one. A port is never handed out twice in one process.
pub fn free_port(ip: &str) -> u16 {
    use std::hash::BuildHasher;
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0u64.. {
        let port = 10_000 + (random.hash_one(attempt) % 10_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            given.insert(port);
            return port;
        }
        assert!(attempt < 10_000, "no free port on {ip}");
    }
    unreachable!("the loop returns or panics")
}

/// Installs rustls' crypto provider for the process (reqwest is built
/// without one); harmless when already installed.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A directory of tools the test command installs: `$env_var` when set
/// (scripts/test.sh exports it), else what `script` builds or finds in the
/// tool cache (it prints the directory).
pub fn tool_dir(env_var: &str, script: &str) -> PathBuf {
    if let Ok(dir) = std::env::var(env_var) {
        return PathBuf::from(dir);
    }
    let out = std::process::Command::new("bash")
        .arg(workspace_root().join(script))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(out.status.success(), "{script} failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A fresh temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kuma-e2e-{}-{name}-{}", std::process::id(), unique()));
    // A directory of this name is left from an earlier process that had
    // the same pid (pids wrap; directories of failed runs are kept to be
    // read): start empty, or a kumactl config there would already name the
    // control plane this test adds.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A number never returned twice in this process.
pub fn unique_number() -> u64 {
    unique()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Polls `probe` every 50 ms until it returns `Ok`, for at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{what}: not reached within {limit:?}; last: {last}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
