//! A communication's attachments as bytes, for a provider that wants them inline (MMS
//! parts, email MIME parts). Called once every attachment is `ready`.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sqlx::PgConnection;
use uuid::Uuid;

use commcenter_providers::mms::Attachment;
use commcenter_shared::{
    domain::communications::Communication,
    platform::blob::{BlobStore, ObjectKey},
};

use super::files::store_error;
use crate::job::JobError;

pub async fn load_attachments(
    conn: &mut PgConnection,
    blobs: &BlobStore,
    communication: &Communication,
) -> Result<Vec<Attachment>, JobError> {
    let ids = communication.attachment_ids();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Uuid, String, String, Option<String>)> = sqlx::query_as(
        "SELECT f.id, f.original_name, f.file_type, b.storage_key
         FROM file_attachments f LEFT JOIN blobs b ON b.sha256 = f.sha256
         WHERE f.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut attachments = Vec::with_capacity(ids.len());
    // In the order the sender gave them.
    for id in ids {
        let Some((_, name, content_type, Some(key))) = rows.iter().find(|r| r.0 == id) else {
            return Err(JobError::permanent(format!(
                "attachment {id} has no stored bytes"
            )));
        };
        let key = ObjectKey::parse(key)
            .map_err(|e| JobError::permanent(format!("attachment {name}: {e}")))?;
        let read = blobs.get(&key, None).await.map_err(store_error)?;
        let mut bytes = BytesMut::with_capacity(read.total_size as usize);
        let mut stream = read.stream;
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(store_error)?);
        }
        attachments.push(Attachment {
            name: name.clone(),
            content_type: content_type.clone(),
            bytes: Bytes::from(bytes),
        });
    }
    Ok(attachments)
}
