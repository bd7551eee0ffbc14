//! Kuma's dataplane inspection through the proxy's own Envoy
//! (`kumactl inspect dataplane --type stats|clusters|config-dump`), with
//! the real kuma-cp, kuma-dp and Envoy: a proxy at 127.0.0.1 is asked in
//! plaintext on Envoy's admin; a proxy at another address through its admin
//! listener, which serves `/ready` in plaintext and the admin only over TLS
//! to a client certificate of the control plane's Envoy admin CA.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use kuma_e2e::apps::{client, get};
use kuma_e2e::process::{ControlPlane, Kumactl, start_kuma_dp};
use kuma_e2e::{eventually, free_port, temp_dir};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const LIMIT: Duration = Duration::from_secs(60);

const TIMEOUT: &str = "type: MeshTimeout\nmesh: default\nname: everywhere\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 42s\n";

fn dataplane(name: &str, ip: &str, admin: u16) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: {ip}\n  admin:\n    port: {admin}\n  inbound:\n    - port: {}\n      servicePort: {}\n      tags:\n        kuma.io/service: {name}\n",
        free_port(ip),
        free_port(ip),
    )
}

/// The addresses listening on TCP `port` on this host (from
/// `/proc/net/tcp` and `/proc/net/tcp6`), e.g. `127.0.0.1` or `0.0.0.0`.
fn listening_on(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some("0A")) = (fields.get(1), fields.get(3).copied()) else {
                continue;
            };
            let Some((ip, p)) = local.split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            // The kernel prints each 32-bit word in host (little-endian) order.
            let bytes: Vec<u8> = (0..ip.len() / 2)
                .filter_map(|i| u8::from_str_radix(&ip[2 * i..2 * i + 2], 16).ok())
                .collect::<Vec<u8>>()
                .chunks(4)
                .flat_map(|w| w.iter().rev().copied().collect::<Vec<u8>>())
                .collect();
            let address = match <[u8; 4]>::try_from(bytes.as_slice()) {
                Ok(v4) => std::net::IpAddr::from(v4).to_string(),
                Err(_) => match <[u8; 16]>::try_from(bytes.as_slice()) {
                    Ok(v6) => std::net::IpAddr::from(v6).to_string(),
                    Err(_) => continue,
                },
            };
            found.push(address);
        }
    }
    found.sort();
    found.dedup();
    found
}

/// An HTTPS client trusting `ca_pem`, presenting `identity` (cert, key).
fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca"))
        .expect("root");
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_each_proxys_envoy_admin() {
    kuma_e2e::install_crypto();
    let cp = ControlPlane::start(
        "kuma-cp-envoy-admin",
        ControlPlane::env(&BTreeMap::new(), &temp_dir("envoy-admin")),
    )
    .await;
    let kumactl = Kumactl::new(&cp.api());
    kumactl.wait_for_default_mesh().await;
    kumactl.ok(&["apply", "-f", "-"], Some(TIMEOUT));
    let remote_ip = "127.0.42.1";
    let remote_admin = free_port("127.0.0.1");
    let mut proxies = Vec::new();
    let mut tokens = BTreeMap::new();
    for (name, ip, admin) in [
        ("local", "127.0.0.1", free_port("127.0.0.1")),
        ("remote", remote_ip, remote_admin),
    ] {
        let yaml = dataplane(name, ip, admin);
        let token = kumactl.dataplane_token(name);
        proxies.push(start_kuma_dp(
            &format!("kuma-dp-{name}"),
            &cp,
            &yaml,
            &token,
            free_port("127.0.0.1"),
        ));
        tokens.insert(name, token);
    }

    for (name, ip) in [("local", "127.0.0.1"), ("remote", remote_ip)] {
        // Its clusters once the control plane's configuration is in.
        let clusters = eventually(&format!("{name}'s Envoy has its clusters"), LIMIT, || async {
            let out = kumactl.run(&["inspect", "dataplane", name, "--type", "clusters"], None);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (out.status.success() && text.contains("kuma:envoy:admin::"))
                .then_some(text)
                .ok_or_else(|| String::from_utf8_lossy(&out.stderr).to_string())
        })
        .await;
        assert!(clusters.contains("kuma:readiness::"), "{clusters}");
        let stats = kumactl.ok(&["inspect", "dataplane", name, "--type", "stats"], None);
        assert!(stats.contains("server.live: 1"), "{stats}");
        let dump = kumactl.ok(
            &[
                "inspect",
                "dataplane",
                name,
                "--type",
                "config-dump",
                "--include-eds",
            ],
            None,
        );
        let parsed: serde_json::Value = serde_json::from_str(&dump).expect("config dump is JSON");
        let kinds: Vec<&str> = parsed["configs"]
            .as_array()
            .map(|c| c.iter().filter_map(|d| d["@type"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            kinds.contains(&"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump")
                && kinds.contains(&"type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"),
            "{kinds:?}"
        );
        assert!(
            !dump.contains(&tokens[name]),
            "{name}: the dataplane token is shown"
        );
        assert!(dump.contains("[redacted]"), "{name}");
        // Envoy's admin is bound to loopback only: what the proxy's own
        // address shows is the admin listener (`/ready` and mTLS).
        let admin = parsed["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump")
            .map(|c| c["bootstrap"]["admin"]["address"]["socket_address"].clone())
            .unwrap_or_default();
        assert_eq!(admin["address"], "127.0.0.1", "{name}: {admin}");
        let port = u16::try_from(admin["port_value"].as_u64().unwrap_or_default()).expect("port");
        let mut expected = vec!["127.0.0.1".to_string()];
        if ip != "127.0.0.1" {
            expected.insert(0, ip.to_string());
        }
        expected.sort();
        assert_eq!(
            listening_on(port),
            expected,
            "{name}: who listens on the admin port {port}"
        );
        let policies = kumactl.ok(&["inspect", "dataplane", name], None);
        assert!(
            policies.starts_with("Kind") && policies.lines().any(|l| l.starts_with("MeshTimeout")),
            "{policies}"
        );
    }
    let http = client();
    let json = get(
        &http,
        &format!("{}/meshes/default/dataplanes/remote/stats?format=json", cp.api()),
    )
    .await
    .expect("stats as JSON");
    let parsed: serde_json::Value =
        serde_json::from_str(json.trim_start_matches("200 ")).expect("stats JSON");
    assert!(parsed["stats"].is_array(), "{json}");
    let legacy = get(
        &http,
        &format!("{}/meshes/default/dataplanes/remote/policies", cp.api()),
    )
    .await
    .expect("legacy policies");
    let parsed: serde_json::Value =
        serde_json::from_str(legacy.trim_start_matches("200 ")).expect("legacy policies JSON");
    assert_eq!(parsed["kind"], "SidecarDataplane", "{legacy}");
    assert_eq!(parsed["items"][0]["type"], "dataplane", "{legacy}");
    assert!(
        parsed["items"][0]["matchedPolicies"]["MeshTimeout"]
            .as_array()
            .is_some_and(|p| p
                .iter()
                .any(|m| m["name"] == "everywhere" && m["type"] == "MeshTimeout")),
        "{legacy}"
    );

    // The remote proxy's admin listener: `/ready` in plaintext, nothing else.
    let listener = format!("{remote_ip}:{remote_admin}");
    let ready = get(&http, &format!("http://{listener}/ready")).await;
    assert!(matches!(&ready, Ok(r) if r.starts_with("200")), "{ready:?}");
    let stats = get(&http, &format!("http://{listener}/stats")).await;
    assert!(matches!(&stats, Ok(r) if r.starts_with("404")), "{stats:?}");
    // Over TLS, only a client certificate of the control plane's CA.
    let secret = get(
        &http,
        &format!("{}/global-secrets/envoy-admin-ca-default", cp.api()),
    )
    .await
    .expect("the CA secret");
    let secret: serde_json::Value =
        serde_json::from_str(secret.trim_start_matches("200 ")).expect("secret JSON");
    let stored = base64::engine::general_purpose::STANDARD
        .decode(secret["data"].as_str().expect("data"))
        .expect("base64");
    let ca = kuma_xds::admin_tls::ca_from_secret(&stored).expect("the CA");
    let url = format!("https://{listener}/stats");
    let anonymous = tls_client(&ca.cert_pem, None).get(&url).send().await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let stranger_ca = kuma_xds::admin_tls::generate_ca().expect("another CA");
    let (cert, key) = kuma_xds::admin_tls::issue_client(&stranger_ca).expect("stranger");
    let stranger = tls_client(&ca.cert_pem, Some((&cert, &key)))
        .get(&url)
        .send()
        .await;
    assert!(stranger.is_err(), "another CA's client: {stranger:?}");
    let (cert, key) = kuma_xds::admin_tls::issue_client(&ca).expect("client");
    let trusted = tls_client(&ca.cert_pem, Some((&cert, &key)))
        .get(&url)
        .send()
        .await
        .expect("the control plane's CA is accepted");
    assert_eq!(trusted.status().as_u16(), 200);

    for mut proxy in proxies {
        proxy.terminate(Duration::from_secs(30));
    }
}
