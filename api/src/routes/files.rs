//! Files: streamed uploads, file records, downloads.
//!
//! - `POST /api/communications/upload`: multipart, one or more `file` parts and a
//!   `customer_id` part in any order (or `?customer_id=`), optional `communication_id`. Each file is
//!   sniffed from its first bytes (not its name or declared type), streamed to the blob
//!   store under a generated name with `MAX_FILE_SIZE` enforced while streaming, then
//!   recorded with its `file.process` job. One refused file does not sink the others;
//!   a file over the limit ends the request with 413 and nothing of it is kept.
//! - `GET /api/communications/files/{file_id}`: one file's record and status.
//! - `GET /api/communications/file/{filename}` and `.../file/thumbnails/{filename}`:
//!   streamed, with `ETag` (the SHA-256), conditional requests and `Range`.

use axum::{
    Json,
    body::Body,
    extract::{Multipart, Path, State, multipart::MultipartRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use commcenter_shared::{
    domain::filetype::{self, Category, SNIFF_BYTES},
    domain::store::{self, FileRecord, NewFile},
    domain::{CustomerId, FileStatus},
    ledger::jobs::{self, NewJob, payloads},
    platform::blob::{BlobError, ByteRange, ObjectKey},
};

use super::parse_uuid;
use crate::{
    auth::Caller,
    body::{QueryParams, multipart_error, multipart_text},
    error::{ApiError, ApiResult},
    state::AppState,
};

/// At most this many files in one upload request.
const MAX_FILES_PER_REQUEST: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    customer_id: Option<String>,
    communication_id: Option<String>,
}

/// A file streamed to the store, not yet recorded.
struct Staged {
    id: Uuid,
    original_name: String,
    stored_name: String,
    key: ObjectKey,
    size: u64,
    mime: &'static str,
    category: Category,
}

/// Why one file of a batch was not taken.
struct Refused {
    filename: String,
    reason: String,
}

pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<UploadQuery>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut multipart =
        multipart.map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    // Named in the query or a part; a customer who names none uploads to their own.
    let mut customer = query
        .customer_id
        .as_deref()
        .map(parse_customer)
        .transpose()?;
    let mut communication_id = query
        .communication_id
        .as_deref()
        .map(parse_communication_id)
        .transpose()?;
    // A customer's own conversation, taken for a file before any customer_id part; a
    // customer_id part after it names the conversation meant (and is authorized).
    let mut customer_implied = false;
    let mut staged: Vec<Staged> = Vec::new();
    let mut refused: Vec<Refused> = Vec::new();

    let read = async {
        while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
            match field.name().unwrap_or_default() {
                "customer_id" => {
                    let named = parse_customer(multipart_text(field).await?.trim())?;
                    if !customer_implied && customer.as_ref().is_some_and(|c| *c != named) {
                        return Err(ApiError::Invalid("customer_id is given twice, with different values".into()));
                    }
                    customer = Some(named);
                    customer_implied = false;
                }
                "communication_id" => {
                    let text = multipart_text(field).await?;
                    communication_id = Some(parse_communication_id(text.trim())?);
                }
                "file" | "files" | "file[]" | "files[]" => {
                    if customer.is_none() {
                        customer = caller.own_customer().cloned();
                        customer_implied = customer.is_some();
                    }
                    // Authorized now when the customer is known; a file that comes
                    // before its customer_id (the original's own order) is staged and
                    // authorized once the part arrives, and discarded if refused.
                    match &customer {
                        Some(owner) => caller.ensure_sees(owner)?,
                        None => caller.ensure_staff()?,
                    }
                    if staged.len() + refused.len() >= MAX_FILES_PER_REQUEST {
                        return Err(ApiError::Invalid(format!("at most {MAX_FILES_PER_REQUEST} files per upload")));
                    }
                    let filename = filetype::safe_display_name(field.file_name().unwrap_or("unnamed"));
                    match stage(&state, &mut field, &filename).await? {
                        Ok(file) => staged.push(file),
                        Err(reason) => refused.push(Refused { filename, reason }),
                    }
                }
                "" => return Err(ApiError::bad_request("invalid_multipart", "a part has no name")),
                other => {
                    return Err(ApiError::bad_request(
                        "invalid_multipart",
                        format!("unexpected part {other:?} (expected file, customer_id, communication_id)"),
                    ));
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(error) = read {
        discard(&state, &staged).await;
        return Err(error);
    }
    if staged.is_empty() && refused.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_multipart",
            "missing file part: send one or more parts named file",
        ));
    }
    let Some(customer) = customer else {
        discard(&state, &staged).await;
        return Err(ApiError::Invalid("customer_id is required".into()));
    };
    if let Err(refused) = caller.ensure_sees(&customer) {
        discard(&state, &staged).await;
        return Err(refused);
    }
    let failed: Vec<Value> = refused
        .iter()
        .map(|r| json!({ "filename": r.filename, "error": { "code": "file_refused", "message": r.reason } }))
        .collect();
    if staged.is_empty() {
        let message = refused
            .iter()
            .map(|r| format!("{}: {}", r.filename, r.reason))
            .collect::<Vec<_>>()
            .join("; ");
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({ "error": { "code": "file_refused", "message": message }, "files": [], "failed": failed }),
            ),
        ));
    }
    match record(&state, &caller, &customer, communication_id, &staged).await {
        Ok(files) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "files": files, "failed": failed })),
        )),
        Err(error) => {
            discard(&state, &staged).await;
            Err(error)
        }
    }
}

fn parse_communication_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::Invalid(format!("communication_id must be a UUID, not {raw:?}")))
}

fn parse_customer(raw: &str) -> ApiResult<CustomerId> {
    CustomerId::parse(raw).map_err(|e| ApiError::Invalid(e.0))
}

/// Streams one file part to the store. `Ok(Err(reason))` refuses this file only;
/// `Err` ends the request (over the size limit, the store is down).
async fn stage(
    state: &AppState,
    field: &mut axum::extract::multipart::Field<'_>,
    filename: &str,
) -> ApiResult<Result<Staged, String>> {
    let limit = state.settings.storage.max_file_size;
    // Enough of the head to tell the type by its content.
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let mut first_chunks = Vec::new();
    while head.len() < SNIFF_BYTES {
        match field.chunk().await.map_err(multipart_error)? {
            Some(chunk) => {
                head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES - head.len())]);
                first_chunks.push(chunk);
            }
            None => break,
        }
    }
    if head.is_empty() {
        return Ok(Err("the file is empty".into()));
    }
    let sniffed = match filetype::sniff(&head, filename) {
        Ok(sniffed) => sniffed,
        Err(refusal) => {
            // Read past the refused file (bounded) so the next part can be read.
            let mut skipped = first_chunks.iter().map(Bytes::len).sum::<usize>() as u64;
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                skipped += chunk.len() as u64;
                if skipped > limit {
                    return Err(too_large(filename, limit));
                }
            }
            return Ok(Err(refusal.to_string()));
        }
    };
    let stored_name = filetype::stored_name(sniffed.extension);
    let key = ObjectKey::parse(&format!("objects/{stored_name}"))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let body = stream::iter(first_chunks.into_iter().map(Ok::<_, std::io::Error>))
        .chain(field.map_err(|e| std::io::Error::other(e.body_text())));
    match state.blobs.put(&key, body, limit).await {
        Ok(size) => Ok(Ok(Staged {
            id: Uuid::now_v7(),
            original_name: filename.to_owned(),
            stored_name,
            key,
            size,
            mime: sniffed.mime,
            category: sniffed.category,
        })),
        Err(BlobError::TooLarge { .. }) => Err(too_large(filename, limit)),
        Err(BlobError::Body(cause)) => Err(ApiError::bad_request(
            "invalid_multipart",
            format!("the upload of {filename} broke off: {cause}"),
        )),
        Err(other) => Err(blob_error(other)),
    }
}

fn too_large(filename: &str, limit: u64) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "{filename} is larger than the limit of {limit} bytes (MAX_FILE_SIZE)"
    ))
}

/// Removes what this request stored, when the request fails after all.
async fn discard(state: &AppState, staged: &[Staged]) {
    for file in staged {
        if let Err(error) = state.blobs.delete(&file.key).await {
            tracing::warn!(key = %file.key, %error, "could not remove an abandoned upload");
        }
    }
}

/// Records every staged file and its processing job in one transaction.
async fn record(
    state: &AppState,
    caller: &Caller,
    customer: &CustomerId,
    communication_id: Option<Uuid>,
    staged: &[Staged],
) -> ApiResult<Vec<Value>> {
    let mut tx = state.pool.begin().await?;
    if let Some(id) = communication_id {
        let communication = commcenter_shared::domain::communications::find(&mut tx, id).await?;
        if communication.is_none_or(|c| &c.customer_id != customer) {
            return Err(ApiError::Invalid(format!(
                "communication_id {id} is not in customer {customer}'s conversation"
            )));
        }
    }
    let mut files = Vec::with_capacity(staged.len());
    for file in staged {
        store::insert_file(
            &mut tx,
            &NewFile {
                id: file.id,
                customer_id: customer,
                communication_id,
                uploaded_by: caller.user_id(),
                original_name: &file.original_name,
                stored_name: &file.stored_name,
                file_size: file.size as i64,
                file_type: file.mime,
                file_category: file.category.as_str(),
                staging_key: file.key.as_str(),
            },
        )
        .await?;
        let job = NewJob::of(&payloads::ProcessFile { file_id: file.id }).for_customer(customer);
        jobs::enqueue(&mut tx, job, state.settings.jobs.max_attempts).await?;
        files.push(json!({
            "file_id": file.id,
            "filename": file.original_name,
            "stored_name": file.stored_name,
            "file_size": file.size,
            "file_type": file.mime,
            "file_category": file.category.as_str(),
            "url": file_url(&file.stored_name),
            "thumbnail_url": (file.category == Category::Images).then(|| thumbnail_url(&file.stored_name)),
            "status": "processing",
        }));
    }
    tx.commit().await?;
    state.outbox.notify_one();
    Ok(files)
}

pub use commcenter_shared::domain::filetype::{file_url, thumbnail_url};

/// A file record as the API shows it.
pub fn file_json(file: &FileRecord) -> Value {
    json!({
        "file_id": file.id,
        "customer_id": file.customer_id,
        "communication_id": file.communication_id,
        "filename": file.original_name,
        "stored_name": file.stored_name,
        "file_size": file.file_size,
        "file_type": file.file_type,
        "file_category": file.file_category,
        "sha256": file.sha256,
        "status": file.status,
        "failure_reason": file.failure_reason,
        "url": file_url(&file.stored_name),
        "thumbnail_url": file.thumbnail_key.as_ref().map(|_| thumbnail_url(&file.stored_name))
            .or_else(|| (file.file_category == "images" && file.status == FileStatus::Processing).then(|| thumbnail_url(&file.stored_name))),
        "width": file.width,
        "height": file.height,
        "uploaded_by": file.uploaded_by,
        "created_at": file.created_at,
        "updated_at": file.updated_at,
    })
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id, "file_id")?;
    let mut conn = state.pool.acquire().await?;
    let file = visible(
        &caller,
        store::find_file(&mut conn, id).await?,
        &id.to_string(),
    )?;
    Ok(Json(file_json(&file)))
}

/// `DELETE /api/communications/files/{file_id}`: a file not attached to any message,
/// by its uploader or staff. The record goes at once; the stored bytes go (a
/// `blob.delete` job) when no other record shares them.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id, "file_id")?;
    let mut tx = state.pool.begin().await?;
    let file = visible(
        &caller,
        store::lock_file(&mut tx, id).await?,
        &id.to_string(),
    )?;
    if file.uploaded_by != caller.user_id() && !caller.role().sees_every_customer() {
        return Err(ApiError::Forbidden(
            "only its uploader or staff may delete a file".into(),
        ));
    }
    if file.status == FileStatus::Processing {
        return Err(ApiError::StillProcessing(format!(
            "{} is still being processed; delete it once it is ready",
            file.original_name
        )));
    }
    if store::file_in_use(&mut tx, &file).await? {
        return Err(ApiError::Conflict(format!(
            "file {id} is attached to a message; delete the message instead"
        )));
    }
    let customer = file.customer_id.clone();
    for key in store::delete_file(&mut tx, &file).await? {
        let job = NewJob::of(&payloads::DeleteBlob { storage_key: key }).for_customer(&customer);
        jobs::enqueue(&mut tx, job, state.settings.jobs.max_attempts).await?;
    }
    tx.commit().await?;
    state.outbox.notify_one();
    Ok(Json(json!({ "file_id": id, "deleted": true })))
}

/// The file if the caller may see it; anything else is a 404 (no probing).
fn visible(caller: &Caller, file: Option<FileRecord>, name: &str) -> ApiResult<FileRecord> {
    let not_found = || ApiError::NotFound(format!("no file {name}"));
    let file = file.ok_or_else(not_found)?;
    caller.ensure_sees(&file.customer_id).map_err(|e| match e {
        ApiError::NotFound(_) => not_found(),
        other => other,
    })?;
    Ok(file)
}

pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(filename): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let file = find_named(&state, &caller, &filename).await?;
    if file.status == FileStatus::Failed {
        return Err(ApiError::Gone(format!(
            "{} could not be processed: {}",
            file.original_name,
            file.failure_reason.as_deref().unwrap_or("unknown reason")
        )));
    }
    // Until processed, the bytes are where the upload put them.
    let key = file
        .storage_key
        .as_deref()
        .or(file.staging_key.as_deref())
        .ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "file {} has neither a blob nor a staging key",
                file.id
            ))
        })?;
    let etag = file.sha256.as_deref().map(|sha| format!("\"{sha}\""));
    serve(
        &state,
        key,
        &file.file_type,
        &file.original_name,
        etag,
        &headers,
    )
    .await
}

pub async fn thumbnail(
    State(state): State<AppState>,
    caller: Caller,
    Path(filename): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let file = find_named(&state, &caller, &filename).await?;
    match (file.status, &file.thumbnail_key) {
        (_, Some(key)) => {
            let etag = file.sha256.as_deref().map(|sha| format!("\"{sha}-thumb\""));
            let content_type = file.thumbnail_type.as_deref().unwrap_or("image/jpeg");
            // Named after the original, with the thumbnail's own extension.
            let stem = file
                .original_name
                .rsplit_once('.')
                .map_or(file.original_name.as_str(), |(stem, _)| stem);
            let extension = if content_type == "image/png" {
                "png"
            } else {
                "jpg"
            };
            let name = format!("{stem}-thumbnail.{extension}");
            serve(&state, key, content_type, &name, etag, &headers).await
        }
        (FileStatus::Processing, None) if file.file_category == "images" => {
            Err(ApiError::StillProcessing(format!(
                "the thumbnail of {} is still being made; try again shortly",
                file.original_name
            )))
        }
        (FileStatus::Failed, None) => Err(ApiError::Gone(format!(
            "{} could not be processed: {}",
            file.original_name,
            file.failure_reason.as_deref().unwrap_or("unknown reason")
        ))),
        _ => Err(ApiError::NotFound(format!(
            "{} has no thumbnail (only images do)",
            file.original_name
        ))),
    }
}

async fn find_named(state: &AppState, caller: &Caller, filename: &str) -> ApiResult<FileRecord> {
    if !filetype::is_stored_name(filename) {
        return Err(ApiError::NotFound(format!("no file {filename}")));
    }
    let mut conn = state.pool.acquire().await?;
    visible(
        caller,
        store::find_file_by_stored_name(&mut conn, filename).await?,
        filename,
    )
}

/// Streams an object with `ETag`, `If-None-Match` and single `Range` support.
async fn serve(
    state: &AppState,
    key: &str,
    content_type: &str,
    display_name: &str,
    etag: Option<String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let key = ObjectKey::parse(key).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    if let (Some(etag), Some(wanted)) = (&etag, headers.get(header::IF_NONE_MATCH)) {
        let wanted = wanted.to_str().unwrap_or_default();
        if wanted
            .split(',')
            .any(|w| w.trim() == etag || w.trim() == "*")
        {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            response
                .headers_mut()
                .insert(header::ETAG, header_value(etag));
            return Ok(response);
        }
    }
    // A Range is honoured only while the representation is the one the client has;
    // a Range that does not parse is ignored, as HTTP says.
    let if_range_ok = match (headers.get(header::IF_RANGE), &etag) {
        (None, _) => true,
        (Some(v), Some(etag)) => v.to_str().ok() == Some(etag.as_str()),
        (Some(_), None) => false,
    };
    let range = headers
        .get(header::RANGE)
        .filter(|_| if_range_ok)
        .and_then(|v| v.to_str().ok())
        .and_then(ByteRange::parse_http);
    let read = match state.blobs.get(&key, range).await {
        Ok(read) => read,
        Err(BlobError::RangeNotSatisfiable { size }) => {
            let mut response =
                ApiError::RangeNotSatisfiable(format!("the file has {size} bytes")).into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            return Ok(response);
        }
        Err(error) => return Err(blob_error(error)),
    };
    let mut response = Response::new(Body::from_stream(read.stream));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(content_type));
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(read.content_length),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Opened in a tab anyway, an upload runs no script, loads nothing and is no origin.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        header_value(&content_disposition(display_name, content_type)),
    );
    if let Some(etag) = &etag {
        h.insert(header::ETAG, header_value(etag));
    }
    if let Some(served) = read.range {
        h.insert(
            header::CONTENT_RANGE,
            header_value(&served.content_range(read.total_size)),
        );
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn blob_error(error: BlobError) -> ApiError {
    match error {
        BlobError::Unavailable(_) => {
            tracing::error!(
                error = format!("{:#}", anyhow::Error::from(error)),
                "file store unavailable"
            );
            ApiError::Unavailable("the file store is unavailable; try again shortly".into())
        }
        BlobError::NotFound => ApiError::Internal(anyhow::anyhow!(
            "a recorded object is missing from the store"
        )),
        other => ApiError::Internal(anyhow::Error::from(other)),
    }
}

/// `inline` for plain pictures, sound and video, which browsers show without running
/// anything; `attachment` for everything else (a PDF or an SVG can carry script). The
/// name as ASCII and, exactly, as RFC 5987 UTF-8.
fn content_disposition(name: &str, content_type: &str) -> String {
    let inline = (content_type.starts_with("image/") && content_type != "image/svg+xml")
        || content_type.starts_with("video/")
        || content_type.starts_with("audio/");
    let ascii: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_are_safe() {
        let d = content_disposition("rapport \"final\"\n.pdf", "application/pdf");
        assert!(
            d.starts_with("attachment; filename=\"rapport _final__.pdf\""),
            "{d}"
        );
        assert!(
            d.contains("filename*=UTF-8''rapport%20%22final%22%0A.pdf"),
            "{d}"
        );
        assert!(content_disposition("x.zip", "application/zip").starts_with("attachment"));
        assert!(content_disposition("x.svg", "image/svg+xml").starts_with("attachment"));
        for shown in ["image/png", "image/jpeg", "audio/mpeg", "video/mp4"] {
            assert!(
                content_disposition("x", shown).starts_with("inline"),
                "{shown}"
            );
        }
    }
}
