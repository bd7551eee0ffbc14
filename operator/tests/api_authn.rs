//! The REST API's users: with `localhostIsAdmin` off, callers are who
//! their user token says; secrets and token issuing are for admins, a
//! forged, expired or revoked token is refused, and the bootstrapped admin
//! token opens everything. Browsers get CORS only from allowed origins.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::sync::Arc;

use kuma_crds::format::parse;
use kuma_operator::api::{ApiState, router};
use kuma_operator::config::Config;
use kuma_operator::insights::Insights;
use kuma_operator::store::{ResourceKey, Store};
use kuma_operator::tokens::{ADMIN_USER_TOKEN, Tokens, USER_REVOCATIONS};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// An API on a loopback port where loopback is not admin.
async fn serve(store: Store) -> String {
    serve_with(store, |_| {}).await
}

async fn serve_with(store: Store, configure: impl FnOnce(&mut Config)) -> String {
    let mut config = Config::default();
    config.api_server.authn.localhost_is_admin = false;
    configure(&mut config);
    let state = Arc::new(ApiState {
        store: store.clone(),
        tokens: Tokens::new(store),
        insights: Arc::new(Insights::new(None, 2)),
        snapshots: Arc::new(kuma_xds::snapshot::SnapshotCache::new()),
        config,
        instance_id: "test".into(),
        cluster_id: "test".into(),
        admission: kuma_crds::admission::Context::new(kuma_crds::admission::Environment::Universal),
        envoy_admin: kuma_operator::envoy_admin::EnvoyAdmin::new(
            &kuma_xds::admin_tls::generate_ca().expect("admin CA"),
        )
        .expect("admin client"),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}")
}

/// A memory store with the mesh `default`.
async fn store_with_default_mesh() -> Store {
    let store = Store::memory();
    store
        .create(parse("type: Mesh\nname: default").unwrap())
        .await
        .expect("mesh");
    store
}

/// The text of a GlobalSecret.
async fn secret_text(store: &Store, name: &str) -> String {
    let r = store
        .get(&ResourceKey::new(
            kuma_crds::resource::ResourceType::GlobalSecret,
            "",
            name,
        ))
        .await
        .expect("secret");
    match r.spec {
        kuma_crds::resource::Spec::GlobalSecret(s) => String::from_utf8(s.bytes()).expect("utf-8"),
        other => panic!("not a global secret: {other:?}"),
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut r = http.request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let response = r.send().await.expect("request");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn user_tokens_decide_who_may_do_what() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = store_with_default_mesh().await;
    let api = serve(store.clone()).await;
    let http = reqwest::Client::new();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    // Without a token: ordinary resources yes, secrets and tokens no.
    let (status, _) = call(&http, get.clone(), &format!("{api}/meshes"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&http, get.clone(), &format!("{api}/global-secrets"), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("mesh-system:anonymous/mesh-system:unauthenticated"),
        "{body}"
    );

    // The leader's bootstrapped admin token.
    let tokens = Tokens::new(store.clone());
    assert!(tokens.bootstrap_admin_token().await.expect("bootstrap"));
    assert!(!tokens.bootstrap_admin_token().await.expect("bootstrap again"));
    let admin = secret_text(&store, ADMIN_USER_TOKEN).await;
    let (status, body) = call(&http, get.clone(), &format!("{api}/who-am-i"), Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let me: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(me["name"], "mesh-system:admin");
    let (status, _) = call(
        &http,
        get.clone(),
        &format!("{api}/global-secrets"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The admin issues a token for a non-admin user; bad requests name
    // their fields.
    let users = format!("{api}/tokens/user");
    let (status, body) = call(
        &http,
        post.clone(),
        &users,
        Some(&admin),
        Some(json!({"groups": ["team-a"]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let fields: Vec<String> = serde_json::from_str::<Value>(&body).expect("json")["invalid_parameters"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["field"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(fields, ["name", "validFor"], "{body}");
    let request = json!({"name": "alice", "groups": ["team-a"], "validFor": "1h"});
    let (status, alice) = call(&http, post.clone(), &users, Some(&admin), Some(request.clone())).await;
    assert_eq!(status, StatusCode::OK, "{alice}");

    let (status, body) = call(&http, get.clone(), &format!("{api}/who-am-i"), Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    let me: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        me,
        json!({"name": "alice", "groups": ["team-a", "mesh-system:authenticated"]})
    );
    let (status, _) = call(
        &http,
        get.clone(),
        &format!("{api}/meshes/default"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &http,
        get.clone(),
        &format!("{api}/global-secrets"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("alice/team-a,mesh-system:authenticated"), "{body}");
    let (status, _) = call(&http, post.clone(), &users, Some(&alice), Some(request.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "alice may not issue tokens");
    let dp_request = json!({"name": "web", "mesh": "default", "validFor": "1h"});
    let (status, _) = call(
        &http,
        post.clone(),
        &format!("{api}/tokens/dataplane"),
        Some(&alice),
        Some(dp_request),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A forged token is refused outright, not downgraded to anonymous.
    let forged = format!("{}x", alice.trim_end());
    let (status, body) = call(&http, get.clone(), &format!("{api}/meshes"), Some(&forged), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Revoking alice's token (its id in `user-token-revocations`).
    let payload = alice.split('.').nth(1).expect("payload");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims");
    let revocations = json!({"type": "GlobalSecret", "name": USER_REVOCATIONS,
        "data": STANDARD.encode(claims["jti"].as_str().expect("jti"))});
    let (status, body) = call(
        &http,
        reqwest::Method::PUT,
        &format!("{api}/global-secrets/{USER_REVOCATIONS}"),
        Some(&admin),
        Some(revocations),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, _) = call(&http, get.clone(), &format!("{api}/meshes"), Some(&alice), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked token is refused");
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let preflight = |api: String, origin: &'static str| {
        let http = http.clone();
        async move {
            let r = http
                .request(reqwest::Method::OPTIONS, format!("{api}/meshes"))
                .header("origin", origin)
                .header("access-control-request-method", "PUT")
                .send()
                .await
                .expect("preflight");
            r.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap_or_default().to_string())
        }
    };
    let closed = serve(Store::memory()).await;
    assert_eq!(
        preflight(closed, "http://gui.local").await,
        None,
        "off by default"
    );
    let open = serve_with(Store::memory(), |c| {
        c.api_server.cors_allowed_domains = vec!["http://gui.local".into()];
    })
    .await;
    assert_eq!(
        preflight(open.clone(), "http://gui.local").await.as_deref(),
        Some("http://gui.local")
    );
    assert_eq!(preflight(open, "http://elsewhere.local").await, None);
}

#[tokio::test]
async fn a_revoked_dataplane_token_is_refused() {
    let store = store_with_default_mesh().await;
    let tokens = Tokens::new(store.clone());
    let token = tokens
        .issue("default", "web", Default::default(), "dataplane", None)
        .await
        .expect("issue");
    let claims = tokens.verify(&token, "default", "web").await.expect("valid");
    let list = parse(&format!(
        "type: Secret\nmesh: default\nname: dataplane-token-revocations-default\ndata: {}\n",
        STANDARD.encode(format!("other-id,{}", claims.registered.jti))
    ))
    .expect("secret");
    store.create(list).await.expect("revocations");
    assert!(matches!(
        tokens.verify(&token, "default", "web").await,
        Err(kuma_operator::tokens::TokenError::Revoked(_))
    ));
}

#[tokio::test]
async fn access_lists_decide_who_reads_secrets() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = store_with_default_mesh().await;
    let api = serve_with(store.clone(), |c| {
        c.access.static_lists.admin_resources.groups = vec!["team-a".into()];
        c.access.static_lists.view_config_dump.groups.clear();
    })
    .await;
    let tokens = Tokens::new(store.clone());
    let alice = tokens
        .issue_user(
            "alice",
            &["team-a".to_string()],
            std::time::Duration::from_secs(600),
        )
        .await
        .expect("alice");
    let bob = tokens
        .issue_user(
            "bob",
            &["team-b".to_string()],
            std::time::Duration::from_secs(600),
        )
        .await
        .expect("bob");
    let http = reqwest::Client::new();
    let secrets = format!("{api}/global-secrets");
    let (status, _) = call(&http, reqwest::Method::GET, &secrets, Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK, "team-a is listed");
    let (status, _) = call(&http, reqwest::Method::GET, &secrets, Some(&bob), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "team-b is not");
    // Nobody may see config dumps any more.
    let dump = format!("{api}/meshes/default/dataplanes/web/_config");
    let (status, body) = call(&http, reqwest::Method::GET, &dump, Some(&alice), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn signing_keys_rotate_by_serial() {
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
    let store = store_with_default_mesh().await;
    let tokens = Tokens::new(store.clone());
    let before = tokens
        .issue("default", "web", Default::default(), "dataplane", None)
        .await
        .expect("issued with key 1");
    // A second key, as `kumactl generate signing-key` would make it.
    let pem = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
        .expect("key")
        .to_pkcs1_pem(LineEnding::LF)
        .expect("pem")
        .to_string();
    store
        .create(
            parse(&format!(
                "type: Secret\nmesh: default\nname: dataplane-token-signing-key-default-2\ndata: {}\n",
                STANDARD.encode(pem)
            ))
            .expect("secret"),
        )
        .await
        .expect("key 2");
    let after = tokens
        .issue("default", "web", Default::default(), "dataplane", None)
        .await
        .expect("issued with key 2");
    let kid = |t: &str| jsonwebtoken::decode_header(t).expect("header").kid;
    assert_eq!(kid(&before).as_deref(), Some("1"));
    assert_eq!(kid(&after).as_deref(), Some("2"), "the newest key signs");
    assert!(tokens.verify(&before, "default", "web").await.is_ok());
    assert!(tokens.verify(&after, "default", "web").await.is_ok());
    // Retiring key 1 retires the tokens it signed.
    store
        .delete(&ResourceKey::new(
            kuma_crds::resource::ResourceType::Secret,
            "default",
            "dataplane-token-signing-key-default-1",
        ))
        .await
        .expect("delete key 1");
    let refused = tokens
        .verify(&before, "default", "web")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("serial 1"), "{refused}");
    assert!(tokens.verify(&after, "default", "web").await.is_ok());
}
