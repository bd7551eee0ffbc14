//! Transparent proxying on Universal hosts, for real: two hosts are network
//! namespaces on a bridge (in a namespace of their own; every address but
//! loopback lives in them), each runs `kumactl install transparent-proxy`
//! (real iptables), an app, and kuma-dp + Envoy as UID 5678. The client
//! calls `http://backend.mesh` with no outbound configured: its resolver's
//! question is redirected to kuma-dp's DNS proxy, the VIP's connection to
//! Envoy, and the request crosses both Envoys under mTLS (IPv6 too, through
//! the passthrough listeners of both); so does a
//! MeshService's host name (`backend.svc.mesh.local`), through its own VIP
//! and cluster. Then: a
//! MeshTrafficPermission deny gives 403; an excluded port bypasses Envoy;
//! the kuma-dp user's traffic is not redirected; a service that leaves
//! the mesh stops resolving; installing twice changes nothing; uninstall
//! gives back the host's own rules as they were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kuma_e2e::netns::{in_ns, ok, saved_rules};
use kuma_e2e::node::make_traversable;
use kuma_e2e::process::{ControlPlane, Kumactl, Proc};
use kuma_e2e::{bin_dir, envoy_bin, eventually, temp_dir};

const LIMIT: Duration = Duration::from_secs(60);
const HUB_IP: &str = "10.78.0.1";
const CP_NAME: &str = "kuma-control-plane";

const MTLS_MESH: &str = "type: Mesh\nname: default\nmeshServices:\n  mode: Everywhere\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n";
/// A MeshService of the backend's inbound, reached on port 80 of its VIP
/// under Kuma's default Universal host name `backend.svc.mesh.local`.
const BACKEND_MESH_SERVICE: &str = "type: MeshService\nmesh: default\nname: backend\nspec:\n  selector:\n    dataplaneTags:\n      kuma.io/service: backend\n  ports:\n    - port: 80\n      targetPort: 8080\n      appProtocol: http\n";
const ALLOW_ALL: &str = "type: MeshTrafficPermission\nmesh: default\nname: allow-all\nspec:\n  targetRef:\n    kind: Mesh\n  from:\n    - targetRef:\n        kind: Mesh\n      default:\n        action: Allow\n";
const DENY_CLIENT: &str = "type: MeshTrafficPermission\nmesh: default\nname: deny-client\nspec:\n  targetRef:\n    kind: MeshService\n    name: backend\n  from:\n    - targetRef:\n        kind: MeshService\n        name: client\n      default:\n        action: Deny\n";

/// The hub, its hosts and everything running in them; all removed on drop.
struct Network {
    hub: String,
    hosts: Vec<String>,
    procs: Vec<Proc>,
    dir: PathBuf,
}

impl Network {
    fn new(dir: &Path) -> Network {
        let hub = format!("tph{}", std::process::id());
        ok_ip(&["netns", "add", &hub]);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "br0", "type", "bridge"],
            vec!["addr", "add", "10.78.0.1/24", "dev", "br0"],
            vec!["addr", "add", "fd78::1/64", "dev", "br0", "nodad"],
            vec!["link", "set", "br0", "up"],
        ] {
            ok(&hub, "ip", &args);
        }
        Network {
            hub,
            hosts: Vec::new(),
            procs: Vec::new(),
            dir: dir.to_path_buf(),
        }
    }

    /// A host at `10.78.0.<n>` and `fd78::<n>` whose resolver and `/etc/hosts` point at the hub.
    fn host(&mut self, n: u8) -> String {
        let ns = format!("tp{}h{n}", std::process::id());
        ok_ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        let etc = Path::new("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {HUB_IP}\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            etc.join("hosts"),
            format!("127.0.0.1 localhost\n::1 localhost\n{HUB_IP} {CP_NAME}\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let veth = format!("tpv{n}");
        ok_ip(&[
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &veth, "netns", &self.hub,
        ]);
        let address = format!("10.78.0.{n}/24");
        let address6 = format!("fd78::{n}/64");
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", address.as_str(), "dev", "eth0"],
            vec!["addr", "add", address6.as_str(), "dev", "eth0", "nodad"],
            vec!["link", "set", "eth0", "up"],
            vec!["route", "add", "default", "via", HUB_IP],
        ] {
            ok(&ns, "ip", &args);
        }
        ok(&self.hub, "ip", &["link", "set", &veth, "master", "br0"]);
        ok(&self.hub, "ip", &["link", "set", &veth, "up"]);
        ns
    }

    /// Starts `program` in `ns`, as `uid` unless root.
    fn spawn(
        &mut self,
        name: &str,
        ns: &str,
        uid: u32,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) {
        let mut argv: Vec<String> = vec!["netns".into(), "exec".into(), ns.into()];
        if uid != 0 {
            argv.extend([
                "setpriv".into(),
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
            ]);
        }
        argv.push(program.display().to_string());
        argv.extend_from_slice(args);
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.procs
            .push(Proc::start(name, Path::new("ip"), &argv, &env, &self.dir));
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.procs.clear();
        for ns in self.hosts.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
    }
}

fn ok_ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dataplane(name: &str, service: &str, n: u8) -> String {
    format!(
        "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: 10.78.0.{n}\n  inbound:\n    - port: 8080\n      tags:\n        kuma.io/service: {service}\n        kuma.io/protocol: http\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n"
    )
}

/// `iptables-save` of both families (see [`saved_rules`]).
fn rules(ns: &str) -> String {
    saved_rules(ns, "iptables-save") + &saved_rules(ns, "ip6tables-save")
}

/// The Envoy counters of host `ns` whose names contain `filter`.
fn stats(ns: &str, filter: &str) -> Vec<(String, u64)> {
    let out = in_ns(
        ns,
        "curl",
        &[
            "-s",
            "-m",
            "5",
            &format!("http://127.0.0.1:9901/stats?filter={filter}"),
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// The value of an Envoy counter (0 when absent) in host `ns`.
fn stat(ns: &str, name: &str) -> u64 {
    stats(ns, name)
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .sum()
}

/// The status and body of `curl url` from host `ns` as `uid`.
fn curl(ns: &str, uid: u32, url: &str) -> String {
    curl_with(ns, uid, &[], url)
}

/// [`curl`] with extra options.
fn curl_with(ns: &str, uid: u32, options: &[&str], url: &str) -> String {
    let mut args: Vec<String> = Vec::new();
    let program = if uid == 0 {
        "curl".to_string()
    } else {
        args.extend([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
            "curl".into(),
        ]);
        "setpriv".to_string()
    };
    args.extend(options.iter().map(|o| o.to_string()));
    args.extend(["-sk", "-m", "5", "-w", "\n%{http_code}", url].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = in_ns(ns, &program, &refs);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    format!("{code} {}", body.trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_reach_mesh_names_through_their_transparent_proxies() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("transparent-proxy");
    make_traversable(&dir);

    // The control plane on the machine's loopback, reached by the hosts
    // at the hub's address under the name its certificate carries.
    let mut env = ControlPlane::env(&BTreeMap::new(), &dir.join("cp"));
    std::fs::create_dir_all(dir.join("cp")).unwrap_or_else(|e| panic!("{e}"));
    env.insert("HOSTNAME".into(), CP_NAME.into());
    let cp = ControlPlane::start("kuma-cp", env).await;
    let kumactl = Kumactl::new(&cp.api());
    kumactl.wait_for_default_mesh().await;
    kumactl.ok(&["apply", "-f", "-"], Some(MTLS_MESH));
    kumactl.ok(&["apply", "-f", "-"], Some(ALLOW_ALL));

    let mut net = Network::new(&dir);
    let sock = dir.join("dp-server.sock");
    let forward = bin_dir().join("kuma-e2e-forward");
    net.procs.push(Proc::start(
        "forward-cp",
        &forward,
        &[
            "--listen-unix".into(),
            sock.display().to_string(),
            "--to-tcp".into(),
            format!("127.0.0.1:{}", cp.dp_port),
        ],
        &BTreeMap::new(),
        &dir,
    ));
    let hub = net.hub.clone();
    net.spawn(
        "forward-hub",
        &hub,
        0,
        &forward,
        &[
            "--listen-tcp".into(),
            // The port kuma-cp listens on: the bootstrap sends Envoy there.
            format!("{HUB_IP}:{}", cp.dp_port),
            "--to-unix".into(),
            sock.display().to_string(),
        ],
        &[],
    );
    // The hosts' upstream resolver: NXDOMAIN for every name.
    net.spawn(
        "upstream-dns",
        &hub,
        0,
        &bin_dir().join("kuma-e2e-dns"),
        &[format!("{HUB_IP}:53")],
        &[],
    );
    let backend = net.host(2);
    let client = net.host(3);

    // Files kuma-dp (UID 5678) reads: Envoy, the CA, tokens, Dataplanes.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    let envoy = bin.join("envoy");
    if std::fs::hard_link(envoy_bin(), &envoy).is_err() {
        std::fs::copy(envoy_bin(), &envoy).unwrap_or_else(|e| panic!("{e}"));
    }
    let ca = dir.join("ca.crt");
    std::fs::copy(cp.ca_file(), &ca).unwrap_or_else(|e| panic!("{e}"));

    // The client host's own rules, which must survive install/uninstall.
    ok(
        &client,
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "192.0.2.1/32",
            "-p",
            "tcp",
            "-j",
            "RETURN",
        ],
    );
    ok(
        &client,
        "iptables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "7777", "-j", "ACCEPT"],
    );
    let original = rules(&client);

    let install = |ns: &str| {
        ok(
            ns,
            &bin_dir().join("kumactl").display().to_string(),
            &[
                "install",
                "transparent-proxy",
                "--redirect-dns",
                "--exclude-inbound-ports",
                "9090",
                "--exclude-outbound-ports",
                "9090",
            ],
        )
    };
    install(&backend);
    install(&client);
    let installed = rules(&client);
    assert!(installed.contains("KUMA_MESH_OUTBOUND"), "{installed}");
    install(&client);
    assert_eq!(rules(&client), installed, "installing twice changes nothing");

    // The apps and the proxies.
    net.spawn(
        "backend-app",
        &backend,
        0,
        &bin_dir().join("kuma-e2e-echo"),
        &["8080".into(), "9090".into()],
        &[("HOSTNAME", "backend-1")],
    );
    for (ns, name, service) in [
        (&backend, "backend-1", "backend"),
        (&client, "client-1", "client"),
    ] {
        let host_dir = dir.join(name);
        std::fs::create_dir_all(host_dir.join("work")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            host_dir.join("dataplane.yaml"),
            dataplane(name, service, if service == "backend" { 2 } else { 3 }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(host_dir.join("token"), kumactl.dataplane_token(name))
            .unwrap_or_else(|e| panic!("{e}"));
        make_traversable(&host_dir.join("work"));
        let _ = Command::new("chmod")
            .args(["-R", "a+rwX", &host_dir.display().to_string()])
            .status();
        let _ = Command::new("chmod")
            .args(["a+r", &ca.display().to_string()])
            .status();
        let args: Vec<String> = [
            "run",
            "--cp-address",
            &format!("https://{CP_NAME}:{}", cp.dp_port),
            "--ca-cert-file",
            &ca.display().to_string(),
            "--dataplane-file",
            &host_dir.join("dataplane.yaml").display().to_string(),
            "--dataplane-token-file",
            &host_dir.join("token").display().to_string(),
            "--binary-path",
            &envoy.display().to_string(),
            "--work-dir",
            &host_dir.join("work").display().to_string(),
            "--drain-time",
            "1s",
        ]
        .map(String::from)
        .to_vec();
        net.spawn(
            &format!("kuma-dp-{name}"),
            ns,
            5678,
            &bin_dir().join("kuma-dp"),
            &args,
            &[("KUMA_DNS_PROXY_PORT", "15053"), ("HOME", "/tmp")],
        );
    }

    // By name, through both Envoys, under mTLS.
    eventually("http://backend.mesh through the mesh", LIMIT, || async {
        let r = curl(&client, 0, "http://backend.mesh/hello");
        r.starts_with("200 backend-1 GET /hello").then_some(()).ok_or(r)
    })
    .await;
    assert!(stat(&client, "cluster.backend.upstream_rq_2xx") >= 1);
    assert!(
        stat(&client, "cluster.backend.ssl.handshake") >= 1,
        "mTLS to the backend"
    );
    assert!(
        stat(
            &backend,
            "listener.10.78.0.2_8080.http.localhost_8080.downstream_rq_2xx"
        ) >= 1,
        "the backend's inbound carried it: {:?}",
        stats(&backend, "downstream_rq_2xx")
    );
    let dotted = curl(&client, 0, "http://backend.mesh:80/again");
    assert!(dotted.starts_with("200 backend-1"), "{dotted}");

    // A MeshService: its host name resolves to its own VIP, and the
    // request goes through its own cluster (Kuma's legacy name), under mTLS.
    kumactl.ok(&["apply", "-f", "-"], Some(BACKEND_MESH_SERVICE));
    eventually(
        "http://backend.svc.mesh.local through the mesh",
        LIMIT,
        || async {
            let r = curl(&client, 0, "http://backend.svc.mesh.local/msvc");
            r.starts_with("200 backend-1 GET /msvc").then_some(()).ok_or(r)
        },
    )
    .await;
    assert!(
        stat(
            &client,
            "cluster.default_backend__default_msvc_80.upstream_rq_2xx"
        ) >= 1,
        "{:?}",
        stats(&client, "upstream_rq_2xx")
    );
    assert!(
        stat(&client, "cluster.default_backend__default_msvc_80.ssl.handshake") >= 1,
        "mTLS to the MeshService's endpoint: {:?}",
        stats(&client, "msvc")
    );

    // IPv6 (the hosts are dual-stack, so install redirected both
    // families): a call to the backend's IPv6 address passes the client's
    // Envoy (outbound passthrough) and the backend's (inbound passthrough).
    let v6 = curl_with(&client, 0, &["-g", "-6"], "http://[fd78::2]:8080/v6");
    assert!(v6.starts_with("200 backend-1 GET /v6"), "{v6}");
    assert!(
        stat(&client, "cluster.outbound_passthrough_ipv6.upstream_cx_total") >= 1,
        "{:?}",
        stats(&client, "passthrough")
    );
    assert!(
        stat(&backend, "cluster.inbound_passthrough_ipv6.upstream_cx_total") >= 1,
        "{:?}",
        stats(&backend, "passthrough")
    );

    // An excluded port goes around both Envoys.
    let (out_before, in_before) = (
        stat(&client, "listener.0.0.0.0_15001.downstream_cx_total"),
        stat(&backend, "listener.0.0.0.0_15006.downstream_cx_total"),
    );
    let direct = curl(&client, 0, "http://10.78.0.2:9090/direct");
    assert!(direct.starts_with("200 backend-1 GET /direct"), "{direct}");
    assert_eq!(
        stat(&client, "listener.0.0.0.0_15001.downstream_cx_total"),
        out_before
    );
    assert_eq!(
        stat(&backend, "listener.0.0.0.0_15006.downstream_cx_total"),
        in_before
    );

    // The kuma-dp user's connections are not redirected (no loop); the
    // same connection from another user is.
    let cp_url = format!("https://{HUB_IP}:{}/", cp.dp_port);
    let as_proxy = curl(&client, 5678, &cp_url);
    assert!(!as_proxy.starts_with("000"), "{as_proxy}");
    assert_eq!(
        stat(&client, "listener.0.0.0.0_15001.downstream_cx_total"),
        out_before
    );
    let as_app = curl(&client, 0, &cp_url);
    assert!(!as_app.starts_with("000"), "{as_app}");
    assert!(stat(&client, "listener.0.0.0.0_15001.downstream_cx_total") > out_before);

    // A MeshTrafficPermission deny: 403 from the backend's Envoy.
    kumactl.ok(&["apply", "-f", "-"], Some(DENY_CLIENT));
    eventually("the deny applies", LIMIT, || async {
        let r = curl(&client, 0, "http://backend.mesh/denied");
        r.starts_with("403").then_some(()).ok_or(r)
    })
    .await;
    kumactl.ok(&["delete", "meshtrafficpermission", "deny-client"], None);
    eventually("allowed again", LIMIT, || async {
        let r = curl(&client, 0, "http://backend.mesh/allowed");
        r.starts_with("200").then_some(()).ok_or(r)
    })
    .await;

    // The backend leaves the mesh: its name stops resolving.
    let backend_dp = net
        .procs
        .iter_mut()
        .find(|p| p.name == "kuma-dp-backend-1")
        .map(|p| p.terminate(Duration::from_secs(10)));
    assert!(backend_dp.is_some());
    eventually("backend.mesh no longer resolves", LIMIT, || async {
        let out = in_ns(&client, "getent", &["hosts", "backend.mesh"]);
        (!out.status.success())
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stdout).to_string())
    })
    .await;

    // Uninstall: the host's own rules, exactly.
    ok(
        &client,
        &bin_dir().join("kumactl").display().to_string(),
        &["uninstall", "transparent-proxy"],
    );
    assert_eq!(rules(&client), original);
}
