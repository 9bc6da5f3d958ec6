//! What the broker dead-letters on its own, recorded into the ledger so operators have
//! one place to look: a job redelivered past the delivery limit (its worker crashed or
//! hung on it again and again), or rejected, expired or dropped for length. The broker's
//! `x-death` history is kept with the job.

use std::time::{Duration, Instant};

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::{Map, Value, json};

use commcenter_shared::{
    domain::communications::writes,
    ledger::jobs::{self, Envelope, ErrorClass},
    ledger::relay::generation_of,
};

use crate::{job::JobContext, runtime::Runtime};

/// The last stop: a dead letter is held, and recording retried with backoff, until the
/// ledger takes it. A nack would count towards the dead queue's own delivery limit
/// (RabbitMQ 4 sets one by default) and could drop it.
pub(crate) async fn record(runtime: &Runtime, delivery: Delivery) {
    let mut wait = Duration::from_millis(500);
    let started = Instant::now();
    loop {
        match record_in_ledger(runtime, &delivery).await {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await.ok();
                return;
            }
            // Well before the broker's consumer timeout (30 minutes by default) would
            // close the channel: give it back and let another try.
            Err(error) if started.elapsed() > Duration::from_secs(20 * 60) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "could not record a dead letter for 20 minutes; requeueing it"
                );
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                delivery.nack(requeue).await.ok();
                return;
            }
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    retry_in_ms = wait.as_millis() as u64,
                    "could not record a dead letter; retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn record_in_ledger(runtime: &Runtime, delivery: &Delivery) -> anyhow::Result<()> {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let death = death_history(&headers);
    let (class, reason) = describe(&death);
    let mut tx = runtime.pool.begin().await?;
    let envelope = serde_json::from_slice::<Envelope>(&delivery.data).ok();
    let row = match &envelope {
        Some(envelope) => jobs::lock(&mut tx, envelope.job_id).await?,
        None => None,
    };
    match row {
        Some(row) if row.state.is_final() => {
            tracing::info!(job_id = %row.id, state = %row.state, reason, "broker dead-lettered a finished job; nothing to do");
        }
        Some(row) if generation_of(&delivery.properties) < row.generation => {
            tracing::info!(job_id = %row.id, reason, "broker dead-lettered a copy from before a replay; nothing to do");
        }
        Some(row) => {
            jobs::mark_dead(&mut tx, row.id, row.attempts, class, &reason).await?;
            jobs::record_broker_death(&mut tx, row.id, &death).await?;
            if let Some(handler) = runtime.registry.get(&row.kind) {
                let job =
                    JobContext::new(row.id, row.kind.clone(), row.payload.clone(), row.attempts);
                handler.on_dead(&mut tx, &job, &reason).await?;
            } else if let Some(communication_id) = row
                .communication_id
                .filter(|_| jobs::kinds::DELIVERING.contains(&row.kind.as_str()))
            {
                // This worker does not run the kind (WORKER_KINDS split the roles):
                // the communication it served still shows as failed.
                writes::fail(&mut tx, communication_id, &reason).await?;
            }
            tracing::error!(job_id = %row.id, kind = %row.kind, error_class = class.as_str(), reason, "broker dead-lettered a job");
        }
        None => {
            let kind = envelope
                .as_ref()
                .map_or_else(|| first_routing_key(&death), |e| e.kind.clone());
            let id =
                jobs::record_orphan(&mut tx, &kind, &delivery.data, class, &reason, Some(&death))
                    .await?;
            tracing::error!(job_id = %id, kind, reason, "broker dead-lettered a message that is not a known job");
        }
    }
    tx.commit().await?;
    runtime.outbox.notify_one();
    Ok(())
}

/// The `x-death` header as JSON: one entry per queue the message died in, newest first.
fn death_history(headers: &FieldTable) -> Value {
    headers
        .inner()
        .get("x-death")
        .map(amqp_to_json)
        .unwrap_or_else(|| json!([]))
}

/// The error class and a sentence for operators, from the newest `x-death` entry.
fn describe(death: &Value) -> (ErrorClass, String) {
    let newest = death.get(0).cloned().unwrap_or(Value::Null);
    let reason = newest
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let queue = newest
        .get("queue")
        .and_then(Value::as_str)
        .unwrap_or("an unknown queue");
    let count = newest.get("count").and_then(Value::as_i64).unwrap_or(0);
    let class = match reason {
        "delivery_limit" => ErrorClass::DeliveryLimit,
        _ => ErrorClass::Broker,
    };
    let sentence = match reason {
        "delivery_limit" => format!(
            "RabbitMQ dead-lettered it from {queue}: redelivered past the delivery limit (workers crashed or hung on it)"
        ),
        "rejected" => format!("RabbitMQ dead-lettered it from {queue}: a consumer rejected it"),
        "expired" => format!("RabbitMQ dead-lettered it from {queue}: it expired"),
        "maxlen" => format!("RabbitMQ dead-lettered it from {queue}: the queue was full"),
        other => format!("RabbitMQ dead-lettered it from {queue} ({other}, {count} times)"),
    };
    (class, sentence)
}

fn first_routing_key(death: &Value) -> String {
    death
        .get(0)
        .and_then(|d| d.get("routing-keys"))
        .and_then(|keys| keys.get(0))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned()
}

fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(amqp_to_json).collect())
        }
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), amqp_to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::ByteArray(bytes) => json!(String::from_utf8_lossy(bytes.as_slice())),
        other => json!(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_limit_is_its_own_class() {
        let death = json!([{"reason": "delivery_limit", "queue": "p.jobs.x", "count": 1}]);
        let (class, sentence) = describe(&death);
        assert_eq!(class, ErrorClass::DeliveryLimit);
        assert!(sentence.contains("p.jobs.x"));
        let (class, _) = describe(&json!([{"reason": "rejected"}]));
        assert_eq!(class, ErrorClass::Broker);
    }
}
