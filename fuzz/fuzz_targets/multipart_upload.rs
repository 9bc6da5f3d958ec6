//! The upload's request body as `POST /api/communications/upload` reads it: axum's
//! multipart parser over any bytes, each part's name made safe to show and its head
//! sniffed, the rest drained, as `routes::files::upload` does. Ends or refuses, never a
//! panic or a hang.
#![no_main]

use std::sync::LazyLock;

use axum::{
    body::Body,
    extract::{FromRequest, Multipart},
    http::{Request, header::CONTENT_TYPE},
};
use commcenter_shared::domain::filetype::{self, SNIFF_BYTES};
use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

fuzz_target!(|body: &[u8]| {
    let request = Request::builder()
        .method("POST")
        .header(CONTENT_TYPE, "multipart/form-data; boundary=fuzz")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    RUNTIME.block_on(async {
        let Ok(mut multipart) = Multipart::from_request(request, &()).await else {
            return;
        };
        while let Ok(Some(mut field)) = multipart.next_field().await {
            let name = field.file_name().map(filetype::safe_display_name);
            let mut head = Vec::new();
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        if head.len() < SNIFF_BYTES {
                            let room = SNIFF_BYTES - head.len();
                            head.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            if let Some(name) = name {
                let _ = filetype::sniff(&head, &name);
            }
        }
    });
});
