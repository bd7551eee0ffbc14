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
}
