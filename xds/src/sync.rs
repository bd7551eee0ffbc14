//! Keeps every connected proxy's snapshot in step with the resources.
//!
//! The [`Reconciler`] receives resource changes and proxy arrivals as
//! events, applies them in batches (everything that arrived while the
//! previous batch was processed is one batch, so bursts coalesce) and
//! regenerates only the proxies a batch can affect:
//!
//! * a Dataplane change regenerates that proxy, and when it changes what
//!   the proxy serves (endpoints, protocol) every proxy that reaches those
//!   services;
//! * a policy change regenerates the proxies its old or new top-level
//!   target selects;
//! * a Mesh change regenerates every proxy of the mesh.
//!
//! Regeneration shares outbound bundles through each mesh's
//! [`OutboundCache`], so the cost of a change is roughly the number of
//! affected proxies times the cost of assembling (not building) a config.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kuma_crds::common::TargetRef;
use kuma_crds::matching::{PolicyView, select};
use kuma_crds::mesh::MeshSpec;
use kuma_crds::resource::{Resource, ResourceType, Spec};
use tokio::sync::mpsc;

use crate::admin_tls::AdminTls;
use crate::context::{MeshContext, Proxy, ProxyMetadata, dataplane_endpoints};
use crate::generate::{
    OutboundBundle, OutboundCache, OutboundLayer, Policies, PolicyRead, generate_shared, layer_for,
};
use crate::metrics::XdsMetrics;
use crate::mtls::{Ca, Identity, MeshMtls};
use crate::resources::{SharedEncodings, SharedLayer, XdsType};
use crate::retire::ClusterRetirement;
use crate::snapshot::{Snapshot, SnapshotCache};

/// A change the reconciler reacts to.
#[derive(Clone, Debug)]
pub enum Event {
    /// A resource was created or updated.
    Upsert(Box<Resource>),
    /// A resource was deleted.
    Delete {
        /// Its type.
        resource_type: ResourceType,
        /// Its mesh (for a Mesh, its own name).
        mesh: String,
        /// Its core name.
        name: String,
    },
    /// A proxy opened an xDS stream.
    Connected {
        /// `<mesh>.<name>`.
        node: String,
        /// What its bootstrap said about it.
        metadata: ProxyMetadata,
    },
    /// A proxy's last xDS stream closed.
    Disconnected {
        /// `<mesh>.<name>`.
        node: String,
    },
    /// Time passed: certificates due for renewal are renewed, retired
    /// clusters past their grace period removed.
    Tick,
    /// Events that must be applied together (a full listing of the
    /// store: applying part of it would configure proxies from half a
    /// mesh, e.g. mTLS on but its permissions not yet known).
    Batch(Vec<Event>),
}

/// What the API shows about a proxy's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// When the current certificate expires.
    pub expiration: SystemTime,
    /// When it was issued.
    pub issued_at: SystemTime,
    /// How many certificates the proxy got from this control plane.
    pub regenerations: u32,
    /// The backend that signed it.
    pub backend: String,
    /// The backends the proxy trusts.
    pub trusted_backends: Vec<String>,
}

/// Certificate information of every proxy, shared with the API.
pub type CertRegistry = Arc<Mutex<BTreeMap<String, CertInfo>>>;

/// Splits a node id `<mesh>.<name>` (the name may contain dots).
pub fn parse_node_id(node: &str) -> Option<(&str, &str)> {
    node.split_once('.')
        .filter(|(m, n)| !m.is_empty() && !n.is_empty())
}

/// A connected proxy of a mesh.
#[derive(Debug)]
struct ConnectedProxy {
    metadata: ProxyMetadata,
    /// Whether it has a transparent proxy (then it reaches every service).
    transparent: bool,
    /// The outbound bundles its last config uses (kept alive in the cache);
    /// they name the services it was built from.
    bundles: Vec<Arc<OutboundBundle>>,
    /// The shared layer of outbounds its last config rests on.
    layer: Option<Resting>,
    /// Its identity certificate (mTLS) and the CA it was issued for.
    identity: Option<(Arc<Identity>, u64)>,
    /// Its clusters, removed ones kept for a while.
    clusters: ClusterRetirement,
    /// The server side of its admin over mTLS, kept while its address
    /// stays, so its configuration stays the same.
    admin_tls: Option<Arc<AdminTls>>,
}

/// Whether two layers (by address) have the same clusters, with the layers.
type SameClusters = HashMap<(usize, usize), (Arc<SharedLayer>, Arc<SharedLayer>, bool)>;

/// The shared layer a proxy's configuration rests on, and what the rest of
/// it was generated from besides its Dataplane (for the layer alone to be
/// replaced when nothing of its own changed).
#[derive(Clone, Debug)]
struct Resting {
    layer: Arc<OutboundLayer>,
    /// The [`MeshContext::own_build`] its own resources were generated in
    /// (or found still right for).
    own_build: u64,
    /// The [`MeshContext::base_build`] they were generated in.
    base_build: u64,
    /// What they read of its policies (`None`: more than can be compared).
    own_reads: Option<Box<[PolicyRead]>>,
    /// The signature of its `to` policies, which names its layer.
    to_signature: u128,
}

impl ConnectedProxy {
    /// Its last configuration with only its shared layer replaced, when
    /// only endpoints moved since its own resources were generated (a new
    /// endpoint no longer generates, encodes and versions those again for
    /// every proxy that reaches it), or only policies whose new matching
    /// gives its own resources the same reads (a mesh-wide `to` change
    /// replaces every proxy's layer, not the proxies). `same_clusters`
    /// remembers which pairs of layers have the same clusters (none is
    /// retired by the swap); it holds the layers, so that their addresses
    /// stay theirs. Policies it matches are left in `matched`, for the
    /// proxy's generation when the swap cannot be made.
    fn on_new_layer(
        &mut self,
        resource: &Resource,
        mesh: &MeshContext,
        cache: &OutboundCache,
        current: Option<Arc<Snapshot>>,
        same_clusters: &mut SameClusters,
        matched: &mut Option<Policies>,
    ) -> Option<Snapshot> {
        let resting = self.layer.as_mut()?;
        let current = current?;
        // Matching reads the Dataplane alone, not what Envoy said of itself.
        let proxy = Proxy::new(resource, ProxyMetadata::default())?;
        let (new, to_signature) = if resting.own_build == mesh.own_build {
            let new = layer_for(mesh, resting.to_signature, resting.layer.reach(), cache, || {
                Policies::compute(&proxy, mesh)
            })?;
            (new, resting.to_signature)
        } else if resting.base_build == mesh.base_build {
            let policies = &*matched.insert(Policies::compute(&proxy, mesh));
            if !resting
                .own_reads
                .as_ref()
                .is_some_and(|reads| policies.reads_match(reads))
            {
                return None;
            }
            let to_signature = policies.to_signature();
            let new = layer_for(mesh, to_signature, resting.layer.reach(), cache, || policies)?;
            (new, to_signature)
        } else {
            return None;
        };
        let (old_resources, new_resources) = (resting.layer.resources(), new.resources());
        let key = (
            Arc::as_ptr(old_resources) as usize,
            Arc::as_ptr(new_resources) as usize,
        );
        let (_, _, same) = same_clusters.entry(key).or_insert_with(|| {
            let same = old_resources.same_names(new_resources, XdsType::Cluster);
            (old_resources.clone(), new_resources.clone(), same)
        });
        if !*same {
            return None;
        }
        let snapshot = current.on_layer(old_resources, new_resources)?;
        if !self.clusters.rest_on(new_resources) {
            return None;
        }
        resting.layer = new;
        resting.own_build = mesh.own_build;
        resting.to_signature = to_signature;
        Some(snapshot)
    }

    /// Whether its last config was built from any of `services`.
    fn reaches_any(&self, services: &BTreeSet<String>) -> bool {
        self.layer.as_ref().is_some_and(|r| r.layer.reaches_any(services))
            || self
                .bundles
                .iter()
                .flat_map(|b| b.services())
                .any(|s| services.contains(s))
    }
}

/// One mesh's resources and proxies.
#[derive(Debug, Default)]
struct MeshState {
    mesh: Option<MeshSpec>,
    resources: BTreeMap<(ResourceType, String), Resource>,
    context: Option<Arc<MeshContext>>,
    cache: OutboundCache,
    /// Encodings of proxies' own resources, shared where they are equal.
    encodings: SharedEncodings,
    proxies: BTreeMap<String, ConnectedProxy>,
}

/// What one batch changed in a mesh.
#[derive(Debug, Default)]
struct MeshChanges {
    everything: bool,
    /// Something other than a policy changed: the mesh's services are
    /// digested again (a change of policies alone keeps them).
    resources_changed: bool,
    proxies: BTreeSet<String>,
    services: BTreeSet<String>,
    /// Every changed policy, old and new. When there is none, the mesh's
    /// prepared policies, and what proxies matched against them, stay.
    policies: Vec<Resource>,
}

/// The generation state of every mesh. Not thread-safe by itself: the
/// [`Reconciler`] task owns it.
#[derive(Debug)]
pub struct Generator {
    meshes: BTreeMap<String, MeshState>,
    snapshots: Arc<SnapshotCache>,
    metrics: Arc<XdsMetrics>,
    certs: CertRegistry,
    /// When each proxy's certificate is due for renewal.
    renewals: BTreeMap<String, SystemTime>,
    /// When each proxy's next retiring cluster is due to go.
    retirements: BTreeMap<String, SystemTime>,
    /// How long removed clusters stay.
    cluster_grace: Duration,
    /// The CA of proxies' admin listeners (none: they serve `/ready` only)
    /// and its certificate, which every proxy's listener holds.
    admin_ca: Option<(Arc<Ca>, Arc<str>)>,
}

/// What a batch did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Proxies regenerated.
    pub regenerated: BTreeSet<String>,
    /// Proxies whose snapshot changed.
    pub changed: BTreeSet<String>,
}

impl Generator {
    /// An empty generator publishing into `snapshots`.
    pub fn new(snapshots: Arc<SnapshotCache>, metrics: Arc<XdsMetrics>) -> Self {
        Generator {
            meshes: BTreeMap::new(),
            snapshots,
            metrics,
            certs: Arc::new(Mutex::new(BTreeMap::new())),
            renewals: BTreeMap::new(),
            retirements: BTreeMap::new(),
            cluster_grace: crate::retire::DEFAULT_GRACE,
            admin_ca: None,
        }
    }

    /// Exposes every proxy's Envoy admin over mTLS with certificates of
    /// `ca` (see [`crate::admin_tls`]).
    pub fn with_admin_ca(mut self, ca: Ca) -> Self {
        let pem = Arc::from(ca.cert_pem.as_str());
        self.admin_ca = Some((Arc::new(ca), pem));
        self
    }

    /// Sets how long a removed cluster stays in a proxy's configuration
    /// (see [`crate::retire`]); zero removes clusters at once.
    pub fn with_cluster_grace(mut self, grace: Duration) -> Self {
        self.cluster_grace = grace;
        self
    }

    /// Certificate information, shared with whoever reports it.
    pub fn cert_registry(&self) -> CertRegistry {
        self.certs.clone()
    }

    /// When time-driven work is next due: a certificate renewal or a
    /// retiring cluster's removal.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        self.renewals
            .values()
            .chain(self.retirements.values())
            .min()
            .copied()
    }

    /// Applies a batch of events and publishes the affected snapshots.
    pub fn apply(&mut self, events: Vec<Event>) -> BatchReport {
        self.apply_at(events, SystemTime::now())
    }

    /// [`Generator::apply`] as if it were `now` (tests drive time-driven
    /// work with it).
    pub fn apply_at(&mut self, events: Vec<Event>, now: SystemTime) -> BatchReport {
        let started = Instant::now();
        let mut changes: BTreeMap<String, MeshChanges> = BTreeMap::new();
        for event in events {
            self.record(event, &mut changes, now);
        }
        let mut report = BatchReport::default();
        for (mesh_name, c) in changes {
            self.reconcile_mesh(&mesh_name, c, &mut report, now);
        }
        self.metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        report
    }

    fn record(&mut self, event: Event, changes: &mut BTreeMap<String, MeshChanges>, now: SystemTime) {
        match event {
            Event::Batch(events) => {
                for e in events {
                    self.record(e, changes, now);
                }
            }
            Event::Upsert(resource) => {
                let t = resource.resource_type();
                let name = resource.meta.core_name();
                let mesh = if t == ResourceType::Mesh {
                    name.clone()
                } else {
                    resource.meta.mesh_or_default().to_string()
                };
                let c = changes.entry(mesh.clone()).or_default();
                let state = self.meshes.entry(mesh).or_default();
                if let Spec::Mesh(spec) = &resource.spec {
                    state.mesh = Some(spec.clone());
                    c.everything = true;
                    return;
                }
                let old = state.resources.insert((t, name.clone()), (*resource).clone());
                note_change(t, &name, old.as_ref(), Some(&resource), c);
            }
            Event::Delete {
                resource_type,
                mesh,
                name,
            } => {
                let c = changes.entry(mesh.clone()).or_default();
                let state = self.meshes.entry(mesh).or_default();
                if resource_type == ResourceType::Mesh {
                    state.mesh = None;
                    c.everything = true;
                    return;
                }
                let old = state.resources.remove(&(resource_type, name.clone()));
                note_change(resource_type, &name, old.as_ref(), None, c);
            }
            Event::Connected { node, metadata } => {
                let Some((mesh, name)) = parse_node_id(&node) else {
                    return;
                };
                let state = self.meshes.entry(mesh.to_string()).or_default();
                state.proxies.insert(
                    name.to_string(),
                    ConnectedProxy {
                        metadata,
                        transparent: false,
                        bundles: Vec::new(),
                        layer: None,
                        identity: None,
                        clusters: ClusterRetirement::default(),
                        admin_tls: None,
                    },
                );
                changes
                    .entry(mesh.to_string())
                    .or_default()
                    .proxies
                    .insert(name.to_string());
            }
            Event::Disconnected { node } => {
                let Some((mesh, name)) = parse_node_id(&node) else {
                    return;
                };
                if let Some(state) = self.meshes.get_mut(mesh) {
                    state.proxies.remove(name);
                }
                self.renewals.remove(&node);
                self.retirements.remove(&node);
                self.certs.lock().unwrap_or_else(|e| e.into_inner()).remove(&node);
                self.snapshots.clear(&node);
                self.snapshots.remove_if_unwatched(&node);
            }
            Event::Tick => {
                let due = |deadlines: &BTreeMap<String, SystemTime>| -> Vec<String> {
                    deadlines
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(n, _)| n.clone())
                        .collect()
                };
                for node in due(&self.renewals) {
                    self.renewals.remove(&node);
                    let Some((mesh, name)) = parse_node_id(&node) else {
                        continue;
                    };
                    if let Some(p) = self.meshes.get_mut(mesh).and_then(|m| m.proxies.get_mut(name)) {
                        p.identity = None;
                        changes
                            .entry(mesh.to_string())
                            .or_default()
                            .proxies
                            .insert(name.to_string());
                    }
                }
                for node in due(&self.retirements) {
                    self.retirements.remove(&node);
                    if let Some((mesh, name)) = parse_node_id(&node) {
                        changes
                            .entry(mesh.to_string())
                            .or_default()
                            .proxies
                            .insert(name.to_string());
                    }
                }
            }
        }
    }

    fn reconcile_mesh(&mut self, mesh_name: &str, c: MeshChanges, report: &mut BatchReport, now: SystemTime) {
        let Some(state) = self.meshes.get_mut(mesh_name) else {
            return;
        };
        if let Some(e) = state.context.as_ref().and_then(|m| m.mtls_error.clone())
            && !(c.everything || c.resources_changed)
        {
            tracing::warn!(mesh = mesh_name, error = %e, "mTLS is unusable; proxies keep their configuration");
            return;
        }
        let Some(spec) = state.mesh.clone() else {
            // Like Kuma: no mesh, no configuration for its proxies.
            for name in state.proxies.keys() {
                self.snapshots.clear(&format!("{mesh_name}.{name}"));
            }
            state.context = None;
            return;
        };
        if state.proxies.is_empty() {
            // Nobody to configure: the digest is built when a proxy
            // connects, so a burst of writes before any proxy does (Pods
            // being created) costs nothing per write instead of a rebuild
            // of the whole mesh each.
            state.context = None;
            return;
        }
        let old_services: BTreeMap<String, u64> = state
            .context
            .as_ref()
            .map(|m| m.services.iter().map(|(k, s)| (k.clone(), s.digest)).collect())
            .unwrap_or_default();
        let mut c = c;
        match &state.context {
            Some(previous) if !(c.everything || c.resources_changed) => {
                if !c.policies.is_empty() {
                    state.context = Some(Arc::new(previous.with_policies(state.resources.values())));
                }
            }
            // Anything but a policy or a Dataplane changes everything.
            Some(previous) if c.policies.is_empty() && !c.everything => {
                state.context = Some(Arc::new(previous.with_dataplanes(
                    &spec,
                    state.resources.values(),
                    &c.services,
                )));
            }
            Some(previous) if c.policies.is_empty() => {
                state.context = Some(Arc::new(previous.with_resources(&spec, state.resources.values())));
            }
            _ => {
                state.context = Some(Arc::new(MeshContext::build(
                    mesh_name,
                    &spec,
                    state.resources.values(),
                )));
            }
        }
        let Some(mesh) = state.context.clone() else { return };
        if let Some(e) = &mesh.mtls_error {
            // Never fall back to plaintext: the proxies keep what they have.
            tracing::warn!(mesh = mesh_name, error = %e, "mTLS is unusable; proxies keep their configuration");
            return;
        }
        let service_set_changed = mesh.services.keys().ne(old_services.keys());
        // A service whose digest moved (a MeshService's endpoints follow its
        // selector, not the `kuma.io/service` the change noted).
        c.services.extend(
            mesh.services
                .iter()
                .filter(|(name, s)| old_services.get(*name) != Some(&s.digest))
                .map(|(name, _)| name.clone()),
        );

        let mut affected: BTreeSet<String> = c.proxies.clone();
        if c.everything {
            affected.extend(state.proxies.keys().cloned());
        } else {
            for (name, p) in &state.proxies {
                if (service_set_changed && p.transparent) || p.reaches_any(&c.services) {
                    affected.insert(name.clone());
                }
            }
            if !c.policies.is_empty() {
                let routes: Vec<&Resource> = state
                    .resources
                    .range((ResourceType::MeshHTTPRoute, String::new())..)
                    .take_while(|((t, _), _)| *t == ResourceType::MeshHTTPRoute)
                    .map(|(_, r)| r)
                    .collect();
                // Each policy's target read once, not once per proxy: at
                // 10,000 proxies reading it was most of a small change's cost.
                let targets: Vec<(&Resource, TargetRef)> = c
                    .policies
                    .iter()
                    .filter_map(|p| PolicyView::of(&p.spec).map(|view| (p, view.top)))
                    .collect();
                for name in state.proxies.keys() {
                    if affected.contains(name) {
                        continue;
                    }
                    let Some(dp) = state.resources.get(&(ResourceType::Dataplane, name.clone())) else {
                        continue;
                    };
                    if targets.iter().any(|(p, top)| selects(p, top, dp, &routes)) {
                        affected.insert(name.clone());
                    }
                }
            }
        }

        let mut same_clusters = HashMap::new();
        for name in affected {
            let node = format!("{mesh_name}.{name}");
            let Some(connected) = state.proxies.get_mut(&name) else {
                continue;
            };
            let Some(resource) = state.resources.get(&(ResourceType::Dataplane, name.clone())) else {
                self.snapshots.clear(&node);
                continue;
            };
            // Policies the swap matched, used again when it cannot be made.
            let mut matched = None;
            if !c.proxies.contains(&name) {
                let started = Instant::now();
                let current = self.snapshots.get(&node);
                if let Some(snapshot) = connected.on_new_layer(
                    resource,
                    &mesh,
                    &state.cache,
                    current,
                    &mut same_clusters,
                    &mut matched,
                ) {
                    self.metrics
                        .generation_seconds
                        .observe(started.elapsed().as_secs_f64());
                    publish(&self.snapshots, &self.metrics, node, snapshot, report);
                    continue;
                }
            }
            let Some(proxy) = Proxy::new(resource, connected.metadata.clone()) else {
                continue;
            };
            let started = Instant::now();
            let proxy = match &mesh.mtls {
                None => proxy,
                Some(mtls) => match identity(connected, mtls, &proxy, now) {
                    Ok((identity, fresh)) => {
                        self.renewals.insert(node.clone(), identity.renew_at());
                        let mut certs = self.certs.lock().unwrap_or_else(|e| e.into_inner());
                        let regenerations =
                            certs.get(&node).map_or(0, |c| c.regenerations) + u32::from(fresh);
                        certs.insert(
                            node.clone(),
                            CertInfo {
                                expiration: identity.not_after,
                                issued_at: identity.issued_at,
                                regenerations,
                                backend: identity.backend.clone(),
                                trusted_backends: mtls.trusted_backends.clone(),
                            },
                        );
                        drop(certs);
                        proxy.with_identity(Some(identity))
                    }
                    Err(e) => {
                        tracing::error!(proxy = %node, error = %e, "cannot issue the proxy's certificate; keeping its configuration");
                        continue;
                    }
                },
            };
            let proxy = match admin_tls(connected, self.admin_ca.as_ref(), &proxy) {
                Ok(admin) => proxy.with_admin_tls(admin),
                Err(e) => {
                    tracing::warn!(proxy = %node, error = %e, "cannot issue the certificate of the proxy's admin listener; it serves /ready only");
                    proxy
                }
            };
            // Matching reads the Dataplane alone: the swap's match serves.
            let policies = matched.unwrap_or_else(|| Policies::compute(&proxy, &mesh));
            let mut generation = generate_shared(&proxy, &mesh, &policies, Some(&state.cache));
            generation.resources.share_encodings(&mut state.encodings);
            connected
                .clusters
                .carry(&mut generation.resources, now, self.cluster_grace);
            match connected.clusters.next_expiry() {
                Some(at) => self.retirements.insert(node.clone(), at),
                None => self.retirements.remove(&node),
            };
            let snapshot = Snapshot::from_resources(&generation.resources);
            self.metrics
                .generation_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics.generations.inc();
            connected.transparent = proxy.transparent_proxy().is_some();
            connected.bundles = generation.bundles;
            connected.layer = generation.layer.map(|layer| Resting {
                layer,
                own_build: mesh.own_build,
                base_build: mesh.base_build,
                own_reads: generation.own_reads,
                to_signature: policies.to_signature(),
            });
            publish(&self.snapshots, &self.metrics, node, snapshot, report);
        }
        state.cache.drop_unreferenced();
        self.metrics.proxies.set(self.snapshots.configured() as i64);
    }

    /// The mesh digest in use, for inspection.
    pub fn mesh_context(&self, mesh: &str) -> Option<Arc<MeshContext>> {
        self.meshes.get(mesh)?.context.clone()
    }

    /// Cache counters of a mesh.
    pub fn cache_stats(&self, mesh: &str) -> Option<crate::generate::CacheStats> {
        Some(self.meshes.get(mesh)?.cache.stats())
    }
}

/// Publishes a regenerated proxy's snapshot (streams wake only if it
/// changed).
fn publish(
    snapshots: &SnapshotCache,
    metrics: &XdsMetrics,
    node: String,
    snapshot: Snapshot,
    report: &mut BatchReport,
) {
    report.regenerated.insert(node.clone());
    if snapshots.set(&node, snapshot) {
        metrics.snapshot_updates.inc();
        report.changed.insert(node);
    }
}

/// The proxy's identity certificate: the current one while it is valid for
/// the same identity and CA, a new one otherwise. `true` when new.
fn identity(
    connected: &mut ConnectedProxy,
    mtls: &MeshMtls,
    proxy: &Proxy<'_>,
    now: SystemTime,
) -> Result<(Arc<Identity>, bool), crate::mtls::MtlsError> {
    let sans = crate::mtls::proxy_sans(&mtls.mesh, &proxy.tag_set());
    let ca = crate::digest::digest(&mtls.signer.cert_pem);
    let lifetime = |i: &Identity| i.not_after.duration_since(i.issued_at).unwrap_or_default();
    if let Some((current, current_ca)) = &connected.identity
        && *current_ca == ca
        && current.sans == sans
        && current.renew_at() > now
        && lifetime(current).as_secs() == mtls.cert_lifetime.as_secs()
    {
        return Ok((current.clone(), false));
    }
    let fresh = Arc::new(crate::mtls::issue(mtls, &sans, now)?);
    connected.identity = Some((fresh.clone(), ca));
    Ok((fresh, true))
}

/// The server side of the proxy's admin listener: the current one while
/// its address stays, a new one otherwise; none when Envoy's own admin is
/// at its address or there is no CA.
fn admin_tls(
    connected: &mut ConnectedProxy,
    ca: Option<&(Arc<Ca>, Arc<str>)>,
    proxy: &Proxy<'_>,
) -> Result<Option<Arc<AdminTls>>, crate::mtls::MtlsError> {
    let Some((ca, ca_pem)) = ca.filter(|_| !proxy.admin_on_own_address()) else {
        return Ok(None);
    };
    if let Some(current) = &connected.admin_tls
        && current.address == proxy.address()
        && *current.ca_pem == *ca.cert_pem
    {
        return Ok(Some(current.clone()));
    }
    let fresh = Arc::new(crate::admin_tls::issue_server(ca, proxy.address())?.sharing_ca_pem(ca_pem));
    connected.admin_tls = Some(fresh.clone());
    Ok(Some(fresh))
}

/// Records what a resource change can affect.
fn note_change(
    t: ResourceType,
    name: &str,
    old: Option<&Resource>,
    new: Option<&Resource>,
    c: &mut MeshChanges,
) {
    if !t.is_policy() {
        c.resources_changed = true;
    }
    match t {
        ResourceType::Dataplane => {
            c.proxies.insert(name.to_string());
            let served = |r: Option<&Resource>| match r {
                Some(Resource {
                    spec: Spec::Dataplane(dp),
                    meta,
                    ..
                }) => dataplane_endpoints(name, &meta.labels, dp),
                _ => Vec::new(),
            };
            let (before, after) = (served(old), served(new));
            if before != after {
                c.services
                    .extend(before.into_iter().chain(after).map(|(service, _, _)| service));
            }
        }
        // Whether the mesh has any MeshFaultInjection decides whether every
        // proxy sends `x-kuma-tags`: creating or deleting one is mesh-wide.
        ResourceType::MeshFaultInjection if old.is_none() || new.is_none() => {
            c.everything = true;
            c.policies.extend(old.into_iter().chain(new).cloned());
        }
        t if t.is_policy() => c.policies.extend(old.into_iter().chain(new).cloned()),
        // Anything else of the mesh (MeshService, …) may matter anywhere.
        _ => c.everything = true,
    }
}

/// Whether a policy's top-level target selects the dataplane (a route
/// change counts for every proxy a route-targeting policy selects).
fn selects(policy: &Resource, top: &TargetRef, dataplane: &Resource, routes: &[&Resource]) -> bool {
    let Spec::Dataplane(dp) = &dataplane.spec else {
        return false;
    };
    !matches!(select(policy, top, dataplane, dp, routes), Ok(None))
}

/// The handle the rest of the control plane uses: sends events to the
/// reconcile task.
#[derive(Clone, Debug)]
pub struct Reconciler {
    events: mpsc::UnboundedSender<Event>,
    connections: Arc<Mutex<HashMap<String, usize>>>,
}

/// What an event is about, for tracing.
fn event_summary(e: &Event) -> String {
    match e {
        Event::Upsert(r) => format!(
            "upsert {} {}/{}",
            r.resource_type(),
            r.meta.mesh_or_default(),
            r.meta.core_name()
        ),
        Event::Delete {
            resource_type,
            mesh,
            name,
        } => format!("delete {resource_type} {mesh}/{name}"),
        Event::Connected { node, .. } => format!("connected {node}"),
        Event::Disconnected { node } => format!("disconnected {node}"),
        Event::Tick => "tick".into(),
        Event::Batch(events) => format!(
            "batch [{}]",
            events.iter().map(event_summary).collect::<Vec<_>>().join(", ")
        ),
    }
}

impl Reconciler {
    /// Starts the reconcile task over `generator`. Besides events, the task
    /// wakes when a certificate is due for renewal.
    pub fn spawn(mut generator: Generator) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        tokio::spawn(async move {
            let mut deadline: Option<SystemTime> = None;
            loop {
                let first = match deadline {
                    Some(at) => {
                        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                        tokio::select! {
                            event = rx.recv() => match event { Some(e) => e, None => return },
                            () = tokio::time::sleep(wait) => Event::Tick,
                        }
                    }
                    None => match rx.recv().await {
                        Some(e) => e,
                        None => return,
                    },
                };
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                // Generation is CPU work; keep it off the async workers.
                if tracing::enabled!(tracing::Level::TRACE) {
                    for e in &batch {
                        tracing::trace!(event = %event_summary(e), "reconcile event");
                    }
                }
                generator = match tokio::task::spawn_blocking(move || {
                    let report = generator.apply(batch);
                    tracing::debug!(
                        regenerated = report.regenerated.len(),
                        changed = report.changed.len(),
                        "applied a batch of changes"
                    );
                    generator
                })
                .await
                {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!(error = %e, "the reconcile task failed");
                        return;
                    }
                };
                deadline = generator.next_deadline();
            }
        });
        Reconciler {
            events: tx,
            connections: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Sends an event.
    pub fn send(&self, event: Event) {
        // Fails only when the task is gone, i.e. at shutdown.
        let _ = self.events.send(event);
    }
}

/// Held by an xDS stream; the proxy disconnects when its last one drops.
struct ConnectionGuard {
    node: String,
    reconciler: Reconciler,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut conns = self
            .reconciler
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let last = match conns.get_mut(&self.node) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                conns.remove(&self.node);
                true
            }
        };
        drop(conns);
        if last {
            self.reconciler.send(Event::Disconnected {
                node: self.node.clone(),
            });
        }
    }
}

impl Reconciler {
    /// Registers a proxy's stream; the proxy disconnects when the last
    /// returned guard is dropped.
    pub fn connect_node(
        &self,
        node: &envoy_types::pb::envoy::config::core::v3::Node,
    ) -> Result<crate::server::ConnectionGuard, tonic::Status> {
        if parse_node_id(&node.id).is_none() {
            return Err(tonic::Status::invalid_argument(format!(
                "node.id {:?} is not <mesh>.<name>",
                node.id
            )));
        }
        *self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.id.clone())
            .or_default() += 1;
        self.send(Event::Connected {
            node: node.id.clone(),
            metadata: ProxyMetadata::from_node(node),
        });
        Ok(Box::new(ConnectionGuard {
            node: node.id.clone(),
            reconciler: self.clone(),
        }))
    }
}

impl crate::server::ProxyRegistry for Reconciler {
    fn connect<'a>(
        &'a self,
        node: &'a envoy_types::pb::envoy::config::core::v3::Node,
        _metadata: &'a tonic::metadata::MetadataMap,
    ) -> crate::server::ConnectFuture<'a> {
        Box::pin(async move { self.connect_node(node) })
    }
}
