//! The embedded store cleans itself: expired messages leave the file, in the standalone
//! server and under `cargo lambda watch` alike (where each function process runs
//! housekeeping and a lease row lets one at a time do it).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Server, description, join, room};

fn messages_in(database: &std::path::Path) -> Option<i64> {
    let connection =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    connection
        .query_row("SELECT COUNT(*) FROM messages", [], |row| row.get(0))
        .ok()
}

#[tokio::test]
async fn expired_messages_leave_the_database_file() {
    // The shortest TTL the configuration takes; housekeeping runs every TTL / 2.
    let server = Server::start_with(&[("SIGNALPOST_MESSAGE_TTL", "10")]);
    let Some(database) = server.database() else {
        eprintln!("skipped: DynamoDB expires items itself");
        return;
    };
    let room = room();
    let alice = join(&server, &room, "alice").await;
    let bob = join(&server, &room, "bob").await;
    bob.send(json!({"to": alice.id, "type": "offer", "data": description("offer")}))
        .await;
    assert!(
        messages_in(&database).is_some_and(|count| count >= 2),
        "peer-joined and the offer are in {}",
        database.display()
    );
    let started = Instant::now();
    loop {
        let left = messages_in(&database);
        if left == Some(0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{left:?} messages still in the file a minute after they were posted with a 10 s TTL"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
