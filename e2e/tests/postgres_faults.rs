//! PostgreSQL faults under a steady stream of writes through the REST API:
//! the server restarted, made read-only, and crashed and failed over to a
//! promoted synchronous replica. In each: every write the API acknowledged
//! is in the database afterwards, the writes it could not make are refused
//! with a 503 that says why, and the same kuma-cp process serves writes
//! again once the database takes them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kuma_e2e::postgres::Postgres;
use kuma_e2e::process::{ControlPlane, migrate_up};
use kuma_e2e::{eventually, temp_dir};

const LIMIT: Duration = Duration::from_secs(60);

/// What a writer saw.
#[derive(Debug, Default)]
struct Outcomes {
    /// Names the API answered 200/201 for.
    acknowledged: Vec<String>,
    /// 503 answers, and the last one's detail.
    refused: usize,
    last_refusal: String,
    /// Anything else (another status, no answer): the detail of each.
    unexpected: Vec<String>,
}

/// Creates MeshTimeouts `w-0`, `w-1`, … one after another until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Outcomes>,
}

impl Writer {
    fn start(api: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let task = {
            let (stop, acknowledged, refused) = (stop.clone(), acknowledged.clone(), refused.clone());
            tokio::spawn(async move {
                let http = kuma_e2e::apps::client();
                let mut seen = Outcomes::default();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("w-{i}");
                    i += 1;
                    let answer = http
                        .put(format!("{api}/meshes/default/meshtimeouts/{name}"))
                        .json(&timeout(&name))
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status().is_success() => {
                            seen.acknowledged.push(name);
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) if r.status().as_u16() == 503 => {
                            seen.refused += 1;
                            seen.last_refusal = r.text().await.unwrap_or_default();
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            seen.unexpected.push(format!("{name}: {status} {body}"));
                        }
                        Err(e) => seen.unexpected.push(format!("{name}: {e}")),
                    }
                    // Pacing, not synchronisation: a steady trickle of writes.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                seen
            })
        };
        Writer {
            stop,
            acknowledged,
            refused,
            task,
        }
    }

    /// Waits (bounded) until `more` writes beyond those acknowledged so far
    /// are acknowledged.
    async fn acknowledges(&self, more: usize, what: &str) {
        let target = self.acknowledged.load(Ordering::SeqCst) + more;
        eventually(what, LIMIT, || async {
            let n = self.acknowledged.load(Ordering::SeqCst);
            (n >= target).then_some(()).ok_or(format!("{n} of {target}"))
        })
        .await;
    }

    /// Waits (bounded) until a write is refused.
    async fn is_refused(&self, what: &str) {
        let target = self.refused.load(Ordering::SeqCst) + 1;
        eventually(what, LIMIT, || async {
            let n = self.refused.load(Ordering::SeqCst);
            (n >= target).then_some(()).ok_or(format!("{n} refused"))
        })
        .await;
    }

    async fn stop(self) -> Outcomes {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer")
    }
}

fn timeout(name: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "MeshTimeout",
        "mesh": "default",
        "name": name,
        "spec": {
            "targetRef": {"kind": "Mesh"},
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "10s"}}]
        }
    })
}

/// The writer's MeshTimeouts in `pg`.
fn stored(pg: &Postgres) -> BTreeSet<String> {
    pg.sql("SELECT name FROM resources WHERE type = 'MeshTimeout' AND name LIKE 'w-%'")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every acknowledged write is stored, and nothing but 200/201/503 was seen.
fn assert_nothing_acknowledged_lost(outcomes: &Outcomes, pg: &Postgres) {
    assert!(
        outcomes.unexpected.is_empty(),
        "answers other than 2xx/503: {:?}",
        outcomes.unexpected
    );
    let stored = stored(pg);
    let lost: Vec<&String> = outcomes
        .acknowledged
        .iter()
        .filter(|n| !stored.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
}

async fn control_plane(store: std::collections::BTreeMap<String, String>) -> ControlPlane {
    migrate_up(&store);
    let cp = ControlPlane::start("kuma-cp", ControlPlane::env(&store, &temp_dir("cp"))).await;
    let mesh = format!("{}/meshes/default", cp.api());
    eventually("the default mesh exists", LIMIT, || async {
        match reqwest::get(&mesh).await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    cp
}

async fn status_of(url: &str) -> u16 {
    reqwest::get(url).await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_loses_no_acknowledged_write() {
    let mut pg = Postgres::start().await;
    let mut cp = control_plane(pg.store_env()).await;
    let pid = cp.proc.pid();
    let writer = Writer::start(cp.api());
    writer.acknowledges(5, "writes before the restart").await;

    pg.stop();
    writer.is_refused("writes refused while PostgreSQL is down").await;
    pg.restart().await;
    let back = Instant::now();
    writer.acknowledges(5, "writes after the restart").await;
    let resumed = back.elapsed();
    let outcomes = writer.stop().await;

    eprintln!(
        "PostgreSQL restart: {} writes acknowledged, {} refused with 503, writes resumed {resumed:?} after it was back",
        outcomes.acknowledged.len(),
        outcomes.refused
    );
    assert_nothing_acknowledged_lost(&outcomes, &pg);
    assert!(
        outcomes.last_refusal.contains("the store is unavailable"),
        "{}",
        outcomes.last_refusal
    );
    assert!(cp.proc.is_running() && cp.proc.pid() == pid, "the same kuma-cp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_refuses_writes_clearly_and_serves_reads() {
    let pg = Postgres::start().await;
    let mut cp = control_plane(pg.store_env()).await;
    let pid = cp.proc.pid();
    let writer = Writer::start(cp.api());
    writer
        .acknowledges(5, "writes before the database turns read-only")
        .await;

    // What an operator (or a disk-space guard) does to stop writes.
    pg.sql("ALTER SYSTEM SET default_transaction_read_only = on");
    pg.sql("SELECT pg_reload_conf()");
    writer.is_refused("writes refused by a read-only database").await;
    let read = format!("{}/meshes/default/meshtimeouts/w-0", cp.api());
    assert_eq!(status_of(&read).await, 200, "reads are served");
    let list = format!("{}/meshes/default/meshtimeouts", cp.api());
    assert_eq!(status_of(&list).await, 200, "lists are served");

    pg.sql("ALTER SYSTEM RESET default_transaction_read_only");
    pg.sql("SELECT pg_reload_conf()");
    let writable = Instant::now();
    writer
        .acknowledges(5, "writes once the database is writable again")
        .await;
    let resumed = writable.elapsed();
    let outcomes = writer.stop().await;

    eprintln!(
        "read-only PostgreSQL: {} writes acknowledged, {} refused with 503, writes resumed {resumed:?} after it was writable",
        outcomes.acknowledged.len(),
        outcomes.refused
    );
    assert_nothing_acknowledged_lost(&outcomes, &pg);
    assert!(
        outcomes.last_refusal.contains("read-only transaction")
            && outcomes.last_refusal.contains("SQLSTATE 25006"),
        "the refusal says why: {}",
        outcomes.last_refusal
    );
    assert!(cp.proc.is_running() && cp.proc.pid() == pid, "the same kuma-cp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_promoted_replica_loses_no_acknowledged_write() {
    let mut primary = Postgres::start().await;
    let mut store = primary.store_env();
    migrate_up(&store);
    let replica = primary.start_replica("127.0.0.2").await;
    // Both servers, as Kuma's `host=a,b` allows: kuma-cp uses the one that
    // takes writes.
    store.insert(
        "KUMA_STORE_POSTGRES_HOST".into(),
        format!("{},{}", primary.ip, replica.ip),
    );
    let mut cp = control_plane(store).await;
    let pid = cp.proc.pid();
    let writer = Writer::start(cp.api());
    writer.acknowledges(5, "writes before the failover").await;

    primary.crash();
    let crashed = Instant::now();
    writer
        .is_refused("writes refused while there is no primary")
        .await;
    replica.promote();
    let promoted = crashed.elapsed();
    writer.acknowledges(5, "writes on the promoted replica").await;
    let resumed = crashed.elapsed();
    let outcomes = writer.stop().await;

    eprintln!(
        "failover: {} writes acknowledged, {} refused with 503; replica promoted {promoted:?} and writes resumed {resumed:?} after the primary crashed",
        outcomes.acknowledged.len(),
        outcomes.refused
    );
    assert_nothing_acknowledged_lost(&outcomes, &replica);
    assert!(cp.proc.is_running() && cp.proc.pid() == pid, "the same kuma-cp");

    // The leader's work and the change feed follow too: a Mesh created now
    // gets its default policies from the leader, which learns of it
    // through notifications from the new primary.
    let http = kuma_e2e::apps::client();
    let created = http
        .put(format!("{}/meshes/after-failover", cp.api()))
        .json(&serde_json::json!({"type": "Mesh", "name": "after-failover"}))
        .send()
        .await
        .expect("create a mesh");
    assert!(created.status().is_success(), "{}", created.status());
    let mesh_created = Instant::now();
    let defaults = format!("{}/meshes/after-failover/meshtimeouts", cp.api());
    eventually("the new mesh gets its default policies", LIMIT, || async {
        let listed: serde_json::Value = http
            .get(&defaults)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        (listed["total"].as_u64().unwrap_or(0) > 0)
            .then_some(())
            .ok_or(listed.to_string())
    })
    .await;
    eprintln!(
        "failover: a new mesh's default policies created {:?} after the mesh",
        mesh_created.elapsed()
    );
}
