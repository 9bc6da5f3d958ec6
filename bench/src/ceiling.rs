//! (d) The raw broker ceiling: what RabbitMQ itself sustains for the pattern every job
//! follows (persistent publish with a confirm, consume, ack), on a quorum queue like the
//! work queues, with nothing else in the way.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde_json::json;

use commcenter_tests::broker_url;

use crate::{
    Options,
    probe::CpuSnapshot,
    report::{Report, Row, Target, number},
};

/// Publisher confirms kept outstanding: enough to keep the broker busy, bounded so a
/// slow broker pushes back on the publisher.
pub const CONFIRM_WINDOW: usize = 2048;

/// Publishes with a bounded window of outstanding confirms; every message must be acked
/// and routed.
pub struct Confirms {
    outstanding: VecDeque<PublisherConfirm>,
}

impl Confirms {
    pub fn new() -> Self {
        Self {
            outstanding: VecDeque::with_capacity(CONFIRM_WINDOW),
        }
    }

    pub async fn push(&mut self, confirm: PublisherConfirm) -> anyhow::Result<()> {
        self.outstanding.push_back(confirm);
        if self.outstanding.len() >= CONFIRM_WINDOW {
            self.settle_one().await?;
        }
        Ok(())
    }

    pub async fn finish(&mut self) -> anyhow::Result<()> {
        while !self.outstanding.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }

    async fn settle_one(&mut self) -> anyhow::Result<()> {
        if let Some(confirm) = self.outstanding.pop_front() {
            let confirmation = confirm.await?;
            anyhow::ensure!(confirmation.is_ack(), "the broker refused a message");
            anyhow::ensure!(
                confirmation.take_message().is_none(),
                "a message was unroutable"
            );
        }
        Ok(())
    }
}

pub async fn run(options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let n = options.jobs();
    eprintln!("(d) broker ceiling: {n} x 1 KiB persistent messages, quorum queue, confirms + acks");
    // Separate connections, as the relay and the workers have.
    let publisher = connect("bench-ceiling-publisher").await?;
    let consumer = connect("bench-ceiling-consumer").await?;
    let queue = format!("bench-ceiling-{}", uuid::Uuid::new_v4().simple());
    let result = measure(options, &publisher, &consumer, &queue, n).await;

    // The queue is ours alone: delete it whatever happened.
    if let Ok(channel) = publisher.create_channel().await {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .ok();
    }
    publisher.close(200, "bye".into()).await.ok();
    consumer.close(200, "bye".into()).await.ok();
    let (elapsed, publish_elapsed, cpu) = result?;

    let rate = n as f64 / elapsed.as_secs_f64();
    let publish_rate = n as f64 / publish_elapsed.as_secs_f64();
    report.set_baseline("d.msgs_per_s", rate);
    report.row(Row {
        scenario: "(d) broker ceiling",
        measure: "publish+confirm -> consume+ack, 1 KiB".into(),
        value: rate,
        unit: "msgs/s",
        target: Target::None,
        beside: format!("publishing alone ran at {} msgs/s", number(publish_rate)),
    });
    report.note(format!("(d) {}", cpu.describe()));
    report.detail(
        "ceiling",
        json!({
            "messages": n, "elapsed_s": elapsed.as_secs_f64(), "msgs_per_s": rate,
            "publish_elapsed_s": publish_elapsed.as_secs_f64(), "publish_msgs_per_s": publish_rate,
            "prefetch": options.prefetch, "cpu": cpu.to_json(),
        }),
    );
    Ok(())
}

async fn connect(name: &str) -> anyhow::Result<Connection> {
    Connection::connect(
        &broker_url(),
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
    .context("cannot connect to RabbitMQ")
}

/// Returns (publish start to last ack, publish start to last confirm, CPU use).
async fn measure(
    options: &Options,
    publisher: &Connection,
    consumer: &Connection,
    queue: &str,
    n: u64,
) -> anyhow::Result<(Duration, Duration, crate::probe::CpuUsage)> {
    let setup = publisher.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    setup
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .context("declaring the ceiling queue")?;

    let consuming = consumer.create_channel().await?;
    consuming
        .basic_qos(options.prefetch, BasicQosOptions::default())
        .await?;
    let mut deliveries = consuming
        .basic_consume(
            queue.into(),
            "bench-ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    // Acks one by one, as the workers do.
    let consume = tokio::spawn(async move {
        while let Some(delivery) = deliveries.next().await {
            let delivery = delivery?;
            delivery.ack(BasicAckOptions::default()).await?;
            if counter.fetch_add(1, Ordering::Relaxed) + 1 >= n {
                return anyhow::Ok(Instant::now());
            }
        }
        anyhow::bail!("the consumer ended early")
    });

    let channel: Channel = publisher.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = vec![b'x'; 1024];
    let cpu = CpuSnapshot::take();
    let start = Instant::now();
    let mut confirms = Confirms::new();
    for _ in 0..n {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        confirms.push(confirm).await?;
    }
    confirms.finish().await?;
    let published = start.elapsed();
    let done = tokio::time::timeout(Duration::from_secs(110), consume)
        .await
        .with_context(|| {
            format!(
                "consumed only {} of {n} in time",
                received.load(Ordering::Relaxed)
            )
        })???;
    let usage = cpu.usage_since();
    Ok((done.duration_since(start), published, usage))
}
