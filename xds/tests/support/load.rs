//! Constant traffic through the mesh while the configuration changes, with
//! every failure counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::cp::echo_through;
use super::http::{self, KeepAlive};

/// One kind of request the load repeats.
#[derive(Clone, Debug)]
pub enum Probe {
    /// `GET /` on a new connection each time; must answer 200.
    Http(String),
    /// `GET /` on one kept-alive connection; must answer 200.
    HttpKeepAlive(String),
    /// An echo over a new TCP connection.
    Tcp(String),
}

/// Sends the probes in a loop until finished.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    last_error: Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(probes: Vec<Probe>) -> Load {
        let (stop, sent, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let last_error = Arc::new(std::sync::Mutex::new(String::new()));
        let task = {
            let (stop, sent, failed, last_error) =
                (stop.clone(), sent.clone(), failed.clone(), last_error.clone());
            tokio::spawn(async move {
                let mut kept: Vec<KeepAlive> = probes.iter().map(|_| KeepAlive::default()).collect();
                while !stop.load(Ordering::SeqCst) {
                    for (probe, conn) in probes.iter().zip(kept.iter_mut()) {
                        sent.fetch_add(1, Ordering::SeqCst);
                        let result = match probe {
                            Probe::Http(addr) => ok_200(http::get(addr, "/").await),
                            Probe::HttpKeepAlive(addr) => ok_200(conn.get(addr, "/").await),
                            Probe::Tcp(addr) => echo_through(addr, "ping")
                                .await
                                .and_then(|r| if r == "ping" { Ok(()) } else { Err(r) }),
                        };
                        if let Err(e) = result {
                            failed.fetch_add(1, Ordering::SeqCst);
                            *last_error.lock().unwrap() = format!("{probe:?}: {e}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        Load {
            stop,
            sent,
            failed,
            last_error,
            task,
        }
    }

    /// Waits until `count` more requests were sent.
    pub async fn more(&self, count: u64) {
        let target = self.sent.load(Ordering::SeqCst) + count;
        super::cp::eventually("more traffic", || async {
            (self.sent.load(Ordering::SeqCst) >= target)
                .then_some(())
                .ok_or("waiting".to_string())
        })
        .await;
    }

    /// Stops the load and asserts that nothing failed.
    pub async fn finish(self, what: &str) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let (sent, failed) = (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        );
        assert!(sent > 20, "{what}: too little traffic ({sent})");
        assert_eq!(
            failed,
            0,
            "{what}: {failed} of {sent} requests failed; last: {}",
            self.last_error.lock().unwrap()
        );
        eprintln!("{what}: {sent} requests, none failed");
    }
}

fn ok_200(r: std::io::Result<http::HttpResponse>) -> Result<(), String> {
    let r = r.map_err(|e| e.to_string())?;
    if r.status == 200 {
        Ok(())
    } else {
        Err(format!("{} {}", r.status, r.body))
    }
}
