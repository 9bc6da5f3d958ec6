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
//! Each request is an S3 URL signed with the static credentials of the settings
//! (SigV4 in the query string, by `rusty-s3`), sent by our reqwest client: rustls on
//! ring, explicit connect and operation timeouts, and up to `S3_MAX_ATTEMPTS` tries of a
//! request that failed in passing (the job runtime retries too). The worker checks each
//! object's SHA-256 when it processes the file.

use std::{pin::pin, sync::Arc, time::Duration};

use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _, TryStreamExt as _, stream};
use reqwest::{RequestBuilder, Response, StatusCode, Url, header};
use rusty_s3::{
    Bucket, Credentials, S3Action, UrlStyle,
    actions::{
        AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, DeleteObject,
        GetObject, HeadObject, PutObject, UploadPart,
    },
};

use super::{BlobError, BlobRead, BlobStream, BoxError, ByteRange, ObjectKey, ResolvedRange};
use crate::platform::settings::S3Settings;

#[derive(Debug)]
struct Signer {
    bucket: Bucket,
    credentials: Credentials,
}

/// S3's smallest part (except the last one).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// How long a signed URL is valid: it is used at once, so this only has to outlast
/// clock skew and a slow send.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
pub struct S3Store {
    http: reqwest::Client,
    /// The bucket and the credentials that sign for it (shared: a store is cloned into
    /// each multipart upload).
    signer: Arc<Signer>,
    part_size: usize,
    operation_timeout: Duration,
    max_attempts: u32,
}

impl S3Store {
    /// Builds the client. No network call: a store that is down shows at the first
    /// operation, as [`BlobError::Unavailable`]. An endpoint that is not an http(s)
    /// URL, or a bucket name it cannot address, is a settings error.
    pub fn new(settings: &S3Settings) -> Result<Self, BlobError> {
        let endpoint = match &settings.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("https://s3.{}.amazonaws.com", settings.region),
        };
        let endpoint = Url::parse(&endpoint)
            .map_err(|e| BlobError::other(format!("S3_ENDPOINT {endpoint:?}: {e}")))?;
        let style = if settings.force_path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            settings.bucket.clone(),
            settings.region.clone(),
        )
        .map_err(|e| BlobError::other(format!("S3_BUCKET {:?}: {e}", settings.bucket)))?;
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            // A download that stalls this long between two reads is given up.
            .read_timeout(settings.operation_timeout)
            .build()
            .map_err(|e| BlobError::Other(e.into()))?;
        let part_size = settings.part_size.max(MIN_PART_SIZE);
        Ok(Self {
            http,
            signer: Arc::new(Signer {
                bucket,
                credentials: Credentials::new(
                    settings.access_key_id.expose(),
                    settings.secret_access_key.expose(),
                ),
            }),
            part_size: usize::try_from(part_size).unwrap_or(usize::MAX),
            operation_timeout: settings.operation_timeout,
            max_attempts: settings.max_attempts.max(1),
        })
    }

    pub fn bucket(&self) -> &str {
        self.signer.bucket.name()
    }

    /// The bucket and credentials, to sign what the store does not cover (tests
    /// create buckets and list uploads with them).
    pub fn signer(&self) -> (&Bucket, &Credentials) {
        (&self.signer.bucket, &self.signer.credentials)
    }

    /// Sends a request built afresh for each try, until it is answered with a status
    /// that is not worth another try, or the tries run out. The operation timeout
    /// covers the wait for the response's headers, not the reading of its body.
    async fn send(
        &self,
        operation: &'static str,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<Response, BlobError> {
        let mut attempt = 1;
        loop {
            let outcome = match tokio::time::timeout(self.operation_timeout, request().send()).await
            {
                Ok(Ok(response)) if response.status().is_success() => return Ok(response),
                Ok(Ok(response)) => Err(failure(operation, response).await),
                Ok(Err(error)) => Err(transport(operation, error)),
                Err(_) => Err(BlobError::Unavailable(
                    format!(
                        "S3 {operation}: no answer within {:?}",
                        self.operation_timeout
                    )
                    .into(),
                )),
            };
            match outcome {
                Err(error) if error.is_transient() && attempt < self.max_attempts => {
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
                Ok(response) => return Ok(response),
            }
        }
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
        let url = PutObject::new(
            &self.signer.bucket,
            Some(&self.signer.credentials),
            key.as_str(),
        )
        .sign(SIGNED_FOR);
        self.send("PutObject", || {
            self.http.put(url.clone()).body(bytes.clone())
        })
        .await?;
        Ok(())
    }

    async fn create_multipart(&self, key: &ObjectKey) -> Result<MultipartUpload, BlobError> {
        let url = CreateMultipartUpload::new(
            &self.signer.bucket,
            Some(&self.signer.credentials),
            key.as_str(),
        )
        .sign(SIGNED_FOR);
        let answer = self
            .send("CreateMultipartUpload", || {
                // An empty body still says so: some stores answer 411 otherwise.
                self.http
                    .post(url.clone())
                    .header(header::CONTENT_LENGTH, 0)
            })
            .await?
            .text()
            .await
            .map_err(|e| transport("CreateMultipartUpload", e))?;
        let created = CreateMultipartUpload::parse_response(&answer).map_err(|e| {
            BlobError::other(format!(
                "CreateMultipartUpload answered what is not an upload: {e}"
            ))
        })?;
        Ok(MultipartUpload {
            store: self.clone(),
            key: key.as_str().to_owned(),
            upload_id: created.upload_id().to_owned(),
            etags: Vec::new(),
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
        let url = GetObject::new(
            &self.signer.bucket,
            Some(&self.signer.credentials),
            key.as_str(),
        )
        .sign(SIGNED_FOR);
        let request = || {
            let request = self.http.get(url.clone());
            match range {
                Some(range) => request.header(header::RANGE, range.to_string()),
                None => request,
            }
        };
        let response = match self.send("GetObject", request).await {
            Ok(response) => response,
            Err(BlobError::RangeNotSatisfiable { .. }) => {
                return Err(self.unsatisfiable(key).await);
            }
            Err(error) => return Err(error),
        };
        let length = content_length("GetObject", &response)?;
        let content_range = response
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = byte_stream(response);
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
        let url = HeadObject::new(
            &self.signer.bucket,
            Some(&self.signer.credentials),
            key.as_str(),
        )
        .sign(SIGNED_FOR);
        match self
            .send("HeadObject", || self.http.head(url.clone()))
            .await
        {
            Ok(response) => Ok(Some(content_length("HeadObject", &response)?)),
            Err(BlobError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn delete(&self, key: &ObjectKey) -> Result<(), BlobError> {
        let url = DeleteObject::new(
            &self.signer.bucket,
            Some(&self.signer.credentials),
            key.as_str(),
        )
        .sign(SIGNED_FOR);
        match self
            .send("DeleteObject", || self.http.delete(url.clone()))
            .await
        {
            Ok(_) | Err(BlobError::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// A multipart upload under way. Dropped unfinished (the put's future was dropped),
/// it aborts itself in the background.
struct MultipartUpload {
    store: S3Store,
    key: String,
    upload_id: String,
    /// The ETag of each part sent, in order (part n is `etags[n - 1]`).
    etags: Vec<String>,
    finished: bool,
}

impl MultipartUpload {
    async fn send_part(&mut self, bytes: Bytes) -> Result<(), BlobError> {
        let number = u16::try_from(self.etags.len() + 1)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| BlobError::other("more than 10,000 parts"))?;
        let store = &self.store;
        let url = UploadPart::new(
            &store.signer.bucket,
            Some(&store.signer.credentials),
            &self.key,
            number,
            &self.upload_id,
        )
        .sign(SIGNED_FOR);
        let response = store
            .send("UploadPart", || {
                store.http.put(url.clone()).body(bytes.clone())
            })
            .await?;
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| BlobError::other("UploadPart answered without an ETag"))?;
        self.etags.push(etag.to_owned());
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), BlobError> {
        let store = &self.store;
        let action = CompleteMultipartUpload::new(
            &store.signer.bucket,
            Some(&store.signer.credentials),
            &self.key,
            &self.upload_id,
            self.etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let response = store
            .send("CompleteMultipartUpload", || {
                store.http.post(url.clone()).body(body.clone())
            })
            .await?;
        // S3 may answer 200 and still fail: the error is then in the body.
        let answer = response
            .text()
            .await
            .map_err(|e| transport("CompleteMultipartUpload", e))?;
        if answer.contains("<Error>") {
            let code = xml_element(&answer, "Code").unwrap_or_default();
            return Err(classify(
                "CompleteMultipartUpload",
                StatusCode::OK,
                code,
                xml_element(&answer, "Message").unwrap_or_default(),
            ));
        }
        self.finished = true;
        Ok(())
    }

    async fn abort(mut self) {
        self.finished = true;
        abort(&self.store, &self.key, &self.upload_id).await;
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
        let (store, key, upload_id) = (
            self.store.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        runtime.spawn(async move { abort(&store, &key, &upload_id).await });
    }
}

async fn abort(store: &S3Store, key: &str, upload_id: &str) {
    // Aborting twice, or an upload that was completed after all, is harmless; a
    // failure leaves parts for the bucket's lifecycle rule, so it is only logged.
    let url = AbortMultipartUpload::new(
        &store.signer.bucket,
        Some(&store.signer.credentials),
        key,
        upload_id,
    )
    .sign(SIGNED_FOR);
    if let Err(error) = store
        .send("AbortMultipartUpload", || store.http.delete(url.clone()))
        .await
    {
        tracing::warn!(
            key,
            upload_id,
            error = format!("{:#}", anyhow::Error::from(error)),
            "aborting a multipart upload failed"
        );
    }
}

fn content_length(operation: &str, response: &Response) -> Result<u64, BlobError> {
    response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| BlobError::other(format!("{operation} answered without a Content-Length")))
}

/// The body of a GetObject as a stream; an error mid-way (connection reset, stall)
/// is worth retrying.
fn byte_stream(response: Response) -> BlobStream {
    Box::pin(
        response
            .bytes_stream()
            .map_err(|error| BlobError::Unavailable(error.into())),
    )
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

/// The error of a request that got no answer. Transient: no connection, a timeout, a
/// response cut short; not: a request that could not be built.
fn transport(operation: &str, error: reqwest::Error) -> BlobError {
    let source: BoxError = format!("S3 {operation}: {error:#}").into();
    if error.is_builder() {
        BlobError::Other(source)
    } else {
        BlobError::Unavailable(source)
    }
}

/// The error of a request answered with a failure status, from S3's XML error body.
async fn failure(operation: &str, response: Response) -> BlobError {
    let status = response.status();
    // Error bodies are small; a HEAD has none.
    let body = response.text().await.unwrap_or_default();
    classify(
        operation,
        status,
        xml_element(&body, "Code").unwrap_or_default(),
        xml_element(&body, "Message").unwrap_or_default(),
    )
}

/// Sorts an answer into the classes callers act on. Transient: 5xx, 429 and S3's
/// throttling and clock codes. Not found: 404, unless the bucket itself is missing (a
/// misconfiguration, not a missing object) or the upload is. 416: the range selects
/// nothing.
fn classify(operation: &str, status: StatusCode, code: &str, message: &str) -> BlobError {
    let source = || -> BoxError {
        let code = if code.is_empty() { "" } else { code };
        format!("S3 {operation} answered {status} {code}: {message}").into()
    };
    match status.as_u16() {
        404 if !matches!(code, "NoSuchBucket" | "NoSuchUpload") => BlobError::NotFound,
        416 => BlobError::RangeNotSatisfiable { size: 0 },
        429 | 500..=599 => BlobError::Unavailable(source()),
        _ if matches!(
            code,
            "SlowDown"
                | "RequestTimeout"
                | "Throttling"
                | "ThrottlingException"
                | "RequestTimeTooSkewed"
        ) =>
        {
            BlobError::Unavailable(source())
        }
        _ => BlobError::Other(source()),
    }
}

/// The text of the first `<name>` element of an XML document (S3's errors are flat).
fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..end])
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

    #[test]
    fn classifies_answers_by_status_and_code() {
        let class = |e: BlobError| match e {
            BlobError::NotFound => "not found",
            BlobError::Unavailable(_) => "transient",
            BlobError::Other(_) => "other",
            BlobError::RangeNotSatisfiable { .. } => "range",
            _ => "unexpected",
        };
        for (status, code, expected) in [
            (404, "NoSuchKey", "not found"),
            (404, "", "not found"),
            (404, "NoSuchBucket", "other"),
            (404, "NoSuchUpload", "other"),
            (403, "AccessDenied", "other"),
            (400, "InvalidArgument", "other"),
            (400, "RequestTimeout", "transient"),
            (403, "RequestTimeTooSkewed", "transient"),
            (416, "InvalidRange", "range"),
            (429, "", "transient"),
            (500, "InternalError", "transient"),
            (503, "SlowDown", "transient"),
            (503, "", "transient"),
            (200, "InternalError", "other"),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                class(classify("GetObject", status, code, "")),
                expected,
                "{status} {code:?}"
            );
        }
    }

    #[test]
    fn reads_s3_error_bodies() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(xml_element(body, "Code"), Some("NoSuchBucket"));
        assert_eq!(
            xml_element(body, "Message"),
            Some("The specified bucket does not exist")
        );
        assert_eq!(xml_element(body, "Resource"), None);
        assert_eq!(xml_element("", "Code"), None);
    }

    #[test]
    fn a_bad_endpoint_is_a_settings_error() {
        let settings = |endpoint: &str| S3Settings {
            bucket: "b".into(),
            region: "us-east-1".into(),
            access_key_id: crate::platform::settings::Secret::new("k"),
            secret_access_key: crate::platform::settings::Secret::new("s"),
            endpoint: Some(endpoint.into()),
            force_path_style: true,
            part_size: MIN_PART_SIZE,
            connect_timeout: Duration::from_millis(200),
            operation_timeout: Duration::from_millis(500),
            max_attempts: 1,
        };
        assert!(S3Store::new(&settings("ftp://host")).is_err());
        assert!(S3Store::new(&settings("not a url")).is_err());
        assert!(S3Store::new(&settings("http://127.0.0.1:9000")).is_ok());
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
