//! Who the client is behind reverse proxies: `SIGNALPOST_TRUST_PROXY` names the proxies whose
//! `X-Forwarded-For` is believed, and the client is found by walking that header from the
//! right past them. Each proxy appends the address it saw, so the entries a trusted proxy
//! wrote are true and everything left of the first untrusted address is the client's to
//! invent.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

/// Whose `X-Forwarded-For` the server believes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TrustProxy {
    /// Nobody's (`false`, the default): the client is the connection's peer.
    #[default]
    Nobody,
    /// The connection's peer, whoever it is (`true`, kept from before proxies could be
    /// named): the client is the last `X-Forwarded-For` entry. Right only when nothing but
    /// the proxy can reach the server.
    AnyPeer,
    /// These addresses and networks (a comma-separated list of addresses and CIDRs).
    Named(Vec<IpNet>),
}

/// A `SIGNALPOST_TRUST_PROXY` entry that is neither an address nor a network.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAnAddress(pub String);

impl FromStr for TrustProxy {
    type Err = NotAnAddress;

    fn from_str(value: &str) -> Result<Self, NotAnAddress> {
        match value.trim() {
            "" | "false" | "0" | "no" => Ok(Self::Nobody),
            "true" | "1" | "yes" => Ok(Self::AnyPeer),
            list => list
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| {
                    item.parse::<IpAddr>()
                        .map(|address| IpNet::from(address.to_canonical()))
                        .or_else(|_| item.parse::<IpNet>().map(|network| network.trunc()))
                        .map_err(|_| NotAnAddress(item.to_owned()))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Named),
        }
    }
}

impl TrustProxy {
    /// Whether `address` is a trusted proxy, whose connections carry many clients.
    pub fn is_proxy(&self, address: IpAddr) -> bool {
        match self {
            Self::Nobody => false,
            Self::AnyPeer => true,
            Self::Named(networks) => {
                let address = address.to_canonical();
                networks.iter().any(|network| network.contains(&address))
            }
        }
    }

    /// The client behind a request that came from `peer` (unknown in Lambda) with these
    /// `X-Forwarded-For` entries, oldest first.
    pub fn client<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded: impl DoubleEndedIterator<Item = &'a str>,
    ) -> Option<IpAddr> {
        let peer = peer.map(|peer| peer.to_canonical());
        match self {
            Self::Nobody => peer,
            Self::AnyPeer => forwarded.last().and_then(forwarded_address).or(peer),
            Self::Named(_) => {
                let mut client = peer?;
                // An entry that is not an address ends the walk: nothing left of it can be
                // believed, and the nearest hop known is the proxy that passed it on.
                for entry in forwarded.rev() {
                    if !self.is_proxy(client) {
                        break;
                    }
                    match forwarded_address(entry) {
                        Some(address) => client = address,
                        None => break,
                    }
                }
                Some(client)
            }
        }
    }
}

/// One `X-Forwarded-For` entry: an address, which some proxies write with a port.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
        .or_else(|_| {
            entry
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .unwrap_or(entry)
                .parse::<IpAddr>()
        })
        .ok()
        .map(|address| address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn client(trust: &str, peer: &str, forwarded: &str) -> Option<IpAddr> {
        let trust: TrustProxy = trust.parse().expect("valid");
        let entries: Vec<&str> = forwarded.split(',').filter(|e| !e.is_empty()).collect();
        trust.client(Some(ip(peer)), entries.into_iter())
    }

    #[test]
    fn parses_booleans_and_lists_of_addresses_and_networks() {
        assert_eq!("false".parse(), Ok(TrustProxy::Nobody));
        assert_eq!("true".parse(), Ok(TrustProxy::AnyPeer));
        assert_eq!(
            " 10.0.0.0/8, 192.0.2.1 ,::1,".parse(),
            Ok(TrustProxy::Named(vec![
                "10.0.0.0/8".parse().expect("net"),
                "192.0.2.1/32".parse().expect("net"),
                "::1/128".parse().expect("net"),
            ]))
        );
        assert_eq!(
            "10.0.0.0/8, proxy.example".parse::<TrustProxy>(),
            Err(NotAnAddress("proxy.example".into()))
        );
        assert!("10.0.0.0/33".parse::<TrustProxy>().is_err());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(
            client("false", "198.51.100.9", "1.1.1.1"),
            Some(ip("198.51.100.9"))
        );
        assert_eq!(
            client("10.0.0.0/8", "198.51.100.9", "1.1.1.1, 10.0.0.1"),
            Some(ip("198.51.100.9"))
        );
    }

    #[test]
    fn walks_from_the_right_past_trusted_proxies() {
        // The client forged 1.1.1.1; the edge proxy 10.0.0.1 saw 203.0.113.7.
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.2", "1.1.1.1, 203.0.113.7, 10.0.0.1"),
            Some(ip("203.0.113.7"))
        );
        // No header: the proxy itself, so its clients share one budget rather than none.
        assert_eq!(client("10.0.0.2", "10.0.0.2", ""), Some(ip("10.0.0.2")));
        // Every entry trusted: the farthest one.
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.2", "10.0.0.3"),
            Some(ip("10.0.0.3"))
        );
        // Garbage stops the walk at the proxy that passed it on.
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.2", "1.1.1.1, bogus"),
            Some(ip("10.0.0.2"))
        );
        // Ports and brackets, and IPv4 written as IPv6.
        assert_eq!(
            client("::ffff:10.0.0.2", "10.0.0.2", "[2001:db8::1]:4711"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            client("10.0.0.2", "::ffff:10.0.0.2", "192.0.2.5:80"),
            Some(ip("192.0.2.5"))
        );
    }

    #[test]
    fn true_believes_one_hop_from_any_peer() {
        assert_eq!(
            client("true", "198.51.100.9", "1.1.1.1, 203.0.113.7"),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(client("true", "198.51.100.9", ""), Some(ip("198.51.100.9")));
    }

    #[test]
    fn knows_its_proxies() {
        let trust: TrustProxy = "10.0.0.0/8".parse().expect("valid");
        assert!(trust.is_proxy(ip("10.1.2.3")) && trust.is_proxy(ip("::ffff:10.1.2.3")));
        assert!(!trust.is_proxy(ip("11.0.0.1")));
        assert!(TrustProxy::AnyPeer.is_proxy(ip("11.0.0.1")));
        assert!(!TrustProxy::Nobody.is_proxy(ip("10.1.2.3")));
    }
}
