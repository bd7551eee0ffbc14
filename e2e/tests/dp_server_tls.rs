//! kuma-dp trusts the control plane as Kuma's kuma-dp does. The TLS setups
//! Kuma users run: Kuma's default dp-server certificate (self-signed,
//! CA:TRUE, handed to kuma-dp as its own CA) and a CA with a CA:FALSE leaf.
//! Every refusal names why. First real handshakes against each setup, then
//! the real kuma-cp, kuma-dp and Envoy carrying traffic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kuma_dp::cp_tls::client_config;
use kuma_e2e::apps::{client, get, http_app};
use kuma_e2e::certs::{CertAndKey, Spec, self_signed, signed_by};
use kuma_e2e::process::{ControlPlane, Kumactl, start_kuma_dp_trusting};
use kuma_e2e::{eventually, free_port, temp_dir};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const LIMIT: Duration = Duration::from_secs(60);

fn kuma_default(names: &[&str]) -> CertAndKey {
    self_signed(&Spec {
        common_name: "kuma-control-plane",
        names,
        is_ca: true,
        expired: false,
    })
}

fn ca(name: &str) -> CertAndKey {
    self_signed(&Spec {
        common_name: name,
        names: &[],
        is_ca: true,
        expired: false,
    })
}

fn leaf(ca: &CertAndKey) -> CertAndKey {
    signed_by(
        &Spec {
            common_name: "kuma-control-plane",
            names: &["127.0.0.1", "localhost"],
            is_ca: false,
            expired: false,
        },
        ca,
    )
}

/// A TLS handshake with a server presenting `served`, trusting `trusted`
/// (PEM) as kuma-dp does: `Ok` or the error kuma-dp would log.
async fn handshake(served: &CertAndKey, trusted: &str) -> Result<(), String> {
    kuma_e2e::install_crypto();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(served.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("served certificate");
    let key = PrivateKeyDer::from_pem_slice(served.key_pem.as_bytes()).expect("served key");
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        // The server's view does not matter: the client decides.
        let _ = acceptor.accept(tcp).await;
    });
    let config = client_config(trusted.as_bytes(), "ca.crt").map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let result = connector
        .connect(name, tcp)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let _ = served.await;
    result
}

#[tokio::test]
async fn kuma_dp_trusts_what_the_user_named_and_says_why_it_refuses() {
    let kuma = kuma_default(&["127.0.0.1", "localhost"]);
    let root = ca("mesh-root");
    let signed = leaf(&root);
    let other_root = ca("other-root");
    let elsewhere = kuma_default(&["cp.example"]);
    let expired = self_signed(&Spec {
        common_name: "kuma-control-plane",
        names: &["127.0.0.1"],
        is_ca: true,
        expired: true,
    });
    let both = format!("{}{}", other_root.cert_pem, kuma.cert_pem);

    // (case, served, trusted PEM, expected: Ok or a part of the error)
    let cases: Vec<(&str, &CertAndKey, &str, Result<(), &str>)> = vec![
        (
            "Kuma's default: self-signed CA:TRUE, named",
            &kuma,
            &kuma.cert_pem,
            Ok(()),
        ),
        ("named among other CAs", &kuma, &both, Ok(())),
        (
            "CA-signed CA:FALSE leaf, CA named",
            &signed,
            &root.cert_pem,
            Ok(()),
        ),
        (
            "CA-signed leaf, another CA named",
            &signed,
            &other_root.cert_pem,
            Err("subject \"CN=kuma-control-plane\", issuer \"CN=mesh-root\", CA:FALSE"),
        ),
        (
            "CA-signed leaf, another CA named: the cause",
            &signed,
            &other_root.cert_pem,
            Err("UnknownIssuer"),
        ),
        (
            "self-signed CA:TRUE, not named",
            &kuma,
            &other_root.cert_pem,
            Err("trusted only when it is itself in the CA file"),
        ),
        (
            "named, but for another host",
            &elsewhere,
            &elsewhere.cert_pem,
            Err("NotValidForName"),
        ),
        ("named, but expired", &expired, &expired.cert_pem, Err("Expired")),
        (
            "a bundle with no certificate",
            &kuma,
            "not a PEM",
            Err("ca.crt holds no PEM certificate"),
        ),
    ];
    for (case, served, trusted, expected) in cases {
        let got = handshake(served, trusted).await;
        match (expected, &got) {
            (Ok(()), Ok(())) => {}
            (Err(part), Err(message)) if message.contains(part) => {
                assert!(
                    part.starts_with("ca.crt") || message.contains("is not trusted with the CA in ca.crt"),
                    "{case}: {message}"
                );
            }
            _ => panic!("{case}: expected {expected:?}, got {got:?}"),
        }
    }
}

/// kuma-cp with `cert` as its dp-server certificate.
async fn control_plane_serving(name: &str, cert: &CertAndKey) -> ControlPlane {
    let dir = temp_dir(name);
    let cert_file = dir.join("tls.crt");
    let key_file = dir.join("tls.key");
    std::fs::write(&cert_file, &cert.cert_pem).expect("write cert");
    std::fs::write(&key_file, &cert.key_pem).expect("write key");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let mut env = ControlPlane::env(&BTreeMap::new(), &work);
    env.insert(
        "KUMA_GENERAL_TLS_CERT_FILE".into(),
        cert_file.display().to_string(),
    );
    env.insert("KUMA_GENERAL_TLS_KEY_FILE".into(), key_file.display().to_string());
    ControlPlane::start(name, env).await
}

/// A Dataplane for an app on `ip`, served through Envoy's inbound: the URL.
async fn dataplane(ip: &str, name: &'static str) -> (String, String) {
    let app_port = http_app(ip, name).await;
    let admin = free_port("127.0.0.1");
    let inbound = free_port(ip);
    let yaml = format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: {ip}\n  admin:\n    port: {admin}\n  inbound:\n    - port: {inbound}\n      servicePort: {app_port}\n      tags:\n        kuma.io/service: {name}\n        kuma.io/protocol: http\n"
    );
    (yaml, format!("http://{ip}:{inbound}/"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuma_dp_and_envoy_reach_a_control_plane_with_either_certificate_setup() {
    let kuma = kuma_default(&["127.0.0.1", "localhost"]);
    let root = ca("mesh-root");
    let setups = [
        ("kuma-default", trusted_file(&kuma), kuma, "127.0.33.1"),
        ("ca-signed", trusted_file(&root), leaf(&root), "127.0.33.2"),
    ];
    for (name, trusted, served, ip) in &setups {
        let cp = control_plane_serving(&format!("kuma-cp-{name}"), served).await;
        let kumactl = Kumactl::new(&cp.api());
        kumactl.wait_for_default_mesh().await;
        let token = kumactl.dataplane_token("app");
        let (yaml, url) = dataplane(ip, "app").await;
        let dp = start_kuma_dp_trusting(
            &format!("kuma-dp-{name}"),
            &cp,
            &yaml,
            &token,
            free_port("127.0.0.1"),
            trusted,
        );
        eventually(&format!("{name}: traffic through Envoy"), LIMIT, || async {
            let r = get(&client(), &url).await?;
            (r == "200 app").then_some(()).ok_or(r)
        })
        .await;
        drop(dp);

        // The same control plane, a CA that did not sign it: kuma-dp keeps
        // retrying and says why, naming the certificate.
        let stranger = trusted_file(&ca("stranger"));
        let (yaml, _) = dataplane(ip, "refused").await;
        let refused = start_kuma_dp_trusting(
            &format!("kuma-dp-{name}-refused"),
            &cp,
            &yaml,
            &kumactl.dataplane_token("refused"),
            free_port("127.0.0.1"),
            &stranger,
        );
        eventually(&format!("{name}: kuma-dp says why it refuses"), LIMIT, || async {
            let log = refused.log();
            let reason = format!(
                "the control plane's certificate (subject \"CN=kuma-control-plane\", issuer \"CN={}\"",
                if *name == "kuma-default" {
                    "kuma-control-plane"
                } else {
                    "mesh-root"
                }
            );
            (log.contains(&reason) && log.contains("is not trusted with the CA in"))
                .then_some(())
                .ok_or(log)
        })
        .await;
    }
}

/// `cert`'s PEM in a file of its own, as users hand it to kuma-dp.
fn trusted_file(cert: &CertAndKey) -> std::path::PathBuf {
    let file = temp_dir("trusted-ca").join("ca.crt");
    std::fs::write(&file, &cert.cert_pem).expect("write CA");
    file
}
