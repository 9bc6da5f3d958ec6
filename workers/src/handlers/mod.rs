//! One module per job kind. [`registry`] is what a production worker runs.

pub mod conversations;
pub mod messages;
pub mod receipts;

use crate::runtime::Registry;

pub fn registry() -> Registry {
    Registry::default()
        .with(messages::DeliverMessage)
        .with(receipts::ApplyReceipt)
        .with(conversations::SetConversationStatus)
}
