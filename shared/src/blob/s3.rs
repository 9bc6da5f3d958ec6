//! The S3 blob store (`USE_S3`), for AWS or any S3-compatible store (`S3_ENDPOINT`).
//!
//! A put gathers the body into a buffer of one part (`S3_PART_SIZE`). If the body
//! ends within it, the object goes up in one PutObject; otherwise each full part is
//! sent with UploadPart as soon as more bytes arrive, and CompleteMultipartUpload makes
//! the object appear whole. Past the limit, on any error, or when the future is
//! dropped, the multipart upload is aborted: S3 never shows a partial object, and no
//! parts are left billed. (A bucket lifecycle rule that aborts incomplete multipart
//! uploads after a day is still wise, for processes killed outright.)
//!
//! The client is configured by hand rather than through `aws-config`: static
//! credentials from the settings, rustls on ring as the only TLS stack, explicit
//! connect and operation timeouts and few SDK retries (the job runtime retries too).

use std::pin::pin;

use aws_sdk_s3::{
    Client,
    config::{
        BehaviorVersion, Credentials, Region, http::HttpResponse, retry::RetryConfig,
        timeout::TimeoutConfig,
    },
    error::{ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
    types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart},
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _, stream};

use super::{BlobError, BlobRead, BlobStream, BoxError, ByteRange, ObjectKey, ResolvedRange};
use crate::settings::S3Settings;

/// S3's smallest part (except the last one).
pub const MIN_PART_SIZE: u64 = 5 << 20;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    part_size: usize,
}

impl S3Store {
    /// Builds the client. No network call: a store that is down shows at the first
    /// operation, as [`BlobError::Unavailable`].
    pub fn new(settings: &S3Settings) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(Credentials::new(
                settings.access_key_id.expose(),
                settings.secret_access_key.expose(),
                None,
                None,
                "commcenter-settings",
            ))
            .force_path_style(settings.force_path_style)
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .operation_timeout(settings.operation_timeout)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts));
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let part_size = settings.part_size.max(MIN_PART_SIZE);
        Self {
            client: Client::from_conf(config.build()),
            bucket: settings.bucket.clone(),
            part_size: usize::try_from(part_size).unwrap_or(usize::MAX),
        }
    }

    /// The SDK client, for what the store does not cover (tests create buckets with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
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
        let mut upload = None;
        let result = match self.send_parts(key, body, max_bytes, &mut upload).await {
            Ok((written, tail)) => match upload.as_mut() {
                None => self.put_object(key, tail.freeze()).await.map(|()| written),
                Some(upload) => match upload.send_part(tail.freeze()).await {
                    Ok(()) => upload.complete().await.map(|()| written),
                    Err(error) => Err(error),
                },
            },
            Err(error) => Err(error),
        };
        if result.is_err()
            && let Some(upload) = upload
        {
            upload.abort().await;
        }
        result
    }

    /// Reads the body into one part's buffer, sending each full part (the multipart
    /// upload begins with the first) once the body goes on past it; returns the bytes
    /// read and the last part, unsent.
    async fn send_parts<S, E>(
        &self,
        key: &ObjectKey,
        body: S,
        max_bytes: u64,
        upload: &mut Option<MultipartUpload>,
    ) -> Result<(u64, BytesMut), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let part_size = self.part_size;
        let mut body = pin!(body);
        // Address space only: pages are touched as bytes arrive.
        let mut buffer = BytesMut::with_capacity(
            part_size.min(usize::try_from(max_bytes).unwrap_or(usize::MAX)),
        );
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| BlobError::Body(e.into()))?;
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(BlobError::TooLarge { limit: max_bytes });
            }
            while !chunk.is_empty() {
                if buffer.len() == part_size {
                    let part = buffer.split().freeze();
                    let upload = match upload {
                        Some(upload) => upload,
                        None => upload.insert(self.create_multipart(key).await?),
                    };
                    upload.send_part(part).await?;
                    // The part is gone, so this takes its allocation back.
                    buffer.reserve(part_size);
                }
                let take = chunk.len().min(part_size - buffer.len());
                buffer.extend_from_slice(&chunk.split_to(take));
            }
        }
        Ok((written, buffer))
    }

    async fn put_object(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), BlobError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_length(bytes.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn create_multipart(&self, key: &ObjectKey) -> Result<MultipartUpload, BlobError> {
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(sdk_error)?;
        let upload_id = output.upload_id().ok_or_else(|| {
            BlobError::other("CreateMultipartUpload answered without an upload id")
        })?;
        Ok(MultipartUpload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.as_str().to_owned(),
            upload_id: upload_id.to_owned(),
            parts: Vec::new(),
            finished: false,
        })
    }

    pub async fn get(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<BlobRead, BlobError> {
        // A range no object can satisfy (`bytes=-0`): S3s differ on it, so answer here.
        if range.is_some_and(|r| r.resolve(u64::MAX).is_none()) {
            return Err(self.unsatisfiable(key).await);
        }
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str());
        if let Some(range) = range {
            request = request.range(range.to_string());
        }
        let output = match request.send().await {
            Ok(output) => output,
            Err(error) if status(&error) == Some(416) => return Err(self.unsatisfiable(key).await),
            Err(error) => return Err(sdk_error(error)),
        };
        let length = output
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| BlobError::other("GetObject answered without a Content-Length"))?;
        let content_range = output.content_range().map(str::to_owned);
        let body = byte_stream(output.body);
        let Some(range) = range else {
            return Ok(BlobRead {
                stream: body,
                total_size: length,
                content_length: length,
                range: None,
            });
        };
        match content_range {
            Some(content_range) => {
                let (resolved, total_size) = ResolvedRange::parse_content_range(&content_range)
                    .filter(|(resolved, _)| resolved.len() == length)
                    .ok_or_else(|| {
                        BlobError::other(format!(
                            "GetObject answered Content-Range {content_range:?} for {length} bytes"
                        ))
                    })?;
                Ok(BlobRead {
                    stream: body,
                    total_size,
                    content_length: length,
                    range: Some(resolved),
                })
            }
            // The store ignored the range and sent the whole object (some do for an
            // empty one): cut the range out here.
            None => {
                let resolved = range
                    .resolve(length)
                    .ok_or(BlobError::RangeNotSatisfiable { size: length })?;
                Ok(BlobRead {
                    stream: slice(body, resolved.start, resolved.len()),
                    total_size: length,
                    content_length: resolved.len(),
                    range: Some(resolved),
                })
            }
        }
    }

    /// The error for a range that selects nothing: it carries the object's size.
    async fn unsatisfiable(&self, key: &ObjectKey) -> BlobError {
        match self.head(key).await {
            Ok(Some(size)) => BlobError::RangeNotSatisfiable { size },
            Ok(None) => BlobError::NotFound,
            Err(error) => error,
        }
    }

    pub async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, BlobError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(output) => Ok(Some(
                output
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| {
                        BlobError::other("HeadObject answered without a Content-Length")
                    })?,
            )),
            Err(error) => match sdk_error(error) {
                BlobError::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }

    pub async fn delete(&self, key: &ObjectKey) -> Result<(), BlobError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => match sdk_error(error) {
                BlobError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }
}

/// A multipart upload under way. Dropped unfinished (the put's future was dropped),
/// it aborts itself in the background.
struct MultipartUpload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    finished: bool,
}

impl MultipartUpload {
    async fn send_part(&mut self, bytes: Bytes) -> Result<(), BlobError> {
        let number =
            i32::try_from(self.parts.len() + 1).map_err(|_| BlobError::other("too many parts"))?;
        let output = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .content_length(bytes.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(sdk_error)?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(output.e_tag().map(str::to_owned))
                .set_checksum_crc32(output.checksum_crc32().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), BlobError> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_error)?;
        self.finished = true;
        Ok(())
    }

    async fn abort(mut self) {
        self.finished = true;
        abort(&self.client, &self.bucket, &self.key, &self.upload_id).await;
    }
}

impl Drop for MultipartUpload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, upload_id = %self.upload_id, "multipart upload left incomplete: no runtime to abort it");
            return;
        };
        let (client, bucket, key, upload_id) = (
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        runtime.spawn(async move { abort(&client, &bucket, &key, &upload_id).await });
    }
}

async fn abort(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    // Aborting twice, or an upload that was completed after all, is harmless; a
    // failure leaves parts for the bucket's lifecycle rule, so it is only logged.
    if let Err(error) = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        tracing::warn!(
            key,
            upload_id,
            error = format!("{:#}", anyhow::Error::from(sdk_error(error))),
            "aborting a multipart upload failed"
        );
    }
}

/// The body of a GetObject as a stream; an error mid-way (connection reset, stall)
/// is worth retrying.
fn byte_stream(body: ByteStream) -> BlobStream {
    Box::pin(stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match body.try_next().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
            Ok(None) => None,
            Err(error) => Some((Err(BlobError::Unavailable(error.into())), None)),
        }
    }))
}

/// `take` bytes of `body` after the first `skip`.
fn slice(body: BlobStream, skip: u64, take: u64) -> BlobStream {
    Box::pin(stream::unfold(
        (body, skip, take),
        |(mut body, mut skip, remaining)| async move {
            if remaining == 0 {
                return None;
            }
            loop {
                let mut chunk = match body.next().await? {
                    Ok(chunk) => chunk,
                    Err(error) => return Some((Err(error), (body, 0, 0))),
                };
                let len = chunk.len() as u64;
                if skip >= len {
                    skip -= len;
                    continue;
                }
                chunk.advance(skip as usize);
                chunk.truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
                let left = remaining - chunk.len() as u64;
                return Some((Ok(chunk), (body, 0, left)));
            }
        },
    ))
}

fn status<E>(error: &SdkError<E, HttpResponse>) -> Option<u16> {
    error
        .raw_response()
        .map(|response| response.status().as_u16())
}

/// Sorts an SDK error into the classes callers act on. Transient: no connection, a
/// timeout, a response cut short, 5xx, 429 and S3's throttling codes. Not found: 404,
/// unless the bucket itself is missing (a misconfiguration, not a missing object).
fn sdk_error<E>(error: SdkError<E, HttpResponse>) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ServiceError(_) => {
            let code = error.code().unwrap_or_default();
            match status(&error) {
                Some(404) if !matches!(code, "NoSuchBucket" | "NoSuchUpload") => {
                    return BlobError::NotFound;
                }
                Some(429 | 500..=599) => true,
                _ => matches!(
                    code,
                    "SlowDown"
                        | "RequestTimeout"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestTimeTooSkewed"
                ),
            }
        }
        _ => false,
    };
    let source: BoxError = Box::new(error);
    if transient {
        BlobError::Unavailable(source)
    } else {
        BlobError::Other(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> BlobStream {
        Box::pin(stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        ))
    }

    async fn collect(stream: BlobStream) -> Vec<u8> {
        stream
            .map(|c| c.unwrap().to_vec())
            .collect::<Vec<_>>()
            .await
            .concat()
    }

    fn service(status: u16, code: Option<&str>) -> BlobError {
        use aws_sdk_s3::{
            error::ErrorMetadata, operation::get_object::GetObjectError, primitives::SdkBody,
        };
        let mut meta = ErrorMetadata::builder();
        if let Some(code) = code {
            meta = meta.code(code);
        }
        let response = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        sdk_error(SdkError::service_error(
            GetObjectError::generic(meta.build()),
            response,
        ))
    }

    #[test]
    fn classifies_service_errors_by_status_and_code() {
        let class = |e: BlobError| match e {
            BlobError::NotFound => "not found",
            BlobError::Unavailable(_) => "transient",
            BlobError::Other(_) => "other",
            _ => "unexpected",
        };
        for (status, code, expected) in [
            (404, Some("NoSuchKey"), "not found"),
            (404, None, "not found"),
            (404, Some("NoSuchBucket"), "other"),
            (404, Some("NoSuchUpload"), "other"),
            (403, Some("AccessDenied"), "other"),
            (400, Some("InvalidArgument"), "other"),
            (400, Some("RequestTimeout"), "transient"),
            (403, Some("RequestTimeTooSkewed"), "transient"),
            (429, None, "transient"),
            (500, Some("InternalError"), "transient"),
            (503, Some("SlowDown"), "transient"),
            (503, None, "transient"),
        ] {
            assert_eq!(class(service(status, code)), expected, "{status} {code:?}");
        }
    }

    #[test]
    fn classifies_transport_errors() {
        use aws_sdk_s3::error::ConnectorError;
        type E = SdkError<aws_sdk_s3::operation::get_object::GetObjectError, HttpResponse>;
        let refused = E::dispatch_failure(ConnectorError::io("connection refused".into()));
        assert!(sdk_error(refused).is_transient());
        let timeout = E::dispatch_failure(ConnectorError::timeout("connect timeout".into()));
        assert!(sdk_error(timeout).is_transient());
        assert!(sdk_error(E::timeout_error("operation timeout")).is_transient());
        let user = E::dispatch_failure(ConnectorError::user("bad URI".into()));
        assert!(matches!(sdk_error(user), BlobError::Other(_)));
        assert!(matches!(
            sdk_error(E::construction_failure("no region")),
            BlobError::Other(_)
        ));
    }

    #[tokio::test]
    async fn slices_across_chunks() {
        let body = || chunks(&[b"0123", b"45", b"6789"]);
        assert_eq!(collect(slice(body(), 0, 10)).await, b"0123456789");
        assert_eq!(collect(slice(body(), 3, 4)).await, b"3456");
        assert_eq!(collect(slice(body(), 4, 2)).await, b"45");
        assert_eq!(collect(slice(body(), 9, 5)).await, b"9");
        assert_eq!(collect(slice(body(), 0, 0)).await, b"");
    }
}
