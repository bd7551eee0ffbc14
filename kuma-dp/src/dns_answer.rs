//! The DNS proxy's decision (Kuma's embedded `dnsproxy`): A and AAAA
//! questions for names of the mesh's DNS table are answered with their
//! VIPs; every other question goes, unchanged, to the host's resolver.
//! Pure functions of the question bytes and the table, so they are tested
//! by tables and fuzzed (`kuma-dp/fuzz`); `kuma-dp run` moves the bytes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use kuma_crds::dns::DnsTable;

/// The names of the table (lower case, no trailing dot) and the TTL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lookup {
    /// Addresses by name.
    pub names: BTreeMap<String, Vec<IpAddr>>,
    /// The TTL of answers.
    pub ttl: u32,
}

impl From<&DnsTable> for Lookup {
    fn from(table: &DnsTable) -> Self {
        Lookup {
            names: table.lookup_map(),
            ttl: table.ttl,
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Relay the question to the upstream resolver.
    Forward,
    /// Not a DNS message at all: say nothing.
    Drop,
}

/// Answers `query` from `table`, or says where it goes.
pub fn reply(query: &[u8], table: &Lookup) -> Reply {
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) if query.len() >= 2 => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            return encode(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr));
        }
        Err(_) => return Reply::Drop,
    };
    if request.metadata.message_type != MessageType::Query || request.metadata.op_code != OpCode::Query {
        return Reply::Forward;
    }
    // As Kuma: only the first question decides.
    let Some(question) = request.queries.first() else {
        return encode(Message::error_msg(
            request.metadata.id,
            OpCode::Query,
            ResponseCode::FormErr,
        ));
    };
    let name = question
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let Some(addresses) = table.names.get(&name) else {
        return Reply::Forward;
    };
    let wanted = question.query_type();
    if wanted != RecordType::A && wanted != RecordType::AAAA {
        return Reply::Forward;
    }
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(question.clone());
    for address in addresses {
        let data = match (wanted, address) {
            (RecordType::A, IpAddr::V4(v4)) => RData::A(A(*v4)),
            (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        response.add_answer(Record::from_rdata(question.name().clone(), table.ttl, data));
    }
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        response.set_edns(edns);
    }
    encode(response)
}

fn encode(message: Message) -> Reply {
    match message.to_vec() {
        Ok(bytes) => Reply::Answer(bytes),
        Err(_) => Reply::Drop,
    }
}

/// A SERVFAIL for `query` (the upstream did not answer).
pub fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
    Message::error_msg(id, OpCode::Query, ResponseCode::ServFail)
        .to_vec()
        .ok()
}

/// The first `nameserver` of a resolv.conf (port 53).
pub fn upstream_of(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
            .and_then(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// What every answer keeps, whatever the bytes (the fuzz target's
/// property): a message with an id is never dropped; an answer parses,
/// is a response to the same id, and names only addresses the table holds
/// for the name asked; a question for a table name of type A or AAAA is
/// never sent upstream.
pub fn check_reply(query: &[u8], table: &Lookup) -> Result<(), String> {
    let request = Message::from_vec(query).ok();
    match reply(query, table) {
        Reply::Drop if query.len() >= 2 => Err("a message with an id got no answer".into()),
        Reply::Drop => Ok(()),
        Reply::Forward => {
            let Some(request) = request else {
                return Err("bytes that are no DNS message were sent upstream".into());
            };
            let standard = request.metadata.message_type == MessageType::Query
                && request.metadata.op_code == OpCode::Query;
            let Some(question) = request.queries.first().filter(|_| standard) else {
                return Ok(());
            };
            let name = question
                .name()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let mesh_type = matches!(question.query_type(), RecordType::A | RecordType::AAAA);
            if mesh_type && table.names.contains_key(&name) {
                return Err(format!("{name} is the mesh's, yet it was sent upstream"));
            }
            Ok(())
        }
        Reply::Answer(bytes) => {
            let answer = Message::from_vec(&bytes).map_err(|e| format!("the answer does not parse: {e}"))?;
            if answer.metadata.message_type != MessageType::Response {
                return Err("the answer is not a response".into());
            }
            if query.len() >= 2 && answer.metadata.id != u16::from_be_bytes([query[0], query[1]]) {
                return Err("the answer has another id".into());
            }
            for record in &answer.answers {
                let name = record.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                let address = match &record.data {
                    RData::A(a) => IpAddr::V4(a.0),
                    RData::AAAA(a) => IpAddr::V6(a.0),
                    other => return Err(format!("an answer of type {}", other.record_type())),
                };
                if !table.names.get(&name).is_some_and(|ips| ips.contains(&address)) {
                    return Err(format!("{name} answered with {address}, not in the table"));
                }
            }
            Ok(())
        }
    }
}

/// The table the fuzz target and its replay use.
pub fn fuzz_table() -> Lookup {
    let table = DnsTable::new(vec![
        kuma_crds::dns::DnsRecord {
            name: "backend.mesh".into(),
            ips: vec!["240.0.0.1".into(), "::ffff:f000:1".into()],
        },
        kuma_crds::dns::DnsRecord {
            name: "backend_shop_svc_80.mesh".into(),
            ips: vec!["240.0.0.2".into()],
        },
    ]);
    Lookup::from(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn table() -> Lookup {
        let table = DnsTable::new(vec![kuma_crds::dns::DnsRecord {
            name: "backend.mesh".into(),
            ips: vec!["240.0.0.1".into(), "::ffff:f000:1".into()],
        }]);
        Lookup::from(&table)
    }

    fn question(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        let mut q = Query::new();
        q.set_name(Name::from_ascii(name).unwrap_or_else(|e| panic!("{e}")));
        q.set_query_type(t);
        m.add_query(q);
        m.to_vec().unwrap_or_default()
    }

    fn answered(reply: Reply) -> Message {
        match reply {
            Reply::Answer(bytes) => Message::from_vec(&bytes).unwrap_or_else(|e| panic!("{e}")),
            other => panic!("not answered: {other:?}"),
        }
    }

    #[test]
    fn mesh_names_are_answered_with_their_vips() {
        let a = answered(reply(&question("backend.mesh.", RecordType::A), &table()));
        assert_eq!(a.metadata.id, 4242);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.metadata.authoritative && a.metadata.recursion_desired);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].ttl, 30);
        assert_eq!(
            &a.answers[0].data,
            &RData::A(A("240.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"))))
        );
        // Case does not matter; the answer names what was asked.
        let a = answered(reply(&question("BackEnd.Mesh", RecordType::AAAA), &table()));
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].name.to_ascii().trim_end_matches('.'), "BackEnd.Mesh");
        assert!(matches!(&a.answers[0].data, RData::AAAA(_)));
    }

    #[test]
    fn a_family_without_addresses_is_an_empty_answer() {
        let mut t = table();
        t.names.insert(
            "v4only.mesh".into(),
            vec!["240.0.0.2".parse().unwrap_or_else(|e| panic!("{e}"))],
        );
        let a = answered(reply(&question("v4only.mesh", RecordType::AAAA), &t));
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.answers.is_empty());
    }

    #[test]
    fn everything_else_goes_upstream() {
        for (name, t) in [
            ("example.com.", RecordType::A),
            ("gone.mesh.", RecordType::A),
            ("backend.mesh.", RecordType::MX),
        ] {
            assert_eq!(reply(&question(name, t), &table()), Reply::Forward, "{name} {t}");
        }
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        let a = answered(reply(&[0x12, 0x34, 0xff], &table()));
        assert_eq!(a.metadata.id, 0x1234);
        assert_eq!(a.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply(&[7], &table()), Reply::Drop);
        assert_eq!(reply(&[], &table()), Reply::Drop);
    }

    #[test]
    fn the_upstream_is_the_first_nameserver() {
        let conf = "# generated\nsearch shop.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:5\n";
        assert_eq!(
            upstream_of(conf),
            Some("10.96.0.10:53".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            upstream_of("nameserver fe80::1%eth0\n").map(|a| a.is_ipv6()),
            Some(true)
        );
        assert_eq!(upstream_of("search x\n"), None);
    }
}
