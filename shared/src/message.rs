//! Messages: what a client may send, checked against the contract's per-type rules, and what a
//! poll returns.
//!
//! `data` is kept as the client's raw JSON text after validation, so an SDP passes through
//! byte for byte and is never re-encoded.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::clock::{Millis, rfc3339_millis};
use crate::ids::{ClientMessageId, MessageId, PeerId};

/// Most messages one post may carry.
pub const MAX_BATCH: usize = 50;
/// Largest `data` of an offer or answer, in bytes of JSON.
pub const MAX_DESCRIPTION_DATA: usize = 32 * 1024;
/// Largest `data` of a candidate.
pub const MAX_CANDIDATE_DATA: usize = 2 * 1024;
/// Largest `data` of an app `message` or a `bye`.
pub const MAX_APP_DATA: usize = 16 * 1024;

/// Every kind of message an inbox can hold; the last two are created by the server only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MessageKind {
    Offer,
    Answer,
    Candidate,
    Bye,
    Message,
    PeerJoined,
    PeerLeft,
}

impl MessageKind {
    /// The wire name, also the stored one.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::Candidate => "candidate",
            Self::Bye => "bye",
            Self::Message => "message",
            Self::PeerJoined => "peer-joined",
            Self::PeerLeft => "peer-left",
        }
    }

    /// Parses a stored or client-sent name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Offer,
            Self::Answer,
            Self::Candidate,
            Self::Bye,
            Self::Message,
            Self::PeerJoined,
            Self::PeerLeft,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

/// Why `peer-left` was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    Left,
    Timeout,
}

impl LeaveReason {
    /// The `data` of the `peer-left` message.
    pub fn data(self) -> String {
        let reason = match self {
            Self::Left => "left",
            Self::Timeout => "timeout",
        };
        serde_json::json!({ "reason": reason }).to_string()
    }
}

/// The `data` of a `peer-joined` message.
pub fn peer_joined_data(name: Option<&str>) -> String {
    serde_json::json!({ "name": name }).to_string()
}

/// A client's message after validation: every field is known good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The recipient, or `None` for every other peer of the room.
    pub to: Option<PeerId>,
    pub kind: MessageKind,
    /// Validated JSON text.
    pub data: String,
    pub client_id: Option<ClientMessageId>,
}

/// Why a post's body was refused; `index` points into a batch.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidPost {
    #[error("{0}")]
    Body(String),
    #[error("messages[{index}]: {reason}")]
    Message { index: usize, reason: String },
    #[error("messages[{index}]: data is {size} bytes, over the {limit}-byte limit for {kind}")]
    DataTooLarge {
        index: usize,
        kind: &'static str,
        size: usize,
        limit: usize,
    },
}

/// One message as the client sent it, or (only at the top level) a batch in `messages`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage<'a> {
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    to: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<String>,
}

impl RawMessage<'_> {
    fn has_message_fields(&self) -> bool {
        self.to.is_some() || self.kind.is_some() || self.data.is_some() || self.id.is_some()
    }
}

/// RTCSessionDescriptionInit.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionDescription {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

/// RTCIceCandidateInit.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // fields are read by serde's type checks, which is the point
struct IceCandidate {
    candidate: String,
    #[serde(default)]
    sdp_mid: Option<String>,
    /// Checked by [`is_line_index`]: a JSON number, so `0.0` is as good as `0`.
    #[serde(default, rename = "sdpMLineIndex")]
    sdp_m_line_index: Option<serde_json::Number>,
    #[serde(default)]
    username_fragment: Option<String>,
}

/// Parses a post body into validated messages (1 to [`MAX_BATCH`]), all or nothing.
pub fn parse_post(body: &[u8]) -> Result<Vec<Outgoing>, InvalidPost> {
    // serde would also accept a JSON array for a struct; the contract says object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(InvalidPost::Body("the body must be a JSON object".into()));
    }
    let mut body: RawMessage<'_> = serde_json::from_slice(body)
        .map_err(|error| InvalidPost::Body(format!("body is not a valid message: {error}")))?;
    let Some(batch) = body.messages.take() else {
        return Ok(vec![validate(0, body)?]);
    };
    if body.has_message_fields() {
        return Err(InvalidPost::Body(
            "a batch has only \"messages\"; put every message inside it".into(),
        ));
    }
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return Err(InvalidPost::Body(format!(
            "a batch holds 1 to {MAX_BATCH} messages, not {}",
            batch.len()
        )));
    }
    batch
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            if !raw.get().starts_with('{') {
                return Err(InvalidPost::Message {
                    index,
                    reason: "each message must be a JSON object".into(),
                });
            }
            let message: RawMessage<'_> =
                serde_json::from_str(raw.get()).map_err(|error| InvalidPost::Message {
                    index,
                    reason: error.to_string(),
                })?;
            if message.messages.is_some() {
                return Err(InvalidPost::Message {
                    index,
                    reason: "batches do not nest".into(),
                });
            }
            validate(index, message)
        })
        .collect()
}

fn validate(index: usize, message: RawMessage<'_>) -> Result<Outgoing, InvalidPost> {
    let invalid = |reason: String| InvalidPost::Message { index, reason };
    let Some(kind_name) = message.kind.as_deref() else {
        return Err(invalid("missing field `type`".into()));
    };
    let kind = match MessageKind::parse(kind_name) {
        Some(kind @ (MessageKind::PeerJoined | MessageKind::PeerLeft)) => {
            return Err(invalid(format!(
                "type `{}` is sent by the server only",
                kind.as_str()
            )));
        }
        Some(kind) => kind,
        None => {
            return Err(invalid(format!(
                "unknown type `{}`: expected offer, answer, candidate, bye or message",
                truncate(kind_name)
            )));
        }
    };
    let to = message
        .to
        .as_deref()
        .map(PeerId::parse)
        .transpose()
        .map_err(|error| invalid(format!("to: {error}")))?;
    let client_id = message
        .id
        .as_deref()
        .map(ClientMessageId::parse)
        .transpose()
        .map_err(|error| invalid(format!("id: {error}")))?;
    let data = message.data.map_or("null", RawValue::get);
    let too_large = |limit: usize| {
        (data.len() > limit).then_some(InvalidPost::DataTooLarge {
            index,
            kind: kind.as_str(),
            size: data.len(),
            limit,
        })
    };

    match kind {
        MessageKind::Offer | MessageKind::Answer => {
            if let Some(error) = too_large(MAX_DESCRIPTION_DATA) {
                return Err(error);
            }
            // serde would also read a struct from an array (`["offer", "v=0"]`).
            if !data.starts_with('{') {
                return Err(invalid(
                    "data must be an RTCSessionDescriptionInit object {type, sdp}".into(),
                ));
            }
            let description: SessionDescription = serde_json::from_str(data).map_err(|error| {
                invalid(format!(
                    "data must be an RTCSessionDescriptionInit {{type, sdp}}: {error}"
                ))
            })?;
            if description.kind != kind.as_str() {
                return Err(invalid(format!(
                    "data.type must be `{}`, the message type",
                    kind.as_str()
                )));
            }
            if !description.sdp.starts_with("v=0") {
                return Err(invalid("data.sdp must start with `v=0`".into()));
            }
        }
        MessageKind::Candidate => {
            if let Some(error) = too_large(MAX_CANDIDATE_DATA) {
                return Err(error);
            }
            if !data.starts_with('{') {
                return Err(invalid(
                    "data must be an RTCIceCandidateInit object {candidate, sdpMid, sdpMLineIndex, usernameFragment}".into(),
                ));
            }
            let candidate: IceCandidate = serde_json::from_str(data).map_err(|error| {
                invalid(format!(
                    "data must be an RTCIceCandidateInit {{candidate, sdpMid, sdpMLineIndex, usernameFragment}}: {error}"
                ))
            })?;
            if !candidate.candidate.is_empty() && !candidate.candidate.starts_with("candidate:") {
                return Err(invalid(
                    "data.candidate must be empty or start with `candidate:`".into(),
                ));
            }
            if !candidate
                .sdp_m_line_index
                .as_ref()
                .is_none_or(is_line_index)
            {
                return Err(invalid(
                    "data.sdpMLineIndex must be a whole number from 0 to 65535, or null".into(),
                ));
            }
        }
        MessageKind::Bye => {
            if let Some(error) = too_large(MAX_APP_DATA) {
                return Err(error);
            }
            if !(data == "null" || data.trim_start().starts_with('{')) {
                return Err(invalid("data of a bye must be an object or absent".into()));
            }
        }
        MessageKind::Message => {
            if let Some(error) = too_large(MAX_APP_DATA) {
                return Err(error);
            }
        }
        MessageKind::PeerJoined | MessageKind::PeerLeft => unreachable!("rejected above"),
    }
    if matches!(
        kind,
        MessageKind::Offer | MessageKind::Answer | MessageKind::Candidate
    ) && to.is_none()
    {
        return Err(invalid(format!("`to` is required for {}", kind.as_str())));
    }
    Ok(Outgoing {
        to,
        kind,
        data: data.to_owned(),
        client_id,
    })
}

/// Whether a JSON number is an m-line index: a whole number from 0 to 65535. JSON (and JSON
/// Schema) do not tell `208` from `208.0`, so neither do we.
fn is_line_index(number: &serde_json::Number) -> bool {
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|value| value.fract() == 0.0 && (0.0..=65_535.0).contains(value))
            .map(|value| value as u64)
    });
    whole.is_some_and(|index| index <= u64::from(u16::MAX))
}

/// Client text quoted in an error, cut short so a hostile value cannot bloat the response.
fn truncate(text: &str) -> String {
    text.chars().take(32).collect()
}

/// A message as stored in one recipient's inbox, at position `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub seq: u64,
    pub id: MessageId,
    pub from: PeerId,
    pub to: PeerId,
    pub kind: MessageKind,
    pub data: String,
    pub sent_at: Millis,
}

/// A message as a poll returns it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivered<'a> {
    id: &'a MessageId,
    from: &'a PeerId,
    to: &'a PeerId,
    #[serde(rename = "type")]
    kind: MessageKind,
    data: &'a RawValue,
    sent_at: String,
}

/// What a message costs in a poll response besides its data: ids, type, time, JSON syntax.
pub const MESSAGE_OVERHEAD_BYTES: usize = 256;

impl StoredMessage {
    /// What this message adds to a poll response, counted against a read's byte budget
    /// ([`crate::store::ReadLimit`]): its data plus [`MESSAGE_OVERHEAD_BYTES`].
    pub fn poll_cost(&self) -> usize {
        self.data.len() + MESSAGE_OVERHEAD_BYTES
    }

    /// The wire form; `data` was validated JSON when stored, so it is emitted as is.
    pub fn delivered(&self) -> Result<Delivered<'_>, serde_json::Error> {
        Ok(Delivered {
            id: &self.id,
            from: &self.from,
            to: &self.to,
            kind: self.kind,
            data: serde_json::from_str(&self.data)?,
            sent_at: rfc3339_millis(self.sent_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: serde_json::Value) -> Result<Vec<Outgoing>, InvalidPost> {
        parse_post(body.to_string().as_bytes())
    }

    #[test]
    fn accepts_each_type() {
        let ok = [
            serde_json::json!({"to": "B", "type": "offer", "data": {"type": "offer", "sdp": "v=0\r\n"}, "id": "c-1"}),
            serde_json::json!({"to": "B", "type": "answer", "data": {"type": "answer", "sdp": "v=0"}}),
            serde_json::json!({"to": "B", "type": "candidate", "data": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": null}}),
            serde_json::json!({"to": "B", "type": "candidate", "data": {"candidate": ""}}),
            serde_json::json!({"to": "B", "type": "candidate", "data": {"candidate": "", "sdpMLineIndex": 208.0}}),
            serde_json::json!({"to": "B", "type": "candidate", "data": {"candidate": "", "sdpMLineIndex": 65535}}),
            serde_json::json!({"type": "bye"}),
            serde_json::json!({"type": "bye", "data": {"why": "done"}}),
            serde_json::json!({"type": "message", "data": [1, "two", {"three": 3}]}),
        ];
        for body in ok {
            let parsed = parse(body.clone());
            assert!(parsed.is_ok(), "{body} refused: {parsed:?}");
        }
    }

    #[test]
    fn keeps_data_text_as_sent() {
        let parsed = parse_post(br#"{"type":"message","data":{"b":1,  "a":2}}"#).expect("valid");
        assert_eq!(parsed[0].data, r#"{"b":1,  "a":2}"#);
        assert_eq!(parsed[0].to, None);
        assert_eq!(parsed[0].kind, MessageKind::Message);
    }

    #[test]
    fn refuses_bad_messages() {
        let bad = [
            serde_json::json!({"type": "offer", "data": {"type": "offer", "sdp": "v=0"}}),
            serde_json::json!({"to": "B", "type": "offer", "data": {"type": "answer", "sdp": "v=0"}}),
            serde_json::json!({"to": "B", "type": "offer", "data": {"type": "offer", "sdp": "x=0"}}),
            serde_json::json!({"to": "B", "type": "offer", "data": {"type": "offer", "sdp": "v=0", "extra": 1}}),
            serde_json::json!({"to": "B", "type": "candidate", "data": {"candidate": "nope"}}),
            serde_json::json!({"to": "B", "type": "candidate", "data": {"candidate": "", "sdpMLineIndex": -1}}),
            serde_json::json!({"to": "B", "type": "candidate", "data": {"candidate": "", "sdpMLineIndex": 1.5}}),
            serde_json::json!({"to": "B", "type": "candidate", "data": {"candidate": "", "sdpMLineIndex": 65536}}),
            serde_json::json!({"to": "B", "type": "candidate", "data": {"candidate": "", "sdpMLineIndex": 1e300}}),
            serde_json::json!({"to": "B", "type": "candidate"}),
            serde_json::json!({"to": "B", "type": "candidate", "data": ["candidate:"]}),
            serde_json::json!({"to": "B", "type": "offer", "data": ["offer", "v=0"]}),
            serde_json::json!({"to": "B", "type": "answer", "data": ["answer", "v=0"]}),
            serde_json::json!({"type": "bye", "data": "string"}),
            serde_json::json!({"type": "peer-joined"}),
            serde_json::json!({"type": "shout"}),
            serde_json::json!({"to": "a/b", "type": "message"}),
            serde_json::json!({"id": "", "type": "message"}),
            serde_json::json!({"type": "message", "from": "spoofed"}),
            serde_json::json!({"messages": []}),
            serde_json::json!({"messages": [{"type": "message"}], "type": "message"}),
            serde_json::json!({"to": "B"}),
            serde_json::json!([1, 2]),
        ];
        for body in bad {
            assert!(parse(body.clone()).is_err(), "{body} accepted");
        }
    }

    #[test]
    fn batch_is_all_or_nothing_and_names_the_culprit() {
        let body = serde_json::json!({"messages": [
            {"type": "message"},
            {"to": "B", "type": "candidate", "data": {"candidate": "bad"}},
        ]});
        let error = parse(body).expect_err("invalid second message");
        assert!(error.to_string().starts_with("messages[1]:"), "{error}");

        let too_many: Vec<_> = (0..=MAX_BATCH)
            .map(|_| serde_json::json!({"type": "message"}))
            .collect();
        assert!(parse(serde_json::json!({ "messages": too_many })).is_err());
        let most: Vec<_> = (0..MAX_BATCH)
            .map(|_| serde_json::json!({"type": "message"}))
            .collect();
        assert_eq!(
            parse(serde_json::json!({ "messages": most })).map(|m| m.len()),
            Ok(MAX_BATCH)
        );
    }

    #[test]
    fn enforces_per_type_sizes() {
        let sdp = format!("v=0{}", "a".repeat(MAX_DESCRIPTION_DATA));
        let body =
            serde_json::json!({"to": "B", "type": "offer", "data": {"type": "offer", "sdp": sdp}});
        assert!(matches!(
            parse(body),
            Err(InvalidPost::DataTooLarge {
                limit: MAX_DESCRIPTION_DATA,
                ..
            })
        ));
        let body = serde_json::json!({"type": "message", "data": "x".repeat(MAX_APP_DATA)});
        assert!(matches!(parse(body), Err(InvalidPost::DataTooLarge { .. })));
    }
}
