//! Carries TCP connections across network namespaces through a Unix
//! socket (Unix sockets are not namespaced): the test node agent runs
//! `--listen-tcp ADDR --to-unix PATH` inside the node's namespace and
//! `--listen-unix PATH --to-tcp ADDR` beside the control plane, so Pods
//! reach it at the node's address as they would a Service.
//! `--to-tcp-from FILE` reads the target address from FILE on every
//! connection (the node agent's Service proxy rewrites it when the Pod
//! behind a Service changes; an empty file refuses connections).

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

fn usage() -> ! {
    eprintln!(
        "usage: kuma-e2e-forward (--listen-tcp ADDR --to-unix PATH | --listen-unix PATH (--to-tcp ADDR | --to-tcp-from FILE))"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["--listen-tcp", addr, "--to-unix", path] => {
            let listener = TcpListener::bind(addr).await.expect("bind tcp");
            let path = path.to_string();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let path = path.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = UnixStream::connect(&path).await {
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }
        ["--listen-unix", path, "--to-tcp", addr] => {
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path).expect("bind unix");
            let addr = addr.to_string();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let addr = addr.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&addr).await {
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }
        ["--listen-unix", path, "--to-tcp-from", file] => {
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path).expect("bind unix");
            let file = file.to_string();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let addr = std::fs::read_to_string(&file).unwrap_or_default();
                let addr = addr.trim().to_string();
                if addr.is_empty() {
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&addr).await {
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }
        _ => usage(),
    }
}
