//! Kubernetes mode end to end: Pods and Services become Dataplanes, run by
//! the test node agent in network namespaces of their own.

use std::time::Duration;

use kuma_e2e::eventually;
use kuma_e2e::kube_mesh::KubeMesh;

fn dataplanes(mesh: &KubeMesh, namespace: &str) -> String {
    let out = mesh
        .cluster
        .kubectl(&["get", "dataplanes", "-n", namespace, "-o", "yaml"], None);
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn pods_become_dataplanes() {
    let mesh = KubeMesh::start(&[]).await;
    mesh.cluster.create_namespace("kuma-test", &[]).await;
    mesh.cluster.apply(
        r#"apiVersion: v1
kind: Service
metadata:
  name: echo-server
  namespace: kuma-test
  annotations:
    80.service.kuma.io/protocol: http
spec:
  ports:
    - port: 80
      name: http
  selector:
    app: echo-server
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo-server
  namespace: kuma-test
  labels:
    app: echo-server
spec:
  replicas: 1
  selector:
    matchLabels:
      app: echo-server
  template:
    metadata:
      labels:
        app: echo-server
    spec:
      containers:
        - name: echo-server
          image: nginx
          ports:
            - containerPort: 80
          readinessProbe:
            httpGet:
              path: /
              port: 80
        - name: kuma-sidecar
          image: alpine
          command: ["sh", "-c", "tail -f /dev/null"]
"#,
    );
    eventually("the echo-server Dataplane", Duration::from_secs(90), || async {
        let text = dataplanes(&mesh, "kuma-test");
        if text.contains("echo-server_kuma-test_svc_80")
            && text.contains("protocol: http")
            && text.contains("state: Ready")
        {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    // A Dataplane deleted by someone else is put back from its Pod.
    let name = mesh.cluster.kubectl_ok(
        &[
            "get",
            "dataplanes",
            "-n",
            "kuma-test",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    );
    let uid = |mesh: &KubeMesh| {
        mesh.cluster
            .kubectl(
                &[
                    "get",
                    "dataplane",
                    &name,
                    "-n",
                    "kuma-test",
                    "-o",
                    "jsonpath={.metadata.uid}",
                ],
                None,
            )
            .stdout
    };
    let first = uid(&mesh);
    mesh.cluster
        .kubectl_ok(&["delete", "dataplane", &name, "-n", "kuma-test"], None);
    eventually("the Dataplane put back", Duration::from_secs(60), || async {
        let now = uid(&mesh);
        let text = dataplanes(&mesh, "kuma-test");
        (!now.is_empty() && now != first && text.contains("echo-server_kuma-test_svc_80"))
            .then_some(())
            .ok_or(text)
    })
    .await;
    // A Service whose selector stops matching the Pod is no longer one of
    // its inbounds (the Pod is reconciled from the Service as it was).
    mesh.cluster.kubectl_ok(
        &[
            "patch",
            "service",
            "echo-server",
            "-n",
            "kuma-test",
            "--type=merge",
            "-p",
            r#"{"spec":{"selector":{"app":"other"}}}"#,
        ],
        None,
    );
    eventually(
        "the inbound of the Service gone",
        Duration::from_secs(60),
        || async {
            let text = dataplanes(&mesh, "kuma-test");
            (!text.contains("echo-server_kuma-test_svc_80") && text.contains("echo-server_kuma-test_svc"))
                .then_some(())
                .ok_or(text)
        },
    )
    .await;

    // A Pod change that does not change its Dataplane writes nothing; a
    // Namespace change that does (its mesh label) rewrites the Dataplane
    // of its Pod, once.
    let writes_before = dataplane_writes(&mesh).await;
    let pod = mesh.cluster.kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            "kuma-test",
            "-l",
            "app=echo-server",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
        None,
    );
    mesh.cluster.kubectl_ok(
        &[
            "annotate",
            "pod",
            &pod,
            "-n",
            "kuma-test",
            "e2e.kuma.io/touched=1",
        ],
        None,
    );
    mesh.cluster
        .apply("apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: second\n");
    mesh.cluster
        .kubectl_ok(&["label", "namespace", "kuma-test", "kuma.io/mesh=second"], None);
    eventually(
        "the Dataplane moved to the namespace's mesh",
        Duration::from_secs(60),
        || async {
            let text = dataplanes(&mesh, "kuma-test");
            text.contains("mesh: second").then_some(()).ok_or(text)
        },
    )
    .await;
    assert_eq!(
        dataplane_writes(&mesh).await - writes_before,
        1,
        "only the namespace's change is written"
    );

    // A Service without a selector is served by the Pods its EndpointSlices
    // list (as Kuma matches Services also via EndpointSlices).
    let pod_ip = mesh.cluster.kubectl_ok(
        &[
            "get",
            "pod",
            &pod,
            "-n",
            "kuma-test",
            "-o",
            "jsonpath={.status.podIP}",
        ],
        None,
    );
    mesh.cluster.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: legacy\n  namespace: kuma-test\nspec:\n  ports:\n    - port: 5432\n      targetPort: 80\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: legacy-manual\n  namespace: kuma-test\n  labels:\n    kubernetes.io/service-name: legacy\naddressType: IPv4\nendpoints:\n  - addresses: [\"{pod_ip}\"]\n    targetRef:\n      kind: Pod\n      name: {pod}\n      namespace: kuma-test\nports:\n  - port: 80\n"
    ));
    eventually(
        "the inbound of the Service the EndpointSlice names",
        Duration::from_secs(60),
        || async {
            let text = dataplanes(&mesh, "kuma-test");
            text.contains("legacy_kuma-test_svc_5432")
                .then_some(())
                .ok_or(text)
        },
    )
    .await;
    // The slice no longer listing the Pod takes the inbound away.
    mesh.cluster.kubectl_ok(
        &["delete", "endpointslice", "legacy-manual", "-n", "kuma-test"],
        None,
    );
    eventually(
        "the inbound gone with the slice",
        Duration::from_secs(60),
        || async {
            let text = dataplanes(&mesh, "kuma-test");
            (!text.contains("legacy_kuma-test_svc_5432"))
                .then_some(())
                .ok_or(text)
        },
    )
    .await;
}

/// `kuma_cp_dataplane_writes_total` of kuma-cp's `/metrics`.
async fn dataplane_writes(mesh: &KubeMesh) -> u64 {
    mesh.cp.metrics().await["kuma_cp_dataplane_writes_total"]
}

#[tokio::test]
async fn services_become_mesh_services_where_the_mesh_asks() {
    let mesh = KubeMesh::start(&[]).await;
    mesh.cluster.apply(
        "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: exclusive\nspec:\n  meshServices:\n    mode: Exclusive\n",
    );
    mesh.cluster
        .create_namespace("shop", &[("kuma.io/mesh", "exclusive")])
        .await;
    mesh.cluster.create_namespace("plain", &[]).await;
    let service = |ns: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  selector:\n    app: web\n  ports:\n    - name: http\n      port: 80\n      targetPort: 8080\n      appProtocol: http\n"
        )
    };
    mesh.cluster.apply(&service("shop"));
    mesh.cluster.apply(&service("plain"));
    let cluster_ip = mesh.cluster.kubectl_ok(
        &[
            "get",
            "service",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    );
    eventually(
        "the MeshService of the Service",
        Duration::from_secs(60),
        || async {
            let out = mesh
                .cluster
                .kubectl(&["get", "meshservice", "web", "-n", "shop", "-o", "json"], None);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let ok = v["spec"]["selector"]["dataplaneTags"]["app"] == "web"
                && v["spec"]["ports"][0]["targetPort"] == 8080
                && v["spec"]["ports"][0]["appProtocol"] == "http"
                && v["status"]["vips"][0]["ip"] == cluster_ip.as_str()
                && v["status"]["addresses"][0]["hostname"] == "web.shop.svc.cluster.local"
                && v["metadata"]["labels"]["kuma.io/mesh"] == "exclusive";
            ok.then_some(()).ok_or_else(|| v.to_string())
        },
    )
    .await;
    // kumactl lists it under its core name, with its VIP and host name.
    let kumactl = kuma_e2e::process::Kumactl::new(&mesh.cp.api());
    let out = kumactl.run(
        &["get", "meshservices", "--mesh", "exclusive", "-o", "json"],
        None,
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let item = &listed["items"][0];
    assert_eq!(item["name"], "web.shop", "{listed}");
    assert_eq!(item["status"]["vips"][0]["ip"], cluster_ip.as_str(), "{listed}");
    assert_eq!(
        item["status"]["addresses"][0]["hostname"], "web.shop.svc.cluster.local",
        "{listed}"
    );
    let table = kumactl.run(&["get", "meshservices", "--mesh", "exclusive"], None);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("web.shop"),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    // A MeshService the controller made and someone deleted is put back.
    mesh.cluster
        .kubectl_ok(&["delete", "meshservice", "web", "-n", "shop"], None);
    eventually("the MeshService put back", Duration::from_secs(60), || async {
        let out = mesh
            .cluster
            .kubectl(&["get", "meshservice", "web", "-n", "shop"], None);
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| "not there".to_string())
    })
    .await;
    // A mesh that does not ask for MeshServices gets none.
    let out = mesh
        .cluster
        .kubectl(&["get", "meshservice", "web", "-n", "plain"], None);
    assert!(!out.status.success(), "no MeshService in mesh default");
    // Turning the mode off removes what the controller made.
    mesh.cluster.apply(
        "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: exclusive\nspec:\n  meshServices:\n    mode: Disabled\n",
    );
    eventually("the MeshService removed", Duration::from_secs(60), || async {
        let out = mesh
            .cluster
            .kubectl(&["get", "meshservice", "web", "-n", "shop"], None);
        (!out.status.success())
            .then_some(())
            .ok_or_else(|| "still there".to_string())
    })
    .await;
}
