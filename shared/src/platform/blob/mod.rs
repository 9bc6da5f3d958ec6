//! The blob store: where uploaded files and their thumbnails live, on the local disk
//! (`UPLOAD_DIR`) or in S3 (`USE_S3`). The api streams uploads in with
//! [`BlobStore::put`] and downloads out with [`BlobStore::get`]; workers read them
//! back to hash and thumbnail them.
//!
//! - [`key`]: [`ObjectKey`], the only names that reach a path or an S3 key.
//! - [`range`]: [`ByteRange`], what HTTP `Range` asks for, resolved against a size.
//! - [`disk`]: [`DiskStore`], temporary file, fsync, rename.
//! - [`s3`]: [`S3Store`], PutObject for small objects, multipart upload for large ones.
//!
//! Bodies stream both ways: a put holds at most a small buffer (disk) or one part
//! (S3), whatever the object's size, and enforces its size limit as the bytes arrive.
//! A put that fails for any reason, the limit included, leaves no object behind.
//!
//! One enum rather than `Arc<dyn BlobStore>`: there are exactly two backends, both
//! known here; an enum keeps `put` generic over the body stream (a trait object would
//! box every body and every future through async-trait), dispatches statically, and
//! needs no extra dependency. A third backend is one more variant and match arm.

pub mod disk;
pub mod key;
pub mod range;
pub mod s3;

use std::{fmt, pin::Pin};

use bytes::Bytes;
use futures_util::Stream;

pub use self::{
    disk::DiskStore,
    key::{InvalidKey, ObjectKey},
    range::{ByteRange, ResolvedRange},
    s3::S3Store,
};
use crate::platform::settings::StorageSettings;

/// Any error, boxed: the source of [`BlobError`]'s opaque variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The bytes of a stored object, as they stream out.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send + 'static>>;

/// How a blob operation failed, in the classes its callers act on: the api maps them
/// to statuses (404, 413, 416, 400, 503, 500), the job runtime retries
/// [`BlobError::is_transient`] ones and dead-letters the rest. The cause is in
/// [`std::error::Error::source`]; log with `{:#}` (anyhow) to see the chain.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object under that key.
    #[error("no such object")]
    NotFound,
    /// The body went past the limit given to `put`; nothing was stored.
    #[error("object larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The range asked of `get` selects no byte of the object (HTTP 416).
    #[error("range not satisfiable for an object of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// The body given to `put` failed (say, the client went away); nothing was stored.
    #[error("the body to store failed")]
    Body(#[source] BoxError),
    /// Worth retrying later: connection refused or reset, a timeout, a 5xx, throttling,
    /// a full disk.
    #[error("blob store unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: misconfiguration (no bucket, access denied), an I/O error.
    #[error("blob store failed")]
    Other(#[source] BoxError),
}

impl BlobError {
    /// True for [`BlobError::Unavailable`]: retry later, it may well succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    pub(crate) fn other(message: impl Into<String>) -> Self {
        Self::Other(message.into().into())
    }
}

/// An object being read: its bytes as a stream, and the sizes an HTTP answer needs.
pub struct BlobRead {
    /// The bytes of the range asked for (or of the whole object).
    pub stream: BlobStream,
    /// The whole object's size, whatever range was asked (`Content-Range`'s total).
    pub total_size: u64,
    /// The bytes `stream` yields (`Content-Length`).
    pub content_length: u64,
    /// The range served, when one was asked for (for `Content-Range` in a 206).
    pub range: Option<ResolvedRange>,
}

impl fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobRead")
            .field("total_size", &self.total_size)
            .field("content_length", &self.content_length)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// The blob store the settings chose. Cheap to clone (the S3 client and the disk root
/// are shared).
#[derive(Debug, Clone)]
pub enum BlobStore {
    Disk(DiskStore),
    S3(S3Store),
}

impl BlobStore {
    /// The store `USE_S3` chooses: S3 with the `S3_*` settings, else the disk under
    /// `UPLOAD_DIR` (created if missing). Makes no network call: a store that is down
    /// shows at the first operation, as [`BlobError::Unavailable`].
    pub fn from_settings(settings: &StorageSettings) -> anyhow::Result<Self> {
        Ok(match &settings.s3 {
            Some(s3) => Self::S3(S3Store::new(s3)?),
            None => Self::Disk(DiskStore::new(&settings.upload_dir)?),
        })
    }

    /// Stores `body` under `key`, replacing any object there, and returns the bytes
    /// written. Streams: holds at most a small buffer (disk) or one part (S3). Past
    /// `max_bytes` it stops with [`BlobError::TooLarge`] (exactly `max_bytes` is
    /// accepted). On any error, and when the future is dropped, no object is left
    /// under `key` (an S3 multipart upload is aborted).
    pub async fn put<S, E>(
        &self,
        key: &ObjectKey,
        body: S,
        max_bytes: u64,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        match self {
            Self::Disk(store) => store.put(key, body, max_bytes).await,
            Self::S3(store) => store.put(key, body, max_bytes).await,
        }
    }

    /// Opens the object under `key`, the whole of it or `range`, as a stream.
    /// [`BlobError::NotFound`] if there is none, [`BlobError::RangeNotSatisfiable`]
    /// if the range selects no byte of it.
    pub async fn get(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<BlobRead, BlobError> {
        match self {
            Self::Disk(store) => store.get(key, range).await,
            Self::S3(store) => store.get(key, range).await,
        }
    }

    /// The size of the object under `key`, or `None` if there is none.
    pub async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, BlobError> {
        match self {
            Self::Disk(store) => store.head(key).await,
            Self::S3(store) => store.head(key).await,
        }
    }

    /// Removes the object under `key`; removing one that is not there succeeds.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), BlobError> {
        match self {
            Self::Disk(store) => store.delete(key).await,
            Self::S3(store) => store.delete(key).await,
        }
    }
}
