//! The host's network interfaces when netlink is not allowed.
//!
//! libp2p watches interfaces over a netlink socket, for mDNS and for listeners on a wildcard
//! address (`0.0.0.0`, `::`). Sandboxes and containers may refuse netlink sockets (systemd's
//! `RestrictAddressFamilies=` without `AF_NETLINK`, seccomp profiles), and libp2p then fails to
//! start. This module says whether netlink is refused, and lists the interface addresses with
//! calls that need no netlink (`SIOCGIFCONF` on an IPv4 socket, `/proc/net/if_inet6`), so the
//! node can listen on each of them instead of the wildcard.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

/// Why netlink sockets cannot be used here, or `None` if they can: opens and binds a route
/// netlink socket the way the interface watcher does, and closes it.
#[cfg(target_os = "linux")]
pub(super) fn netlink_refusal() -> Option<io::Error> {
    // SAFETY: plain socket calls on a descriptor this function owns and closes; the address is
    // a zeroed `sockaddr_nl` with its family and groups set, passed with its own size.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Some(io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        let bound = libc::bind(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        let refusal = (bound != 0).then(io::Error::last_os_error);
        libc::close(fd);
        refusal
    }
}

/// Elsewhere libp2p does not use netlink.
#[cfg(not(target_os = "linux"))]
pub(super) fn netlink_refusal() -> Option<io::Error> {
    None
}

/// The IPv4 addresses the interfaces have now (loopback included), from `SIOCGIFCONF`.
#[cfg(target_os = "linux")]
fn ipv4_addresses() -> io::Result<Vec<Ipv4Addr>> {
    const MAX_INTERFACES: usize = 256;
    // SAFETY: `ifreq` and `ifconf` are plain C structs for which all-zero bytes are valid; the
    // kernel writes at most `ifc_len` bytes into `requests` and reports how many it wrote; an
    // entry is read as `sockaddr_in` only when its family says AF_INET (both are C socket
    // address structs, `ifru_addr` is large enough for either).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut requests: Vec<libc::ifreq> = vec![std::mem::zeroed(); MAX_INTERFACES];
        let mut conf: libc::ifconf = std::mem::zeroed();
        conf.ifc_len = (requests.len() * std::mem::size_of::<libc::ifreq>()) as libc::c_int;
        conf.ifc_ifcu.ifcu_req = requests.as_mut_ptr();
        let result = libc::ioctl(fd, libc::SIOCGIFCONF, &mut conf);
        let error = io::Error::last_os_error();
        libc::close(fd);
        if result < 0 {
            return Err(error);
        }
        let count =
            (conf.ifc_len.max(0) as usize / std::mem::size_of::<libc::ifreq>()).min(requests.len());
        let mut addresses = Vec::new();
        for request in &requests[..count] {
            let addr = &request.ifr_ifru.ifru_addr;
            if i32::from(addr.sa_family) == libc::AF_INET {
                let v4 = &*(addr as *const libc::sockaddr).cast::<libc::sockaddr_in>();
                let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                if !addresses.contains(&ip) {
                    addresses.push(ip);
                }
            }
        }
        Ok(addresses)
    }
}

#[cfg(not(target_os = "linux"))]
fn ipv4_addresses() -> io::Result<Vec<Ipv4Addr>> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The IPv6 addresses the interfaces have now, from `/proc/net/if_inet6`; link-local ones are
/// left out (a multiaddr cannot carry their interface).
fn ipv6_addresses() -> io::Result<Vec<Ipv6Addr>> {
    let text = match std::fs::read_to_string("/proc/net/if_inet6") {
        Ok(text) => text,
        // No IPv6 on this host.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(parse_if_inet6(&text))
}

/// The global and loopback addresses of `/proc/net/if_inet6` text
/// (`<32 hex digits> <index> <prefix length> <scope> <flags> <name>` per line).
fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut addresses = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(hex), Some(_), Some(_), Some(scope)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(bits) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        // Scope 0x20 is link-local.
        if hex.len() != 32 || scope == "20" {
            continue;
        }
        let ip = Ipv6Addr::from(bits);
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    addresses
}

/// What `listen` becomes when wildcard listeners cannot watch interfaces: each wildcard
/// address is replaced by the same address on every interface address of its family (found
/// now; addresses added later are not listened on). Other addresses stay as they are.
pub(super) fn expand_wildcards(listen: &[Multiaddr]) -> io::Result<Vec<Multiaddr>> {
    let wildcard = |addr: &Multiaddr| match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => ip.is_unspecified(),
        _ => false,
    };
    if !listen.iter().any(wildcard) {
        return Ok(listen.to_vec());
    }
    let v4 = if listen
        .iter()
        .any(|a| matches!(a.iter().next(), Some(Protocol::Ip4(ip)) if ip.is_unspecified()))
    {
        ipv4_addresses()?
    } else {
        Vec::new()
    };
    let v6 = if listen
        .iter()
        .any(|a| matches!(a.iter().next(), Some(Protocol::Ip6(ip)) if ip.is_unspecified()))
    {
        ipv6_addresses()?
    } else {
        Vec::new()
    };
    let mut expanded = Vec::new();
    for addr in listen {
        if !wildcard(addr) {
            expanded.push(addr.clone());
            continue;
        }
        let ips: Vec<IpAddr> = match addr.iter().next() {
            Some(Protocol::Ip4(_)) => v4.iter().copied().map(IpAddr::V4).collect(),
            _ => v6.iter().copied().map(IpAddr::V6).collect(),
        };
        for ip in ips {
            let mut specific = Multiaddr::empty().with(Protocol::from(ip));
            for protocol in addr.iter().skip(1) {
                specific.push(protocol);
            }
            expanded.push(specific);
        }
    }
    Ok(expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_inet6_lines() {
        let text = "\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000000000000000001 02 40 20 80     eth0
20010db8000000000000000000000002 02 40 00 00     eth0
garbage
";
        assert_eq!(
            parse_if_inet6(text),
            vec![
                Ipv6Addr::LOCALHOST,
                "2001:db8::2".parse::<Ipv6Addr>().unwrap()
            ]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn wildcards_become_interface_addresses() {
        let listen: Vec<Multiaddr> = vec![
            "/ip4/0.0.0.0/tcp/4011".parse().unwrap(),
            "/ip4/127.0.0.1/udp/4011/quic-v1".parse().unwrap(),
        ];
        let expanded = expand_wildcards(&listen).expect("interfaces listed");
        // Loopback is always there; the specific address is kept as it was.
        assert!(expanded.contains(&"/ip4/127.0.0.1/tcp/4011".parse().unwrap()));
        assert!(expanded.contains(&listen[1]));
        assert!(expanded.iter().all(|a| !a.to_string().contains("0.0.0.0")));
    }
}
