//! The user-activity event of the workbook's platform: somebody clicked or bought something.
//!
//! One definition serves every lesson so that what lesson 01 produces, lesson 02 can read and lesson 07 can
//! aggregate. Money is kept in integer cents: totals must add up exactly, and Redis can increment integers
//! atomically (`INCRBY`) where floats would drift.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ANCHOR: user_event
/// What happened, to whom and when. Serialised as JSON on the wire:
/// `{"event_id":"…","user_id":"user-3","event_type":"purchase","amount_cents":1999,"timestamp":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    /// Unique per event, chosen by the producer: the key to idempotent processing (lesson 07).
    pub event_id: Uuid,
    /// Whose action it was; also the record key, so one user's events stay in order (lesson 03).
    pub user_id: String,
    pub event_type: EventType,
    /// Purchase amount in cents. Clicks carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<u64>,
    /// When the user acted (event time), not when Kafka stored it (log-append time).
    pub timestamp: DateTime<Utc>,
}

/// The kinds of user action the platform records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Click,
    Purchase,
}
// ANCHOR_END: user_event

impl UserEvent {
    /// A click by `user_id` now, with a fresh id.
    pub fn click(user_id: impl Into<String>) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            user_id: user_id.into(),
            event_type: EventType::Click,
            amount_cents: None,
            timestamp: Utc::now(),
        }
    }

    /// A purchase of `amount_cents` by `user_id` now, with a fresh id.
    pub fn purchase(user_id: impl Into<String>, amount_cents: u64) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            user_id: user_id.into(),
            event_type: EventType::Purchase,
            amount_cents: Some(amount_cents),
            timestamp: Utc::now(),
        }
    }

    /// The JSON the workbook puts on the wire.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a UserEvent always serialises")
    }
}

/// A repeatable stream of events for stories and tests: the same `seed` gives the same users, types, amounts,
/// ids and timestamps, so snapshots stay stable without redacting everything.
///
/// Users are `user-1` … `user-{users}`; roughly one event in four is a purchase of 1.00–99.99.
pub fn sample_events(seed: u64, count: usize, users: u32) -> Vec<UserEvent> {
    assert!(users > 0, "sample_events needs at least one user");
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    // SplitMix64: tiny, well distributed, and enough for sample data (no `rand` dependency needed).
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
    (0..count)
        .map(|i| {
            let user = next() % u64::from(users) + 1;
            let is_purchase = next() % 4 == 0;
            let id_bits = (u128::from(next()) << 64) | u128::from(next());
            UserEvent {
                event_id: uuid::Builder::from_random_bytes(id_bits.to_be_bytes()).into_uuid(),
                user_id: format!("user-{user}"),
                event_type: if is_purchase { EventType::Purchase } else { EventType::Click },
                amount_cents: is_purchase.then(|| next() % 9_900 + 100),
                timestamp: start + chrono::Duration::seconds(i as i64 * 7),
            }
        })
        .collect()
}

/// Events for a live run: varied like [`sample_events`] but with fresh ids and the current time, so every run
/// of a story adds new, distinct events to the log.
pub fn live_events(count: usize, users: u32) -> Vec<UserEvent> {
    let seed = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let mut events = sample_events(seed, count, users);
    for event in &mut events {
        event.event_id = Uuid::new_v4();
        event.timestamp = Utc::now();
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_field() {
        let event = UserEvent::purchase("user-7", 1999);
        let back: UserEvent = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(back, event);
        assert!(event.to_json().contains(r#""event_type":"purchase""#));
    }

    #[test]
    fn clicks_carry_no_amount_on_the_wire() {
        assert!(!UserEvent::click("user-1").to_json().contains("amount_cents"));
    }

    #[test]
    fn samples_are_repeatable_and_varied() {
        let a = sample_events(7, 200, 5);
        assert_eq!(a, sample_events(7, 200, 5));
        assert_ne!(a, sample_events(8, 200, 5));
        assert!(a.iter().any(|e| e.event_type == EventType::Purchase));
        assert!(a.iter().any(|e| e.event_type == EventType::Click));
        let users: std::collections::BTreeSet<_> = a.iter().map(|e| e.user_id.as_str()).collect();
        assert_eq!(users.len(), 5);
        let ids: std::collections::BTreeSet<_> = a.iter().map(|e| e.event_id).collect();
        assert_eq!(ids.len(), 200, "event ids are unique");
    }
}
