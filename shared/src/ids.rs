//! Identifiers, parsed once at the edge so nothing past a handler sees an invalid one.
//!
//! Rooms and client message ids are chosen by clients; peer and message ids are ULIDs minted
//! here, so they sort by creation time in both stores (handy when debugging), but clients treat
//! them as opaque and so do we when parsing: any string of the identifier alphabet is accepted,
//! and one that names nobody in the room is a 404, not a 400.

use std::fmt;

use serde::Serialize;
use thiserror::Error;

/// The longest identifier the contract allows.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not an identifier.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{what} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
pub struct InvalidId {
    what: &'static str,
}

fn is_identifier(value: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses a client-supplied value.
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                if is_identifier(value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(InvalidId { what: $what })
                }
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::parse(&value).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// A room name: rooms exist from their first join.
    RoomId,
    "a room"
);
identifier!(
    /// A peer of a room, minted by the server at join.
    PeerId,
    "a peer id"
);
identifier!(
    /// A server message id, the same in every recipient's inbox.
    MessageId,
    "a message id"
);
identifier!(
    /// A sender's own message id, which makes a post idempotent.
    ClientMessageId,
    "a message id"
);

/// A ULID greater than every one minted before by this process, even within one millisecond
/// (plain ULIDs are random within a millisecond), so ids sort in the order they were minted.
fn monotonic_ulid() -> String {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut generator = GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    generator
        .get_or_insert_with(ulid::Generator::new)
        .generate()
        // Only 2^80 ids in one millisecond overflow; fall back to a plain ULID.
        .unwrap_or_else(|_| ulid::Ulid::new())
        .to_string()
}

impl PeerId {
    /// A fresh, time-ordered peer id.
    pub fn mint() -> Self {
        Self(monotonic_ulid())
    }
}

impl MessageId {
    /// A fresh, time-ordered message id.
    pub fn mint() -> Self {
        Self(monotonic_ulid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_alphabet_and_rejects_the_rest() {
        assert!(RoomId::parse("room-1_A").is_ok());
        assert!(RoomId::parse(&"a".repeat(64)).is_ok());
        for bad in ["", " ", "a b", "a/b", "..", "é", "a\u{0}", &"a".repeat(65)] {
            assert!(RoomId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn minted_ids_parse_and_sort_in_minting_order() {
        let minted: Vec<PeerId> = (0..1000).map(|_| PeerId::mint()).collect();
        assert!(PeerId::parse(minted[0].as_str()).is_ok());
        assert!(
            minted.windows(2).all(|pair| pair[0] < pair[1]),
            "same-millisecond ids keep their order"
        );
    }
}
