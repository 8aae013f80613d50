//! The inbox limit: only unexpired unacknowledged messages count. The member item's
//! `lastSeq - ackedSeq` is free to read but counts expired messages and tombstones too, so
//! only when it says full does a Query count the live messages exactly.

use std::ops::ControlFlow;

use super::DynamoStore;
use super::items::{InboxItem, MemberItem, inbox_pk, seq_sk};
use crate::clock::Millis;
use crate::ids::RoomId;
use crate::store::{StoreError, fits_in_inbox};

impl DynamoStore {
    /// Whether `member`'s inbox (as read with the room) has room for `incoming` more messages.
    pub(super) async fn inbox_has_room(
        &self,
        room: &RoomId,
        member: &MemberItem,
        incoming: u64,
        limit: u64,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let unread = member.last_seq.saturating_sub(member.acked_seq);
        if fits_in_inbox(unread, incoming, limit) {
            return Ok(true);
        }
        let acked = member.acked_seq;
        let mut live = 0_u64;
        let mut failure = None;
        self.query_partition(
            inbox_pk(room, &member.peer),
            Some(seq_sk(acked)),
            None,
            |page| {
                for raw in page {
                    match InboxItem::from_item(raw, now) {
                        // Tombstones and expired items hold nothing that counts.
                        Ok(item) if item.messages.is_some() => {
                            live += item.last - item.first.max(acked + 1) + 1;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            failure = Some(error);
                            return ControlFlow::Break(());
                        }
                    }
                }
                ControlFlow::Continue(None)
            },
        )
        .await?;
        if let Some(error) = failure {
            return Err(error);
        }
        Ok(fits_in_inbox(live, incoming, limit))
    }
}
