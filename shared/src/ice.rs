//! ICE servers handed to clients: STUN URLs as configured, and TURN with time-limited
//! credentials in the coturn REST convention (`use-auth-secret`):
//! `username = "<unix expiry>:<peer>"`, `credential = base64(HMAC-SHA1(secret, username))`.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;

use crate::ids::PeerId;

/// One entry of `iceServers`, shaped like the browser's RTCIceServer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// TURN relays sharing one REST secret with this server.
#[derive(Clone)]
pub struct TurnConfig {
    pub urls: Vec<String>,
    pub secret: String,
    /// Seconds a credential is valid.
    pub ttl: u64,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The ICE servers for `peer`, with TURN credentials expiring `ttl` seconds after `now`
/// (Unix seconds). Returns the list and that expiry.
pub fn ice_servers(
    stun_urls: &[String],
    turn: Option<&TurnConfig>,
    peer: &PeerId,
    now: i64,
) -> (Vec<IceServer>, i64) {
    let mut servers = Vec::new();
    if !stun_urls.is_empty() {
        servers.push(IceServer {
            urls: stun_urls.to_vec(),
            username: None,
            credential: None,
        });
    }
    let ttl = turn.map_or(3600, |turn| turn.ttl);
    let expires_at = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
    if let Some(turn) = turn {
        let username = format!("{expires_at}:{peer}");
        servers.push(IceServer {
            urls: turn.urls.clone(),
            credential: Some(turn_credential(&turn.secret, &username)),
            username: Some(username),
        });
    }
    (servers, expires_at)
}

/// coturn's `use-auth-secret` password for `username`.
pub fn turn_credential(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coturn_reference_vector() {
        // Computed independently with: printf %s '1764140400:alice' |
        //   openssl dgst -sha1 -hmac 'north' -binary | base64
        assert_eq!(
            turn_credential("north", "1764140400:alice"),
            "DPgT66j2R606RlCppslKYXAaI4A="
        );
    }

    #[test]
    fn builds_stun_and_turn_entries() {
        let turn = TurnConfig {
            urls: vec!["turn:turn.example.org:3478".into()],
            secret: "north".into(),
            ttl: 600,
        };
        let peer = PeerId::parse("alice").expect("valid");
        let (servers, expires_at) = ice_servers(
            &["stun:stun.example.org".into()],
            Some(&turn),
            &peer,
            1_764_139_800,
        );
        assert_eq!(expires_at, 1_764_140_400);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].username.as_deref(), Some("1764140400:alice"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some("DPgT66j2R606RlCppslKYXAaI4A=")
        );
        assert!(format!("{turn:?}").contains("redacted") && !format!("{turn:?}").contains("north"));
        let (none, _) = ice_servers(&[], None, &peer, 0);
        assert!(none.is_empty());
    }
}
