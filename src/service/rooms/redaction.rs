//! Serving redacted events: a redaction is applied to what clients see when its sender sent
//! the redacted event or has the power to redact others' events (checked against the state
//! after the redaction, as the spec leaves to the server from room version 3). Recording a
//! redaction by the event's own sender also removes the event from the search index.

use ruma::{
    CanonicalJsonValue,
    canonical_json::RedactedBecause,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    room_version_rules::RoomVersionRules,
    state_res::events::RoomCreateEvent,
};

use super::{Pdu, RoomCore, state::ShortStateMap};
use crate::{
    Result,
    storage::{
        Batch, Db,
        room_tables::{EVENT_META, REDACTIONS},
    },
};

impl RoomCore {
    /// Records a redaction against the event it redacts (inside the redaction's batch).
    pub(super) fn record_redaction(
        &self,
        db: &Db,
        batch: &mut Batch,
        redaction: &Pdu,
        short_redaction: u64,
    ) -> Result<()> {
        if let Some(target) = &redaction.redacts
            && let Some(short_target) = self.interner.short_event(db, target)?
        {
            batch.put(&REDACTIONS, &(short_target, short_redaction), &())?;
            // Before the batch is written, so no reader that sees the row misses the target.
            self.redacted_targets.add(short_target);
            // A redaction by the event's own sender is always valid: the event leaves the
            // search index in this batch. Others are judged when events are served, which
            // search does too.
            if let Some(meta) = EVENT_META.get(db, &short_target)?
                && meta.is_served()
            {
                let rules = self.rules_of_room(db, meta.room)?;
                let target = self.event_by_short(db, short_target, &rules)?;
                if target.sender == redaction.sender && target.room_id == redaction.room_id {
                    super::search::unindex_event(db, batch, short_target, &target)?;
                }
            }
        }
        Ok(())
    }

    /// The power levels in force in a state group.
    pub(super) fn power_levels_at(&self, db: &Db, group: u64, rules: &RoomVersionRules) -> Result<RoomPowerLevels> {
        let state = self.state.load(db, group)?;
        self.power_levels_in(db, &state, rules)
    }

    /// The power levels in force in a state.
    pub(super) fn power_levels_in(
        &self,
        db: &Db,
        state: &ShortStateMap,
        rules: &RoomVersionRules,
    ) -> Result<RoomPowerLevels> {
        let event = |kind: &str| -> Result<Option<Pdu>> {
            let Some(key) = self.interner.short_state_key(db, kind, "")? else { return Ok(None) };
            let Some(short) = state.get(&key) else { return Ok(None) };
            Ok(Some(self.event_by_short(db, *short, rules)?))
        };
        let content = event("m.room.power_levels")?
            .and_then(|pdu| serde_json::from_str::<RoomPowerLevelsEventContent>(pdu.content.get()).ok());
        let creators = event("m.room.create")?
            .and_then(|pdu| RoomCreateEvent::new(pdu).creators(&rules.authorization).ok())
            .unwrap_or_default();
        Ok(RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &rules.authorization, creators))
    }

    /// An event as clients may see it: redacted if a valid redaction of it was accepted.
    pub(super) fn event_for_client(&self, db: &Db, short: u64, rules: &RoomVersionRules) -> Result<Pdu> {
        Ok((*self.shared_event_for_client(db, short, rules)?).clone())
    }

    /// [`event_for_client`](Self::event_for_client) without copying an unredacted event out of
    /// the event cache. Events no redaction ever named (see [`super::short_sets::ShortSet`]) are not looked
    /// up in `REDACTIONS` at all.
    pub(super) fn shared_event_for_client(
        &self,
        db: &Db,
        short: u64,
        rules: &RoomVersionRules,
    ) -> Result<std::sync::Arc<Pdu>> {
        let pdu = self.shared_event_by_short(db, short, rules)?;
        if !self.redacted_targets.may_contain(short) {
            return Ok(pdu);
        }
        for ((_, short_redaction), ()) in REDACTIONS.scan_prefix(db, &(short,))? {
            let Some(meta) = EVENT_META.get(db, &short_redaction)? else { continue };
            if !meta.is_served() {
                continue;
            }
            let redaction = self.event_by_short(db, short_redaction, rules)?;
            let valid = redaction.sender == pdu.sender
                || self.power_levels_at(db, meta.state_after, rules)?.user_can_redact_event_of_other(&redaction.sender);
            if !valid {
                continue;
            }
            let mut because = redaction.json().into_owned();
            because.insert("event_id".into(), CanonicalJsonValue::String(redaction.event_id.to_string()));
            let redacted = ruma::canonical_json::redact(
                pdu.json().into_owned(),
                &rules.redaction,
                Some(RedactedBecause::from_json(because)),
            )
            .map_err(|e| crate::Error::internal(format!("cannot redact event: {e}")))?;
            return Pdu::from_stored(
                &serde_json::value::to_raw_value(&redacted).map_err(|e| crate::Error::internal(e.to_string()))?,
                pdu.event_id.clone(),
                rules,
            )
            .map(std::sync::Arc::new)
            .map_err(crate::Error::internal);
        }
        Ok(pdu)
    }
}
