//! Room membership: join, and leave in both its forms (`DELETE` with a bearer token, and the
//! `POST …/leave` beacon a page can send while unloading, when it cannot set headers).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::AppState;
use super::extract::{Bearer, PathParams, body, has_media_type, in_room, require_json};
use crate::error::ApiError;
use crate::signalling::Joined;
use crate::token::PeerGrant;

/// Longest display name, in characters.
const MAX_NAME_CHARS: usize = 64;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JoinBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    join_token: Option<String>,
}

/// `POST /v1/rooms/{room}/peers`
pub async fn join(
    State(state): State<AppState>,
    params: PathParams,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Joined>), ApiError> {
    let room = params.room()?;
    let request = body(request)?;
    let request: JoinBody = if request.iter().all(u8::is_ascii_whitespace) {
        JoinBody::default()
    } else {
        require_json(&headers)?;
        // serde would also accept a JSON array for a struct; the contract says object.
        if request.trim_ascii_start().first() != Some(&b'{') {
            return Err(ApiError::InvalidRequest(
                "the join body must be a JSON object".into(),
            ));
        }
        serde_json::from_slice(&request).map_err(|error| {
            ApiError::InvalidRequest(format!("the join body is not valid: {error}"))
        })?
    };
    if let Some(name) = &request.name
        && (name.chars().count() > MAX_NAME_CHARS || !is_visible_name(name))
    {
        return Err(ApiError::InvalidRequest(format!(
            "name must be at most {MAX_NAME_CHARS} characters, without control, format or \
             other invisible characters"
        )));
    }
    let joined = state
        .signalling
        .join(room, request.name, request.join_token.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(joined)))
}

/// Whether a display name shows everything it holds: no control or format characters (Unicode
/// categories Cc and Cf: zero-width spaces, bidirectional overrides, soft hyphens…), no line or
/// paragraph separators, and none of the fillers that draw as nothing, so a name can neither
/// hide text nor pass for another by looking the same. The one exception is a zero-width
/// joiner or non-joiner between two visible characters, which emoji sequences and scripts
/// such as Persian and Devanagari need. `shared/openapi.yaml` states the same rule as a
/// pattern (a test below keeps the two in step).
fn is_visible_name(name: &str) -> bool {
    let characters: Vec<char> = name.chars().collect();
    characters.iter().enumerate().all(|(at, &character)| {
        if is_joiner(character) {
            let visible = |near: Option<&char>| near.is_some_and(|&near| is_visible(near));
            at > 0 && visible(characters.get(at - 1)) && visible(characters.get(at + 1))
        } else {
            is_visible(character)
        }
    })
}

/// Zero-width non-joiner and joiner.
fn is_joiner(character: char) -> bool {
    matches!(character, '\u{200C}' | '\u{200D}')
}

/// Whether `character` draws something on its own (see [`is_visible_name`]).
fn is_visible(character: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    /// Letters, marks and symbols that render as blank space or nothing at all.
    const BLANK: [char; 8] = [
        '\u{034F}', // combining grapheme joiner
        '\u{115F}', // Hangul choseong filler
        '\u{1160}', // Hangul jungseong filler
        '\u{17B4}', // Khmer vowel inherent aq
        '\u{17B5}', // Khmer vowel inherent aa
        '\u{2800}', // braille pattern blank
        '\u{3164}', // Hangul filler
        '\u{FFA0}', // halfwidth Hangul filler
    ];
    !matches!(
        character.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    ) && !BLANK.contains(&character)
        && character != '\u{180E}' // Mongolian vowel separator: Cf in some Unicode versions
}

/// `DELETE /v1/rooms/{room}/peers/{peer}`
pub async fn leave(
    State(state): State<AppState>,
    params: PathParams,
    Bearer(grant): Bearer,
) -> Result<StatusCode, ApiError> {
    leave_as(&state, &params, grant).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BeaconBody {
    token: String,
}

/// `POST /v1/rooms/{room}/peers/{peer}/leave`, for `navigator.sendBeacon`: the token travels
/// in the body, as JSON or as text/plain (which needs no CORS preflight).
pub async fn beacon_leave(
    State(state): State<AppState>,
    params: PathParams,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request = body(request)?;
    if !has_media_type(&headers, &["application/json", "text/plain"]) {
        return Err(ApiError::UnsupportedMediaType(
            "send {\"token\": ...} as application/json or text/plain".into(),
        ));
    }
    // serde would also read the struct from an array (`["<token>"]`); the contract says object.
    if request.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::InvalidRequest(
            "the body must be {\"token\": \"...\"}".into(),
        ));
    }
    let beacon: BeaconBody = serde_json::from_slice(&request).map_err(|error| {
        ApiError::InvalidRequest(format!("the body must be {{\"token\": \"...\"}}: {error}"))
    })?;
    let grant = state.signalling.verify_peer_token(&beacon.token)?;
    leave_as(&state, &params, grant).await
}

async fn leave_as(
    state: &AppState,
    params: &PathParams,
    grant: PeerGrant,
) -> Result<StatusCode, ApiError> {
    let grant = in_room(grant, &params.room()?)?;
    if grant.peer != params.peer()? {
        return Err(ApiError::Forbidden("a peer can only remove itself".into()));
    }
    state.signalling.leave(&grant).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_show_everything_they_hold() {
        for visible in [
            "alice",
            "Zoë 李 🦀",
            "❤\u{FE0F}",
            "👩\u{200D}💻",
            "می\u{200C}خواهم",
            "",
        ] {
            assert!(is_visible_name(visible), "{visible:?} refused");
        }
        for hidden in [
            "alice\u{200B}",
            "\u{202E}ecila",
            "\u{00AD}",
            "a\u{2028}b",
            "\u{200D}a",
            "a\u{200D}",
            "a\u{200D}\u{200D}b",
            "a\u{200C}\u{200B}b",
            "\u{3164}",
            "bob\u{E0041}",
        ] {
            assert!(!is_visible_name(hidden), "{hidden:?} accepted");
        }
    }

    /// The OpenAPI pattern for `name` says the same as [`is_visible_name`] for every character
    /// of the Basic Multilingual Plane, alone and between two letters (the pattern cannot name
    /// characters beyond it portably; there the server is stricter than the document).
    #[test]
    fn the_openapi_pattern_matches_the_rule() {
        let document = include_str!("../../openapi.yaml");
        let pattern = document
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix("pattern: '^(?:[^"))
            .expect("the name pattern");
        let class = pattern.split(']').next().expect("a character class");
        let escapes: Vec<char> = class
            .split("\\u")
            .skip(1)
            .map(|part| {
                let code = u32::from_str_radix(&part[..4], 16).expect("hex");
                char::from_u32(code).expect("a character")
            })
            .collect();
        let ranges: Vec<(char, char)> = {
            let mut ranges = Vec::new();
            let mut index = 0;
            let dashes: Vec<bool> = class
                .split("\\u")
                .skip(1)
                .map(|part| part[4..].starts_with('-'))
                .collect();
            while index < escapes.len() {
                if dashes[index] {
                    ranges.push((escapes[index], escapes[index + 1]));
                    index += 2;
                } else {
                    ranges.push((escapes[index], escapes[index]));
                    index += 1;
                }
            }
            ranges
        };
        let refused = |character: char| {
            ranges
                .iter()
                .any(|&(low, high)| (low..=high).contains(&character))
        };
        for character in (0..=0xFFFF).filter_map(char::from_u32) {
            let by_pattern = !refused(character);
            if is_joiner(character) {
                assert!(refused(character), "the pattern must place joiners itself");
                continue;
            }
            assert_eq!(
                by_pattern,
                is_visible(character),
                "U+{:04X}: pattern and rule disagree",
                u32::from(character)
            );
        }
    }
}
