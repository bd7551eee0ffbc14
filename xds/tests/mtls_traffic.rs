//! Mesh mTLS with real Envoys: traffic is mutually authenticated,
//! plaintext reaches a STRICT inbound only when PERMISSIVE, MeshTrafficPermission
//! denies (403 for HTTP, a closed connection for TCP) and allows again
//! without restarts, and short-lived certificates and a CA rotation cause
//! no failed request.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use base64::Engine;
use kuma_crds::resource::ResourceType;
use kuma_xds::mtls::{builtin_secret_names, generate_ca};
use support::cp::*;
use support::http;
use support::load::{Load, Probe};

fn mesh(backends: &[&str], enabled: &str, mode: &str, expiration: &str) -> String {
    let list: String = backends
        .iter()
        .map(|b| format!("    - name: {b}\n      type: builtin\n      mode: {mode}\n      dpCert:\n        rotation:\n          expiration: {expiration}\n"))
        .collect();
    format!("type: Mesh\nname: default\nmtls:\n  enabledBackend: {enabled}\n  backends:\n{list}")
}

/// The CA secrets of a builtin backend, as the control plane creates them.
fn ca_secrets(backend: &str) -> Vec<String> {
    let ca = generate_ca("default", backend, Duration::from_secs(3600)).expect("CA");
    let (cert, key) = builtin_secret_names("default", backend);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        format!(
            "type: Secret\nmesh: default\nname: {cert}\ndata: {}\n",
            b64(&ca.cert_pem)
        ),
        format!(
            "type: Secret\nmesh: default\nname: {key}\ndata: {}\n",
            b64(&ca.key_pem)
        ),
    ]
}

const ALLOW_ALL: &str = "type: MeshTrafficPermission\nmesh: default\nname: allow-all\nspec:\n  targetRef:\n    kind: Mesh\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        action: Allow\n";

fn deny_web(service: &str) -> String {
    format!(
        "type: MeshTrafficPermission\nmesh: default\nname: deny-web-{service}\nspec:\n  targetRef:\n    kind: MeshService\n    name: {service}\n  from:\n    - targetRef:\n        kind: MeshService\n        name: web\n      default:\n        action: Deny\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_permissions_and_rotation_with_real_envoys() {
    let ip = |host: u8| format!("127.0.5.{host}");
    let cp = ControlPlane::start().await;
    for s in ca_secrets("ca-1") {
        cp.apply(&s);
    }
    cp.apply(&mesh(&["ca-1"], "ca-1", "STRICT", "1h"));
    cp.apply(ALLOW_ALL);

    let app = start_http_app(&ip(2), "backend", Arc::new(AtomicU64::new(0))).await;
    let echo = start_echo_app(&ip(3)).await;
    let (web_admin, backend_admin, db_admin) = (
        free_port("127.0.0.1").await,
        free_port("127.0.0.1").await,
        free_port("127.0.0.1").await,
    );
    let (backend_out, db_out, inbound) = (
        free_port(&ip(1)).await,
        free_port(&ip(1)).await,
        free_port(&ip(2)).await,
    );
    let db_inbound = free_port(&ip(3)).await;
    cp.apply(&dataplane(
        "web",
        &ip(1),
        web_admin,
        &format!("    - port: {}\n      servicePort: 1\n      tags:\n        kuma.io/service: web\n        kuma.io/protocol: http\n", free_port(&ip(1)).await),
        &format!(
            "    - port: {backend_out}\n      address: {}\n      tags:\n        kuma.io/service: backend\n    - port: {db_out}\n      address: {}\n      tags:\n        kuma.io/service: db\n",
            ip(1),
            ip(1)
        ),
    ));
    cp.apply(&dataplane(
        "backend",
        &ip(2),
        backend_admin,
        &format!("    - port: {inbound}\n      servicePort: {app}\n      tags:\n        kuma.io/service: backend\n        kuma.io/protocol: http\n        version: v1\n"),
        "    []\n",
    ));
    cp.apply(&dataplane(
        "db",
        &ip(3),
        db_admin,
        &format!("    - port: {db_inbound}\n      servicePort: {echo}\n      tags:\n        kuma.io/service: db\n        kuma.io/protocol: tcp\n"),
        "    []\n",
    ));
    let web = start_envoy(&cp, "web", false, web_admin).await;
    let backend = start_envoy(&cp, "backend", true, backend_admin).await;
    let db = start_envoy(&cp, "db", false, db_admin).await;
    let all = [&web, &backend, &db];
    let http_addr = format!("{}:{backend_out}", ip(1));
    let tcp_addr = format!("{}:{db_out}", ip(1));
    let direct = format!("{}:{inbound}", ip(2));

    // Mutually authenticated traffic, HTTP and TCP.
    eventually("HTTP over mTLS", || async {
        let r = http::get(&http_addr, "/").await.map_err(|e| e.to_string())?;
        (r.status == 200 && r.body == "backend")
            .then_some(())
            .ok_or(format!("{} {}", r.status, r.body))
    })
    .await;
    assert_eq!(
        eventually("TCP over mTLS", || echo_through(&tcp_addr, "over tls")).await,
        "over tls"
    );
    let certs = http::get(&backend.admin, "/certs").await.expect("certs").body;
    for san in [
        "spiffe://default/backend",
        "kuma://kuma.io/service/backend",
        "kuma://version/v1",
    ] {
        assert!(
            certs.contains(san),
            "{san} missing from Envoy's certificates: {certs}"
        );
    }

    // STRICT refuses plaintext; PERMISSIVE accepts it.
    assert!(
        http::get(&direct, "/").await.is_err(),
        "plaintext reached a STRICT inbound"
    );
    cp.apply(&mesh(&["ca-1"], "ca-1", "PERMISSIVE", "1h"));
    eventually("PERMISSIVE accepts plaintext", || async {
        let r = http::get(&direct, "/").await.map_err(|e| e.to_string())?;
        (r.status == 200).then_some(()).ok_or(format!("{}", r.status))
    })
    .await;
    cp.apply(&mesh(&["ca-1"], "ca-1", "STRICT", "1h"));
    eventually("STRICT again", || async {
        http::get(&direct, "/")
            .await
            .is_err()
            .then_some(())
            .ok_or("accepted".to_string())
    })
    .await;

    // MeshTrafficPermission: 403 for HTTP, a closed connection for TCP,
    // and traffic back once the denial is gone.
    cp.apply(&deny_web("backend"));
    cp.apply(&deny_web("db"));
    eventually("HTTP denied", || async {
        let r = http::get(&http_addr, "/").await.map_err(|e| e.to_string())?;
        (r.status == 403)
            .then_some(())
            .ok_or(format!("{} {}", r.status, r.body))
    })
    .await;
    eventually("TCP denied", || async {
        match echo_through(&tcp_addr, "ping").await {
            Ok(r) => Err(format!("echoed {r:?}")),
            Err(_) => Ok(()),
        }
    })
    .await;
    cp.delete(ResourceType::MeshTrafficPermission, "deny-web-backend");
    cp.delete(ResourceType::MeshTrafficPermission, "deny-web-db");
    eventually("HTTP allowed again", || async {
        let r = http::get(&http_addr, "/").await.map_err(|e| e.to_string())?;
        (r.status == 200).then_some(()).ok_or(format!("{}", r.status))
    })
    .await;
    eventually("TCP allowed again", || echo_through(&tcp_addr, "ping")).await;
    for e in all {
        e.wait_acked(&cp).await;
    }

    // Certificates living seconds rotate repeatedly under load.
    let regenerations = |node: &str| cp.certs.lock().unwrap().get(node).map_or(0, |c| c.regenerations);
    let before = regenerations("default.backend");
    let load = Load::start(vec![
        Probe::Http(http_addr.clone()),
        Probe::HttpKeepAlive(http_addr.clone()),
        Probe::Tcp(tcp_addr.clone()),
    ]);
    cp.apply(&mesh(&["ca-1"], "ca-1", "STRICT", "4s"));
    eventually("three rotations", || async {
        let n = regenerations("default.backend");
        (n >= before + 3)
            .then_some(())
            .ok_or(format!("{n} certificates so far"))
    })
    .await;
    load.finish("certificate rotation").await;

    // CA rotation: add ca-2, sign with it, retire ca-1.
    let load = Load::start(vec![
        Probe::Http(http_addr.clone()),
        Probe::HttpKeepAlive(http_addr.clone()),
        Probe::Tcp(tcp_addr.clone()),
    ]);
    for s in ca_secrets("ca-2") {
        cp.apply(&s);
    }
    cp.apply(&mesh(&["ca-1", "ca-2"], "ca-1", "STRICT", "1h"));
    for e in all {
        e.wait_acked(&cp).await;
    }
    cp.apply(&mesh(&["ca-1", "ca-2"], "ca-2", "STRICT", "1h"));
    for e in all {
        e.wait_acked(&cp).await;
    }
    // Signing with ca-2 changes no cluster or listener, only the proxies'
    // certificates: wait for every proxy to hold one before ca-1 goes.
    eventually("every proxy has a ca-2 certificate", || async {
        let certs = cp.certs.lock().unwrap();
        all.iter()
            .all(|e| certs.get(&e.node).is_some_and(|c| c.backend == "ca-2"))
            .then_some(())
            .ok_or_else(|| "waiting".to_string())
    })
    .await;
    for e in all {
        e.wait_acked(&cp).await;
    }
    cp.apply(&mesh(&["ca-2"], "ca-2", "STRICT", "1h"));
    for e in all {
        e.wait_acked(&cp).await;
    }
    // Keep the load going a little longer on the final configuration.
    load.more(20).await;
    load.finish("CA rotation").await;
    assert_eq!(cp.nacks(), 0, "Envoy rejected a configuration");
}

/// A `provided` backend: the user's own CA, from a Secret (certificate)
/// and inline data (key), signs the proxies' certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provided_ca_signs_the_proxies() {
    let ip = |host: u8| format!("127.0.9.{host}");
    let cp = ControlPlane::start().await;
    let ca = generate_ca("default", "my-ca", Duration::from_secs(3600)).expect("CA");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    cp.apply(&format!(
        "type: Secret\nmesh: default\nname: my-ca-cert\ndata: {}\n",
        b64(&ca.cert_pem)
    ));
    cp.apply(&format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: my-ca\n  backends:\n    - name: my-ca\n      type: provided\n      conf:\n        cert:\n          secret: my-ca-cert\n        key:\n          inline: {}\n",
        b64(&ca.key_pem)
    ));
    cp.apply(ALLOW_ALL);
    let app = start_http_app(&ip(2), "backend", Arc::new(AtomicU64::new(0))).await;
    let (web_admin, backend_admin) = (free_port("127.0.0.1").await, free_port("127.0.0.1").await);
    let (out, inbound) = (free_port(&ip(1)).await, free_port(&ip(2)).await);
    cp.apply(&dataplane(
        "web",
        &ip(1),
        web_admin,
        &format!("    - port: {}\n      servicePort: 1\n      tags:\n        kuma.io/service: web\n        kuma.io/protocol: http\n", free_port(&ip(1)).await),
        &format!("    - port: {out}\n      address: {}\n      tags:\n        kuma.io/service: backend\n", ip(1)),
    ));
    cp.apply(&dataplane(
        "backend",
        &ip(2),
        backend_admin,
        &format!("    - port: {inbound}\n      servicePort: {app}\n      tags:\n        kuma.io/service: backend\n        kuma.io/protocol: http\n"),
        "    []\n",
    ));
    let _web = start_envoy(&cp, "web", false, web_admin).await;
    let backend = start_envoy(&cp, "backend", true, backend_admin).await;
    let addr = format!("{}:{out}", ip(1));
    eventually("HTTP over mTLS with the provided CA", || async {
        let r = http::get(&addr, "/").await.map_err(|e| e.to_string())?;
        (r.status == 200 && r.body == "backend")
            .then_some(())
            .ok_or(format!("{} {}", r.status, r.body))
    })
    .await;
    assert!(
        http::get(&format!("{}:{inbound}", ip(2)), "/").await.is_err(),
        "plaintext reached a STRICT inbound"
    );
    // The proxy's certificate chains to the provided CA.
    let certs = http::get(&backend.admin, "/certs").await.expect("certs").body;
    let ca_serial = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes())
        .expect("pem")
        .1
        .parse_x509()
        .expect("x509")
        .raw_serial_as_string()
        .replace(':', "");
    assert!(
        certs.to_lowercase().contains(&ca_serial.to_lowercase()),
        "the provided CA ({ca_serial}) is not among Envoy's certificates: {certs}"
    );
}
