//! The disk blob store: one file per object under `UPLOAD_DIR`, the key as its
//! relative path.
//!
//! A put writes a temporary file beside the target (`.upload-<uuid>.tmp`: keys never
//! start a segment with `.`, so the two never meet), fsyncs it, renames it over the
//! target and fsyncs the directory: a reader sees the old object or the whole new one,
//! never part of one, and a crash leaves at worst a temporary file. Files are created
//! `rw-r-----` and directories `rwxr-x---`: nothing stored is ever executable.

use std::{
    io::{self, SeekFrom},
    path::{Path, PathBuf},
    pin::pin,
    sync::Arc,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::{
    fs,
    io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _, BufWriter},
};
use tokio_util::io::ReaderStream;

use super::{BlobError, BlobRead, BoxError, ByteRange, ObjectKey};

/// Bytes gathered before each write to the temporary file (and read per chunk out).
const IO_BUFFER: usize = 256 * 1024;
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;

#[derive(Debug, Clone)]
pub struct DiskStore {
    root: Arc<Path>,
}

impl DiskStore {
    /// A store rooted at `root`, created (with its parents) if missing.
    pub fn new(root: impl AsRef<Path>) -> anyhow::Result<Self> {
        let root = root.as_ref();
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(root)
            .map_err(|e| anyhow::anyhow!("creating UPLOAD_DIR {}: {e}", root.display()))?;
        Ok(Self { root: root.into() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`. Safe by construction: a key has no `..`, no leading `/`.
    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

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
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .await
            .map_err(write_error)?;

        let temp = TempFile(Some(
            dir.join(format!(".upload-{}.tmp", uuid::Uuid::new_v4().simple())),
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(temp.path())
            .await
            .map_err(write_error)?;
        let mut out = BufWriter::with_capacity(IO_BUFFER, file);
        let mut written = 0u64;
        let mut body = pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Body(e.into()))?;
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(BlobError::TooLarge { limit: max_bytes });
            }
            out.write_all(&chunk).await.map_err(write_error)?;
        }
        out.flush().await.map_err(write_error)?;
        let file = out.into_inner();
        file.sync_all().await.map_err(write_error)?;
        drop(file);

        fs::rename(temp.path(), &path).await.map_err(write_error)?;
        temp.disarm();
        // The rename is durable only once the directory is synced; if that fails the
        // caller hears of an error, so the object must not stay either.
        if let Err(error) = sync_dir(&dir).await {
            let _ = fs::remove_file(&path).await;
            return Err(write_error(error));
        }
        Ok(written)
    }

    pub async fn get(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<BlobRead, BlobError> {
        let mut file = fs::File::open(self.path(key)).await.map_err(io_error)?;
        let meta = file.metadata().await.map_err(io_error)?;
        if !meta.is_file() {
            return Err(BlobError::NotFound);
        }
        let total_size = meta.len();
        let range = match range {
            None => None,
            Some(range) => Some(
                range
                    .resolve(total_size)
                    .ok_or(BlobError::RangeNotSatisfiable { size: total_size })?,
            ),
        };
        if let Some(range) = range {
            file.seek(SeekFrom::Start(range.start))
                .await
                .map_err(io_error)?;
        }
        let content_length = range.map_or(total_size, |r| r.len());
        let stream = ReaderStream::with_capacity(file.take(content_length), IO_BUFFER)
            .map(|chunk| chunk.map_err(io_error));
        Ok(BlobRead {
            stream: Box::pin(stream),
            total_size,
            content_length,
            range,
        })
    }

    pub async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, BlobError> {
        match fs::metadata(self.path(key)).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(error) => match io_error(error) {
                BlobError::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }

    pub async fn delete(&self, key: &ObjectKey) -> Result<(), BlobError> {
        match fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(error) => match io_error(error) {
                BlobError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }
}

/// Classifies an I/O error: a missing file (or a file where a directory should be)
/// is no object; a full disk or a timeout may pass; the rest is not expected to.
fn io_error(error: io::Error) -> BlobError {
    use io::ErrorKind::*;
    match error.kind() {
        NotFound | NotADirectory => BlobError::NotFound,
        StorageFull | QuotaExceeded | TimedOut | Interrupted | WouldBlock | ResourceBusy => {
            BlobError::Unavailable(error.into())
        }
        _ => BlobError::Other(error.into()),
    }
}

/// On the way in a missing directory is no "not found" of the object: the key names
/// a file where a directory should be, or the store's root went away.
fn write_error(error: io::Error) -> BlobError {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => BlobError::Other(error.into()),
        _ => io_error(error),
    }
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

/// A temporary file removed when dropped, unless disarmed: on an error, on the limit,
/// and when the put's future is dropped mid-way (the client went away).
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // A blocking unlink on an async thread: one short system call, and Drop
            // cannot await. The open descriptor, if any, is closed right after.
            let _ = std::fs::remove_file(path);
        }
    }
}
