//! MeshTLS: per inbound, the TLS versions and ciphers of the mesh's mTLS
//! and whether it is strict or permissive.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{TlsParameters, tls_parameters};
use kuma_crds::policies::mesh_tls::{Conf, Mode as TlsMode, TlsCipher, TlsVersion};
use kuma_crds::resource::ResourceType;

use crate::generate::Policies;
use crate::mtls::Mode;

const T: ResourceType = ResourceType::MeshTLS;

fn version(v: TlsVersion) -> i32 {
    (match v {
        TlsVersion::TLSAuto => tls_parameters::TlsProtocol::TlsAuto,
        TlsVersion::TLS10 => tls_parameters::TlsProtocol::TlSv10,
        TlsVersion::TLS11 => tls_parameters::TlsProtocol::TlSv11,
        TlsVersion::TLS12 => tls_parameters::TlsProtocol::TlSv12,
        TlsVersion::TLS13 => tls_parameters::TlsProtocol::TlSv13,
    }) as i32
}

fn cipher(c: &TlsCipher) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The inbound's mode (MeshTLS over the mesh's) and TLS parameters.
pub fn inbound(policies: &Policies, index: usize, mesh_mode: Mode) -> (Mode, Option<TlsParameters>) {
    let Some(conf) = policies.inbound_typed::<Conf>(T, index) else {
        return (mesh_mode, None);
    };
    let mode = match conf.mode {
        Some(TlsMode::Strict) => Mode::Strict,
        Some(TlsMode::Permissive) => Mode::Permissive,
        None => mesh_mode,
    };
    let params = (conf.tls_version.is_some() || conf.tls_ciphers.is_some()).then(|| TlsParameters {
        tls_minimum_protocol_version: conf
            .tls_version
            .as_ref()
            .and_then(|v| v.min)
            .map(version)
            .unwrap_or_default(),
        tls_maximum_protocol_version: conf
            .tls_version
            .as_ref()
            .and_then(|v| v.max)
            .map(version)
            .unwrap_or_default(),
        cipher_suites: conf.tls_ciphers.iter().flatten().map(cipher).collect(),
        ..Default::default()
    });
    (mode, params)
}
