//! After a job's commit: its metrics, the ack, a retry published to its delay tier,
//! a delivery deferred while our own bookkeeping fails, and poison recorded dead.

use std::time::Duration;

use chrono::Utc;
use lapin::{
    BasicProperties, Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions},
    types::{AMQPValue, FieldTable},
};

use commcenter_shared::{
    ledger::jobs::{self, Envelope, ErrorClass},
    ledger::relay::{GENERATION_HEADER, generation_of, job_properties_at},
    platform::broker::DELAY_TIER_HEADER,
    platform::settings::tier_label,
};

use crate::metrics::Outcome;

use super::{Ran, Runtime};

impl Runtime {
    /// What follows a job's commit: its metrics, the relay woken, and a retry published
    /// to its delay tier.
    pub(super) async fn after_commit(
        &self,
        ran: Ran<'_>,
        envelope: &Envelope,
        publisher: &Channel,
    ) -> anyhow::Result<()> {
        let Ran::Attempt {
            started_at,
            error_class,
            retry,
            idle,
            ..
        } = ran
        else {
            if let Ran::Nothing(outcome) = ran {
                self.metrics.job_finished(&envelope.kind, outcome);
            }
            return Ok(());
        };
        let outcome = match (error_class, retry, idle) {
            (None, _, true) => Outcome::Idle,
            (None, _, false) => Outcome::Succeeded,
            (Some(_), Some(_), _) => Outcome::Retrying,
            (Some(_), None, _) => Outcome::Dead,
        };
        self.metrics
            .attempt_finished(&envelope.kind, error_class, outcome, started_at);
        self.outbox.notify_one();
        if let Some((tier, generation)) = retry {
            self.publish_retry(publisher, envelope, generation, tier)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn publish_retry(
        &self,
        publisher: &Channel,
        envelope: &Envelope,
        generation: i32,
        tier: Duration,
    ) -> anyhow::Result<()> {
        let body = serde_json::to_vec(envelope)?;
        self.publish_delayed(
            publisher,
            &envelope.kind,
            &body,
            job_properties_at(envelope.job_id, generation),
            tier,
        )
        .await
    }

    /// Publishes `body` to wait in `tier`, after which it returns to `routing_key`'s queue.
    pub(super) async fn publish_delayed(
        &self,
        publisher: &Channel,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        tier: Duration,
    ) -> anyhow::Result<()> {
        // Keeps the headers it has (a deferral's start), adding the tier's.
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            DELAY_TIER_HEADER.into(),
            AMQPValue::LongString(tier_label(tier).as_str().into()),
        );
        let confirmation = publisher
            .basic_publish(
                self.topology.delay_exchange().as_str().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties.with_headers(headers),
            )
            .await?
            .await?;
        anyhow::ensure!(
            confirmation.is_ack(),
            "the broker refused the delayed message"
        );
        anyhow::ensure!(
            confirmation.take_message().is_none(),
            "no delay queue for tier {}",
            tier_label(tier)
        );
        Ok(())
    }

    /// Acks a delivery whose outcome is committed. When our own bookkeeping failed
    /// (the database is unreachable, say), the delivery waits in the shortest delay
    /// tier and comes back, rather than being nacked: a requeue would count towards
    /// the broker's delivery limit, and a short database outage would kill good jobs.
    pub(super) async fn settle(
        &self,
        delivery: Delivery,
        publisher: &Channel,
        outcome: anyhow::Result<()>,
        failure: &str,
    ) {
        let Err(error) = outcome else {
            delivery.ack(BasicAckOptions::default()).await.ok();
            return;
        };
        // Deferred since when: a delivery whose bookkeeping keeps failing (not a passing
        // outage, something about the message itself) must not loop for ever.
        let now_ms = Utc::now().timestamp_millis();
        let since_ms = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(DEFERRED_SINCE_HEADER).cloned())
            .and_then(|v| match v {
                AMQPValue::LongLongInt(ms) => Some(ms),
                _ => None,
            })
            .unwrap_or(now_ms);
        if now_ms - since_ms > self.max_deferral.as_millis() as i64 {
            // Rejected without requeue, the broker dead-letters it to `{p}.dead`, whose
            // consumer records it in the ledger with the broker's reason.
            tracing::error!(
                error = format!("{error:#}"),
                "{failure} for {} minutes; giving it to the dead-letter queue",
                self.max_deferral.as_secs() / 60
            );
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .ok();
            return;
        }
        tracing::error!(
            error = format!("{error:#}"),
            "{failure}; it will come back shortly"
        );
        let tier = self
            .topology
            .tiers
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(1));
        let mut headers = FieldTable::default();
        headers.insert(
            DEFERRED_SINCE_HEADER.into(),
            AMQPValue::LongLongInt(since_ms),
        );
        // The job's generation goes with it, or it would come back looking stale.
        headers.insert(
            GENERATION_HEADER.into(),
            AMQPValue::LongInt(generation_of(&delivery.properties)),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        match self
            .publish_delayed(
                publisher,
                delivery.routing_key.as_str(),
                &delivery.data,
                properties,
                tier,
            )
            .await
        {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await.ok();
            }
            Err(publish_error) => {
                // The broker is in trouble too: hand it back; the channel may be gone anyway.
                tracing::error!(
                    error = format!("{publish_error:#}"),
                    "could not delay it either; requeueing"
                );
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                delivery.nack(requeue).await.ok();
            }
        }
    }

    /// A delivery that is not a job we can run: recorded dead in the ledger with the
    /// reason, then acked, so the worker keeps going and operators see it.
    pub(super) async fn dead_on_arrival(
        &self,
        delivery: Delivery,
        publisher: &Channel,
        class: ErrorClass,
        reason: &str,
    ) {
        tracing::error!(routing_key = %delivery.routing_key, reason, "poison message");
        self.metrics
            .job_finished(delivery.routing_key.as_str(), Outcome::Dead);
        let recorded = async {
            let mut conn = self.pool.acquire().await?;
            jobs::record_orphan(
                &mut conn,
                delivery.routing_key.as_str(),
                &delivery.data,
                class,
                reason,
                None,
            )
            .await?;
            anyhow::Ok(())
        }
        .await;
        self.settle(
            delivery,
            publisher,
            recorded,
            "could not record a poison message",
        )
        .await;
    }
}

/// Header on a delivery deferred because its bookkeeping failed: since when (epoch ms).
const DEFERRED_SINCE_HEADER: &str = "deferred-since";
