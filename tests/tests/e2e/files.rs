//! Files: streamed uploads, sniffing, hashing and dedup, thumbnails, downloads with
//! ranges and validators, attachments.

use std::{io::Cursor, time::Duration};

use commcenter_tests::{TestApp, TestOptions, spawn_app, spawn_app_with};
use image::{ImageFormat, Rgb, RgbImage};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::WAIT;

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 7 % 256) as u8,
            (y * 3 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A PNG whose header declares `width` × `height` (a decompression bomb when large);
/// the CRC is right, so only the size gives it away.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc.to_be_bytes());
    // A tiny, valid IDAT: a decoder reaches the header's claim before any pixel.
    let idat = [
        b"IDAT".as_slice(),
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ]
    .concat();
    png.extend_from_slice(&8u32.to_be_bytes());
    png.extend_from_slice(&idat);
    png.extend_from_slice(&crc32(&idat).to_be_bytes());
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(name.to_owned())
}

async fn upload(app: &TestApp, token: &str, customer: &str, files: Vec<Part>) -> reqwest::Response {
    let mut form = Form::new().text("customer_id", customer.to_owned());
    for file in files {
        form = form.part("file", file);
    }
    app.client
        .post(app.url("/api/communications/upload"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn wait_until_processed(app: &TestApp, token: &str, file_id: &str) -> Value {
    commcenter_tests::eventually(&format!("file {file_id} to be processed"), WAIT, || async {
        let file: Value = app
            .get(&format!("/api/communications/files/{file_id}"), token)
            .await
            .json()
            .await
            .ok()?;
        (file["status"] != "processing").then_some(file)
    })
    .await
}

/// Objects in the disk store, by folder (`objects`, `thumbnails`).
fn stored_objects(app: &TestApp, folder: &str) -> usize {
    std::fs::read_dir(app.settings.storage.upload_dir.join(folder))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_is_stored_hashed_thumbnailed_and_served_with_validators_and_ranges() {
    let app = spawn_app().await;
    let customer = app.customer_token("cust-1");
    let mut ws = app.ws("user-of-cust-1", &customer).await;
    let bytes = png(640, 480);
    let response = upload(
        &app,
        &customer,
        "cust-1",
        vec![part(bytes.clone(), "site photo.png")],
    )
    .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let file = &body["files"][0];
    assert_eq!(file["filename"], "site photo.png");
    assert_eq!(file["file_type"], "image/png");
    assert_eq!(file["file_category"], "images");
    assert_eq!(file["file_size"], bytes.len());
    assert_eq!(file["status"], "processing");
    let stored_name = file["stored_name"].as_str().unwrap();
    assert!(
        !stored_name.contains("site"),
        "stored names are generated, never the uploader's"
    );

    let event = ws
        .next_of_type("file.status", WAIT)
        .await
        .expect("the uploader hears of it");
    assert_eq!(event["status"], "ready");
    assert_eq!(event["file_id"], file["file_id"]);
    let record = wait_until_processed(&app, &customer, file["file_id"].as_str().unwrap()).await;
    let sha = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert_eq!(record["sha256"], sha.as_str());
    assert_eq!(record["width"], 640);

    let url = app.url(file["url"].as_str().unwrap());
    let full = app
        .client
        .get(&url)
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["content-type"], "image/png");
    assert_eq!(full.headers()["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(
        full.headers()["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    assert_eq!(full.headers()["x-content-type-options"], "nosniff");
    assert!(
        full.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("filename=\"site photo.png\"")
    );
    assert_eq!(full.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let not_modified = app
        .client
        .get(&url)
        .bearer_auth(&customer)
        .header("If-None-Match", format!("\"{sha}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    let partial = app
        .client
        .get(&url)
        .bearer_auth(&customer)
        .header("Range", "bytes=8-15")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(
        partial.headers()["content-range"],
        format!("bytes 8-15/{}", bytes.len()).as_str()
    );
    assert_eq!(partial.bytes().await.unwrap().as_ref(), &bytes[8..16]);
    let beyond = app
        .client
        .get(&url)
        .bearer_auth(&customer)
        .header("Range", "bytes=999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);

    let thumb = app
        .client
        .get(app.url(file["thumbnail_url"].as_str().unwrap()))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.status(), 200);
    let thumb_type = thumb.headers()["content-type"].to_str().unwrap().to_owned();
    let thumbnail = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert!(thumb_type == "image/jpeg" || thumb_type == "image/png");
    assert_eq!(
        (thumbnail.width(), thumbnail.height()),
        (256, 192),
        "longest side 256, aspect kept"
    );

    // Another customer gets nothing, not even a hint it exists.
    let other = app.customer_token("cust-2");
    assert_eq!(
        app.client
            .get(&url)
            .bearer_auth(&other)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    app.assert_no_jobs_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_bytes_twice_are_stored_once() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let bytes = jpeg(300, 200);
    let first: Value = upload(&app, &staff, "cust-1", vec![part(bytes.clone(), "a.jpg")])
        .await
        .json()
        .await
        .unwrap();
    let second: Value = upload(&app, &staff, "cust-1", vec![part(bytes.clone(), "b.jpg")])
        .await
        .json()
        .await
        .unwrap();
    let a =
        wait_until_processed(&app, &staff, first["files"][0]["file_id"].as_str().unwrap()).await;
    let b = wait_until_processed(
        &app,
        &staff,
        second["files"][0]["file_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(a["status"], "ready");
    assert_eq!(b["status"], "ready");
    assert_eq!(a["sha256"], b["sha256"]);
    app.assert_no_jobs_left().await;
    assert_eq!(stored_objects(&app, "objects"), 1, "one copy of the bytes");
    assert_eq!(stored_objects(&app, "thumbnails"), 1, "one thumbnail");
    assert_eq!(app.count("blobs").await, 1);
    // Both records still serve the bytes.
    for record in [&a, &b] {
        let got = app
            .client
            .get(app.url(record["url"].as_str().unwrap()))
            .bearer_auth(&staff)
            .send()
            .await
            .unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_batch_each_file_stands_alone_and_refusals_say_why() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.extend_from_slice(&[0; 120]);
    let response = upload(
        &app,
        &staff,
        "cust-1",
        vec![
            part(png(32, 32), "fine.png"),
            part(elf, "holiday.jpg"),
            part(Vec::new(), "empty.txt"),
            part(
                b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n".to_vec(),
                "../../etc/passwd.pdf",
            ),
        ],
    )
    .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    let files = body["files"].as_array().unwrap();
    let failed = body["failed"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{body}");
    assert_eq!(failed.len(), 2, "{body}");
    let refusal = |name: &str| {
        failed
            .iter()
            .find(|f| f["filename"] == name)
            .map(|f| f["error"]["message"].as_str().unwrap().to_lowercase())
    };
    let exe = refusal("holiday.jpg").expect("the executable is refused");
    assert!(exe.contains("executable"), "{exe}");
    assert!(
        refusal("empty.txt")
            .expect("the empty file is refused")
            .contains("empty")
    );
    let pdf = files
        .iter()
        .find(|f| f["file_type"] == "application/pdf")
        .expect("the pdf is taken");
    let shown = pdf["filename"].as_str().unwrap();
    assert!(
        !shown.contains('/') && !shown.contains('\0') && !shown.contains('\n'),
        "{shown:?}"
    );
    assert!(!pdf["stored_name"].as_str().unwrap().contains("passwd"));
    assert_eq!(app.count("file_attachments").await, 2);
}

/// A multipart body by hand, for names no well-behaved client would send.
async fn raw_upload(app: &TestApp, disposition: &str) -> reqwest::Response {
    let body = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"customer_id\"\r\n\r\ncust-1\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file\"; {disposition}\r\n\
         Content-Type: application/octet-stream\r\n\r\n%PDF-1.7\n%%EOF\n\r\n--XyZ--\r\n"
    );
    app.client
        .post(app.url("/api/communications/upload"))
        .bearer_auth(app.staff_token())
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_file_names_never_reach_the_store() {
    let app = spawn_app().await;
    // NUL and newline, percent-encoded in an RFC 5987 name: decoded, then made safe.
    let response = raw_upload(&app, "filename*=UTF-8''..%2F..%2Fetc%2Fpasswd%00%0A.pdf").await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    let shown = body["files"][0]["filename"].as_str().unwrap();
    assert!(
        !shown.contains('/') && !shown.contains('\0') && !shown.contains('\n'),
        "{shown:?}"
    );
    assert!(filetype_stored_name_ok(
        body["files"][0]["stored_name"].as_str().unwrap()
    ));
    // A raw newline inside the part's headers breaks the multipart framing itself: the
    // request is refused as malformed, and nothing is stored.
    let response = raw_upload(&app, "filename=\"a\nb.pdf\"").await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_multipart");
    assert_eq!(app.count("file_attachments").await, 1);
    assert_eq!(stored_objects(&app, "objects"), 1);
}

fn filetype_stored_name_ok(name: &str) -> bool {
    commcenter_shared::domain::filetype::is_stored_name(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_over_the_limit_ends_the_request_and_nothing_is_kept() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let limit = app.settings.storage.max_file_size as usize;
    assert_eq!(limit, 50 * 1024 * 1024, "the default MAX_FILE_SIZE");
    let mut over = b"%PDF-1.7\n".to_vec();
    over.resize(limit + 1, b' ');
    let response = upload(
        &app,
        &staff,
        "cust-1",
        vec![part(png(8, 8), "first.png"), part(over, "big.pdf")],
    )
    .await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("big.pdf")
    );
    assert_eq!(app.count("file_attachments").await, 0, "nothing recorded");
    assert_eq!(app.count("jobs").await, 0);
    assert_eq!(
        stored_objects(&app, "objects"),
        0,
        "the partial object and the earlier file are removed"
    );

    let mut exactly = b"%PDF-1.7\n".to_vec();
    exactly.resize(limit, b' ');
    assert_eq!(
        upload(&app, &staff, "cust-1", vec![part(exactly, "max.pdf")])
            .await
            .status(),
        202
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_images_fail_with_a_reason_and_the_worker_keeps_going() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    let mut ws = app.ws("staff-1", &staff).await;
    let mut truncated = jpeg(400, 300);
    truncated.truncate(truncated.len() / 3);
    let body: Value = upload(
        &app,
        &staff,
        "cust-1",
        vec![
            part(truncated, "cut.jpg"),
            part(png_declaring(50_000, 50_000), "bomb.png"),
            part(png(10, 10), "ok.png"),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let ids: Vec<&str> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        3,
        "all three are accepted: their content only shows when decoded"
    );
    let cut = wait_until_processed(&app, &staff, ids[0]).await;
    let bomb = wait_until_processed(&app, &staff, ids[1]).await;
    let fine = wait_until_processed(&app, &staff, ids[2]).await;
    assert_eq!(cut["status"], "failed");
    assert!(!cut["failure_reason"].as_str().unwrap().is_empty());
    assert_eq!(bomb["status"], "failed");
    assert!(
        bomb["failure_reason"].as_str().unwrap().contains("50000"),
        "{}",
        bomb["failure_reason"]
    );
    assert_eq!(fine["status"], "ready");
    let mut statuses = Vec::new();
    while statuses.len() < 3 {
        let event = ws
            .next_of_type("file.status", WAIT)
            .await
            .expect("an event per file");
        statuses.push(event["status"].as_str().unwrap().to_owned());
    }
    statuses.sort();
    assert_eq!(statuses, ["failed", "failed", "ready"]);
    // A failed file's bytes are not served; its thumbnail neither.
    let gone = app
        .client
        .get(app.url(cut["url"].as_str().unwrap()))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thumbnail_still_being_made_answers_clearly() {
    let app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let staff = app.staff_token();
    let body: Value = upload(&app, &staff, "cust-1", vec![part(png(64, 64), "wait.png")])
        .await
        .json()
        .await
        .unwrap();
    let response = app
        .client
        .get(app.url(body["files"][0]["thumbnail_url"].as_str().unwrap()))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(response.headers()["retry-after"], "1");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "still_processing");
    // The original is served from where the upload put it meanwhile.
    let original = app
        .client
        .get(app.url(body["files"][0]["url"].as_str().unwrap()))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_eq!(original.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_upload_requests_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let customer = app.customer_token("cust-1");
    // No file part.
    let form = Form::new().text("customer_id", "cust-1");
    let response = app
        .client
        .post(app.url("/api/communications/upload"))
        .bearer_auth(&customer)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("file"));
    // Another customer's conversation.
    let response = upload(&app, &customer, "cust-2", vec![part(png(8, 8), "x.png")]).await;
    assert_eq!(response.status(), 404);
    // Not multipart at all.
    let response = app
        .post_json("/api/communications/upload", &customer, &json!({}))
        .await;
    assert_eq!(response.status(), 400);
    // No token.
    let response = app
        .client
        .post(app.url("/api/communications/upload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(app.count("file_attachments").await, 0);
    assert_eq!(stored_objects(&app, "objects"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_s3_store_down_an_upload_fails_cleanly() {
    // Nothing listens on this port: the store is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_with(TestOptions {
        s3_endpoint: Some(format!("http://{closed}")),
        ..Default::default()
    })
    .await;
    let response = upload(
        &app,
        &app.staff_token(),
        "cust-1",
        vec![part(png(8, 8), "x.png")],
    )
    .await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unavailable");
    assert_eq!(
        app.count("file_attachments").await,
        0,
        "nothing half-recorded"
    );
    assert_eq!(app.count("jobs").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_waits_for_its_attachment_and_refuses_a_failed_or_foreign_one() {
    let mut app = spawn_app_with(TestOptions {
        start_workers: false,
        ..Default::default()
    })
    .await;
    let staff = app.staff_token();
    let body: Value = upload(&app, &staff, "cust-1", vec![part(png(20, 20), "plan.png")])
        .await
        .json()
        .await
        .unwrap();
    let file_id = body["files"][0]["file_id"].as_str().unwrap().to_owned();
    let sent = app
        .post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-1", "message": "see plan", "attachments": [file_id] }),
        )
        .await;
    assert_eq!(
        sent.status(),
        202,
        "a processing attachment is fine at send time"
    );
    let sent: Value = sent.json().await.unwrap();
    app.start_workers();
    app.wait_for_status(sent["id"].as_str().unwrap(), "sent")
        .await;
    let list: Value = app
        .get("/api/communications?customer_id=cust-1", &staff)
        .await
        .json()
        .await
        .unwrap();
    let attachment = &list["communications"][0]["attachments"][0];
    assert_eq!(attachment["file_id"], file_id.as_str());
    assert_eq!(attachment["filename"], "plan.png");
    assert!(
        attachment["url"]
            .as_str()
            .unwrap()
            .starts_with("/api/communications/file/")
    );
    assert!(
        attachment["thumbnail_url"]
            .as_str()
            .unwrap()
            .starts_with("/api/communications/file/thumbnails/")
    );

    // A file of another customer is unknown here.
    let foreign = app
        .post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-2", "message": "x", "attachments": [file_id] }),
        )
        .await;
    assert_eq!(foreign.status(), 422);

    // A failed file is refused with its reason.
    let body: Value = upload(
        &app,
        &staff,
        "cust-1",
        vec![part(png_declaring(50_000, 50_000), "bomb.png")],
    )
    .await
    .json()
    .await
    .unwrap();
    let bomb = body["files"][0]["file_id"].as_str().unwrap().to_owned();
    wait_until_processed(&app, &staff, &bomb).await;
    let refused = app
        .post_json(
            "/api/messages/send",
            &staff,
            &json!({ "customer_id": "cust-1", "message": "x", "attachments": [bomb] }),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let error: Value = refused.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failed processing")
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn active_content_is_downloaded_never_shown_and_runs_nothing() {
    let app = spawn_app().await;
    let customer = app.customer_token("cust-1");
    // A PDF whose opening action is JavaScript.
    let pdf = b"%PDF-1.7\n1 0 obj << /Type /Catalog /OpenAction << /S /JavaScript /JS (app.alert(1)) >> >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec();
    let response = app
        .upload_file(&customer, "cust-1", pdf, "invoice.pdf", false)
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let file = &body["files"][0];
    wait_until_processed(&app, &customer, file["file_id"].as_str().unwrap()).await;
    let download = app
        .client
        .get(app.url(file["url"].as_str().unwrap()))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "application/pdf");
    let disposition = download.headers()["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert_eq!(
        download.headers()["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    assert_eq!(download.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_too_costly_to_decode_fails_on_the_memory_budget_and_the_rest_go_on() {
    let app = spawn_app().await;
    let staff = app.staff_token();
    // 100 megapixels within the pixel limit, but 315 MiB to decode: over the 256 MiB
    // of MEDIA_MEMORY_BUDGET. Several in one upload cost nothing more.
    let mut parts: Vec<_> = (0..4)
        .map(|n| part(png_declaring(10_000, 10_000), &format!("pano-{n}.png")))
        .collect();
    parts.push(part(png(10, 10), "ok.png"));
    let body: Value = upload(&app, &staff, "cust-1", parts)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 5, "{body}");
    for id in &ids[..4] {
        let record = wait_until_processed(&app, &staff, id).await;
        assert_eq!(record["status"], "failed");
        let reason = record["failure_reason"].as_str().unwrap();
        assert!(reason.contains("MEDIA_MEMORY_BUDGET"), "{reason}");
    }
    let fine = wait_until_processed(&app, &staff, &ids[4]).await;
    assert_eq!(fine["status"], "ready");
}
