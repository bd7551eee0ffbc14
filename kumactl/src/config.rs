//! `~/.kumactl/config`: control planes and contexts, in Kuma's format.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KumactlConfig {
    /// Known control planes.
    #[serde(default)]
    pub control_planes: Vec<ControlPlane>,
    /// Contexts (a control plane and defaults).
    #[serde(default)]
    pub contexts: Vec<Context>,
    /// The context in use.
    #[serde(default)]
    pub current_context: String,
}

/// A control plane.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    /// Its name.
    pub name: String,
    /// How to reach it.
    pub coordinates: Coordinates,
}

/// How to reach a control plane.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Coordinates {
    /// The API server.
    pub api_server: ApiServer,
}

/// The API server of a control plane.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiServer {
    /// Its URL.
    pub url: String,
    /// CA to verify HTTPS with.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert_file: String,
    /// Skip verification (explicitly asked for).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_verify: bool,
    /// `tokens` when a user token is used.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_type: String,
    /// `{token: …}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub auth_conf: std::collections::BTreeMap<String, String>,
}

/// A context.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    /// Its name.
    pub name: String,
    /// The control plane it uses.
    pub control_plane: String,
}

impl Default for KumactlConfig {
    fn default() -> Self {
        KumactlConfig {
            control_planes: vec![ControlPlane {
                name: "local".into(),
                coordinates: Coordinates {
                    api_server: ApiServer {
                        url: "http://localhost:5681".into(),
                        ..Default::default()
                    },
                },
            }],
            contexts: vec![Context {
                name: "local".into(),
                control_plane: "local".into(),
            }],
            current_context: "local".into(),
        }
    }
}

/// The default file location.
pub fn default_path() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".kumactl")
        .join("config")
}

impl KumactlConfig {
    /// Reads the file, or the default configuration when it does not exist.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// Writes the file (mode 0600).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_yaml::to_string(self)?)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }

    /// The API server of the current context.
    pub fn current(&self) -> anyhow::Result<&ApiServer> {
        let context = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .ok_or_else(|| anyhow::anyhow!("current context {:?} does not exist", self.current_context))?;
        self.control_planes
            .iter()
            .find(|cp| cp.name == context.control_plane)
            .map(|cp| &cp.coordinates.api_server)
            .ok_or_else(|| anyhow::anyhow!("control plane {:?} does not exist", context.control_plane))
    }
}
