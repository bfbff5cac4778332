//! The grammar of `--forward-allow`: the targets `Forward` may call, parsed
//! once into [`AllowedTarget`]s.

use std::net::IpAddr;
use std::str::FromStr;

/// Why a `--forward-allow` entry does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    /// The network part of `ADDRESS/PREFIX` is not an address.
    #[error("`{entry}`: `{network}` is not an IP address")]
    NotAnAddress {
        /// The entry.
        entry: String,
        /// Its network part.
        network: String,
    },
    /// The prefix is longer than the address.
    #[error("`{entry}`: the prefix is not 0 to {bits}")]
    Prefix {
        /// The entry.
        entry: String,
        /// The address's length in bits.
        bits: u8,
    },
    /// Neither a host, a host and port, nor a network.
    #[error("`{0}` is not a host, host:port or network")]
    NotATarget(String),
}

/// One target `Forward` may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedTarget {
    /// A host name or address, any port.
    Host(String),
    /// A host name or address and one port.
    HostPort(String, u16),
    /// Addresses in a network (targets given as addresses only).
    Network(IpAddr, u8),
}

impl FromStr for AllowedTarget {
    type Err = AllowlistError;

    /// `host`, `host:port`, `[v6]:port`, or a CIDR network (`10.0.0.0/8`, `fd00::/8`).
    fn from_str(entry: &str) -> Result<Self, AllowlistError> {
        let entry = entry.trim();
        if let Some((network, prefix)) = entry.split_once('/') {
            let network: IpAddr = network.parse().map_err(|_| AllowlistError::NotAnAddress {
                entry: entry.to_owned(),
                network: network.to_owned(),
            })?;
            let bits = if network.is_ipv4() { 32 } else { 128 };
            let prefix = prefix
                .parse::<u8>()
                .ok()
                .filter(|&prefix| prefix <= bits)
                .ok_or_else(|| AllowlistError::Prefix {
                    entry: entry.to_owned(),
                    bits,
                })?;
            return Ok(Self::Network(network, prefix));
        }
        match split_host_port(entry) {
            Some((host, port)) => Ok(Self::HostPort(host.to_owned(), port)),
            None if entry.is_empty() || entry.contains(['/', ' ']) => {
                Err(AllowlistError::NotATarget(entry.to_owned()))
            }
            None => Ok(Self::Host(
                entry
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            )),
        }
    }
}

/// Whether `allowed` lets `host` and `port` be called.
pub(crate) fn allows(allowed: &[AllowedTarget], host: &str, port: u16) -> bool {
    let address = host.parse::<IpAddr>().ok();
    allowed.iter().any(|target| match target {
        AllowedTarget::Host(name) => name.eq_ignore_ascii_case(host),
        AllowedTarget::HostPort(name, allowed_port) => {
            *allowed_port == port && name.eq_ignore_ascii_case(host)
        }
        AllowedTarget::Network(network, prefix) => {
            address.is_some_and(|address| in_network(address, *network, *prefix))
        }
    })
}

/// `host:port` or `[v6]:port` into host and port.
pub(crate) fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?,
        // A bare IPv6 address has more colons, and no port.
        None if host.contains(':') => return None,
        None => host,
    };
    Some((host, port.parse().ok()?))
}

fn in_network(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: &[&str]) -> Result<Vec<AllowedTarget>, AllowlistError> {
        entries.iter().map(|entry| entry.parse()).collect()
    }

    #[test]
    fn the_allowlist_takes_hosts_ports_and_networks() {
        let allow = parse(&[
            "echo-b",
            "echo-c:50051",
            "10.1.0.0/16",
            "[::1]:7000",
            "fd00::/8",
        ])
        .unwrap();
        assert!(allows(&allow, "echo-b", 1));
        assert!(allows(&allow, "ECHO-B", 50051));
        assert!(allows(&allow, "echo-c", 50051));
        assert!(!allows(&allow, "echo-c", 50052));
        assert!(allows(&allow, "10.1.255.3", 80));
        assert!(!allows(&allow, "10.2.0.1", 80));
        assert!(allows(&allow, "::1", 7000));
        assert!(!allows(&allow, "::1", 7001));
        assert!(allows(&allow, "fd12::1", 1));
        assert!(!allows(&allow, "169.254.169.254", 80), "not listed");
        assert!(allows(&parse(&["0.0.0.0/0"]).unwrap(), "8.8.8.8", 53));
        for bad in ["10.0.0.0/33", "nope/8", "", "a b"] {
            assert!(parse(&[bad]).is_err(), "{bad:?}");
        }
        assert_eq!(split_host_port("[::1]:50051"), Some(("::1", 50051)));
        assert_eq!(split_host_port("::1"), None);
        assert_eq!(split_host_port("host"), None);
    }
}
