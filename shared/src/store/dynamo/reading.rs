//! Reading an inbox: the contiguous run after a cursor, and tombstones over gaps that a
//! stalled or dead writer left for longer than the gap timeout.

use std::ops::ControlFlow;

use super::items::{
    InboxItem, get_n, inbox_pk, key, member, member_sk, room_pk, seq_sk, void_item,
};
use super::{
    DynamoStore, GAP_TIMEOUT_MS, Hook, MAX_NOTICED_GAPS, MAX_READ_ROUNDS, MAX_TRANSACTION_ITEMS,
    Step, TOMBSTONE_MIN_LIFE_MS, cancellation, conditional_put, unavailable,
};
use crate::clock::Millis;
use crate::ids::{PeerId, RoomId};
use crate::message::{MAX_DESCRIPTION_DATA, MESSAGE_OVERHEAD_BYTES};
use crate::store::{Collected, InboxRead, ReadLimit, Seq, StoreError};

/// The most items one Query page of a read asks for (a page stops at 1 MB anyway).
const MAX_PAGE_ITEMS: usize = 1_000;

/// The `Limit` of a read's next Query page: as many items as the bytes left could hold at the
/// cost per message taken so far (before any, the largest message's cost), plus one that may
/// not fit so that the page can end the read; never more than the messages still admitted.
/// A poll of an inbox of large offers thus reads about its byte budget, not a 1 MB page, and
/// one of small messages still reads them in a page or two.
fn page_size(collected: &Collected) -> i32 {
    let cost = collected
        .average_cost()
        .unwrap_or(MAX_DESCRIPTION_DATA + MESSAGE_OVERHEAD_BYTES)
        .max(1);
    let items = (collected.bytes_left() / cost)
        .saturating_add(1)
        .min(collected.messages_left())
        .clamp(1, MAX_PAGE_ITEMS);
    i32::try_from(items).unwrap_or(i32::MAX)
}

impl DynamoStore {
    /// Whether the unfilled positions up to `last` of an inbox (everything below the item that
    /// blocks the reader) have waited long enough to give up on. Positions are allocated in
    /// order, so that holds once the allocation holding `last`, the newest of the range, is
    /// older than the gap timeout. Its age is known from either of two facts:
    /// - this process saw some position `>= last` already allocated at least that long ago
    ///   (it was below an item that blocked a read);
    /// - the inbox's newest allocation (`lastSeqAt`, which never goes back) is that old.
    async fn gap_is_abandoned(
        &self,
        room: &RoomId,
        peer: &PeerId,
        inbox: &str,
        last: Seq,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let allocated_by = {
            let mut gaps = self
                .noticed_gaps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if gaps.len() >= MAX_NOTICED_GAPS {
                gaps.retain(|_, noticed| now - *noticed < 60_000);
                if gaps.len() >= MAX_NOTICED_GAPS {
                    gaps.clear();
                }
            }
            gaps.entry((inbox.to_owned(), last)).or_insert(now);
            gaps.range((inbox.to_owned(), last)..=(inbox.to_owned(), Seq::MAX))
                .map(|(_, noticed)| *noticed)
                .min()
                .unwrap_or(now)
        };
        if now - allocated_by >= GAP_TIMEOUT_MS {
            return Ok(true);
        }
        self.count_read();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(room_pk(room), member_sk(peer))))
            .consistent_read(true)
            .projection_expression("lastSeqAt")
            .send()
            .await
            .map_err(unavailable)?;
        match output.item {
            Some(item) => Ok(now - get_n::<Millis>(&item, member::LAST_SEQ_AT)? >= GAP_TIMEOUT_MS),
            None => Ok(true),
        }
    }

    /// Tombstones each position of `first..=last` that is still empty, all or nothing: if a
    /// late writer got one in first, nothing is written. `last + 1` must be the first number
    /// of an existing item. At most a transaction's worth is written, the TOP of the range, so
    /// that it still ends just below that item and holds the key of every allocation it
    /// touches (see "Why a tombstone never hides a committed message" in the
    /// module docs); the next round continues below it.
    async fn tombstone(
        &self,
        inbox: &str,
        first: Seq,
        last: Seq,
        expires_at: Millis,
    ) -> Result<(), StoreError> {
        let first = first.max(last.saturating_sub(MAX_TRANSACTION_ITEMS - 1));
        let transaction = (first..=last)
            .map(|seq| {
                conditional_put(
                    &self.table,
                    void_item(inbox.to_owned(), seq, seq, expires_at),
                    "attribute_not_exists(pk)",
                    None,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.count_transaction(transaction.len());
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(transaction))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if cancellation(&error).is_some() => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// A read, with a hook for tests before each tombstone.
    pub(super) async fn read_inbox(
        &self,
        room: &RoomId,
        peer: &PeerId,
        after: Seq,
        limit: ReadLimit,
        now: Millis,
        hook: Hook<'_>,
    ) -> Result<InboxRead, StoreError> {
        let nothing = InboxRead {
            messages: Vec::new(),
            through: after,
        };
        if limit.messages == 0 {
            return Ok(nothing);
        }
        let inbox = inbox_pk(room, peer);
        for _ in 0..MAX_READ_ROUNDS {
            let mut collected = Collected::new(limit);
            let mut expected = after + 1;
            // The last number read, tombstoned or expired: where a cursor may move to.
            let mut through = after;
            let mut blocked: Option<InboxItem> = None;
            let mut failure = None;
            self.query_partition(
                inbox.clone(),
                Some(seq_sk(after)),
                Some(page_size(&collected)),
                |page| {
                    for raw in page {
                        let item = match InboxItem::from_item(raw, now) {
                            Ok(item) => item,
                            Err(error) => {
                                failure = Some(error);
                                return ControlFlow::Break(());
                            }
                        };
                        if item.last < expected {
                            continue;
                        }
                        if item.first > expected {
                            blocked = Some(item);
                            return ControlFlow::Break(());
                        }
                        for seq in expected.max(item.first)..=item.last {
                            if let Some(message) = item.message(seq, peer) {
                                // Not taken: it starts the next read, so the cursor stays
                                // before it.
                                if !collected.take(message) {
                                    through = seq - 1;
                                    return ControlFlow::Break(());
                                }
                                if collected.is_full() {
                                    through = seq;
                                    return ControlFlow::Break(());
                                }
                            }
                        }
                        expected = item.last + 1;
                        through = item.last;
                    }
                    ControlFlow::Continue(Some(page_size(&collected)))
                },
            )
            .await?;
            if let Some(error) = failure {
                return Err(error);
            }
            let read = InboxRead {
                messages: collected.into_messages(),
                through,
            };
            let Some(blocked) = blocked else {
                return Ok(read);
            };
            if !read.messages.is_empty() {
                // Deliver what is ready; the gap is dealt with by the next read.
                return Ok(read);
            }
            if !self
                .gap_is_abandoned(room, peer, &inbox, blocked.first - 1, now)
                .await?
            {
                return Ok(read);
            }
            let expires_at = blocked.expires_at_ms.max(now + TOMBSTONE_MIN_LIFE_MS);
            if let Some(hook) = hook {
                hook(Step::Tombstone).await;
            }
            self.tombstone(&inbox, expected, blocked.first - 1, expires_at)
                .await?;
        }
        Ok(nothing)
    }
}
