//! A communication as the API shows it: our fields, and beside them the original API's
//! under its own names (`content`, `user_id`, `timestamp`, `read`, `read_by`, `to`,
//! `phone`, `integration`, `external_id`; SEED-API.md), so the portal written against
//! the original reads our records unchanged. Every answer that shows a communication
//! (sends, listing, search, status) builds it here.

use serde_json::{Value, json};

use commcenter_shared::{
    domain::communications::Communication,
    domain::{CommunicationStatus, CommunicationType, Direction},
};

pub fn communication_json(c: &Communication) -> Value {
    let mut record = serde_json::to_value(c).unwrap_or_else(|_| json!({}));
    let Value::Object(fields) = &mut record else {
        return record;
    };
    let channel = c.communication_type;
    let outbound = c.direction == Direction::Outbound;
    let deleted = c.deleted_at.is_some();
    // The original's names for what we already have.
    fields.insert("user_id".into(), json!(c.sender_id));
    fields.insert(
        "timestamp".into(),
        json!(c.occurred_at.unwrap_or(c.created_at)),
    );
    fields.insert(
        "read".into(),
        json!(c.read_at.is_some() || c.status == CommunicationStatus::Read),
    );
    fields.insert("read_by".into(), json!(c.read_by));
    fields.insert("integration".into(), json!(channel.integration()));
    fields.insert("external_id".into(), json!(c.provider_message_id));
    // `to` is the recipient of an SMS or email: the other party of what we sent, our
    // own number or mailbox of what came in. A call's other party is its `phone`.
    let (to, phone) = match channel {
        CommunicationType::Sms | CommunicationType::Email => {
            let to = if outbound {
                &c.remote_address
            } else {
                &c.local_address
            };
            (to.clone(), None)
        }
        CommunicationType::Phone => (None, c.remote_address.clone()),
        CommunicationType::InApp => (None, None),
    };
    fields.insert("to".into(), json!(to));
    if channel == CommunicationType::Phone {
        fields.insert("phone".into(), json!(phone));
    }
    fields.insert("deleted".into(), json!(deleted));
    if let (Some(id), Some(channel)) = (c.fallback_id, &c.fallback_channel) {
        fields.insert(
            "fallback".into(),
            json!({ "channel": channel, "communication_id": id }),
        );
    }
    if deleted {
        // A tombstone: that there was a message, by whom and when; nothing of what it said.
        for field in ["message", "subject"] {
            fields.insert(field.into(), Value::Null);
        }
        fields.insert("attachments".into(), json!([]));
        fields.insert("metadata".into(), json!({}));
    }
    let content = fields.get("message").cloned().unwrap_or(Value::Null);
    fields.insert("content".into(), content);
    record
}
