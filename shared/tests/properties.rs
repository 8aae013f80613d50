//! Property tests of what hostile clients control directly: post bodies, poll cursors, tokens
//! and identifiers. Each property runs a few hundred cases by default so CI stays fast; set
//! `PROPTEST_CASES` for a longer session (the README gives the last long run).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;
use serde_json::value::RawValue;
use signalpost_shared::clock::now_millis;
use signalpost_shared::cursor::Cursor;
use signalpost_shared::ids::{ClientMessageId, MAX_ID_LEN, MessageId, PeerId, RoomId};
use signalpost_shared::message::{
    MAX_APP_DATA, MAX_BATCH, MAX_CANDIDATE_DATA, MAX_DESCRIPTION_DATA, MessageKind, Outgoing,
    parse_post,
};
use signalpost_shared::token::{TokenError, TokenKeys};

const SECRET: &[u8] = b"property-test-secret";

/// `cases` unless `PROPTEST_CASES` says otherwise.
fn cases(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

// ---------------------------------------------------------------------------------------------
// Post bodies

/// Checks a parsed message against the contract's per-type rules, independently of the parser.
fn satisfies_rules(message: &Outgoing) -> Result<(), String> {
    let data: Value = serde_json::from_str::<Box<RawValue>>(&message.data)
        .map_err(|error| format!("data is not JSON: {error}"))
        .map(|raw| serde_json::from_str(raw.get()).unwrap_or(Value::Null))?;
    let size = message.data.len();
    let described = |limit: usize| -> Result<(), String> {
        if size > limit {
            return Err(format!("{size} bytes of data over {limit}"));
        }
        Ok(())
    };
    match message.kind {
        MessageKind::Offer | MessageKind::Answer => {
            described(MAX_DESCRIPTION_DATA)?;
            let object = data.as_object().ok_or("description is not an object")?;
            if object.len() != 2
                || object.get("type").and_then(Value::as_str) != Some(message.kind.as_str())
                || !object
                    .get("sdp")
                    .and_then(Value::as_str)
                    .is_some_and(|sdp| sdp.starts_with("v=0"))
            {
                return Err(format!("bad description {data}"));
            }
            message.to.as_ref().ok_or("no recipient")?;
        }
        MessageKind::Candidate => {
            described(MAX_CANDIDATE_DATA)?;
            let object = data.as_object().ok_or("candidate is not an object")?;
            let candidate = object
                .get("candidate")
                .and_then(Value::as_str)
                .ok_or("no candidate string")?;
            if !(candidate.is_empty() || candidate.starts_with("candidate:")) {
                return Err(format!("bad candidate {candidate:?}"));
            }
            let line = object.get("sdpMLineIndex").unwrap_or(&Value::Null);
            let whole = line
                .as_f64()
                .is_some_and(|index| index.fract() == 0.0 && (0.0..=65_535.0).contains(&index));
            if !(line.is_null() || whole) {
                return Err(format!("bad sdpMLineIndex {line}"));
            }
            let known = ["candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"];
            if object.keys().any(|key| !known.contains(&key.as_str())) {
                return Err(format!("unknown candidate member in {data}"));
            }
            message.to.as_ref().ok_or("no recipient")?;
        }
        MessageKind::Bye => {
            described(MAX_APP_DATA)?;
            if !(data.is_null() || data.is_object()) {
                return Err(format!("bye data {data}"));
            }
        }
        MessageKind::Message => described(MAX_APP_DATA)?,
        MessageKind::PeerJoined | MessageKind::PeerLeft => {
            return Err("a server-only type was accepted".into());
        }
    }
    Ok(())
}

fn check_parsed(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(messages) = parse_post(body) {
        prop_assert!((1..=MAX_BATCH).contains(&messages.len()));
        for message in &messages {
            if let Err(broken) = satisfies_rules(message) {
                return Err(TestCaseError::fail(format!(
                    "accepted a message that breaks the rules ({broken}): {:?}",
                    String::from_utf8_lossy(body)
                )));
            }
        }
    }
    Ok(())
}

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("v=0"),
            Just("v=0\r\n"),
            Just("candidate:"),
            Just("offer"),
            Just("answer"),
            Just("")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Field names a message could have, and some it could not.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "to", "type", "data", "id", "messages", "from", "sdp", "candidate", "sdpMid",
            "sdpMLineIndex", "usernameFragment",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

/// A JSON object shaped like a message, with every field sometimes right and sometimes wrong.
fn message_like() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        prop::sample::select(vec![
            "offer",
            "answer",
            "candidate",
            "bye",
            "message",
            "peer-joined",
            "peer-left",
        ])
        .prop_map(Value::from),
        json_value(),
    ];
    let to = prop_oneof!["[A-Za-z0-9_-]{1,64}".prop_map(Value::from), json_value()];
    let data = prop_oneof![
        (
            prop::sample::select(vec!["offer", "answer", "pranswer"]),
            ".{0,16}"
        )
            .prop_map(|(kind, sdp)| serde_json::json!({"type": kind, "sdp": sdp})),
        (".{0,16}", json_value()).prop_map(|(candidate, mid)| serde_json::json!({
            "candidate": candidate, "sdpMid": mid
        })),
        json_value(),
    ];
    (
        prop::option::of(kind),
        prop::option::of(to),
        prop::option::of(data),
        prop::option::of(json_value()),
        prop::option::of((field_name(), json_value())),
    )
        .prop_map(|(kind, to, data, id, extra)| {
            let mut object = serde_json::Map::new();
            for (key, value) in [("type", kind), ("to", to), ("data", data), ("id", id)] {
                if let Some(value) = value {
                    object.insert(key.into(), value);
                }
            }
            if let Some((key, value)) = extra {
                object.insert(key, value);
            }
            Value::Object(object)
        })
}

/// One valid message as `(JSON text, the data text it carries)`: the data is formatted with
/// arbitrary whitespace, which must survive byte for byte.
fn valid_message() -> impl Strategy<Value = (String, Outgoing)> {
    let peer = "[A-Za-z0-9_-]{1,64}";
    let client_id = prop::option::of("[A-Za-z0-9_-]{1,64}");
    let space = prop::sample::select(vec!["", " ", "\n", "\t", "  \r\n"]);
    let text = ".{0,40}";
    let description = (
        prop::sample::select(vec![MessageKind::Offer, MessageKind::Answer]),
        text,
        space.clone(),
    )
        .prop_map(|(kind, rest, gap)| {
            let sdp = serde_json::to_string(&format!("v=0\r\n{rest}")).unwrap_or_default();
            (
                kind,
                format!(
                    r#"{{{gap}"type"{gap}:"{}",{gap}"sdp":{gap}{sdp}{gap}}}"#,
                    kind.as_str()
                ),
            )
        });
    let candidate = (
        text,
        prop::option::of(text),
        prop::option::of((any::<u16>(), any::<bool>())),
        space.clone(),
    )
        .prop_map(|(rest, mid, line, gap)| {
            let candidate = if rest.is_empty() {
                String::new()
            } else {
                format!("candidate:{rest}")
            };
            let mut text = format!(
                "{{{gap}\"candidate\":{}",
                serde_json::to_string(&candidate).unwrap_or_default()
            );
            if let Some(mid) = mid {
                text += &format!(
                    ",{gap}\"sdpMid\":{}",
                    serde_json::to_string(&mid).unwrap_or_default()
                );
            }
            if let Some((line, as_float)) = line {
                let point = if as_float { ".0" } else { "" };
                text += &format!(",\"sdpMLineIndex\":{gap}{line}{point}");
            }
            (MessageKind::Candidate, text + gap + "}")
        });
    let app = (json_value(), any::<bool>()).prop_map(|(value, pretty)| {
        let text = if pretty {
            serde_json::to_string_pretty(&value)
        } else {
            serde_json::to_string(&value)
        };
        (MessageKind::Message, text.unwrap_or_default())
    });
    let bye = prop_oneof![
        Just((MessageKind::Bye, "null".to_owned())),
        (text, space).prop_map(|(why, gap)| {
            (
                MessageKind::Bye,
                format!(
                    "{{{gap}\"why\":{gap}{}}}",
                    serde_json::to_string(&why).unwrap_or_default()
                ),
            )
        }),
    ];
    (
        prop_oneof![description, candidate, app, bye],
        peer,
        any::<bool>(),
        client_id,
    )
        .prop_map(|((kind, data), to, broadcast, client_id)| {
            let needs_to = matches!(
                kind,
                MessageKind::Offer | MessageKind::Answer | MessageKind::Candidate
            );
            let to = (needs_to || !broadcast).then(|| PeerId::parse(&to).expect("valid peer"));
            let mut json = format!(r#"{{"type":"{}","data":{data}"#, kind.as_str());
            if let Some(to) = &to {
                json += &format!(r#","to":"{to}""#);
            }
            if let Some(id) = &client_id {
                json += &format!(r#","id":"{id}""#);
            }
            json.push('}');
            let expected = Outgoing {
                to,
                kind,
                data,
                client_id: client_id.map(|id| ClientMessageId::parse(&id).expect("valid id")),
            };
            (json, expected)
        })
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check_parsed(&body)?;
    }

    #[test]
    fn arbitrary_json_is_refused_or_follows_the_rules(value in json_value()) {
        check_parsed(value.to_string().as_bytes())?;
    }

    #[test]
    fn message_shaped_json_is_refused_or_follows_the_rules(
        single in message_like(),
        batch in prop::collection::vec(message_like(), 0..4),
    ) {
        check_parsed(single.to_string().as_bytes())?;
        check_parsed(serde_json::json!({ "messages": batch }).to_string().as_bytes())?;
    }

    #[test]
    fn valid_messages_are_accepted_with_their_data_text_intact(
        batch in prop::collection::vec(valid_message(), 1..=8),
    ) {
        for (json, expected) in &batch {
            let parsed = parse_post(json.as_bytes());
            prop_assert_eq!(parsed, Ok(vec![expected.clone()]), "{}", json);
        }
        let body = format!(
            r#"{{"messages":[{}]}}"#,
            batch.iter().map(|(json, _)| json.as_str()).collect::<Vec<_>>().join(",")
        );
        let expected: Vec<Outgoing> = batch.into_iter().map(|(_, message)| message).collect();
        prop_assert_eq!(parse_post(body.as_bytes()), Ok(expected));
    }
}

// ---------------------------------------------------------------------------------------------
// Cursors and identifiers

fn in_alphabet(text: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

proptest! {
    #![proptest_config(cases(1024))]

    #[test]
    fn cursor_parse_never_panics(text in ".{0,48}") {
        if let Some(cursor) = Cursor::parse(&text) {
            prop_assert_eq!(Cursor::parse(&cursor.encode()), Some(cursor));
        }
    }

    #[test]
    fn cursors_round_trip(seq in any::<u64>(), activity in 0..=i64::MAX) {
        let cursor = Cursor { seq, activity };
        prop_assert_eq!(Cursor::parse(&cursor.encode()), Some(cursor));
    }

    #[test]
    fn digit_soup_parses_only_as_a_cursor(text in "[0-9.+-]{0,44}") {
        if let Some(cursor) = Cursor::parse(&text) {
            let (seq, activity) = text.split_once('.').expect("a dot");
            prop_assert_eq!(seq.parse::<u64>().ok(), Some(cursor.seq));
            prop_assert_eq!(activity.parse::<i64>().ok(), Some(cursor.activity));
        }
    }

    #[test]
    fn ids_parse_iff_they_match_the_alphabet(
        text in prop_oneof!["[A-Za-z0-9_-]{0,70}", ".{0,70}", "[A-Za-z0-9_./%\\\\-]{0,8}"],
    ) {
        let expected = in_alphabet(&text);
        prop_assert_eq!(RoomId::parse(&text).is_ok(), expected);
        prop_assert_eq!(PeerId::parse(&text).is_ok(), expected);
        prop_assert_eq!(MessageId::parse(&text).is_ok(), expected);
        prop_assert_eq!(ClientMessageId::parse(&text).is_ok(), expected);
        if let Ok(room) = RoomId::parse(&text) {
            prop_assert_eq!(room.as_str(), text.as_str());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

fn keys() -> TokenKeys {
    TokenKeys::new(SECRET)
}

fn in_the_future() -> impl Strategy<Value = i64> {
    let now = now_millis() / 1000;
    (now + 60)..(now + 400 * 86_400)
}

/// Claim sets near the real ones: each claim right, wrong or missing.
fn claims_like() -> impl Strategy<Value = Value> {
    let now = now_millis() / 1000;
    let typ = prop_oneof![
        prop::sample::select(vec!["peer", "join", "Peer", "admin", ""]).prop_map(Value::from),
        json_value(),
    ];
    let id = prop_oneof![
        "[A-Za-z0-9_-]{1,64}".prop_map(Value::from),
        ".{0,70}".prop_map(Value::from),
        json_value(),
    ];
    let exp = prop_oneof![
        (now - 1000..now + 1000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        json_value(),
    ];
    (
        prop::option::of(typ),
        prop::option::of(id.clone()),
        prop::option::of(id),
        prop::option::of(exp),
        prop::option::of((field_name(), json_value())),
    )
        .prop_map(|(typ, room, sub, exp, extra)| {
            let mut object = serde_json::Map::new();
            for (key, value) in [("typ", typ), ("room", room), ("sub", sub), ("exp", exp)] {
                if let Some(value) = value {
                    object.insert(key.into(), value);
                }
            }
            if let Some((key, value)) = extra {
                object.entry(key).or_insert(value);
            }
            Value::Object(object)
        })
}

fn room_id() -> impl Strategy<Value = RoomId> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|room| RoomId::parse(&room).expect("valid room"))
}

fn peer_id() -> impl Strategy<Value = PeerId> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|peer| PeerId::parse(&peer).expect("valid peer"))
}

/// A base64url alphabet character other than `not`.
fn other_char(not: char, pick: u8) -> char {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    let candidates: Vec<char> = ALPHABET
        .iter()
        .map(|&byte| char::from(byte))
        .filter(|&c| c != not)
        .collect();
    candidates[usize::from(pick) % candidates.len()]
}

/// The token with its header re-encoded to name `alg`, claims and signature kept.
fn with_alg(token: &str, alg: &str) -> String {
    let mut parts = token.splitn(3, '.');
    let (_, claims, signature) = (parts.next(), parts.next(), parts.next());
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"typ":"JWT","alg":"{alg}"}}"#));
    format!(
        "{header}.{}.{}",
        claims.unwrap_or_default(),
        signature.unwrap_or_default()
    )
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn verifying_arbitrary_strings_never_panics(
        text in prop_oneof![
            ".{0,300}",
            "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,120}\\.[A-Za-z0-9_-]{0,60}",
        ],
    ) {
        prop_assert!(keys().verify_peer(&text).is_err());
        prop_assert!(keys().verify_join(&text).is_err());
    }

    #[test]
    fn signed_claims_of_any_shape_grant_only_what_they_say(claims in claims_like()) {
        // Signed with the real secret, so only the claims decide: whatever they hold, a grant
        // comes out only for a well-formed, unexpired peer (or join) claim set.
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        ).expect("encodes");
        let now = now_millis() / 1000;
        if let Ok(grant) = keys().verify_peer(&token) {
            prop_assert_eq!(&claims["typ"], "peer");
            prop_assert_eq!(&claims["room"], grant.room.as_str());
            prop_assert_eq!(&claims["sub"], grant.peer.as_str());
            prop_assert!(grant.expires_at >= now, "{}", claims);
        }
        if let Ok(room) = keys().verify_join(&token) {
            prop_assert_eq!(&claims["typ"], "join");
            prop_assert_eq!(&claims["room"], room.as_str());
            prop_assert!(claims["exp"].as_i64().is_some_and(|exp| exp >= now), "{}", claims);
        }
    }

    #[test]
    fn genuine_tokens_are_accepted(room in room_id(), peer in peer_id(), expires in in_the_future()) {
        let keys = keys();
        let grant = keys.verify_peer(&keys.issue_peer(&room, &peer, expires));
        let grant = grant.map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!((&grant.room, &grant.peer, grant.expires_at), (&room, &peer, expires));
        prop_assert_eq!(keys.verify_join(&keys.issue_join(&room, expires)), Ok(room));
    }

    #[test]
    fn every_single_character_change_is_refused(
        room in room_id(), peer in peer_id(), expires in in_the_future(),
        position in any::<prop::sample::Index>(), pick in any::<u8>(),
    ) {
        let keys = keys();
        let token = keys.issue_peer(&room, &peer, expires);
        let mut chars: Vec<char> = token.chars().collect();
        let at = position.index(chars.len());
        chars[at] = other_char(chars[at], pick);
        let mutated: String = chars.into_iter().collect();
        prop_assert!(keys.verify_peer(&mutated).is_err(), "accepted {} (from {})", mutated, token);
        let join = keys.issue_join(&room, expires);
        let mut chars: Vec<char> = join.chars().collect();
        let at = position.index(chars.len());
        chars[at] = other_char(chars[at], pick);
        let mutated: String = chars.into_iter().collect();
        prop_assert!(keys.verify_join(&mutated).is_err(), "accepted {} (from {})", mutated, join);
    }

    #[test]
    fn every_truncation_is_refused(
        room in room_id(), peer in peer_id(), expires in in_the_future(),
        cut in any::<prop::sample::Index>(),
    ) {
        let keys = keys();
        let token = keys.issue_peer(&room, &peer, expires);
        let truncated = &token[..cut.index(token.len())];
        prop_assert!(keys.verify_peer(truncated).is_err());
        let join = keys.issue_join(&room, expires);
        prop_assert!(keys.verify_join(&join[..cut.index(join.len())]).is_err());
    }

    #[test]
    fn swapped_or_repeated_segments_are_refused(
        room in room_id(), peer in peer_id(), expires in in_the_future(),
        order in prop::sample::select(vec![
            [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0],
            [0, 1, 1], [0, 0, 2], [1, 1, 2], [0, 1, 0],
        ]),
    ) {
        let keys = keys();
        let token = keys.issue_peer(&room, &peer, expires);
        let parts: Vec<&str> = token.split('.').collect();
        prop_assert_eq!(parts.len(), 3);
        let shuffled = order.map(|i| parts[i]).join(".");
        prop_assert!(keys.verify_peer(&shuffled).is_err());
    }

    #[test]
    fn another_algorithm_is_refused(
        room in room_id(), peer in peer_id(), expires in in_the_future(),
        alg in prop::sample::select(vec![
            "none", "None", "NONE", "HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA", "hs256", "",
        ]),
    ) {
        let keys = keys();
        let token = keys.issue_peer(&room, &peer, expires);
        prop_assert!(keys.verify_peer(&with_alg(&token, alg)).is_err());
        let unsigned = with_alg(&token, alg);
        let unsigned = &unsigned[..unsigned.rfind('.').unwrap_or(0) + 1];
        prop_assert!(keys.verify_peer(unsigned).is_err());
        // Properly signed with the right secret, but with HS512: still refused.
        let claims = serde_json::json!({"typ": "peer", "room": room, "sub": peer, "exp": expires});
        let other = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        ).expect("encodes");
        prop_assert!(keys.verify_peer(&other).is_err());
    }

    #[test]
    fn tokens_of_other_secrets_are_refused(
        secret in prop::collection::vec(any::<u8>(), 0..64),
        room in room_id(), peer in peer_id(), expires in in_the_future(),
    ) {
        prop_assume!(secret != SECRET);
        let forger = TokenKeys::new(&secret);
        prop_assert_eq!(
            keys().verify_peer(&forger.issue_peer(&room, &peer, expires)),
            Err(TokenError::Invalid)
        );
        prop_assert_eq!(
            keys().verify_join(&forger.issue_join(&room, expires)),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn expired_tokens_are_refused(
        room in room_id(), peer in peer_id(), ago in 1..(10 * 365 * 86_400i64),
    ) {
        let keys = keys();
        let expired = now_millis() / 1000 - ago;
        prop_assert_eq!(keys.verify_peer(&keys.issue_peer(&room, &peer, expired)), Err(TokenError::Expired));
        prop_assert_eq!(keys.verify_join(&keys.issue_join(&room, expired)), Err(TokenError::Expired));
    }

    #[test]
    fn one_kind_of_token_never_passes_as_the_other(
        room in room_id(), peer in peer_id(), expires in in_the_future(),
    ) {
        let keys = keys();
        prop_assert_eq!(keys.verify_join(&keys.issue_peer(&room, &peer, expires)), Err(TokenError::Invalid));
        prop_assert_eq!(keys.verify_peer(&keys.issue_join(&room, expires)), Err(TokenError::Invalid));
    }
}
