//! Kuma 2.14's kuma-cp settings, so that a Kuma deployment's configuration
//! file and environment move over unchanged: a setting Kuma has and we do
//! not use is accepted and reported as having no effect here, where any
//! other unknown key stays an error naming it (a typo must not pass
//! silently). The list (`kuma_settings.tsv`) holds Kuma's YAML paths and
//! variable names only; `docs/kuma-cp-settings.md` says which ones this
//! control plane uses.

use std::sync::OnceLock;

/// One of Kuma's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KumaSetting {
    /// The dotted YAML path, e.g. `interCp.server.port`.
    pub path: &'static str,
    /// Its environment variables (usually one; none for a few).
    pub env: Vec<&'static str>,
}

const LIST: &str = include_str!("kuma_settings.tsv");

/// Every setting of Kuma 2.14's `kuma-cp.defaults.yaml`, sorted by path.
pub fn all() -> &'static [KumaSetting] {
    static PARSED: OnceLock<Vec<KumaSetting>> = OnceLock::new();
    PARSED.get_or_init(|| {
        LIST.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (path, env) = l.split_once('\t').unwrap_or((l, ""));
                KumaSetting {
                    path,
                    env: env.split(',').filter(|e| !e.is_empty()).collect(),
                }
            })
            .collect()
    })
}

/// Whether Kuma reads the variable `name`.
pub fn is_kuma_variable(name: &str) -> bool {
    all().iter().any(|s| s.env.contains(&name))
}

/// Whether `path` is one of Kuma's settings or a section holding some.
pub fn is_kuma_path(path: &str) -> bool {
    all().iter().any(|s| {
        s.path == path
            || s.path
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Removes from `value` (a configuration file) every key Kuma has that
/// `ours` (our configuration's defaults, as YAML) lacks; returns their
/// paths. Keys neither has stay, for the strict parse to name.
pub fn strip_kuma_only(value: &mut serde_yaml::Value, ours: &serde_yaml::Value) -> Vec<String> {
    let mut removed = Vec::new();
    strip(value, ours, "", &mut removed);
    removed
}

fn strip(value: &mut serde_yaml::Value, ours: &serde_yaml::Value, prefix: &str, removed: &mut Vec<String>) {
    let (Some(map), Some(our_map)) = (value.as_mapping_mut(), ours.as_mapping()) else {
        return;
    };
    let keys: Vec<serde_yaml::Value> = map.keys().cloned().collect();
    for key in keys {
        let Some(name) = key.as_str() else { continue };
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        match our_map.get(&key) {
            // A section of ours that is a free-form map is taken whole.
            Some(serde_yaml::Value::Mapping(m)) if m.is_empty() => {}
            Some(our_value) => {
                if let Some(child) = map.get_mut(&key) {
                    strip(child, our_value, &path, removed);
                }
            }
            None if is_kuma_path(&path) => {
                map.remove(&key);
                removed.push(path);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_kumas() {
        let all = all();
        assert!(all.len() > 300, "{}", all.len());
        for name in [
            "KUMA_BOOTSTRAP_SERVER_PARAMS_ENVOY_ADMIN_UNIX_SOCKET",
            "KUMA_INTER_CP_SERVER_PORT",
            "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT",
            "KUMA_API_SERVER_HTTPS_TLS_CA_FILE",
        ] {
            assert!(is_kuma_variable(name), "{name}");
        }
        assert!(!is_kuma_variable("KUMA_NOT_A_SETTING"));
        assert!(is_kuma_path("interCp.server.port") && is_kuma_path("interCp"));
        assert!(!is_kuma_path("interCp.serv") && !is_kuma_path("store.postgres.hots"));
        let mut paths: Vec<&str> = all.iter().map(|s| s.path).collect();
        paths.dedup();
        assert_eq!(paths.len(), all.len(), "one row per setting");
    }

    #[test]
    fn kuma_only_keys_go_and_typos_stay() {
        let mut file: serde_yaml::Value = serde_yaml::from_str(
            "store:\n  type: postgres\n  hots: db\ninterCp:\n  server:\n    port: 5683\nmonitoringAssignmentServer:\n  port: 5676\n",
        )
        .unwrap();
        let ours: serde_yaml::Value = serde_yaml::from_str("store:\n  type: memory\n").unwrap();
        let removed = strip_kuma_only(&mut file, &ours);
        assert_eq!(removed, ["interCp", "monitoringAssignmentServer"]);
        assert_eq!(
            serde_yaml::to_string(&file).unwrap(),
            "store:\n  type: postgres\n  hots: db\n"
        );
    }
}
