//! Counts the requests kuma-cp's own Kubernetes client sends, by verb
//! (`kuma_cp_kube_api_requests_total{verb}` on `/metrics`). The API
//! server's own metrics cannot tell kuma-cp from kubectl or the
//! controller manager; this is what "API requests made" means in the
//! Kubernetes benchmark, and what an operator watches to see the control
//! plane's load on a cluster.

use http::{Method, Request};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The verb of one request, as the API server's audit log names them
/// (a list is a `get` of a collection: the path alone cannot tell them
/// apart without knowing every resource's scope).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: &'static str,
}

/// The counters, shared by every clone of the client.
#[derive(Clone, Debug, Default)]
pub struct ApiRequests {
    by_verb: Family<VerbLabel, Counter>,
}

impl ApiRequests {
    /// A client for `config` whose every request is counted.
    pub fn client(&self, config: kube::Config) -> Result<kube::Client, kube::Error> {
        let by_verb = self.by_verb.clone();
        let count = tower::util::MapRequestLayer::new(move |request: Request<kube::client::Body>| {
            by_verb
                .get_or_create(&VerbLabel {
                    verb: verb(request.method(), request.uri().query()),
                })
                .inc();
            request
        });
        Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&count)
            .build())
    }

    /// Registers `kuma_cp_kube_api_requests_total`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "kuma_cp_kube_api_requests",
            "Requests kuma-cp's Kubernetes client sent to the API server, by verb",
            self.by_verb.clone(),
        );
    }
}

/// `watch` for a GET asking to watch, else the method in lower case.
fn verb(method: &Method, query: Option<&str>) -> &'static str {
    let watching = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    match *method {
        Method::GET if watching => "watch",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_method_and_watch_parameter() {
        let cases = [
            (Method::GET, None, "get"),
            (Method::GET, Some("labelSelector=a%3Db&limit=500"), "get"),
            (Method::GET, Some("watch=true&resourceVersion=12"), "watch"),
            (Method::GET, Some("allowWatchBookmarks=true&watch=1"), "watch"),
            (Method::GET, Some("watchy=true"), "get"),
            (Method::POST, None, "create"),
            (Method::PUT, None, "update"),
            (Method::PATCH, Some("fieldManager=kuma-cp"), "patch"),
            (Method::DELETE, None, "delete"),
            (Method::OPTIONS, None, "other"),
        ];
        for (method, query, expected) in cases {
            assert_eq!(verb(&method, query), expected, "{method} {query:?}");
        }
    }
}
