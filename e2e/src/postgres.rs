//! A PostgreSQL 15 server of the test's own: `initdb` in a temporary
//! directory, started on a free loopback port as an unprivileged user
//! (PostgreSQL refuses to run as root), stopped when dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::{free_port, temp_dir};

/// Where the PostgreSQL 15 binaries are.
pub fn pg_bin(tool: &str) -> PathBuf {
    let dir = std::env::var("PG_BIN_DIR").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    Path::new(&dir).join(tool)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` user when we are root.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A temporary directory the `postgres` user owns when we are root.
fn pg_owned_temp_dir(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown the PostgreSQL directory to postgres");
    }
    dir
}

/// A running server.
pub struct Postgres {
    /// The loopback address it listens on.
    pub ip: String,
    pub port: u16,
    data: PathBuf,
    proc: Option<Proc>,
}

impl Postgres {
    /// Initializes and starts a server, with a `kuma` superuser and database.
    pub async fn start() -> Postgres {
        let dir = pg_owned_temp_dir("pg");
        let data = dir.join("data");
        let out = as_pg_user(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "kuma", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every loopback client may connect and replicate (a replica on
        // another 127.0.0.0/8 address copies this file).
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        rules.push_str("host all all 127.0.0.0/8 trust\nhost replication all 127.0.0.0/8 trust\n");
        std::fs::write(&hba, rules).expect("write pg_hba.conf");
        let port = free_port("127.0.0.1");
        let mut pg = Postgres {
            ip: "127.0.0.1".into(),
            port,
            data,
            proc: None,
        };
        pg.run(&dir);
        let created = crate::eventually(
            "PostgreSQL accepts connections",
            Duration::from_secs(30),
            || async {
                let out = Command::new(pg_bin("createdb"))
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "kuma", "kuma"])
                    .output()
                    .map_err(|e| e.to_string())?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).to_string())
                }
            },
        );
        created.await;
        pg
    }

    fn run(&mut self, dir: &Path) {
        let program = if is_root() {
            PathBuf::from("runuser")
        } else {
            pg_bin("postgres")
        };
        let mut args: Vec<String> = Vec::new();
        if is_root() {
            args.extend([
                "-u".into(),
                "postgres".into(),
                "--".into(),
                pg_bin("postgres").display().to_string(),
            ]);
        }
        args.extend([
            "-D".into(),
            self.data.display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-k".into(),
            dir.display().to_string(),
            "-c".into(),
            format!("listen_addresses={}", self.ip),
            "-c".into(),
            "fsync=off".into(),
        ]);
        self.proc = Some(Proc::start("postgres", &program, &args, &BTreeMap::new(), dir));
    }

    /// Stops the server (fast shutdown), keeping its data.
    pub fn stop(&mut self) {
        let _ = as_pg_user(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .output();
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(10));
        }
    }

    /// Stops the server as a crash would (immediate shutdown: no
    /// checkpoint, clients cut off), keeping its data.
    pub fn crash(&mut self) {
        let out = as_pg_user(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl -m immediate stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(10));
        }
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) {
        let dir = self.data.parent().expect("data has a parent").to_path_buf();
        self.run(&dir);
        self.wait_ready("PostgreSQL is back").await;
    }

    async fn wait_ready(&self, what: &str) {
        let (ip, port) = (self.ip.clone(), self.port.to_string());
        crate::eventually(what, Duration::from_secs(30), || async {
            let out = Command::new(pg_bin("pg_isready"))
                .args(["-h", &ip, "-p", &port])
                .output();
            match out {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(String::from_utf8_lossy(&o.stdout).to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }

    /// A streaming replica of this server on the loopback address `ip` and
    /// the same port, made synchronous: from now on a commit is
    /// acknowledged only once the replica has it.
    pub async fn start_replica(&self, ip: &str) -> Postgres {
        let dir = pg_owned_temp_dir("pg-replica");
        let data = dir.join("data");
        let out = as_pg_user(&pg_bin("pg_basebackup"))
            .args(["-h", &self.ip, "-p", &self.port.to_string(), "-U", "kuma"])
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"])
            .output()
            .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut replica = Postgres {
            ip: ip.into(),
            port: self.port,
            data,
            proc: None,
        };
        replica.run(&dir);
        replica.wait_ready("the replica accepts connections").await;
        crate::eventually("the replica streams", Duration::from_secs(30), || async {
            let state = self.sql("SELECT state FROM pg_stat_replication");
            (state.trim() == "streaming").then_some(()).ok_or(state)
        })
        .await;
        self.sql("ALTER SYSTEM SET synchronous_standby_names = '*'");
        self.sql("SELECT pg_reload_conf()");
        crate::eventually("the replica is synchronous", Duration::from_secs(30), || async {
            let state = self.sql("SELECT sync_state FROM pg_stat_replication");
            (state.trim() == "sync").then_some(()).ok_or(state)
        })
        .await;
        replica
    }

    /// Promotes this replica to a primary.
    pub fn promote(&self) {
        let out = as_pg_user(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "promote"])
            .output()
            .expect("run pg_ctl promote");
        assert!(
            out.status.success(),
            "pg_ctl promote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// From now on serves TCP clients over TLS only, with this certificate
    /// and key (plaintext TCP connections are refused).
    pub async fn require_tls(&self, cert_pem: &str, key_pem: &str) {
        let (cert, key, hba) = (
            self.data.join("server.crt"),
            self.data.join("server.key"),
            self.data.join("pg_hba.conf"),
        );
        std::fs::write(&cert, cert_pem).expect("write server.crt");
        std::fs::write(&key, key_pem).expect("write server.key");
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        }
        if is_root() {
            let ok = Command::new("chown")
                .arg("postgres")
                .args([&cert, &key, &hba])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the TLS files to postgres");
        }
        self.sql("ALTER SYSTEM SET ssl = on");
        self.sql("SELECT pg_reload_conf()");
        let port = self.port;
        crate::eventually("PostgreSQL serves TLS", Duration::from_secs(30), || async {
            let out = Command::new(pg_bin("psql"))
                .arg(format!(
                    "host=127.0.0.1 port={port} user=kuma dbname=kuma sslmode=require"
                ))
                .args([
                    "-tA",
                    "-c",
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                ])
                .output()
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (text == "t")
                .then_some(())
                .ok_or_else(|| format!("{text} {}", String::from_utf8_lossy(&out.stderr)))
        })
        .await;
    }

    /// Runs one SQL statement as the `kuma` user and returns its output.
    pub fn sql(&self, statement: &str) -> String {
        let out = Command::new(pg_bin("psql"))
            .args([
                "-h",
                &self.ip,
                "-p",
                &self.port.to_string(),
                "-U",
                "kuma",
                "-d",
                "kuma",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-tA", "-c", statement])
            // The test's own session writes even while the server is made
            // read-only for everyone else.
            .env("PGOPTIONS", "-c default_transaction_read_only=off")
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {statement:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// kuma-cp's store settings for this server.
    pub fn store_env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("KUMA_STORE_TYPE".to_string(), "postgres".to_string()),
            ("KUMA_STORE_POSTGRES_HOST".to_string(), self.ip.clone()),
            ("KUMA_STORE_POSTGRES_PORT".to_string(), self.port.to_string()),
            ("KUMA_STORE_POSTGRES_USER".to_string(), "kuma".to_string()),
            ("KUMA_STORE_POSTGRES_PASSWORD".to_string(), "kuma".to_string()),
            ("KUMA_STORE_POSTGRES_DB_NAME".to_string(), "kuma".to_string()),
        ])
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        // Keep the data of a failed test for a look; otherwise each run
        // would leave ~50 MB behind.
        if !std::thread::panicking()
            && let Some(dir) = self.data.parent()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
