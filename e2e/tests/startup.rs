//! kuma-cp refuses to start with a clear message naming the problem: a
//! port already taken, an unknown configuration key, an unreachable,
//! unmigrated or newer database.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use kuma_e2e::postgres::Postgres;
use kuma_e2e::process::{ControlPlane, migrate_up};
use kuma_e2e::{bin_dir, free_port, temp_dir};

/// Runs `kuma-cp run` and returns its exit status and stderr; it must exit
/// on its own within the limit.
fn run_until_exit(env: &BTreeMap<String, String>, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(bin_dir().join("kuma-cp"))
        .arg("run")
        .args(args)
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kuma-cp");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kuma-cp did not exit on a startup error");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_taken_port_names_its_setting() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let mut env = ControlPlane::env(&BTreeMap::new(), &temp_dir("port"));
    env.insert(
        "KUMA_API_SERVER_HTTP_PORT".into(),
        taken.local_addr().expect("addr").port().to_string(),
    );
    let (ok, stderr) = run_until_exit(&env, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("KUMA_API_SERVER_HTTP_PORT") && stderr.contains("API server"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_config_key_is_named() {
    let dir = temp_dir("config");
    let file = dir.join("kuma-cp.yaml");
    std::fs::write(&file, "store:\n  type: memory\n  postgres:\n    hots: db\n").expect("write config");
    let env = ControlPlane::env(&BTreeMap::new(), &dir);
    let (ok, stderr) = run_until_exit(&env, &["--config-file", &file.display().to_string()]);
    assert!(!ok);
    assert!(
        stderr.contains("store.postgres") && stderr.contains("hots"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_database_is_reported() {
    let mut store = BTreeMap::from([("KUMA_STORE_TYPE".to_string(), "postgres".to_string())]);
    let port = free_port("127.0.0.1");
    store.insert("KUMA_STORE_POSTGRES_HOST".into(), "127.0.0.1".into());
    store.insert("KUMA_STORE_POSTGRES_PORT".into(), port.to_string());
    store.insert("KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT".into(), "2".into());
    let env = ControlPlane::env(&store, &temp_dir("nodb"));
    let (ok, stderr) = run_until_exit(&env, &[]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unmigrated_database_says_what_to_run() {
    let pg = Postgres::start().await;
    let env = ControlPlane::env(&pg.store_env(), &temp_dir("unmigrated"));
    let (ok, stderr) = tokio::task::spawn_blocking(move || run_until_exit(&env, &[]))
        .await
        .expect("join");
    assert!(!ok);
    assert!(stderr.contains("run `kuma-cp migrate up`"), "{stderr}");
}

#[tokio::test]
async fn a_database_of_a_newer_kuma_cp_is_refused() {
    let pg = Postgres::start().await;
    let store = pg.store_env();
    migrate_up(&store);
    pg.sql("UPDATE schema_migrations SET version = version + 1000");
    let env = ControlPlane::env(&store, &temp_dir("newer"));
    let (ok, stderr) = tokio::task::spawn_blocking(move || run_until_exit(&env, &[]))
        .await
        .expect("join");
    assert!(!ok);
    assert!(
        stderr.contains("newer than this kuma-cp understands") && stderr.contains("upgrade kuma-cp"),
        "{stderr}"
    );
}
