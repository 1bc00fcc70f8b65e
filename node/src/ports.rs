//! A listen address whose port another program holds is refused before
//! anything starts: libp2p binds with `SO_REUSEPORT`, so a second daemon
//! or relay on the same port would otherwise start and split incoming
//! connections with the first. A plain bind (no `SO_REUSEPORT`) of each
//! fixed port finds out; it is released at once.

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use crate::failure::Failure;

/// Refuses (exit 2) the first address whose TCP or UDP port is taken.
pub(crate) fn ensure_free(addrs: &[Multiaddr]) -> Result<(), Failure> {
    for addr in addrs {
        let mut ip = None;
        let mut taken = None;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
                Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
                Protocol::Tcp(port) if port != 0 => {
                    if let Some(ip) = ip {
                        taken = std::net::TcpListener::bind((ip, port)).err();
                    }
                }
                Protocol::Udp(port) if port != 0 => {
                    if let Some(ip) = ip {
                        taken = std::net::UdpSocket::bind((ip, port)).err();
                    }
                }
                _ => {}
            }
        }
        if let Some(e) = taken.filter(|e| e.kind() == std::io::ErrorKind::AddrInUse) {
            return Err(Failure::Usage(format!(
                "{addr}: the port is in use ({e}): another safemeet daemon or relay, or another program, listens there; choose another with --listen"
            )));
        }
    }
    Ok(())
}
