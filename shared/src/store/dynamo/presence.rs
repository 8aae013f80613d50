//! Presence: the room view, joins against capacity, polls that keep a member present, and
//! departures (leaves and sweeps of timed-out members) with their `peer-left` notices.

use std::collections::HashMap;
use std::ops::ControlFlow;

use aws_sdk_dynamodb::types::{ReturnValue, TransactWriteItem, Update};

use super::items::{
    self, EXPIRES_AT, EXPIRES_AT_MS, MemberItem, ROOM_SK, RoomLimits, get_n, get_s, key, member,
    member_sk, n, room_pk, s, ttl_seconds,
};
use super::{
    DynamoStore, MAX_JOIN_ATTEMPTS, ROOM_VERSION, built, cancellation, condition_failed,
    conditional_put, unavailable, unavailable_because,
};
use crate::clock::Millis;
use crate::ids::{PeerId, RoomId};
use crate::message::{LeaveReason, MessageKind, peer_joined_data};
use crate::store::{
    Departures, JoinRequest, Joined, Member, Presence, Seq, SpentPosts, StoreError, Timing, Waiting,
};

impl DynamoStore {
    /// The room's version token, its limits and its member items (expired ones included).
    pub(super) async fn room_view(
        &self,
        room: &RoomId,
    ) -> Result<(Option<String>, RoomLimits, Vec<MemberItem>), StoreError> {
        let mut raw = Vec::new();
        self.query_partition(room_pk(room), None, None, |page| {
            raw.extend_from_slice(page);
            ControlFlow::Continue(None)
        })
        .await?;
        let mut version = None;
        let mut limits = RoomLimits::default();
        let mut members = Vec::new();
        for item in &raw {
            if MemberItem::is_member_item(item) {
                members.push(MemberItem::from_item(item)?);
            } else if get_s(item, items::SK)? == ROOM_SK {
                version = Some(get_s(item, ROOM_VERSION)?.to_owned());
                limits = RoomLimits::from_item(item)?;
            }
        }
        members.sort_by(|a, b| (a.joined_at, &a.peer).cmp(&(b.joined_at, &b.peer)));
        Ok((version, limits, members))
    }

    /// The room's members whose items have not expired, oldest first.
    pub(super) async fn live_members(
        &self,
        room: &RoomId,
        now: Millis,
    ) -> Result<Vec<MemberItem>, StoreError> {
        let (_, _, members) = self.room_view(room).await?;
        Ok(members
            .into_iter()
            .filter(|member| member.expires_at_ms > now)
            .collect())
    }

    /// Removes each of `candidates` whose member item still meets the condition (timed out
    /// before `stale_before`, or present at all) and tells the remaining members. The posts
    /// each made in its flood-limit window stay on the room for the next member to join.
    pub(super) async fn depart(
        &self,
        room: &RoomId,
        candidates: &[PeerId],
        stale_before: Option<Millis>,
        reason: LeaveReason,
        timing: Timing,
    ) -> Result<Departures, StoreError> {
        let mut gone = Vec::new();
        let mut spent = Vec::new();
        for peer in candidates {
            self.count_write(1);
            let mut delete = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key(room_pk(room), member_sk(peer))))
                .return_values(ReturnValue::AllOld);
            delete = match stale_before {
                Some(stale_before) => delete
                    .condition_expression("lastSeen < :stale")
                    .expression_attribute_values(":stale", n(stale_before)),
                None => delete
                    .condition_expression("attribute_exists(pk) AND expiresAtMs > :now")
                    .expression_attribute_values(":now", n(timing.now)),
            };
            match delete.send().await {
                Ok(output) => {
                    gone.push(peer.clone());
                    spent.push(items::spent_posts(&output.attributes.unwrap_or_default()));
                }
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
        }
        if gone.is_empty() {
            return Ok(Departures::default());
        }
        self.keep_spent_posts(room, &spent, timing).await?;
        let present = self.live_members(room, timing.now).await?;
        let remaining: Vec<PeerId> = present
            .iter()
            .map(|member| member.peer.clone())
            .filter(|peer| !gone.contains(peer))
            .collect();
        let mut notified: Vec<PeerId> = Vec::new();
        for peer in &gone {
            let reached = self
                .notify(
                    room,
                    peer,
                    &remaining,
                    MessageKind::PeerLeft,
                    reason.data(),
                    timing,
                )
                .await?;
            for peer in reached {
                if !notified.contains(&peer) {
                    notified.push(peer);
                }
            }
        }
        let doorbells = items::doorbells(&present, &notified);
        Ok(Departures {
            gone,
            notified,
            doorbells,
            stale_at: None,
        })
    }

    pub(super) async fn sweep_members(
        &self,
        room: &RoomId,
        members: &[MemberItem],
        timing: Timing,
    ) -> Result<Departures, StoreError> {
        let stale: Vec<PeerId> = members
            .iter()
            .filter(|member| member.last_seen < timing.stale_before)
            .map(|member| member.peer.clone())
            .collect();
        if stale.is_empty() {
            let timeout = timing.now - timing.stale_before;
            return Ok(Departures {
                stale_at: members
                    .iter()
                    .map(|member| member.last_seen + timeout)
                    .min(),
                ..Departures::default()
            });
        }
        self.depart(
            room,
            &stale,
            Some(timing.stale_before),
            LeaveReason::Timeout,
            timing,
        )
        .await
    }

    /// A join (`Store::join`): counts the room, sweeps timed-out members, adds the newcomer.
    pub(super) async fn join_room(&self, request: JoinRequest) -> Result<Joined, StoreError> {
        let JoinRequest {
            room,
            peer,
            name,
            capacity,
            inbox_limit,
            join_rate,
            timing,
        } = request;
        let life = (timing.now - timing.stale_before) + (timing.expires_at - timing.now);
        let mut departures = Departures::default();
        for _ in 0..MAX_JOIN_ATTEMPTS {
            let (version, limits, members) = self.room_view(&room).await?;
            if members
                .iter()
                .any(|member| member.last_seen < timing.stale_before)
            {
                // Whoever removed them (this join or another caller), count the room again.
                let swept = self.sweep_members(&room, &members, timing).await?;
                if !swept.gone.is_empty() {
                    departures.gone.extend(swept.gone);
                    departures.notified = swept.notified;
                }
                continue;
            }
            let join_tat = join_rate
                .admit(limits.join_tat, timing.now)
                .map_err(|retry_after| StoreError::JoinsLimited { retry_after })?;
            let present: Vec<&MemberItem> = members
                .iter()
                .filter(|member| member.expires_at_ms > timing.now)
                .collect();
            if present.len() >= capacity {
                return Err(StoreError::RoomFull);
            }
            // The `peer-joined` counts like any message, so join/leave cycling cannot flood
            // an inbox past its limit.
            for member in &present {
                if !self
                    .inbox_has_room(&room, member, 1, inbox_limit, timing.now)
                    .await?
                {
                    return Err(StoreError::InboxFull(member.peer.clone()));
                }
            }
            // The room item outlives its join limit's memory: expiring earlier, it would hand
            // out a full budget again.
            let room_expires = (timing.now + life).max(join_tat);
            let mut values = HashMap::from([
                (":new".to_owned(), s(ulid::Ulid::new().to_string())),
                (":expiresMs".to_owned(), n(room_expires)),
                (":expires".to_owned(), n(ttl_seconds(room_expires))),
                (":tat".to_owned(), n(join_tat)),
                (":zero".to_owned(), n(0)),
            ]);
            let condition = match version {
                Some(version) => {
                    values.insert(":old".to_owned(), s(version));
                    "#version = :old"
                }
                None => "attribute_not_exists(pk)",
            };
            let update = built(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(room_pk(&room), ROOM_SK.to_owned())))
                    .update_expression(format!(
                        "SET #version = :new, {EXPIRES_AT_MS} = :expiresMs, {EXPIRES_AT} = :expires, \
                         {tat} = :tat, {window} = :zero, {count} = :zero",
                        tat = items::room::JOIN_TAT,
                        window = items::room::SPENT_WINDOW,
                        count = items::room::SPENT_COUNT,
                    ))
                    .condition_expression(condition)
                    .expression_attribute_names("#version", ROOM_VERSION)
                    .set_expression_attribute_values(Some(values))
                    .build(),
            )?;
            // The newcomer continues the count of departed members' posts in their window;
            // the version condition makes a departure that kept posts since the read retry us.
            let newcomer = MemberItem::new_item(
                &room,
                &peer,
                name.as_deref(),
                timing.now,
                life,
                limits.spent,
            );
            let transaction = vec![
                TransactWriteItem::builder().update(update).build(),
                conditional_put(&self.table, newcomer, "attribute_not_exists(pk)", None)?,
            ];
            self.count_transaction(transaction.len());
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(transaction))
                .send()
                .await;
            match result {
                Ok(_) => {}
                // Another join changed the room since it was read: count again.
                Err(error) if cancellation(&error).is_some() => continue,
                Err(error) => return Err(unavailable(error)),
            }
            let others: Vec<Member> = present
                .iter()
                .map(|member| Member {
                    peer: member.peer.clone(),
                    name: member.name.clone(),
                })
                .collect();
            let recipients: Vec<PeerId> = others.iter().map(|member| member.peer.clone()).collect();
            self.notify(
                &room,
                &peer,
                &recipients,
                MessageKind::PeerJoined,
                peer_joined_data(name.as_deref()),
                timing,
            )
            .await?;
            let doorbells = items::doorbells(&members, &recipients);
            return Ok(Joined {
                others,
                departures,
                doorbells,
            });
        }
        Err(unavailable_because(
            "the room kept changing during the join",
        ))
    }

    /// A poll's presence (`Store::touch`): keeps the member present, acknowledges what it read,
    /// and records the waiting poll, returning the one it replaced.
    pub(super) async fn touch_member(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
        waiting: Option<Waiting<'_>>,
    ) -> Result<Presence, StoreError> {
        // Recording where the poll waits, and which poll it is, rides on the update every
        // poll makes anyway; the item as it was before (`ALL_OLD`) holds the poll it replaces.
        let present = match waiting {
            Some(_) => {
                "SET lastSeen = :now, expiresAtMs = :now + lifeMs, expiresAt = :nowSeconds + lifeSeconds, waitsAt = :waitsAt, pollId = :pollId, pollUntil = :pollUntil"
            }
            None => {
                "SET lastSeen = :now, expiresAtMs = :now + lifeMs, expiresAt = :nowSeconds + lifeSeconds"
            }
        };
        const ALIVE: &str = "attribute_exists(pk) AND expiresAtMs > :now";
        let member_key = key(room_pk(room), member_sk(peer));
        let update = |expression: String, condition: String| {
            self.count_write(1);
            let request = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(member_key.clone()))
                .update_expression(expression)
                .condition_expression(condition)
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":nowSeconds", n(ttl_seconds(now)))
                .return_values(ReturnValue::AllOld);
            match waiting {
                Some(waiting) => request
                    .expression_attribute_values(":waitsAt", s(waiting.address))
                    .expression_attribute_values(":pollId", s(waiting.poll))
                    .expression_attribute_values(":pollUntil", n(waiting.until)),
                None => request,
            }
        };
        // The usual poll acknowledges what it read, a number between the stored
        // acknowledgement and the head: one request.
        let usual = update(
            format!("{present}, ackedSeq = :acked"),
            format!("{ALIVE} AND ackedSeq <= :acked AND lastSeq >= :acked"),
        )
        .expression_attribute_values(":acked", n(acked))
        .send()
        .await;
        let (output, acknowledged) = match usual {
            Ok(output) => (output, true),
            Err(error) if condition_failed(&error) => {
                match update(present.to_owned(), ALIVE.to_owned()).send().await {
                    Ok(output) => (output, false),
                    Err(error) if condition_failed(&error) => return Err(StoreError::PeerGone),
                    Err(error) => return Err(unavailable(error)),
                }
            }
            Err(error) => return Err(unavailable(error)),
        };
        let item = output.attributes.unwrap_or_default();
        let head: Seq = get_n(&item, member::LAST_SEQ)?;
        let last_activity: Millis = get_n(&item, member::LAST_SEQ_AT)?;
        // The update leaves the head alone, so the old item's is the head after it too.
        let stored: Seq = if acknowledged {
            acked
        } else {
            get_n(&item, member::ACKED_SEQ)?
        };
        let previous = match waiting {
            Some(_) => items::poll_record(&item)?,
            None => None,
        };
        // A cursor beyond the head acknowledges the head.
        let target = acked.min(head);
        if target > stored {
            self.count_write(1);
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(member_key))
                .update_expression("SET ackedSeq = :acked")
                .condition_expression("ackedSeq < :acked")
                .expression_attribute_values(":acked", n(target))
                .send()
                .await;
            if let Err(error) = result
                && !condition_failed(&error)
            {
                return Err(unavailable(error));
            }
        }
        Ok(Presence {
            head,
            last_activity,
            previous,
        })
    }

    /// Folds the posts departed members made in their flood-limit windows into the room item
    /// ([`SpentPosts::keep`]), replacing its version so that a join that read the room before
    /// runs again and sees them. Nothing to do when no window is still open.
    async fn keep_spent_posts(
        &self,
        room: &RoomId,
        leaving: &[SpentPosts],
        timing: Timing,
    ) -> Result<(), StoreError> {
        let window_ms = timing.post_window_ms;
        let fold = |kept: SpentPosts| {
            leaving
                .iter()
                .fold(kept, |kept, spent| kept.keep(*spent, timing.now, window_ms))
        };
        if fold(SpentPosts::default()) == SpentPosts::default() {
            return Ok(());
        }
        let room_key = key(room_pk(room), ROOM_SK.to_owned());
        for _ in 0..MAX_JOIN_ATTEMPTS {
            // The room's Query, as joins and departures make already (no GetItem: the leave
            // and join functions' policies grant none, infra/iam-calls.json).
            let (version, limits, _) = self.room_view(room).await?;
            // No room item: TTL took it, long after any window closed.
            let Some(version) = version else {
                return Ok(());
            };
            let kept = fold(limits.spent);
            if kept == limits.spent {
                return Ok(());
            }
            let expires = limits
                .expires_at_ms
                .max(kept.window.saturating_add(window_ms));
            self.count_write(1);
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(room_key.clone()))
                .update_expression(format!(
                    "SET #version = :new, {window} = :window, {count} = :count, \
                     {EXPIRES_AT_MS} = :expiresMs, {EXPIRES_AT} = :expires",
                    window = items::room::SPENT_WINDOW,
                    count = items::room::SPENT_COUNT,
                ))
                .condition_expression("#version = :old")
                .expression_attribute_names("#version", ROOM_VERSION)
                .expression_attribute_values(":new", s(ulid::Ulid::new().to_string()))
                .expression_attribute_values(":old", s(version))
                .expression_attribute_values(":window", n(kept.window))
                .expression_attribute_values(":count", n(kept.count))
                .expression_attribute_values(":expiresMs", n(expires))
                .expression_attribute_values(":expires", n(ttl_seconds(expires)))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                // A join or another departure changed the room since the read: fold again.
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
        }
        Err(unavailable_because(
            "the room kept changing during the departure",
        ))
    }
}
