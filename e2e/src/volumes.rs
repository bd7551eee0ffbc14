//! The test node agent's volumes, as the kubelet makes them: `emptyDir`
//! (writable by any user), `secret` and `configMap` (their keys, or their
//! `items`, as files; the kubelet waits for a missing object, so do we,
//! boundedly), each in the Pod's directory and bind-mounted at the
//! containers' `volumeMounts` inside the container's mount namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret};
use kube::api::Api;

/// How long a Pod waits for a Secret or ConfigMap it mounts.
const OBJECT_WAIT: Duration = Duration::from_secs(120);

fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let chosen: Vec<(String, String)> = match items {
        Some(items) => items.iter().map(|i| (i.key.clone(), i.path.clone())).collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, path) in chosen {
        let bytes = data
            .get(&key)
            .ok_or_else(|| format!("key {key} is not in the object"))?;
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&file, bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(())
}

/// Waits (boundedly, as the kubelet retries) for an object a volume
/// mounts; `Ok(None)` from `get` means not there yet.
async fn wait_for<T, F, Fut>(what: &str, mut get: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + OBJECT_WAIT;
    loop {
        match get().await {
            Ok(Some(found)) => return Ok(found),
            Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Ok(None) => return Err(format!("{what} not found")),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

async fn secret_data(api: &Api<Secret>, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let s = wait_for(&format!("Secret {name}"), || api.get_opt(name)).await?;
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    Ok(data)
}

async fn config_map_data(api: &Api<ConfigMap>, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let c = wait_for(&format!("ConfigMap {name}"), || api.get_opt(name)).await?;
    let mut data: BTreeMap<String, Vec<u8>> = c
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in c.binary_data.unwrap_or_default() {
        data.insert(k, v.0);
    }
    Ok(data)
}

/// Makes the Pod's volumes under `dir/volumes/`: name → directory.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, String> {
    use std::os::unix::fs::PermissionsExt;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let mut out = BTreeMap::new();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in volumes {
        let path = dir.join("volumes").join(&v.name);
        if v.empty_dir.is_some() {
            std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777));
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = match secret_data(&secrets, &name).await {
                Ok(d) => d,
                Err(_) if s.optional == Some(true) => BTreeMap::new(),
                Err(e) => return Err(format!("volume {}: {e}", v.name)),
            };
            write_keys(&path, &data, s.items.as_ref()).map_err(|e| format!("volume {}: {e}", v.name))?;
        } else if let Some(c) = &v.config_map {
            let data = match config_map_data(&config_maps, &c.name).await {
                Ok(d) => d,
                Err(_) if c.optional == Some(true) => BTreeMap::new(),
                Err(e) => return Err(format!("volume {}: {e}", v.name)),
            };
            write_keys(&path, &data, c.items.as_ref()).map_err(|e| format!("volume {}: {e}", v.name))?;
        } else {
            // Kinds no test uses: an empty directory, so mounts still work.
            std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        }
        crate::node::make_traversable(&path);
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// Where a container's volumes are staged inside its mount namespace (a
/// tmpfs there): every source is bound here before any target is mounted,
/// because a volume mounted over a parent of the Pod's directory (an
/// `emptyDir` at `/tmp`) would hide the sources of the others.
const STAGE: &str = "/var/lib/kuma-e2e-volumes";

/// Where containers find their ServiceAccount token.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Shell commands mounting a container's `volumeMounts` (parents before
/// the mounts nested in them), for the script that starts the container.
pub fn mount_script(container: &Container, volumes: &BTreeMap<String, PathBuf>) -> String {
    let mut mounts: Vec<(String, PathBuf)> = container
        .volume_mounts
        .iter()
        .flatten()
        // The agent mounts the Pod's token, namespace and CA there itself:
        // that stands for the API server's `kube-api-access-*` projected volume.
        .filter(|m| m.mount_path != SERVICE_ACCOUNT_DIR)
        .filter_map(|m| {
            let mut source = volumes.get(&m.name)?.clone();
            if let Some(sub) = m.sub_path.as_ref().filter(|s| !s.is_empty()) {
                source = source.join(sub);
            }
            Some((m.mount_path.clone(), source))
        })
        .collect();
    if mounts.is_empty() {
        return String::new();
    }
    mounts.sort_by_key(|(path, _)| path.matches('/').count());
    let make = |path: &str, dir: bool| {
        if dir {
            format!("mkdir -p {path}")
        } else {
            let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
            format!("mkdir -p {} && touch {path}", parent.display())
        }
    };
    let mut script = format!("mkdir -p {STAGE} && mount -t tmpfs tmpfs {STAGE} && ");
    for (i, (_, source)) in mounts.iter().enumerate() {
        let staged = format!("{STAGE}/{i}");
        script.push_str(&format!(
            "{} && mount --bind {} {staged} && ",
            make(&staged, source.is_dir()),
            source.display()
        ));
    }
    for (i, (target, source)) in mounts.iter().enumerate() {
        script.push_str(&format!(
            "{} && mount --bind {STAGE}/{i} {target} && ",
            make(target, source.is_dir())
        ));
    }
    script
}
