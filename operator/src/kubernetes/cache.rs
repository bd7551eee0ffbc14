//! Caches of the Kubernetes objects the controllers read (kube-runtime
//! reflectors: list, then watch; each read is from memory).

use std::fmt::Debug;
use std::hash::Hash;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Keeps a cache of every object `api` lists, for as long as the returned
/// task runs; the store is ready once the first listing is in.
pub fn cache<K>(api: Api<K>, dyntype: K::DynamicType) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let (store, task, _) = watched(api, dyntype, false);
    (store, task)
}

/// A cache as [`cache`] keeps, and the stream of the objects it has taken in
/// (applied or deleted), each yielded only once the store holds it: a
/// controller triggered by this stream (`Controller::watches_stream`) reads
/// the cache at least as new as the trigger. A second watch of the same kind
/// (`Controller::watches`) would race this cache, and a reconciliation could
/// read the object as it was before the change that triggered it, then wait
/// for a change that has already happened.
pub fn cache_with_changes<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
) -> (
    Store<K>,
    tokio::task::JoinHandle<()>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let (store, task, changes) = watched(api, dyntype, true);
    (store, task, changes.map(Ok))
}

fn watched<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    with_changes: bool,
) -> (Store<K>, tokio::task::JoinHandle<()>, UnboundedReceiverStream<K>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let mut writer = reflector::store::Writer::new(dyntype.clone());
    let reader = writer.as_reader();
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = with_changes.then_some(tx);
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(prune::<K>);
    let store = reader.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        // A re-listing replaces the store at its end: its objects, and those
        // it may have dropped (deleted while the watch was down), are changes
        // once it is complete.
        let mut relisted: Vec<K> = Vec::new();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::debug!(error = %e, "cache watch interrupted; it re-lists");
                    continue;
                }
            };
            // An update is a change of the object as it was, too (a Service
            // whose selector changed concerns the Pods it selected before).
            let before = match (&tx, &event) {
                (Some(_), watcher::Event::Apply(o)) => {
                    store.get(&ObjectRef::from_obj_with(o, dyntype.clone()))
                }
                _ => None,
            };
            writer.apply_watcher_event(&event);
            let Some(tx) = &tx else { continue };
            let changed = match event {
                watcher::Event::Apply(o) => before.map(|b| (*b).clone()).into_iter().chain([o]).collect(),
                watcher::Event::Delete(o) => vec![o],
                watcher::Event::Init => {
                    relisted = store.state().iter().map(|o| (**o).clone()).collect();
                    Vec::new()
                }
                watcher::Event::InitApply(o) => {
                    relisted.push(o);
                    Vec::new()
                }
                watcher::Event::InitDone => std::mem::take(&mut relisted),
            };
            for object in changed {
                // A closed channel: the controller is gone; the cache stays
                // for other readers.
                let _ = tx.send(object);
            }
        }
    });
    (reader, task, UnboundedReceiverStream::new(rx))
}

/// Drops what no controller reads and every object carries: the API
/// server's record of which manager set which field (`managedFields`, a
/// few KiB per object that a cache of 10,000 Pods holds 10,000 times).
/// Writes never send it back: they are made from scratch, or patches.
pub fn prune<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// The objects of `store` in `namespace` (a Namespace's change reaches
/// the objects in it).
pub fn in_namespace<K>(store: &Store<K>, namespace: &Namespace) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let name = namespace.metadata.name.as_deref();
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == name)
        .map(|o| ObjectRef::from_obj(&*o))
        .collect()
}
