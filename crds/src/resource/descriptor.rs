//! The table of resource types: names, REST paths, scopes and policy traits.

use std::fmt;
use std::str::FromStr;

/// Whether a resource lives in a mesh or is global.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Not inside a mesh (Mesh itself).
    Global,
    /// Inside one mesh.
    Mesh,
}

/// Facts about a resource type that every layer needs: the store, the REST
/// API, kumactl, the CRDs and policy matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// The kind, e.g. `MeshTimeout`.
    pub name: &'static str,
    /// The REST path segment and kumactl plural, e.g. `meshtimeouts`.
    pub plural: &'static str,
    /// The kumactl singular, e.g. `meshtimeout`.
    pub singular: &'static str,
    /// The short name, e.g. `mt`.
    pub short_name: &'static str,
    /// Global or mesh-scoped.
    pub scope: Scope,
    /// Whether this is a targetRef policy.
    pub is_policy: bool,
    /// Where a policy's plugin runs among the others (ascending).
    pub order: u32,
    /// Whether the policy has `to[]`.
    pub has_to: bool,
    /// Whether the policy has `from[]`.
    pub has_from: bool,
    /// Whether the policy has `rules[]`.
    pub has_rules: bool,
    /// Whether `from[]` entries act as match-less inbound rules.
    pub is_from_as_rules: bool,
    /// Whether the policy has only a top-level `default`.
    pub single_item: bool,
    /// Whether the Universal form is flat (fields beside `type`/`name`)
    /// rather than nested under `spec`.
    pub flat_universal: bool,
    /// Whether it is a `kuma.io` CRD on Kubernetes (secrets are `v1` Secrets).
    pub has_crd: bool,
    /// Whether only the control plane writes it (insights): the API refuses
    /// writes, and configuration does not depend on it. On Kubernetes its
    /// content is the object's `status`, its mesh a top-level `mesh`.
    pub read_only: bool,
    /// Whether the kind has a `status` the control plane keeps beside the
    /// spec (MeshService's VIPs and addresses). Every other kind has none:
    /// a `status` sent with it (Kuma's kumactl sends `status: {}`, kubectl
    /// shows the object's) is server-owned and dropped, never stored.
    pub has_status: bool,
}

const fn resource(
    name: &'static str,
    plural: &'static str,
    singular: &'static str,
    short: &'static str,
    scope: Scope,
) -> Descriptor {
    Descriptor {
        name,
        plural,
        singular,
        short_name: short,
        scope,
        is_policy: false,
        order: 0,
        has_to: false,
        has_from: false,
        has_rules: false,
        is_from_as_rules: false,
        single_item: false,
        flat_universal: false,
        has_crd: true,
        read_only: false,
        has_status: false,
    }
}

/// A policy descriptor: `(to, from, rules, from_as_rules, single_item)`.
const fn policy(
    name: &'static str,
    plural: &'static str,
    singular: &'static str,
    short: &'static str,
    order: u32,
    shape: (bool, bool, bool, bool, bool),
) -> Descriptor {
    let mut d = resource(name, plural, singular, short, Scope::Mesh);
    d.is_policy = true;
    d.order = order;
    d.has_to = shape.0;
    d.has_from = shape.1;
    d.has_rules = shape.2;
    d.is_from_as_rules = shape.3;
    d.single_item = shape.4;
    d
}

macro_rules! resource_types {
    ($($variant:ident => $descriptor:expr,)*) => {
        /// Every resource type this control plane knows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ResourceType {
            $(
                #[doc = concat!("The `", stringify!($variant), "` resource.")]
                $variant,
            )*
        }

        impl ResourceType {
            /// Every type, in declaration order.
            pub const ALL: &'static [ResourceType] = &[$(ResourceType::$variant,)*];

            /// The facts about this type.
            pub fn descriptor(self) -> &'static Descriptor {
                match self {
                    $(ResourceType::$variant => {
                        const D: Descriptor = $descriptor;
                        &D
                    })*
                }
            }
        }
    };
}

// (to, from, rules, from_as_rules, single_item)
resource_types! {
    Mesh => {
        let mut d = resource("Mesh", "meshes", "mesh", "m", Scope::Global);
        d.flat_universal = true;
        d
    },
    Dataplane => {
        let mut d = resource("Dataplane", "dataplanes", "dataplane", "dp", Scope::Mesh);
        d.flat_universal = true;
        d
    },
    Secret => {
        let mut d = resource("Secret", "secrets", "secret", "sec", Scope::Mesh);
        d.flat_universal = true;
        d.has_crd = false;
        d
    },
    GlobalSecret => {
        let mut d = resource("GlobalSecret", "global-secrets", "global-secret", "gsec", Scope::Global);
        d.flat_universal = true;
        d.has_crd = false;
        d
    },
    DataplaneInsight => {
        let mut d = resource("DataplaneInsight", "dataplane-insights", "dataplane-insight", "dpi", Scope::Mesh);
        d.flat_universal = true;
        d.read_only = true;
        d
    },
    MeshService => {
        let mut d = resource("MeshService", "meshservices", "meshservice", "msvc", Scope::Mesh);
        d.has_status = true;
        d
    },
    MeshExternalService => {
        let mut d = resource("MeshExternalService", "meshexternalservices", "meshexternalservice", "extsvc", Scope::Mesh);
        d.has_status = true;
        d
    },
    MeshHTTPRoute => policy("MeshHTTPRoute", "meshhttproutes", "meshhttproute", "mhttpr", 100, (true, false, false, false, false)),
    MeshTCPRoute => policy("MeshTCPRoute", "meshtcproutes", "meshtcproute", "mtcpr", 200, (true, false, false, false, false)),
    MeshTLS => policy("MeshTLS", "meshtlses", "meshtls", "mtls", 300, (false, true, true, true, false)),
    MeshLoadBalancingStrategy => policy("MeshLoadBalancingStrategy", "meshloadbalancingstrategies", "meshloadbalancingstrategy", "mlbs", 400, (true, false, false, false, false)),
    MeshPassthrough => policy("MeshPassthrough", "meshpassthroughs", "meshpassthrough", "mp", 500, (false, false, false, false, true)),
    MeshAccessLog => policy("MeshAccessLog", "meshaccesslogs", "meshaccesslog", "mal", 600, (true, true, true, true, false)),
    MeshTrace => policy("MeshTrace", "meshtraces", "meshtrace", "mtr", 700, (false, false, false, false, true)),
    MeshFaultInjection => policy("MeshFaultInjection", "meshfaultinjections", "meshfaultinjection", "mfi", 800, (true, true, true, false, false)),
    MeshRateLimit => policy("MeshRateLimit", "meshratelimits", "meshratelimit", "mrl", 900, (true, true, true, true, false)),
    MeshTimeout => policy("MeshTimeout", "meshtimeouts", "meshtimeout", "mt", 1000, (true, true, true, true, false)),
    MeshTrafficPermission => policy("MeshTrafficPermission", "meshtrafficpermissions", "meshtrafficpermission", "mtp", 1100, (false, true, true, false, false)),
    MeshHealthCheck => policy("MeshHealthCheck", "meshhealthchecks", "meshhealthcheck", "mhc", 1200, (true, false, false, false, false)),
    MeshCircuitBreaker => policy("MeshCircuitBreaker", "meshcircuitbreakers", "meshcircuitbreaker", "mcb", 1300, (true, true, true, true, false)),
    MeshRetry => policy("MeshRetry", "meshretries", "meshretry", "mr", 1400, (true, false, false, false, false)),
    MeshMetric => policy("MeshMetric", "meshmetrics", "meshmetric", "mm", 1500, (false, false, false, false, true)),
    MeshProxyPatch => policy("MeshProxyPatch", "meshproxypatches", "meshproxypatch", "mpp", 9999, (false, false, false, false, true)),
}

impl ResourceType {
    /// The kind name, e.g. `MeshTimeout`.
    pub fn name(self) -> &'static str {
        self.descriptor().name
    }

    /// Whether this is a targetRef policy.
    pub fn is_policy(self) -> bool {
        self.descriptor().is_policy
    }

    /// Whether only the control plane writes it.
    pub fn is_read_only(self) -> bool {
        self.descriptor().read_only
    }

    /// Whether Envoy configuration depends on it, so the reconciler follows
    /// it: everything but status (insights) and GlobalSecrets (token
    /// signing keys and the like; mesh Secrets hold mTLS CAs).
    pub fn feeds_generation(self) -> bool {
        self != ResourceType::GlobalSecret && !self.is_read_only()
    }

    /// The type whose resource of the same name owns this one (deleting it
    /// deletes this one), beside the mesh that owns everything in it.
    pub fn owner(self) -> Option<ResourceType> {
        match self {
            ResourceType::DataplaneInsight => Some(ResourceType::Dataplane),
            _ => None,
        }
    }

    /// The targetRef policies, in plugin order.
    pub fn policies() -> Vec<ResourceType> {
        let mut list: Vec<_> = Self::ALL.iter().copied().filter(|t| t.is_policy()).collect();
        list.sort_by_key(|t| t.descriptor().order);
        list
    }

    /// The type whose kind, plural, singular or short name is `text`
    /// (case-insensitive), as kumactl and the REST API accept them.
    pub fn lookup(text: &str) -> Option<ResourceType> {
        Self::ALL.iter().copied().find(|t| {
            let d = t.descriptor();
            d.name.eq_ignore_ascii_case(text)
                || d.plural.eq_ignore_ascii_case(text)
                || d.singular.eq_ignore_ascii_case(text)
                || d.short_name.eq_ignore_ascii_case(text)
        })
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text named no known resource type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource type {0:?}")]
pub struct UnknownType(pub String);

impl FromStr for ResourceType {
    type Err = UnknownType;

    /// Only the exact kind name, as written in `type:`/`kind:` fields.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_policies_in_plugin_order() {
        let policies = ResourceType::policies();
        assert_eq!(policies.len(), 16);
        assert_eq!(policies.first(), Some(&ResourceType::MeshHTTPRoute));
        assert_eq!(policies.last(), Some(&ResourceType::MeshProxyPatch));
    }

    #[test]
    fn lookup_by_any_name() {
        assert_eq!(ResourceType::lookup("mt"), Some(ResourceType::MeshTimeout));
        assert_eq!(ResourceType::lookup("meshretries"), Some(ResourceType::MeshRetry));
        assert_eq!(ResourceType::lookup("Dataplane"), Some(ResourceType::Dataplane));
        assert_eq!("MeshTLS".parse::<ResourceType>(), Ok(ResourceType::MeshTLS));
        assert!("meshtls".parse::<ResourceType>().is_err());
    }
}
