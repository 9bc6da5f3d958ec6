//! `file.process`: an upload, streamed to the store by the api, is hashed (SHA-256, as
//! a stream), sniffed again for its final type, deduplicated (the same bytes are
//! stored once: a second copy is deleted and the record points at the first) and, for
//! images, thumbnailed. Then the file is `ready` and the uploader hears of it; a file
//! that cannot be processed is `failed` with the reason.
//!
//! `blob.delete`: removes an object nothing refers to any more.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use sqlx::PgConnection;
use tokio::sync::Semaphore;

use commcenter_shared::{
    domain::FileStatus,
    domain::filetype::{self, Category, SNIFF_BYTES},
    domain::store::{self, Blob, FileRecord},
    ledger::events::{self, Event, EventBody},
    ledger::jobs::{self, NewJob, payloads},
    platform::blob::{BlobError, BlobStore, ObjectKey},
};

use crate::{
    job::{Handler, JobContext, JobError},
    media::{
        digest::Sha256Hasher,
        thumbnail::{self, ImageLimits},
    },
};

pub struct ProcessFileHandler {
    pub blobs: Arc<BlobStore>,
    pub image_limits: ImageLimits,
    /// Longest side of a thumbnail (`THUMBNAIL_MAX_SIDE`).
    pub thumbnail_side: u32,
    /// Attempts of the jobs this one enqueues (`JOB_MAX_ATTEMPTS`).
    pub max_attempts: i32,
    /// Images held and decoded at once. Each may hold its whole upload and a decoder's
    /// allocation (`ImageLimits::max_alloc`), so this, not the job concurrency, bounds
    /// the memory images take. One per core: decoding is CPU-bound anyway.
    pub image_slots: Arc<Semaphore>,
    /// The memory all decodes in flight may take together, one permit per MiB
    /// (`MEDIA_MEMORY_BUDGET`): each decode holds what its header says it will need.
    pub decode_budget: Arc<Semaphore>,
    /// The budget's size in MiB (its permits when nothing is decoding).
    pub decode_budget_mib: u32,
}

/// What one read of the staged object tells.
struct Contents {
    sha256: String,
    size: u64,
    head: Vec<u8>,
    /// The whole bytes, kept only for images (to thumbnail them).
    image: Option<Vec<u8>>,
}

#[async_trait]
impl Handler<payloads::ProcessFile> for ProcessFileHandler {
    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::ProcessFile,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        let Some(file) = store::lock_file(conn, payload.file_id).await? else {
            return Err(JobError::permanent(format!(
                "file {} does not exist",
                payload.file_id
            )));
        };
        if file.status != FileStatus::Processing {
            return Ok(()); // Done before: a redelivery.
        }
        let staged = file
            .staging_key
            .as_deref()
            .ok_or_else(|| JobError::permanent("the upload left no staged bytes"))
            .and_then(|k| {
                ObjectKey::parse(k)
                    .map_err(|e| JobError::permanent(format!("bad staging key: {e}")))
            })?;
        let keep_image = file.file_category == Category::Images.as_str();
        let _image_slot = if keep_image {
            Some(
                self.image_slots
                    .acquire()
                    .await
                    .map_err(|_| JobError::transient("image slots closed"))?,
            )
        } else {
            None
        };
        let contents = self.read(&staged, keep_image).await?;
        let sniffed = filetype::sniff(&contents.head, &file.original_name)
            .map_err(|refusal| JobError::permanent(refusal.to_string()))?;

        let blob = match store::find_blob(conn, &contents.sha256).await? {
            Some(existing) => existing,
            None => {
                let mut candidate = Blob {
                    sha256: contents.sha256.clone(),
                    storage_key: staged.as_str().to_owned(),
                    size: contents.size as i64,
                    file_type: sniffed.mime.to_owned(),
                    thumbnail_key: None,
                    thumbnail_type: None,
                    width: None,
                    height: None,
                };
                if let Some(bytes) = contents.image {
                    self.make_thumbnail(&mut candidate, bytes, sniffed).await?;
                }
                store::claim_blob(conn, &candidate).await?
            }
        };
        if blob.storage_key != staged.as_str() {
            // The same bytes are stored already: this copy goes.
            let delete = payloads::DeleteBlob {
                storage_key: staged.as_str().to_owned(),
            };
            jobs::enqueue(conn, NewJob::of(&delete), self.max_attempts).await?;
        }
        store::mark_file_ready(conn, file.id, &blob.sha256, blob.size, &blob.file_type).await?;
        let thumbnail_url = blob.thumbnail_key.as_ref().map(|_| thumbnail_url(&file));
        announce(conn, &file, FileStatus::Ready, None, thumbnail_url).await?;
        Ok(())
    }

    async fn on_dead(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::ProcessFile,
        _job: &JobContext,
        reason: &str,
    ) -> anyhow::Result<()> {
        let Some(file) = store::find_file(conn, payload.file_id).await? else {
            return Ok(());
        };
        if store::mark_file_failed(conn, file.id, reason).await? {
            announce(
                conn,
                &file,
                FileStatus::Failed,
                Some(reason.to_owned()),
                None,
            )
            .await?;
        }
        Ok(())
    }
}

impl ProcessFileHandler {
    /// Streams the staged object once: its SHA-256 and size, its head, and (for
    /// images) its bytes.
    async fn read(&self, key: &ObjectKey, keep_image: bool) -> Result<Contents, JobError> {
        let read = self.blobs.get(key, None).await.map_err(store_error)?;
        let mut stream = read.stream;
        let mut hasher = Sha256Hasher::new();
        let mut head = Vec::with_capacity(SNIFF_BYTES);
        let mut image = keep_image.then(|| Vec::with_capacity(read.total_size as usize));
        while let Some(chunk) = stream.next().await {
            let chunk: Bytes = chunk.map_err(store_error)?;
            // Hashing a chunk costs well under a millisecond: no need to leave the runtime.
            hasher.update(&chunk);
            if head.len() < SNIFF_BYTES {
                head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES - head.len())]);
            }
            if let Some(image) = image.as_mut() {
                image.extend_from_slice(&chunk);
            }
        }
        let digested = hasher.finish();
        if digested.size == 0 {
            return Err(JobError::permanent("the file is empty"));
        }
        Ok(Contents {
            sha256: digested.sha256.into_string(),
            size: digested.size,
            head,
            image,
        })
    }

    async fn make_thumbnail(
        &self,
        blob: &mut Blob,
        bytes: Vec<u8>,
        sniffed: filetype::Sniffed,
    ) -> Result<(), JobError> {
        let limits = self.image_limits.clone();
        let side = self.thumbnail_side;
        // What decoding will take, from the header; waits while other decodes hold the
        // budget, and refuses an image that alone would exceed it.
        let cost = thumbnail::decode_cost(&bytes, &sniffed, &limits, side)
            .map_err(|e| JobError::permanent(format!("cannot make a thumbnail: {e}")))?;
        let cost_mib = u32::try_from(cost.div_ceil(1 << 20).max(1)).unwrap_or(u32::MAX);
        let budget_mib = self.decode_budget_mib;
        if cost_mib > budget_mib {
            return Err(JobError::permanent(format!(
                "cannot make a thumbnail: decoding it would take {cost_mib} MiB, over the \
                 {budget_mib} MiB of MEDIA_MEMORY_BUDGET"
            )));
        }
        let _memory = self
            .decode_budget
            .clone()
            .acquire_many_owned(cost_mib)
            .await
            .map_err(|e| JobError::transient(format!("the decode budget is closed: {e}")))?;
        let span = tracing::Span::current();
        // Decoding is CPU work: off the async threads, with the job's span.
        let made = tokio::task::spawn_blocking(move || {
            span.in_scope(|| thumbnail::thumbnail(&bytes, &sniffed, &limits, side))
        })
        .await
        .map_err(|e| JobError::transient(format!("the thumbnail task failed: {e}")))?;
        // A bomb, a truncated or corrupt image fails this file, with the reason.
        let thumb =
            made.map_err(|e| JobError::permanent(format!("cannot make a thumbnail: {e}")))?;
        let key = ObjectKey::parse(&format!("thumbnails/{}.{}", blob.sha256, thumb.extension))
            .map_err(|e| JobError::permanent(e.to_string()))?;
        let body =
            futures_util::stream::once(
                async move { Ok::<_, std::io::Error>(Bytes::from(thumb.bytes)) },
            );
        self.blobs
            .put(&key, body, u64::MAX)
            .await
            .map_err(store_error)?;
        blob.thumbnail_key = Some(key.as_str().to_owned());
        blob.thumbnail_type = Some(thumb.mime.to_owned());
        blob.width = Some(thumb.source_width as i32);
        blob.height = Some(thumb.source_height as i32);
        Ok(())
    }
}

/// A missing object will not reappear; anything else (the store down, throttled,
/// misconfigured) may heal, and an operator can replay what exhausts its attempts.
pub(crate) fn store_error(error: BlobError) -> JobError {
    match error {
        BlobError::NotFound => JobError::permanent("the uploaded bytes are missing from the store"),
        other => JobError::transient(format!("file store: {:#}", anyhow::Error::from(other))),
    }
}

fn thumbnail_url(file: &FileRecord) -> String {
    format!("/api/communications/file/thumbnails/{}", file.stored_name)
}

async fn announce(
    conn: &mut PgConnection,
    file: &FileRecord,
    status: FileStatus,
    reason: Option<String>,
    thumbnail_url: Option<String>,
) -> Result<(), JobError> {
    let event = Event::now(
        file.customer_id.clone(),
        EventBody::FileStatus {
            file_id: file.id,
            filename: file.original_name.clone(),
            status,
            reason,
            thumbnail_url,
        },
    );
    events::record(conn, &event).await?;
    Ok(())
}

/// `blob.delete`: removes a stored object, unless a blob still refers to it.
pub struct DeleteBlobHandler {
    pub blobs: Arc<BlobStore>,
}

#[async_trait]
impl Handler<payloads::DeleteBlob> for DeleteBlobHandler {
    async fn run(
        &self,
        conn: &mut PgConnection,
        payload: &payloads::DeleteBlob,
        _job: &JobContext,
    ) -> Result<(), JobError> {
        let referenced: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE storage_key = $1 OR thumbnail_key = $1)
                 OR EXISTS (SELECT 1 FROM file_attachments WHERE staging_key = $1 AND status = 'processing')",
        )
        .bind(&payload.storage_key)
        .fetch_one(&mut *conn)
        .await?;
        if referenced {
            return Ok(());
        }
        let key = ObjectKey::parse(&payload.storage_key)
            .map_err(|e| JobError::permanent(e.to_string()))?;
        self.blobs.delete(&key).await.map_err(store_error)?;
        Ok(())
    }
}
