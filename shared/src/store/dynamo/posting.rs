//! Posting and inbox order: allocating sequence numbers, committing messages with their
//! sent-id items, giving up allocations, idempotency, the flood limit and server notices.

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    ConditionCheck, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};

use super::items::{
    self, Entry, Item, SENT_MESSAGE_ID, get_n, get_s, holds_entries, inbox_pk, key, member,
    member_sk, message_item, n, room_pk, sent_item, sent_pk, sent_sk, seq_sk, void_item,
};
use super::{
    DynamoStore, Hook, MAX_COMMIT_ATTEMPTS, MAX_POST_ROUNDS, MAX_TRANSACTION_ITEMS, Step,
    TOMBSTONE_MIN_LIFE_MS, cancellation, condition_failed, conditional_put, unavailable,
    unavailable_because,
};
use crate::clock::Millis;
use crate::ids::{MessageId, PeerId, RoomId};
use crate::message::{MessageKind, Outgoing};
use crate::store::{
    Doorbell, PostRequest, Posted, RateLimit, Seq, StoreError, Timing, distinct_recipients,
    resolve_recipients,
};

/// A range of sequence numbers allocated in one recipient's inbox, with the messages for it.
#[derive(Clone, Debug)]
struct Allocation {
    recipient: PeerId,
    first: Seq,
    entries: Vec<Entry>,
}

impl Allocation {
    fn last(&self) -> Seq {
        self.first + self.entries.len() as u64 - 1
    }
}

/// Why a commit did not happen.
#[derive(Debug)]
enum CommitError {
    /// An inbox position was tombstoned by a reader, or another transaction got in the way:
    /// allocate again.
    Conflict,
    /// These sent-id items (indices into the commit's list) already hold a live id.
    Repeats(Vec<usize>),
    Store(StoreError),
}

/// What a delivery did.
enum Outcome {
    Delivered(Vec<PeerId>),
    Repeats(Vec<usize>),
}

/// One recipient's part of a delivery.
struct Part {
    recipient: PeerId,
    entries: Vec<Entry>,
    /// Whether the recipient being gone fails the delivery (a client named it) or it is
    /// skipped (it was only reached by a broadcast, or by a message the server sends).
    required: bool,
}

/// The messages of one delivery, per recipient in first-seen order.
struct Delivery<'a> {
    room: &'a RoomId,
    from: &'a PeerId,
    plan: Vec<Part>,
    /// Sent-id items to write with the messages.
    sent: Vec<Item>,
    timing: Timing,
    /// When `timing.now` was taken: an allocation is dated `timing.now` plus the time since.
    began: Instant,
}

/// What every round of one post shares.
struct PostContext<'a> {
    room: &'a RoomId,
    sender: &'a PeerId,
    inbox_limit: u64,
    rate_limit: RateLimit,
    timing: Timing,
    /// When `timing.now` was taken.
    began: Instant,
}

/// What a conditional put found.
enum Put {
    Done,
    /// An item with its key exists: this one, when the service returned it.
    Exists(Option<Item>),
}

impl DynamoStore {
    /// Allocates `count` sequence numbers in `recipient`'s inbox, dated `at`; the first of
    /// them, or `None` if the recipient is not a member at `now`. The member's `lastSeqAt`
    /// becomes `at` unless it is already later (another process's clock may run ahead): it
    /// never goes back, so readers can trust it as the date of the newest allocation.
    async fn allocate(
        &self,
        room: &RoomId,
        recipient: &PeerId,
        count: usize,
        now: Millis,
        at: Millis,
    ) -> Result<Option<Seq>, StoreError> {
        const ALIVE: &str = "attribute_exists(pk) AND expiresAtMs > :now";
        let dated = format!("{ALIVE} AND lastSeqAt <= :at");
        // The second form only runs when the first fails: rare, as dates go forward.
        let forms = [
            ("ADD lastSeq :count SET lastSeqAt = :at", dated.as_str()),
            ("ADD lastSeq :count", ALIVE),
        ];
        for (update, condition) in forms {
            self.count_write(1);
            let mut request = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(room_pk(room), member_sk(recipient))))
                .update_expression(update)
                .condition_expression(condition)
                .expression_attribute_values(":count", n(count))
                .expression_attribute_values(":now", n(now))
                .return_values(ReturnValue::UpdatedNew);
            if update.contains(":at") {
                request = request.expression_attribute_values(":at", n(at));
            }
            match request.send().await {
                Ok(output) => {
                    let head: Seq =
                        get_n(&output.attributes.unwrap_or_default(), member::LAST_SEQ)?;
                    return Ok(Some(head + 1 - count as u64));
                }
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
        }
        Ok(None)
    }

    /// Writes allocated messages and sent-id items in one transaction.
    async fn commit(
        &self,
        room: &RoomId,
        from: &PeerId,
        allocations: &[Allocation],
        sent: &[Item],
        timing: Timing,
    ) -> Result<(), CommitError> {
        if let ([allocation], []) = (allocations, sent)
            && allocation.entries.len() == 1
        {
            // One message to one inbox, the usual trickled candidate: a conditional put does
            // it at half the cost of a transaction.
            let item = message_item(
                inbox_pk(room, &allocation.recipient),
                allocation.first,
                from,
                timing.now,
                timing.expires_at,
                &allocation.entries,
            );
            return match self.put_if_absent(item).await {
                Ok(Put::Done) => Ok(()),
                // The SDK retried a put whose response was lost, and the first one had
                // succeeded: the item there holds these very messages.
                Ok(Put::Exists(Some(existing)))
                    if holds_entries(&existing, &allocation.entries) =>
                {
                    Ok(())
                }
                Ok(Put::Exists(_)) => Err(CommitError::Conflict),
                Err(error) => Err(CommitError::Store(error)),
            };
        }
        let mut transaction = Vec::new();
        for allocation in allocations {
            let pk = inbox_pk(room, &allocation.recipient);
            if allocation.entries.len() > 1 {
                // The item is keyed by its last number; a reader that gave up on the range
                // tombstoned its first number, which is checked here.
                let check = ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk.clone(), seq_sk(allocation.first))))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(|error| {
                        CommitError::Store(StoreError::Unavailable(Box::new(error)))
                    })?;
                transaction.push(TransactWriteItem::builder().condition_check(check).build());
            }
            let item = message_item(
                pk,
                allocation.first,
                from,
                timing.now,
                timing.expires_at,
                &allocation.entries,
            );
            transaction.push(
                conditional_put(&self.table, item, "attribute_not_exists(pk)", None)
                    .map_err(CommitError::Store)?,
            );
        }
        let inbox_items = transaction.len();
        for item in sent {
            let values = HashMap::from([(":now".to_owned(), n(timing.now))]);
            transaction.push(
                conditional_put(
                    &self.table,
                    item.clone(),
                    "attribute_not_exists(pk) OR expiresAtMs <= :now",
                    Some(values),
                )
                .map_err(CommitError::Store)?,
            );
        }
        if transaction.is_empty() {
            return Ok(());
        }
        if transaction.len() as u64 > MAX_TRANSACTION_ITEMS {
            return Err(CommitError::Store(unavailable_because(
                "a post needs more items than one DynamoDB transaction holds",
            )));
        }
        self.count_transaction(transaction.len());
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(transaction))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => match cancellation(&error) {
                Some(failed) => {
                    let repeats: Vec<usize> = failed
                        .iter()
                        .skip(inbox_items)
                        .enumerate()
                        .filter(|(_, failed)| **failed)
                        .map(|(index, _)| index)
                        .collect();
                    if repeats.is_empty() {
                        Err(CommitError::Conflict)
                    } else {
                        Err(CommitError::Repeats(repeats))
                    }
                }
                None => Err(CommitError::Store(unavailable(error))),
            },
        }
    }

    /// Gives up allocations, best effort: tombstones them so that readers need not wait for
    /// the gap timeout. A tombstone only goes where nothing is (a commit that did happen
    /// after all keeps its messages).
    async fn abandon(&self, room: &RoomId, allocations: &[Allocation], timing: Timing) {
        for allocation in allocations {
            let item = void_item(
                inbox_pk(room, &allocation.recipient),
                allocation.first,
                allocation.last(),
                timing.expires_at.max(timing.now + TOMBSTONE_MIN_LIFE_MS),
            );
            if let Err(error) = self.put_if_absent(item).await {
                tracing::debug!(%error, "could not tombstone an abandoned allocation");
            }
        }
    }

    /// Puts `item` unless an item with its key exists (a reader's tombstone, or a commit that
    /// already happened, perhaps by this very put on an earlier attempt): then returns that
    /// item.
    async fn put_if_absent(&self, item: Item) -> Result<Put, StoreError> {
        self.count_write(1);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Put::Done),
            Err(error) => match error.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(Put::Exists(failed.item().cloned()))
                }
                _ => Err(unavailable(error)),
            },
        }
    }

    /// Allocates and commits a delivery, allocating afresh when a reader tombstoned the
    /// previous allocation.
    async fn deliver(
        &self,
        delivery: &Delivery<'_>,
        hook: Hook<'_>,
    ) -> Result<Outcome, StoreError> {
        let Delivery {
            room, from, timing, ..
        } = *delivery;
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            if let Some(hook) = hook {
                hook(Step::Allocate { attempt }).await;
            }
            let mut allocations = Vec::with_capacity(delivery.plan.len());
            for part in &delivery.plan {
                let at = timing.now
                    + Millis::try_from(delivery.began.elapsed().as_millis()).unwrap_or(0);
                match self
                    .allocate(room, &part.recipient, part.entries.len(), timing.now, at)
                    .await
                {
                    Ok(Some(first)) => allocations.push(Allocation {
                        recipient: part.recipient.clone(),
                        first,
                        entries: part.entries.clone(),
                    }),
                    Ok(None) if !part.required => {}
                    Ok(None) => {
                        self.abandon(room, &allocations, timing).await;
                        return Err(StoreError::NoSuchRecipient(part.recipient.clone()));
                    }
                    Err(error) => {
                        self.abandon(room, &allocations, timing).await;
                        return Err(error);
                    }
                }
            }
            if let Some(hook) = hook {
                hook(Step::Commit { attempt }).await;
            }
            match self
                .commit(room, from, &allocations, &delivery.sent, timing)
                .await
            {
                Ok(()) => {
                    return Ok(Outcome::Delivered(
                        allocations
                            .into_iter()
                            .map(|allocation| allocation.recipient)
                            .collect(),
                    ));
                }
                Err(CommitError::Conflict) => self.abandon(room, &allocations, timing).await,
                Err(CommitError::Repeats(repeats)) => {
                    self.abandon(room, &allocations, timing).await;
                    return Ok(Outcome::Repeats(repeats));
                }
                Err(CommitError::Store(error)) => {
                    self.abandon(room, &allocations, timing).await;
                    return Err(error);
                }
            }
        }
        Err(unavailable_because("inbox writes kept conflicting"))
    }

    /// Sends one server-made message from `from` to each of `recipients` still present;
    /// returns those it reached.
    pub(super) async fn notify(
        &self,
        room: &RoomId,
        from: &PeerId,
        recipients: &[PeerId],
        kind: MessageKind,
        data: String,
        timing: Timing,
    ) -> Result<Vec<PeerId>, StoreError> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let entry = Entry {
            id: MessageId::mint(),
            kind,
            data,
        };
        let delivery = Delivery {
            room,
            from,
            plan: recipients
                .iter()
                .map(|recipient| Part {
                    recipient: recipient.clone(),
                    entries: vec![entry.clone()],
                    required: false,
                })
                .collect(),
            sent: Vec::new(),
            timing,
            began: Instant::now(),
        };
        match self.deliver(&delivery, None).await? {
            Outcome::Delivered(reached) => Ok(reached),
            Outcome::Repeats(_) => Err(unavailable_because("a server message had a client id")),
        }
    }

    /// The server id `sender`'s client id was given, if still remembered.
    async fn sent_id(
        &self,
        room: &RoomId,
        sender: &PeerId,
        client_id: &str,
        now: Millis,
    ) -> Result<Option<MessageId>, StoreError> {
        self.count_read();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(sent_pk(room, sender), sent_sk(client_id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        if items::expired(&item, now) {
            return Ok(None);
        }
        let id = get_s(&item, SENT_MESSAGE_ID)?;
        MessageId::parse(id)
            .map(Some)
            .map_err(|_| StoreError::Corrupt("a sent-id item with a malformed messageId".into()))
    }

    /// Counts one post against `sender`'s flood limit on its member item: one more in the
    /// open window, or a new window opened by this post once the last has ended. Refuses the
    /// post when the window is full. Each step is one conditional update, so processes
    /// sharing the table agree on the count; a concurrent change retries (bounded). Returns
    /// the start of the window the post was counted in.
    async fn count_post(
        &self,
        room: &RoomId,
        sender: &PeerId,
        limit: RateLimit,
        now: Millis,
    ) -> Result<Millis, StoreError> {
        let member = key(room_pk(room), member_sk(sender));
        // A window that opened after this is still open.
        let open_after = now - limit.window_ms;
        for _ in 0..3 {
            self.count_write(1);
            let within = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(member.clone()))
                .update_expression("ADD rateCount :one")
                .condition_expression(
                    "attribute_exists(pk) AND rateWindow > :open_after AND rateCount < :posts",
                )
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":open_after", n(open_after))
                .expression_attribute_values(":posts", n(limit.posts))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match within {
                Ok(output) => return get_n(&output.attributes.unwrap_or_default(), "rateWindow"),
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
            self.count_write(1);
            let fresh = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(member.clone()))
                .update_expression("SET rateWindow = :now, rateCount = :one")
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(rateWindow) OR rateWindow <= :open_after)",
                )
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":open_after", n(open_after))
                .send()
                .await;
            match fresh {
                Ok(_) => return Ok(now),
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
            // Neither: the window is full, the sender is gone, or another post changed the
            // window between the two updates. Read which.
            self.count_read();
            let item = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(member.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?
                .item;
            let Some(item) = item else {
                return Err(StoreError::PeerGone);
            };
            let window: Millis = get_n(&item, "rateWindow").unwrap_or(0);
            let count: u64 = get_n(&item, "rateCount").unwrap_or(0);
            if window > open_after && count >= limit.posts {
                return Err(StoreError::RateLimited {
                    retry_after: limit.retry_after(window, now),
                });
            }
        }
        Err(unavailable_because("the rate-limit count kept changing"))
    }

    /// Takes back a post counted in the window that opened at `window`, best effort: a post
    /// that delivered nothing (it was made of repeats, or failed) does not use up the window.
    async fn uncount_post(&self, room: &RoomId, sender: &PeerId, window: Millis) {
        self.count_write(1);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(room_pk(room), member_sk(sender))))
            .update_expression("ADD rateCount :minus_one")
            .condition_expression(
                "attribute_exists(pk) AND rateWindow = :window AND rateCount > :zero",
            )
            .expression_attribute_values(":minus_one", n(-1))
            .expression_attribute_values(":window", n(window))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        if let Err(error) = result
            && !condition_failed(&error)
        {
            tracing::debug!(error = %unavailable(error), "could not take back a post's count");
        }
    }

    /// Looks up which of `client_ids` were given a server id by an earlier post, and adds them
    /// to `earlier`; whether there was any.
    async fn recognise_repeats(
        &self,
        room: &RoomId,
        sender: &PeerId,
        client_ids: &[&str],
        now: Millis,
        earlier: &mut HashMap<String, MessageId>,
    ) -> Result<bool, StoreError> {
        let mut found = false;
        for client_id in client_ids {
            if let Some(id) = self.sent_id(room, sender, client_id, now).await? {
                earlier.insert((*client_id).to_owned(), id);
                found = true;
            }
        }
        Ok(found)
    }

    /// A post, with a hook for tests at each [`Step`]. A post counts against the flood limit
    /// only if it delivers something.
    pub(super) async fn post_with(
        &self,
        request: PostRequest,
        hook: Hook<'_>,
    ) -> Result<Posted, StoreError> {
        let (room, sender) = (request.room.clone(), request.sender.clone());
        let mut counted = None;
        let result = self.post_rounds(request, &mut counted, hook).await;
        if let Some(window) = counted {
            self.uncount_post(&room, &sender, window).await;
        }
        result
    }

    /// The rounds of a post. `counted` holds the window the post was counted in while it has
    /// not delivered yet.
    async fn post_rounds(
        &self,
        request: PostRequest,
        counted: &mut Option<Millis>,
        hook: Hook<'_>,
    ) -> Result<Posted, StoreError> {
        let began = Instant::now();
        let PostRequest {
            room,
            sender,
            messages,
            inbox_limit,
            rate_limit,
            timing,
        } = request;
        // Client ids found already used, with the server id they were given.
        let mut earlier: HashMap<String, MessageId> = HashMap::new();
        for _ in 0..MAX_POST_ROUNDS {
            let mut in_this_post: HashMap<&str, MessageId> = HashMap::new();
            let mut previous = Vec::with_capacity(messages.len());
            let mut sent = Vec::new();
            let mut sent_client_ids = Vec::new();
            for (id, message) in &messages {
                let Some(client_id) = &message.client_id else {
                    previous.push(None);
                    continue;
                };
                let client_id = client_id.as_str();
                if let Some(earlier) = earlier.get(client_id).or(in_this_post.get(client_id)) {
                    previous.push(Some(earlier.clone()));
                    continue;
                }
                in_this_post.insert(client_id, id.clone());
                sent.push(sent_item(&room, &sender, client_id, id, timing.expires_at));
                sent_client_ids.push(client_id);
                previous.push(None);
            }
            let ids: Vec<MessageId> = messages
                .iter()
                .zip(&previous)
                .map(|((id, _), previous)| previous.clone().unwrap_or_else(|| id.clone()))
                .collect();
            let fresh: Vec<_> = messages
                .iter()
                .zip(&previous)
                .filter(|(_, previous)| previous.is_none())
                .map(|(message, _)| message.clone())
                .collect();
            if fresh.is_empty() {
                return Ok(Posted {
                    ids,
                    recipients: Vec::new(),
                    doorbells: Vec::new(),
                });
            }
            let context = PostContext {
                room: &room,
                sender: &sender,
                inbox_limit,
                rate_limit,
                timing,
                began,
            };
            let round = self.post_round(&context, &fresh, sent, counted, hook).await;
            match round {
                Ok((Outcome::Delivered(recipients), doorbells)) => {
                    *counted = None;
                    return Ok(Posted {
                        ids,
                        recipients,
                        doorbells,
                    });
                }
                Ok((Outcome::Repeats(repeats), _)) => {
                    let repeated: Vec<&str> = repeats
                        .iter()
                        .filter_map(|index| sent_client_ids.get(*index).copied())
                        .collect();
                    self.recognise_repeats(&room, &sender, &repeated, timing.now, &mut earlier)
                        .await?;
                }
                Err(
                    refusal @ (StoreError::NoSuchRecipient(_)
                    | StoreError::InboxFull(_)
                    | StoreError::RateLimited { .. }),
                ) => {
                    // A retry of a post whose first attempt committed may be refused now (its
                    // recipient left, its inbox or the flood window filled since): its client
                    // ids say so, and it gets its first ids back, as on SQLite, which looks
                    // them up before any check. Only refusals pay for the lookup.
                    if !self
                        .recognise_repeats(
                            &room,
                            &sender,
                            &sent_client_ids,
                            timing.now,
                            &mut earlier,
                        )
                        .await?
                    {
                        return Err(refusal);
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Err(unavailable_because("client ids kept conflicting"))
    }

    /// One round of a post of `fresh` messages (no known repeats): recipients, inbox limits,
    /// the flood limit (counted once per post, in `counted`), then the delivery.
    async fn post_round(
        &self,
        context: &PostContext<'_>,
        fresh: &[(MessageId, Outgoing)],
        sent: Vec<Item>,
        counted: &mut Option<Millis>,
        hook: Hook<'_>,
    ) -> Result<(Outcome, Vec<Doorbell>), StoreError> {
        let PostContext {
            room,
            sender,
            inbox_limit,
            rate_limit,
            timing,
            began,
        } = *context;
        let members = self.live_members(room, timing.now).await?;
        let member_ids: Vec<PeerId> = members.iter().map(|member| member.peer.clone()).collect();
        let deliveries = resolve_recipients(&member_ids, sender, fresh)?;
        let mut plan = Vec::new();
        for recipient in distinct_recipients(&deliveries) {
            let mine: Vec<usize> = deliveries
                .iter()
                .filter(|(_, peer)| *peer == recipient)
                .map(|(index, _)| *index)
                .collect();
            if let Some(member) = members.iter().find(|member| member.peer == recipient)
                && !self
                    .inbox_has_room(room, member, mine.len() as u64, inbox_limit, timing.now)
                    .await?
            {
                return Err(StoreError::InboxFull(recipient));
            }
            let entries = mine
                .iter()
                .map(|index| {
                    let (id, message) = &fresh[*index];
                    Entry {
                        id: id.clone(),
                        kind: message.kind,
                        data: message.data.clone(),
                    }
                })
                .collect();
            let required = mine.iter().any(|index| fresh[*index].1.to.is_some());
            plan.push(Part {
                recipient,
                entries,
                required,
            });
        }
        // Counted once the post has passed every other check, so refused posts do not use up
        // the window (and once, however many rounds repeats cost).
        if counted.is_none() {
            *counted = Some(
                self.count_post(room, sender, rate_limit, timing.now)
                    .await?,
            );
        }
        let delivery = Delivery {
            room,
            from: sender,
            plan,
            sent,
            timing,
            began,
        };
        let outcome = self.deliver(&delivery, hook).await?;
        // Where the inboxes reached wait, from the member items read anyway.
        let doorbells = match &outcome {
            Outcome::Delivered(reached) => items::doorbells(&members, reached),
            Outcome::Repeats(_) => Vec::new(),
        };
        Ok((outcome, doorbells))
    }
}
