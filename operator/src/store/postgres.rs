//! The PostgreSQL store, on Kuma's schema: one `resources` row per resource
//! keyed by (name, mesh, type), the spec as JSON text, an integer version
//! for optimistic concurrency, mesh-scoped rows owned by their Mesh row
//! (deleting a mesh cascades), and a trigger announcing every change on
//! the `resource_events` channel.
//!
//! Changes reach subscribers only through LISTEN/NOTIFY, whoever made them
//! (this control plane or another sharing the database), so every instance
//! sees the same order. After the listening connection is re-established a
//! `Resync` is announced: subscribers list everything again.

use std::time::Duration;

use kuma_crds::format::parse_value;
use kuma_crds::resource::{Resource, ResourceType, Scope};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, broadcast};
use tokio_postgres::{AsyncMessage, Client};

use super::{ResourceKey, ResourceStore, StoreError, StoreEvent, StoreResult};
use crate::config::{PostgresConfig, PostgresTlsMode};

/// The schema version this binary writes and expects; Kuma 2.14's last
/// migration, so a database Kuma migrated is recognised.
pub const SCHEMA_VERSION: i64 = 1_710_856_785;

/// The notification channel of Kuma's trigger.
const CHANNEL: &str = "resource_events";

/// Brings a fresh database, or one Kuma migrated, to [`SCHEMA_VERSION`].
/// Every statement is idempotent.
const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS resources (
    name varchar(253) NOT NULL,
    mesh varchar(100) NOT NULL,
    type varchar(100) NOT NULL,
    version integer NOT NULL,
    spec text,
    creation_time timestamp NOT NULL DEFAULT now(),
    modification_time timestamp NOT NULL DEFAULT now(),
    owner_name varchar(100),
    owner_mesh varchar(100),
    owner_type varchar(100),
    PRIMARY KEY (name, mesh, type)
);
ALTER TABLE resources ALTER COLUMN name TYPE varchar(253);
ALTER TABLE resources ADD COLUMN IF NOT EXISTS labels jsonb DEFAULT '{}'::jsonb;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS status jsonb NOT NULL DEFAULT '{}'::jsonb;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'owner_fk') THEN
        ALTER TABLE resources ADD CONSTRAINT owner_fk FOREIGN KEY (owner_name, owner_mesh, owner_type)
            REFERENCES resources (name, mesh, type) ON DELETE CASCADE;
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS owner_fk_index ON resources (owner_type, owner_mesh, owner_name);
CREATE TABLE IF NOT EXISTS locks (
    name varchar(255) PRIMARY KEY,
    record_version_number bigint,
    data bytea,
    owner varchar(255)
);
CREATE OR REPLACE FUNCTION notify_event() RETURNS TRIGGER AS $fn$
DECLARE
    row_key json;
BEGIN
    IF (TG_OP = 'DELETE') THEN
        row_key = json_build_object('name', OLD.name, 'mesh', OLD.mesh, 'type', OLD.type);
    ELSE
        row_key = json_build_object('name', NEW.name, 'mesh', NEW.mesh, 'type', NEW.type);
    END IF;
    PERFORM pg_notify('resource_events', json_build_object('action', TG_OP, 'data', row_key)::text);
    RETURN NULL;
END;
$fn$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS products_notify_event ON resources;
CREATE TRIGGER products_notify_event AFTER INSERT OR UPDATE OR DELETE ON resources
    FOR EACH ROW EXECUTE PROCEDURE notify_event();
CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
"#;

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database is unreachable.
    #[error("cannot connect to PostgreSQL at {host}:{port}: {message}")]
    Connect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Why.
        message: String,
    },
    /// Never migrated.
    #[error("the database has no Kuma schema: run `kuma-cp migrate up` first")]
    NotMigrated,
    /// Migrated by an older version.
    #[error(
        "the database schema is at version {found}, this kuma-cp needs {SCHEMA_VERSION}: run `kuma-cp migrate up`"
    )]
    Old {
        /// The database's version.
        found: i64,
    },
    /// Migrated by a newer version.
    #[error(
        "the database schema is at version {found}, newer than this kuma-cp understands ({SCHEMA_VERSION}): upgrade kuma-cp"
    )]
    Newer {
        /// The database's version.
        found: i64,
    },
    /// A migration left the schema half-applied.
    #[error(
        "the database schema is marked dirty at version {0}: a migration failed; fix it and run `kuma-cp migrate up`"
    )]
    Dirty(i64),
    /// A query failed.
    #[error("{0}")]
    Query(String),
}

/// Connects once.
async fn connect(config: &PostgresConfig) -> Result<Client, SchemaError> {
    let (client, connection) = connect_raw(config).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// The I/O half of a connection, TLS or not.
type PgConnection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
        tokio_postgres::Socket,
    >>::Stream,
>;

/// A connection as the TLS mode says; the stream type is the same with or
/// without TLS (`disable` never starts a handshake).
async fn connect_raw(config: &PostgresConfig) -> Result<(Client, PgConnection), SchemaError> {
    let err = |message: String| SchemaError::Connect {
        host: config.host.clone(),
        port: config.port,
        message,
    };
    let tls = super::postgres_tls::client_config(&config.tls).map_err(err)?;
    let mut pg = tokio_postgres::Config::new();
    let hosts = hosts(&config.host);
    for host in &hosts {
        pg.host(*host);
    }
    if hosts.len() > 1 {
        // Several servers (as Kuma's `host=a,b` connection string allows):
        // the one that takes writes, so that after a failover the store
        // follows the promoted replica instead of settling on a standby.
        pg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    pg.port(config.port)
        .user(&config.user)
        .password(&config.password)
        .dbname(&config.db_name)
        .application_name("kuma-cp")
        .connect_timeout(Duration::from_secs(config.connection_timeout.max(1)))
        .ssl_mode(match config.tls.mode {
            PostgresTlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            _ => tokio_postgres::config::SslMode::Require,
        });
    pg.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await
        .map_err(|e| err(error_chain(&e)))
}

/// The servers of `store.postgres.host`: one, or several separated by
/// commas (tried in order, all on `store.postgres.port`).
fn hosts(host: &str) -> Vec<&str> {
    host.split(',').map(str::trim).filter(|h| !h.is_empty()).collect()
}

/// An error with its causes (a TLS failure hides under "error performing TLS
/// handshake").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `kuma-cp migrate up`: applies the schema; returns the previous version.
pub async fn migrate_up(config: &PostgresConfig) -> Result<Option<i64>, SchemaError> {
    let client = connect(config).await?;
    let before = schema_version(&client).await?;
    if let Some((v, _)) = before
        && v > SCHEMA_VERSION
    {
        return Err(SchemaError::Newer { found: v });
    }
    client
        .batch_execute(MIGRATION)
        .await
        .map_err(|e| SchemaError::Query(e.to_string()))?;
    client
        .batch_execute(&format!(
            "BEGIN; DELETE FROM schema_migrations; INSERT INTO schema_migrations (version, dirty) VALUES ({SCHEMA_VERSION}, false); COMMIT;"
        ))
        .await
        .map_err(|e| SchemaError::Query(e.to_string()))?;
    Ok(before.map(|(v, _)| v))
}

async fn schema_version(client: &Client) -> Result<Option<(i64, bool)>, SchemaError> {
    let exists = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(|e| SchemaError::Query(e.to_string()))?
        .get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT version, dirty FROM schema_migrations ORDER BY version DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| SchemaError::Query(e.to_string()))?;
    Ok(row.map(|r| (r.get::<_, i64>(0), r.get::<_, bool>(1))))
}

/// The PostgreSQL store.
#[derive(Debug)]
pub struct PostgresStore {
    config: PostgresConfig,
    client: Mutex<Option<std::sync::Arc<Client>>>,
    events: broadcast::Sender<StoreEvent>,
}

/// A failed statement. A server that refuses it (read-only, disk full, too
/// many connections, shutting down) says why, and that reason is what the
/// API answers with; tokio-postgres' own text for it is just "db error".
fn unavailable(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(match e.as_db_error() {
        Some(db) => format!(
            "PostgreSQL refused the statement: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        ),
        None => error_chain(&e),
    })
}

const COLUMNS: &str = "type, mesh, name, version, spec, coalesce(labels::text, '{}'), \
    to_char(creation_time, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), to_char(modification_time, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
    status::text";

/// What the `status` column holds. Kuma keeps MeshService's status there;
/// kinds without a status keep their annotations there (Kuma's schema has
/// no column for them, and Kuma ignores the status of such kinds), so the
/// control plane's marks (e.g. mesh defaults generated) survive restarts.
fn status_column(r: &Resource) -> String {
    if r.resource_type().descriptor().has_status {
        return r.status.clone().unwrap_or_else(|| json!({})).to_string();
    }
    if r.meta.annotations.is_empty() {
        return "{}".into();
    }
    json!({ "annotations": r.meta.annotations }).to_string()
}

impl PostgresStore {
    /// Connects and checks the schema version; starts listening for changes.
    pub async fn open(config: PostgresConfig) -> Result<std::sync::Arc<Self>, SchemaError> {
        let client = connect(&config).await?;
        match schema_version(&client).await? {
            None => return Err(SchemaError::NotMigrated),
            Some((v, true)) => return Err(SchemaError::Dirty(v)),
            Some((v, _)) if v < SCHEMA_VERSION => return Err(SchemaError::Old { found: v }),
            Some((v, _)) if v > SCHEMA_VERSION => return Err(SchemaError::Newer { found: v }),
            Some(_) => {}
        }
        let store = std::sync::Arc::new(PostgresStore {
            config,
            client: Mutex::new(Some(std::sync::Arc::new(client))),
            events: broadcast::channel(4096).0,
        });
        // Changes made after `open` returns must reach subscribers, so wait
        // (bounded) for the listening connection; if it cannot be made, it
        // keeps trying and announces a resync once it listens.
        let (listening_tx, listening) = tokio::sync::oneshot::channel();
        tokio::spawn(listen(std::sync::Arc::downgrade(&store), listening_tx));
        let _ = tokio::time::timeout(Duration::from_secs(10), listening).await;
        Ok(store)
    }

    /// A live client (one connection pipelines concurrent queries),
    /// reconnecting if the last one died.
    async fn client(&self) -> StoreResult<std::sync::Arc<Client>> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let fresh = std::sync::Arc::new(
            connect(&self.config)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
        );
        *guard = Some(fresh.clone());
        Ok(fresh)
    }

    async fn get_now(&self, key: &ResourceKey) -> StoreResult<Resource> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM resources WHERE name = $1 AND mesh = $2 AND type = $3"),
                &[&key.name, &key.mesh, &key.resource_type.name()],
            )
            .await
            .map_err(unavailable)?;
        row.as_ref()
            .and_then(from_row)
            .ok_or_else(|| StoreError::NotFound(key.clone()))
    }

    async fn list_now(&self, t: ResourceType, mesh: Option<&str>) -> StoreResult<Vec<Resource>> {
        let client = self.client().await?;
        let rows = match mesh {
            Some(m) => client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM resources WHERE type = $1 AND mesh = $2 ORDER BY mesh, name"
                    ),
                    &[&t.name(), &m],
                )
                .await,
            None => {
                client
                    .query(
                        &format!("SELECT {COLUMNS} FROM resources WHERE type = $1 ORDER BY mesh, name"),
                        &[&t.name()],
                    )
                    .await
            }
        }
        .map_err(unavailable)?;
        Ok(rows.iter().filter_map(from_row).collect())
    }

    async fn create_now(&self, r: Resource) -> StoreResult<Resource> {
        let key = ResourceKey::of(&r);
        let client = self.client().await?;
        let owner = key.owner();
        let (owner_name, owner_mesh, owner_type) = match key.resource_type.descriptor().scope {
            // Kuma's cascade: an insight goes with its Dataplane (which goes
            // with its mesh).
            Scope::Mesh if owner.is_some() => (
                Some(key.name.clone()),
                Some(key.mesh.clone()),
                owner.as_ref().map(|o| o.resource_type.name().to_string()),
            ),
            Scope::Mesh => (
                Some(key.mesh.clone()),
                Some(String::new()),
                Some("Mesh".to_string()),
            ),
            Scope::Global => (None, None, None),
        };
        if key.resource_type.descriptor().scope == Scope::Mesh {
            let mesh = ResourceKey::new(ResourceType::Mesh, "", &key.mesh);
            // Only a missing Mesh is a missing Mesh: an unreachable store
            // is a 503, not a 400 telling the user to create it.
            match self.get_now(&mesh).await {
                Ok(_) => {}
                Err(StoreError::NotFound(_)) => return Err(StoreError::MeshNotFound(key.mesh)),
                Err(e) => return Err(e),
            }
        }
        let result = client
            .execute(
                "INSERT INTO resources (name, mesh, type, version, spec, labels, creation_time, modification_time, owner_name, owner_mesh, owner_type, status) \
                 VALUES ($1, $2, $3, 1, $4, $5::text::jsonb, now() at time zone 'utc', now() at time zone 'utc', $6, $7, $8, $9::text::jsonb)",
                &[
                    &key.name,
                    &key.mesh,
                    &key.resource_type.name(),
                    &r.spec.to_value().to_string(),
                    &serde_json::to_string(&r.meta.labels).unwrap_or_else(|_| "{}".into()),
                    &owner_name,
                    &owner_mesh,
                    &owner_type,
                    &status_column(&r),
                ],
            )
            .await;
        match result {
            Ok(_) => self.get_now(&key).await,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::AlreadyExists(key))
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
                Err(match owner {
                    Some(owner) => StoreError::NotFound(owner),
                    None => StoreError::MeshNotFound(key.mesh),
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn update_now(&self, r: Resource) -> StoreResult<Resource> {
        let key = ResourceKey::of(&r);
        let expected = r.meta.version.clone().unwrap_or_default();
        let Ok(expected_number) = expected.parse::<i32>() else {
            return Err(StoreError::Conflict { key, expected });
        };
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE resources SET spec = $1, labels = $2::text::jsonb, version = version + 1, \
                 modification_time = now() at time zone 'utc', status = $7::text::jsonb \
                 WHERE name = $3 AND mesh = $4 AND type = $5 AND version = $6",
                &[
                    &r.spec.to_value().to_string(),
                    &serde_json::to_string(&r.meta.labels).unwrap_or_else(|_| "{}".into()),
                    &key.name,
                    &key.mesh,
                    &key.resource_type.name(),
                    &expected_number,
                    &status_column(&r),
                ],
            )
            .await
            .map_err(unavailable)?;
        if updated == 0 {
            // Either gone or changed since it was read.
            return match self.get_now(&key).await {
                Ok(_) => Err(StoreError::Conflict { key, expected }),
                Err(e) => Err(e),
            };
        }
        self.get_now(&key).await
    }

    async fn delete_now(&self, key: &ResourceKey) -> StoreResult<()> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                "DELETE FROM resources WHERE name = $1 AND mesh = $2 AND type = $3",
                &[&key.name, &key.mesh, &key.resource_type.name()],
            )
            .await
            .map_err(unavailable)?;
        if deleted == 0 {
            return Err(StoreError::NotFound(key.clone()));
        }
        Ok(())
    }

    /// Tries to take the leader lock (a session advisory lock held by a
    /// dedicated connection); `Some(connection guard)` when taken.
    pub async fn try_lead(&self) -> Option<LeaderLock> {
        let (client, connection) = connect_raw(&self.config).await.ok()?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        let taken = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .await
            .ok()?
            .get::<_, bool>(0);
        if taken {
            Some(LeaderLock {
                _client: client,
                task,
            })
        } else {
            task.abort();
            None
        }
    }
}

#[async_trait::async_trait]
impl ResourceStore for PostgresStore {
    async fn get(&self, key: &ResourceKey) -> StoreResult<Resource> {
        self.get_now(key).await
    }

    async fn list(&self, t: ResourceType, mesh: Option<&str>) -> StoreResult<Vec<Resource>> {
        self.list_now(t, mesh).await
    }

    async fn create(&self, r: Resource) -> StoreResult<Resource> {
        self.create_now(r).await
    }

    async fn update(&self, r: Resource) -> StoreResult<Resource> {
        self.update_now(r).await
    }

    async fn delete(&self, key: &ResourceKey) -> StoreResult<()> {
        self.delete_now(key).await
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}

/// The advisory lock id of the leader (an arbitrary constant).
const LEADER_LOCK: i64 = 0x006b_756d_612d_6370;

/// Leadership: held while this connection lives.
#[derive(Debug)]
pub struct LeaderLock {
    _client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderLock {
    /// Whether the lock's connection is still up.
    pub fn is_held(&self) -> bool {
        !self.task.is_finished()
    }

    /// Resolves when the lock's connection ends (the lock is then gone).
    pub async fn lost(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for LeaderLock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A resource from a row, `None` for rows this control plane does not
/// understand (kinds it does not implement), which are skipped.
fn from_row(row: &tokio_postgres::Row) -> Option<Resource> {
    let type_name: String = row.get(0);
    let mesh: String = row.get(1);
    let name: String = row.get(2);
    let version: i32 = row.get(3);
    let spec_text: Option<String> = row.get(4);
    let labels: String = row.get(5);
    let created: String = row.get(6);
    let modified: String = row.get(7);
    let status: Option<String> = row.get(8);
    let status: Value = status
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| json!({}));
    let resource_type: ResourceType = type_name.parse().ok()?;
    let spec: Value = spec_text
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| json!({}));
    let mut doc = Map::new();
    doc.insert("type".into(), type_name.clone().into());
    doc.insert("name".into(), name.clone().into());
    if !mesh.is_empty() {
        doc.insert("mesh".into(), mesh.into());
    }
    let labels: Value = serde_json::from_str(&labels).unwrap_or_else(|_| json!({}));
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        doc.insert("labels".into(), labels);
    }
    doc.insert("creationTime".into(), created.into());
    doc.insert("modificationTime".into(), modified.into());
    if resource_type.descriptor().flat_universal {
        if let Value::Object(fields) = spec {
            doc.extend(fields);
        }
    } else {
        doc.insert("spec".into(), spec);
    }
    let has_status = resource_type.descriptor().has_status;
    if has_status && status.as_object().is_some_and(|s| !s.is_empty()) {
        doc.insert("status".into(), status.clone());
    }
    match parse_value(Value::Object(doc)) {
        Ok(mut r) => {
            r.meta.version = Some(version.to_string());
            if !has_status && let Some(annotations) = status.get("annotations").and_then(Value::as_object) {
                r.meta.annotations = annotations
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect();
            }
            Some(r)
        }
        Err(e) => {
            tracing::warn!(resource = %name, kind = %type_name, error = %e, "skipping a stored resource that does not validate");
            None
        }
    }
}

/// Listens for change notifications for as long as the store lives,
/// reconnecting with backoff and announcing a resync after each reconnect.
async fn listen(store: std::sync::Weak<PostgresStore>, listening: tokio::sync::oneshot::Sender<()>) {
    let mut listening = Some(listening);
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(s) = store.upgrade() else { return };
        let config = s.config.clone();
        drop(s);
        let (client, mut connection) = match connect_raw(&config).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot listen for changes");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let pump = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            use futures::StreamExt;
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        if client.batch_execute(&format!("LISTEN {CHANNEL}")).await.is_err() {
            pump.abort();
            continue;
        }
        backoff = Duration::from_millis(100);
        if let Some(s) = store.upgrade() {
            let _ = s.events.send(StoreEvent::Resync);
        }
        if let Some(tx) = listening.take() {
            let _ = tx.send(());
        }
        while let Some(payload) = rx.recv().await {
            let Some(s) = store.upgrade() else { return };
            if let Some(event) = event_of(&s, &payload).await {
                let _ = s.events.send(event);
            }
        }
        pump.abort();
        tracing::warn!("lost the PostgreSQL change notifications; reconnecting");
    }
}

async fn event_of(store: &PostgresStore, payload: &str) -> Option<StoreEvent> {
    let v: Value = serde_json::from_str(payload).ok()?;
    let data = v.get("data")?;
    let resource_type: ResourceType = data.get("type")?.as_str()?.parse().ok()?;
    let key = ResourceKey::new(
        resource_type,
        data.get("mesh")?.as_str()?,
        data.get("name")?.as_str()?,
    );
    if resource_type.is_read_only() {
        // Status written by control planes: nobody follows it, and reading
        // every row back would cost a query per proxy update.
        return None;
    }
    match v.get("action")?.as_str()? {
        "DELETE" => Some(StoreEvent::Deleted(key)),
        // The row may be gone again by now; its DELETE follows.
        _ => store
            .get_now(&key)
            .await
            .ok()
            .map(|r| StoreEvent::Upserted(Box::new(r))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_are_split_on_commas_and_trimmed() {
        for (host, expected) in [
            ("db", vec!["db"]),
            ("10.0.0.1,10.0.0.2", vec!["10.0.0.1", "10.0.0.2"]),
            (" a , b ,, c ", vec!["a", "b", "c"]),
            ("", vec![]),
        ] {
            assert_eq!(hosts(host), expected, "{host:?}");
        }
    }
}
