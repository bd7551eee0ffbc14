//! kuma-cp's ADS endpoint checks dataplane tokens itself (not only
//! `/bootstrap`): a stream without a token, with a forged one, with one
//! for another dataplane, an expired one or a revoked one is refused; a
//! valid one gets configuration.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use kuma_e2e::ads::first_answer;
use kuma_e2e::process::{ControlPlane, Kumactl};
use kuma_e2e::temp_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ads_stream_checks_dataplane_tokens() {
    let cp = ControlPlane::start(
        "kuma-cp-xds-auth",
        ControlPlane::env(&BTreeMap::new(), &temp_dir("xds-auth")),
    )
    .await;
    let kumactl = Kumactl::new(&cp.api());
    kumactl.wait_for_default_mesh().await;
    kumactl.ok(
        &["apply", "-f", "-"],
        Some("type: Dataplane\nmesh: default\nname: web\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: 18080\n      servicePort: 18081\n      tags:\n        kuma.io/service: web\n"),
    );
    let web = kumactl.dataplane_token("web");
    let other = kumactl.dataplane_token("backend");

    let missing = first_answer(&cp, "default.web", None).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated, "{missing:?}");
    let forged = first_answer(&cp, "default.web", Some(&format!("{}x", web.trim())))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::Unauthenticated, "{forged:?}");
    let someone_else = first_answer(&cp, "default.web", Some(&other)).await.unwrap_err();
    assert_eq!(
        someone_else.code(),
        tonic::Code::Unauthenticated,
        "{someone_else:?}"
    );
    assert!(someone_else.message().contains("backend"), "{someone_else:?}");
    let clusters = first_answer(&cp, "default.web", Some(&web))
        .await
        .expect("a valid token gets configuration");
    assert!(clusters > 0);

    // Expired: web's own claims, signed with the mesh's key, an hour past
    // their expiry (beyond the minute of clock skew allowed).
    let http = kuma_e2e::apps::client();
    let key = kuma_e2e::apps::get(
        &http,
        &format!(
            "{}/meshes/default/secrets/dataplane-token-signing-key-default-1",
            cp.api()
        ),
    )
    .await
    .expect("the signing key (loopback is admin)");
    let key: serde_json::Value = serde_json::from_str(key.trim_start_matches("200 ")).expect("secret JSON");
    let pem = STANDARD
        .decode(key["data"].as_str().expect("data"))
        .expect("base64");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("1".into());
    let claims = serde_json::json!({
        "Name": "web", "Mesh": "default", "Tags": {}, "Type": "dataplane",
        "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600, "jti": "expired-1",
    });
    let expired = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("an RSA key"),
    )
    .expect("signed");
    let refused = first_answer(&cp, "default.web", Some(&expired))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("Expired"), "{refused:?}");

    // Revoked: a token that works, then its id in the mesh's revocations.
    let revoked = kumactl.dataplane_token("web");
    first_answer(&cp, "default.web", Some(&revoked))
        .await
        .expect("accepted before it is revoked");
    let payload = revoked.trim().split('.').nth(1).expect("a JWT");
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("claims");
    let jti = payload["jti"].as_str().expect("an id");
    kumactl.ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "type: Secret\nmesh: default\nname: dataplane-token-revocations-default\ndata: {}\n",
            STANDARD.encode(jti)
        )),
    );
    let refused = first_answer(&cp, "default.web", Some(&revoked))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("revoked"), "{refused:?}");
    first_answer(&cp, "default.web", Some(&web))
        .await
        .expect("the other tokens still work");
}
