//! The test node's cluster DNS (what kube-dns is to a Pod): answers A
//! questions for the names it is given and NXDOMAIN for every other name,
//! at once, so a Pod's resolver walks its search list quickly and names
//! kuma-dp forwards get the cluster's answer.
//!
//! `kuma-e2e-dns LISTEN_ADDR [NAME=IPV4 ...]`

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

fn answer(query: &[u8], names: &BTreeMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first()?.clone();
    let name = question
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_query(question.clone());
    match names.get(&name) {
        Some(ip) if question.query_type() == RecordType::A => {
            response.add_answer(Record::from_rdata(question.name().clone(), 5, RData::A(A(*ip))));
        }
        Some(_) => {}
        None => response.metadata.response_code = ResponseCode::NXDomain,
    }
    response.to_vec().ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(listen) = args.first() else {
        eprintln!("usage: kuma-e2e-dns LISTEN_ADDR [NAME=IPV4 ...]");
        std::process::exit(2)
    };
    let names: BTreeMap<String, Ipv4Addr> = args[1..]
        .iter()
        .filter_map(|a| {
            let (n, ip) = a.split_once('=')?;
            Some((n.to_ascii_lowercase(), ip.parse().ok()?))
        })
        .collect();
    let socket = tokio::net::UdpSocket::bind(listen.as_str())
        .await
        .unwrap_or_else(|e| panic!("bind {listen}: {e}"));
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = answer(&buf[..n], &names) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}
