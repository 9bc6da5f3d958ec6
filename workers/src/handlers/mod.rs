//! One module per job kind. [`registry`] is what a production worker runs.

pub mod conversations;
pub mod files;
pub mod messages;
pub mod operations;
pub mod receipts;

use std::sync::Arc;

use commcenter_shared::{blob::BlobStore, settings::Settings};

use crate::{media::thumbnail::ImageLimits, runtime::Registry};

pub fn registry(settings: &Settings, blobs: Arc<BlobStore>) -> Registry {
    Registry::default()
        .with(messages::DeliverMessage)
        .with(receipts::ApplyReceipt)
        .with(conversations::SetConversationStatus)
        .with(files::ProcessFile {
            blobs: blobs.clone(),
            image_limits: ImageLimits::default(),
            thumbnail_side: settings.storage.thumbnail_max_side,
            max_attempts: settings.jobs.max_attempts,
            image_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            )),
        })
        .with(files::DeleteBlob { blobs })
        .with(operations::BulkAction {
            batch: operations::BATCH,
            max_attempts: settings.jobs.max_attempts,
        })
}
