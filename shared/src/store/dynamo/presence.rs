//! Presence: the room view, joins against capacity, polls that keep a member present, and
//! departures (leaves and sweeps of timed-out members) with their `peer-left` notices.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{ReturnValue, TransactWriteItem, Update};

use super::items::{
    self, EXPIRES_AT, EXPIRES_AT_MS, MemberItem, ROOM_SK, get_n, get_s, key, member, member_sk, n,
    room_pk, s, ttl_seconds,
};
use super::{
    DynamoStore, MAX_JOIN_ATTEMPTS, ROOM_VERSION, built, cancellation, condition_failed,
    conditional_put, unavailable, unavailable_because,
};
use crate::clock::Millis;
use crate::ids::{PeerId, RoomId};
use crate::message::{LeaveReason, MessageKind, peer_joined_data};
use crate::store::{Departures, JoinRequest, Joined, Member, Seq, StoreError, Timing};

impl DynamoStore {
    /// The room's version token and member items (expired ones included).
    pub(super) async fn room_view(
        &self,
        room: &RoomId,
    ) -> Result<(Option<String>, Vec<MemberItem>), StoreError> {
        let mut raw = Vec::new();
        self.query_partition(room_pk(room), None, None, |page| {
            raw.extend_from_slice(page);
            true
        })
        .await?;
        let mut version = None;
        let mut members = Vec::new();
        for item in &raw {
            if MemberItem::is_member_item(item) {
                members.push(MemberItem::from_item(item)?);
            } else if get_s(item, items::SK)? == ROOM_SK {
                version = Some(get_s(item, ROOM_VERSION)?.to_owned());
            }
        }
        members.sort_by(|a, b| (a.joined_at, &a.peer).cmp(&(b.joined_at, &b.peer)));
        Ok((version, members))
    }

    /// The room's members whose items have not expired, oldest first.
    pub(super) async fn live_members(
        &self,
        room: &RoomId,
        now: Millis,
    ) -> Result<Vec<MemberItem>, StoreError> {
        let (_, members) = self.room_view(room).await?;
        Ok(members
            .into_iter()
            .filter(|member| member.expires_at_ms > now)
            .collect())
    }

    /// Removes each of `candidates` whose member item still meets the condition (timed out
    /// before `stale_before`, or present at all) and tells the remaining members.
    pub(super) async fn depart(
        &self,
        room: &RoomId,
        candidates: &[PeerId],
        stale_before: Option<Millis>,
        reason: LeaveReason,
        timing: Timing,
    ) -> Result<Departures, StoreError> {
        let mut gone = Vec::new();
        for peer in candidates {
            self.count_write(1);
            let mut delete = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key(room_pk(room), member_sk(peer))));
            delete = match stale_before {
                Some(stale_before) => delete
                    .condition_expression("lastSeen < :stale")
                    .expression_attribute_values(":stale", n(stale_before)),
                None => delete
                    .condition_expression("attribute_exists(pk) AND expiresAtMs > :now")
                    .expression_attribute_values(":now", n(timing.now)),
            };
            match delete.send().await {
                Ok(_) => gone.push(peer.clone()),
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
        }
        if gone.is_empty() {
            return Ok(Departures::default());
        }
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
            timing,
        } = request;
        let life = (timing.now - timing.stale_before) + (timing.expires_at - timing.now);
        let mut departures = Departures::default();
        for _ in 0..MAX_JOIN_ATTEMPTS {
            let (version, members) = self.room_view(&room).await?;
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
            let mut values = HashMap::from([
                (":new".to_owned(), s(ulid::Ulid::new().to_string())),
                (":expiresMs".to_owned(), n(timing.now + life)),
                (":expires".to_owned(), n(ttl_seconds(timing.now + life))),
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
                        "SET #version = :new, {EXPIRES_AT_MS} = :expiresMs, {EXPIRES_AT} = :expires"
                    ))
                    .condition_expression(condition)
                    .expression_attribute_names("#version", ROOM_VERSION)
                    .set_expression_attribute_values(Some(values))
                    .build(),
            )?;
            let newcomer = MemberItem::new_item(&room, &peer, name.as_deref(), timing.now, life);
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

    /// A poll's presence (`Store::touch`): keeps the member present, acknowledges what it read.
    pub(super) async fn touch_member(
        &self,
        room: &RoomId,
        peer: &PeerId,
        acked: Seq,
        now: Millis,
        waits_at: Option<&str>,
    ) -> Result<Seq, StoreError> {
        // Recording where the poll waits rides on the update every poll makes anyway.
        let present = match waits_at {
            Some(_) => {
                "SET lastSeen = :now, expiresAtMs = :now + lifeMs, expiresAt = :nowSeconds + lifeSeconds, waitsAt = :waitsAt"
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
                .return_values(ReturnValue::AllNew);
            match waits_at {
                Some(address) => request.expression_attribute_values(":waitsAt", s(address)),
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
        let output = match usual {
            Ok(output) => output,
            Err(error) if condition_failed(&error) => {
                match update(present.to_owned(), ALIVE.to_owned()).send().await {
                    Ok(output) => output,
                    Err(error) if condition_failed(&error) => return Err(StoreError::PeerGone),
                    Err(error) => return Err(unavailable(error)),
                }
            }
            Err(error) => return Err(unavailable(error)),
        };
        let item = output.attributes.unwrap_or_default();
        let head: Seq = get_n(&item, member::LAST_SEQ)?;
        let stored: Seq = get_n(&item, member::ACKED_SEQ)?;
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
        Ok(head)
    }
}
