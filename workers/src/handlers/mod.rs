//! One module per job kind. [`registry`] is what a production worker runs.

pub mod attachments;
pub mod conversations;
pub mod dispatches;
pub mod email;
pub mod files;
pub mod inbound_email;
pub mod messages;
pub mod operations;
pub mod receipts;
pub mod ringcentral;
pub mod sends;
pub mod sms;

use std::sync::Arc;

use commcenter_providers::{gmail::Gmail, ringcentral::RingCentral};
use commcenter_shared::{platform::blob::BlobStore, platform::settings::Settings};
use sqlx::postgres::PgPoolOptions;

use crate::{job::Registry, media::thumbnail::ImageLimits};

/// Connections for the outside phase of provider sends (reads before the call, and the
/// never-twice evidence committed beside, not inside, the jobs' transactions); short
/// uses, none held during a call, so a few serve many sends.
const SEND_EVIDENCE_CONNECTIONS: u32 = 10;

pub fn registry(settings: &Settings, blobs: Arc<BlobStore>) -> anyhow::Result<Registry> {
    // Providers not configured still get their handlers, which then fail each job
    // permanently with the reason, rather than leaving jobs unconsumed.
    let ringcentral = settings
        .ringcentral
        .configured()
        .then(|| RingCentral::new(&settings.ringcentral))
        .transpose()?;
    let gmail = settings
        .gmail
        .configured()
        .then(|| Gmail::new(&settings.gmail))
        .transpose()?;
    let texting = dispatches::Texting {
        from_number: settings.ringcentral.sms_from().map(str::to_owned),
        max_attempts: settings.jobs.max_attempts,
        presence_ttl: settings.http.presence_ttl,
    };
    let sends = PgPoolOptions::new()
        .max_connections(SEND_EVIDENCE_CONNECTIONS)
        .connect_lazy(settings.database.url.expose())?;
    Ok(Registry::default()
        .with(messages::DeliverMessageHandler)
        .with(receipts::ApplyReceiptHandler)
        .with(conversations::SetConversationStatusHandler)
        .with(files::ProcessFileHandler {
            blobs: blobs.clone(),
            image_limits: ImageLimits::default(),
            thumbnail_side: settings.storage.thumbnail_max_side,
            max_attempts: settings.jobs.max_attempts,
            image_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            )),
            decode_budget: Arc::new(tokio::sync::Semaphore::new(
                settings.storage.media_memory_budget_mib as usize,
            )),
            decode_budget_mib: settings.storage.media_memory_budget_mib,
        })
        .with(files::DeleteBlobHandler {
            blobs: blobs.clone(),
        })
        .with(sms::SendSmsHandler {
            channel: ringcentral
                .clone()
                .map(|ringcentral| sms::SmsChannel {
                    ringcentral,
                    blobs: blobs.clone(),
                })
                .ok_or(sms::NOT_CONFIGURED),
            sends: sends.clone(),
            under_way_for: sends::under_way_at_most(settings.ringcentral.timeout),
        })
        .with(inbound_email::SyncMailboxHandler {
            gmail: gmail.clone(),
            mailbox: settings.gmail.sender.clone(),
            max_attempts: settings.jobs.max_attempts,
        })
        .with(inbound_email::FileEmailHandler {
            gmail: gmail.clone(),
            mailbox: settings.gmail.sender.clone(),
            blobs: blobs.clone(),
            max_file_size: settings.storage.max_file_size,
            max_attempts: settings.jobs.max_attempts,
        })
        .with(email::SendEmailHandler {
            channel: gmail
                .map(|gmail| email::EmailChannel {
                    gmail,
                    sender: settings.gmail.sender.clone(),
                    blobs,
                })
                .ok_or(email::NOT_CONFIGURED),
            sends,
            under_way_for: sends::under_way_at_most(settings.gmail.timeout),
        })
        .with(dispatches::NotifyDispatchHandler(texting.clone()))
        .with(dispatches::RemindDispatchHandler(texting))
        .with(ringcentral::LogCallHandler)
        .with(ringcentral::RingCentralEventHandler {
            ringcentral: ringcentral.clone(),
        })
        .with(ringcentral::ImportCallLogHandler { ringcentral })
        .with(operations::BulkBatchHandler {
            batch: operations::BATCH,
            max_attempts: settings.jobs.max_attempts,
        }))
}
