//! The poll cursor: opaque to clients, it carries the inbox position read so far and when that
//! inbox last saw a message, so a stateless function instance knows how eagerly to poll.

use crate::clock::Millis;
use crate::store::Seq;

/// Where a poll resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The sequence number of the last message returned.
    pub seq: Seq,
    /// When the inbox last had a message (or the first poll began), Unix milliseconds.
    pub activity: Millis,
}

impl Cursor {
    /// Parses a cursor as [`Cursor::encode`] writes it: `<seq>.<activity>`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() > 41 {
            return None;
        }
        let (seq, activity) = text.split_once('.')?;
        let digits =
            |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
        if !digits(seq) || !digits(activity) {
            return None;
        }
        Some(Self {
            seq: seq.parse().ok()?,
            activity: activity.parse().ok()?,
        })
    }

    /// The cursor's activity as far as the server can believe it: never later than `known`,
    /// the latest activity the server knows of (now, and the inbox's last message). The client
    /// writes the cursor, and the activity sets how eagerly its poll reads the store: a forged
    /// recent one (`1.9000000000000000`, or now in an inbox quiet for an hour) would otherwise
    /// make the whole wait a busy one.
    pub fn activity_until(self, known: Millis) -> Millis {
        self.activity.min(known)
    }

    /// The text form.
    pub fn encode(self) -> String {
        format!("{}.{}", self.seq, self.activity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_is_never_later_than_now() {
        let cursor = Cursor::parse("3.9000000000000000").expect("well-formed");
        assert_eq!(cursor.activity_until(1_000), 1_000);
        let honest = Cursor {
            seq: 3,
            activity: 500,
        };
        assert_eq!(honest.activity_until(1_000), 500);
    }

    #[test]
    fn round_trips_and_refuses_garbage() {
        let cursor = Cursor {
            seq: 42,
            activity: 1_764_133_200_123,
        };
        assert_eq!(Cursor::parse(&cursor.encode()), Some(cursor));
        for bad in [
            "",
            "42",
            ".1",
            "1.",
            "-1.2",
            "1.-2",
            "a.b",
            "1.2.3",
            "99999999999999999999999.1",
            " 1.2",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?} accepted");
        }
    }
}
