//! A small authoritative DNS server on loopback for tests: answers TXT, A,
//! AAAA, MX and PTR questions from records the tests publish, NXDOMAIN for
//! unknown names, and no answer at all for names marked silent (a DNS
//! timeout). Test relays
//! point their milter at it (`dns_servers`), so no test needs real DNS.
//!
//! One server per process ([`test_dns`]); relays publish their DKIM keys in
//! it, so relays of one test binary can check each other's signatures.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Context, Result};

const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_MX: u16 = 15;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const TTL_SECONDS: u32 = 60;

#[derive(Default)]
struct Zone {
    txt: HashMap<String, Vec<String>>,
    /// Other records by name and type: their RDATA.
    other: HashMap<(String, u16), Vec<Vec<u8>>>,
    /// (selector, record): the answer for `selector._domainkey.ANY` names
    /// that have no record of their own.
    any_domain_key: Option<(String, String)>,
    silent: HashSet<String>,
    queries: HashMap<String, usize>,
}

/// A running test DNS server.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
}

impl std::fmt::Debug for TestDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDns").field("addr", &self.addr).finish_non_exhaustive()
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl TestDns {
    /// Starts a server on a free UDP port of 127.0.0.1.
    pub fn start() -> Result<TestDns> {
        let socket = UdpSocket::bind("127.0.0.1:0").context(|| "binding the test DNS socket".into())?;
        let addr = socket.local_addr().context(|| "test DNS address".into())?;
        let zone = Arc::new(Mutex::new(Zone::default()));
        let served = Arc::clone(&zone);
        std::thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || serve(&socket, &served))
            .context(|| "starting the test DNS thread".into())?;
        Ok(TestDns { addr, zone })
    }

    /// Where to send queries (`dns_servers` in chatmail.ini).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn zone(&self) -> std::sync::MutexGuard<'_, Zone> {
        self.zone.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes `value` as the one TXT record at `name` (replacing others).
    pub fn set_txt(&self, name: &str, value: &str) {
        let mut zone = self.zone();
        zone.silent.remove(&normalize(name));
        zone.txt.insert(normalize(name), vec![value.to_owned()]);
    }

    /// Removes every record at `name` (it becomes NXDOMAIN).
    pub fn remove(&self, name: &str) {
        let mut zone = self.zone();
        let name = normalize(name);
        zone.txt.remove(&name);
        zone.other.retain(|(n, _), _| *n != name);
    }

    /// Publishes `ips` as the A and AAAA records of `name` (replacing them).
    pub fn set_addresses(&self, name: &str, ips: &[IpAddr]) {
        let mut zone = self.zone();
        let name = normalize(name);
        let v4: Vec<Vec<u8>> = ips.iter().filter_map(|ip| if let IpAddr::V4(v4) = ip { Some(v4.octets().to_vec()) } else { None }).collect();
        let v6: Vec<Vec<u8>> = ips.iter().filter_map(|ip| if let IpAddr::V6(v6) = ip { Some(v6.octets().to_vec()) } else { None }).collect();
        zone.other.insert((name.clone(), TYPE_A), v4);
        zone.other.insert((name, TYPE_AAAA), v6);
    }

    /// Publishes the MX records of `name`: (preference, exchange).
    pub fn set_mx(&self, name: &str, exchanges: &[(u16, &str)]) {
        let rdata = exchanges
            .iter()
            .map(|(preference, host)| {
                let mut data = preference.to_be_bytes().to_vec();
                data.extend(wire_name(host));
                data
            })
            .collect();
        self.zone().other.insert((normalize(name), TYPE_MX), rdata);
    }

    /// Publishes `host` as the PTR record of `ip` (reverse DNS).
    pub fn set_ptr(&self, ip: IpAddr, host: &str) {
        let name = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
            }
            IpAddr::V6(v6) => {
                let nibbles: Vec<String> = v6.octets().iter().rev().flat_map(|b| [format!("{:x}", b & 0xf), format!("{:x}", b >> 4)]).collect();
                format!("{}.ip6.arpa", nibbles.join("."))
            }
        };
        self.zone().other.insert((name, TYPE_PTR), vec![wire_name(host)]);
    }

    /// Answers `{selector}._domainkey.{any domain}` with `record` unless
    /// the name has a record of its own: for separate harness processes
    /// whose relays all sign with the harness's test key.
    pub fn answer_any_domain_key(&self, selector: &str, record: &str) {
        self.zone().any_domain_key = Some((normalize(selector), record.to_owned()));
    }

    /// Questions about `name` get no answer at all, as from an unreachable server.
    pub fn make_silent(&self, name: &str) {
        self.zone().silent.insert(normalize(name));
    }

    /// How many questions about `name` arrived so far.
    pub fn queries(&self, name: &str) -> usize {
        self.zone().queries.get(&normalize(name)).copied().unwrap_or(0)
    }
}

/// The process's test DNS server, started on first use.
pub fn test_dns() -> Result<&'static TestDns> {
    static DNS: OnceLock<TestDns> = OnceLock::new();
    if let Some(dns) = DNS.get() {
        return Ok(dns);
    }
    let dns = TestDns::start()?;
    Ok(DNS.get_or_init(|| dns))
}

fn serve(socket: &UdpSocket, zone: &Mutex<Zone>) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else { continue };
        let Some(question) = parse_question(&buf[..len]) else { continue };
        let reply = {
            let mut zone = zone.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *zone.queries.entry(question.name.clone()).or_default() += 1;
            if zone.silent.contains(&question.name) {
                continue;
            }
            let txt = zone.txt.get(&question.name).cloned().or_else(|| {
                let (selector, record) = zone.any_domain_key.as_ref()?;
                let domain = question.name.strip_prefix(selector.as_str())?.strip_prefix("._domainkey.")?;
                (!domain.is_empty()).then(|| vec![record.clone()])
            });
            let exists = txt.is_some() || zone.other.keys().any(|(n, _)| *n == question.name);
            let rdata: Vec<Vec<u8>> = if question.qtype == TYPE_TXT {
                txt.unwrap_or_default().iter().map(|value| txt_rdata(value)).collect()
            } else {
                zone.other.get(&(question.name.clone(), question.qtype)).cloned().unwrap_or_default()
            };
            answer(&buf[..len], &question, exists.then_some(rdata.as_slice()))
        };
        let _ = socket.send_to(&reply, peer);
    }
}

struct Question {
    name: String,
    qtype: u16,
    /// Offset just past the question section.
    end: usize,
}

fn parse_question(packet: &[u8]) -> Option<Question> {
    if packet.len() < 12 || u16::from_be_bytes([packet[4], packet[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression is not used in questions
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    Some(Question { name: labels.join("."), qtype, end: at + 4 })
}

/// A name in DNS wire form (uncompressed labels).
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in normalize(name).split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

fn txt_rdata(value: &str) -> Vec<u8> {
    let mut rdata = Vec::new();
    for chunk in value.as_bytes().chunks(255) {
        rdata.push(u8::try_from(chunk.len()).unwrap_or(255));
        rdata.extend_from_slice(chunk);
    }
    rdata
}

/// The reply to `query`: `records` are the RDATA of the answers (of the
/// question's type); `None`: the name does not exist.
fn answer(query: &[u8], question: &Question, records: Option<&[Vec<u8>]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]); // id
    let recursion_desired = query[2] & 0x01;
    out.push(0x84 | recursion_desired); // response, authoritative
    let rcode = if records.is_none() { 3 } else { 0 }; // NXDOMAIN or NOERROR
    out.push(0x80 | rcode); // recursion available
    let answers: &[Vec<u8>] = records.unwrap_or(&[]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&u16::try_from(answers.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // no authority or additional records
    out.extend_from_slice(&query[12..question.end]);
    for rdata in answers {
        out.extend_from_slice(&[0xC0, 12]); // the name, pointing at the question
        out.extend_from_slice(&question.qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL_SECONDS.to_be_bytes());
        out.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    out
}
