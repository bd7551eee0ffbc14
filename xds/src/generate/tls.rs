//! mTLS on the wire: the SDS secrets of a proxy, the server side of its
//! inbounds and the client side of its outbound clusters.

use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext, common_tls_context, secret,
    subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

use crate::admin_tls::{AdminTls, CLIENT_SAN};
use crate::context::{MeshContext, Proxy};
use crate::envoy;
use crate::mtls::{KUMA_ALPN, MeshMtls, ca_secret_name, identity_secret_name, spiffe_id};
use crate::resources::{Origin, Resource, ResourceSet};

/// The transport socket name of TLS.
pub const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// The TLS transport socket with `context` (a downstream or upstream one).
fn tls_socket<M: prost::Message + prost::Name>(context: &M) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(envoy::any(context))),
    }
}

fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(envoy::ads_config_source()),
    }
}

fn uri_san(matcher: string_matcher::MatchPattern) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(matcher),
            ignore_case: false,
        }),
        ..Default::default()
    }
}

fn common(mesh: &str, sans: Vec<SubjectAltNameMatcher>) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(identity_secret_name(mesh))],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: sans,
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(ca_secret_name(mesh))),
                    #[allow(deprecated)]
                    validation_context_certificate_provider: None,
                    #[allow(deprecated)]
                    validation_context_certificate_provider_instance: None,
                },
            ),
        ),
        ..Default::default()
    }
}

/// The server side of an inbound: a client certificate of the mesh is
/// required (any `spiffe://<mesh>/` identity); `params` narrow versions and
/// ciphers (MeshTLS).
pub fn downstream(mesh: &str, params: Option<TlsParameters>) -> TransportSocket {
    let mut common = common(
        mesh,
        vec![uri_san(string_matcher::MatchPattern::Prefix(format!(
            "spiffe://{mesh}/"
        )))],
    );
    common.tls_params = params;
    let context = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(envoy::bool_value(true)),
        ..Default::default()
    };
    tls_socket(&context)
}

/// The client side towards a service whose endpoints hold one of
/// `identities` (`kuma.io/service` values): that exact SPIFFE id is
/// verified, the ALPN `kuma` and Kuma's SNI are sent.
pub fn upstream(mesh: &str, identities: &[String], sni: String) -> TransportSocket {
    let sans = identities
        .iter()
        .map(|service| uri_san(string_matcher::MatchPattern::Exact(spiffe_id(mesh, service))))
        .collect();
    let mut common = common(mesh, sans);
    common.alpn_protocols = vec![KUMA_ALPN.into()];
    let context = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    };
    tls_socket(&context)
}

/// The server side of a proxy's admin listener: its certificate for its
/// address, and a client certificate with the control plane's SAN signed by
/// the admin CA required.
pub fn admin_downstream(admin: &AdminTls) -> TransportSocket {
    let common = CommonTlsContext {
        tls_certificates: vec![TlsCertificate {
            certificate_chain: Some(envoy::inline_string(admin.cert_pem.as_str())),
            private_key: Some(envoy::inline_string(admin.key_pem.as_str())),
            ..Default::default()
        }],
        validation_context_type: Some(common_tls_context::ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(envoy::inline_string(&*admin.ca_pem)),
                match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                    san_type: subject_alt_name_matcher::SanType::Dns as i32,
                    matcher: Some(StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact(CLIENT_SAN.into())),
                        ignore_case: false,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let context = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(envoy::bool_value(true)),
        ..Default::default()
    };
    tls_socket(&context)
}

/// The proxy's SDS secrets: its identity and the trusted CAs.
pub(super) fn generate(proxy: &Proxy<'_>, mesh: &MeshContext, rs: &mut ResourceSet) {
    let (Some(mtls), Some(identity)) = (&mesh.mtls, &proxy.identity) else {
        return;
    };
    rs.add(
        Origin::Secrets,
        Resource::Secret(Secret {
            name: identity_secret_name(&mesh.name),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(envoy::inline_bytes(identity.cert_pem.as_bytes())),
                private_key: Some(envoy::inline_bytes(identity.key_pem.as_bytes())),
                ..Default::default()
            })),
        }),
    );
    rs.add(Origin::Secrets, Resource::Secret(ca_secret(mtls)));
}

fn ca_secret(mtls: &MeshMtls) -> Secret {
    Secret {
        name: ca_secret_name(&mtls.mesh),
        r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(envoy::inline_bytes(mtls.trusted_pem.as_bytes())),
            ..Default::default()
        })),
    }
}
