//! The line's public address from a STUN server the owner names (RFC 8489 Binding), never a
//! default one: asking a third party would tell it that a meeting server runs on this line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context, Result};

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const MAGIC_COOKIE: u32 = 0x2112_A442;
const MAPPED_ADDRESS: u16 = 0x0001;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const DEFAULT_PORT: u16 = 3478;

/// The address the server saw this box's request come from. `server` is "host" or "host:port".
pub fn public_address(server: &str) -> Result<IpAddr> {
    let target = if server
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !server.ends_with(']')
    {
        server.to_string()
    } else {
        format!("{server}:{DEFAULT_PORT}")
    };
    let address = target
        .to_socket_addrs()
        .with_context(|| format!("the STUN server {server} does not resolve"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("the STUN server {server} has no IPv4 address"))?;
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("cannot open a UDP socket")?;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .context("cannot set a timeout")?;
    let id: [u8; 12] = crate::secrets::random_bytes()?;
    let request = binding_request(&id);
    let mut answer = [0u8; 576];
    // UDP may lose a packet: three tries, two seconds each.
    for _ in 0..3 {
        socket
            .send_to(&request, address)
            .with_context(|| format!("cannot send to the STUN server {server}"))?;
        if let Ok((len, from)) = socket.recv_from(&mut answer) {
            if from == address {
                return parse_binding_success(&answer[..len], &id)
                    .with_context(|| format!("the STUN server {server} answered oddly"));
            }
        }
    }
    bail!(
        "the STUN server {server} did not answer (UDP {})",
        address.port()
    )
}

fn binding_request(id: &[u8; 12]) -> Vec<u8> {
    let mut request = Vec::with_capacity(20);
    request.extend(BINDING_REQUEST.to_be_bytes());
    request.extend(0u16.to_be_bytes());
    request.extend(MAGIC_COOKIE.to_be_bytes());
    request.extend(id);
    request
}

/// The mapped address of a Binding success response to our transaction `id`.
fn parse_binding_success(message: &[u8], id: &[u8; 12]) -> Result<IpAddr> {
    if message.len() < 20 {
        bail!("a message of {} bytes is too short", message.len());
    }
    let kind = u16::from_be_bytes([message[0], message[1]]);
    let length = u16::from_be_bytes([message[2], message[3]]) as usize;
    if kind != BINDING_SUCCESS || message[4..8] != MAGIC_COOKIE.to_be_bytes() {
        bail!("not a Binding success response (type {kind:#06x})");
    }
    if &message[8..20] != id || message.len() < 20 + length {
        bail!("the response is for another request or cut short");
    }
    let mut rest = &message[20..20 + length];
    let mut plain = None;
    while rest.len() >= 4 {
        let attribute = u16::from_be_bytes([rest[0], rest[1]]);
        let size = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + size).context("an attribute is cut short")?;
        match attribute {
            XOR_MAPPED_ADDRESS => return address(value, true, id),
            MAPPED_ADDRESS => plain = Some(address(value, false, id)?),
            _ => {}
        }
        // Attributes are padded to four bytes.
        rest = rest.get(4 + size.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    plain.context("the response names no address")
}

/// A (XOR-)MAPPED-ADDRESS value: reserved byte, family, port, address.
fn address(value: &[u8], xored: bool, id: &[u8; 12]) -> Result<IpAddr> {
    let mut key = MAGIC_COOKIE.to_be_bytes().to_vec();
    key.extend(id);
    let unmask = |bytes: &[u8]| -> Vec<u8> {
        bytes
            .iter()
            .zip(key.iter())
            .map(|(b, k)| if xored { b ^ k } else { *b })
            .collect()
    };
    match (value.get(1), value.len()) {
        (Some(0x01), 8) => {
            let b = unmask(&value[4..8]);
            Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        }
        (Some(0x02), 20) => {
            let b: [u8; 16] = unmask(&value[4..20]).try_into().expect("16 bytes");
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => bail!("an address of an unknown family"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(id: &[u8; 12], attributes: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let body: Vec<u8> = attributes
            .iter()
            .flat_map(|(kind, value)| {
                let mut a = kind.to_be_bytes().to_vec();
                a.extend((value.len() as u16).to_be_bytes());
                a.extend(value);
                a.resize(a.len().div_ceil(4) * 4, 0);
                a
            })
            .collect();
        let mut m = BINDING_SUCCESS.to_be_bytes().to_vec();
        m.extend((body.len() as u16).to_be_bytes());
        m.extend(MAGIC_COOKIE.to_be_bytes());
        m.extend(id);
        m.extend(body);
        m
    }

    #[test]
    fn the_xored_address_wins_over_the_plain_one() {
        let id = [7u8; 12];
        // 198.51.99.10 XOR the cookie's first four bytes; port 1234 XOR 0x2112.
        let ip = [198 ^ 0x21, 51 ^ 0x12, 99 ^ 0xA4, 10 ^ 0x42];
        let xored = [
            vec![0, 1],
            (1234u16 ^ 0x2112).to_be_bytes().to_vec(),
            ip.to_vec(),
        ]
        .concat();
        let plain = vec![0, 1, 0, 80, 10, 0, 0, 1];
        let message = response(
            &id,
            &[
                (0x8022, b"coturn".to_vec()),
                (MAPPED_ADDRESS, plain),
                (XOR_MAPPED_ADDRESS, xored),
            ],
        );
        assert_eq!(
            parse_binding_success(&message, &id).unwrap(),
            "198.51.99.10".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn an_answer_to_another_request_is_refused() {
        let message = response(
            &[1u8; 12],
            &[(MAPPED_ADDRESS, vec![0, 1, 0, 80, 10, 0, 0, 1])],
        );
        assert!(parse_binding_success(&message, &[2u8; 12]).is_err());
        assert!(parse_binding_success(&message[..10], &[1u8; 12]).is_err());
    }

    #[test]
    fn the_request_is_a_binding_request_with_the_cookie() {
        let request = binding_request(&[9u8; 12]);
        assert_eq!(request.len(), 20);
        assert_eq!(&request[..4], &[0, 1, 0, 0]);
        assert_eq!(&request[4..8], &MAGIC_COOKIE.to_be_bytes());
    }
}
