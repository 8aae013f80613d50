//! Signed tokens: peer tokens returned by join, and join tokens for gated rooms.
//!
//! Both are JWTs (HS256) signed with the server secret, so any backend with a JWT library can
//! mint join tokens (the README documents the claims). They are verified without a store
//! read; `typ` keeps one kind from passing as the other, and `room` binds both to one room.
//! Expiry is checked with no leeway: an expired token is refused at once.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{PeerId, RoomId};

/// Longest token we bother to verify; real ones are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 2048;

/// What a verified peer token grants: acting as `peer` in `room` until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerGrant {
    pub room: RoomId,
    pub peer: PeerId,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Why a token was refused; the message is safe to show the client.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed or its signature is wrong")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    typ: TokenKind,
    room: RoomId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<PeerId>,
    exp: i64,
}

#[derive(Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum TokenKind {
    Peer,
    Join,
}

/// Issues and verifies tokens with one secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    /// Keys derived from the server secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A token letting `peer` act in `room` until `expires_at` (Unix seconds).
    pub fn issue_peer(&self, room: &RoomId, peer: &PeerId, expires_at: i64) -> String {
        self.issue(&Claims {
            typ: TokenKind::Peer,
            room: room.clone(),
            sub: Some(peer.clone()),
            exp: expires_at,
        })
    }

    /// A token letting anyone join `room` until `expires_at` (Unix seconds).
    pub fn issue_join(&self, room: &RoomId, expires_at: i64) -> String {
        self.issue(&Claims {
            typ: TokenKind::Join,
            room: room.clone(),
            sub: None,
            exp: expires_at,
        })
    }

    fn issue(&self, claims: &Claims) -> String {
        // Serialising a struct of strings and integers cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .unwrap_or_default()
    }

    /// Verifies a peer token.
    pub fn verify_peer(&self, token: &str) -> Result<PeerGrant, TokenError> {
        let claims = self.verify(token, TokenKind::Peer)?;
        let peer = claims.sub.ok_or(TokenError::Invalid)?;
        Ok(PeerGrant {
            room: claims.room,
            peer,
            expires_at: claims.exp,
        })
    }

    /// Verifies a join token and returns the room it opens.
    pub fn verify_join(&self, token: &str) -> Result<RoomId, TokenError> {
        Ok(self.verify(token, TokenKind::Join)?.room)
    }

    fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?
            .claims;
        if claims.typ == kind {
            Ok(claims)
        } else {
            Err(TokenError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_millis;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).expect("valid room")
    }

    fn in_an_hour() -> i64 {
        now_millis() / 1000 + 3600
    }

    #[test]
    fn peer_token_round_trips() {
        let keys = TokenKeys::new(b"secret");
        let peer = PeerId::mint();
        let token = keys.issue_peer(&room("r"), &peer, in_an_hour());
        let grant = keys.verify_peer(&token).expect("valid token");
        assert_eq!(grant.room, room("r"));
        assert_eq!(grant.peer, peer);
    }

    #[test]
    fn refuses_forged_expired_and_swapped_tokens() {
        let keys = TokenKeys::new(b"secret");
        let peer = PeerId::mint();
        let forged = TokenKeys::new(b"other").issue_peer(&room("r"), &peer, in_an_hour());
        assert_eq!(keys.verify_peer(&forged), Err(TokenError::Invalid));

        let expired = keys.issue_peer(&room("r"), &peer, now_millis() / 1000 - 1);
        assert_eq!(keys.verify_peer(&expired), Err(TokenError::Expired));

        let join = keys.issue_join(&room("r"), in_an_hour());
        assert_eq!(keys.verify_peer(&join), Err(TokenError::Invalid));
        assert_eq!(keys.verify_join(&join), Ok(room("r")));
        let peer_token = keys.issue_peer(&room("r"), &peer, in_an_hour());
        assert_eq!(keys.verify_join(&peer_token), Err(TokenError::Invalid));

        let mut truncated = peer_token.clone();
        truncated.truncate(peer_token.len() - 3);
        assert_eq!(keys.verify_peer(&truncated), Err(TokenError::Invalid));
        assert_eq!(keys.verify_peer(""), Err(TokenError::Invalid));
        assert_eq!(
            keys.verify_peer(&"a".repeat(5000)),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn refuses_unsigned_tokens() {
        // {"alg":"none"} with valid claims and an empty signature.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64.encode(
            format!(
                r#"{{"typ":"peer","room":"r","sub":"p","exp":{}}}"#,
                in_an_hour()
            )
            .as_bytes(),
        );
        let keys = TokenKeys::new(b"secret");
        assert_eq!(
            keys.verify_peer(&format!("{header}.{claims}.")),
            Err(TokenError::Invalid)
        );
    }
}
