//! A minimal DNS client for the SRV records of server discovery (`_matrix-fed._tcp.<name>`,
//! `_matrix._tcp.<name>`): one query over UDP to the nameservers of `/etc/resolv.conf`, the
//! answer's SRV records parsed (with name compression). No DNS crate: hickory-resolver would
//! add some twenty crates to the build for this one lookup. No TCP fallback for truncated
//! answers, no DNSSEC; a failed or empty lookup means "no SRV record", as discovery treats it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

/// How long one nameserver is given to answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Nameservers asked, at most, for one lookup.
const MAX_NAMESERVERS: usize = 2;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, without the trailing dot.
    pub target: String,
}

pub struct SrvResolver {
    nameservers: Vec<SocketAddr>,
}

impl SrvResolver {
    /// The nameservers of `/etc/resolv.conf` (none when it cannot be read: no SRV lookups).
    pub fn from_system() -> Self {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        Self::with_nameservers(parse_resolv_conf(&text))
    }

    pub fn with_nameservers(nameservers: Vec<SocketAddr>) -> Self {
        Self { nameservers }
    }

    /// The target to use for `name`'s SRV records: of the lowest priority, the heaviest.
    /// `None` when there is no usable record (a target of `.` means "no service").
    pub async fn lookup(&self, name: &str) -> Option<SrvRecord> {
        let mut records = self.query(name).await?;
        records.retain(|record| !record.target.is_empty());
        records.sort_by_key(|record| (record.priority, std::cmp::Reverse(record.weight)));
        records.into_iter().next()
    }

    async fn query(&self, name: &str) -> Option<Vec<SrvRecord>> {
        let id: u16 = rand::random();
        let query = encode_query(id, name)?;
        for nameserver in self.nameservers.iter().take(MAX_NAMESERVERS) {
            let local: SocketAddr = match nameserver {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let Ok(socket) = tokio::net::UdpSocket::bind(local).await else { continue };
            if socket.connect(nameserver).await.is_err() || socket.send(&query).await.is_err() {
                continue;
            }
            let mut buffer = vec![0u8; 4096];
            let Ok(Ok(length)) = tokio::time::timeout(QUERY_TIMEOUT, socket.recv(&mut buffer)).await else {
                continue;
            };
            if let Some(records) = parse_response(id, &buffer[..length]) {
                return Some(records);
            }
        }
        None
    }
}

/// `nameserver` lines of a resolv.conf, on port 53.
fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|address| address.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A recursive SRV query for `name`; `None` for a name that cannot be encoded.
pub(crate) fn encode_query(id: u16, name: &str) -> Option<Vec<u8>> {
    let mut packet = Vec::with_capacity(name.len() + 18);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    if packet.len() > 12 + 255 {
        return None;
    }
    packet.extend_from_slice(&TYPE_SRV.to_be_bytes());
    packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(packet)
}

/// The SRV records of an answer to query `id`; `None` for another ID, an error or a malformed
/// packet, an empty list for an answer without SRV records.
pub(crate) fn parse_response(id: u16, packet: &[u8]) -> Option<Vec<SrvRecord>> {
    let u16_at = |offset: usize| Some(u16::from_be_bytes([*packet.get(offset)?, *packet.get(offset + 1)?]));
    if u16_at(0)? != id {
        return None;
    }
    let flags = u16_at(2)?;
    // A response, and NOERROR (NXDOMAIN and the rest: no records).
    if flags & 0x8000 == 0 {
        return None;
    }
    if flags & 0x000f != 0 {
        return Some(Vec::new());
    }
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let mut offset = 12;
    for _ in 0..questions {
        offset = skip_name(packet, offset)? + 4;
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        offset = skip_name(packet, offset)?;
        let (kind, class) = (u16_at(offset)?, u16_at(offset + 2)?);
        let length = usize::from(u16_at(offset + 8)?);
        let data = offset + 10;
        if data + length > packet.len() {
            return None;
        }
        if kind == TYPE_SRV && class == CLASS_IN && length >= 7 {
            records.push(SrvRecord {
                priority: u16_at(data)?,
                weight: u16_at(data + 2)?,
                port: u16_at(data + 4)?,
                target: read_name(packet, data + 6)?,
            });
        }
        offset = data + length;
    }
    Some(records)
}

/// The offset after the (possibly compressed) name at `offset`.
fn skip_name(packet: &[u8], mut offset: usize) -> Option<usize> {
    loop {
        let length = *packet.get(offset)?;
        match length {
            0 => return Some(offset + 1),
            l if l & 0xc0 == 0xc0 => return Some(offset + 2),
            l => offset += 1 + usize::from(l),
        }
    }
}

/// The name at `offset`, following compression pointers (a bounded number of them), without
/// the trailing dot; empty for the root name.
fn read_name(packet: &[u8], mut offset: usize) -> Option<String> {
    let mut labels: Vec<String> = Vec::new();
    let mut jumps = 0;
    loop {
        let length = *packet.get(offset)?;
        if length == 0 {
            return Some(labels.join("."));
        }
        if length & 0xc0 == 0xc0 {
            jumps += 1;
            if jumps > 16 {
                return None;
            }
            offset = usize::from(u16::from_be_bytes([length & 0x3f, *packet.get(offset + 1)?]));
            continue;
        }
        let label = packet.get(offset + 1..offset + 1 + usize::from(length))?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        offset += 1 + usize::from(length);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text =
            "# comment\nsearch example\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\nnameserver  ::1 \noptions x";
        let expected: Vec<SocketAddr> =
            vec!["10.0.0.1:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap(), "[::1]:53".parse().unwrap()];
        assert_eq!(parse_resolv_conf(text), expected);
    }

    #[test]
    fn queries_and_answers_round_trip() {
        let query = encode_query(7, "_matrix-fed._tcp.example.org").unwrap();
        assert_eq!(&query[..2], &[0, 7]);
        assert!(encode_query(7, "bad..name").is_none());
        let answer = answer_packet(&query, &[(10, 5, 8448, "a.example.org"), (10, 50, 443, "b.example.org")]);
        let records = parse_response(7, &answer).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1], SrvRecord { priority: 10, weight: 50, port: 443, target: "b.example.org".into() });
        assert!(parse_response(8, &answer).is_none(), "another query's answer");
        assert!(parse_response(7, &answer[..answer.len() - 3]).is_none(), "truncated");
    }

    /// The name asked in `query`.
    pub(crate) fn question_name(query: &[u8]) -> Option<String> {
        read_name(query, 12)
    }

    /// An answer to `query` with `records`, the owner name compressed as a pointer to the
    /// question's.
    pub(crate) fn answer_packet(query: &[u8], records: &[(u16, u16, u16, &str)]) -> Vec<u8> {
        let mut packet = query.to_vec();
        packet[2] = 0x81;
        packet[3] = 0x80;
        packet[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (priority, weight, port, target) in records {
            packet.extend_from_slice(&[0xc0, 12]);
            packet.extend_from_slice(&TYPE_SRV.to_be_bytes());
            packet.extend_from_slice(&CLASS_IN.to_be_bytes());
            packet.extend_from_slice(&300u32.to_be_bytes());
            let mut data = Vec::new();
            for value in [priority, weight, port] {
                data.extend_from_slice(&value.to_be_bytes());
            }
            for label in target.split('.') {
                data.push(label.len() as u8);
                data.extend_from_slice(label.as_bytes());
            }
            data.push(0);
            packet.extend_from_slice(&(data.len() as u16).to_be_bytes());
            packet.extend_from_slice(&data);
        }
        packet
    }
}
