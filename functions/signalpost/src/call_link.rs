//! The demo-call link the server prints at start: its own address plus a fresh room named by
//! two words (`/?room=amber-otter`), so the first URL a newcomer opens twice is already a call.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rand::Rng;

/// 64 × 64 pairs: plenty for the rooms of one person's server, and easy to read aloud.
const ADJECTIVES: [&str; 64] = [
    "amber", "azure", "bold", "brave", "brisk", "calm", "clever", "coral", "crisp", "cosy",
    "dapper", "eager", "early", "fair", "fancy", "fleet", "fresh", "gentle", "giddy", "glad",
    "golden", "grand", "green", "happy", "hazel", "honest", "humble", "jolly", "keen", "kind",
    "lively", "lucky", "mellow", "merry", "mild", "misty", "modest", "neat", "nimble", "noble",
    "olive", "plucky", "polite", "proud", "quick", "quiet", "rapid", "rosy", "rustic", "sandy",
    "shiny", "silver", "sleek", "snowy", "sunny", "swift", "tidy", "tranquil", "vivid", "warm",
    "wise", "witty", "young", "zesty",
];
const NOUNS: [&str; 64] = [
    "badger", "beacon", "bison", "breeze", "brook", "canyon", "cedar", "comet", "condor", "coyote",
    "crane", "dolphin", "dune", "eagle", "falcon", "fern", "finch", "fjord", "forest", "fox",
    "garden", "gecko", "glacier", "harbor", "hawk", "heron", "island", "jaguar", "koala", "lagoon",
    "lark", "lemur", "lynx", "maple", "meadow", "meteor", "moose", "nebula", "ocean", "orchid",
    "osprey", "otter", "owl", "panda", "pebble", "pine", "planet", "prairie", "puffin", "quartz",
    "raven", "reef", "river", "robin", "salmon", "sparrow", "summit", "tiger", "tulip", "valley",
    "walrus", "willow", "wren", "zebra",
];

/// A room name like `amber-otter`: always a valid room identifier.
pub fn fresh_room(rng: &mut impl Rng) -> String {
    let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let noun = NOUNS[rng.random_range(0..NOUNS.len())];
    format!("{adjective}-{noun}")
}

/// The demo page's URL for `room` on a server listening at `address` (`scheme` is `http` or
/// `https`). A wildcard address (`0.0.0.0`, `::`) is not one a browser can open, so the link
/// names loopback instead.
pub fn call_url(scheme: &str, address: SocketAddr, room: &str) -> String {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "{scheme}://{}/?room={room}",
        SocketAddr::new(ip, address.port())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalpost_shared::ids::RoomId;

    #[test]
    fn fresh_rooms_are_valid_two_word_room_ids() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let room = fresh_room(&mut rng);
            assert!(
                RoomId::parse(&room).is_ok(),
                "{room} is not a valid room id"
            );
            assert_eq!(room.split('-').count(), 2, "{room}");
        }
    }

    #[test]
    fn the_word_lists_hold_no_repeats() {
        for list in [&ADJECTIVES[..], &NOUNS[..]] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len());
        }
    }

    #[test]
    fn the_link_names_an_address_a_browser_can_open() {
        let url = |listen: &str| {
            call_url(
                "http",
                listen.parse().expect("a socket address"),
                "amber-otter",
            )
        };
        assert_eq!(
            url("127.0.0.1:8080"),
            "http://127.0.0.1:8080/?room=amber-otter"
        );
        assert_eq!(
            url("0.0.0.0:8080"),
            "http://127.0.0.1:8080/?room=amber-otter"
        );
        assert_eq!(url("[::]:9000"), "http://[::1]:9000/?room=amber-otter");
        assert_eq!(url("192.0.2.7:80"), "http://192.0.2.7:80/?room=amber-otter");
        assert_eq!(
            call_url("https", "0.0.0.0:8443".parse().expect("address"), "a-b"),
            "https://127.0.0.1:8443/?room=a-b"
        );
    }
}
